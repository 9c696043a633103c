#!/usr/bin/env python3
"""Renders deploy/'s kustomizations when neither kubectl nor kustomize is
installed, for the deploy suite's schema validation and checkov scan.

Only what deploy/ uses is supported, and anything else is refused rather
than ignored: resources (files, or directories holding a
kustomization.yaml), configMapGenerator (files, `key=path`, behavior
create/replace/merge, namespace), images (newName, newTag, digest) and
patches (`path:` strategic-merge patches; lists of objects merge by `name`,
a null deletes the key). Generated ConfigMaps keep their plain name: no
content-hash suffix (kustomize's hash is not reproduced).

  render.py DIR                 print DIR's rendering
  render.py --compare DIR FILE  exit 1 unless FILE (kustomize's rendering of
                                DIR) equals ours once hash suffixes are cut

Needs PyYAML (installed with kubernetes-validate in the deploy venv).
"""

import copy
import os
import re
import sys

import yaml

KNOWN_KEYS = {"apiVersion", "kind", "resources", "configMapGenerator", "images", "patches"}


class RenderError(Exception):
    pass


def load_docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def key_of(obj):
    md = obj.get("metadata", {})
    return (obj.get("kind"), md.get("namespace"), md.get("name"))


def generate_configmap(base_dir, gen):
    unknown = set(gen) - {"name", "namespace", "files", "behavior"}
    if unknown:
        raise RenderError(f"configMapGenerator {gen.get('name')}: unsupported keys {sorted(unknown)}")
    data = {}
    for entry in gen.get("files", []):
        key, _, rel = entry.partition("=")
        if not rel:
            rel = key
            key = os.path.basename(rel)
        with open(os.path.join(base_dir, rel)) as f:
            data[key] = f.read()
    md = {"name": gen["name"]}
    if gen.get("namespace"):
        md["namespace"] = gen["namespace"]
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": md, "data": data}


def merge(target, patch):
    """A strategic merge of patch into target, enough for Pods' lists."""
    if isinstance(target, dict) and isinstance(patch, dict):
        out = dict(target)
        for k, v in patch.items():
            if v is None:
                out.pop(k, None)
            elif k in out:
                out[k] = merge(out[k], v)
            else:
                out[k] = copy.deepcopy(v)
        return out
    if isinstance(target, list) and isinstance(patch, list):
        if all(isinstance(x, dict) and "name" in x for x in target + patch):
            out = [copy.deepcopy(x) for x in target]
            for p in patch:
                for i, t in enumerate(out):
                    if t["name"] == p["name"]:
                        out[i] = merge(t, p)
                        break
                else:
                    out.append(copy.deepcopy(p))
            return out
        return copy.deepcopy(patch)
    return copy.deepcopy(patch)


def set_images(obj, images):
    spec = obj.get("spec", {}).get("template", {}).get("spec", {})
    for c in spec.get("containers", []) + spec.get("initContainers", []):
        name, tag = c["image"], None
        m = re.match(r"^(.*?)(?::([^:/@]+))?(?:@(.+))?$", c["image"])
        if m:
            name, tag = m.group(1), m.group(2)
        for img in images:
            if img["name"] != name:
                continue
            unknown = set(img) - {"name", "newName", "newTag", "digest"}
            if unknown:
                raise RenderError(f"images {name}: unsupported keys {sorted(unknown)}")
            new = img.get("newName", name)
            if img.get("digest"):
                c["image"] = f"{new}@{img['digest']}"
            else:
                t = img.get("newTag", tag)
                c["image"] = f"{new}:{t}" if t else new


def render(directory):
    kpath = os.path.join(directory, "kustomization.yaml")
    if not os.path.exists(kpath):
        raise RenderError(f"{directory}: no kustomization.yaml")
    with open(kpath) as f:
        k = yaml.safe_load(f) or {}
    unknown = set(k) - KNOWN_KEYS
    if unknown:
        raise RenderError(f"{kpath}: unsupported keys {sorted(unknown)} (extend render.py)")
    objs = []
    for res in k.get("resources", []):
        p = os.path.normpath(os.path.join(directory, res))
        objs.extend(render(p) if os.path.isdir(p) else load_docs(p))
    for gen in k.get("configMapGenerator", []):
        cm = generate_configmap(directory, gen)
        behavior = gen.get("behavior", "create")
        idx = [i for i, o in enumerate(objs) if key_of(o) == key_of(cm)]
        if behavior == "create":
            if idx:
                raise RenderError(f"{kpath}: ConfigMap {gen['name']} exists; say behavior: replace or merge")
            objs.append(cm)
        elif behavior in ("replace", "merge"):
            if not idx:
                raise RenderError(f"{kpath}: no ConfigMap {gen['name']} to {behavior}")
            if behavior == "merge":
                cm["data"] = {**objs[idx[0]].get("data", {}), **cm["data"]}
            objs[idx[0]] = cm
        else:
            raise RenderError(f"{kpath}: behavior {behavior!r}")
    for patch in k.get("patches", []):
        if set(patch) != {"path"}:
            raise RenderError(f"{kpath}: only `path:` patches are supported")
        for p in load_docs(os.path.join(directory, patch["path"])):
            idx = [i for i, o in enumerate(objs) if key_of(o) == key_of(p)]
            if not idx:
                raise RenderError(f"{kpath}: patch {patch['path']} matches no resource {key_of(p)}")
            objs[idx[0]] = merge(objs[idx[0]], p)
    for o in objs:
        set_images(o, k.get("images", []))
    return objs


HASH = re.compile(r"-[a-z0-9]{10}$")


def without_hash(obj):
    """kustomize's rendering with generated names' hash suffixes cut."""
    if isinstance(obj, dict):
        out = {}
        for key, v in obj.items():
            if key == "name" and isinstance(v, str):
                v = HASH.sub("", v)
            out[key] = without_hash(v)
        return out
    if isinstance(obj, list):
        return [without_hash(x) for x in obj]
    return obj


def canon(obj):
    """Lists of named objects in name order: kustomize's strategic merge
    moves patched entries to the front, which changes nothing the API
    server or kubelet make of them here (no env refers to another)."""
    if isinstance(obj, dict):
        return {k: canon(v) for k, v in obj.items()}
    if isinstance(obj, list):
        items = [canon(x) for x in obj]
        if items and all(isinstance(x, dict) and "name" in x for x in items):
            items.sort(key=lambda x: str(x["name"]))
        return items
    return obj


def main(argv):
    try:
        if len(argv) == 2:
            yaml.safe_dump_all(render(argv[1]), sys.stdout, sort_keys=True)
            return 0
        if len(argv) == 4 and argv[1] == "--compare":
            ours = sorted((canon(o) for o in render(argv[2])), key=lambda o: str(key_of(o)))
            theirs = sorted(
                (canon(without_hash(o)) for o in load_docs(argv[3])), key=lambda o: str(key_of(o))
            )
            if ours == theirs:
                return 0
            for a, b in zip(ours, theirs):
                if a != b:
                    print(f"render.py and kustomize differ on {key_of(a)} / {key_of(b)}", file=sys.stderr)
            if len(ours) != len(theirs):
                print(f"render.py made {len(ours)} objects, kustomize {len(theirs)}", file=sys.stderr)
            return 1
    except (RenderError, OSError, yaml.YAMLError) as e:
        print(f"render.py: {e}", file=sys.stderr)
        return 1
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
