//! The admin console: the virtual database `pgbouncer` (alias `pgsluice`) on the
//! pooler's own port, speaking the simple query protocol so that psql and the tools
//! written for PgBouncer (exporters, monitoring integrations) work unchanged.
//!
//! Who may log in: users in `admin_users` (every command) and `stats_users` (SHOW
//! only), with their password from `[users]` checked the configured `auth_type` way.
//! When both lists are empty and there is no configuration file (quick mode), the one
//! configured user is an admin. See `docs/admin-console.md`.

mod commands;
mod console;
pub mod parse;
pub mod result;
mod show;

use std::sync::Arc;

use bytes::BytesMut;
use pgsluice_protocol::backend::{self, ErrorNotice, Severity, TxStatus};
use pgsluice_protocol::frame::{split_message, Message};
use pgsluice_protocol::{frontend, SqlState};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::Config;
use crate::error::ClientNotice;
use crate::net::Stream;
use crate::pool::ClientInfo;

pub use commands::{pause_all, resume_all};
pub use console::{ClientCounts, Console, ReloadReport, Reloading, StopRequest};
pub use parse::Command;

/// Names of the admin console's virtual database.
pub const ADMIN_DATABASES: [&str; 2] = ["pgbouncer", "pgsluice"];

/// The version SHOW VERSION reports: the PgBouncer release whose admin console output
/// pgsluice follows, then pgsluice's own (tools parse the `PgBouncer X.Y.Z` part).
pub const VERSION_STRING: &str = concat!(
    "PgBouncer 1.25.0 (pgsluice ",
    env!("CARGO_PKG_VERSION"),
    ")"
);

/// Largest query accepted on the admin console.
const MAX_ADMIN_MESSAGE: u32 = 64 * 1024;

/// Whether `db` names the admin console.
pub fn is_admin_db(db: &str) -> bool {
    ADMIN_DATABASES.contains(&db)
}

/// What an admin console user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Every command (`admin_users`).
    Admin,
    /// SHOW commands only (`stats_users`).
    Stats,
}

/// The access `user` has to the admin console, if any.
pub fn access_for(cfg: &Config, user: &str) -> Option<Access> {
    let g = &cfg.general;
    if g.admin_users.iter().any(|u| u == user) {
        return Some(Access::Admin);
    }
    if g.stats_users.iter().any(|u| u == user) {
        return Some(Access::Stats);
    }
    let quick_mode_owner = g.admin_users.is_empty()
        && g.stats_users.is_empty()
        && cfg.source.is_none()
        && cfg.users.keys().next().map(String::as_str) == Some(user);
    quick_mode_owner.then_some(Access::Admin)
}

/// An admin command failed: sent to the client as an ERROR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminError {
    /// SQLSTATE.
    pub code: SqlState,
    /// Message.
    pub message: String,
}

impl AdminError {
    /// An error with a code and message.
    pub fn new(code: SqlState, message: impl Into<String>) -> AdminError {
        AdminError {
            code,
            message: message.into(),
        }
    }

    fn write(&self, out: &mut BytesMut) {
        ErrorNotice::error(self.code, &self.message).write(out);
    }
}

impl std::fmt::Display for AdminError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

/// What a command handler sees.
pub(crate) struct Ctx<'a> {
    pub(crate) console: &'a dyn Console,
    pub(crate) access: Access,
    pub(crate) me: &'a Arc<ClientInfo>,
}

impl Ctx<'_> {
    fn require_admin(&self) -> Result<(), AdminError> {
        match self.access {
            Access::Admin => Ok(()),
            Access::Stats => Err(AdminError::new(
                SqlState::INSUFFICIENT_PRIVILEGE,
                "admin access needed",
            )),
        }
    }
}

/// What the session does after a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Continue,
    /// Close the connection after sending the reply (SHUTDOWN).
    Close,
}

/// Appends the messages that complete an admin login: AuthenticationOk already sent by
/// the caller; here the parameters, the cancel key and ReadyForQuery.
pub fn write_startup(out: &mut BytesMut, pid: i32, secret: i32) {
    let params = [
        ("server_version", "1.25.0/pgsluice"),
        ("server_encoding", "UTF8"),
        ("client_encoding", "UTF8"),
        ("DateStyle", "ISO"),
        ("TimeZone", "UTC"),
        ("standard_conforming_strings", "on"),
        ("integer_datetimes", "on"),
        ("is_superuser", "on"),
    ];
    for (k, v) in params {
        backend::parameter_status(out, k, v);
    }
    backend::backend_key_data(out, pid, secret);
    backend::ready_for_query(out, TxStatus::Idle);
}

/// Runs an admin console session after login until the client leaves; returns why it
/// ended.
pub async fn serve(
    mut stream: Stream,
    mut buf: BytesMut,
    console: &dyn Console,
    access: Access,
    me: Arc<ClientInfo>,
) -> &'static str {
    let mut shutdown = console.shutdown_watch();
    let mut out = BytesMut::with_capacity(4096);
    let mut skipping_extended = false;
    loop {
        let msg = tokio::select! {
            m = read_message(&mut stream, &mut buf) => m,
            _ = shutdown.requested() => {
                let n = ClientNotice::fatal(SqlState::ADMIN_SHUTDOWN, "terminating connection due to administrator command");
                crate::net::send_fatal(&mut stream, &n).await;
                return "shutdown";
            }
            _ = me.killed() => {
                let n = ClientNotice::fatal(SqlState::ADMIN_SHUTDOWN, "admin forced disconnect");
                crate::net::send_fatal(&mut stream, &n).await;
                return "killed";
            }
        };
        let msg = match msg {
            Ok(Some(m)) => m,
            Ok(None) => return "client closed",
            Err(e) => {
                let n = ClientNotice::fatal(
                    SqlState::PROTOCOL_VIOLATION,
                    format!("invalid message: {e}"),
                );
                crate::net::send_fatal(&mut stream, &n).await;
                return "client protocol violation";
            }
        };
        out.clear();
        let mut flow = Flow::Continue;
        match msg.tag {
            frontend::tag::QUERY => {
                // Admin commands are ASCII; the console takes UTF-8 only.
                let text = frontend::parse_query(&msg.body).and_then(|q| {
                    std::str::from_utf8(q)
                        .map_err(|_| pgsluice_protocol::ProtocolError::Malformed("invalid UTF-8"))
                });
                let query = match text {
                    Ok(q) => q.to_owned(),
                    Err(e) => {
                        let n = ClientNotice::fatal(
                            SqlState::PROTOCOL_VIOLATION,
                            format!("invalid message: {e}"),
                        );
                        crate::net::send_fatal(&mut stream, &n).await;
                        return "client protocol violation";
                    }
                };
                let ctx = Ctx {
                    console,
                    access,
                    me: &me,
                };
                flow = tokio::select! {
                    f = run_query(&ctx, &query, &mut out) => f,
                    _ = shutdown.requested() => Flow::Close,
                };
                backend::ready_for_query(&mut out, TxStatus::Idle);
            }
            frontend::tag::TERMINATE => return "client terminated",
            frontend::tag::SYNC => {
                skipping_extended = false;
                backend::ready_for_query(&mut out, TxStatus::Idle);
            }
            frontend::tag::PARSE
            | frontend::tag::BIND
            | frontend::tag::DESCRIBE
            | frontend::tag::EXECUTE
            | frontend::tag::CLOSE
            | frontend::tag::FLUSH => {
                if !skipping_extended {
                    skipping_extended = true;
                    AdminError::new(
                        SqlState::FEATURE_NOT_SUPPORTED,
                        "the admin console supports only the simple query protocol",
                    )
                    .write(&mut out);
                }
            }
            other => {
                let n = ClientNotice::fatal(
                    SqlState::PROTOCOL_VIOLATION,
                    format!(
                        "unexpected message type {:?} on the admin console",
                        other as char
                    ),
                );
                crate::net::send_fatal(&mut stream, &n).await;
                return "client protocol violation";
            }
        }
        if !out.is_empty() && stream.write_all(&out).await.is_err() {
            return "client connection error";
        }
        if flow == Flow::Close {
            let _ = stream.shutdown().await;
            return "shutdown requested";
        }
    }
}

/// Runs every command of one query string, stopping at the first error.
async fn run_query(ctx: &Ctx<'_>, query: &str, out: &mut BytesMut) -> Flow {
    let commands = match parse::parse(query) {
        Ok(c) => c,
        Err(e) => {
            tracing::info!(query, error = %e, "admin console: invalid command");
            e.write(out);
            return Flow::Continue;
        }
    };
    if commands.is_empty() {
        backend::empty_query(out);
        return Flow::Continue;
    }
    let mut flow = Flow::Continue;
    for cmd in commands {
        let r = match cmd {
            Command::Show(what) => show::show(ctx, &what, out).map(|()| Flow::Continue),
            Command::Set { key, value } => commands::set(ctx, &key, &value, out)
                .await
                .map(|()| Flow::Continue),
            Command::Action { word, arg } => {
                commands::action(ctx, &word, arg.as_deref(), out).await
            }
        };
        match r {
            Ok(f) => flow = f,
            Err(e) => {
                tracing::info!(user = %ctx.me.user, error = %e, "admin command failed");
                e.write(out);
                return Flow::Continue;
            }
        }
    }
    flow
}

/// Appends a NOTICE.
fn notice(out: &mut BytesMut, message: &str, detail: Option<&str>) {
    let mut n = ErrorNotice::error(SqlState::SUCCESSFUL_COMPLETION, message);
    n.severity = Severity::Notice;
    n.detail = detail;
    n.write(out);
}

async fn read_message(
    stream: &mut Stream,
    buf: &mut BytesMut,
) -> Result<Option<Message>, pgsluice_protocol::ProtocolError> {
    loop {
        if let Some(m) = split_message(buf, MAX_ADMIN_MESSAGE)? {
            return Ok(Some(m));
        }
        match stream.read_buf(buf).await {
            Ok(0) | Err(_) => return Ok(None),
            Ok(_) => {}
        }
    }
}
