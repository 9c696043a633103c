//! The HTTP/1.1 accept loop both endpoints share, and response helpers.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{ALLOW, CONTENT_TYPE};
use http::{HeaderValue, Method, Response, StatusCode, Uri};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::{Error, Server};

/// What a route answers: every body is small or already whole in memory.
pub(crate) type Reply = Response<Full<Bytes>>;

/// Answers one request from its method and URI (no route reads a body).
pub(crate) trait Routes: Send + Sync + 'static {
    fn answer(self: Arc<Self>, method: Method, uri: Uri) -> impl Future<Output = Reply> + Send;
}

/// Slow clients must not hold a connection (and its task) for ever.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections served at once; scrapers and operators need a handful.
const MAX_CONNECTIONS: usize = 64;

/// Binds `addr` and serves `routes` on it until `shutdown` resolves; then
/// open connections are dropped, an unfinished profile with them.
pub(crate) async fn bind<R: Routes>(
    what: &'static str,
    addr: SocketAddr,
    routes: R,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Server, Error> {
    let listener =
        TcpListener::bind(addr)
            .await
            .map_err(|cause| Error::Bind { what, addr, cause })?;
    let local = listener
        .local_addr()
        .map_err(|cause| Error::Bind { what, addr, cause })?;
    tracing::info!(endpoint = what, addr = %local, "serving");
    let task = tokio::spawn(accept(what, listener, Arc::new(routes), shutdown));
    Ok(Server { addr: local, task })
}

async fn accept<R: Routes>(
    what: &'static str,
    listener: TcpListener,
    routes: Arc<R>,
    shutdown: impl Future<Output = ()>,
) {
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                // Past the cap the newcomer is closed at once: a flood
                // must not take the daemon's fds.
                Ok((stream, peer)) if connections.len() >= MAX_CONNECTIONS => {
                    tracing::warn!(endpoint = what, %peer, "too many connections; closing");
                    drop(stream);
                }
                Ok((stream, _)) => {
                    connections.spawn(connection(what, stream, routes.clone()));
                }
                Err(e) => {
                    // Out of fds and the like: pausing lets other tasks
                    // close some instead of spinning on the error.
                    tracing::warn!(endpoint = what, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    connections.shutdown().await;
    tracing::info!(endpoint = what, "stopped");
}

async fn connection<R: Routes>(what: &'static str, stream: tokio::net::TcpStream, routes: Arc<R>) {
    let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
        let routes = routes.clone();
        async move {
            let (parts, _) = request.into_parts();
            Ok::<_, Infallible>(routes.answer(parts.method, parts.uri).await)
        }
    });
    let served = http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service)
        .await;
    if let Err(e) = served {
        tracing::debug!(endpoint = what, error = %e, "connection ended");
    }
}

/// A response with `status`, `content_type` and `body`.
pub(crate) fn reply(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Reply {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// Plain text, the answer of every status route and every error.
pub(crate) fn text(status: StatusCode, body: impl Into<Bytes>) -> Reply {
    reply(status, "text/plain; charset=utf-8", body)
}

/// 404 for a path no route serves.
pub(crate) fn not_found(path: &str) -> Reply {
    text(StatusCode::NOT_FOUND, format!("no route for {path}\n"))
}

/// 405 for anything but GET, naming the method allowed.
pub(crate) fn only_get(method: &Method) -> Reply {
    let mut response = text(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed; only GET\n"),
    );
    response
        .headers_mut()
        .insert(ALLOW, HeaderValue::from_static("GET"));
    response
}

/// Runs a caller's closure off the async workers: it may take a lock or
/// walk a large pool, and `/livez` must keep answering meanwhile. A closure
/// that panics answers 500.
pub(crate) async fn call<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Reply> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        tracing::error!(error = %e, "an endpoint source failed");
        text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the source of this page failed; see the daemon's log\n",
        )
    })
}
