//! The process's log output: lines to stderr as text or JSON, filtered by `RUST_LOG` if it is
//! set when the proxy starts, else by `[log] level`, which a reload may change.

use std::io::IsTerminal;

use pgrepl_config::{LogConfig, LogFormat};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, reload, EnvFilter, Layer, Registry};

/// What decides which lines are logged, from here on.
pub struct LogLevel {
    /// None when `RUST_LOG` was set at start: it stays in force.
    filter: Option<reload::Handle<EnvFilter, Registry>>,
}

/// Installs the process's subscriber (once, before anything logs).
pub fn init(log: &LogConfig) -> anyhow::Result<LogLevel> {
    let (filter, reloadable) = match std::env::var(EnvFilter::DEFAULT_ENV) {
        Ok(directives) => (
            EnvFilter::try_new(&directives)
                .map_err(|e| anyhow::anyhow!("RUST_LOG={directives:?}: {e}"))?,
            false,
        ),
        Err(_) => (level_filter(&log.level)?, true),
    };
    let (filter, handle) = reload::Layer::new(filter);
    let lines = fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let lines = match log.format {
        LogFormat::Text => lines.boxed(),
        LogFormat::Json => lines.json().boxed(),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(lines)
        .try_init()?;
    Ok(LogLevel {
        filter: reloadable.then_some(handle),
    })
}

/// The filter `[log] level` asks for.
pub fn level_filter(level: &str) -> anyhow::Result<EnvFilter> {
    // The health monitor reports its backends' state changes itself; deadpool's own
    // warnings about the same broken connections would only repeat them, less clearly.
    let directives = if level.contains("deadpool") {
        level.to_owned()
    } else {
        format!("{level},deadpool=error")
    };
    EnvFilter::try_new(directives).map_err(|e| anyhow::anyhow!("[log] level: {level:?}: {e}"))
}

impl LogLevel {
    /// Whether `[log] level` decides (`RUST_LOG` was not set at start).
    pub fn follows_config(&self) -> bool {
        self.filter.is_some()
    }

    /// Filters by `filter` from now on.
    pub fn apply(&self, filter: EnvFilter) -> Result<(), reload::Error> {
        match &self.filter {
            Some(handle) => handle.reload(filter),
            None => Ok(()),
        }
    }
}
