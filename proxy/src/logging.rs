//! The process's log output: lines to stderr as text or JSON, filtered by `RUST_LOG` if it is
//! set when the proxy starts, else by `[log] level`, which a reload may change.

use std::io::IsTerminal;

use pgrepl_config::{LogConfig, LogFormat};
use tracing_subscriber::EnvFilter;

/// Swaps the filter of the installed subscriber.
type Swap = Box<dyn Fn(EnvFilter) -> Result<(), String> + Send + Sync>;

/// What decides which lines are logged, from here on.
pub struct LogLevel {
    /// None when `RUST_LOG` was set at start: it stays in force.
    swap: Option<Swap>,
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
    let ansi = std::io::stderr().is_terminal();
    let swap: Swap = match log.format {
        LogFormat::Text => {
            let builder = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .with_ansi(ansi)
                .with_filter_reloading();
            let handle = builder.reload_handle();
            builder.init();
            Box::new(move |filter| handle.reload(filter).map_err(|e| e.to_string()))
        }
        LogFormat::Json => {
            let builder = tracing_subscriber::fmt()
                .json()
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .with_ansi(ansi)
                .with_filter_reloading();
            let handle = builder.reload_handle();
            builder.init();
            Box::new(move |filter| handle.reload(filter).map_err(|e| e.to_string()))
        }
    };
    Ok(LogLevel {
        swap: reloadable.then_some(swap),
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
        self.swap.is_some()
    }

    /// Filters by `filter` from now on.
    pub fn apply(&self, filter: EnvFilter) -> Result<(), String> {
        match &self.swap {
            Some(swap) => swap(filter),
            None => Ok(()),
        }
    }
}
