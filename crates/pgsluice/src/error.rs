//! Typed errors, classified by the side at fault, mapped once to what the client sees.

use std::io;

use pgsluice_protocol::auth::AuthError;
use pgsluice_protocol::backend::{ErrorNotice, Severity};
use pgsluice_protocol::{ProtocolError, SqlState};

/// Something went wrong talking to PostgreSQL.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// TCP or Unix connect failed.
    #[error("could not connect to server {addr}: {source}")]
    Connect {
        /// host:port or socket path.
        addr: String,
        /// The OS error.
        source: io::Error,
    },
    /// Connecting and logging in took longer than server_connect_timeout.
    #[error("timed out connecting to server {0}")]
    ConnectTimeout(String),
    /// PostgreSQL sent an ErrorResponse during login or to one of pgsluice's own queries.
    #[error("server error {code}: {message}")]
    Rejected {
        /// SQLSTATE as sent.
        code: String,
        /// Message as sent.
        message: String,
        /// True when PostgreSQL sent it as FATAL (the connection is gone).
        fatal: bool,
    },
    /// PostgreSQL asked for an authentication method pgsluice does not implement.
    #[error("server requested unsupported authentication method {0}")]
    UnsupportedAuth(i32),
    /// PostgreSQL asked for a password pgsluice does not have.
    #[error("server asked for a password for user \"{0}\" but none is configured")]
    NoPassword(String),
    /// The SCRAM exchange with PostgreSQL failed.
    #[error("SCRAM authentication with server failed: {0}")]
    Scram(#[from] AuthError),
    /// PostgreSQL broke the protocol.
    #[error("protocol error from server: {0}")]
    Protocol(#[from] ProtocolError),
    /// Reading or writing the server socket failed.
    #[error("server connection failed: {0}")]
    Io(#[from] io::Error),
    /// The server closed the connection.
    #[error("server closed the connection unexpectedly")]
    Closed,
    /// A forwarded cancel request was not delivered within cancel_wait_timeout.
    #[error("cancel request to server {0} not delivered within cancel_wait_timeout")]
    CancelTimeout(String),
    /// TLS with the server failed (refused, handshake or certificate error).
    #[error("TLS with server {addr} failed: {reason}")]
    Tls {
        /// host:port.
        addr: String,
        /// What went wrong.
        reason: String,
    },
}

/// Waiting for or getting a server connection from a pool failed.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// No connection became free within query_wait_timeout.
    #[error("no server connection available within query_wait_timeout ({0:?})")]
    WaitTimeout(std::time::Duration),
    /// Opening a new server connection failed.
    #[error(transparent)]
    Server(#[from] ServerError),
    /// The pool was closed (database removed or shutting down).
    #[error("pool is closed")]
    Closed,
    /// A login to the server failed less than server_login_retry ago: the client gets
    /// that failure at once instead of another attempt.
    #[error("{}", .0.message)]
    LoginRetry(ClientNotice),
}

/// Why a client session ended abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The client broke the protocol.
    #[error("protocol violation: {0}")]
    Protocol(#[from] ProtocolError),
    /// The client socket failed.
    #[error("client connection failed: {0}")]
    Io(#[from] io::Error),
    /// Login did not complete within client_login_timeout.
    #[error("client login timed out")]
    LoginTimeout,
    /// Login refused (bad password, unknown database, limits...): the notice says why.
    #[error("login refused: {0}")]
    Refused(String),
}

/// A message for the client: SQLSTATE, severity and text, built from any error above.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientNotice {
    /// Severity.
    pub severity: Severity,
    /// SQLSTATE.
    pub code: SqlState,
    /// Text.
    pub message: String,
}

impl ClientNotice {
    /// A FATAL notice.
    pub fn fatal(code: SqlState, message: impl Into<String>) -> Self {
        ClientNotice {
            severity: Severity::Fatal,
            code,
            message: message.into(),
        }
    }

    /// Appends the ErrorResponse to `buf`.
    pub fn write(&self, buf: &mut bytes::BytesMut) {
        ErrorNotice {
            severity: self.severity,
            code: self.code,
            message: &self.message,
            detail: None,
            hint: None,
        }
        .write(buf);
    }
}

impl PoolError {
    /// What the client is told (always FATAL: the session cannot go on without a server).
    pub fn to_notice(&self) -> ClientNotice {
        match self {
            PoolError::WaitTimeout(_) => ClientNotice::fatal(
                SqlState::TOO_MANY_CONNECTIONS,
                format!("query_wait_timeout: {self}"),
            ),
            PoolError::Closed => ClientNotice::fatal(
                SqlState::CANNOT_CONNECT_NOW,
                "database is closed or shutting down",
            ),
            PoolError::Server(e) => e.to_notice(),
            PoolError::LoginRetry(n) => n.clone(),
        }
    }
}

impl ServerError {
    /// What the client is told when this error ends its session.
    pub fn to_notice(&self) -> ClientNotice {
        match self {
            ServerError::Rejected { code, message, .. } => ClientNotice::fatal(
                sqlstate_or(code, SqlState::CONNECTION_FAILURE),
                format!("server login failed: {message}"),
            ),
            ServerError::Connect { .. } | ServerError::ConnectTimeout(_) => {
                ClientNotice::fatal(SqlState::UNABLE_TO_CONNECT, self.to_string())
            }
            _ => ClientNotice::fatal(SqlState::CONNECTION_FAILURE, self.to_string()),
        }
    }
}

/// Maps a server-sent code back to one of ours when it is one we know, else `fallback`.
pub(crate) fn sqlstate_or(code: &str, fallback: SqlState) -> SqlState {
    SqlState::ALL
        .iter()
        .copied()
        .find(|c| c.code() == code)
        .unwrap_or(fallback)
}
