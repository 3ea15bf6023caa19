//! systemd's readiness protocol (`sd_notify`), for a `Type=notify` unit.
//!
//! systemd puts the path of a datagram socket in `NOTIFY_SOCKET`; the service sends
//! newline-separated `KEY=VALUE` states to it. pgsluice sends `READY=1` once it
//! listens, `RELOADING=1` and then `READY=1` around a SIGHUP reload, and
//! `STOPPING=1` when it starts shutting down. Without `NOTIFY_SOCKET` (not under
//! systemd, or `Type=simple`) every call does nothing. A path starting with `@` is
//! a Linux abstract socket name. Sending never blocks the pooler for long (a
//! datagram to a local socket) and a failure is logged, never fatal.

use std::ffi::OsStr;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::PathBuf;

/// Where the notifications go.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    /// A socket file.
    Path(PathBuf),
    /// A Linux abstract socket (`@name` in `NOTIFY_SOCKET`), without the `@`.
    Abstract(Vec<u8>),
}

/// Sends service states to systemd; a no-op when not started by systemd.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Notifier {
    target: Option<Target>,
}

impl Notifier {
    /// The notifier for this process's `NOTIFY_SOCKET`.
    pub fn from_env() -> Notifier {
        Notifier::new(std::env::var_os("NOTIFY_SOCKET").as_deref())
    }

    /// The notifier for a `NOTIFY_SOCKET` value: an absolute path or `@name`.
    /// Anything else (unset, empty, relative, systemd's `vsock:` form) disables it.
    pub fn new(socket: Option<&OsStr>) -> Notifier {
        let bytes = socket.map(OsStr::as_bytes).unwrap_or_default();
        let target = match bytes.first() {
            Some(b'/') => Some(Target::Path(PathBuf::from(OsStr::from_bytes(bytes)))),
            Some(b'@') if bytes.len() > 1 => Some(Target::Abstract(bytes[1..].to_vec())),
            _ => None,
        };
        Notifier { target }
    }

    /// True when notifications are sent somewhere.
    pub fn is_enabled(&self) -> bool {
        self.target.is_some()
    }

    /// Sends `state` (e.g. `READY=1\nSTATUS=...`). `Ok(false)`: disabled, nothing sent.
    pub fn send(&self, state: &str) -> io::Result<bool> {
        let Some(target) = &self.target else {
            return Ok(false);
        };
        let addr = match target {
            Target::Path(p) => SocketAddr::from_pathname(p)?,
            Target::Abstract(name) => SocketAddr::from_abstract_name(name)?,
        };
        let sock = UnixDatagram::unbound()?;
        let sent = sock.send_to_addr(state.as_bytes(), &addr)?;
        if sent != state.len() {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "short datagram"));
        }
        Ok(true)
    }

    /// Sends `state`, logging (not returning) a failure.
    fn send_logged(&self, state: &str) {
        match self.send(state) {
            Ok(true) => tracing::debug!(state, "sd_notify sent"),
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, state, "sd_notify: cannot notify systemd"),
        }
    }

    /// The pooler is listening: `READY=1`.
    pub fn ready(&self) {
        self.send_logged("READY=1\nSTATUS=accepting connections");
    }

    /// A reload begins: `RELOADING=1` (follow with [`Notifier::ready`]).
    pub fn reloading(&self) {
        self.send_logged("RELOADING=1\nSTATUS=reloading the configuration");
    }

    /// Shutdown begins: `STOPPING=1`.
    pub fn stopping(&self) {
        self.send_logged("STOPPING=1\nSTATUS=shutting down");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn receive(sock: &UnixDatagram) -> String {
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 256];
        let n = sock.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn sends_states_to_a_socket_file() {
        let dir = std::env::temp_dir().join(format!("pgsluice-sdnotify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let sock = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::new(Some(path.as_os_str()));
        assert!(n.is_enabled());
        n.ready();
        assert_eq!(receive(&sock), "READY=1\nSTATUS=accepting connections");
        n.reloading();
        assert!(receive(&sock).starts_with("RELOADING=1\n"));
        n.stopping();
        assert!(receive(&sock).starts_with("STOPPING=1\n"));
        assert!(n.send("WATCHDOG=1").unwrap());
        assert_eq!(receive(&sock), "WATCHDOG=1");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn sends_to_an_abstract_socket() {
        let name = format!("pgsluice-sdnotify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let sock = UnixDatagram::bind_addr(&addr).unwrap();
        let n = Notifier::new(Some(OsStr::new(&format!("@{name}"))));
        assert!(n.send("READY=1").unwrap());
        assert_eq!(receive(&sock), "READY=1");
    }

    #[test]
    fn without_a_usable_socket_nothing_is_sent() {
        for v in [
            None,
            Some(""),
            Some("@"),
            Some("relative.sock"),
            Some("vsock:2:1"),
        ] {
            let n = Notifier::new(v.map(OsStr::new));
            assert!(!n.is_enabled(), "{v:?}");
            assert!(!n.send("READY=1").unwrap(), "{v:?}");
            n.ready();
        }
    }

    #[test]
    fn a_missing_socket_is_an_error_not_a_panic() {
        let n = Notifier::new(Some(OsStr::new("/nonexistent/pgsluice/notify.sock")));
        assert!(n.send("READY=1").is_err());
        n.stopping();
    }
}
