//! PgBouncer's peering (`peer_id` and the `[peers]` section): several pgsluice
//! processes behind one address (`so_reuseport`, or a load balancer) each know the
//! others, so that a cancel request reaching the wrong process is forwarded to the one
//! that issued its key. Each process puts its own `peer_id` into the cancel keys it
//! issues (see [`crate::cancel`]).

use serde::Deserialize;

use super::check::{path, Issue};
use super::Config;

/// The largest `peer_id` (PgBouncer's limit: the id takes two bytes of the key).
pub const MAX_PEER_ID: u16 = 16383;

/// One other process: a `[peers.<peer_id>]` table (`[peers]` line of a pgbouncer.ini).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// Where the peer listens: a host name or IP address, or an absolute unix socket
    /// directory (the socket is `<dir>/.s.PGSQL.<port>`).
    pub host: String,
    /// The peer's port; default 6432.
    #[serde(default = "default_peer_port")]
    pub port: u16,
    /// Cancel requests forwarded to this peer at once; default
    /// `general.default_pool_size`.
    pub pool_size: Option<usize>,
}

fn default_peer_port() -> u16 {
    6432
}

impl Config {
    /// The peer with id `id`, if configured.
    pub fn peer(&self, id: u16) -> Option<&PeerConfig> {
        self.peers
            .iter()
            .find(|(k, _)| k.trim().parse::<u16>().ok() == Some(id))
            .map(|(_, p)| p)
    }

    /// Forwarded cancel requests to peer `id` at once.
    pub fn peer_pool_size(&self, id: u16) -> usize {
        self.peer(id)
            .and_then(|p| p.pool_size)
            .unwrap_or(self.general.default_pool_size)
            .max(1)
    }

    /// The checks of `peer_id` and `[peers]`.
    pub(super) fn check_peers(&self) -> Result<(), Issue> {
        let issue = |keys: Vec<Vec<String>>, message: String| Issue { keys, message };
        if self.general.peer_id > MAX_PEER_ID {
            return Err(issue(
                vec![path(&["general", "peer_id"])],
                format!("must be between 0 and {MAX_PEER_ID}"),
            ));
        }
        for (name, peer) in &self.peers {
            let id = name.trim().parse::<u16>().ok();
            if !id.is_some_and(|id| (1..=MAX_PEER_ID).contains(&id)) {
                return Err(issue(
                    vec![path(&["peers", name])],
                    format!("a peer is named by its peer_id, a number from 1 to {MAX_PEER_ID}"),
                ));
            }
            if peer.host.trim().is_empty() {
                return Err(issue(
                    vec![path(&["peers", name, "host"]), path(&["peers", name])],
                    "a peer needs a host".to_owned(),
                ));
            }
            if peer.port == 0 {
                return Err(issue(
                    vec![path(&["peers", name, "port"]), path(&["peers", name])],
                    "must be between 1 and 65535".to_owned(),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::parse_str;

    #[test]
    fn peers_and_their_checks() {
        let base = "[databases.a]\nhost = \"h\"\n[general]\npeer_id = 1\n";
        let c = parse_str(
            &format!("{base}[peers.2]\nhost = \"/tmp/p2\"\nport = 6433\n[peers.3]\nhost = \"10.0.0.3\"\npool_size = 2\n"),
            "t.toml",
            Vec::new(),
        )
        .unwrap();
        assert_eq!(c.general.peer_id, 1);
        let p2 = c.peer(2).unwrap();
        assert_eq!((p2.host.as_str(), p2.port), ("/tmp/p2", 6433));
        assert_eq!(c.peer(3).unwrap().port, 6432);
        assert_eq!(c.peer_pool_size(3), 2);
        assert_eq!(c.peer_pool_size(2), c.general.default_pool_size);
        assert!(c.peer(4).is_none());
        for (text, key) in [
            ("[general]\npeer_id = 16384\n", "general.peer_id"),
            ("[peers.x]\nhost = \"h\"\n", "peers.x"),
            ("[peers.0]\nhost = \"h\"\n", "peers.0"),
            ("[peers.5]\nhost = \"\"\n", "peers.5.host"),
        ] {
            let e = parse_str(
                &format!("[databases.a]\nhost = \"h\"\n{text}"),
                "t.toml",
                Vec::new(),
            )
            .unwrap_err()
            .to_string();
            assert!(e.contains(key), "{text}: {e}");
        }
    }
}
