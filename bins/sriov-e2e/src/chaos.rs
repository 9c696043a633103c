//! `--chaos N`: the crash campaign. The forwarder (built with the
//! `failpoints` feature) is killed with SIGKILL at every named point
//! between two host changes (`sriov_failpoint::POINTS`) and at random
//! instants of a Request, `N` rounds each; it is restarted on the same state,
//! the client retries or gives up as a real one would, and the host is
//! audited after every fault: VF netdevs home under their names, down and
//! without addresses, nothing left in the client's namespace, every VF on
//! its kernel driver with no `driver_override`, no device rule left allowed
//! in the container's cgroup, and the pool's state agreeing (no use left,
//! the pods' tokens still allocated, no VF in two uses). Then racing
//! Requests with random cancellations on every token at once. A table
//! closes the run; any leak or double allocation fails it.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sriov_api::nsm::connection::Connection;
use sriov_netlink::testing::PrivateNetns;
use sriov_pci::{PciAddress, Sysfs};

use sriov_deviceplugin::fake::FakeKubelet;
use sriov_nsm::fake::FakeNsmgr;

use crate::checks::Report;
use crate::forwarder::{self, Forwarder, Paths};
use crate::nsc;
use crate::{Options, client, inspect};

/// What the campaign works with, from the main flow.
pub(crate) struct Scene<'a> {
    pub(crate) o: &'a Options,
    pub(crate) paths: &'a Paths,
    pub(crate) listen: &'a Path,
    /// Tokens kubelet allocated to the e2e pod: the first for KERNEL, the
    /// second for VFIO; all of them race at the end.
    pub(crate) tokens: Vec<String>,
    pub(crate) client_ns: &'a PrivateNetns,
    pub(crate) vf_names: &'a [(PciAddress, String)],
    pub(crate) sysfs: &'a Sysfs,
    /// The client container's cgroup.
    pub(crate) ctr: &'a Path,
    /// Kubelet, to restart.
    pub(crate) kubelet: &'a FakeKubelet,
}

/// One row of the closing table.
#[derive(Debug, Default, Clone)]
struct Row {
    injected: usize,
    survived: usize,
    leaked: usize,
    double: usize,
}

/// The container's devices cgroup files, keeping every rule written as the
/// kernel does (a plain file keeps only the last write): both are FIFOs,
/// read by a thread each. Two pipes keep no order between them, and a busy
/// machine may run one reader late, so rules are counted, not replayed: a
/// rule allowed more often than denied is still allowed. At each quiescent
/// audit the counts are settled ([`DevicesCgroup::settle`]): a deny of a
/// rule that was never allowed (undoing a grant planned but not yet made)
/// takes nothing away in the kernel, so it must not hide a later allow.
#[derive(Clone, Default)]
struct DevicesCgroup {
    /// Per rule: times allowed, times denied.
    counts: Arc<Mutex<BTreeMap<String, (u64, u64)>>>,
}

impl DevicesCgroup {
    fn attach(ctr: &Path) -> Result<Self, String> {
        let cg = Self::default();
        for (file, allow) in [("devices.allow", true), ("devices.deny", false)] {
            let path = ctr.join(file);
            let _ = std::fs::remove_file(&path);
            nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600))
                .map_err(|e| format!("mkfifo {}: {e}", path.display()))?;
            let cg = cg.clone();
            std::thread::spawn(move || cg.serve(&path, allow));
        }
        Ok(cg)
    }

    fn serve(&self, path: &PathBuf, allow: bool) {
        // Opened read-write, the FIFO always has a reader and a writer: a
        // rule writer neither blocks in open nor meets a reader that has
        // just gone (EPIPE), and reads block instead of seeing EOF. A write
        // of one rule is atomic (far below PIPE_BUF); several may arrive in
        // one read.
        let Ok(mut f) = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
        else {
            return;
        };
        let mut buf = [0u8; 4096];
        while let Ok(n) = std::io::Read::read(&mut f, &mut buf) {
            let text = String::from_utf8_lossy(buf.get(..n).unwrap_or_default());
            for rule in split_rules(&text) {
                if let Ok(mut c) = self.counts.lock() {
                    let (a, d) = c.entry(rule).or_default();
                    if allow {
                        *a += 1;
                    } else {
                        *d += 1;
                    }
                }
            }
        }
    }

    fn allowed(&self) -> BTreeSet<String> {
        self.counts
            .lock()
            .map(|c| {
                c.iter()
                    .filter(|(_, (a, d))| a > d)
                    .map(|(r, _)| r.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Forgets denies beyond the allows, once nothing is in flight.
    fn settle(&self) {
        if let Ok(mut c) = self.counts.lock() {
            for (a, d) in c.values_mut() {
                *d = (*d).min(*a);
            }
        }
    }
}

/// The rules in what writers wrote: each `write` is one rule and carries no
/// newline, so two writes read in one go run together (`c 10:196 rwc 9:1 rw`);
/// a rule's type letter (`a`, `b`, `c`) right after an access letter starts
/// the next one.
fn split_rules(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut prev = ' ';
    for ch in text.chars() {
        if ch == '\n' || ("rwm".contains(prev) && "abc".contains(ch)) {
            if !cur.trim().is_empty() {
                out.push(cur.trim().to_string());
            }
            cur.clear();
        }
        if ch != '\n' {
            cur.push(ch);
        }
        prev = ch;
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_string());
    }
    out
}

/// A fault: which point to arm (or a random instant) and what reaches it.
#[derive(Debug, Clone)]
struct Fault {
    name: String,
    arm: Option<String>,
    reached_by: &'static str,
}

/// Every fault of a round; the VF-settings point only where VFs have
/// settings (`--vf-config`, real VFs).
fn faults(vf_config: bool) -> Vec<Fault> {
    let mut out: Vec<Fault> = sriov_failpoint::POINTS
        .iter()
        .filter(|p| vf_config || p.reached_by != "vf-config")
        .map(|p| Fault {
            name: p.name.to_string(),
            arm: Some(p.name.to_string()),
            reached_by: p.reached_by,
        })
        .collect();
    for kind in ["kernel", "vfio"] {
        out.push(Fault {
            name: format!("random-instant-{kind}"),
            arm: None,
            reached_by: kind,
        });
    }
    out
}

/// A small xorshift, seeded from the clock: random instants need no crate.
struct Rng(u64);

impl Rng {
    fn new() -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9e37_79b9);
        Self(seed | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// Token and lease lifetime of the campaign's forwarders.
const LIFETIME: &str = "3s";

/// How long the host may take to come clean after a fault: an orphaned
/// connection's lease expiring, plus a sweep.
const SETTLE: Duration = Duration::from_secs(15);

/// Restarts the forwarder (killing whatever is left of it) with `env`.
fn restart(s: &Scene<'_>, fwd: &mut Forwarder, env: &[(&str, &str)]) -> Result<(), String> {
    let _ = fwd.child.kill();
    let _ = fwd.child.wait();
    let netns = fwd.netns.take();
    // Short, so a connection whose answer was lost with the process (a
    // random-instant kill) expires and is undone within the audit's wait.
    let mut vars = vec![("NSM_MAX_TOKEN_LIFETIME", LIFETIME)];
    vars.extend_from_slice(env);
    *fwd = forwarder::start_with(s.o, s.paths, netns, &vars)?;
    Ok(())
}

/// Waits for the forwarder to die; `Some(true)` when SIGKILL ended it.
async fn died(fwd: &mut Forwarder, secs: u64) -> Option<bool> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Ok(Some(status)) = fwd.child.try_wait() {
            return Some(status.signal() == Some(9));
        }
        if tokio::time::Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A Request's mechanism parameters.
type Params = Vec<(&'static str, String)>;

fn kernel_request(s: &Scene<'_>, id: &str, token: &str) -> Result<Params, String> {
    Ok(vec![
        ("tokenID", token.to_string()),
        ("inodeURL", crate::checks::file_url(s.client_ns)?),
        // Unique per id and at most 15 bytes: `chaos-12` -> `c12`, `race-1-3` -> `r1-3`.
        (
            "name",
            format!("{}{}", &id[..1], id.split_once('-').map_or("", |(_, n)| n)),
        ),
    ])
}

fn vfio_request(s: &Scene<'_>, token: &str) -> Params {
    vec![
        ("tokenID", token.to_string()),
        ("cgroupDir", s.paths.pod_glob(s.ctr)),
    ]
}

/// What a Request for this fault looks like: (mechanism, parameters, id).
fn request_for(
    s: &Scene<'_>,
    reached_by: &str,
    round: usize,
) -> Result<(&'static str, Params, String), String> {
    let id = format!("chaos-{round}");
    match reached_by {
        "vfio" | "vf-config" => Ok((
            "VFIO",
            vfio_request(s, s.tokens.get(1).ok_or("a second token for VFIO")?),
            id,
        )),
        _ => {
            let token = s.tokens.first().ok_or("a token")?;
            Ok(("KERNEL", kernel_request(s, &id, token)?, id))
        }
    }
}

/// One fault: arm, reach, restart, let the client react, audit.
async fn one(
    s: &Scene<'_>,
    fwd: &mut Forwarder,
    fault: &Fault,
    round: usize,
    rng: &mut Rng,
) -> Result<bool, String> {
    let (mechanism, params, id) = request_for(s, fault.reached_by, round)?;
    let kernel = mechanism == "KERNEL";
    let ethernet = (fault.reached_by == "vf-config")
        .then_some((crate::checks::VF_MAC, crate::checks::VF_VLAN));
    let ask = || client::request_with(&id, mechanism, &params, kernel, ethernet);
    let arm = fault.arm.clone().unwrap_or_default();
    let armed = [(sriov_failpoint::ENV, arm.as_str())];
    let mut established: Option<Connection> = None;
    if matches!(fault.reached_by, "close" | "reclaim") {
        // Established first; the Close is what dies: in the process that
        // made the connection ("close"), or in a restarted one ("reclaim").
        let env: &[(&str, &str)] = if fault.reached_by == "close" {
            &armed
        } else {
            &[]
        };
        restart(s, fwd, env)?;
        let mut nsc = nsc::reconnect(s.listen).await?;
        let conn = nsc
            .request(ask())
            .await
            .map_err(|e| format!("{id}: {}: {}", e.code(), e.message()))?
            .into_inner();
        established = Some(conn);
    }
    if fault.reached_by != "close" {
        restart(s, fwd, &armed)?;
    }
    if fault.reached_by == "start" {
        // The armed start is the fault; then a client that just goes on.
        let injected = died(fwd, 20).await == Some(true);
        restart(s, fwd, &[])?;
        let mut nsc = nsc::reconnect(s.listen).await?;
        let conn = nsc
            .request(ask())
            .await
            .map_err(|e| format!("{id} after the fault: {}: {}", e.code(), e.message()))?
            .into_inner();
        nsc.close(conn)
            .await
            .map_err(|e| format!("{id} Close after the fault: {}: {}", e.code(), e.message()))?;
        return Ok(injected);
    }
    let mut nsc = nsc::reconnect(s.listen).await?;
    let injected = match (&established, &fault.arm) {
        (Some(conn), _) => {
            let _ = nsc.close(conn.clone()).await;
            died(fwd, 20).await == Some(true)
        }
        (None, Some(_)) => {
            let _ = nsc.request(ask()).await;
            died(fwd, 20).await == Some(true)
        }
        (None, None) => {
            // A random instant: kill while the Request is on its way.
            let req = ask();
            let call = tokio::spawn(async move { nsc.request(req).await });
            tokio::time::sleep(Duration::from_millis(rng.below(60))).await;
            let _ = fwd.child.kill();
            let _ = call.await;
            died(fwd, 20).await == Some(true)
        }
    };
    // The restarted forwarder, and a client that either retries (then
    // closes) or gives up and closes what it asked for.
    restart(s, fwd, &[])?;
    let mut nsc = nsc::reconnect(s.listen).await?;
    let retry = established.is_none() && rng.below(2) == 0;
    let asked = || ask().connection.unwrap_or_default();
    let to_close = match (&established, retry) {
        (Some(conn), _) => conn.clone(),
        (None, true) => match nsc.request(ask()).await {
            Ok(c) => c.into_inner(),
            // Killed at a random instant after the Request was done but
            // before its answer left: the connection stands under our
            // segment id, which this client never learnt, and holds the
            // token until it expires. The client gives up.
            Err(e) if fault.arm.is_none() && e.code() == tonic::Code::FailedPrecondition => asked(),
            Err(e) => {
                return Err(format!(
                    "{id} retried after the fault: {}: {}",
                    e.code(),
                    e.message()
                ));
            }
        },
        (None, false) => asked(),
    };
    nsc.close(to_close)
        .await
        .map_err(|e| format!("{id} Close after the fault: {}: {}", e.code(), e.message()))?;
    Ok(injected)
}

/// What the host should look like after every fault, taken before the first.
struct Truth {
    cg: DevicesCgroup,
    /// Tokens the pod holds.
    allocated: BTreeSet<String>,
    /// Each VF netdev at home, as it was (a real node's may be up).
    homes: BTreeMap<String, String>,
    /// Each VF's kernel driver, as it was.
    drivers: BTreeMap<PciAddress, String>,
    /// With `--vf-config`: the PF's netdev and each VF's MAC and VLAN.
    vf_settings: Option<(String, BTreeMap<u32, String>)>,
}

/// The MAC and VLAN of every VF of `pf`, as the PF reports them.
async fn vf_settings(pf: &str) -> Result<BTreeMap<u32, String>, String> {
    Ok(crate::checks::pf_vfs(pf)
        .await?
        .into_iter()
        .map(|v| (v.vf, format!("mac {} vlan {}", v.mac, v.vlan.id)))
        .collect())
}

/// [`audit`] until the host is clean or [`SETTLE`] has passed.
async fn settled(
    s: &Scene<'_>,
    fwd: &Forwarder,
    truth: &Truth,
) -> Result<(Vec<String>, usize), String> {
    let deadline = tokio::time::Instant::now() + SETTLE;
    loop {
        let found = audit(s, fwd, truth).await?;
        if found.0.is_empty() && found.1 == 0 {
            truth.cg.settle();
            return Ok(found);
        }
        if tokio::time::Instant::now() > deadline {
            return Ok(found);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What is wrong on the host, one line each; empty when clean.
async fn audit(
    s: &Scene<'_>,
    fwd: &Forwarder,
    truth: &Truth,
) -> Result<(Vec<String>, usize), String> {
    let (cg, allocated) = (&truth.cg, &truth.allocated);
    let mut leaks = Vec::new();
    let mut double = 0;
    let nl = fwd.netlink()?;
    for (vf, home) in s.vf_names {
        match inspect::link_with(&nl, home).await? {
            // Down and bare, as a Close leaves it, or as it was before.
            Some(l)
                if (!l.up && l.addresses.is_empty())
                    || truth.homes.get(home) == Some(&l.to_string()) => {}
            Some(l) => leaks.push(format!("{home} ({vf}) at home but {l}")),
            None => leaks.push(format!("{home} ({vf}) is not home")),
        }
        let want = truth.drivers.get(vf).cloned();
        let driver = s.sysfs.driver(*vf).map_err(|e| e.to_string())?;
        if driver != want {
            leaks.push(format!("{vf} on {driver:?}, expected {want:?}"));
        }
        let over = std::fs::read_to_string(
            s.sysfs
                .devices_dir()
                .join(vf.to_string())
                .join("driver_override"),
        )
        .unwrap_or_default();
        if !over.trim().is_empty() && over.trim() != "(null)" {
            leaks.push(format!("{vf} driver_override left as {:?}", over.trim()));
        }
    }
    let netns = sriov_netlink::Netns::open(s.client_ns.url()).map_err(|e| e.to_string())?;
    let cl = sriov_netlink::RtNetlink::in_netns(netns).map_err(|e| e.to_string())?;
    for l in cl.links().await.map_err(|e| e.to_string())? {
        if l.name != "lo" {
            leaks.push(format!("{} left in the client's namespace", l.name));
        }
    }
    if let Some((pf, before)) = &truth.vf_settings {
        let now = vf_settings(pf).await?;
        for (vf, was) in before {
            if now.get(vf) != Some(was) {
                leaks.push(format!("{pf} vf {vf}: {:?}, was {was}", now.get(vf)));
            }
        }
    }
    let rules = cg.allowed();
    if !rules.is_empty() {
        leaks.push(format!("device rules still allowed: {rules:?}"));
    }
    let tokens =
        sriov_token_pool::FileStore::read_tokens(&s.paths.state).map_err(|e| e.to_string())?;
    let mut vfs = BTreeSet::new();
    for t in &tokens {
        match &t.state {
            sriov_token_pool::TokenState::InUse(u) => {
                if !vfs.insert(u.vf) {
                    double += 1;
                }
                leaks.push(format!(
                    "token {} still in use by {} on {}",
                    &t.id[..12.min(t.id.len())],
                    u.connection,
                    u.vf
                ));
            }
            sriov_token_pool::TokenState::Allocated if !allocated.contains(&t.id) => {
                leaks.push(format!("token {} allocated, no pod holds it", t.id));
            }
            sriov_token_pool::TokenState::Free if allocated.contains(&t.id) => {
                double += 1;
                leaks.push(format!(
                    "token {} a pod holds is free again: it could go to a second pod",
                    t.id
                ));
            }
            _ => {}
        }
    }
    Ok((leaks, double))
}

/// The host as it should be after every fault, read before the first.
async fn truth(s: &Scene<'_>, fwd: &Forwarder) -> Result<Truth, String> {
    let cg = DevicesCgroup::attach(s.ctr)?;
    let allocated: BTreeSet<String> = sriov_token_pool::FileStore::read_tokens(&s.paths.state)
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter(|t| t.reserves())
        .map(|t| t.id)
        .collect();
    let nl = fwd.netlink()?;
    let (mut homes, mut drivers) = (BTreeMap::new(), BTreeMap::new());
    for (vf, home) in s.vf_names {
        if let Some(l) = inspect::link_with(&nl, home).await? {
            homes.insert(home.clone(), l.to_string());
        }
        if let Some(d) = s.sysfs.driver(*vf).map_err(|e| e.to_string())? {
            drivers.insert(*vf, d);
        }
    }
    let vf_settings = match s.o.vf_config {
        true => {
            let cfg = sriov_config::SriovConfig::load(&s.o.config).map_err(|e| e.to_string())?;
            let pf = cfg
                .config
                .physical_functions
                .keys()
                .next()
                .copied()
                .ok_or("no PF configured")?;
            let netdev = s
                .sysfs
                .netdevs(pf)
                .map_err(|e| e.to_string())?
                .into_iter()
                .next()
                .ok_or_else(|| format!("PF {pf} has no netdev"))?;
            let before = vf_settings(&netdev).await?;
            Some((netdev, before))
        }
        false => None,
    };
    Ok(Truth {
        cg,
        allocated,
        homes,
        drivers,
        vf_settings,
    })
}

pub(crate) async fn run(
    s: Scene<'_>,
    r: &mut Report,
    fwd: &mut Forwarder,
    nsmgr: &mut FakeNsmgr,
    rounds: usize,
) -> Result<(), String> {
    let truth = truth(&s, fwd).await?;
    let mut rng = Rng::new();
    let mut table: BTreeMap<String, Row> = BTreeMap::new();
    let mut round = 0;
    for _ in 0..rounds {
        for fault in faults(s.o.vf_config) {
            round += 1;
            let row = table.entry(fault.name.clone()).or_default();
            let outcome = one(&s, fwd, &fault, round, &mut rng).await;
            let (leaks, double) = settled(&s, fwd, &truth).await?;
            match outcome {
                Ok(injected) => {
                    if injected {
                        row.injected += 1;
                    } else if fault.arm.is_some() {
                        r.check(
                            &format!("chaos-{}", fault.name),
                            Err(format!("round {round}: the armed point was never reached")),
                        );
                    }
                    if leaks.is_empty() {
                        row.survived += 1;
                    }
                }
                Err(e) => {
                    r.check(
                        &format!("chaos-{}", fault.name),
                        Err(format!("round {round}: {e}")),
                    );
                }
            }
            if !leaks.is_empty() {
                row.leaked += 1;
                r.check(
                    &format!("chaos-{}", fault.name),
                    Err(format!("round {round}: {}", leaks.join("; "))),
                );
            }
            row.double += double;
            if !leaks.is_empty() {
                // Later rounds would only report the same leftovers.
                print_table(&table);
                return Ok(());
            }
        }
    }
    restart(&s, fwd, &[])?;
    if let Err(e) = environment(&s, &truth, fwd, nsmgr, rounds, &mut table).await {
        r.check("chaos-environment", Err(e));
    }
    racing(&s, r, &truth, fwd, 12 * rounds, &mut rng, &mut table).await?;
    print_table(&table);
    let total: Row = table.values().fold(Row::default(), |a, b| Row {
        injected: a.injected + b.injected,
        survived: a.survived + b.survived,
        leaked: a.leaked + b.leaked,
        double: a.double + b.double,
    });
    r.check(
        "chaos",
        if total.leaked == 0 && total.double == 0 && total.injected > 0 {
            Ok(format!(
                "{} faults injected across {} kinds of fault, 0 leaked, 0 double-allocated",
                total.injected,
                table.len()
            ))
        } else {
            Err(format!(
                "{} injected, {} leaked, {} double-allocated",
                total.injected, total.leaked, total.double
            ))
        },
    );
    Ok(())
}

/// Records one environment fault in the table, with the audit after it.
async fn tally(
    s: &Scene<'_>,
    fwd: &Forwarder,
    truth: &Truth,
    table: &mut BTreeMap<String, Row>,
    name: &str,
    outcome: Result<(), String>,
) -> Result<(), String> {
    let (leaks, double) = settled(s, fwd, truth).await?;
    let row = table.entry(name.into()).or_default();
    row.injected += 1;
    row.double += double;
    match (outcome, leaks.is_empty()) {
        (Ok(()), true) => {
            row.survived += 1;
            Ok(())
        }
        (outcome, _) => {
            row.leaked += usize::from(!leaks.is_empty());
            Err(format!(
                "{name}: {}{}",
                outcome.err().unwrap_or_default(),
                leaks.join("; ")
            ))
        }
    }
}

/// A KERNEL Request, then its Close: the client's view that service works.
async fn serves(s: &Scene<'_>, id: &str) -> Result<(), String> {
    let mut nsc = nsc::reconnect(s.listen).await?;
    let token = s.tokens.first().ok_or("a token")?;
    let req = client::request(id, "KERNEL", &kernel_request(s, id, token)?, true);
    let conn = nsc
        .request(req)
        .await
        .map_err(|e| format!("{id}: {}: {}", e.code(), e.message()))?
        .into_inner();
    nsc.close(conn)
        .await
        .map_err(|e| format!("{id} Close: {}: {}", e.code(), e.message()))?;
    Ok(())
}

/// Faults of the forwarder's surroundings, each followed by the audit:
/// the next hop failing and hanging mid-Request (the Request fails within
/// the caller's deadline and leaves nothing), kubelet restarting 20 times
/// (the plugin registers again each time), the registry and next hop gone
/// for a while and back (the forwarder registers again and serves), and,
/// on real VFs, a client namespace destroyed under a live connection.
async fn environment(
    s: &Scene<'_>,
    truth: &Truth,
    fwd: &Forwarder,
    nsmgr: &mut FakeNsmgr,
    rounds: usize,
    table: &mut BTreeMap<String, Row>,
) -> Result<(), String> {
    for n in 0..rounds {
        // The next hop refuses.
        nsmgr.fail_next_requests(1, tonic::Code::Unavailable);
        let failed = match serves(s, &format!("envfail-{n}")).await {
            Err(e) if e.contains("told to fail this request") => Ok(()),
            other => Err(format!("expected the next hop's refusal, got {other:?}; ")),
        };
        tally(s, fwd, truth, table, "next-hop-fails", failed).await?;

        // The next hop hangs: the caller's 2 s deadline bounds the Request.
        nsmgr.hang_next_requests(1);
        let id = format!("envhang-{n}");
        let token = s.tokens.first().ok_or("a token")?;
        let mut req = tonic::Request::new(client::request(
            &id,
            "KERNEL",
            &kernel_request(s, &id, token)?,
            true,
        ));
        req.set_timeout(Duration::from_secs(2));
        let mut nsc = nsc::reconnect(s.listen).await?;
        let hung = match nsc.request(req).await {
            // tonic's client reports its own timeout as CANCELLED.
            Err(e)
                if matches!(
                    e.code(),
                    tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
                ) =>
            {
                Ok(())
            }
            other => Err(format!("expected the deadline to end it, got {other:?}; ")),
        };
        // The forwarder gives up at the same deadline and undoes the Request.
        tally(s, fwd, truth, table, "next-hop-hangs", hung).await?;

        if !s.o.veth {
            // A real VF netdev returns to the initial namespace when its
            // client's dies; the Close then restores it (a veth stand-in
            // would die with the namespace instead).
            let id = format!("envgone-{n}");
            let gone = async {
                let doomed = PrivateNetns::new().map_err(|e| e.to_string())?;
                let params = vec![
                    ("tokenID", token.clone()),
                    ("inodeURL", crate::checks::file_url(&doomed)?),
                    ("name", format!("g{n}")),
                ];
                let conn = nsc
                    .request(client::request(&id, "KERNEL", &params, true))
                    .await
                    .map_err(|e| format!("{id}: {}: {}", e.code(), e.message()))?
                    .into_inner();
                drop(doomed);
                nsc.close(conn)
                    .await
                    .map_err(|e| format!("{id} Close: {}: {}", e.code(), e.message()))?;
                Ok::<(), String>(())
            }
            .await;
            tally(s, fwd, truth, table, "client-netns-destroyed", gone).await?;
        }
    }

    // Kubelet restarts, 20 times: each time the plugin registers again.
    for n in 0..20 {
        let before = s.kubelet.registrations().len();
        let again = async {
            s.kubelet.restart().map_err(|e| e.to_string())?;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            while s.kubelet.registrations().len() <= before {
                if tokio::time::Instant::now() > deadline {
                    return Err(format!("restart {n}: the plugin did not register again; "));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(())
        }
        .await;
        tally(s, fwd, truth, table, "kubelet-restart", again).await?;
    }
    serves(s, "after-kubelet").await?;

    // The registry (and next hop) away, then back.
    let away = if rounds >= 10 { 30 } else { 5 };
    let registered = nsmgr.registers().len();
    nsmgr.stop().await;
    let during = match serves(s, "registry-away").await {
        Err(_) => Ok(()),
        Ok(()) => Err("a Request was served with no next hop; ".to_string()),
    };
    tokio::time::sleep(Duration::from_secs(away)).await;
    nsmgr.restart().await.map_err(|e| e.to_string())?;
    let back = async {
        during?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while nsmgr.registers().len() <= registered {
            if tokio::time::Instant::now() > deadline {
                return Err("the forwarder did not register again; ".to_string());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        serves(s, "registry-back").await
    }
    .await;
    tally(s, fwd, truth, table, "registry-down-and-back", back).await
}

/// `--race N`: only the race, N Requests spread over every token the pod
/// holds (on a tree with more VFs than the shipped fixture's four).
pub(crate) async fn race(
    s: Scene<'_>,
    r: &mut Report,
    fwd: &mut Forwarder,
    requests: usize,
) -> Result<(), String> {
    // Short leases, so a Request the forwarder served for a client that
    // had already cancelled expires and is undone within the audit's wait.
    restart(&s, fwd, &[])?;
    let truth = truth(&s, fwd).await?;
    let mut table = BTreeMap::new();
    let per_token = requests.div_ceil(s.tokens.len().max(1));
    racing(&s, r, &truth, fwd, per_token, &mut Rng::new(), &mut table).await?;
    print_table(&table);
    Ok(())
}

/// Requests for every token at once, each with several connection ids,
/// some cancelled by the client mid-way; then everything closed. No VF may
/// be held twice at any instant the state shows, and nothing may leak.
#[allow(clippy::too_many_arguments)]
async fn racing(
    s: &Scene<'_>,
    r: &mut Report,
    truth: &Truth,
    fwd: &Forwarder,
    per_token: usize,
    rng: &mut Rng,
    table: &mut BTreeMap<String, Row>,
) -> Result<(), String> {
    let nsc = nsc::reconnect(s.listen).await?;
    let mut calls = Vec::new();
    for (t, token) in s.tokens.iter().enumerate() {
        for k in 0..per_token {
            let id = format!("race-{t}-{k}");
            let params = kernel_request(s, &id, token)?;
            // No IP context: two winners share the client namespace, and the same
            // route twice would refuse the second.
            let req = client::request(&id, "KERNEL", &params, false);
            let cancel_after = (rng.below(3) == 0).then(|| rng.below(40));
            // A connection each: HTTP/2 servers close a connection on which
            // a client resets many streams quickly (rapid-reset protection),
            // which would end every racer at once.
            let listen = s.listen.to_path_buf();
            calls.push(tokio::spawn(async move {
                let Ok(mut nsc) = nsc::connect(&listen).await else {
                    return (id, None, false);
                };
                let call = nsc.request(req);
                let answer = match cancel_after {
                    Some(ms) => tokio::time::timeout(Duration::from_millis(ms), call)
                        .await
                        .ok(),
                    None => Some(call.await),
                };
                let cancelled = answer.is_none();
                (
                    id,
                    answer.and_then(Result::ok).map(tonic::Response::into_inner),
                    cancelled,
                )
            }));
        }
    }
    let (mut answered, mut cancelled) = (Vec::new(), 0);
    for c in calls {
        if let Ok((id, conn, gone)) = c.await {
            answered.push((id, conn));
            cancelled += usize::from(gone);
        }
    }
    // While they all stand: never two uses of one VF.
    let tokens =
        sriov_token_pool::FileStore::read_tokens(&s.paths.state).map_err(|e| e.to_string())?;
    let mut seen = BTreeSet::new();
    let mut double = 0;
    for t in &tokens {
        if let sriov_token_pool::TokenState::InUse(u) = &t.state
            && !seen.insert(u.vf)
        {
            double += 1;
        }
    }
    // Close every id, answered or not (a cancelled Request still finishes
    // in the forwarder and is closed like any other).
    let mut nsc = nsc;
    for (id, conn) in answered.iter() {
        let conn = match conn {
            Some(c) => c.clone(),
            None => {
                let token = s.tokens.first().cloned().unwrap_or_default();
                client::request(id, "KERNEL", &kernel_request(s, id, &token)?, true)
                    .connection
                    .unwrap_or_default()
            }
        };
        let _ = nsc.close(conn).await;
    }
    let (leaks, d2) = settled(s, fwd, truth).await?;
    let row = table
        .entry("racing-requests-with-cancels".into())
        .or_default();
    // The faults are the client's cancellations; the rest were refused
    // (the token was in use) or served.
    row.injected += cancelled;
    if leaks.is_empty() {
        row.survived += cancelled;
    } else {
        row.leaked += 1;
    }
    row.double += double + d2;
    r.check(
        "chaos-racing",
        if leaks.is_empty() && double + d2 == 0 {
            Ok(format!(
                "{} Requests on {} tokens, {cancelled} cancelled by the client, {} refused or \
                 unanswered, none held twice",
                answered.len(),
                s.tokens.len(),
                answered.iter().filter(|(_, c)| c.is_none()).count() - cancelled
            ))
        } else {
            Err(format!("{double} double; {}", leaks.join("; ")))
        },
    );
    Ok(())
}

fn print_table(table: &BTreeMap<String, Row>) {
    println!(
        "  | {:<34} {:>8} {:>8} {:>6} {:>16}",
        "fault", "injected", "survived", "leaked", "double-allocated"
    );
    for (name, row) in table {
        println!(
            "  | {:<34} {:>8} {:>8} {:>6} {:>16}",
            name, row.injected, row.survived, row.leaked, row.double
        );
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn rules_written_back_to_back_are_told_apart() {
        assert_eq!(
            super::split_rules("c 10:196 rwc 511:9 rw\na *:* rwm"),
            ["c 10:196 rw", "c 511:9 rw", "a *:* rwm"]
        );
    }
}
