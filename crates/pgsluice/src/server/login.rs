//! Opening a server connection: socket, TLS (SSLRequest, as `server_tls_sslmode`
//! says), StartupMessage, authentication (SCRAM-SHA-256-PLUS over TLS when offered),
//! parameters.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use pgsluice_protocol::auth::{md5, scram};
use pgsluice_protocol::backend::{self, tag, AuthRequest};
use pgsluice_protocol::frame::split_message;
use pgsluice_protocol::{frontend, startup};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use super::{
    BackendKey, PassThrough, RelayBuffers, ServerConn, ServerId, ServerTarget, MAX_CONTROL_MESSAGE,
    RELAY_BUF,
};
use crate::config::TlsMode;
use crate::error::ServerError;
use crate::net::Stream;
use crate::params::ParamSet;
use crate::tls::ServerTls;

/// Connects and logs in, within `timeout`.
pub async fn connect(
    target: Arc<ServerTarget>,
    id: ServerId,
    timeout: Duration,
) -> Result<ServerConn, ServerError> {
    let addr = target.display_addr();
    let attempt = async {
        // `allow`: plain TCP first, TLS when the server refuses that login (libpq's way).
        let allow_first_plain = target
            .tls
            .as_ref()
            .is_some_and(|t| t.mode == TlsMode::Allow);
        match connect_inner(target.clone(), id, !allow_first_plain).await {
            Err(ServerError::Rejected { code, .. })
                if allow_first_plain && code == "28000" && !target.host.starts_with('/') =>
            {
                connect_inner(target, id, true).await
            }
            r => r,
        }
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(r) => r,
        Err(_) => Err(ServerError::ConnectTimeout(addr)),
    }
}

/// Asks for TLS with SSLRequest and runs the handshake when the server agrees. A
/// server that declines is used in plain TCP unless the mode requires TLS.
async fn negotiate_tls(
    stream: Stream,
    target: &ServerTarget,
    tls: &ServerTls,
) -> Result<Stream, ServerError> {
    let Stream::Tcp(mut tcp) = stream else {
        // Unix sockets: no TLS, as libpq.
        return Ok(stream);
    };
    let err = |reason: String| ServerError::Tls {
        addr: target.display_addr(),
        reason,
    };
    let mut out = BytesMut::with_capacity(8);
    startup::write_ssl_request(&mut out);
    tcp.write_all(&out).await?;
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer).await?;
    match answer[0] {
        b'S' => tls
            .connect(tcp, &target.host)
            .await
            .map_err(|e| err(e.to_string())),
        b'N' if tls.requires_tls() => Err(err(format!(
            "the server does not accept TLS (server_tls_sslmode = {})",
            tls.mode
        ))),
        b'N' => Ok(Stream::Tcp(tcp)),
        other => Err(err(format!(
            "unexpected answer {:?} to SSLRequest",
            other as char
        ))),
    }
}

/// Opens the socket to a target (also used for cancel requests).
pub(crate) async fn open_socket(target: &ServerTarget) -> Result<Stream, ServerError> {
    let r = if target.host.starts_with('/') {
        UnixStream::connect(target.display_addr())
            .await
            .map(Stream::from)
    } else {
        TcpStream::connect((target.host.as_str(), target.port))
            .await
            .map(Stream::from)
    };
    r.map_err(|source| ServerError::Connect {
        addr: target.display_addr(),
        source,
    })
}

async fn connect_inner(
    target: Arc<ServerTarget>,
    id: ServerId,
    try_tls: bool,
) -> Result<ServerConn, ServerError> {
    let mut stream = open_socket(&target).await?;
    if let (Some(tls), true) = (&target.tls, try_tls) {
        stream = negotiate_tls(stream, &target, tls).await?;
    }
    let mut out = BytesMut::with_capacity(256);
    let mut params: Vec<(&str, &str)> =
        vec![("user", &target.user), ("database", &target.database)];
    if let Some(app) = &target.application_name {
        params.push(("application_name", app));
    }
    startup::write_startup(&mut out, &params);
    stream.write_all(&out).await?;

    let mut buf = BytesMut::with_capacity(1024);
    let mut scram_client: Option<scram::ScramClient> = None;
    let mut auth_method = "none";
    let mut key = None;
    let mut startup_params = Vec::new();
    let mut tracked = ParamSet::default();
    loop {
        let msg = loop {
            if let Some(m) = split_message(&mut buf, MAX_CONTROL_MESSAGE)? {
                break m;
            }
            if stream.read_buf(&mut buf).await? == 0 {
                return Err(ServerError::Closed);
            }
        };
        match msg.tag {
            tag::AUTHENTICATION => {
                out.clear();
                match backend::parse_auth(&msg.body)? {
                    AuthRequest::Ok => continue,
                    AuthRequest::Cleartext => {
                        auth_method = "password";
                        // Only a plaintext password can be sent in clear; never a hash.
                        let pw = plaintext_password(&target)?;
                        frontend::password(&mut out, pw.as_bytes());
                    }
                    AuthRequest::Md5 { salt } => {
                        auth_method = "md5";
                        let resp = md5::client_response(&target.user, md5_secret(&target)?, salt);
                        frontend::password(&mut out, resp.as_bytes());
                    }
                    AuthRequest::Sasl { mechanisms } => {
                        if !mechanisms.contains(&scram::SCRAM_SHA_256) {
                            return Err(ServerError::UnsupportedAuth(10));
                        }
                        let binding = scram::ChannelBinding::choose(
                            &mechanisms,
                            stream.tls_server_end_point().map(<[u8]>::to_vec),
                        );
                        let client = scram_client_for(&target)?.with_channel_binding(binding);
                        frontend::sasl_initial_response(
                            &mut out,
                            client.mechanism(),
                            &client.client_first(),
                        );
                        auth_method = client.mechanism();
                        scram_client = Some(client);
                    }
                    AuthRequest::SaslContinue(data) => {
                        let client = scram_client
                            .as_mut()
                            .ok_or(ServerError::UnsupportedAuth(11))?;
                        let reply = client.handle_server_first(data)?;
                        frontend::sasl_response(&mut out, &reply);
                    }
                    AuthRequest::SaslFinal(data) => {
                        let client = scram_client
                            .as_mut()
                            .ok_or(ServerError::UnsupportedAuth(12))?;
                        client.handle_server_final(data)?;
                        // Accepted: the next connection can skip the key derivation.
                        if let Some(keys) = client.derived_keys() {
                            target.scram_keys.set(keys.clone());
                        }
                        continue;
                    }
                    AuthRequest::Unsupported(code) => {
                        return Err(ServerError::UnsupportedAuth(code))
                    }
                }
                stream.write_all(&out).await?;
            }
            tag::PARAMETER_STATUS => {
                let (name, value) = backend::parse_parameter_status(&msg.body)?;
                tracked.set(name, value);
                startup_params.push((name.to_owned(), value.to_owned()));
            }
            tag::BACKEND_KEY_DATA => {
                let (pid, secret) = backend::parse_backend_key_data(&msg.body)?;
                key = Some(BackendKey {
                    pid,
                    secret: secret.to_vec(),
                });
            }
            tag::ERROR_RESPONSE => {
                let f = backend::parse_error_fields(&msg.body)?;
                return Err(ServerError::Rejected {
                    code: f.code.to_owned(),
                    message: f.message.to_owned(),
                    fatal: true,
                });
            }
            tag::READY_FOR_QUERY => {
                if !buf.is_empty() {
                    return Err(ServerError::Protocol(
                        pgsluice_protocol::ProtocolError::Malformed("data after ReadyForQuery"),
                    ));
                }
                let now = Instant::now();
                let conn = ServerConn {
                    id,
                    stream,
                    key: Arc::new(key.unwrap_or(BackendKey {
                        pid: 0,
                        secret: vec![0; 4],
                    })),
                    target,
                    params: tracked,
                    startup_params,
                    created: now,
                    last_used: now,
                    buffers: RelayBuffers {
                        c2s: vec![0; RELAY_BUF].into_boxed_slice(),
                        s2c: vec![0; RELAY_BUF].into_boxed_slice(),
                    },
                    ext: Default::default(),
                };
                tracing::info!(
                    server = %conn.id,
                    addr = %conn.target.display_addr(),
                    db = %conn.target.database,
                    user = %conn.target.user,
                    backend_pid = conn.key.pid,
                    tls = conn.stream.is_tls(),
                    auth = auth_method,
                    "server connection opened"
                );
                return Ok(conn);
            }
            // NoticeResponse, NegotiateProtocolVersion: nothing to do.
            _ => {}
        }
    }
}

/// The configured password when it is plaintext (not an md5 hash nor a SCRAM verifier).
fn plaintext_password(target: &ServerTarget) -> Result<&str, ServerError> {
    target
        .password
        .as_deref()
        .filter(|p| !md5::is_md5_hash(p) && scram::ScramSecret::parse(p).is_none())
        .ok_or_else(|| ServerError::NoPassword(target.user.clone()))
}

/// What answers an md5 challenge: a plaintext password or an md5 hash, configured or
/// passed through from a client's login.
fn md5_secret(target: &ServerTarget) -> Result<&str, ServerError> {
    if let Ok(pw) = plaintext_password(target) {
        return Ok(pw);
    }
    match (target.password.as_deref(), target.passthrough.as_deref()) {
        (Some(p), _) if md5::is_md5_hash(p) => Ok(p),
        (_, Some(PassThrough::Md5(hash))) => Ok(hash),
        _ => Err(ServerError::NoPassword(target.user.clone())),
    }
}

/// The SCRAM client: from a plaintext password, else from a ClientKey passed through
/// from a client's SCRAM login.
fn scram_client_for(target: &ServerTarget) -> Result<scram::ScramClient, ServerError> {
    if let Ok(pw) = plaintext_password(target) {
        return Ok(scram::ScramClient::new(pw).with_derived_keys(target.scram_keys.get()));
    }
    match target.passthrough.as_deref() {
        Some(PassThrough::Scram { client_key, secret }) => Ok(scram::ScramClient::with_client_key(
            *client_key,
            secret.clone(),
        )),
        _ => Err(ServerError::NoPassword(target.user.clone())),
    }
}

/// Sends a CancelRequest for `key` to the server at `target` over a new connection
/// (bounded at 5 s overall; see [`send_cancel_within`]).
pub async fn send_cancel(target: &ServerTarget, key: &BackendKey) -> Result<(), ServerError> {
    send_cancel_within(target, key, Some(Duration::from_secs(5))).await
}

/// Sends a CancelRequest and waits for PostgreSQL to close the connection, giving up
/// (and closing it) after `limit` (cancel_wait_timeout; None = no limit).
pub async fn send_cancel_within(
    target: &ServerTarget,
    key: &BackendKey,
    limit: Option<Duration>,
) -> Result<(), ServerError> {
    let send = async {
        let mut stream = open_socket(target).await?;
        let mut out = BytesMut::with_capacity(16);
        startup::write_cancel(&mut out, key.pid, &key.secret);
        stream.write_all(&out).await?;
        // PostgreSQL closes the connection once it has read the request.
        let mut sink = [0u8; 16];
        let _ = stream.read(&mut sink).await;
        Ok(())
    };
    match limit {
        None => send.await,
        Some(d) => tokio::time::timeout(d, send)
            .await
            .unwrap_or_else(|_| Err(ServerError::CancelTimeout(target.display_addr()))),
    }
}
