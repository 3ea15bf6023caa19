//! Structured logging with tracing: text or JSON lines on stderr, appended to
//! `logfile` and sent to the local syslog when configured (PgBouncer's `logfile`,
//! `syslog`, `syslog_ident`, `syslog_facility`). The level comes from RUST_LOG or the
//! configuration.
//!
//! [`init`] installs the subscriber and returns a [`LogControl`], through which the
//! running process changes the level (RELOAD, SET log_level), reopens the log file
//! (SIGHUP and RELOAD, so that logrotate can rename it and have new lines go to a new
//! file at the same path) and switches the file or syslog on reload.
//!
//! This module owns where log lines go; which lines are written (`log_connections`,
//! `log_stats`...) is decided where they are logged.

use std::path::PathBuf;
use std::sync::Arc;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter, Layer};

use crate::config::{General, LogFormat};

mod sinks;
mod syslog;

use sinks::{MainWriter, Sinks, SyslogWriter};
pub use syslog::{datagram, severity, SyslogTarget, DEFAULT_SYSLOG_SOCKET};

type Setter = Box<dyn Fn(EnvFilter) -> Result<(), String> + Send + Sync>;

/// Where log lines go besides stderr: what the configuration asks for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Outputs {
    /// The file lines are appended to (`logfile`).
    pub logfile: Option<PathBuf>,
    /// The syslog socket, ident and facility (`syslog = 1`).
    pub syslog: Option<SyslogTarget>,
}

impl Outputs {
    /// The outputs `[general]` settings ask for.
    pub fn of(g: &General) -> Outputs {
        Outputs {
            logfile: g.logfile.clone(),
            syslog: g.syslog.then(|| SyslogTarget {
                socket: PathBuf::from(DEFAULT_SYSLOG_SOCKET),
                ident: g.syslog_ident.clone(),
                facility: g.syslog_facility,
            }),
        }
    }
}

/// Changes the level and the outputs of the installed subscriber.
pub struct LogControl {
    set: Setter,
    /// `RUST_LOG` was set at start: it keeps winning over the configuration.
    env_override: bool,
    sinks: Arc<Sinks>,
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

    /// Closes the log file and opens it again at its path (appending, creating it if
    /// it is gone). On failure the old file stays in use.
    pub fn reopen(&self) -> Result<(), String> {
        self.sinks.reopen_file()
    }

    /// Switches to new outputs: the log file is (re)opened at the new path, syslog
    /// switched on, off or over. On failure to open the file the old one stays.
    pub fn set_outputs(&self, outputs: &Outputs) -> Result<(), String> {
        self.sinks.set_syslog(outputs.syslog.clone());
        self.sinks.set_file(outputs.logfile.as_deref())
    }

    /// The outputs in use.
    pub fn outputs(&self) -> Outputs {
        self.sinks.outputs()
    }
}

/// Installs the global subscriber. `RUST_LOG` wins over `level` when set. Lines go to
/// stderr when `stderr` is true (not in the background process of `-d`), and to
/// `outputs`. Errors: an invalid level directive, a log file that cannot be opened.
pub fn init(
    format: LogFormat,
    level: &str,
    stderr: bool,
    outputs: &Outputs,
) -> Result<LogControl, String> {
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
    let sinks = Arc::new(Sinks::new(stderr));
    sinks.set_file(outputs.logfile.as_deref())?;
    sinks.set_syslog(outputs.syslog.clone());
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    let main = MainWriter(sinks.clone());
    let registry = tracing_subscriber::registry().with(filter);
    let installed = match format {
        LogFormat::Text => registry
            .with(
                fmt::layer()
                    .with_ansi(false)
                    .with_target(false)
                    .with_writer(main),
            )
            .with(syslog_layer(&sinks))
            .try_init(),
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_target(false)
                    .with_writer(main),
            )
            .with(syslog_layer(&sinks))
            .try_init(),
    };
    installed.map_err(|e| e.to_string())?;
    let set: Setter = Box::new(move |f| handle.reload(f).map_err(|e| e.to_string()));
    Ok(LogControl {
        set,
        env_override,
        sinks,
    })
}

/// The syslog copy of each line: text without the time (the syslog daemon stamps
/// it), and only while syslog is on (one atomic load per line otherwise).
fn syslog_layer<S>(sinks: &Arc<Sinks>) -> impl Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let on = sinks.clone();
    fmt::layer()
        .without_time()
        .with_ansi(false)
        .with_target(false)
        .with_writer(SyslogWriter(sinks.clone()))
        .with_filter(tracing_subscriber::filter::filter_fn(move |_| {
            on.syslog_enabled()
        }))
}
