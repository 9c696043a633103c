//! `--hostile`: a tenant that reaches the forwarder's socket tries to act
//! on what is not its own, while another tenant's KERNEL connection is
//! live. Every attempt must be refused with the documented gRPC code, and
//! nothing may change on the host: the links, addresses and routes of the
//! "host" namespace (PID 1's; run this inside `unshare --pid --net --mount
//! --fork --mount-proc` so that is the test's own), the forwarder's and the
//! victim's namespaces, the cgroup files and the VFs' drivers are compared
//! before and after.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use sriov_api::nsm::connection::monitor_connection_client::MonitorConnectionClient;
use sriov_api::nsm::connection::{Connection, MonitorScopeSelector, PathSegment};
use sriov_api::nsm::networkservice::NetworkServiceRequest;
use sriov_netlink::NetnsUrl;
use sriov_netlink::testing::PrivateNetns;
use sriov_pci::Sysfs;
use tonic::Code;

use crate::checks::Report;
use crate::forwarder::{Forwarder, Paths};
use crate::{client, inspect};

/// What the hostile checks need from the scenario.
pub(crate) struct Scene<'a> {
    pub(crate) paths: &'a Paths,
    pub(crate) forwarder: &'a Forwarder,
    pub(crate) sysfs: &'a Sysfs,
    /// Every VF of the configured PFs, whose drivers must not change.
    pub(crate) vfs: Vec<sriov_pci::PciAddress>,
    /// The victim's live KERNEL connection, as its Request returned it.
    pub(crate) victim: &'a Connection,
    pub(crate) victim_ns: &'a PrivateNetns,
    /// Tokens whose full value must never reach the log at INFO.
    pub(crate) secrets: Vec<String>,
    /// An allocated token of the attacker's own pod.
    pub(crate) token: String,
}

fn file_path(url: &NetnsUrl) -> Result<PathBuf, String> {
    match url {
        NetnsUrl::File(p) => Ok(p.clone()),
        other => Err(format!("unexpected namespace URL {other:?}")),
    }
}

/// `ip` output for one namespace (`None`: this process's), the part a
/// refused Request must leave as it was.
fn net_snapshot(netns: Option<&Path>) -> Result<String, String> {
    let mut out = String::new();
    for args in [
        &["-o", "link", "show"][..],
        &["-o", "address", "show"],
        &["route", "show", "table", "all"],
        &["-6", "route", "show", "table", "all"],
        &["neigh", "show"],
    ] {
        let mut cmd = match netns {
            Some(p) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net={}", p.display())).arg("ip");
                c
            }
            None => Command::new("ip"),
        };
        let o = cmd
            .args(args)
            .output()
            .map_err(|e| format!("ip {args:?}: {e}"))?;
        if !o.status.success() {
            return Err(format!(
                "ip {args:?}: {}",
                String::from_utf8_lossy(&o.stderr)
            ));
        }
        out.push_str(&String::from_utf8_lossy(&o.stdout));
    }
    Ok(out)
}

/// Every file under the cgroup root with its content.
fn cgroup_snapshot(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut files = BTreeMap::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => todo.push(path),
                Ok(_) => {
                    let content = std::fs::read_to_string(&path).unwrap_or_default();
                    files.insert(path, content);
                }
                Err(_) => {}
            }
        }
    }
    files
}

/// The state a refused Request must not change.
#[derive(Debug, PartialEq)]
struct Host {
    namespaces: Vec<String>,
    cgroups: BTreeMap<PathBuf, String>,
    drivers: Vec<Option<String>>,
}

fn host(s: &Scene<'_>) -> Result<Host, String> {
    let fwd_ns = s
        .forwarder
        .netns
        .as_ref()
        .map(|n| file_path(n.url()))
        .transpose()?;
    let victim = file_path(s.victim_ns.url())?;
    let namespaces = vec![
        net_snapshot(None)?,
        net_snapshot(fwd_ns.as_deref())?,
        net_snapshot(Some(&victim))?,
    ];
    let drivers = s
        .vfs
        .iter()
        .map(|vf| s.sysfs.driver(*vf).ok().flatten())
        .collect();
    Ok(Host {
        namespaces,
        cgroups: cgroup_snapshot(&s.paths.cgroup),
        drivers,
    })
}

fn diff(before: &Host, after: &Host) -> String {
    let mut what = Vec::new();
    for (i, (b, a)) in before.namespaces.iter().zip(&after.namespaces).enumerate() {
        if b != a {
            let ns = ["host (PID 1's)", "forwarder's", "victim's"][i.min(2)];
            what.push(format!("{ns} namespace:\n--- before\n{b}\n--- after\n{a}"));
        }
    }
    if before.cgroups != after.cgroups {
        what.push(format!(
            "cgroup files: {:?} -> {:?}",
            before.cgroups, after.cgroups
        ));
    }
    if before.drivers != after.drivers {
        what.push(format!(
            "VF drivers: {:?} -> {:?}",
            before.drivers, after.drivers
        ));
    }
    what.join("\n")
}

/// The refusal a check expects: its code and a part of its message.
fn refused<T>(
    got: Result<tonic::Response<T>, tonic::Status>,
    code: Code,
    text: &str,
) -> Result<String, String> {
    match got {
        Ok(_) => Err("accepted".into()),
        Err(e) if e.code() == code && e.message().contains(text) => {
            Ok(format!("{:?}: {}", e.code(), e.message()))
        }
        Err(e) => Err(format!(
            "{:?}: {} (wanted {code:?} with {text:?})",
            e.code(),
            e.message()
        )),
    }
}

fn kernel(token: &str, inode_url: String) -> Vec<(&'static str, String)> {
    vec![
        ("tokenID", token.to_string()),
        ("inodeURL", inode_url),
        ("name", "evil-1".to_string()),
    ]
}

/// The victim's connection as an attacker would present it: its own first
/// segment in place of the victim's.
/// The victim's connection as another client would send it: its own first
/// segment and connection id (a well-formed path, so only ownership can
/// refuse it), our segment and the rest as the victim's.
fn as_attacker(victim: &Connection) -> Connection {
    let mut c = victim.clone();
    if let Some(first) = c.path.as_mut().and_then(|p| p.path_segments.first_mut()) {
        first.id = "attacker".into();
    }
    c.id = "attacker".into();
    c
}

fn refresh(conn: Connection) -> NetworkServiceRequest {
    NetworkServiceRequest {
        mechanism_preferences: conn.mechanism.clone().into_iter().collect(),
        connection: Some(conn),
    }
}

pub(crate) async fn run(
    s: Scene<'_>,
    r: &mut Report,
    nsc: &mut crate::nsc::Nsc,
) -> Result<(), String> {
    let before = host(&s)?;
    let other_ns = PrivateNetns::new().map_err(|e| format!("attacker namespace: {e}"))?;
    let other_path = file_path(other_ns.url())?;

    // 1. Namespaces that are not the client's.
    let pid1 = std::fs::metadata("/proc/1/ns/net").map_err(|e| e.to_string())?;
    let targets = [
        (
            "hostile-host-netns-file",
            "file:///proc/1/ns/net".to_string(),
        ),
        (
            "hostile-host-netns-inode",
            format!("inode://{}/{}", pid1.dev(), pid1.ino()),
        ),
    ];
    let secure = crate::spire::get().is_some();
    for (name, url) in targets {
        let got = nsc
            .request(client::request(
                "evil-host",
                "KERNEL",
                &kernel(&s.token, url),
                true,
            ))
            .await;
        if secure && name == "hostile-host-netns-inode" {
            // An inode is only ever one this connection sent by fd: the
            // host's, never sent, is refused before it is looked for.
            r.check(
                "hostile-inode-not-sent-by-fd",
                refused(got, Code::PermissionDenied, "must be sent by fd"),
            );
        } else {
            r.check(name, refused(got, Code::PermissionDenied, "host"));
        }
    }
    if let Some(ns) = &s.forwarder.netns {
        let url = format!("file://{}", file_path(ns.url())?.display());
        let got = nsc
            .request(client::request(
                "evil-own",
                "KERNEL",
                &kernel(&s.token, url),
                true,
            ))
            .await;
        r.check(
            "hostile-forwarder-netns",
            refused(got, Code::PermissionDenied, "forwarder's own"),
        );
    }
    // 5. A symlink planted in place of a namespace file.
    let link = s.paths.state.with_file_name("evil-netns-link");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&other_path, &link).map_err(|e| e.to_string())?;
    let got = nsc
        .request(client::request(
            "evil-link",
            "KERNEL",
            &kernel(&s.token, format!("file://{}", link.display())),
            true,
        ))
        .await;
    r.check(
        "hostile-symlinked-netns",
        refused(got, Code::InvalidArgument, "symlink"),
    );

    // A refresh may not move the live connection elsewhere.
    let mut moved = s.victim.clone();
    if let Some(m) = moved.mechanism.as_mut() {
        m.parameters.insert(
            "inodeURL".into(),
            format!("file://{}", other_path.display()),
        );
    }
    let got = nsc.request(refresh(moved)).await;
    r.check(
        "hostile-refresh-changes-netns",
        refused(got, Code::PermissionDenied, "namespace"),
    );

    // 2. Another client's connection.
    let got = nsc.request(refresh(as_attacker(s.victim))).await;
    r.check(
        "hostile-foreign-refresh",
        refused(got, Code::PermissionDenied, "belongs to another client"),
    );
    let got = nsc.close(as_attacker(s.victim)).await;
    r.check(
        "hostile-foreign-close",
        refused(got, Code::PermissionDenied, "belongs to another client"),
    );
    let still = inspect::link(s.victim_ns.url(), "nsm-1").await?;
    r.check(
        "hostile-victim-untouched",
        match still {
            Some(l) if l.up => Ok(format!("victim still has {l}")),
            other => Err(format!("victim's interface is now {other:?}")),
        },
    );
    // Our segment's id is ours to choose.
    let mut chosen = client::request("evil-id", "NOOP", &[], false);
    if let Some(p) = chosen.connection.as_mut().and_then(|c| c.path.as_mut()) {
        p.path_segments.push(PathSegment {
            name: "sriov-forwarder".into(),
            id: "attacker-chosen".into(),
            ..Default::default()
        });
    }
    match nsc.request(chosen).await {
        Ok(c) => {
            let c = c.into_inner();
            let ours = c
                .path
                .as_ref()
                .and_then(|p| p.path_segments.get(1))
                .map(|s| s.id.clone())
                .unwrap_or_default();
            r.check(
                "hostile-chosen-segment-id",
                if ours != "attacker-chosen" && !ours.is_empty() {
                    Ok(format!("our segment id is {ours}, not the client's"))
                } else {
                    Err(format!("our segment id is {ours:?}"))
                },
            );
            nsc.close(c).await.map_err(|e| e.message().to_string())?;
        }
        Err(e) => {
            r.check("hostile-chosen-segment-id", Err(e.message().to_string()));
        }
    }

    // Monitor: scoped to connections the caller is on.
    let channel = sriov_nsm::dial_secure(
        &sriov_nsm::NsmUrl::parse(&format!("unix://{}", s.paths.listen_socket.display()))
            .map_err(|e| e.to_string())?,
        Duration::from_secs(2),
        &crate::spire::security(),
    )
    .await
    .map_err(|e| e.to_string())?
    .channel;
    let mut monitor = MonitorConnectionClient::new(channel);
    let got = monitor
        .monitor_connections(MonitorScopeSelector::default())
        .await;
    r.check(
        "hostile-monitor-everything",
        refused(got, Code::PermissionDenied, "names no path segment id"),
    );
    let first_of = |selector_id: &str| MonitorScopeSelector {
        path_segments: vec![PathSegment {
            id: selector_id.into(),
            ..Default::default()
        }],
        network_services: vec![],
    };
    let victim_client = s
        .victim
        .path
        .as_ref()
        .and_then(|p| p.path_segments.first())
        .map(|s| s.id.clone())
        .unwrap_or_default();
    let mut seen = Vec::new();
    for id in ["someone-else", victim_client.as_str()] {
        let initial = match monitor.monitor_connections(first_of(id)).await {
            Ok(stream) => tokio::time::timeout(Duration::from_secs(5), async {
                stream.into_inner().message().await
            })
            .await
            .map_err(|_| "no initial state".to_string())?
            .map_err(|e| e.message().to_string())?
            .map(|ev| ev.connections.len())
            .unwrap_or_default(),
            // Secure mode: the monitor policy (`service_connection`)
            // refuses ids the caller's SPIFFE ID owns none of.
            Err(e)
                if secure
                    && id == "someone-else"
                    && e.code() == Code::PermissionDenied
                    && e.message().contains("service_connection") =>
            {
                0
            }
            Err(e) => return Err(format!("monitor: {}", e.message())),
        };
        seen.push(initial);
    }
    r.check(
        "hostile-monitor-scoped",
        if seen == [0, 1] {
            Ok("an unknown id sees nothing; the victim's own id sees its one connection".into())
        } else {
            Err(format!(
                "connections seen (unknown id, victim's id): {seen:?}"
            ))
        },
    );

    // 3. cgroupDir naming an ancestor of every pod.
    for dir in ["kubepods", "kubepods/pod-e2e", "", "kubepods/pod-e2e/../.."] {
        let got = nsc
            .request(client::request(
                "evil-cgroup",
                "VFIO",
                &[("tokenID", s.token.clone()), ("cgroupDir", dir.to_string())],
                false,
            ))
            .await;
        let ok = match &got {
            Err(e) if matches!(e.code(), Code::PermissionDenied | Code::InvalidArgument) => {
                Ok(format!("{dir:?}: {:?}: {}", e.code(), e.message()))
            }
            Err(e) => Err(format!("{dir:?}: {:?}: {}", e.code(), e.message())),
            Ok(_) => Err(format!("{dir:?} accepted")),
        };
        r.check("hostile-cgroup-ancestor", ok);
    }

    // 4. Sizes.
    let mut big = client::request("evil-big", "NOOP", &[], false);
    if let Some(c) = big.connection.as_mut() {
        c.labels.insert("padding".into(), "x".repeat(1024 * 1024));
    }
    let got = nsc.request(big).await;
    r.check(
        "hostile-oversized-message",
        match got {
            Err(e) if e.code() == Code::OutOfRange || e.code() == Code::ResourceExhausted => {
                Ok(format!("{:?}: {}", e.code(), e.message()))
            }
            Err(e) => Err(format!("{:?}: {}", e.code(), e.message())),
            Ok(_) => Err("a 1 MiB Request was accepted".into()),
        },
    );
    let mut many = client::request("evil-many", "NOOP", &[], false);
    if let Some(c) = many.connection.as_mut() {
        c.labels = (0..65).map(|i| (i.to_string(), String::new())).collect();
    }
    let got = nsc.request(many).await;
    r.check(
        "hostile-too-many-labels",
        refused(
            got,
            Code::InvalidArgument,
            "connection.labels has 65 entries; the limit is 64",
        ),
    );

    // 7. A timestamp past what the clock can hold.
    let mut late = client::request("evil-expires", "NOOP", &[], false);
    if let Some(seg) = late
        .connection
        .as_mut()
        .and_then(|c| c.path.as_mut())
        .and_then(|p| p.path_segments.first_mut())
    {
        seg.expires = Some(sriov_api::prost_types::Timestamp {
            seconds: i64::MAX,
            nanos: i32::MAX,
        });
    }
    let got = nsc.request(late).await;
    if let Ok(c) = &got {
        let _ = nsc.close(c.get_ref().clone()).await;
    }
    let alive = nsc
        .request(client::request("after-expires", "NOOP", &[], false))
        .await;
    if let Ok(c) = &alive {
        let _ = nsc.close(c.get_ref().clone()).await;
    }
    r.check(
        "hostile-huge-expires",
        match (&got, &alive) {
            (Ok(_), Ok(_)) => Ok("served; the forwarder still serves".into()),
            (Err(e), Ok(_)) if e.code() == Code::InvalidArgument => {
                Ok(format!("refused: {}", e.message()))
            }
            (a, b) => Err(format!("request {a:?}, next request {b:?}")),
        },
    );

    let after = host(&s)?;
    r.check(
        "hostile-nothing-changed",
        if before == after {
            Ok("links, addresses, routes and neighbours in the host, forwarder and victim namespaces, cgroup files and VF drivers as before".into())
        } else {
            Err(diff(&before, &after))
        },
    );

    // 2. Who may reach us, and what lies on disk.
    let mode = |p: &Path| match std::fs::symlink_metadata(p) {
        Ok(m) => format!("{:04o}", m.permissions().mode() & 0o777),
        Err(e) => format!("{}: {e}", p.display()),
    };
    let state_file = s.paths.state.join("sriov-pool.json");
    r.check(
        "hostile-file-modes",
        match [
            mode(&s.paths.listen_socket),
            mode(&s.paths.state),
            mode(&state_file),
        ] {
            [a, b, c] if a == "0600" && b == "0700" && c == "0600" => {
                Ok("socket 0600, state directory 0700, state file 0600".into())
            }
            other => Err(format!("socket, state directory, state file: {other:?}")),
        },
    );

    // 8. Secrets in the log.
    let log = std::fs::read_to_string(s.paths.state.with_file_name("forwarder.log"))
        .map_err(|e| e.to_string())?;
    let leaked: Vec<&String> = s
        .secrets
        .iter()
        .filter(|t| log.contains(t.as_str()))
        .collect();
    r.check(
        "hostile-tokens-not-logged",
        if leaked.is_empty() {
            Ok(format!(
                "none of {} tokens appears in full",
                s.secrets.len()
            ))
        } else {
            Err(format!("{} tokens logged in full", leaked.len()))
        },
    );
    Ok(())
}

/// 6. A corrupt state file: the forwarder refuses to start, naming it.
pub(crate) async fn corrupt_state(
    o: &crate::Options,
    p: &Paths,
    r: &mut Report,
) -> Result<(), String> {
    let state_file = p.state.join("sriov-pool.json");
    std::fs::write(&state_file, b"{\"version\": 1, \"tokens\": [").map_err(|e| e.to_string())?;
    let mut fwd = crate::forwarder::start(o, p, None)?;
    let mut status = None;
    for _ in 0..200 {
        if let Some(s) = fwd.child.try_wait().map_err(|e| e.to_string())? {
            status = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = std::fs::read_to_string(p.state.with_file_name("forwarder.log")).unwrap_or_default();
    let still = std::fs::read(&state_file).unwrap_or_default();
    r.check(
        "hostile-corrupt-state-refused",
        match status {
            Some(s) if !s.success() && log.contains(&state_file.display().to_string()) => {
                if still.starts_with(b"{\"version\": 1, \"tokens\": [") {
                    Ok(format!("exit {s}; the file is kept for the operator"))
                } else {
                    Err("the corrupt file was replaced".into())
                }
            }
            Some(s) => Err(format!("exit {s}; log: {log}")),
            None => Err("the forwarder started on a corrupt state file".into()),
        },
    );
    Ok(())
}
