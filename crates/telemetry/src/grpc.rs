//! W3C trace context over gRPC, so our spans join the NSM manager's trace
//! and the next hop's join ours (the Go SDK does the same with otelgrpc's
//! interceptors and the `TraceContext` propagator).
//!
//! Servers: [`ServerTraceLayer`] on `tonic::transport::Server::builder()`.
//! Clients: [`inject_context`] on each outgoing request's metadata (or
//! [`InjectTraceContext`] as a tonic interceptor).

use std::task::{Context, Poll};

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tracing::Instrument;
use tracing::instrument::Instrumented;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Name of the span [`ServerTraceLayer`] opens around every call.
pub const SERVER_SPAN: &str = "grpc.server";

/// Wraps a tonic server's routes: each call runs inside a `grpc.server`
/// span (attribute `rpc.method`, the request path) whose OpenTelemetry
/// parent is the caller's `traceparent`/`tracestate`, so every span a
/// handler opens belongs to the caller's trace.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServerTraceLayer;

impl<S> tower::Layer<S> for ServerTraceLayer {
    type Service = ServerTrace<S>;

    fn layer(&self, inner: S) -> ServerTrace<S> {
        ServerTrace { inner }
    }
}

/// The service [`ServerTraceLayer`] makes.
#[derive(Debug, Clone)]
pub struct ServerTrace<S> {
    inner: S,
}

impl<S, B> tower::Service<http::Request<B>> for ServerTrace<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Instrumented<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let span = tracing::info_span!(
            "grpc.server",
            rpc.method = request.uri().path(),
            otel.kind = "server",
        );
        let parent = TraceContextPropagator::new().extract(&Headers(request.headers()));
        if parent.span().span_context().is_valid() {
            // Fails only without an OpenTelemetry layer: nothing to join then.
            let _ = span.set_parent(parent);
        }
        // Work a service does in `call` itself belongs to the span too.
        let future = span.in_scope(|| self.inner.call(request));
        future.instrument(span)
    }
}

struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct Metadata<'a>(&'a mut MetadataMap);

impl Injector for Metadata<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            MetadataKey::from_bytes(key.as_bytes()),
            MetadataValue::try_from(value),
        ) {
            self.0.insert(key, value);
        }
    }
}

/// Writes the current `tracing` span's trace context (`traceparent`, and
/// `tracestate` when it has one) into `metadata`; nothing when the span is
/// not exported (no OpenTelemetry layer, or telemetry off).
pub fn inject_context(metadata: &mut MetadataMap) {
    inject_span_context(&tracing::Span::current(), metadata);
}

/// [`inject_context`] for `span` rather than the current one.
pub fn inject_span_context(span: &tracing::Span, metadata: &mut MetadataMap) {
    let cx = span.context();
    if cx.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(&cx, &mut Metadata(metadata));
    }
}

/// [`inject_context`] as a tonic interceptor
/// (`FooClient::with_interceptor(channel, InjectTraceContext)`): tonic
/// runs it inside the calling task, so the current span is the caller's.
#[derive(Debug, Clone, Copy, Default)]
pub struct InjectTraceContext;

impl tonic::service::Interceptor for InjectTraceContext {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        inject_context(request.metadata_mut());
        Ok(request)
    }
}
