//! What a caller chooses about a cluster: the host auth method written into
//! pg_hba.conf, `max_connections` and extra settings, and how to stop it.

use std::time::Duration;

/// pg_hba method for TCP connections from 127.0.0.1 (and ::1).
/// Unix-socket connections are always `trust`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HostAuth {
    /// `trust`: no password asked.
    Trust,
    /// `password`: cleartext password.
    Password,
    /// `md5`; users made by [`PgCluster::create_user`](super::PgCluster::create_user) get md5-hashed passwords.
    Md5,
    /// `scram-sha-256`.
    Scram,
}

impl HostAuth {
    /// The pg_hba.conf method name.
    pub fn hba_method(self) -> &'static str {
        match self {
            HostAuth::Trust => "trust",
            HostAuth::Password => "password",
            HostAuth::Md5 => "md5",
            HostAuth::Scram => "scram-sha-256",
        }
    }

    /// The `password_encryption` the cluster uses (md5 for [`HostAuth::Md5`],
    /// scram-sha-256 otherwise).
    pub fn password_encryption(self) -> &'static str {
        match self {
            HostAuth::Md5 => "md5",
            _ => "scram-sha-256",
        }
    }

    /// All variants, for tests that loop over them.
    pub const ALL: [HostAuth; 4] = [
        HostAuth::Trust,
        HostAuth::Password,
        HostAuth::Md5,
        HostAuth::Scram,
    ];
}

/// Options for [`PgCluster::start_with`](super::PgCluster::start_with).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterOptions {
    /// pg_hba method for host (TCP) connections.
    pub host_auth: HostAuth,
    /// `max_connections` (must be larger than `superuser_reserved_connections`, 3).
    pub max_connections: u32,
    /// Extra postgresql.conf settings, written after the testkit's own (so they
    /// win). Values are quoted for you unless they already start with `'`.
    pub settings: Vec<(String, String)>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            host_auth: HostAuth::Scram,
            max_connections: 100,
            settings: Vec::new(),
        }
    }
}

impl ClusterOptions {
    /// Default options with the given host auth method.
    pub fn with_auth(host_auth: HostAuth) -> Self {
        ClusterOptions {
            host_auth,
            ..ClusterOptions::default()
        }
    }

    /// Adds one postgresql.conf setting (builder style).
    pub fn setting(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings.push((name.into(), value.into()));
        self
    }
}

/// How to stop the server (the `pg_ctl stop -m` modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StopMode {
    /// SIGTERM: wait for clients to disconnect (bounded by a 60 s deadline).
    Smart,
    /// SIGINT: roll back and disconnect clients, then shut down cleanly.
    Fast,
    /// SIGQUIT: abort everything; crash recovery on the next start.
    Immediate,
}

impl StopMode {
    /// The signal `pg_ctl stop -m <mode>` sends to the postmaster.
    pub(super) fn signal(self) -> i32 {
        match self {
            StopMode::Smart => libc::SIGTERM,
            StopMode::Fast => libc::SIGINT,
            StopMode::Immediate => libc::SIGQUIT,
        }
    }

    /// How long to wait for the postmaster to exit before escalating.
    pub(super) fn deadline(self) -> Duration {
        match self {
            StopMode::Smart => Duration::from_secs(60),
            StopMode::Fast => Duration::from_secs(30),
            StopMode::Immediate => Duration::from_secs(15),
        }
    }
}
