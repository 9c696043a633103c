"""Plays kubelet against `sriov-device-plugin dra` with Python grpcio.

usage: fake_kubelet_dra.py --gen-dir DIR --registry-dir DIR --plugin-dir DIR
           --cdi-dir DIR --sysfs-root DIR --api-url URL --node NAME
           --driver NAME --expect COUNT

The stubs in --gen-dir come from this directory's kubelet_*.proto (written
apart from proto/), compiled by grpcio-tools: a wire mistake our tonic
client and server would share shows up here. The API server is
`sriov-e2e fake-apiserver`, spoken to with urllib.

Steps, as kubelet takes them: the plugin watcher's GetInfo and
NotifyRegistrationStatus on <registry>/<driver>-reg.sock; the node's
ResourceSlices hold COUNT devices; a claim allocated to a kernel-bound VF
with an opaque VfConfig asking vfio-pci is created and prepared through v1
(CDI id, the VF on vfio-pci in the fixture sysfs), then prepared again (the
same answer); the health stream's first message lists every device
HEALTHY; a claim with no config is prepared and unprepared through v1beta1
(driver untouched); the first claim is unprepared through v1 (driver back,
CDI spec gone); an unknown claim unprepares without error. Channels alternate
between the two :authority forms kubelets have sent (`localhost`, and the
socket path). Prints a PASS or FAIL line per step, exits 1 on the first
failure.
"""

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request

import grpc

ARGS = argparse.ArgumentParser()
for flag in (
    "--gen-dir",
    "--registry-dir",
    "--plugin-dir",
    "--cdi-dir",
    "--sysfs-root",
    "--api-url",
    "--node",
    "--driver",
):
    ARGS.add_argument(flag, required=True)
ARGS.add_argument("--expect", type=int, required=True)
A = ARGS.parse_args()

sys.path.insert(0, A.gen_dir)
import kubelet_dra_health_pb2 as health  # noqa: E402
import kubelet_dra_health_pb2_grpc as health_grpc  # noqa: E402
import kubelet_dra_v1_pb2 as v1  # noqa: E402
import kubelet_dra_v1_pb2_grpc as v1_grpc  # noqa: E402
import kubelet_dra_v1beta1_pb2 as v1beta1  # noqa: E402
import kubelet_dra_v1beta1_pb2_grpc as v1beta1_grpc  # noqa: E402
import kubelet_registration_pb2 as reg  # noqa: E402
import kubelet_registration_pb2_grpc as reg_grpc  # noqa: E402

NAMESPACE = "interop"
PCI_ATTRIBUTE = "sriovnetwork.k8snetworkplumbingwg.io/pciAddress"
RPC_TIMEOUT = 10


def fail(step, msg):
    print("FAIL %s: %s" % (step, msg), flush=True)
    sys.exit(1)


def check(step, cond, msg):
    if not cond:
        fail(step, msg)


def passed(step, msg):
    print("PASS %s: %s" % (step, msg), flush=True)


def channel(path, by_path):
    """A channel to a unix socket; by_path sends the socket path as
    :authority (older kubelets), otherwise grpc's default (localhost)."""
    options = [("grpc.default_authority", path)] if by_path else []
    return grpc.insecure_channel("unix:" + path, options=options)


def how(by_path):
    return "authority=" + ("socket path" if by_path else "localhost")


def register():
    step = "registration"
    sock = os.path.join(A.registry_dir, A.driver + "-reg.sock")
    deadline = time.monotonic() + 30
    while True:
        if os.path.exists(sock):
            try:
                with channel(sock, False) as ch:
                    stub = reg_grpc.RegistrationStub(ch)
                    info = stub.GetInfo(reg.InfoRequest(), timeout=RPC_TIMEOUT)
                    stub.NotifyRegistrationStatus(
                        reg.RegistrationStatus(plugin_registered=True), timeout=RPC_TIMEOUT
                    )
                break
            except grpc.RpcError as e:
                if time.monotonic() > deadline:
                    fail(step, "GetInfo on %s: %s" % (sock, e))
        if time.monotonic() > deadline:
            fail(step, "%s never appeared" % sock)
        time.sleep(0.05)
    endpoint = os.path.join(A.plugin_dir, "dra.sock")
    check(step, info.type == "DRAPlugin", "type %r" % info.type)
    check(step, info.name == A.driver, "name %r" % info.name)
    check(step, info.endpoint == endpoint, "endpoint %r, want %r" % (info.endpoint, endpoint))
    versions = list(info.supported_versions)
    for want in ("v1.DRAPlugin", "v1beta1.DRAPlugin"):
        check(step, want in versions, "supported_versions %r lack %s" % (versions, want))
    passed(step, "%s %s at %s (%s)" % (info.type, info.name, info.endpoint, ", ".join(versions)))
    return endpoint


def api(method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(A.api_url + path, data=data, method=method)
    req.add_header("Accept", "application/json")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=RPC_TIMEOUT) as resp:
        return resp.status, json.loads(resp.read())


def published():
    """Waits for the node's slices to hold the expected devices; returns
    [(device name, PCI address)] in slice order."""
    step = "slices"
    deadline = time.monotonic() + 30
    while True:
        _, listed = api("GET", "/apis/resource.k8s.io/v1/resourceslices")
        devices = [
            d
            for s in listed.get("items", [])
            if s["spec"].get("driver") == A.driver and s["spec"].get("nodeName") == A.node
            for d in s["spec"].get("devices", [])
        ]
        if len(devices) == A.expect:
            break
        if time.monotonic() > deadline:
            fail(step, "%d devices published, want %d" % (len(devices), A.expect))
        time.sleep(0.1)
    out = []
    for d in devices:
        pci = d.get("attributes", {}).get(PCI_ATTRIBUTE, {}).get("string")
        check(step, pci, "device %s has no string %s" % (d["name"], PCI_ATTRIBUTE))
        out.append((d["name"], pci))
    passed(step, "%d devices for node %s" % (len(out), A.node))
    return out


def driver_of(pci):
    link = os.path.join(A.sysfs_root, "bus/pci/devices", pci, "driver")
    return os.path.basename(os.readlink(link)) if os.path.islink(link) else None


def create_claim(name, uid, device, vf_driver):
    config = []
    if vf_driver:
        config = [
            {
                "source": "FromClaim",
                "requests": ["vf"],
                "opaque": {
                    "driver": A.driver,
                    "parameters": {
                        "apiVersion": "sriovnetwork.k8snetworkplumbingwg.io/v1alpha1",
                        "kind": "VfConfig",
                        "driver": vf_driver,
                        "ifName": "net1",
                    },
                },
            }
        ]
    claim = {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"namespace": NAMESPACE, "name": name, "uid": uid},
        "spec": {"devices": {"requests": [{"name": "vf", "exactly": {"deviceClassName": "sriov-vf"}}]}},
        "status": {
            "allocation": {
                "devices": {
                    "results": [{"request": "vf", "driver": A.driver, "pool": A.node, "device": device}],
                    "config": config,
                }
            }
        },
    }
    try:
        code, stored = api("POST", "/apis/resource.k8s.io/v1/namespaces/%s/resourceclaims" % NAMESPACE, claim)
    except urllib.error.HTTPError as e:
        fail("claim " + name, "POST answered %d: %s" % (e.code, e.read().decode(errors="replace")))
    check("claim " + name, code == 201 and stored["metadata"]["uid"] == uid, "POST answered %d %r" % (code, stored))


def cdi_specs_naming(cdi_name):
    """The CDI spec files under the CDI dir that define device cdi_name."""
    found = []
    for entry in sorted(os.listdir(A.cdi_dir)):
        path = os.path.join(A.cdi_dir, entry)
        try:
            with open(path) as f:
                spec = json.load(f)
        except (OSError, ValueError):
            continue
        if any(d.get("name") == cdi_name for d in spec.get("devices", [])):
            found.append(path)
    return found


def one_answer(step, answer, uid):
    check(step, list(answer.claims.keys()) == [uid], "answers for %r, want only %s" % (list(answer.claims), uid))
    return answer.claims[uid]


def prepare_v1(endpoint, by_path, uid, name):
    step = "prepare-v1"
    with channel(endpoint, by_path) as ch:
        stub = v1_grpc.DRAPluginStub(ch)
        answer = stub.NodePrepareResources(
            v1.NodePrepareResourcesRequest(claims=[v1.Claim(namespace=NAMESPACE, uid=uid, name=name)]),
            timeout=RPC_TIMEOUT,
        )
    one = one_answer(step, answer, uid)
    check(step, one.error == "", "%s: error %r" % (how(by_path), one.error))
    return one


def unprepare_v1(endpoint, by_path, uid, name):
    step = "unprepare-v1"
    with channel(endpoint, by_path) as ch:
        stub = v1_grpc.DRAPluginStub(ch)
        answer = stub.NodeUnprepareResources(
            v1.NodeUnprepareResourcesRequest(claims=[v1.Claim(namespace=NAMESPACE, uid=uid, name=name)]),
            timeout=RPC_TIMEOUT,
        )
    one = one_answer(step, answer, uid)
    check(step, one.error == "", "%s: claim %s: error %r" % (how(by_path), uid, one.error))


def watch_health(endpoint, devices):
    step = "health"
    with channel(endpoint, False) as ch:
        stub = health_grpc.DRAResourceHealthStub(ch)
        stream = stub.NodeWatchResources(health.NodeWatchResourcesRequest(), timeout=RPC_TIMEOUT)
        first = next(stream)
        stream.cancel()
    seen = {}
    for h in first.devices:
        check(step, h.device.pool_name == A.node, "device %s in pool %r" % (h.device.device_name, h.device.pool_name))
        seen[h.device.device_name] = h.health
    want = {name for name, _ in devices}
    check(step, set(seen) == want, "listed %r, want %r" % (sorted(seen), sorted(want)))
    sick = [n for n, s in seen.items() if s != health.HEALTHY]
    check(step, not sick, "not HEALTHY: %r" % sick)
    passed(step, "%d devices HEALTHY in pool %s" % (len(seen), A.node))


def main():
    endpoint = register()
    devices = published()
    kernel_bound = [(n, p) for n, p in devices if driver_of(p) not in (None, "vfio-pci")]
    check("fixture", len(kernel_bound) >= 2, "fewer than two kernel-bound devices in %r" % devices)
    (dev_a, pci_a), (dev_b, pci_b) = kernel_bound[0], kernel_bound[1]

    # A vfio-pci claim through v1, localhost then socket-path authority.
    uid_a, name_a = "3c0f7a52-1d2e-4b8a-9e31-00000000a001", "vfio-claim"
    before_a = driver_of(pci_a)
    create_claim(name_a, uid_a, dev_a, "vfio-pci")
    first = prepare_v1(endpoint, False, uid_a, name_a)
    cdi_id = "%s/vf=%s-%s" % (A.driver, uid_a, dev_a)
    check("prepare-v1", len(first.devices) == 1, "devices %r" % first.devices)
    d = first.devices[0]
    check("prepare-v1", list(d.cdi_device_ids) == [cdi_id], "CDI ids %r, want [%s]" % (list(d.cdi_device_ids), cdi_id))
    check(
        "prepare-v1",
        (d.device_name, d.pool_name, list(d.request_names)) == (dev_a, A.node, ["vf"]),
        "device %r" % d,
    )
    check("prepare-v1", driver_of(pci_a) == "vfio-pci", "%s is on %r, not vfio-pci" % (pci_a, driver_of(pci_a)))
    specs = cdi_specs_naming("%s-%s" % (uid_a, dev_a))
    check("prepare-v1", len(specs) == 1, "CDI specs naming the device: %r" % specs)
    passed("prepare-v1", "%s moved from %s to vfio-pci, CDI %s in %s" % (pci_a, before_a, cdi_id, specs[0]))
    again = prepare_v1(endpoint, True, uid_a, name_a)
    check("prepare-again", again == first, "first %r, second %r" % (first, again))
    passed("prepare-again", "the same answer (%s)" % how(True))

    watch_health(endpoint, devices)

    # A claim with no config through v1beta1 keeps the kernel driver.
    uid_b, name_b = "3c0f7a52-1d2e-4b8a-9e31-00000000b002", "kernel-claim"
    before_b = driver_of(pci_b)
    create_claim(name_b, uid_b, dev_b, None)
    beta_claim = v1beta1.Claim(namespace=NAMESPACE, uid=uid_b, name=name_b)
    with channel(endpoint, True) as ch:
        stub = v1beta1_grpc.DRAPluginStub(ch)
        answer = stub.NodePrepareResources(
            v1beta1.NodePrepareResourcesRequest(claims=[beta_claim]), timeout=RPC_TIMEOUT
        )
        one = one_answer("v1beta1", answer, uid_b)
        check("v1beta1", one.error == "" and len(one.devices) == 1, "prepare answered %r" % one)
        want_id = "%s/vf=%s-%s" % (A.driver, uid_b, dev_b)
        check("v1beta1", list(one.devices[0].cdi_device_ids) == [want_id], "CDI ids %r" % list(one.devices[0].cdi_device_ids))
        check("v1beta1", driver_of(pci_b) == before_b, "%s moved from %r to %r" % (pci_b, before_b, driver_of(pci_b)))
        undone = stub.NodeUnprepareResources(
            v1beta1.NodeUnprepareResourcesRequest(claims=[beta_claim]), timeout=RPC_TIMEOUT
        )
        check("v1beta1", one_answer("v1beta1", undone, uid_b).error == "", "unprepare answered %r" % undone)
    passed("v1beta1", "%s prepared and unprepared on %s" % (pci_b, before_b))

    unprepare_v1(endpoint, True, uid_a, name_a)
    check("unprepare-v1", driver_of(pci_a) == before_a, "%s is on %r, was on %r" % (pci_a, driver_of(pci_a), before_a))
    check("unprepare-v1", not os.path.exists(specs[0]), "%s is still there" % specs[0])
    passed("unprepare-v1", "%s back on %s, %s removed" % (pci_a, before_a, specs[0]))

    unprepare_v1(endpoint, False, "00000000-0000-0000-0000-00000000dead", "never-prepared")
    passed("unprepare-unknown", "an unknown claim unprepares without error")
    print("PASS", flush=True)


if __name__ == "__main__":
    try:
        main()
    except grpc.RpcError as e:
        fail("rpc", "%s: %s" % (e.code(), e.details()))
    except (OSError, ValueError, KeyError, StopIteration) as e:
        fail("unexpected", repr(e))
