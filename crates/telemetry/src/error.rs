//! What can go wrong setting telemetry up.

/// Setting up logging, the providers, or flushing them.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The log level is not a tracing directive.
    #[error("log level {directive:?} is not a tracing filter directive: {cause}")]
    LevelDirective {
        /// The directive given.
        directive: String,
        /// Why tracing refused it.
        cause: tracing_subscriber::filter::ParseError,
    },
    /// A log format other than `text` or `json`.
    #[error("log format {value:?}: expected text or json")]
    LogFormat {
        /// The value given.
        value: String,
    },
    /// A global subscriber was already installed (logging set up twice).
    #[error("installing the log subscriber: {cause}")]
    Subscriber {
        /// What tracing said.
        cause: tracing_subscriber::util::TryInitError,
    },
    /// The OTLP exporter of one signal could not be built.
    #[error("OTLP {signal} exporter for {endpoint}: {cause}")]
    Exporter {
        /// `traces` or `metrics`.
        signal: &'static str,
        /// The collector endpoint, with its scheme.
        endpoint: String,
        /// What the exporter builder said.
        cause: opentelemetry_otlp::ExporterBuildError,
    },
    /// The endpoint is not host:port nor a URL.
    #[error("OTLP endpoint {endpoint:?}: {cause}")]
    Endpoint {
        /// The endpoint as given.
        endpoint: String,
        /// Why it is not a URI.
        cause: http::uri::InvalidUri,
    },
    /// The Prometheus pull reader could not be built.
    #[error("Prometheus reader: {cause}")]
    Prometheus {
        /// What the exporter said.
        cause: opentelemetry_sdk::error::OTelSdkError,
    },
    /// Flushing a provider at shutdown failed (spans or metrics lost).
    #[error("shutting down the {signal} provider: {cause}")]
    Shutdown {
        /// `traces` or `metrics`.
        signal: &'static str,
        /// What the SDK said.
        cause: opentelemetry_sdk::error::OTelSdkError,
    },
}
