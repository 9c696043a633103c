//! The log subscriber both daemons install: a level directive that SIGUSR1
//! and SIGUSR2 switch to `trace` and back (as the Go forwarder's log-level
//! signal handling does), text or JSON lines on stderr, and, when traces
//! are exported, the bridge from `tracing` spans to OpenTelemetry.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Subscriber;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry, reload};

use crate::Error;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines (coloured on a terminal).
    #[default]
    Text,
    /// One JSON object per line, with the current span's fields, for log
    /// collectors that parse.
    Json,
}

impl FromStr for LogFormat {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        match s.trim().to_ascii_lowercase().as_str() {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            _ => Err(Error::LogFormat {
                value: s.to_string(),
            }),
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Text => "text",
            Self::Json => "json",
        })
    }
}

/// What [`init`] installs.
#[derive(Debug, Clone, Default)]
pub struct LogConfig {
    /// A tracing filter directive (`info`, `sriov_chain=debug,info`).
    pub level: String,
    /// Text or JSON lines.
    pub format: LogFormat,
    /// Spans go to this provider's tracer too (see
    /// [`crate::Telemetry::tracer_provider`]); `None`: logs only.
    pub traces: Option<SdkTracerProvider>,
}

/// The spans that reach OpenTelemetry, whatever the log level: the
/// transport crates' own spans (the exporter's calls among them) would
/// otherwise trace the export of themselves.
const OTEL_SPANS: &str = "info,h2=off,hyper=off,hyper_util=off,tonic=off,tower=off,\
                          opentelemetry=off,opentelemetry_sdk=off,opentelemetry_otlp=off";

/// Switches the log level of an installed subscriber; cheap to clone.
#[derive(Clone)]
pub struct LevelSwitch {
    set: Arc<dyn Fn(EnvFilter) -> Result<(), reload::Error> + Send + Sync>,
    configured: Arc<str>,
}

impl fmt::Debug for LevelSwitch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LevelSwitch")
            .field("configured", &self.configured)
            .finish_non_exhaustive()
    }
}

impl LevelSwitch {
    /// Logs everything (SIGUSR1).
    pub fn set_trace(&self) {
        if let Err(e) = (self.set)(EnvFilter::new("trace")) {
            tracing::warn!(error = %e, "log level not changed");
        }
        tracing::info!("log level: trace (SIGUSR1)");
    }

    /// Back to the level given at start (SIGUSR2).
    pub fn restore(&self) {
        // The directive parsed when the switch was made, so it parses again.
        let filter = EnvFilter::try_new(&*self.configured).unwrap_or_else(|_| EnvFilter::new(""));
        if let Err(e) = (self.set)(filter) {
            tracing::warn!(error = %e, "log level not changed");
        }
        tracing::info!(level = &*self.configured, "log level restored (SIGUSR2)");
    }

    /// The level given at start.
    pub fn configured(&self) -> &str {
        &self.configured
    }
}

/// Installs the process's subscriber: lines on stderr at `config.level`,
/// and spans to OpenTelemetry when `config.traces` is given. Fails if a
/// subscriber is already installed.
pub fn init(config: LogConfig) -> Result<LevelSwitch, Error> {
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let (subscriber, switch) = build(config, std::io::stderr, ansi)?;
    subscriber
        .try_init()
        .map_err(|cause| Error::Subscriber { cause })?;
    Ok(switch)
}

/// The subscriber [`init`] installs, writing to `writer`, for a caller
/// that scopes it (`tracing::subscriber::with_default`) instead.
pub fn build<W>(
    config: LogConfig,
    writer: W,
    ansi: bool,
) -> Result<(impl Subscriber + Send + Sync + 'static, LevelSwitch), Error>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_new(&config.level).map_err(|cause| Error::LevelDirective {
        directive: config.level.clone(),
        cause,
    })?;
    let (filter, handle) = reload::Layer::new(filter);
    let otel = config.traces.map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("sriov"))
            .with_filter(EnvFilter::new(OTEL_SPANS))
    });
    let subscriber = Registry::default()
        .with(lines(config.format, writer, ansi).with_filter(filter))
        .with(otel);
    let switch = LevelSwitch {
        set: Arc::new(move |f| handle.reload(f)),
        configured: config.level.into(),
    };
    Ok((subscriber, switch))
}

fn lines<S, W>(format: LogFormat, writer: W, ansi: bool) -> Box<dyn Layer<S> + Send + Sync>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let layer = tracing_subscriber::fmt::layer().with_writer(writer);
    match format {
        LogFormat::Text => layer.with_ansi(ansi).boxed(),
        LogFormat::Json => layer
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    fn capture(
        level: &str,
        format: LogFormat,
    ) -> (impl Subscriber + Send + Sync, LevelSwitch, Captured) {
        let out = Captured::default();
        let writer = {
            let out = out.clone();
            move || out.clone()
        };
        let config = LogConfig {
            level: level.into(),
            format,
            traces: None,
        };
        let (subscriber, switch) = build(config, writer, false).unwrap();
        (subscriber, switch, out)
    }

    #[test]
    fn usr1_logs_everything_and_usr2_restores_the_level() {
        let (subscriber, switch, out) = capture("info", LogFormat::Text);
        tracing::subscriber::with_default(subscriber, || {
            tracing::debug!("hidden-before");
            switch.set_trace();
            tracing::trace!("shown-while-trace");
            switch.restore();
            tracing::debug!("hidden-after");
            tracing::info!("shown-info");
        });
        let text = out.text();
        assert!(!text.contains("hidden-before"), "{text}");
        assert!(text.contains("shown-while-trace"), "{text}");
        assert!(!text.contains("hidden-after"), "{text}");
        assert!(text.contains("shown-info"), "{text}");
        assert_eq!(switch.configured(), "info");
    }

    #[test]
    fn json_lines_carry_the_fields_and_the_current_span() {
        let (subscriber, _switch, out) = capture("info", LogFormat::Json);
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("nsm.Request", connection.id = "c-1");
            let _g = span.enter();
            tracing::info!(vf = "0000:3b:02.0", "bound");
        });
        let text = out.text();
        let line: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(line["fields"]["message"], "bound");
        assert_eq!(line["fields"]["vf"], "0000:3b:02.0");
        assert_eq!(line["span"]["name"], "nsm.Request");
        assert_eq!(line["span"]["connection.id"], "c-1");
    }

    #[test]
    fn formats_parse_and_a_bad_level_is_refused() {
        assert_eq!("JSON".parse::<LogFormat>().unwrap(), LogFormat::Json);
        assert_eq!("text".parse::<LogFormat>().unwrap(), LogFormat::Text);
        assert!(matches!(
            "yaml".parse::<LogFormat>(),
            Err(Error::LogFormat { value }) if value == "yaml"
        ));
        let bad = LogConfig {
            level: "info,=[".into(),
            ..LogConfig::default()
        };
        assert!(matches!(
            build(bad, std::io::sink, false),
            Err(Error::LevelDirective { .. })
        ));
    }
}
