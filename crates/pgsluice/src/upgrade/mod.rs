//! The zero-downtime binary upgrade's channel (`pgsluice --upgrade CONFIG`): what the
//! old and the new process say to each other over the control socket, and how file
//! descriptors travel on it. No knowledge of the rest of the process: `app::upgrade`
//! drives both ends (listeners handed over, clients moved with `client::handover`).
//!
//! * [`frame`]: the messages and their framing, sans-IO, unit-tested on bad input.
//! * [`fdpass`]: SCM_RIGHTS over a Unix stream socket (`rustix`, no `unsafe`).
//! * [`channel`]: the two together over a tokio `UnixStream`.
//!
//! Where the control socket is ([`control_path`]): next to the client Unix socket,
//! `<unix_socket_dir>/.s.PGSQL.<port>.upgrade`; without a `unix_socket_dir`, next to
//! the pidfile, `<pidfile>.upgrade`; with neither, there is none and `--upgrade`
//! cannot find the running process. Its mode is 0600: only the user pgsluice runs as
//! (and root) may take the listeners over.

pub mod channel;
pub mod fdpass;
pub mod frame;

use std::path::PathBuf;

pub use channel::{Channel, ChannelError};
pub use frame::{ListenerKind, Message, PROTOCOL_VERSION};

use crate::config::General;

/// The control socket of a process with this configuration (see the module header).
pub fn control_path(g: &General) -> Option<PathBuf> {
    if let Some(dir) = g.unix_socket_dir.as_deref().filter(|d| !d.is_empty()) {
        let port = g.listen.first().map_or(6432, |a| a.port());
        return Some(std::path::Path::new(dir).join(format!(".s.PGSQL.{port}.upgrade")));
    }
    let pidfile = g.pidfile.as_ref()?;
    let mut name = pidfile.clone().into_os_string();
    name.push(".upgrade");
    Some(PathBuf::from(name))
}

/// Binds the control socket at `path` with mode 0600, replacing whatever is there in
/// one step: bound under a temporary name, then renamed over `path` (a process being
/// upgraded keeps its old, now nameless, socket until it exits).
pub fn bind_control(path: &std::path::Path) -> std::io::Result<ControlSocket> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let listener = tokio::net::UnixListener::bind(&tmp)?;
    let placed = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
        .and_then(|()| std::fs::metadata(&tmp))
        .and_then(|m| std::fs::rename(&tmp, path).map(|()| m.ino()));
    match placed {
        Ok(inode) => Ok(ControlSocket {
            listener,
            path: path.to_owned(),
            inode,
        }),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// A bound control socket.
#[derive(Debug)]
pub struct ControlSocket {
    /// The listener.
    pub listener: tokio::net::UnixListener,
    path: PathBuf,
    inode: u64,
}

impl ControlSocket {
    /// Removes the socket file, unless another process has put its own there since.
    pub fn remove_file(&self) {
        use std::os::unix::fs::MetadataExt;
        let ours = std::fs::metadata(&self.path).is_ok_and(|m| m.ino() == self.inode);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_control_socket_goes_next_to_the_unix_socket_else_the_pidfile() {
        let mut g = General {
            listen: vec!["127.0.0.1:7432".parse().unwrap()],
            ..General::default()
        };
        assert_eq!(control_path(&g), None);
        g.pidfile = Some("/run/pgsluice/pgsluice.pid".into());
        assert_eq!(
            control_path(&g),
            Some("/run/pgsluice/pgsluice.pid.upgrade".into())
        );
        g.unix_socket_dir = Some(String::new());
        assert_eq!(
            control_path(&g),
            Some("/run/pgsluice/pgsluice.pid.upgrade".into())
        );
        g.unix_socket_dir = Some("/var/run/pg".into());
        assert_eq!(
            control_path(&g),
            Some("/var/run/pg/.s.PGSQL.7432.upgrade".into())
        );
    }

    #[tokio::test]
    async fn the_control_socket_is_private_and_replaced_in_one_step() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("pgsluice-control-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ctl");
        let first = bind_control(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let second = bind_control(&path).unwrap();
        let _c = tokio::net::UnixStream::connect(&path).await.unwrap();
        let (_s, _) = second.listener.accept().await.unwrap();
        // The first one's exit leaves the second one's file alone.
        first.remove_file();
        assert!(path.exists());
        second.remove_file();
        assert!(!path.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
