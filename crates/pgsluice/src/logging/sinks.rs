//! The destinations of log lines (stderr, the log file, syslog) and the writers the
//! tracing formatters write each line through.
//!
//! The formatter hands a whole line to one `write` call; the writers pass it on at
//! once (no buffering, so nothing is lost at exit). The file is opened in append mode,
//! so lines from before and after a reopen never overwrite each other.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

use super::syslog::{Syslog, SyslogTarget};
use super::Outputs;
use crate::sync::LockExt;

/// The open log file and the path it was opened at.
#[derive(Debug)]
struct LogFile {
    path: PathBuf,
    file: File,
}

/// Where log lines go.
#[derive(Debug)]
pub(super) struct Sinks {
    stderr: bool,
    file: Mutex<Option<LogFile>>,
    syslog: Mutex<Option<Syslog>>,
    syslog_on: AtomicBool,
}

fn open_append(path: &Path) -> Result<File, String> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("cannot open logfile {}: {e}", path.display()))
}

impl Sinks {
    pub(super) fn new(stderr: bool) -> Sinks {
        Sinks {
            stderr,
            file: Mutex::new(None),
            syslog: Mutex::new(None),
            syslog_on: AtomicBool::new(false),
        }
    }

    /// Opens `path` (appending) and makes it the log file; `None` closes it. The file
    /// is opened before the lock is taken, so lines are not held up by the open.
    pub(super) fn set_file(&self, path: Option<&Path>) -> Result<(), String> {
        let new = match path {
            Some(p) => Some(LogFile {
                path: p.to_owned(),
                file: open_append(p)?,
            }),
            None => None,
        };
        *self.file.locked() = new;
        Ok(())
    }

    /// Opens the log file again at its path (after logrotate renamed it).
    pub(super) fn reopen_file(&self) -> Result<(), String> {
        let path = self.file.locked().as_ref().map(|f| f.path.clone());
        match path {
            Some(p) => self.set_file(Some(&p)),
            None => Ok(()),
        }
    }

    /// Switches syslog on (to `target`) or off. The same target keeps its socket.
    pub(super) fn set_syslog(&self, target: Option<SyslogTarget>) {
        let mut s = self.syslog.locked();
        if s.as_ref().map(Syslog::target) != target.as_ref() {
            *s = target.map(Syslog::new);
        }
        self.syslog_on.store(s.is_some(), Ordering::Relaxed);
    }

    pub(super) fn syslog_enabled(&self) -> bool {
        self.syslog_on.load(Ordering::Relaxed)
    }

    pub(super) fn outputs(&self) -> Outputs {
        Outputs {
            logfile: self.file.locked().as_ref().map(|f| f.path.clone()),
            syslog: self.syslog.locked().as_ref().map(|s| s.target().clone()),
        }
    }

    /// A formatted line for stderr and the file. Write errors are dropped: there is
    /// nowhere left to report them.
    fn write_main(&self, line: &[u8]) {
        if self.stderr {
            let _ = io::stderr().write_all(line);
        }
        if let Some(f) = self.file.locked().as_mut() {
            let _ = f.file.write_all(line);
        }
    }

    fn write_syslog(&self, level: Level, line: &[u8]) {
        if let Some(s) = self.syslog.locked().as_mut() {
            s.send(level, line);
        }
    }
}

/// Makes the writer of the main formatter (stderr and the file).
#[derive(Debug, Clone)]
pub(super) struct MainWriter(pub(super) Arc<Sinks>);

/// Makes the writer of the syslog formatter; it knows each line's level.
#[derive(Debug, Clone)]
pub(super) struct SyslogWriter(pub(super) Arc<Sinks>);

/// One line on its way to the sinks.
#[derive(Debug)]
pub(super) struct LineWriter<'a> {
    sinks: &'a Sinks,
    /// `None`: the main outputs; `Some`: syslog with this level.
    syslog: Option<Level>,
}

impl Write for LineWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.syslog {
            None => self.sinks.write_main(buf),
            Some(level) => self.sinks.write_syslog(level, buf),
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for MainWriter {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> LineWriter<'a> {
        LineWriter {
            sinks: &self.0,
            syslog: None,
        }
    }
}

impl<'a> MakeWriter<'a> for SyslogWriter {
    type Writer = LineWriter<'a>;

    /// Not used by the formatter, which asks with each event's metadata.
    fn make_writer(&'a self) -> LineWriter<'a> {
        LineWriter {
            sinks: &self.0,
            syslog: Some(Level::INFO),
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> LineWriter<'a> {
        LineWriter {
            sinks: &self.0,
            syslog: Some(*meta.level()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("pgsluice-sinks-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn the_file_is_appended_and_reopened_at_its_path() {
        let dir = temp_dir("reopen");
        let path = dir.join("p.log");
        std::fs::write(&path, "old\n").unwrap();
        let sinks = Sinks::new(false);
        sinks.set_file(Some(&path)).unwrap();
        let w = MainWriter(Arc::new(sinks));
        w.make_writer().write_all(b"one\n").unwrap();
        std::fs::rename(&path, dir.join("p.log.1")).unwrap();
        w.make_writer().write_all(b"two\n").unwrap();
        w.0.reopen_file().unwrap();
        w.make_writer().write_all(b"three\n").unwrap();
        let rotated = std::fs::read_to_string(dir.join("p.log.1")).unwrap();
        assert_eq!(rotated, "old\none\ntwo\n");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "three\n");
        assert_eq!(w.0.outputs().logfile.as_deref(), Some(path.as_path()));
        let bad = dir.join("no/such/dir.log");
        assert!(w
            .0
            .set_file(Some(&bad))
            .unwrap_err()
            .contains("cannot open logfile"));
        // The old file stays in use.
        w.make_writer().write_all(b"four\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "three\nfour\n");
        let _ = std::fs::remove_dir_all(dir);
    }
}
