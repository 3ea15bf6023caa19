//! Clients: the startup phase and login here, the tasks in `task`, the session loop
//! in `session`, the byte relay in [`relay`], idle clients without a task in `park`.

mod admin_session;
pub mod auth;
pub mod auth_query;
mod cancel_route;
mod conclude;
pub mod context;
pub mod handover;
mod handover_image;
mod hba;
mod param_request;
pub(crate) mod park;
pub mod prepared;
mod queue_notice;
pub mod relay;
mod session;
mod shard_binary;
mod shard_conn;
mod shard_copy;
mod shard_extended;
mod shard_multi;
mod shard_session;
mod shard_txn;
mod startup_options;
pub mod state_guard;
pub mod statement;
mod stop;
mod task;
mod wire_state;

use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use pgsluice_protocol::backend::{self, TxStatus};
use pgsluice_protocol::startup::{self, StartupPacket};
use pgsluice_protocol::SqlState;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::OwnedSemaphorePermit;

use crate::admin::{self, Console};
use crate::error::{ClientError, ClientNotice};
use crate::net::Stream;
use crate::params::ParamSet;
use crate::pool::listing::socket_endpoints;
use crate::pool::{ClientInfo, ClientReg};
use crate::shutdown::TaskToken;

use admin_session::{serve_admin, AdminLogin};
pub use context::{ClientContext, HandoverGate};
pub use park::ParkingLot;
pub use session::Session;
pub use task::serve;
use task::{Held, Opened};

/// Startup parameters always accepted and ignored.
const IGNORED_PARAMS: &[&str] = crate::config::ALWAYS_IGNORED_STARTUP_PARAMETERS;

/// Whether the client got a slot under max_client_conn.
#[derive(Debug)]
pub enum Admission {
    /// Admitted; the permit is held for the connection's life.
    Admitted(OwnedSemaphorePermit),
    /// Over max_client_conn: the client is told so after its startup packet.
    Full,
}

/// Everything before a pool session: startup packet, TLS, login (or a whole admin
/// console session, or a cancel request). `None` when the connection is done.
async fn open(
    mut stream: Stream,
    peer: String,
    ctx: Arc<ClientContext>,
    console: Arc<dyn Console>,
    admission: Admission,
    token: TaskToken,
) -> Option<Opened> {
    let started = Instant::now();
    let (login_timeout, tls, errors) = {
        let generation = ctx.live.load();
        let g = &generation.config.general;
        (
            g.client_login_timeout.0,
            generation.tls.clone(),
            g.log_pooler_errors,
        )
    };
    let deadline = tokio::time::Instant::now() + login_timeout;
    let mut buf = BytesMut::with_capacity(256);
    let startup = loop {
        // Boxed: a timer is large; an idle client's task should not carry one.
        match Box::pin(tokio::time::timeout_at(
            deadline,
            read_startup(&mut stream, &mut buf, &tls.clients),
        ))
        .await
        {
            Ok(Ok(Startup::Packet(p))) => break p,
            Ok(Ok(Startup::Tls)) => {
                let Stream::Tcp(tcp) = stream else {
                    return None;
                };
                match Box::pin(tokio::time::timeout_at(deadline, tls.clients.accept(tcp))).await {
                    Ok(Ok(s)) => stream = s,
                    Ok(Err(e)) => {
                        tracing::info!(peer = %peer, error = %e, "TLS handshake with client failed");
                        return None;
                    }
                    Err(_) => {
                        tracing::info!(peer = %peer, "client_login_timeout during TLS handshake");
                        return None;
                    }
                }
            }
            Ok(Err(ClientError::Protocol(e))) => {
                if errors {
                    tracing::info!(peer = %peer, error = %e, "bad startup packet");
                }
                let n = ClientNotice::fatal(
                    SqlState::PROTOCOL_VIOLATION,
                    format!("invalid startup packet: {e}"),
                );
                send_fatal(&mut stream, &n).await;
                return None;
            }
            Ok(Err(e)) => {
                tracing::debug!(peer = %peer, error = %e, "client left during startup");
                return None;
            }
            Err(_) => {
                tracing::info!(peer = %peer, "client_login_timeout during startup");
                return None;
            }
        }
    };
    let params = match startup {
        StartupPacket::Cancel { pid, secret } => {
            Box::pin(cancel_route::forward_cancel(&ctx, pid, &secret)).await;
            return None;
        }
        StartupPacket::UnsupportedVersion { major, minor } => {
            let n = ClientNotice::fatal(
                SqlState::FEATURE_NOT_SUPPORTED,
                format!(
                    "unsupported frontend protocol {major}.{minor}: server supports 3.0 to 3.0"
                ),
            );
            send_fatal(&mut stream, &n).await;
            return None;
        }
        StartupPacket::SslRequest | StartupPacket::GssEncRequest => return None,
        StartupPacket::Startup { minor, params } => (minor, params),
    };
    if tls.clients.requires_tls() && !stream.is_tls() {
        if errors {
            tracing::info!(peer = %peer, "client refused: no TLS (client_tls_sslmode = {})", tls.clients.mode);
        }
        let n = ClientNotice::fatal(
            SqlState::INVALID_AUTHORIZATION,
            format!(
                "TLS required (client_tls_sslmode = {}): connection refused, no encryption",
                tls.clients.mode
            ),
        );
        send_fatal(&mut stream, &n).await;
        return None;
    }
    if let Admission::Full = admission {
        if errors {
            tracing::info!(peer = %peer, "client refused: max_client_conn reached");
        }
        let n = ClientNotice::fatal(
            SqlState::TOO_MANY_CONNECTIONS,
            "no more connections allowed (max_client_conn)",
        );
        send_fatal(&mut stream, &n).await;
        return None;
    }
    let (remote, local, fd) = socket_endpoints(&stream);
    let login =
        // Boxed: the login state (SCRAM exchange, buffers) is large and short-lived; kept
        // inline it would size every idle client's task for the whole connection.
        Box::pin(tokio::time::timeout(login_timeout, login(&mut stream, &mut buf, &ctx, params))).await;
    let session = match login {
        Ok(Ok(LoggedIn::Admin(a))) => {
            Box::pin(serve_admin(
                stream,
                peer,
                &ctx,
                &*console,
                a,
                (remote, local, fd),
                started,
            ))
            .await;
            return None;
        }
        Ok(Ok(LoggedIn::Pool(s, pool_reg))) => (s, pool_reg),
        Ok(Err(LoginFailure::Notice(n))) => {
            if errors {
                tracing::info!(peer = %peer, code = %n.code, reason = %n.message, "client login refused");
            }
            send_fatal(&mut stream, &n).await;
            return None;
        }
        Ok(Err(LoginFailure::Client(e))) => {
            if errors {
                tracing::info!(peer = %peer, error = %e, "client login failed");
            }
            if let ClientError::Protocol(_) | ClientError::Refused(_) = e {
                let n = ClientNotice::fatal(SqlState::PROTOCOL_VIOLATION, e.to_string());
                send_fatal(&mut stream, &n).await;
            }
            return None;
        }
        Err(_) => {
            if errors {
                tracing::info!(peer = %peer, "client_login_timeout");
            }
            let n = ClientNotice::fatal(SqlState::PROTOCOL_VIOLATION, "client_login_timeout");
            send_fatal(&mut stream, &n).await;
            return None;
        }
    };
    let (session, pool_reg) = session;
    if ctx.live.load().config.general.log_connections {
        tracing::info!(
            client = session.cancel_key().0,
            peer = %peer,
            db = %pool_reg.database,
            user = %pool_reg.user,
            "client login"
        );
    }
    Some(enter(
        session,
        stream,
        pool_reg,
        (remote, local, fd),
        None,
        admission,
        token,
    ))
}

/// A logged-in pool client enters the process (after its login, or handed over by
/// another process, then with its login time): its entry in the admin views, listed
/// in its route's home pool, and what it holds for as long as it is connected.
fn enter(
    session: Session,
    stream: Stream,
    pool_reg: PoolLogin,
    (remote, local, fd): (
        crate::pool::listing::Endpoint,
        crate::pool::listing::Endpoint,
        i32,
    ),
    connect_time_us: Option<u64>,
    admission: Admission,
    token: TaskToken,
) -> Opened {
    let (client_id, _) = session.cancel_key();
    let app_name = pool_reg.application_name;
    let application_name = (!app_name.is_empty()).then(|| {
        session
            .params()
            .get_shared("application_name")
            .filter(|v| ***v == *app_name)
            .cloned()
            .unwrap_or_else(|| app_name.as_str().into())
    });
    let mut info = ClientInfo::new(
        client_id as u64,
        pool_reg.user,
        pool_reg.database,
        remote,
        local,
        application_name,
        fd,
    );
    if let Some(t) = connect_time_us.filter(|t| *t != 0) {
        info.connect_time_us = t;
    }
    let info = Arc::new(info);
    info.set_prepared_statements(session.statement_count());
    if stream.is_tls() {
        info.never_park();
    } else if session.ctx().handover.begun() {
        // Logged in while an upgrade hands clients over: it moves at its first idle
        // point too.
        info.ask_to_move();
    }
    let reg: ClientReg = pool_reg.route.home().register_client(info.clone());
    Opened {
        session,
        stream,
        held: Box::new(Held {
            reg,
            _admission: admission,
            _slots: pool_reg._slots,
            _token: token,
        }),
    }
}

/// What [`read_startup`] found.
enum Startup {
    /// A startup packet (StartupMessage, CancelRequest...).
    Packet(StartupPacket),
    /// An SSLRequest answered with 'S': the TLS handshake comes next.
    Tls,
}

/// Reads the startup packet, answering GSSENCRequest with 'N' and SSLRequest with 'S'
/// (when TLS toward clients is configured; the caller then runs the handshake) or 'N'.
async fn read_startup(
    stream: &mut Stream,
    buf: &mut BytesMut,
    tls: &crate::tls::ClientTls,
) -> Result<Startup, ClientError> {
    loop {
        match startup::parse_startup(buf)? {
            Some(p @ (StartupPacket::SslRequest | StartupPacket::GssEncRequest)) => {
                let malformed =
                    |what| ClientError::Protocol(pgsluice_protocol::ProtocolError::Malformed(what));
                if !buf.is_empty() {
                    // Bytes after an encryption request, before our answer: a client
                    // trying to inject plaintext ahead of a TLS handshake.
                    return Err(malformed("data after encryption request"));
                }
                if stream.is_tls() {
                    return Err(malformed("encryption request inside TLS"));
                }
                if matches!(p, StartupPacket::SslRequest)
                    && tls.offers_tls()
                    && matches!(stream, Stream::Tcp(_))
                {
                    stream.write_all(b"S").await?;
                    return Ok(Startup::Tls);
                }
                stream.write_all(b"N").await?;
            }
            Some(p) => return Ok(Startup::Packet(p)),
            None => {
                if stream.read_buf(buf).await? == 0 {
                    return Err(ClientError::Io(std::io::ErrorKind::UnexpectedEof.into()));
                }
            }
        }
    }
}

enum LoginFailure {
    Notice(ClientNotice),
    Client(ClientError),
}

impl From<ClientError> for LoginFailure {
    fn from(e: ClientError) -> Self {
        LoginFailure::Client(e)
    }
}

impl From<std::io::Error> for LoginFailure {
    fn from(e: std::io::Error) -> Self {
        LoginFailure::Client(e.into())
    }
}

/// A logged-in client: for a pool or for the admin console.
enum LoggedIn {
    Pool(Session, PoolLogin),
    Admin(AdminLogin),
}

/// What the session of a pool client needs beyond [`Session`].
struct PoolLogin {
    route: crate::router::Route,
    /// User and database names, shared by the client's admin entry and the pool key.
    user: Arc<str>,
    database: Arc<str>,
    application_name: String,
    /// The client's places under max_db_client_connections and
    /// max_user_client_connections, held until it leaves.
    _slots: [crate::pool::ClientSlot; 2],
}

async fn login(
    stream: &mut Stream,
    buf: &mut BytesMut,
    ctx: &Arc<ClientContext>,
    (minor, params): (u16, Vec<(String, String)>),
) -> Result<LoggedIn, LoginFailure> {
    let fatal = |code, msg: String| LoginFailure::Notice(ClientNotice::fatal(code, msg));
    let user = params
        .iter()
        .find(|(k, _)| k == "user")
        .map(|(_, v)| v.clone())
        .filter(|u| !u.is_empty())
        .ok_or_else(|| {
            fatal(
                SqlState::INVALID_AUTHORIZATION,
                "no PostgreSQL user name specified in startup packet".into(),
            )
        })?;
    let database = params
        .iter()
        .find(|(k, _)| k == "database")
        .map(|(_, v)| v.clone())
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| user.clone());
    // One generation for the whole login: its configuration, secrets and TLS agree.
    let generation = ctx.live.current();
    let cfg = &generation.config;
    let ignored = |k: &str| {
        IGNORED_PARAMS.contains(&k)
            || cfg
                .general
                .ignore_startup_parameters
                .iter()
                .any(|p| p.eq_ignore_ascii_case(k))
    };
    let mut client_params = ParamSet::default();
    // As in PostgreSQL, `options` first: the packet's own parameters override it.
    if let Some((_, options)) = params.iter().find(|(k, _)| k == "options") {
        apply_options(options, &mut client_params, ignored("options"), ignored)?;
    }
    let mut unrecognized = Vec::new();
    for (k, v) in &params {
        match k.as_str() {
            "user" | "database" | "options" => {}
            k if k.starts_with("_pq_.") => unrecognized.push(k.to_owned()),
            k if ignored(k) => {}
            k if client_params.set(k, v) => {}
            k => {
                return Err(fatal(
                    SqlState::PROTOCOL_VIOLATION,
                    format!("unsupported startup parameter: {k}"),
                ))
            }
        }
    }
    let mut out = BytesMut::with_capacity(1024);
    if minor > 0 || !unrecognized.is_empty() {
        let names: Vec<&str> = unrecognized.iter().map(String::as_str).collect();
        backend::negotiate_protocol_version(&mut out, 0, &names);
        stream.write_all(&out).await?;
        out.clear();
    }

    let application_name = params
        .iter()
        .find(|(k, _)| k == "application_name")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    if admin::is_admin_db(&database) {
        // PgBouncer's rule: user "pgbouncer" over the unix socket, from the OS user that
        // runs the pooler, is an admin without a password.
        let same_uid_owner = user == "pgbouncer" && crate::net::peer_is_same_user(stream);
        let secrets = &generation.secrets;
        let method = if same_uid_owner {
            crate::config::AuthType::Trust
        } else {
            hba::method_for(stream, cfg, &database, &user)
                .await
                .map_err(LoginFailure::Notice)?
        };
        let ok = same_uid_owner || auth::authenticate(stream, buf, method, &user, secrets).await?;
        if !ok {
            return Err(LoginFailure::Notice(auth::failure_notice(method, &user)));
        }
        let access = if same_uid_owner {
            Some(admin::Access::Admin)
        } else {
            admin::access_for(cfg, &user)
        };
        let Some(access) = access else {
            return Err(fatal(
                SqlState::INVALID_AUTHORIZATION,
                format!("user \"{user}\" is not allowed to use the admin console (admin_users, stats_users)"),
            ));
        };
        let cancel = ctx.cancel.register_as(cfg.general.peer_id);
        let (pid, secret) = cancel.key();
        backend::auth_ok(&mut out);
        admin::write_startup(&mut out, pid, secret);
        stream.write_all(&out).await?;
        return Ok(LoggedIn::Admin(AdminLogin {
            user,
            access,
            application_name,
            cancel,
            pending: buf.split(),
        }));
    }
    let route = ctx
        .router
        .route(&database, &user)
        .map_err(LoginFailure::Notice)?
        .settled()
        .await;
    let pool = route.home().clone();
    let method = hba::method_for(stream, cfg, &database, &user)
        .await
        .map_err(LoginFailure::Notice)?;
    let verdict = auth_query::authenticate(
        stream,
        buf,
        &ctx.auth_query,
        &generation,
        method,
        &database,
        &user,
    )
    .await?;
    if !verdict.ok {
        return Err(LoginFailure::Notice(auth::failure_notice(method, &user)));
    }
    if let Some(p) = verdict.passthrough.filter(|_| *pool.key().user == *user) {
        // Every host's pool of a replicated database (and its health checks) logs in
        // with it.
        for pool in route.pools() {
            pool.set_passthrough(p.clone());
        }
    }
    let db_slot = ctx
        .router
        .admit_db_client(&database)
        .map_err(LoginFailure::Notice)?;
    let user_slot = ctx
        .router
        .admit_user_client(&user)
        .map_err(LoginFailure::Notice)?;
    let info = pool
        .startup_info()
        .await
        .map_err(|e| LoginFailure::Notice(e.to_notice()))?;
    client_params.fill_from(&info.tracked);
    let client_params = pool.share_params(client_params, &info.tracked);
    let cancel = ctx.cancel.register_as(cfg.general.peer_id);
    let (pid, secret) = cancel.key();

    backend::auth_ok(&mut out);
    for (k, v) in &info.params {
        let value = client_params.get(k).unwrap_or(v);
        backend::parameter_status(&mut out, k, value);
    }
    backend::backend_key_data(&mut out, pid, secret);
    backend::ready_for_query(&mut out, TxStatus::Idle);
    stream.write_all(&out).await?;
    let pool_login = PoolLogin {
        route: route.clone(),
        user: user.into(),
        // The pool key already holds the database name: share it.
        database: pool.key().database.clone(),
        application_name,
        _slots: [db_slot, user_slot],
    };
    Ok(LoggedIn::Pool(
        Session::new(ctx.clone(), route, client_params, cancel, &buf[..]),
        pool_login,
    ))
}

/// Applies the `options` startup parameter: tracked parameters set with `-c` become
/// the client's; others are ignored when `ignore_startup_parameters` lists them,
/// refused otherwise (PgBouncer's rule). With `options` itself listed, anything
/// pgsluice cannot apply is ignored, as when pgsluice ignored the whole parameter.
fn apply_options(
    options: &str,
    params: &mut ParamSet,
    lenient: bool,
    ignored: impl Fn(&str) -> bool,
) -> Result<(), LoginFailure> {
    let fatal = |code, msg: String| LoginFailure::Notice(ClientNotice::fatal(code, msg));
    let settings = match startup_options::settings(options) {
        Ok(s) => s,
        Err(_) if lenient => return Ok(()),
        Err(e) => return Err(fatal(e.code, e.message)),
    };
    for (name, value) in settings {
        if !params.set(&name, &value) && !lenient && !ignored(&name) {
            return Err(fatal(
                SqlState::PROTOCOL_VIOLATION,
                format!("unsupported startup parameter in options: {name}"),
            ));
        }
    }
    Ok(())
}

pub(crate) use crate::net::send_fatal;
