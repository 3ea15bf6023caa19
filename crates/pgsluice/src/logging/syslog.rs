//! Log lines to the local syslog daemon: one datagram per line on its Unix socket
//! (`/dev/log`), in the form glibc's `syslog(3)` uses locally,
//! `<PRI>ident[pid]: message`.
//!
//! Why not `openlog`/`syslog` from libc, or a crate: libc's keeps process-wide state
//! (one ident, one connection) behind `unsafe` calls, which a reload that changes the
//! ident or facility would have to reset; the `syslog` crate would be a dependency for
//! about forty lines. A [`std::os::unix::net::UnixDatagram`] is safe, needs nothing
//! new, and takes any socket path, so tests bind their own.
//!
//! The datagram carries no timestamp: journald and rsyslog stamp local messages when
//! they receive them (rsyslog's imuxsock ignores a sent timestamp by default), and a
//! timestamp in local time would need the time zone database. The socket is
//! non-blocking: when the daemon is slow or gone, lines are dropped rather than
//! holding up the pooler (glibc would block). A daemon that restarted is reconnected
//! to on the next line.

use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;

use tracing::Level;

use crate::config::SyslogFacility;

/// The local syslog socket.
pub const DEFAULT_SYSLOG_SOCKET: &str = "/dev/log";

/// Longest message sent; longer lines are cut (at a character boundary).
const MAX_MESSAGE: usize = 8 * 1024;

/// Where and how lines go to syslog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyslogTarget {
    /// The daemon's datagram socket, normally [`DEFAULT_SYSLOG_SOCKET`].
    pub socket: PathBuf,
    /// The program name (`syslog_ident`).
    pub ident: String,
    /// The facility (`syslog_facility`).
    pub facility: SyslogFacility,
}

/// The syslog severity of a tracing level (RFC 5424): error 3, warning 4,
/// informational 6, debug 7 (PgBouncer's LOG lines are informational too).
pub fn severity(level: Level) -> u8 {
    if level == Level::ERROR {
        3
    } else if level == Level::WARN {
        4
    } else if level == Level::INFO {
        6
    } else {
        7
    }
}

/// The datagram for one formatted line: `<PRI>ident[pid]: message`, the line's
/// surrounding whitespace (the formatter's padding and newline) trimmed.
pub fn datagram(t: &SyslogTarget, pid: u32, level: Level, line: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(line);
    let mut msg = text.trim();
    if msg.len() > MAX_MESSAGE {
        let mut end = MAX_MESSAGE;
        while !msg.is_char_boundary(end) {
            end -= 1;
        }
        msg = &msg[..end];
    }
    let pri = u16::from(t.facility.code()) * 8 + u16::from(severity(level));
    format!("<{pri}>{}[{pid}]: {msg}", t.ident).into_bytes()
}

/// A connection to the syslog socket, made when the first line is sent.
#[derive(Debug)]
pub(super) struct Syslog {
    target: SyslogTarget,
    socket: Option<UnixDatagram>,
    pid: u32,
}

impl Syslog {
    pub(super) fn new(target: SyslogTarget) -> Syslog {
        Syslog {
            target,
            socket: None,
            pid: std::process::id(),
        }
    }

    pub(super) fn target(&self) -> &SyslogTarget {
        &self.target
    }

    fn connect(&self) -> io::Result<UnixDatagram> {
        let s = UnixDatagram::unbound()?;
        s.connect(&self.target.socket)?;
        s.set_nonblocking(true)?;
        Ok(s)
    }

    /// Sends one line; drops it when there is no daemon or it is backed up.
    pub(super) fn send(&mut self, level: Level, line: &[u8]) {
        let d = datagram(&self.target, self.pid, level, line);
        for _ in 0..2 {
            if self.socket.is_none() {
                self.socket = self.connect().ok();
            }
            let Some(s) = &self.socket else { return };
            match s.send(&d) {
                Ok(_) => return,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                // The daemon restarted (its socket is a new one): connect again once.
                Err(_) => self.socket = None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(socket: PathBuf, facility: &str) -> SyslogTarget {
        SyslogTarget {
            socket,
            ident: "pgbouncer".into(),
            facility: facility.parse().unwrap(),
        }
    }

    #[test]
    fn datagram_carries_priority_ident_and_pid() {
        let t = target(PathBuf::from("/nowhere"), "daemon");
        let d = datagram(&t, 42, Level::INFO, b" INFO client login client=1\n");
        assert_eq!(d, b"<30>pgbouncer[42]: INFO client login client=1");
        let t = target(PathBuf::from("/nowhere"), "local7");
        assert_eq!(&datagram(&t, 1, Level::ERROR, b"x")[..5], b"<187>");
        assert_eq!(&datagram(&t, 1, Level::WARN, b"x")[..5], b"<188>");
        assert_eq!(&datagram(&t, 1, Level::TRACE, b"x")[..5], b"<191>");
        let long = "é".repeat(MAX_MESSAGE);
        let d = datagram(&t, 1, Level::INFO, long.as_bytes());
        assert!(String::from_utf8(d).is_ok());
    }

    #[test]
    fn lines_reach_a_socket_and_survive_its_restart() {
        let dir = std::env::temp_dir().join(format!("pgsluice-syslog-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("log");
        let mut s = Syslog::new(target(path.clone(), "user"));
        // No daemon yet: the line is dropped, quietly.
        s.send(Level::INFO, b"lost\n");
        let daemon = UnixDatagram::bind(&path).unwrap();
        s.send(Level::WARN, b"first\n");
        let mut buf = [0u8; 256];
        let n = daemon.recv(&mut buf).unwrap();
        let pid = std::process::id();
        assert_eq!(
            std::str::from_utf8(&buf[..n]).unwrap(),
            format!("<12>pgbouncer[{pid}]: first")
        );
        // The daemon restarts on a new socket at the same path.
        drop(daemon);
        std::fs::remove_file(&path).unwrap();
        let daemon = UnixDatagram::bind(&path).unwrap();
        s.send(Level::INFO, b"second\n");
        let n = daemon.recv(&mut buf).unwrap();
        assert!(std::str::from_utf8(&buf[..n])
            .unwrap()
            .ends_with(": second"));
        let _ = std::fs::remove_dir_all(dir);
    }
}
