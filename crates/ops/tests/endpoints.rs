#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Every route of both endpoints over real loopback sockets.

use std::collections::{HashMap, HashSet};
use std::io::Read as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use prost::Message as _;
use sriov_ops::profile::cpu_profile;
use sriov_ops::proto::Profile;
use sriov_ops::{Error, Server, Sources, debug_server, metrics_server};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

/// One response as the test reads it off the wire.
#[derive(Debug)]
struct Got {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Got {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8(self.body.clone()).unwrap()
    }
}

/// A raw HTTP/1.1 request with `Connection: close`, so the body is
/// everything after the head (the server sets Content-Length too, checked).
async fn request(addr: SocketAddr, method: &str, target: &str) -> Got {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head = format!("{method} {target} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = std::str::from_utf8(&raw[..split]).unwrap();
    let body = raw[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap();
            (n.trim().to_owned(), v.trim().to_owned())
        })
        .collect();
    let got = Got {
        status,
        headers,
        body,
    };
    if let Some(len) = got.header("content-length") {
        assert_eq!(len.parse::<usize>().unwrap(), got.body.len());
    }
    got
}

async fn get(addr: SocketAddr, target: &str) -> Got {
    request(addr, "GET", target).await
}

const LOOPBACK_ANY_PORT: ([u8; 4], u16) = ([127, 0, 0, 1], 0);

/// A few Prometheus lines, as an OpenTelemetry exporter would render them.
const METRICS: &str = "\
# HELP sriov_nsm_requests_total NSM requests.
# TYPE sriov_nsm_requests_total counter
sriov_nsm_requests_total{mechanism=\"KERNEL\",result=\"ok\"} 3
# HELP sriov_pool_vfs VFs per pool and state.
# TYPE sriov_pool_vfs gauge
sriov_pool_vfs{pf=\"0000:3b:00.0\",resource=\"worker.domain/10G\",state=\"free\"} 4
sriov_pool_vfs{pf=\"0000:3b:00.0\",resource=\"worker.domain/10G\",state=\"in_use\"} 1
";

/// Readiness the test flips, and sources over it.
fn sources(ready: Arc<AtomicBool>) -> Sources {
    Sources::new(Arc::new(move || {
        if ready.load(Ordering::SeqCst) {
            Ok("registered with kubelet and the NSM registry".to_owned())
        } else {
            Err("waiting for kubelet registration".to_owned())
        }
    }))
    .with_metrics(Arc::new(|| METRICS.to_owned()))
    .with_state(Arc::new(|| {
        serde_json::json!({
            "pools": [{ "resource": "worker.domain/10G", "free": 4 }],
            "connections": [{ "id": "conn-1", "token": "<redacted>" }],
        })
    }))
}

/// A Prometheus sample: name, labels, value.
type PromSample = (String, Vec<(String, String)>, f64);

/// The sample lines of a Prometheus text exposition: each is
/// `name{labels} value`, with every label quoted and the value a float.
fn parse_prometheus(text: &str) -> Vec<PromSample> {
    let mut samples = Vec::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix("# ") {
            let kind = comment.split(' ').next().unwrap();
            assert!(kind == "HELP" || kind == "TYPE", "comment {line:?}");
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap();
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("value in {line:?}"));
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let rest = rest.strip_suffix('}').unwrap();
                let labels = rest
                    .split("\",")
                    .map(|pair| {
                        let (k, v) = pair.split_once("=\"").unwrap();
                        (k.to_owned(), v.trim_end_matches('"').to_owned())
                    })
                    .collect();
                (name, labels)
            }
            None => (series, Vec::new()),
        };
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "metric name {name:?}"
        );
        samples.push((name.to_owned(), labels, value));
    }
    samples
}

async fn started_metrics(ready: Arc<AtomicBool>) -> (Server, oneshot::Sender<()>) {
    let (stop, stopped) = oneshot::channel::<()>();
    let server = metrics_server(LOOPBACK_ANY_PORT.into(), sources(ready), async {
        let _ = stopped.await;
    })
    .await
    .unwrap();
    (server, stop)
}

#[tokio::test]
async fn metrics_serves_the_closures_text_in_prometheus_format() {
    let (server, _stop) = started_metrics(Arc::new(AtomicBool::new(true))).await;
    let got = get(server.addr, "/metrics").await;
    assert_eq!(got.status, 200);
    assert_eq!(
        got.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert_eq!(got.text(), METRICS);
    let samples = parse_prometheus(&got.text());
    assert_eq!(samples.len(), 3);
    let (name, labels, value) = &samples[0];
    assert_eq!(name, "sriov_nsm_requests_total");
    assert!(labels.contains(&("mechanism".to_owned(), "KERNEL".to_owned())));
    assert_eq!(*value, 3.0);
}

#[tokio::test]
async fn readyz_follows_the_closure_and_livez_answers() {
    let ready = Arc::new(AtomicBool::new(false));
    let (server, _stop) = started_metrics(ready.clone()).await;

    let got = get(server.addr, "/readyz").await;
    assert_eq!(got.status, 503);
    assert_eq!(got.text(), "waiting for kubelet registration\n");

    ready.store(true, Ordering::SeqCst);
    let got = get(server.addr, "/readyz").await;
    assert_eq!(got.status, 200);
    assert_eq!(got.text(), "registered with kubelet and the NSM registry\n");

    ready.store(false, Ordering::SeqCst);
    assert_eq!(get(server.addr, "/readyz").await.status, 503);

    let got = get(server.addr, "/livez").await;
    assert_eq!((got.status, got.text().as_str()), (200, "ok\n"));
}

#[tokio::test]
async fn unknown_paths_are_404_and_other_methods_405() {
    let (server, _stop) = started_metrics(Arc::new(AtomicBool::new(true))).await;
    assert_eq!(get(server.addr, "/").await.status, 404);
    assert_eq!(get(server.addr, "/debug/state").await.status, 404);
    let got = request(server.addr, "POST", "/metrics").await;
    assert_eq!(got.status, 405);
    assert_eq!(got.header("allow"), Some("GET"));
    assert_eq!(request(server.addr, "DELETE", "/readyz").await.status, 405);
}

#[tokio::test]
async fn missing_sources_are_404_and_a_panicking_one_500() {
    let sources = Sources::new(Arc::new(|| panic!("readiness source broke")));
    let metrics = metrics_server(
        LOOPBACK_ANY_PORT.into(),
        sources.clone(),
        std::future::pending(),
    )
    .await
    .unwrap();
    assert_eq!(get(metrics.addr, "/metrics").await.status, 404);
    assert_eq!(get(metrics.addr, "/readyz").await.status, 500);
    // The endpoint survives it.
    assert_eq!(get(metrics.addr, "/livez").await.status, 200);

    let debug = debug_server(LOOPBACK_ANY_PORT.into(), sources, std::future::pending())
        .await
        .unwrap();
    assert_eq!(get(debug.addr, "/debug/state").await.status, 404);
}

#[tokio::test]
async fn shutdown_stops_the_listener() {
    let (server, stop) = started_metrics(Arc::new(AtomicBool::new(true))).await;
    assert_eq!(get(server.addr, "/livez").await.status, 200);
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), server.task)
        .await
        .unwrap()
        .unwrap();
    assert!(TcpStream::connect(server.addr).await.is_err());
}

#[tokio::test]
async fn binding_a_taken_port_names_the_endpoint_and_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let sources = sources(Arc::new(AtomicBool::new(true)));
    let err = metrics_server(addr, sources, std::future::pending())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Bind { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("metrics") && text.contains(&addr.to_string()),
        "{text}"
    );
}

async fn started_debug() -> Server {
    debug_server(
        LOOPBACK_ANY_PORT.into(),
        sources(Arc::new(AtomicBool::new(true))),
        std::future::pending(),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn the_debug_endpoint_refuses_non_loopback_addresses() {
    for addr in ["0.0.0.0:0", "[::]:0"] {
        let addr: SocketAddr = addr.parse().unwrap();
        let err = debug_server(
            addr,
            sources(Arc::new(AtomicBool::new(true))),
            std::future::pending(),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, Error::NotLoopback { .. }), "{err:?}");
        assert!(err.to_string().contains("loopback only"), "{err}");
    }
}

#[tokio::test]
async fn debug_state_is_the_closures_json_pretty_printed() {
    let server = started_debug().await;
    let got = get(server.addr, "/debug/state").await;
    assert_eq!(got.status, 200);
    assert_eq!(got.header("content-type"), Some("application/json"));
    let text = got.text();
    assert!(text.contains("\n  \"connections\""), "not pretty: {text}");
    let state: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(state["connections"][0]["token"], "<redacted>");
    assert_eq!(state["pools"][0]["free"], 4);
}

#[tokio::test]
async fn the_index_lists_the_pages_and_other_paths_are_404() {
    let server = started_debug().await;
    for path in ["/debug/pprof/", "/debug/pprof"] {
        let got = get(server.addr, path).await;
        assert_eq!(got.status, 200);
        let text = got.text();
        for page in ["/debug/pprof/profile", "/debug/pprof/heap", "/debug/state"] {
            assert!(text.contains(page), "{page} missing from {text}");
        }
    }
    assert_eq!(get(server.addr, "/metrics").await.status, 404);
    assert_eq!(get(server.addr, "/debug/pprof/goroutine").await.status, 404);
    assert_eq!(
        request(server.addr, "POST", "/debug/state").await.status,
        405
    );
}

#[tokio::test]
async fn heap_names_the_resident_size_in_bytes() {
    let server = started_debug().await;
    let got = get(server.addr, "/debug/pprof/heap").await;
    assert_eq!(got.status, 200);
    let text = got.text();
    let rss = text
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS "))
        .unwrap_or_else(|| panic!("no VmRSS in {text}"));
    assert!(rss.parse::<u64>().unwrap() > 0, "{text}");
    assert!(text.contains("VmHWM "), "{text}");
}

#[tokio::test]
async fn bad_profile_durations_are_400() {
    let server = started_debug().await;
    for query in ["seconds=0", "seconds=301", "seconds=ten"] {
        let got = get(server.addr, &format!("/debug/pprof/profile?{query}")).await;
        assert_eq!(got.status, 400, "{query}");
        assert!(got.text().contains("1 to 300"), "{}", got.text());
    }
}

/// Spins until told to stop, so the profile has CPU samples to take.
fn burn(stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::Builder::new()
        .name("burner".into())
        .spawn(move || {
            let mut x: u64 = 1;
            while !stop.load(Ordering::Relaxed) {
                for _ in 0..10_000 {
                    x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                }
            }
            x
        })
        .unwrap()
}

/// Decodes a gzipped profile and checks what `go tool pprof` relies on:
/// the string table, the sample and period types, references that
/// resolve, and the burner's frames among the samples.
fn check_profile(gz: &[u8]) {
    assert_eq!(&gz[..2], [0x1f, 0x8b], "not gzip");
    // To read one with `go tool pprof -top <file>` by hand.
    if let Some(out) = std::env::var_os("SRIOV_OPS_PROFILE_OUT") {
        std::fs::write(out, gz).unwrap();
    }
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(gz)
        .read_to_end(&mut raw)
        .unwrap();
    let profile = Profile::decode(raw.as_slice()).unwrap();

    let s = |i: i64| profile.string_table[usize::try_from(i).unwrap()].as_str();
    assert_eq!(profile.string_table[0], "");
    let types: Vec<(&str, &str)> = profile
        .sample_type
        .iter()
        .map(|t| (s(t.r#type), s(t.unit)))
        .collect();
    assert_eq!(types, [("samples", "count"), ("cpu", "nanoseconds")]);
    let period = profile.period_type.as_ref().unwrap();
    assert_eq!((s(period.r#type), s(period.unit)), ("cpu", "nanoseconds"));
    assert_eq!(profile.period, 1_000_000_000 / 100);
    assert!(profile.time_nanos > 0);
    assert!(!profile.sample.is_empty(), "no samples");

    let locations: HashMap<u64, _> = profile.location.iter().map(|l| (l.id, l)).collect();
    let functions: HashMap<u64, _> = profile.function.iter().map(|f| (f.id, f)).collect();
    assert!(!locations.contains_key(&0) && !functions.contains_key(&0));
    let thread = s(profile.sample[0].label[0].key);
    assert_eq!(thread, "thread");
    let mut names = HashSet::new();
    for sample in &profile.sample {
        // The leaf is the sampled code, not the profiler's unwinder.
        let leaf = &locations[&sample.location_id[0]].line[0];
        let leaf = s(functions[&leaf.function_id].name);
        assert!(
            !leaf.contains("pprof::") && !leaf.starts_with("backtrace::"),
            "the sampler's frame {leaf} is a leaf"
        );
        assert_eq!(sample.value.len(), 2);
        assert!(sample.value[0] > 0);
        assert_eq!(sample.value[1], sample.value[0] * profile.period);
        for id in &sample.location_id {
            for line in &locations[id].line {
                names.insert(s(functions[&line.function_id].name).to_owned());
            }
        }
    }
    // Symbols resolve: the burner's loop shows up by name.
    assert!(
        names.iter().any(|n| n.contains("burn")),
        "no burner frame among {names:?}"
    );
}

/// The profile, and the one-at-a-time rule, in one test: the profiler is
/// one per process, so two tests profiling in parallel would see each
/// other's 409s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cpu_profile_is_gzipped_pprof_and_one_runs_at_a_time() {
    let server = started_debug().await;
    let stop = Arc::new(AtomicBool::new(false));
    let burner = burn(stop.clone());

    // A profile taken through the API holds the profiler from its first
    // poll, so the endpoint's request meanwhile must be refused.
    let mut first = Box::pin(cpu_profile(Duration::from_secs(1)));
    tokio::select! {
        biased;
        done = &mut first => panic!("a 1 s profile finished at once: {done:?}"),
        () = std::future::ready(()) => {}
    }
    let busy = get(server.addr, "/debug/pprof/profile?seconds=1").await;
    assert_eq!(busy.status, 409, "{}", busy.text());
    assert!(busy.text().contains("already running"), "{}", busy.text());
    check_profile(&first.await.unwrap());

    // Once it is done, the endpoint profiles.
    let got = get(server.addr, "/debug/pprof/profile?seconds=1").await;
    stop.store(true, Ordering::Relaxed);
    burner.join().unwrap();
    assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
    assert_eq!(got.header("content-type"), Some("application/octet-stream"));
    assert_eq!(
        got.header("content-disposition"),
        Some("attachment; filename=\"profile\"")
    );
    check_profile(&got.body);
}
