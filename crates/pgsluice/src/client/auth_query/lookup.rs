//! The lookup connections of `auth_query`: a few connections per (server, database,
//! auth_user), reused across lookups, each logged in as the auth_user with a safe
//! `search_path`, running the query with the user name bound as a parameter
//! (Parse/Bind/Execute/Sync, never interpolated into the SQL).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use pgsluice_protocol::backend::{self, tag, TxStatus};
use pgsluice_protocol::frame::split_message;
use pgsluice_protocol::{frontend, SqlState};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;

use super::cache::LookupKey;
use crate::error::{ClientNotice, ServerError};
use crate::pool::IdGen;
use crate::server::{self, ServerConn, ServerTarget};
use crate::sync::LockExt;

/// Set on every lookup connection right after login: only the system catalog, and
/// temporary objects last, so no user-created object can shadow what the query uses.
pub const SAFE_SEARCH_PATH: &str = "SET search_path = pg_catalog, pg_temp";

/// Lookups running at once per lookup key (each on its own connection).
const MAX_CONCURRENT: usize = 4;
/// Idle connections kept per lookup key.
const MAX_IDLE: usize = 2;
/// Idle connections older than this are closed rather than reused.
const MAX_IDLE_TIME: Duration = Duration::from_secs(60);
/// Largest message accepted from the server on a lookup connection.
const MAX_MESSAGE: u32 = 1 << 20;
/// Rows kept from a result (more than one is an error anyway).
const MAX_ROWS: usize = 2;

/// Why a lookup gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    /// Connecting or logging in as the auth_user failed, or the connection broke.
    #[error("lookup connection failed: {0}")]
    Server(#[from] ServerError),
    /// The lookup did not finish in time.
    #[error("lookup timed out after {0:?}")]
    Timeout(Duration),
    /// PostgreSQL refused the query.
    #[error("auth_query failed: {code}: {message}")]
    Query {
        /// SQLSTATE.
        code: String,
        /// Message.
        message: String,
    },
    /// The query's result is not (user name, secret) with at most one row.
    #[error("auth_query returned an unusable result: {0}")]
    BadResult(&'static str),
    /// The lookup database is not configured.
    #[error("auth_dbname `{0}` is not a configured database")]
    NoDatabase(String),
}

impl LookupError {
    /// What the client is told: no detail of the lookup (hosts, roles, query).
    pub fn to_notice(&self) -> ClientNotice {
        match self {
            LookupError::Server(_) | LookupError::Timeout(_) => ClientNotice::fatal(
                SqlState::CONNECTION_FAILURE,
                "authentication failed: the server holding the user's password could not be reached (auth_query)",
            ),
            _ => ClientNotice::fatal(
                SqlState::SYSTEM_ERROR,
                "authentication failed: the user's password could not be looked up (auth_query)",
            ),
        }
    }

    /// Whether a broken reused connection, not the lookup itself, may be to blame.
    fn stale_connection(&self) -> bool {
        matches!(
            self,
            LookupError::Server(ServerError::Io(_) | ServerError::Closed)
        )
    }
}

/// A finished lookup: the connection when it can be reused, and the answer. The
/// outer `Result` of [`run_on`] says the connection itself failed.
type Ran = (Option<ServerConn>, Result<Option<String>, LookupError>);

/// Connections of one lookup key.
struct LookupPool {
    target: Arc<ServerTarget>,
    idle: Mutex<Vec<ServerConn>>,
    running: Semaphore,
}

/// Every lookup pool of one pgsluice server.
pub struct LookupPools {
    pools: Mutex<HashMap<Arc<LookupKey>, Arc<LookupPool>>>,
    ids: Arc<IdGen>,
}

impl std::fmt::Debug for LookupPools {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LookupPools").finish_non_exhaustive()
    }
}

impl LookupPools {
    /// No pools yet; server connection ids come from `ids`.
    pub fn new(ids: Arc<IdGen>) -> LookupPools {
        LookupPools {
            pools: Mutex::new(HashMap::new()),
            ids,
        }
    }

    /// The pool of `key`, replaced when its target changed (RELOAD).
    fn pool(&self, key: &Arc<LookupKey>, target: ServerTarget) -> Arc<LookupPool> {
        let mut pools = self.pools.locked();
        match pools.get(key) {
            Some(p) if *p.target == target => p.clone(),
            _ => {
                let p = Arc::new(LookupPool {
                    target: Arc::new(target),
                    idle: Mutex::new(Vec::new()),
                    running: Semaphore::new(MAX_CONCURRENT),
                });
                pools.insert(key.clone(), p.clone());
                p
            }
        }
    }

    /// Runs `key.query` for `user` on a connection to `target`, within `limit`.
    /// `Ok(None)`: no usable secret (no such role, NULL password, cannot log in).
    pub async fn fetch(
        &self,
        key: &Arc<LookupKey>,
        target: ServerTarget,
        user: &str,
        limit: Duration,
    ) -> Result<Option<String>, LookupError> {
        let pool = self.pool(key, target);
        let work = async {
            let _permit = pool
                .running
                .acquire()
                .await
                .map_err(|_| LookupError::Server(ServerError::Closed))?;
            if let Some(conn) = pool.take_idle() {
                match run_on(conn, &key.query, user).await {
                    Err(e) if e.stale_connection() => {
                        tracing::debug!(error = %e, "auth_query: reused lookup connection failed; retrying on a new one");
                    }
                    r => return pool.finish(r),
                }
            }
            let mut conn = server::connect(pool.target.clone(), self.ids.next(), limit).await?;
            conn.run_discarding(SAFE_SEARCH_PATH).await?;
            let r = run_on(conn, &key.query, user).await;
            pool.finish(r)
        };
        match tokio::time::timeout(limit, work).await {
            Ok(r) => r,
            Err(_) => Err(LookupError::Timeout(limit)),
        }
    }
}

impl LookupPool {
    fn take_idle(&self) -> Option<ServerConn> {
        let mut idle = self.idle.locked();
        while let Some(c) = idle.pop() {
            if c.last_used.elapsed() < MAX_IDLE_TIME && !c.stream.is_closed_or_dirty() {
                return Some(c);
            }
        }
        None
    }

    /// Keeps a reusable connection, returns the answer.
    fn finish(&self, r: Result<Ran, LookupError>) -> Result<Option<String>, LookupError> {
        let (conn, answer) = r?;
        if let Some(mut c) = conn {
            c.last_used = Instant::now();
            let mut idle = self.idle.locked();
            if idle.len() < MAX_IDLE {
                idle.push(c);
            }
        }
        answer
    }
}

/// Runs the lookup on `conn`. The outer error means the connection is unusable; the
/// inner result is the answer, with the connection when it can be reused.
async fn run_on(mut conn: ServerConn, query: &str, user: &str) -> Result<Ran, LookupError> {
    let mut out = BytesMut::with_capacity(query.len() + user.len() + 64);
    frontend::parse(&mut out, "", query.as_bytes(), &[]);
    frontend::bind_text(&mut out, "", "", &[Some(user.as_bytes())]);
    frontend::execute(&mut out, "", 0);
    frontend::sync(&mut out);
    conn.stream
        .write_all(&out)
        .await
        .map_err(ServerError::from)?;

    let mut buf = BytesMut::with_capacity(1024);
    let mut rows: Vec<Vec<Option<Vec<u8>>>> = Vec::new();
    let mut extra_rows = false;
    let mut failure = None;
    loop {
        let msg = loop {
            if let Some(m) = split_message(&mut buf, MAX_MESSAGE).map_err(ServerError::from)? {
                break m;
            }
            if conn
                .stream
                .read_buf(&mut buf)
                .await
                .map_err(ServerError::from)?
                == 0
            {
                return Err(ServerError::Closed.into());
            }
        };
        match msg.tag {
            tag::DATA_ROW => {
                let values = backend::parse_data_row(&msg.body).map_err(ServerError::from)?;
                if rows.len() < MAX_ROWS {
                    rows.push(values.iter().map(|v| v.map(<[u8]>::to_vec)).collect());
                } else {
                    extra_rows = true;
                }
            }
            tag::ERROR_RESPONSE => {
                let f = backend::parse_error_fields(&msg.body).map_err(ServerError::from)?;
                if f.severity == "FATAL" || f.severity == "PANIC" {
                    return Err(ServerError::Rejected {
                        code: f.code.to_owned(),
                        message: f.message.to_owned(),
                        fatal: true,
                    }
                    .into());
                }
                failure.get_or_insert(LookupError::Query {
                    code: f.code.to_owned(),
                    message: f.message.to_owned(),
                });
            }
            tag::READY_FOR_QUERY => {
                let idle = msg.body.first().copied() == Some(TxStatus::Idle.as_byte());
                let reusable = (idle && buf.is_empty()).then_some(conn);
                let answer = match failure {
                    Some(e) => Err(e),
                    None if extra_rows => Err(LookupError::BadResult("more than one row")),
                    None => interpret(user, &rows),
                };
                return Ok((reusable, answer));
            }
            // ParseComplete, BindComplete, CommandComplete, EmptyQueryResponse,
            // NoticeResponse, ParameterStatus, NotificationResponse.
            b'1'
            | b'2'
            | tag::COMMAND_COMPLETE
            | tag::EMPTY_QUERY
            | tag::NOTICE_RESPONSE
            | tag::PARAMETER_STATUS
            | tag::NOTIFICATION_RESPONSE => {}
            _ => return Err(LookupError::BadResult("unexpected message (COPY?)")),
        }
    }
}

/// The secret in an auth_query result for `user`: `None` when there is no row, the
/// password is NULL or empty (no password, or `VALID UNTIL` in the past with the
/// default query), or the row is for another user.
fn interpret(user: &str, rows: &[Vec<Option<Vec<u8>>>]) -> Result<Option<String>, LookupError> {
    let row = match rows {
        [] => return Ok(None),
        [row] => row,
        _ => return Err(LookupError::BadResult("more than one row")),
    };
    let [name, secret] = row.as_slice() else {
        return Err(LookupError::BadResult(
            "expected two columns (user name, secret)",
        ));
    };
    if name.as_deref() != Some(user.as_bytes()) {
        return Ok(None);
    }
    match secret.as_deref() {
        None | Some(b"") => Ok(None),
        Some(s) => std::str::from_utf8(s)
            .map(|s| Some(s.to_owned()))
            .map_err(|_| LookupError::BadResult("secret is not valid UTF-8")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: Option<&str>, secret: Option<&str>) -> Vec<Option<Vec<u8>>> {
        vec![
            name.map(|s| s.as_bytes().to_vec()),
            secret.map(|s| s.as_bytes().to_vec()),
        ]
    }

    #[test]
    fn interpret_rows() {
        let verifier = "SCRAM-SHA-256$4096:c2FsdA==$a2V5:a2V5";
        assert_eq!(
            interpret("alice", &[row(Some("alice"), Some(verifier))]).unwrap(),
            Some(verifier.to_owned())
        );
        // No row, NULL (expired or no password), empty, another user: no secret.
        assert_eq!(interpret("alice", &[]).unwrap(), None);
        assert_eq!(
            interpret("alice", &[row(Some("alice"), None)]).unwrap(),
            None
        );
        assert_eq!(
            interpret("alice", &[row(Some("alice"), Some(""))]).unwrap(),
            None
        );
        assert_eq!(
            interpret("alice", &[row(Some("bob"), Some("md5x"))]).unwrap(),
            None
        );
        assert_eq!(
            interpret("alice", &[row(None, Some("md5x"))]).unwrap(),
            None
        );
        // Malformed results are errors, not secrets.
        let two = [row(Some("alice"), Some("a")), row(Some("alice"), Some("b"))];
        assert!(matches!(
            interpret("alice", &two),
            Err(LookupError::BadResult(_))
        ));
        assert!(matches!(
            interpret("alice", &[vec![Some(b"alice".to_vec())]]),
            Err(LookupError::BadResult(_))
        ));
        let mut three = row(Some("alice"), Some("a"));
        three.push(None);
        assert!(matches!(
            interpret("alice", &[three]),
            Err(LookupError::BadResult(_))
        ));
        assert!(matches!(
            interpret("alice", &[vec![Some(b"alice".to_vec()), Some(vec![0xff])]]),
            Err(LookupError::BadResult(_))
        ));
    }

    #[test]
    fn notices_reveal_nothing_of_the_lookup() {
        let e = LookupError::Query {
            code: "42501".into(),
            message: "permission denied for table pg_authid".into(),
        };
        let n = e.to_notice();
        assert_eq!(n.code, SqlState::SYSTEM_ERROR);
        assert!(!n.message.contains("pg_authid"));
        let n = LookupError::Timeout(Duration::from_secs(1)).to_notice();
        assert_eq!(n.code, SqlState::CONNECTION_FAILURE);
    }

    #[test]
    fn default_query_is_schema_qualified() {
        let q = crate::config::DEFAULT_AUTH_QUERY;
        assert!(q.contains("FROM pg_catalog.pg_authid"), "{q}");
        assert!(q.contains("OPERATOR(pg_catalog.=) $1"), "{q}");
        assert!(q.contains("pg_catalog.now()"), "{q}");
        assert!(q.contains("rolcanlogin"), "{q}");
        assert!(!q.contains(" now()"), "{q}");
    }
}
