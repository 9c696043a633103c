//! The deploy suite (`cargo xtask deploy-check`, and the "deploy" row of
//! `cargo xtask test`): what CI can check of the image and the manifests
//! without a Docker engine or a cluster.
//!
//! 1. The Dockerfile's shape (multi-stage, both binaries, version and commit
//!    build args, a non-root default user) and `.dockerignore`, always; then
//!    hadolint when installed; each shipped device plugin config, and the
//!    flags its manifests pass, through `sriov-device-plugin --dry-run` on
//!    the fixture node.
//! 2. Every kustomization under `deploy/` rendered with `kubectl kustomize`
//!    (or `kustomize build`); without either, with `deploy/checks/render.py`
//!    (the subset deploy/ uses), which is otherwise compared with kustomize.
//! 3. Each rendering validated against the Kubernetes OpenAPI schemas that
//!    ship inside the PyPI package kubernetes-validate (offline), strictly,
//!    for each of [`K8S_VERSIONS`]; the DRA driver's rendering and the
//!    files of [`DRA_EXAMPLES`] for each of [`DRA_K8S_VERSIONS`]. An object
//!    whose kind the schemas do not know fails (the tool only warns).
//! 4. The DRA driver's rendering read back (PyYAML from the venv): the
//!    ClusterRole grants exactly [`DRA_RBAC`], and the admission policy
//!    names the account the DaemonSet runs as.
//! 5. checkov over the renderings; every finding must be accepted, with a
//!    justification, in `deploy/checks/checkov-accepted.txt`, and every
//!    accepted line must still match a finding.
//! 6. The DRA DaemonSet's args against the binary's own `dra --help`: the
//!    subcommand and every flag must exist, and the parser must take the
//!    values. Last: failing here means every check above that could run passed.
//!
//! `xtask/setup/deploy-tools.sh` installs the Python tools into a venv
//! (`/opt/nsm-sriov/deploy-venv`, or `$NSM_DEPLOY_TOOLS`). A missing tool
//! makes the suite SKIPPED with its name; a check that ran and failed makes
//! it FAILED. The manifest-versus-binary check (every `NSM_*` variable with
//! its default, every path mounted) is a cargo test:
//! `bins/forwarder-sriov/tests/deploy_manifest.rs`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{Context, Result, bail};

use crate::report::Outcome;

/// Kubernetes versions the manifests are validated against: the oldest
/// release still commonly run (1.33) and a current one.
const K8S_VERSIONS: &[&str] = &["1.33.0", "1.36.0"];

/// The versions the DRA manifests are validated against: resource.k8s.io/v1
/// (DeviceClass, ResourceClaimTemplate, ResourceSlice) is GA from 1.34 and
/// absent from 1.33's schemas.
const DRA_K8S_VERSIONS: &[&str] = &["1.34.0", "1.36.0"];

/// Every kustomization we ship, relative to the workspace root, with the
/// Kubernetes versions its rendering must validate against.
const KUSTOMIZATIONS: &[(&str, &[&str])] = &[
    ("deploy/base", K8S_VERSIONS),
    ("deploy/base/forwarder-sriov", K8S_VERSIONS),
    ("deploy/base/sriov-device-plugin", K8S_VERSIONS),
    (DRA_KUSTOMIZATION, DRA_K8S_VERSIONS),
    ("deploy/overlays/example", K8S_VERSIONS),
];

/// The DRA driver (`sriov-device-plugin dra`).
const DRA_KUSTOMIZATION: &str = "deploy/base/sriov-dra";

/// Its DaemonSet, whose args the binary must accept.
const DRA_DAEMONSET: &str = "deploy/base/sriov-dra/daemonset.yaml";

/// The DRA examples (DeviceClasses, a ResourceClaimTemplate, a Pod): every
/// `.yaml` file in it is validated for [`DRA_K8S_VERSIONS`].
const DRA_EXAMPLES: &str = "deploy/examples/dra";

/// What the DRA driver's ClusterRole must grant, and nothing more:
/// `(API group, resource, verbs)`. Issue #19: its node's ResourceSlices
/// (the admission policy narrows them to the node), claims read, and its
/// Node read for the slices' owner reference.
const DRA_RBAC: &[(&str, &str, &[&str])] = &[
    (
        "resource.k8s.io",
        "resourceslices",
        &["create", "delete", "get", "list", "update", "watch"],
    ),
    ("resource.k8s.io", "resourceclaims", &["get"]),
    ("", "nodes", &["get"]),
];

const ACCEPTED_FINDINGS: &str = "deploy/checks/checkov-accepted.txt";

/// The device plugin configs we ship, each loaded by the binary itself.
const DEVICE_PLUGIN_CONFIGS: &[&str] = &[
    "deploy/base/sriov-device-plugin/config.json",
    "deploy/overlays/example/worker-1.json",
    "deploy/overlays/example/worker-2.json",
];

/// The manifests whose device plugin args are parsed by the binary.
const DEVICE_PLUGIN_MANIFESTS: &[&str] = &[
    "deploy/base/sriov-device-plugin/daemonset.yaml",
    "deploy/overlays/example/device-plugin-per-node.yaml",
    "deploy/examples/srdp-operator-swap.yaml",
];

/// The fixture node the device plugin configs are tried on (read only).
const FIXTURE_NODE: &str = "testdata/sysfs/node";

/// The fallback renderer, relative to the workspace root.
const RENDER_PY: &str = "deploy/checks/render.py";

/// Where the setup script puts the Python tools unless told otherwise.
const DEFAULT_TOOLS_VENV: &str = "/opt/nsm-sriov/deploy-venv";

fn workspace_root() -> PathBuf {
    let xtask = Path::new(env!("CARGO_MANIFEST_DIR"));
    xtask.parent().unwrap_or(xtask).to_path_buf()
}

/// `cargo xtask deploy-check`: runs the suite and prints its row.
pub(crate) fn run(_args: &[String]) -> Result<()> {
    let outcome = suite_outcome();
    println!("deploy: {outcome}");
    if matches!(outcome, Outcome::Failed(_)) {
        bail!("deploy checks failed");
    }
    Ok(())
}

/// The suite's row for `cargo xtask test`; never panics, always says why.
pub(crate) fn suite_outcome() -> Outcome {
    let mut log = Log::default();
    match checks(&workspace_root(), &mut log) {
        Err(e) => Outcome::Failed(format!("{e:#}")),
        Ok(()) if log.missing.is_empty() => Outcome::Passed(log.ran.join(", ")),
        Ok(()) => Outcome::Skipped(format!(
            "not installed: {} (xtask/setup/deploy-tools.sh); ran: {}",
            log.missing.join(", "),
            if log.ran.is_empty() {
                "nothing".to_string()
            } else {
                log.ran.join(", ")
            }
        )),
    }
}

/// What ran and which tools were missing.
#[derive(Default)]
struct Log {
    ran: Vec<String>,
    missing: Vec<String>,
}

fn checks(ws: &Path, log: &mut Log) -> Result<()> {
    dockerfile_shape(ws)?;
    log.ran.push("Dockerfile shape".into());
    match tool("hadolint") {
        Some(h) => {
            let out = run_tool(Command::new(h).arg("Dockerfile").current_dir(ws))?;
            if !out.status.success() {
                bail!("hadolint Dockerfile:\n{}", text(&out));
            }
            log.ran.push("hadolint".into());
        }
        None => log.missing.push("hadolint".into()),
    }

    let bin = build_device_plugin(ws)?;
    device_plugin_configs(ws, &bin)?;
    log.ran.push(format!(
        "sriov-device-plugin --dry-run on {} shipped configs and {} manifests' args",
        DEVICE_PLUGIN_CONFIGS.len(),
        DEVICE_PLUGIN_MANIFESTS.len()
    ));

    manifests(ws, log)?;

    let flags = dra_daemonset_flags(ws, &bin)?;
    log.ran.push(format!(
        "sriov-device-plugin dra takes the {flags} flags of {DRA_DAEMONSET}"
    ));
    Ok(())
}

/// Rendering, schema validation, the DRA read-back and checkov.
fn manifests(ws: &Path, log: &mut Log) -> Result<()> {
    let tmp = TempDir::new("nsm-sriov-deploy")?;
    let Some(rendered) = render_all(ws, &tmp.0, log)? else {
        log.missing
            .push("kubectl, kustomize or the venv's python (for render.py)".into());
        return Ok(());
    };
    let examples = dra_examples(ws)?;

    match tool("kubernetes-validate") {
        Some(kv) => {
            let mut targets: Vec<Rendered> = rendered.clone();
            targets.extend(examples.iter().map(|e| (e.clone(), DRA_K8S_VERSIONS)));
            validate_all(&kv, &targets)?;
            log.ran.push(format!(
                "kubernetes-validate --strict ({}; DRA: {}, with {} examples)",
                K8S_VERSIONS.join(", "),
                DRA_K8S_VERSIONS.join(", "),
                examples.len()
            ));
        }
        None => log.missing.push("kubernetes-validate".into()),
    }

    match venv_tool("python3") {
        Some(py) => {
            let objects = yaml_objects(&py, &rendering_file(&tmp.0, DRA_KUSTOMIZATION))?;
            dra_rbac_and_policy(&objects)
                .map_err(|p| anyhow::anyhow!("{DRA_KUSTOMIZATION}:\n  {}", p.join("\n  ")))?;
            log.ran
                .push("DRA RBAC and admission policy read back".into());
        }
        None => log.missing.push("the venv's python (PyYAML)".into()),
    }

    match tool("checkov") {
        Some(ck) => {
            let accepted = Accepted::load(&ws.join(ACCEPTED_FINDINGS))?;
            let findings = checkov_findings(&ck, &tmp.0)?;
            accepted.judge(&findings)?;
            log.ran.push(format!(
                "checkov ({} findings, all accepted in {ACCEPTED_FINDINGS})",
                findings.len()
            ));
        }
        None => log.missing.push("checkov".into()),
    }
    Ok(())
}

/// Each file validated against each of its versions, one run per version.
fn validate_all(kv: &Path, targets: &[Rendered]) -> Result<()> {
    let mut versions: Vec<&str> = targets
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .collect();
    versions.sort_unstable();
    versions.dedup();
    for version in versions {
        let files: Vec<&PathBuf> = targets
            .iter()
            .filter(|(_, v)| v.contains(&version))
            .map(|(f, _)| f)
            .collect();
        let out = run_tool(
            Command::new(kv)
                .args(["--strict", "--quiet", "-k", version])
                .args(&files),
        )?;
        let report = text(&out);
        if !out.status.success() {
            bail!("kubernetes-validate against Kubernetes {version}:\n{report}");
        }
        let unknown = unknown_kinds(&report);
        if !unknown.is_empty() {
            bail!(
                "kubernetes-validate has no schema in Kubernetes {version} for (a typo in apiVersion or kind, or an API newer than the version):\n  {}",
                unknown.join("\n  ")
            );
        }
    }
    Ok(())
}

/// kubernetes-validate's warnings for objects it could not check, which it
/// lets pass (exit 0): an unchecked manifest must not count as valid.
fn unknown_kinds(report: &str) -> Vec<String> {
    report
        .lines()
        .filter(|l| l.contains("Couldn't find schema"))
        .map(|l| l.trim().to_string())
        .collect()
}

/// The `.yaml` files of [`DRA_EXAMPLES`], sorted; none is an error, so a
/// moved directory cannot empty the check.
fn dra_examples(ws: &Path) -> Result<Vec<PathBuf>> {
    let dir = ws.join(DRA_EXAMPLES);
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry
            .with_context(|| format!("reading {}", dir.display()))?
            .path();
        if path.extension().is_some_and(|e| e == "yaml") {
            files.push(path);
        }
    }
    if files.is_empty() {
        bail!("{DRA_EXAMPLES}: no .yaml examples");
    }
    files.sort();
    Ok(files)
}

/// The documents of a YAML file as JSON values, read by the venv's PyYAML
/// (xtask carries no YAML parser).
fn yaml_objects(py: &Path, file: &Path) -> Result<Vec<serde_json::Value>> {
    let out = run_tool(
        Command::new(py)
            .args([
                "-c",
                "import json, sys, yaml\n\
                 with open(sys.argv[1]) as f:\n    \
                 json.dump([d for d in yaml.safe_load_all(f) if d is not None], sys.stdout)",
            ])
            .arg(file),
    )?;
    if !out.status.success() {
        bail!("reading {} as YAML:\n{}", file.display(), text(&out));
    }
    serde_json::from_slice(&out.stdout)
        .with_context(|| format!("the JSON PyYAML made of {}", file.display()))
}

/// The first object of `kind` (and `name`, when given).
fn find_object<'a>(
    objects: &'a [serde_json::Value],
    kind: &str,
    name: Option<&str>,
) -> Option<&'a serde_json::Value> {
    objects
        .iter()
        .find(|o| o["kind"] == kind && name.is_none_or(|n| o["metadata"]["name"] == n))
}

/// The DRA rendering's RBAC is exactly [`DRA_RBAC`], bound to the account
/// the DaemonSet runs as, and the admission policy (bound, denying) matches
/// that same account: a renamed account or namespace must not leave the
/// policy guarding nobody.
fn dra_rbac_and_policy(objects: &[serde_json::Value]) -> Result<(), Vec<String>> {
    let mut problems = Vec::new();
    let Some(ds) = find_object(objects, "DaemonSet", None) else {
        return Err(vec!["no DaemonSet".into()]);
    };
    let namespace = ds["metadata"]["namespace"].as_str().unwrap_or("default");
    let Some(account) = ds["spec"]["template"]["spec"]["serviceAccountName"].as_str() else {
        return Err(vec!["the DaemonSet names no serviceAccountName".into()]);
    };
    let user = format!("system:serviceaccount:{namespace}:{account}");

    if find_object(objects, "ServiceAccount", Some(account))
        .is_none_or(|sa| sa["metadata"]["namespace"].as_str().unwrap_or("default") != namespace)
    {
        problems.push(format!("no ServiceAccount {namespace}/{account}"));
    }

    let binding = objects.iter().find(|o| {
        o["kind"] == "ClusterRoleBinding"
            && o["subjects"].as_array().is_some_and(|s| {
                s.iter().any(|s| {
                    s["kind"] == "ServiceAccount"
                        && s["name"] == account
                        && s["namespace"] == namespace
                })
            })
    });
    let role =
        binding.and_then(|b| find_object(objects, "ClusterRole", b["roleRef"]["name"].as_str()));
    match role {
        None => problems.push(format!(
            "no ClusterRole bound to {user} by a ClusterRoleBinding"
        )),
        Some(role) => {
            let granted = granted_rules(role);
            let wanted: BTreeSet<(String, String, String)> = DRA_RBAC
                .iter()
                .flat_map(|(g, r, verbs)| {
                    verbs
                        .iter()
                        .map(|v| (g.to_string(), r.to_string(), v.to_string()))
                })
                .collect();
            for (g, r, v) in granted.difference(&wanted) {
                problems.push(format!(
                    "the ClusterRole grants {v} on {r} (group {g:?}), which the driver does not use"
                ));
            }
            for (g, r, v) in wanted.difference(&granted) {
                problems.push(format!(
                    "the ClusterRole lacks {v} on {r} (group {g:?}), which the driver calls"
                ));
            }
        }
    }

    match find_object(objects, "ValidatingAdmissionPolicy", None) {
        None => problems
            .push("no ValidatingAdmissionPolicy limiting the driver's ResourceSlices".into()),
        Some(vap) => {
            let policy = vap["metadata"]["name"].as_str().unwrap_or_default();
            let conditions = vap["spec"]["matchConditions"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default();
            let quoted = [format!("'{user}'"), format!("\"{user}\"")];
            if !conditions.iter().any(|c| {
                c["expression"]
                    .as_str()
                    .is_some_and(|e| quoted.iter().any(|q| e.contains(q.as_str())))
            }) {
                problems.push(format!(
                    "ValidatingAdmissionPolicy {policy}: no matchCondition names {user}, the account the DaemonSet runs as"
                ));
            }
            if !vap["spec"]["matchConstraints"]["resourceRules"]
                .as_array()
                .is_some_and(|rules| {
                    rules.iter().any(|r| {
                        r["resources"]
                            .as_array()
                            .is_some_and(|rs| rs.iter().any(|x| x == "resourceslices"))
                    })
                })
            {
                problems.push(format!(
                    "ValidatingAdmissionPolicy {policy}: matches no resourceslices"
                ));
            }
            let bound = objects.iter().any(|o| {
                o["kind"] == "ValidatingAdmissionPolicyBinding"
                    && o["spec"]["policyName"] == policy
                    && o["spec"]["validationActions"]
                        .as_array()
                        .is_some_and(|a| a.iter().any(|x| x == "Deny"))
            });
            if !bound {
                problems.push(format!(
                    "ValidatingAdmissionPolicy {policy}: no ValidatingAdmissionPolicyBinding denies with it"
                ));
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// `(group, resource, verb)` of every rule; `*` stays `*`, so a wildcard
/// shows up as an extra grant.
fn granted_rules(role: &serde_json::Value) -> BTreeSet<(String, String, String)> {
    let strings = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut out = BTreeSet::new();
    for rule in role["rules"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        for g in strings(&rule["apiGroups"]) {
            for r in strings(&rule["resources"]) {
                for v in strings(&rule["verbs"]) {
                    out.insert((g.clone(), r.clone(), v));
                }
            }
        }
        if rule.get("nonResourceURLs").is_some() || rule.get("resourceNames").is_some() {
            out.insert((
                "?".into(),
                "nonResourceURLs or resourceNames".into(),
                "?".into(),
            ));
        }
    }
    out
}

/// The DRA DaemonSet's args through the binary's own parser: `dra` first,
/// every flag listed by `dra --help`, then all of them parsed with `--help`
/// last (clap checks each value as it reads it, so a bad `--link-health`
/// fails; help then exits 0 without serving). Returns how many flags.
fn dra_daemonset_flags(ws: &Path, bin: &Path) -> Result<usize> {
    let path = ws.join(DRA_DAEMONSET);
    let yaml =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let args = container_args(&yaml);
    let (flags, problems) = dra_args_problems(&args);
    if !problems.is_empty() {
        bail!("{DRA_DAEMONSET}:\n  {}", problems.join("\n  "));
    }
    let help = run_tool(Command::new(bin).args(["dra", "--help"]))?;
    if !help.status.success() {
        bail!(
            "`sriov-device-plugin dra --help` failed: the binary has no dra subcommand that {DRA_DAEMONSET} could run:\n{}",
            text(&help)
        );
    }
    let known = help_flags(&String::from_utf8_lossy(&help.stdout));
    let unknown: Vec<&str> = flags
        .iter()
        .map(|f| flag_name(f))
        .filter(|n| !known.contains(*n))
        .collect();
    if !unknown.is_empty() {
        bail!(
            "{DRA_DAEMONSET} passes flags `sriov-device-plugin dra --help` does not list: {}",
            unknown.join(", ")
        );
    }
    let out = run_tool(Command::new(bin).args(&args).arg("--help"))?;
    if !out.status.success() {
        bail!(
            "sriov-device-plugin refuses the args of {DRA_DAEMONSET} ({}):\n{}",
            args.join(" "),
            text(&out)
        );
    }
    Ok(flags.len())
}

/// The flags of the DRA DaemonSet's args, and what is wrong with the list:
/// the subcommand must come first and everything after it be a `--flag`.
fn dra_args_problems(args: &[String]) -> (Vec<String>, Vec<String>) {
    let mut problems = Vec::new();
    match args.first().map(String::as_str) {
        Some("dra") => {}
        Some(other) => problems.push(format!("args start with {other:?}, not the dra subcommand")),
        None => problems.push("no container args".into()),
    }
    let flags: Vec<String> = args.iter().skip(1).cloned().collect();
    for f in &flags {
        if !f.starts_with("--") {
            problems.push(format!("{f:?} is not a --flag=value"));
        }
    }
    (flags, problems)
}

/// `--name` of `--name=value`.
fn flag_name(flag: &str) -> &str {
    flag.split('=').next().unwrap_or(flag)
}

/// The `--long-flag`s a clap help text lists as options: the head of an
/// option line (`  -h, --help`, `      --config-file <FILE>`), not a flag
/// merely named in another one's description.
fn help_flags(help: &str) -> BTreeSet<String> {
    help.lines()
        .filter_map(|line| {
            let t = line.trim_start();
            let t = match t.split_once(", ") {
                Some((short, rest)) if short.len() == 2 && short.starts_with('-') => rest,
                _ => t,
            };
            let name: String = t
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                .collect();
            (name.len() > 2 && name.starts_with("--") && !name.starts_with("---")).then_some(name)
        })
        .collect()
}

/// The items of the first container's `args:` list, as deploy/ writes them
/// (block style, one `- item` a line, comments between).
fn container_args(yaml: &str) -> Vec<String> {
    let mut lines = yaml.lines();
    let Some(indent) = lines
        .by_ref()
        .find_map(|l| (l.trim() == "args:").then(|| l.len() - l.trim_start().len()))
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for l in lines {
        let t = l.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let at = l.len() - l.trim_start().len();
        // A list may sit at its key's indentation in YAML.
        let Some(item) = t.strip_prefix("- ").filter(|_| at >= indent) else {
            break;
        };
        out.push(item.trim().trim_matches('"').to_string());
    }
    out
}

/// Builds the device plugin (debug) and returns its path.
fn build_device_plugin(ws: &Path) -> Result<PathBuf> {
    let status = crate::suites::cargo(&["build", "--quiet", "-p", "sriov-device-plugin"])
        .current_dir(ws)
        .status()
        .context("building sriov-device-plugin")?;
    if !status.success() {
        bail!("building sriov-device-plugin failed");
    }
    Ok(crate::demo::target_dir().join("debug/sriov-device-plugin"))
}

/// Each shipped device plugin config through the binary's own loader and
/// discovery (`--dry-run`) on the fixture node: a config the binary refuses
/// would crash-loop the DaemonSet.
fn device_plugin_configs(ws: &Path, bin: &Path) -> Result<()> {
    let node = ws.join(FIXTURE_NODE);
    for config in DEVICE_PLUGIN_CONFIGS {
        let out = run_tool(
            Command::new(bin)
                .arg("--dry-run")
                .arg("--config-file")
                .arg(ws.join(config))
                .arg("--sysfs-root")
                .arg(&node)
                // The host's routes and devices are none of this check's business.
                .args(["--proc-net-route", "/dev/null", "--dev-dir"])
                .arg(&node),
        )?;
        if !out.status.success() || !String::from_utf8_lossy(&out.stdout).contains("Pools:") {
            bail!(
                "sriov-device-plugin --dry-run refuses {config}:\n{}",
                text(&out)
            );
        }
    }
    // The flags the manifests pass, with the binary's own parser: a renamed
    // or dropped flag would crash-loop the DaemonSet.
    for manifest in DEVICE_PLUGIN_MANIFESTS {
        let path = ws.join(manifest);
        let yaml = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let flags = manifest_flags(&yaml);
        if flags.is_empty() {
            bail!("{manifest}: no container args found");
        }
        let mut cmd = Command::new(bin);
        cmd.arg("--dry-run");
        for flag in &flags {
            // Paths inside the pod mean nothing here; the fixture stands in.
            let name = flag.split('=').next().unwrap_or_default();
            if !matches!(name, "--config-file" | "--dev-dir" | "--sysfs-root") {
                cmd.arg(flag);
            }
        }
        cmd.arg("--config-file")
            .arg(ws.join(DEVICE_PLUGIN_CONFIGS[0]))
            .arg("--sysfs-root")
            .arg(&node)
            .args(["--proc-net-route", "/dev/null", "--dev-dir"])
            .arg(&node);
        let out = run_tool(&mut cmd)?;
        if !out.status.success() {
            bail!(
                "sriov-device-plugin refuses the args of {manifest} ({}):\n{}",
                flags.join(" "),
                text(&out)
            );
        }
    }
    Ok(())
}

/// The `--flag` items of a manifest's container args (one `- --flag=value`
/// per line, as deploy/ writes them).
fn manifest_flags(yaml: &str) -> Vec<String> {
    yaml.lines()
        .filter_map(|l| l.trim().strip_prefix("- "))
        .map(|item| item.trim().trim_matches('"'))
        .filter(|item| item.starts_with("--"))
        .map(str::to_string)
        .collect()
}

/// Dockerfile lines with `\`-continuations joined and comments dropped.
fn instructions(dockerfile: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in dockerfile.lines() {
        let t = line.trim();
        if cur.is_empty() && (t.is_empty() || t.starts_with('#')) {
            continue;
        }
        match t.strip_suffix('\\') {
            Some(head) => {
                cur.push_str(head);
                cur.push(' ');
            }
            None => {
                cur.push_str(t);
                out.push(std::mem::take(&mut cur));
            }
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// The conventions the issue asks of the image, which hadolint does not know.
fn dockerfile_shape(ws: &Path) -> Result<()> {
    let path = ws.join("Dockerfile");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    dockerfile_problems(&text)
        .map_err(|problems| anyhow::anyhow!("Dockerfile:\n  {}", problems.join("\n  ")))?;
    let ignore_path = ws.join(".dockerignore");
    let ignore = std::fs::read_to_string(&ignore_path)
        .with_context(|| format!("reading {}", ignore_path.display()))?;
    if !ignore
        .lines()
        .any(|l| l.trim().trim_end_matches('/') == "target")
    {
        bail!(".dockerignore does not leave out target/ (the build context would carry it)");
    }
    Ok(())
}

/// Every convention broken, so one run names them all.
fn dockerfile_problems(text: &str) -> Result<(), Vec<String>> {
    let ins = instructions(text);
    let keyword = |i: &String| {
        i.split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_uppercase()
    };
    let mut problems = Vec::new();
    let froms: Vec<&String> = ins.iter().filter(|i| keyword(i) == "FROM").collect();
    if froms.len() < 2 {
        problems.push("not multi-stage: build in one stage, ship from another".to_string());
    }
    if !froms.iter().any(|f| f.contains("rust:")) {
        problems.push("no stage builds FROM a rust image".to_string());
    }
    for arg in ["VERSION", "COMMIT"] {
        if !ins
            .iter()
            .any(|i| keyword(i) == "ARG" && i.contains(&format!(" {arg}")))
        {
            problems.push(format!("no ARG {arg}: the build cannot bake it in"));
        }
    }
    // xtask shares the workspace version with the binaries.
    let version_arg = format!("VERSION={}", env!("CARGO_PKG_VERSION"));
    if !ins
        .iter()
        .any(|i| keyword(i) == "ARG" && i.split_whitespace().nth(1) == Some(version_arg.as_str()))
    {
        problems.push(format!(
            "no ARG {version_arg}: the default version label would not be the crate version"
        ));
    }
    for bin in ["forwarder-sriov", "sriov-device-plugin"] {
        if !ins.iter().any(|i| keyword(i) == "COPY" && i.contains(bin)) {
            problems.push(format!("{bin} is never copied into a runtime stage"));
        }
    }
    // The names the binaries' `--version` reads at compile time (option_env!).
    for var in ["SRIOV_BUILD_VERSION", "SRIOV_BUILD_COMMIT"] {
        if !ins.iter().any(|i| {
            keyword(i) == "RUN" && i.contains("cargo build") && i.contains(&format!("{var}="))
        }) {
            problems.push(format!(
                "cargo build runs without {var}: --version would not show it"
            ));
        }
    }
    if !ins
        .iter()
        .any(|i| keyword(i) == "RUN" && i.contains("--locked"))
    {
        problems.push("cargo build without --locked: Cargo.lock would not be honoured".into());
    }
    // The user in force in the final stage, i.e. after its FROM (or inherited
    // from a named stage it builds on).
    let user = last_user(&ins);
    match user.as_deref() {
        None => problems.push("no USER: the image would run as root by default".into()),
        Some(u) if matches!(u.split(':').next(), Some("0" | "root")) => {
            problems.push(format!("USER {u} is root"));
        }
        Some(_) => {}
    }
    if !ins.iter().any(|i| keyword(i) == "ENTRYPOINT") {
        problems.push("no ENTRYPOINT".into());
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// The USER of the last stage, following `FROM <stage>` back through the
/// stages it is built on.
fn last_user(ins: &[String]) -> Option<String> {
    let mut stages: Vec<(Option<String>, String, Option<String>)> = Vec::new();
    for i in ins {
        let words: Vec<&str> = i.split_whitespace().collect();
        match words.first().map(|w| w.to_ascii_uppercase()).as_deref() {
            Some("FROM") => {
                let image = words
                    .iter()
                    .skip(1)
                    .find(|w| !w.starts_with("--"))
                    .map(|s| s.to_string())
                    .unwrap_or_default();
                let name = words
                    .iter()
                    .position(|w| w.eq_ignore_ascii_case("AS"))
                    .and_then(|p| words.get(p + 1))
                    .map(|s| s.to_string());
                let inherited = stages
                    .iter()
                    .rev()
                    .find(|(n, _, _)| n.as_deref() == Some(image.as_str()))
                    .and_then(|(_, _, u)| u.clone());
                stages.push((name, image, inherited));
            }
            Some("USER") => {
                if let (Some(last), Some(u)) = (stages.last_mut(), words.get(1)) {
                    last.2 = Some(u.to_string());
                }
            }
            _ => {}
        }
    }
    stages.last().and_then(|(_, _, u)| u.clone())
}

/// How the kustomizations are rendered.
enum Renderer {
    /// `kubectl kustomize` or `kustomize build`: the real thing.
    Kustomize(Vec<PathBuf>),
    /// `deploy/checks/render.py` on the venv's Python: the subset deploy/
    /// uses, for machines without kubectl (no registry we reach ships it).
    Fallback(PathBuf),
}

/// Renders each kustomization into `dir`; `None` when no renderer is
/// available. With kubectl and the venv both present, render.py's output is
/// also compared with kustomize's so the fallback cannot rot unnoticed.
/// Where [`render_all`] puts the rendering of kustomization `k`.
fn rendering_file(dir: &Path, k: &str) -> PathBuf {
    dir.join(format!("{}.yaml", k.replace('/', "_")))
}

/// A rendering and the Kubernetes versions it must validate against.
type Rendered = (PathBuf, &'static [&'static str]);

fn render_all(ws: &Path, dir: &Path, log: &mut Log) -> Result<Option<Vec<Rendered>>> {
    let python = venv_tool("python3");
    let renderer = if let Some(k) = tool("kubectl") {
        Renderer::Kustomize(vec![k, "kustomize".into()])
    } else if let Some(k) = tool("kustomize") {
        Renderer::Kustomize(vec![k, "build".into()])
    } else if let Some(py) = &python {
        Renderer::Fallback(py.clone())
    } else {
        return Ok(None);
    };
    let render_py = ws.join(RENDER_PY);
    let mut files = Vec::new();
    for &(k, versions) in KUSTOMIZATIONS {
        let mut cmd = match &renderer {
            Renderer::Kustomize(argv) => {
                let mut c = Command::new(&argv[0]);
                c.args(&argv[1..]);
                c
            }
            Renderer::Fallback(py) => {
                let mut c = Command::new(py);
                c.arg(&render_py);
                c
            }
        };
        let out = run_tool(cmd.arg(ws.join(k)))?;
        if !out.status.success() {
            bail!("rendering {k}:\n{}", text(&out));
        }
        if out.stdout.is_empty() {
            bail!("rendering {k} produced nothing");
        }
        let file = rendering_file(dir, k);
        std::fs::write(&file, &out.stdout)
            .with_context(|| format!("writing {}", file.display()))?;
        if let (Renderer::Kustomize(_), Some(py)) = (&renderer, &python) {
            let cmp = run_tool(
                Command::new(py)
                    .arg(&render_py)
                    .arg("--compare")
                    .arg(ws.join(k))
                    .arg(&file),
            )?;
            if !cmp.status.success() {
                bail!(
                    "{RENDER_PY} (the fallback renderer) no longer agrees with kustomize on {k}:\n{}",
                    text(&cmp)
                );
            }
        }
        files.push((file, versions));
    }
    log.ran.push(match (&renderer, &python) {
        (Renderer::Kustomize(argv), Some(_)) => format!(
            "{} ({} renderings, {RENDER_PY} agrees)",
            kustomize_name(argv),
            files.len()
        ),
        (Renderer::Kustomize(argv), None) => {
            format!("{} ({} renderings)", kustomize_name(argv), files.len())
        }
        (Renderer::Fallback(_), _) => format!(
            "{RENDER_PY} ({} renderings; no kubectl or kustomize installed)",
            files.len()
        ),
    });
    Ok(Some(files))
}

fn kustomize_name(argv: &[PathBuf]) -> String {
    let bin = argv[0]
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!("{bin} {}", argv[1].display())
}

/// One accepted checkov finding.
#[derive(Debug)]
struct AcceptedFinding {
    check: String,
    /// Checkov's resource name; a trailing `*` matches any suffix.
    resource: String,
    line: usize,
}

impl AcceptedFinding {
    fn matches(&self, check: &str, resource: &str) -> bool {
        self.check == check
            && match self.resource.strip_suffix('*') {
                Some(prefix) => resource.starts_with(prefix),
                None => self.resource == resource,
            }
    }
}

struct Accepted(Vec<AcceptedFinding>);

impl Accepted {
    fn load(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("in {}", path.display()))
    }

    fn parse(text: &str) -> Result<Self> {
        let mut out = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let t = line.trim();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            let mut words = t.split_whitespace();
            let (Some(check), Some(resource)) = (words.next(), words.next()) else {
                bail!("line {}: expected CHECK_ID RESOURCE JUSTIFICATION", n + 1);
            };
            if words.next().is_none() {
                bail!("line {}: {check} on {resource} has no justification", n + 1);
            }
            out.push(AcceptedFinding {
                check: check.to_string(),
                resource: resource.to_string(),
                line: n + 1,
            });
        }
        Ok(Self(out))
    }

    /// Fails on findings nobody accepted and on accepted lines that match
    /// nothing any more.
    fn judge(&self, findings: &BTreeSet<(String, String)>) -> Result<()> {
        let unaccepted: Vec<String> = findings
            .iter()
            .filter(|(c, r)| !self.0.iter().any(|a| a.matches(c, r)))
            .map(|(c, r)| format!("{c} on {r}"))
            .collect();
        let stale: Vec<String> = self
            .0
            .iter()
            .filter(|a| !findings.iter().any(|(c, r)| a.matches(c, r)))
            .map(|a| format!("line {}: {} on {}", a.line, a.check, a.resource))
            .collect();
        let mut msg = String::new();
        if !unaccepted.is_empty() {
            msg.push_str(&format!(
                "checkov findings not accepted in {ACCEPTED_FINDINGS} (fix the manifest, or accept with a reason):\n  {}\n",
                unaccepted.join("\n  ")
            ));
        }
        if !stale.is_empty() {
            msg.push_str(&format!(
                "accepted findings checkov no longer reports (remove them):\n  {}\n",
                stale.join("\n  ")
            ));
        }
        if msg.is_empty() {
            Ok(())
        } else {
            bail!("{msg}")
        }
    }
}

/// `(check id, resource)` of every failed check over the renderings in `dir`.
fn checkov_findings(checkov: &Path, dir: &Path) -> Result<BTreeSet<(String, String)>> {
    let out = run_tool(
        Command::new(checkov)
            .arg("-d")
            .arg(dir)
            // Offline: no policy or mapping downloads, results judged here.
            .args([
                "--framework",
                "kubernetes",
                "--compact",
                "--quiet",
                "--soft-fail",
                "--skip-download",
            ]),
    )?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || !stdout.contains("Passed checks:") {
        bail!("checkov did not run to the end:\n{}", text(&out));
    }
    Ok(parse_checkov(&stdout))
}

/// Reads checkov's CLI report: a `Check: ID: "title"` line, then
/// `FAILED for resource: NAME`.
fn parse_checkov(report: &str) -> BTreeSet<(String, String)> {
    let mut findings = BTreeSet::new();
    let mut check: Option<String> = None;
    for line in report.lines() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("Check: ") {
            check = rest.split(':').next().map(|s| s.trim().to_string());
        } else if let Some(resource) = t.strip_prefix("FAILED for resource: ")
            && let Some(c) = &check
        {
            findings.insert((c.clone(), resource.trim().to_string()));
        }
    }
    findings
}

/// A tool from the deploy venv only.
fn venv_tool(name: &str) -> Option<PathBuf> {
    let venv = std::env::var_os("NSM_DEPLOY_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_TOOLS_VENV));
    Some(venv.join("bin").join(name)).filter(|p| p.is_file())
}

/// A tool from the deploy venv, else from PATH.
fn tool(name: &str) -> Option<PathBuf> {
    if let Some(t) = venv_tool(name) {
        return Some(t);
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn run_tool(cmd: &mut Command) -> Result<Output> {
    cmd.output().with_context(|| format!("running {cmd:?}"))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A temp dir removed on drop (xtask has no tempfile dependency).
struct TempDir(PathBuf);

impl TempDir {
    fn new(prefix: &str) -> Result<Self> {
        let p = std::env::temp_dir().join(format!("{prefix}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
        Ok(Self(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_dockerfile_has_the_expected_shape() {
        dockerfile_shape(&workspace_root()).unwrap();
    }

    #[test]
    fn dockerfile_without_stages_user_or_args_names_every_problem() {
        let problems =
            dockerfile_problems("FROM rust:1.95\nRUN cargo build --release\nCOPY x /y\nUSER 0\n")
                .unwrap_err();
        let all = problems.join("\n");
        for want in [
            "not multi-stage",
            "ARG VERSION=",
            "ARG COMMIT",
            "forwarder-sriov is never copied",
            "--locked",
            "without SRIOV_BUILD_COMMIT",
            "USER 0 is root",
            "no ENTRYPOINT",
        ] {
            assert!(all.contains(want), "{want:?} missing from:\n{all}");
        }
    }

    #[test]
    fn final_stage_inherits_the_user_of_the_stage_it_builds_on() {
        let ins = instructions(
            "FROM a AS runtime\nUSER 65532\n# a comment\nFROM runtime AS one\nENTRYPOINT [\"x\"]\n",
        );
        assert_eq!(last_user(&ins).as_deref(), Some("65532"));
        let ins = instructions("FROM a AS b\nUSER 65532\nFROM debian\n");
        assert_eq!(last_user(&ins), None);
    }

    #[test]
    fn continuation_lines_join_into_one_instruction() {
        let ins = instructions("RUN a \\\n    b \\\n    c\nFROM x\n");
        assert_eq!(ins.len(), 2);
        assert!(ins[0].contains('a') && ins[0].contains('c'));
    }

    #[test]
    fn manifest_flags_are_the_double_dash_list_items() {
        let yaml = "          args:\n            - --resource-prefix=intel.com\n            # note\n            - \"--use-cdi\"\n          env:\n            - name: X\n";
        assert_eq!(
            manifest_flags(yaml),
            ["--resource-prefix=intel.com", "--use-cdi"]
        );
    }

    #[test]
    fn checkov_report_lines_become_findings() {
        let report = "\
Passed checks: 3, Failed checks: 2, Skipped checks: 0
Check: CKV_K8S_16: \"Container should not be privileged\"
\tFAILED for resource: DaemonSet.nsm-system.forwarder-sriov
\tFile: /x.yaml:1-10
Check: CKV2_K8S_6: \"Minimize ...\"
\tFAILED for resource: Pod.nsm-system.forwarder-sriov.app-forwarder-sriov
";
        let f = parse_checkov(report);
        assert!(f.contains(&(
            "CKV_K8S_16".to_string(),
            "DaemonSet.nsm-system.forwarder-sriov".to_string()
        )));
        assert_eq!(f.len(), 2);
    }

    #[test]
    fn unaccepted_and_stale_findings_both_fail() {
        let accepted = Accepted::parse(
            "# comment\nCKV_1 DaemonSet.a.b needed because\nCKV_2 Pod.a.* graph check\n",
        )
        .unwrap();
        let mut found = BTreeSet::new();
        found.insert(("CKV_1".to_string(), "DaemonSet.a.b".to_string()));
        found.insert(("CKV_2".to_string(), "Pod.a.b.labels".to_string()));
        accepted.judge(&found).unwrap();

        found.insert(("CKV_3".to_string(), "DaemonSet.a.b".to_string()));
        let e = accepted.judge(&found).unwrap_err().to_string();
        assert!(e.contains("CKV_3 on DaemonSet.a.b"), "{e}");

        found.clear();
        found.insert(("CKV_1".to_string(), "DaemonSet.a.b".to_string()));
        let e = accepted.judge(&found).unwrap_err().to_string();
        assert!(e.contains("line 3: CKV_2"), "{e}");
    }

    #[test]
    fn an_accepted_finding_needs_a_justification() {
        let e = Accepted::parse("CKV_K8S_16 DaemonSet.a.b\n")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("no justification"), "{e}");
    }

    /// The flags agreed with the `dra` subcommand's author (issue #19); the
    /// DaemonSet may pass only these, so a rename on either side shows here
    /// before the binary check does.
    const AGREED_DRA_FLAGS: &[&str] = &[
        "--config-file",
        "--driver-name",
        "--node-name",
        "--kubeconfig",
        "--plugin-dir",
        "--plugins-registry-dir",
        "--cdi-dir",
        "--devinfo-dir",
        "--sysfs-root",
        "--link-health",
        "--metrics-listen",
    ];

    #[test]
    fn the_dra_daemonset_runs_the_dra_subcommand_with_agreed_flags_only() {
        let yaml = std::fs::read_to_string(workspace_root().join(DRA_DAEMONSET)).unwrap();
        let args = container_args(&yaml);
        let (flags, problems) = dra_args_problems(&args);
        assert!(problems.is_empty(), "{problems:?}");
        assert!(flags.len() >= 5, "{flags:?}");
        for f in &flags {
            assert!(
                AGREED_DRA_FLAGS.contains(&flag_name(f)),
                "{f} is not one of the agreed dra flags"
            );
        }
        // The mounts are written for these values.
        for want in [
            "--plugins-registry-dir=/var/lib/kubelet/plugins_registry",
            "--cdi-dir=/var/run/cdi",
            "--devinfo-dir=/var/run/k8s.cni.cncf.io/devinfo/dp",
            "--sysfs-root=/sys",
        ] {
            assert!(flags.iter().any(|f| f == want), "{want} missing: {flags:?}");
        }
    }

    #[test]
    fn container_args_are_the_list_under_args_comments_skipped() {
        let yaml = "        - name: c\n          args:\n            - dra\n            # why\n            - \"--sysfs-root=/sys\"\n\n          env:\n            - name: X\n";
        assert_eq!(container_args(yaml), ["dra", "--sysfs-root=/sys"]);
        let same_indent = "args:\n- dra\n- --a=1\nenv:\n- name: X\n";
        assert_eq!(container_args(same_indent), ["dra", "--a=1"]);
        assert!(container_args("env:\n  - name: X\n").is_empty());
    }

    #[test]
    fn dra_args_must_start_with_the_subcommand_and_hold_only_flags() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let (_, p) = dra_args_problems(&args(&["--sysfs-root=/sys", "dra"]));
        assert!(
            p.iter().any(|p| p.contains("not the dra subcommand")),
            "{p:?}"
        );
        assert!(
            p.iter().any(|p| p.contains("\"dra\" is not a --flag")),
            "{p:?}"
        );
        let (_, p) = dra_args_problems(&[]);
        assert_eq!(p, ["no container args"]);
        let (flags, p) = dra_args_problems(&args(&["dra", "--cdi-dir=/x"]));
        assert!(p.is_empty());
        assert_eq!(flags, ["--cdi-dir=/x"]);
    }

    #[test]
    fn help_flags_are_option_heads_not_flags_named_in_descriptions() {
        let help = "\
Usage: sriov-device-plugin dra [OPTIONS]

Options:
      --config-file <CONFIG_FILE>
          JSON device pool config file [default: /etc/pcidp/config.json]
      --ignore-carrier
          With `--link-health netlink`: a PF link that is down
  -h, --help
          Print help
";
        let flags = help_flags(help);
        assert_eq!(
            flags.into_iter().collect::<Vec<_>>(),
            ["--config-file", "--help", "--ignore-carrier"]
        );
    }

    #[test]
    fn objects_without_a_schema_are_reported_not_passed() {
        let report = "INFO a.yaml passed for resource pod/x against version 1.33\n\
WARN b.yaml Couldn't find schema for kind DeviceClass with api version resource.k8s.io/v1 for kubernetes version 1.33\n";
        let unknown = unknown_kinds(report);
        assert_eq!(unknown.len(), 1);
        assert!(unknown[0].contains("DeviceClass"), "{unknown:?}");
        assert!(unknown_kinds("INFO a.yaml passed\n").is_empty());
    }

    #[test]
    fn the_dra_examples_are_found() {
        let files = dra_examples(&workspace_root()).unwrap();
        let names: Vec<String> = files
            .iter()
            .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        for want in ["resourceclaimtemplate-vfio.yaml", "pod.yaml"] {
            assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
        }
        assert!(
            names
                .iter()
                .filter(|n| n.starts_with("deviceclass-"))
                .count()
                >= 2
        );
    }

    /// A DRA rendering as the base makes it, for the read-back tests.
    fn dra_objects() -> Vec<serde_json::Value> {
        serde_json::json!([
            {"kind": "ServiceAccount", "metadata": {"name": "drv", "namespace": "ns"}},
            {"kind": "ClusterRole", "metadata": {"name": "role"}, "rules": [
                {"apiGroups": ["resource.k8s.io"], "resources": ["resourceslices"],
                 "verbs": ["get", "list", "watch", "create", "update", "delete"]},
                {"apiGroups": ["resource.k8s.io"], "resources": ["resourceclaims"], "verbs": ["get"]},
                {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]}
            ]},
            {"kind": "ClusterRoleBinding", "metadata": {"name": "b"},
             "roleRef": {"kind": "ClusterRole", "name": "role"},
             "subjects": [{"kind": "ServiceAccount", "name": "drv", "namespace": "ns"}]},
            {"kind": "ValidatingAdmissionPolicy", "metadata": {"name": "vap"}, "spec": {
                "matchConstraints": {"resourceRules": [{"resources": ["resourceslices"]}]},
                "matchConditions": [{"name": "c",
                    "expression": "request.userInfo.username == 'system:serviceaccount:ns:drv'"}]}},
            {"kind": "ValidatingAdmissionPolicyBinding", "metadata": {"name": "vap"},
             "spec": {"policyName": "vap", "validationActions": ["Deny"]}},
            {"kind": "DaemonSet", "metadata": {"name": "d", "namespace": "ns"},
             "spec": {"template": {"spec": {"serviceAccountName": "drv"}}}}
        ])
        .as_array()
        .unwrap()
        .clone()
    }

    #[test]
    fn dra_rbac_and_policy_accept_the_agreed_shape() {
        dra_rbac_and_policy(&dra_objects()).unwrap();
    }

    #[test]
    fn dra_rbac_beyond_or_short_of_what_the_driver_uses_fails() {
        let mut objs = dra_objects();
        objs[1]["rules"][0]["verbs"] =
            serde_json::json!(["get", "list", "watch", "create", "update", "patch"]);
        objs[1]["rules"][2]["resources"] = serde_json::json!(["*"]);
        let p = dra_rbac_and_policy(&objs).unwrap_err().join("\n");
        assert!(p.contains("grants patch on resourceslices"), "{p}");
        assert!(p.contains("lacks delete on resourceslices"), "{p}");
        assert!(p.contains("grants get on *"), "{p}");
        assert!(p.contains("lacks get on nodes"), "{p}");
    }

    #[test]
    fn a_policy_for_another_account_or_without_a_binding_fails() {
        let mut objs = dra_objects();
        objs[5]["metadata"]["namespace"] = serde_json::json!("other");
        objs[4]["spec"]["validationActions"] = serde_json::json!(["Warn"]);
        let p = dra_rbac_and_policy(&objs).unwrap_err().join("\n");
        assert!(p.contains("no ServiceAccount other/drv"), "{p}");
        assert!(
            p.contains("no ClusterRole bound to system:serviceaccount:other:drv"),
            "{p}"
        );
        assert!(
            p.contains("no matchCondition names system:serviceaccount:other:drv"),
            "{p}"
        );
        assert!(
            p.contains("no ValidatingAdmissionPolicyBinding denies"),
            "{p}"
        );
    }

    /// A stand-in for the binary: `dra --help` lists `flags` (none: no
    /// `dra` subcommand), any other `dra` call exits 0.
    fn fake_plugin(dir: &Path, name: &str, flags: Option<&[&str]>) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let help: String = flags
            .unwrap_or_default()
            .iter()
            .map(|f| format!("      {f} <VALUE>\n          what {f} does\n"))
            .collect();
        let script = match flags {
            None => {
                "#!/bin/sh\necho \"error: unrecognized subcommand '$1'\" >&2\nexit 2\n".to_string()
            }
            Some(_) => format!(
                "#!/bin/sh\n[ \"$1\" = dra ] || exit 2\nif [ \"$2\" = --help ]; then\nprintf 'Options:\\n{}  -h, --help\\n'\nfi\nexit 0\n",
                help.replace('\n', "\\n")
            ),
        };
        let path = dir.join(name);
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[test]
    fn the_dra_args_check_needs_the_subcommand_and_every_flag() {
        let tmp = TempDir::new("xtask-dra-flags").unwrap();
        let ws = workspace_root();

        let full = fake_plugin(&tmp.0, "full", Some(AGREED_DRA_FLAGS));
        let n = dra_daemonset_flags(&ws, &full).unwrap();
        assert!(n >= 5, "{n}");

        let short: Vec<&str> = AGREED_DRA_FLAGS
            .iter()
            .copied()
            .filter(|f| *f != "--link-health")
            .collect();
        let short = fake_plugin(&tmp.0, "short", Some(&short));
        let e = dra_daemonset_flags(&ws, &short).unwrap_err().to_string();
        assert!(e.contains("does not list: --link-health"), "{e}");

        let none = fake_plugin(&tmp.0, "none", None);
        let e = dra_daemonset_flags(&ws, &none).unwrap_err().to_string();
        assert!(e.contains("no dra subcommand"), "{e}");
    }
}
