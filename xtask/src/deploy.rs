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
//!    for each of [`K8S_VERSIONS`].
//! 4. checkov over the renderings; every finding must be accepted, with a
//!    justification, in `deploy/checks/checkov-accepted.txt`, and every
//!    accepted line must still match a finding.
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

/// Every kustomization we ship, relative to the workspace root.
const KUSTOMIZATIONS: &[&str] = &[
    "deploy/base",
    "deploy/base/forwarder-sriov",
    "deploy/base/sriov-device-plugin",
    "deploy/overlays/example",
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

    device_plugin_configs(ws)?;
    log.ran.push(format!(
        "sriov-device-plugin --dry-run on {} shipped configs and {} manifests' args",
        DEVICE_PLUGIN_CONFIGS.len(),
        DEVICE_PLUGIN_MANIFESTS.len()
    ));

    let tmp = TempDir::new("nsm-sriov-deploy")?;
    let Some(rendered) = render_all(ws, &tmp.0, log)? else {
        log.missing
            .push("kubectl, kustomize or the venv's python (for render.py)".into());
        return Ok(());
    };

    match tool("kubernetes-validate") {
        Some(kv) => {
            for version in K8S_VERSIONS {
                let out = run_tool(
                    Command::new(&kv)
                        .args(["--strict", "--quiet", "-k", version])
                        .args(&rendered),
                )?;
                if !out.status.success() {
                    bail!(
                        "kubernetes-validate against Kubernetes {version}:\n{}",
                        text(&out)
                    );
                }
            }
            log.ran.push(format!(
                "kubernetes-validate --strict ({})",
                K8S_VERSIONS.join(", ")
            ));
        }
        None => log.missing.push("kubernetes-validate".into()),
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

/// Each shipped device plugin config through the binary's own loader and
/// discovery (`--dry-run`) on the fixture node: a config the binary refuses
/// would crash-loop the DaemonSet.
fn device_plugin_configs(ws: &Path) -> Result<()> {
    let status = crate::suites::cargo(&["build", "--quiet", "-p", "sriov-device-plugin"])
        .current_dir(ws)
        .status()
        .context("building sriov-device-plugin")?;
    if !status.success() {
        bail!("building sriov-device-plugin failed");
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| ws.join("target"));
    let bin = target.join("debug/sriov-device-plugin");
    let node = ws.join(FIXTURE_NODE);
    for config in DEVICE_PLUGIN_CONFIGS {
        let out = run_tool(
            Command::new(&bin)
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
        let mut cmd = Command::new(&bin);
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
fn render_all(ws: &Path, dir: &Path, log: &mut Log) -> Result<Option<Vec<PathBuf>>> {
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
    for k in KUSTOMIZATIONS {
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
        let file = dir.join(format!("{}.yaml", k.replace('/', "_")));
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
        files.push(file);
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
}
