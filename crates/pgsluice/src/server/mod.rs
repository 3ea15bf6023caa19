//! Server connections: connect, log in to PostgreSQL, run pgsluice's own small queries.
//!
//! A [`ServerConn`] owns its socket and the two relay buffers used while a client holds
//! it, so that idle clients cost no buffer memory. It knows nothing of pools or clients.

mod login;

use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use pgsluice_protocol::backend::{self, tag};
use pgsluice_protocol::frame::{split_message, Message};
use pgsluice_protocol::frontend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::error::ServerError;
use crate::net::Stream;
use crate::params::ParamSet;
use crate::sync::LockExt;

pub use login::{connect, send_cancel, send_cancel_within};

/// Size of each relay buffer (client to server, server to client).
pub const RELAY_BUF: usize = 16 * 1024;
/// Largest message accepted from PostgreSQL during login and pgsluice's own queries.
const MAX_CONTROL_MESSAGE: u32 = 1 << 20;

/// Where and as whom to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTarget {
    /// Host name, IP address, or an absolute Unix socket directory.
    pub host: String,
    /// Port (also names the Unix socket file).
    pub port: u16,
    /// Database name on the server.
    pub database: String,
    /// User name on the server.
    pub user: String,
    /// Password, or an md5 hash of it, if the server asks for one.
    pub password: Option<String>,
    /// application_name sent at startup, if any.
    pub application_name: Option<String>,
    /// TLS toward this server (`server_tls_*`); `None` = plain TCP.
    pub tls: Option<Arc<crate::tls::ServerTls>>,
    /// A credential taken over from a client's login, used when `password` cannot
    /// answer what the server asks (see [`PassThrough`]).
    pub passthrough: Option<Arc<PassThrough>>,
    /// SCRAM keys derived from `password` by an earlier login to this target.
    pub scram_keys: ScramKeyCache,
}

/// The SCRAM keys the configured password yielded at the last login, so that the
/// next connections of a pool skip the PBKDF2 rounds (several milliseconds of CPU
/// each) while the server's verifier stays the same. Shared by the clones of one
/// target; not part of its identity (comparisons ignore it).
#[derive(Clone, Default)]
pub struct ScramKeyCache(
    Arc<std::sync::Mutex<Option<pgsluice_protocol::auth::scram::DerivedKeys>>>,
);

impl ScramKeyCache {
    /// The keys kept, if any.
    pub fn get(&self) -> Option<pgsluice_protocol::auth::scram::DerivedKeys> {
        self.0.locked().clone()
    }

    /// Keeps `keys` (after the server accepted a login made with them).
    pub fn set(&self, keys: pgsluice_protocol::auth::scram::DerivedKeys) {
        *self.0.locked() = Some(keys);
    }
}

impl PartialEq for ScramKeyCache {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for ScramKeyCache {}

impl std::fmt::Debug for ScramKeyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScramKeyCache")
    }
}

/// A credential for the server learnt from a client's successful login, for users
/// whose stored secret is not a plaintext password (auth_query, or an md5 hash /
/// SCRAM verifier in the auth file), as PgBouncer passes them through.
#[derive(Clone, PartialEq, Eq)]
pub enum PassThrough {
    /// The ClientKey recovered from the client's SCRAM proof, and the verifier it
    /// matched: answers the server's SCRAM exchange when the server holds that verifier.
    Scram {
        /// ClientKey (H(ClientKey) = StoredKey of `secret`).
        client_key: [u8; 32],
        /// The verifier the client was checked against.
        secret: pgsluice_protocol::auth::scram::ScramSecret,
    },
    /// The stored md5 hash ("md5..."): answers the server's md5 challenge.
    Md5(String),
}

impl std::fmt::Debug for PassThrough {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PassThrough::Scram { .. } => "PassThrough::Scram(<redacted>)",
            PassThrough::Md5(_) => "PassThrough::Md5(<redacted>)",
        })
    }
}

impl ServerTarget {
    /// host:port (or socket path) for messages and cancel requests.
    pub fn display_addr(&self) -> String {
        if self.host.starts_with('/') {
            format!("{}/.s.PGSQL.{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// A unique id for a server connection, for logs and admin views.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServerId(pub u64);

impl std::fmt::Display for ServerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "S{}", self.0)
    }
}

/// The key PostgreSQL gave this backend, used to forward cancel requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendKey {
    /// Backend process id.
    pub pid: i32,
    /// Secret key bytes.
    pub secret: Vec<u8>,
}

/// Fixed-size buffers for relaying bytes in both directions.
#[derive(Debug)]
pub struct RelayBuffers {
    /// Client to server.
    pub c2s: Box<[u8]>,
    /// Server to client.
    pub s2c: Box<[u8]>,
}

/// A logged-in connection to PostgreSQL.
#[derive(Debug)]
pub struct ServerConn {
    /// Unique id.
    pub id: ServerId,
    /// The socket.
    pub stream: Stream,
    /// Cancel key from BackendKeyData.
    pub key: Arc<BackendKey>,
    /// Where it goes (shared with the pool).
    pub target: Arc<ServerTarget>,
    /// Current values of the tracked parameters on this connection.
    pub params: ParamSet,
    /// Every ParameterStatus received at login, for client logins.
    pub startup_params: Vec<(String, String)>,
    /// When it was opened.
    pub created: Instant,
    /// When it was last returned to its pool.
    pub last_used: Instant,
    /// Relay buffers.
    pub buffers: RelayBuffers,
    /// What the layer above keeps per connection (the client layer's prepared-statement
    /// and rewriting state, created on first transaction-mode use), opaque here.
    pub ext: Extension,
}

/// Per-connection state owned by a layer above the server and pool layers, which keep
/// it with the connection without knowing its type: it is created on first use and
/// dies with the connection (a connection that is closed takes it along).
#[derive(Default)]
pub struct Extension(Option<Box<dyn std::any::Any + Send>>);

impl Extension {
    /// The state of type `T`, made by `init` when there is none (or one of another
    /// type, which is dropped).
    pub fn get_or_insert_with<T: std::any::Any + Send>(
        &mut self,
        init: impl FnOnce() -> T,
    ) -> &mut T {
        if !self.0.as_ref().is_some_and(|b| b.is::<T>()) {
            self.0 = Some(Box::new(init()));
        }
        match self.0.as_mut().and_then(|b| b.downcast_mut::<T>()) {
            Some(t) => t,
            // Unreachable: a `T` was stored just above when there was none.
            None => unreachable!("extension holds the type just stored"),
        }
    }

    /// The state of type `T`, if there is one.
    pub fn get_mut<T: std::any::Any + Send>(&mut self) -> Option<&mut T> {
        self.0.as_mut().and_then(|b| b.downcast_mut::<T>())
    }
}

#[cfg(test)]
mod extension_tests {
    use super::Extension;

    #[test]
    fn holds_one_state_of_the_asked_type() {
        let mut e = Extension::default();
        assert!(e.get_mut::<u32>().is_none());
        *e.get_or_insert_with(|| 1u32) += 1;
        assert_eq!(e.get_mut::<u32>(), Some(&mut 2));
        // Another type replaces it.
        assert_eq!(*e.get_or_insert_with(|| String::from("x")), "x");
        assert!(e.get_mut::<u32>().is_none());
    }
}

impl std::fmt::Debug for Extension {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Extension(set)"
        } else {
            "Extension(none)"
        })
    }
}

/// What PostgreSQL answered to [`ServerConn::run_for_client`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answered {
    /// An ErrorResponse came.
    pub failed: bool,
    /// The status of the final ReadyForQuery.
    pub status: backend::TxStatus,
}

impl ServerConn {
    /// The next whole message from the server, reading into `buf` as needed.
    async fn next_message(&mut self, buf: &mut BytesMut) -> Result<Message, ServerError> {
        loop {
            if let Some(m) = split_message(buf, MAX_CONTROL_MESSAGE)? {
                return Ok(m);
            }
            if self.stream.read_buf(buf).await? == 0 {
                return Err(ServerError::Closed);
            }
        }
    }

    /// Runs a simple query whose results pgsluice discards (SET, DISCARD ALL, ROLLBACK),
    /// recording ParameterStatus changes. Fails if PostgreSQL reports an error.
    pub async fn run_discarding(&mut self, sql: &str) -> Result<(), ServerError> {
        self.run_simple(sql, false).await.map(drop)
    }

    /// Runs `sql` (one simple query) and returns its first row as text values; records
    /// ParameterStatus changes. An ErrorResponse fails it.
    pub async fn run_for_row(&mut self, sql: &str) -> Result<Vec<Option<String>>, ServerError> {
        self.run_simple(sql, true)
            .await?
            .ok_or(ServerError::Protocol(
                pgsluice_protocol::ProtocolError::Malformed("no row"),
            ))
    }

    /// Runs one simple query up to its ReadyForQuery, recording ParameterStatus
    /// changes; the first row's text values when `want_row`. The first ErrorResponse
    /// fails it.
    async fn run_simple(
        &mut self,
        sql: &str,
        want_row: bool,
    ) -> Result<Option<Vec<Option<String>>>, ServerError> {
        let mut out = BytesMut::with_capacity(sql.len() + 6);
        frontend::query(&mut out, sql);
        self.stream.write_all(&out).await?;
        let mut buf = BytesMut::with_capacity(1024);
        let mut failure = None;
        let mut row = None;
        loop {
            let msg = self.next_message(&mut buf).await?;
            match msg.tag {
                tag::PARAMETER_STATUS => {
                    let (name, value) = backend::parse_parameter_status(&msg.body)?;
                    self.params.set(name, value);
                }
                tag::DATA_ROW if want_row && row.is_none() => {
                    let values = backend::parse_data_row(&msg.body)?;
                    row = Some(
                        values
                            .into_iter()
                            .map(|v| v.map(|b| String::from_utf8_lossy(b).into_owned()))
                            .collect(),
                    );
                }
                tag::ERROR_RESPONSE => {
                    let f = backend::parse_error_fields(&msg.body)?;
                    failure.get_or_insert(ServerError::Rejected {
                        code: f.code.to_owned(),
                        message: f.message.to_owned(),
                        fatal: f.severity == "FATAL" || f.severity == "PANIC",
                    });
                }
                tag::READY_FOR_QUERY => {
                    if !buf.is_empty() {
                        return Err(ServerError::Protocol(
                            pgsluice_protocol::ProtocolError::Malformed("data after ReadyForQuery"),
                        ));
                    }
                    return failure.map_or(Ok(row), Err);
                }
                _ => {}
            }
        }
    }

    /// Sends a request a client made (whole messages ending in a Query or Sync) and
    /// collects PostgreSQL's answer up to ReadyForQuery into `answer`, unchanged, for
    /// the client; records ParameterStatus changes. Fails when the answer passes `max`
    /// bytes (the caller then closes the connection).
    pub async fn run_for_client(
        &mut self,
        request: &[u8],
        answer: &mut BytesMut,
        max: usize,
    ) -> Result<Answered, ServerError> {
        self.stream.write_all(request).await?;
        let mut buf = BytesMut::with_capacity(1024);
        let mut failed = false;
        loop {
            let msg = self.next_message(&mut buf).await?;
            if answer.len() + msg.body.len() + 5 > max {
                return Err(ServerError::Protocol(
                    pgsluice_protocol::ProtocolError::Malformed("answer too long"),
                ));
            }
            answer.extend_from_slice(&[msg.tag]);
            answer.extend_from_slice(&(msg.body.len() as u32 + 4).to_be_bytes());
            answer.extend_from_slice(&msg.body);
            match msg.tag {
                tag::PARAMETER_STATUS => {
                    let (name, value) = backend::parse_parameter_status(&msg.body)?;
                    self.params.set(name, value);
                }
                tag::ERROR_RESPONSE => failed = true,
                tag::READY_FOR_QUERY => {
                    let status = msg
                        .body
                        .first()
                        .and_then(|&b| backend::TxStatus::from_byte(b))
                        .filter(|_| buf.is_empty())
                        .ok_or(ServerError::Protocol(
                            pgsluice_protocol::ProtocolError::Malformed("ReadyForQuery"),
                        ))?;
                    return Ok(Answered { failed, status });
                }
                _ => {}
            }
        }
    }

    /// Age of the connection.
    pub fn age(&self) -> std::time::Duration {
        self.created.elapsed()
    }

    /// Age of the connection at `now`.
    pub fn age_at(&self, now: Instant) -> std::time::Duration {
        now.saturating_duration_since(self.created)
    }

    /// Sends Terminate and closes, best effort.
    pub async fn close(mut self) {
        let mut out = BytesMut::with_capacity(5);
        frontend::terminate(&mut out);
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), async {
            let _ = self.stream.write_all(&out).await;
            let _ = self.stream.shutdown().await;
        })
        .await;
    }
}
