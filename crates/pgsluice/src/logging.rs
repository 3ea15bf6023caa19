//! Structured logging with tracing: text or JSON lines on stderr, level from RUST_LOG
//! or the configuration. The level can be changed at run time (RELOAD, SET log_level)
//! through the [`LogControl`] that [`init`] returns.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

type Setter = Box<dyn Fn(EnvFilter) -> Result<(), String> + Send + Sync>;

/// Changes the log level of the installed subscriber.
pub struct LogControl {
    set: Setter,
    /// `RUST_LOG` was set at start: it keeps winning over the configuration.
    env_override: bool,
}

impl std::fmt::Debug for LogControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogControl")
            .field("env_override", &self.env_override)
            .finish_non_exhaustive()
    }
}

impl LogControl {
    /// Applies a new level directive (as in `log_level`). Does nothing, successfully,
    /// when `RUST_LOG` decided the level at start.
    pub fn set_level(&self, level: &str) -> Result<(), String> {
        if self.env_override {
            return Ok(());
        }
        let filter = EnvFilter::try_new(level).map_err(|e| format!("log_level: {e}"))?;
        (self.set)(filter)
    }
}

/// Installs the global subscriber. `RUST_LOG` wins over `level` when set.
/// Returns an error string when the level directive is invalid.
pub fn init(format: LogFormat, level: &str) -> Result<LogControl, String> {
    let (filter, env_override) = match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => (
            EnvFilter::try_new(v).map_err(|e| format!("RUST_LOG: {e}"))?,
            true,
        ),
        _ => (
            EnvFilter::try_new(level).map_err(|e| format!("log_level: {e}"))?,
            false,
        ),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let set: Setter = match format {
        LogFormat::Text => {
            let b = builder.with_ansi(false).with_filter_reloading();
            let handle = b.reload_handle();
            b.try_init().map_err(|e| e.to_string())?;
            Box::new(move |f| handle.reload(f).map_err(|e| e.to_string()))
        }
        LogFormat::Json => {
            let b = builder.json().flatten_event(true).with_filter_reloading();
            let handle = b.reload_handle();
            b.try_init().map_err(|e| e.to_string())?;
            Box::new(move |f| handle.reload(f).map_err(|e| e.to_string()))
        }
    };
    Ok(LogControl { set, env_override })
}
