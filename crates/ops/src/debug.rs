//! The debug endpoint: pprof CPU profiles, memory figures, `/debug/state`.

use std::sync::Arc;
use std::time::Duration;

use http::header::CONTENT_DISPOSITION;
use http::{HeaderValue, Method, StatusCode, Uri};

use crate::http::{Reply, Routes, call, not_found, only_get, reply, text};
use crate::{Error, Sources, heap, profile};

pub(crate) struct DebugRoutes {
    pub(crate) sources: Sources,
}

const INDEX: &str = "\
/debug/pprof/profile?seconds=N  CPU profile (pprof protobuf, gzip) over N seconds (default 30, at most 300)
/debug/pprof/heap               memory of the process in bytes (kernel accounting)
/debug/state                    the daemon's pools, connections and allocations (JSON)
";

impl Routes for DebugRoutes {
    async fn answer(self: Arc<Self>, method: Method, uri: Uri) -> Reply {
        if method != Method::GET {
            return only_get(&method);
        }
        match uri.path() {
            "/debug/pprof" | "/debug/pprof/" => text(StatusCode::OK, INDEX),
            "/debug/pprof/profile" => cpu(uri.query()).await,
            "/debug/pprof/heap" => match call(heap::memory).await {
                Ok(Ok(figures)) => text(StatusCode::OK, heap::render(&figures)),
                Ok(Err(e)) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
                Err(failed) => failed,
            },
            "/debug/state" => match self.sources.state.clone() {
                Some(state) => match call(move || serde_json::to_string_pretty(&state())).await {
                    Ok(Ok(mut json)) => {
                        json.push('\n');
                        reply(StatusCode::OK, "application/json", json)
                    }
                    Ok(Err(e)) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
                    Err(failed) => failed,
                },
                None => text(StatusCode::NOT_FOUND, "this daemon publishes no state\n"),
            },
            path => not_found(path),
        }
    }
}

async fn cpu(query: Option<&str>) -> Reply {
    let seconds = match seconds(query) {
        Ok(s) => s,
        Err(why) => return text(StatusCode::BAD_REQUEST, why),
    };
    match profile::cpu_profile(Duration::from_secs(seconds)).await {
        Ok(gz) => {
            let mut response = reply(StatusCode::OK, "application/octet-stream", gz);
            response.headers_mut().insert(
                CONTENT_DISPOSITION,
                HeaderValue::from_static("attachment; filename=\"profile\""),
            );
            response
        }
        Err(e @ Error::ProfilerBusy) => text(StatusCode::CONFLICT, format!("{e}\n")),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    }
}

/// `seconds=N` of the query: absent or empty is the default; anything but
/// a whole number in range is refused, rather than guessed at.
fn seconds(query: Option<&str>) -> Result<u64, String> {
    let value = query
        .unwrap_or_default()
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .filter(|(key, _)| *key == "seconds")
        .map(|(_, value)| value)
        .next_back()
        .unwrap_or_default();
    if value.is_empty() {
        return Ok(profile::DEFAULT_SECONDS);
    }
    match value.parse::<u64>() {
        Ok(n) if (1..=profile::MAX_SECONDS).contains(&n) => Ok(n),
        _ => Err(format!(
            "seconds={value}: expected a whole number from 1 to {}\n",
            profile::MAX_SECONDS
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::seconds;

    #[test]
    fn seconds_default_bound_and_refuse_garbage() {
        assert_eq!(seconds(None), Ok(30));
        assert_eq!(seconds(Some("")), Ok(30));
        assert_eq!(seconds(Some("debug=1&seconds=")), Ok(30));
        assert_eq!(seconds(Some("seconds=5")), Ok(5));
        assert_eq!(seconds(Some("x=1&seconds=300")), Ok(300));
        for bad in [
            "seconds=0",
            "seconds=301",
            "seconds=-1",
            "seconds=1.5",
            "seconds=abc",
        ] {
            let err = seconds(Some(bad)).unwrap_err();
            assert!(err.contains("1 to 300"), "{bad}: {err}");
        }
    }
}
