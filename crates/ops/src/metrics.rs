//! The metrics endpoint: `/metrics`, `/readyz`, `/livez`.

use std::sync::Arc;

use http::{Method, StatusCode, Uri};

use crate::http::{Reply, Routes, call, not_found, only_get, reply, text};
use crate::{PROMETHEUS_CONTENT_TYPE, Sources};

pub(crate) struct MetricsRoutes {
    pub(crate) sources: Sources,
}

impl Routes for MetricsRoutes {
    async fn answer(self: Arc<Self>, method: Method, uri: Uri) -> Reply {
        if method != Method::GET {
            return only_get(&method);
        }
        match uri.path() {
            "/metrics" => match self.sources.metrics.clone() {
                Some(metrics) => match call(move || metrics()).await {
                    Ok(body) => reply(StatusCode::OK, PROMETHEUS_CONTENT_TYPE, body),
                    Err(failed) => failed,
                },
                None => text(
                    StatusCode::NOT_FOUND,
                    "this daemon exports no metrics here\n",
                ),
            },
            "/readyz" => ready(&self.sources).await,
            // Answering at all is the point: a wedged runtime never gets here.
            "/livez" => text(StatusCode::OK, "ok\n"),
            path => not_found(path),
        }
    }
}

/// 200 with the closure's body while ready, 503 with its reason otherwise.
async fn ready(sources: &Sources) -> Reply {
    let ready = sources.ready.clone();
    match call(move || ready()).await {
        Ok(Ok(body)) => text(StatusCode::OK, with_newline(body)),
        Ok(Err(reason)) => text(StatusCode::SERVICE_UNAVAILABLE, with_newline(reason)),
        Err(failed) => failed,
    }
}

fn with_newline(mut s: String) -> String {
    if !s.ends_with('\n') {
        s.push('\n');
    }
    s
}
