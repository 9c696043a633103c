//! `sriov-e2e fake-apiserver --dir DIR`: `sriov-dra`'s `FakeApiServer` on its own, for a test
//! driver in another process or language (the Python kubelet of the grpc-interop suite).
//!
//! It writes `DIR/kubeconfig` for the plugin, then `DIR/url` (the base URL, no newline) for the
//! driver; `url` is renamed into place last, so once it exists both are complete. Claims are
//! made with `POST .../namespaces/{ns}/resourceclaims`. It serves until SIGTERM or SIGINT.

use std::path::{Path, PathBuf};

use sriov_dra::testing::FakeApiServer;
use tokio::signal::unix::{SignalKind, signal};

use crate::checks::{Report, say};

/// Options of the `fake-apiserver` mode.
#[derive(Debug)]
pub(crate) struct ApiServerOptions {
    dir: PathBuf,
}

pub(crate) const USAGE: &str = "usage: sriov-e2e fake-apiserver --dir DIR";

pub(crate) fn parse(mut args: impl Iterator<Item = String>) -> Result<ApiServerOptions, String> {
    let mut dir = None;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--dir" => {
                dir = Some(PathBuf::from(
                    args.next()
                        .ok_or_else(|| format!("--dir needs a value\n{USAGE}"))?,
                ));
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    dir.map(|dir| ApiServerOptions { dir })
        .ok_or_else(|| USAGE.to_string())
}

pub(crate) async fn run(o: ApiServerOptions) -> Report {
    let mut r = Report::default();
    r.check("fake-apiserver", serve(&o.dir).await);
    r
}

fn write_url(dir: &Path, url: &str) -> Result<(), String> {
    let partial = dir.join("url.partial");
    let path = dir.join("url");
    std::fs::write(&partial, url).map_err(|e| format!("{}: {e}", partial.display()))?;
    std::fs::rename(&partial, &path).map_err(|e| format!("{}: {e}", path.display()))
}

async fn serve(dir: &Path) -> Result<String, String> {
    // Handlers first: a signal sent as soon as `url` appears must end us cleanly.
    let mut term = signal(SignalKind::terminate()).map_err(|e| format!("SIGTERM handler: {e}"))?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| format!("SIGINT handler: {e}"))?;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let api = FakeApiServer::start()
        .await
        .map_err(|e| format!("starting the fake API server: {e}"))?;
    let kubeconfig = api
        .kubeconfig(dir)
        .map_err(|e| format!("writing the kubeconfig into {}: {e}", dir.display()))?;
    write_url(dir, &api.url())?;
    say(format!(
        "serving {} (kubeconfig {})",
        api.url(),
        kubeconfig.display()
    ));
    let why = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    let requests = api.requests();
    let writes = requests.iter().filter(|q| q.is_write()).count();
    Ok(format!(
        "{} requests answered ({writes} writes), stopped on {why}",
        requests.len()
    ))
}
