//! Logging: level from `NSM_LOG_LEVEL`; SIGUSR1 switches to trace and
//! SIGUSR2 back, as the Go forwarder's log-level signal handling does.

use anyhow::Result;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

/// Switches the active log level.
#[derive(Clone)]
pub(crate) struct LevelSwitch {
    handle: reload::Handle<EnvFilter, Registry>,
    configured: &'static str,
}

impl LevelSwitch {
    pub(crate) fn set_trace(&self) {
        let _ = self.handle.modify(|f| *f = EnvFilter::new("trace"));
        tracing::info!("log level: trace (SIGUSR1)");
    }

    pub(crate) fn restore(&self) {
        let _ = self.handle.modify(|f| *f = EnvFilter::new(self.configured));
        tracing::info!(level = self.configured, "log level restored (SIGUSR2)");
    }
}

/// Installs the subscriber at `level` (a tracing directive such as `info`).
pub(crate) fn init(level: &'static str) -> Result<LevelSwitch> {
    let (filter, handle) = reload::Layer::new(EnvFilter::new(level));
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .try_init()?;
    Ok(LevelSwitch {
        handle,
        configured: level,
    })
}
