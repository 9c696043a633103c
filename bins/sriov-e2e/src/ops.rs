//! `--ops`: the forwarder's operator endpoints through the real binary
//! (issue #17). `/metrics`, `/readyz` and `/livez` on `NSM_METRICS_LISTEN`,
//! the debug endpoint on `NSM_PPROF_LISTEN_ON`, both on the loopback of the
//! forwarder's namespace; gRPC health on its NSM socket. Checked: readiness
//! before and after the registrations and while kubelet is away, the
//! Prometheus text and its counters per Request and Close, that the scrape
//! names only metrics the crates list (the dashboard is held to the same
//! lists by `crates/forwarder/tests/dashboard.rs`), a CPU profile, and
//! `/debug/state` against the pool and the standing connection.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use sriov_api::nsm::connection::Connection;
use sriov_deviceplugin::fake::FakeKubelet;
use sriov_netlink::NetnsUrl;
use sriov_netlink::testing::PrivateNetns;
use sriov_pci::PciAddress;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::checks::Report;

/// Every metric name the crates say the forwarder exports, with
/// `sriov_build_info`, which the binary records through `sriov-telemetry`.
fn listed() -> BTreeSet<&'static str> {
    [
        sriov_chain::metrics::PROMETHEUS_NAMES,
        sriov_token_pool::metrics::PROMETHEUS_NAMES,
        sriov_deviceplugin::metrics::PROMETHEUS_NAMES,
        sriov_selector_pools::metrics::PROMETHEUS_NAMES,
        sriov_forwarder::metrics::PROMETHEUS_NAMES,
        &[BUILD_INFO],
    ]
    .concat()
    .into_iter()
    .collect()
}

/// `Telemetry::record_build_info`'s gauge; no crate's list holds it, as no
/// dashboard panel needs it.
const BUILD_INFO: &str = "sriov_build_info";

/// Only turns a hang into a failure; measures nothing.
const PATIENCE: Duration = Duration::from_secs(30);

/// The service the DaemonSet's gRPC probes ask for.
const NETWORK_SERVICE: &str = "networkservice.NetworkService";

/// Where the endpoints listen, in the forwarder's namespace.
pub(crate) struct Ops {
    metrics: SocketAddr,
    debug: SocketAddr,
    netns: Option<std::path::PathBuf>,
}

impl Ops {
    /// Brings the loopback of the forwarder's namespace up (a new
    /// namespace's is down) and picks two free ports on it.
    pub(crate) fn new(netns: Option<&PrivateNetns>) -> Result<Self, String> {
        let path = match netns.map(|ns| ns.url().clone()) {
            Some(NetnsUrl::File(path)) => Some(path),
            Some(other) => return Err(format!("forwarder namespace {other:?} has no file")),
            None => None,
        };
        if let Some(path) = &path {
            crate::otlp::lo_up(path)?;
        }
        // The kernel's pick, let go for the forwarder: in a namespace of
        // our own nothing else takes it meanwhile.
        let free = || -> Result<SocketAddr, String> {
            let bind = || std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr());
            match &path {
                Some(path) => in_netns(path, bind)?,
                None => bind(),
            }
            .map_err(|e| format!("a free port: {e}"))
        };
        Ok(Self {
            metrics: free()?,
            debug: free()?,
            netns: path,
        })
    }

    /// The variables that turn the endpoints on.
    pub(crate) fn env(&self) -> Vec<(String, String)> {
        vec![
            ("NSM_METRICS_LISTEN".into(), self.metrics.to_string()),
            ("NSM_PPROF_ENABLED".into(), "true".into()),
            ("NSM_PPROF_LISTEN_ON".into(), self.debug.to_string()),
        ]
    }

    /// GET `path` on `addr` from inside the forwarder's namespace: status,
    /// body (the endpoints send a Content-Length; `Connection: close` ends
    /// the reply).
    async fn get(&self, addr: SocketAddr, path: &str) -> Result<(u16, Vec<u8>), String> {
        let std_stream = match &self.netns {
            Some(ns) => in_netns(ns, move || std::net::TcpStream::connect(addr))?,
            None => std::net::TcpStream::connect(addr),
        }
        .map_err(|e| format!("connecting to {addr}: {e}"))?;
        std_stream
            .set_nonblocking(true)
            .map_err(|e| e.to_string())?;
        let mut s = tokio::net::TcpStream::from_std(std_stream).map_err(|e| e.to_string())?;
        let ask = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        let mut raw = Vec::new();
        let talk = async {
            s.write_all(ask.as_bytes()).await?;
            s.read_to_end(&mut raw).await
        };
        tokio::time::timeout(Duration::from_secs(20), talk)
            .await
            .map_err(|_| format!("GET {path}: no answer"))?
            .map_err(|e| format!("GET {path}: {e}"))?;
        let end = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or(format!("GET {path}: no header end"))?;
        let head = String::from_utf8_lossy(&raw[..end]);
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or(format!("GET {path}: status line {head:?}"))?;
        Ok((status, raw[end + 4..].to_vec()))
    }

    async fn get_text(&self, addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
        let (status, body) = self.get(addr, path).await?;
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }

    /// Polls `/readyz` until `want` answers; the last answer either way.
    async fn readyz_until(&self, want: u16) -> Result<(u16, String), String> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let got = self.get_text(self.metrics, "/readyz").await;
            match got {
                Ok((s, body)) if s == want || tokio::time::Instant::now() > deadline => {
                    return Ok((s, body.trim().to_string()));
                }
                Err(e) if tokio::time::Instant::now() > deadline => return Err(e),
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// `readyz-before-registrations` (kubelet is away: its socket was
    /// removed before the forwarder started) with gRPC health, and `livez`.
    pub(crate) async fn before_registrations(
        &self,
        r: &mut Report,
        socket: &Path,
    ) -> Result<(), String> {
        // The endpoint answers "starting" from before the forwarder starts;
        // past that, the forwarder's own readiness answers.
        let deadline = tokio::time::Instant::now() + PATIENCE;
        let (status, body) = loop {
            match self.get_text(self.metrics, "/readyz").await {
                Ok((_, body)) if body.contains("starting") => {}
                Ok(got) => break got,
                Err(e) if tokio::time::Instant::now() > deadline => return Err(e),
                Err(_) => {}
            }
            if tokio::time::Instant::now() > deadline {
                return Err("/readyz said \"starting\" for 30 s".into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let health = health(socket).await?;
        r.check(
            "readyz-before-registrations",
            match (status, health) {
                (503, ServingStatus::NotServing) => {
                    Ok(format!("503 {}; gRPC NOT_SERVING", body.trim()))
                }
                (s, h) => Err(format!("{s} {}; gRPC {h:?}", body.trim())),
            },
        );
        let live = self.get_text(self.metrics, "/livez").await?;
        r.check(
            "livez",
            match live {
                (200, body) => Ok(format!("200 {}", body.trim())),
                (s, body) => Err(format!("{s} {body}")),
            },
        );
        Ok(())
    }

    /// `readyz-after-registrations`.
    pub(crate) async fn after_registrations(&self, r: &mut Report) -> Result<(), String> {
        let (status, body) = self.readyz_until(200).await?;
        r.check(
            "readyz-after-registrations",
            match status {
                200 => Ok(format!("200 {body}")),
                s => Err(format!("{s} {body}")),
            },
        );
        Ok(())
    }

    /// The Prometheus text now, parsed (`prometheus-text-parses` on the
    /// first scrape only, named by `check`).
    pub(crate) async fn scrape(
        &self,
        r: &mut Report,
        check: Option<&str>,
    ) -> Result<Scrape, String> {
        let (status, text) = self.get_text(self.metrics, "/metrics").await?;
        let parsed = match status {
            200 => Scrape::parse(&text),
            s => Err(format!("/metrics answered {s}: {text}")),
        };
        if let Some(name) = check {
            r.check(
                name,
                parsed
                    .as_ref()
                    .map(|s| format!("{} families, {} samples", s.types.len(), s.samples.len()))
                    .map_err(Clone::clone),
            );
        }
        parsed
    }

    /// While the KERNEL connection stands: the CPU profile, `/debug/state`
    /// against the pool's VFs of `resource`, the in-use VF and `conn`.
    pub(crate) async fn state(
        &self,
        r: &mut Report,
        resource: &str,
        pool: &BTreeSet<PciAddress>,
        conn: &Connection,
        token: &str,
    ) -> Result<(), String> {
        let (status, gz) = self
            .get(self.debug, "/debug/pprof/profile?seconds=1")
            .await?;
        r.check(
            "pprof-profile",
            match status {
                200 => decode_profile(&gz),
                s => Err(format!("{s}: {}", String::from_utf8_lossy(&gz))),
            },
        );

        let (status, text) = self.get_text(self.debug, "/debug/state").await?;
        if status != 200 {
            r.check("debug-state", Err(format!("{status}: {text}")));
            return Ok(());
        }
        let state: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("/debug/state: {e}: {text}"))?;
        let vf = conn
            .mechanism
            .as_ref()
            .and_then(|m| m.parameters.get("pciAddress"))
            .cloned()
            .unwrap_or_default();
        let vfs: Vec<&serde_json::Value> = state["pool"][resource]["pfs"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|pf| pf["vfs"].as_array().into_iter().flatten())
            .collect();
        let listed: BTreeSet<String> = vfs
            .iter()
            .filter_map(|v| v["vf"].as_str().map(str::to_string))
            .collect();
        let want: BTreeSet<String> = pool.iter().map(ToString::to_string).collect();
        let in_use: Vec<&&serde_json::Value> =
            vfs.iter().filter(|v| v["state"] == "in_use").collect();
        let connections: Vec<&str> = state["connections"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["id"].as_str())
            .collect();
        // The pool knows the connection by the forwarder's own segment id.
        let segments: Vec<&str> = conn
            .path
            .iter()
            .flat_map(|p| p.path_segments.iter().map(|s| s.id.as_str()))
            .collect();
        let id = in_use
            .first()
            .and_then(|v| v["connection"].as_str())
            .unwrap_or_default();
        r.check(
            "debug-state",
            if listed != want {
                Err(format!(
                    "{resource}: VFs {listed:?}, the fixture has {want:?}"
                ))
            } else if !matches!(&in_use[..], [v] if v["vf"] == vf.as_str())
                || !segments.contains(&id)
            {
                Err(format!(
                    "want {vf} in use by one of {segments:?}: {in_use:?}"
                ))
            } else if !connections.contains(&id) {
                Err(format!("connection {id} not among {connections:?}"))
            } else if token.len() > 8 && text.contains(token) {
                Err("the token is in the state".into())
            } else {
                Ok(format!(
                    "{} VFs of {resource}, {vf} in use by connection {id} ({}), token redacted",
                    listed.len(),
                    conn.id
                ))
            },
        );
        Ok(())
    }

    /// `metrics-*`: the Request and the Close counted once each, and every
    /// `sriov_*` family of the scrape in the lists.
    pub(crate) fn counted(
        &self,
        r: &mut Report,
        before: &Scrape,
        requested: &Scrape,
        closed: &Scrape,
    ) {
        let ok = [("mechanism", "KERNEL"), ("result", "ok")];
        let requests = "sriov_nsm_requests_total";
        let closes = "sriov_nsm_closes_total";
        let moved = |name: &str, a: &Scrape, b: &Scrape| b.value(name, &ok) - a.value(name, &ok);
        r.check(
            "metrics-request-counted",
            match moved(requests, before, requested) {
                1.0 => Ok(format!(
                    "{requests}{{mechanism=\"KERNEL\",result=\"ok\"}} +1"
                )),
                d => Err(format!("{requests} moved by {d}")),
            },
        );
        r.check(
            "metrics-close-counted",
            match (
                moved(closes, requested, closed),
                moved(requests, requested, closed),
            ) {
                (1.0, 0.0) => Ok(format!("{closes}{{mechanism=\"KERNEL\",result=\"ok\"}} +1")),
                (c, q) => Err(format!("{closes} moved by {c}, {requests} by {q}")),
            },
        );
        let listed = listed();
        let exported: BTreeSet<&str> = closed
            .types
            .keys()
            .map(String::as_str)
            .filter(|n| n.starts_with("sriov_"))
            .collect();
        let unlisted: Vec<&&str> = exported.iter().filter(|n| !listed.contains(**n)).collect();
        r.check(
            "metrics-all-listed",
            if unlisted.is_empty() {
                Ok(format!("{} sriov_* families", exported.len()))
            } else {
                Err(format!("exported but in no PROMETHEUS_NAMES: {unlisted:?}"))
            },
        );
    }

    /// `readyz-kubelet-gone` / `readyz-kubelet-back`: kubelet's socket
    /// removed, then served again; `/readyz` and gRPC health follow.
    pub(crate) async fn kubelet_flap(
        &self,
        r: &mut Report,
        kubelet: &FakeKubelet,
        socket: &Path,
    ) -> Result<(), String> {
        kubelet.stop_registration().await;
        let (status, body) = self.readyz_until(503).await?;
        let health = health_until(socket, ServingStatus::NotServing).await?;
        r.check(
            "readyz-kubelet-gone",
            match (status, health) {
                (503, ServingStatus::NotServing) => Ok(format!("503 {body}; gRPC NOT_SERVING")),
                (s, h) => Err(format!("{s} {body}; gRPC {h:?}")),
            },
        );
        kubelet.start_registration().map_err(|e| e.to_string())?;
        let (status, body) = self.readyz_until(200).await?;
        let health = health_until(socket, ServingStatus::Serving).await?;
        r.check(
            "readyz-kubelet-back",
            match (status, health) {
                (200, ServingStatus::Serving) => Ok(format!("200 {body}; gRPC SERVING")),
                (s, h) => Err(format!("{s} {body}; gRPC {h:?}")),
            },
        );
        Ok(())
    }
}

/// Runs `f` on a thread inside the namespace at `path`: a socket stays in
/// the namespace it was made in.
fn in_netns<T: Send + 'static>(
    path: &Path,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    std::thread::spawn(move || {
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
            .map(|()| f())
            .map_err(|e| format!("entering the forwarder's namespace: {e}"))
    })
    .join()
    .map_err(|_| "the namespace thread panicked".to_string())?
}

/// What gRPC health says for NetworkService over the forwarder's socket
/// (mTLS in secure mode, as the DaemonSet's probes dial it).
async fn health(socket: &Path) -> Result<ServingStatus, String> {
    let url = sriov_nsm::NsmUrl::parse(&format!("unix://{}", socket.display()))
        .map_err(|e| e.to_string())?;
    let dialed = sriov_nsm::dial_secure(&url, Duration::from_secs(2), &crate::spire::security())
        .await
        .map_err(|e| e.to_string())?;
    let status = HealthClient::new(dialed.channel)
        .check(HealthCheckRequest {
            service: NETWORK_SERVICE.into(),
        })
        .await
        .map_err(|e| format!("health check: {e}"))?
        .into_inner()
        .status;
    ServingStatus::try_from(status).map_err(|e| e.to_string())
}

async fn health_until(socket: &Path, want: ServingStatus) -> Result<ServingStatus, String> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let now = health(socket).await?;
        if now == want || tokio::time::Instant::now() > deadline {
            return Ok(now);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `pprof-profile`: gzip around a `perftools.profiles.Profile` whose
/// string table starts with "" and names its sample types.
fn decode_profile(gz: &[u8]) -> Result<String, String> {
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(gz)
        .read_to_end(&mut raw)
        .map_err(|e| format!("not gzip: {e}"))?;
    let p: sriov_ops::proto::Profile =
        prost::Message::decode(raw.as_slice()).map_err(|e| format!("not a Profile: {e}"))?;
    let string = |i: i64| usize::try_from(i).ok().and_then(|i| p.string_table.get(i));
    let types: Vec<&String> = p
        .sample_type
        .iter()
        .filter_map(|t| string(t.r#type))
        .collect();
    if p.string_table.first().map(String::as_str) != Some("") || types.is_empty() {
        return Err(format!(
            "malformed: string table {:?}",
            p.string_table.first()
        ));
    }
    Ok(format!(
        "{} bytes gzip, sample types {types:?}, {} samples over {} ms",
        gz.len(),
        p.sample.len(),
        p.duration_nanos / 1_000_000
    ))
}

/// One sample line.
#[derive(Debug, Clone)]
pub(crate) struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A scrape in Prometheus' text format 0.0.4, checked while parsed.
#[derive(Debug, Clone, Default)]
pub(crate) struct Scrape {
    /// Family name to its `# TYPE`.
    types: BTreeMap<String, String>,
    samples: Vec<Sample>,
}

impl Scrape {
    /// Every line is a `# HELP`/`# TYPE` (once per family, TYPE before its
    /// samples), another comment, blank, or `name{labels} value [ts]` whose
    /// name is its family's (or a histogram's or summary's series).
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let mut s = Self::default();
        let mut helped = BTreeSet::new();
        for (n, line) in text.lines().enumerate() {
            let bad = |why: &str| format!("line {}: {why}: {line:?}", n + 1);
            if line.trim().is_empty() {
                continue;
            }
            if let Some(comment) = line.strip_prefix('#') {
                let mut words = comment.trim_start().splitn(3, ' ');
                match (words.next(), words.next(), words.next()) {
                    (Some("HELP"), Some(name), _) => {
                        valid_name(name).map_err(|e| bad(&e))?;
                        if !helped.insert(name.to_string()) {
                            return Err(bad("a second HELP"));
                        }
                    }
                    (Some("TYPE"), Some(name), Some(kind)) => {
                        valid_name(name).map_err(|e| bad(&e))?;
                        if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind)
                        {
                            return Err(bad("unknown type"));
                        }
                        if s.samples
                            .iter()
                            .any(|x| family(&x.name, &s.types) == Some(name))
                        {
                            return Err(bad("TYPE after its samples"));
                        }
                        if s.types.insert(name.into(), kind.into()).is_some() {
                            return Err(bad("a second TYPE"));
                        }
                    }
                    (Some("TYPE"), _, _) => return Err(bad("TYPE without a type")),
                    _ => {}
                }
                continue;
            }
            let sample = sample(line).map_err(|e| bad(&e))?;
            if family(&sample.name, &s.types).is_none() {
                return Err(bad("no TYPE for this sample's family"));
            }
            s.samples.push(sample);
        }
        if let Some(orphan) = helped.iter().find(|h| !s.types.contains_key(*h)) {
            return Err(format!("HELP for {orphan} without a TYPE"));
        }
        Ok(s)
    }

    /// The sum of `name`'s samples carrying these labels (among others).
    pub(crate) fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|x| x.name == name)
            .filter(|x| {
                labels
                    .iter()
                    .all(|(k, v)| x.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|x| x.value)
            .sum()
    }
}

/// The declared family `sample` belongs to.
fn family<'a>(sample: &str, types: &'a BTreeMap<String, String>) -> Option<&'a str> {
    if let Some((f, _)) = types.get_key_value(sample) {
        return Some(f);
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some((f, kind)) = sample
            .strip_suffix(suffix)
            .and_then(|b| types.get_key_value(b))
            && (kind == "histogram" || (kind == "summary" && suffix != "_bucket"))
        {
            return Some(f);
        }
    }
    None
}

fn valid_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':');
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
        Ok(())
    } else {
        Err(format!("bad name {name:?}"))
    }
}

/// `name{k="v",...} value [timestamp]`, label values with `\\`, `\"`, `\n`.
fn sample(line: &str) -> Result<Sample, String> {
    let name_end = line.find(['{', ' ']).ok_or("no value")?;
    let name = &line[..name_end];
    valid_name(name)?;
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(after) = rest.strip_prefix('{') {
        let mut chars = after.char_indices().peekable();
        let mut end = None;
        loop {
            while chars.next_if(|(_, c)| *c == ',' || *c == ' ').is_some() {}
            match chars.peek() {
                Some((i, '}')) => {
                    end = Some(*i);
                    break;
                }
                None => break,
                _ => {}
            }
            let mut key = String::new();
            while let Some((_, c)) = chars.next_if(|(_, c)| *c != '=') {
                key.push(c);
            }
            valid_name(&key).map_err(|_| format!("bad label name {key:?}"))?;
            if chars.next().map(|(_, c)| c) != Some('=')
                || chars.next().map(|(_, c)| c) != Some('"')
            {
                return Err(format!("label {key} without =\"value\""));
            }
            let mut value = String::new();
            loop {
                match chars.next() {
                    Some((_, '"')) => break,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, c @ ('\\' | '"'))) => value.push(c),
                        other => return Err(format!("bad escape {other:?} in label {key}")),
                    },
                    Some((_, c)) => value.push(c),
                    None => return Err(format!("label {key} unterminated")),
                }
            }
            if labels.insert(key.clone(), value).is_some() {
                return Err(format!("label {key} twice"));
            }
        }
        let end = end.ok_or("labels unterminated")?;
        rest = &after[end + 1..];
    }
    let mut words = rest.split_whitespace();
    let value = match words.next().ok_or("no value")? {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse().map_err(|e| format!("value {v:?}: {e}"))?,
    };
    if let Some(ts) = words.next() {
        ts.parse::<i64>()
            .map_err(|e| format!("timestamp {ts:?}: {e}"))?;
    }
    if words.next().is_some() {
        return Err("text after the value".into());
    }
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_prometheus_parser_reads_what_the_encoder_writes_and_refuses_the_rest() {
        let text = "# HELP sriov_nsm_requests_total Requests\n\
                    # TYPE sriov_nsm_requests_total counter\n\
                    sriov_nsm_requests_total{mechanism=\"KERNEL\",result=\"ok\"} 2\n\
                    sriov_nsm_requests_total{mechanism=\"VFIO\",result=\"a \\\"b\\\"\"} 1\n\
                    # TYPE d_seconds histogram\n\
                    d_seconds_bucket{le=\"+Inf\"} 3\n\
                    d_seconds_sum 0.5\n\
                    d_seconds_count 3\n";
        let s = Scrape::parse(text).unwrap();
        assert_eq!(
            s.value("sriov_nsm_requests_total", &[("mechanism", "KERNEL")]),
            2.0
        );
        assert_eq!(s.value("sriov_nsm_requests_total", &[]), 3.0);
        assert_eq!(
            s.value("sriov_nsm_requests_total", &[("result", "a \"b\"")]),
            1.0
        );
        assert_eq!(s.value("d_seconds_count", &[]), 3.0);
        for bad in [
            "x 1\n",
            "# TYPE x counter\nx{a=\"1\" 1\n",
            "# TYPE x counter\nx{a=1} 1\n",
            "# TYPE x counter\nx one\n",
            "# TYPE x counter\n# TYPE x gauge\n",
            "# TYPE x counter\nx_bucket 1\n",
            "# HELP y why\n",
            "# TYPE x counter\nx 1\n# TYPE x counter\n",
            "# TYPE x counter\nx{a=\"1\",a=\"2\"} 1\n",
        ] {
            assert!(Scrape::parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    /// README's metrics table is generated from the lists by hand: this
    /// keeps it equal to them.
    #[test]
    fn the_readmes_metric_table_names_exactly_the_listed_metrics() {
        let readme = include_str!("../../../README.md");
        let (_, table) = readme
            .split_once("<!-- metrics table:")
            .expect("README's metrics table marker");
        let rows: BTreeSet<&str> = table
            .lines()
            .skip(3)
            .take_while(|l| l.starts_with('|'))
            .filter_map(|l| l.split('`').nth(1))
            .collect();
        assert_eq!(rows, listed());
    }
}
