//! Authenticating clients: the secrets pgsluice holds per user, and the exchanges for
//! trust, plain password, md5, SCRAM-SHA-256 (SCRAM-SHA-256-PLUS over TLS) and TLS
//! client certificates (`cert`).

use bytes::BytesMut;
use pgsluice_protocol::auth::{cert, md5, scram};
use pgsluice_protocol::backend;
use pgsluice_protocol::frame::{split_message, Message};
use pgsluice_protocol::frontend;
use pgsluice_protocol::SqlState;
use subtle::ConstantTimeEq;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::AuthType;
use crate::error::{ClientError, ClientNotice};
use crate::net::Stream;
use crate::server::PassThrough;

/// Largest password/SASL message accepted from a client (its length field):
/// PostgreSQL's `PG_MAX_AUTH_TOKEN_LENGTH`, so that cleartext passwords and tokens of
/// up to 64 KB (cloud IAM tokens are several KB) pass, as they do with PgBouncer.
const MAX_AUTH_MESSAGE: u32 = 65_535;

pub use crate::secrets::{Secrets, UserSecret};

/// The outcome of [`authenticate_with`].
#[derive(Debug, Default)]
pub struct Verdict {
    /// Whether the client proved who it is.
    pub ok: bool,
    /// On success with a stored secret that is not a plaintext password: the
    /// credential to log in to the server with (PgBouncer's pass-through).
    pub passthrough: Option<PassThrough>,
}

/// The FATAL a client gets when [`authenticate`] said no.
pub fn failure_notice(method: AuthType, user: &str) -> ClientNotice {
    match method {
        AuthType::Cert => ClientNotice::fatal(
            SqlState::INVALID_AUTHORIZATION,
            format!("certificate authentication failed for user \"{user}\""),
        ),
        _ => ClientNotice::fatal(
            SqlState::INVALID_PASSWORD,
            format!("password authentication failed for user \"{user}\""),
        ),
    }
}

/// Runs the authentication exchange `method` with a client. On failure the caller sends
/// [`failure_notice`].
pub async fn authenticate(
    stream: &mut Stream,
    buf: &mut BytesMut,
    method: AuthType,
    user: &str,
    secrets: &Secrets,
) -> Result<bool, ClientError> {
    let v = authenticate_with(
        stream,
        buf,
        method,
        user,
        secrets.get(user),
        secrets.decoy(),
    )
    .await?;
    Ok(v.ok)
}

/// [`authenticate`] against `secret` (None: an unknown user, run against `decoy` so that
/// it cannot be told from a wrong password), also returning the pass-through credential.
pub async fn authenticate_with(
    stream: &mut Stream,
    buf: &mut BytesMut,
    method: AuthType,
    user: &str,
    secret: Option<&UserSecret>,
    decoy: &scram::ScramSecret,
) -> Result<Verdict, ClientError> {
    let hashed_md5 = secret
        .filter(|s| s.plain.is_none())
        .and_then(|s| s.md5.clone());
    let ok = |ok: bool| Verdict {
        ok,
        passthrough: hashed_md5.clone().filter(|_| ok).map(PassThrough::Md5),
    };
    let mut out = BytesMut::with_capacity(256);
    match method {
        AuthType::Trust => Ok(ok(true)),
        // The certificate was validated in the TLS handshake (client_tls_sslmode
        // verify-ca or verify-full); its subject's common name must be the user name.
        AuthType::Cert => Ok(ok(stream
            .client_certificate()
            .and_then(cert::subject_common_name)
            .is_some_and(|cn| cn == user))),
        AuthType::Plain => {
            backend::auth_cleartext(&mut out);
            stream.write_all(&out).await?;
            let msg = read_auth_message(stream, buf).await?;
            let given = frontend::parse_password(&msg.body)?;
            let given = std::str::from_utf8(given).unwrap_or("");
            let Some(s) = secret else {
                return Ok(ok(false));
            };
            if let (None, Some(verifier)) = (&s.plain, &s.scram) {
                // Only a verifier: the check yields the ClientKey, which logs in to a
                // server holding the same verifier (as after a SCRAM exchange).
                return Ok(match verifier.client_key_for(given) {
                    Some(client_key) => Verdict {
                        ok: true,
                        passthrough: Some(PassThrough::Scram {
                            client_key,
                            secret: verifier.clone(),
                        }),
                    },
                    None => Verdict::default(),
                });
            }
            Ok(ok(check_plain(user, s, given)))
        }
        AuthType::Md5 if secret.is_some_and(|s| s.md5.is_none() && s.scram.is_some()) => {
            // PostgreSQL also upgrades md5 to SCRAM when only a SCRAM verifier is stored.
            scram_exchange(stream, buf, secret, decoy).await
        }
        AuthType::Md5 => {
            let salt: [u8; 4] = rand::random();
            backend::auth_md5(&mut out, salt);
            stream.write_all(&out).await?;
            let msg = read_auth_message(stream, buf).await?;
            let given = frontend::parse_password(&msg.body)?;
            Ok(ok(secret.and_then(|s| s.md5.as_deref()).is_some_and(
                |stored| md5::verify(user, stored, salt, given),
            )))
        }
        AuthType::ScramSha256 => scram_exchange(stream, buf, secret, decoy).await,
        // `client::hba::method_for` turns hba into the method of the matching rule
        // before this is called; refuse should it ever get here.
        AuthType::Hba => Ok(ok(false)),
    }
}

fn check_plain(user: &str, secret: &UserSecret, given: &str) -> bool {
    if let Some(p) = &secret.plain {
        return bool::from(p.as_bytes().ct_eq(given.as_bytes()));
    }
    if let Some(stored) = &secret.md5 {
        let h = md5::hash_password(user, given);
        return bool::from(h.as_bytes().ct_eq(stored.as_bytes()));
    }
    // A verifier-only secret is checked by the caller (ScramSecret::client_key_for).
    false
}

async fn scram_exchange(
    stream: &mut Stream,
    buf: &mut BytesMut,
    user_secret: Option<&UserSecret>,
    decoy: &scram::ScramSecret,
) -> Result<Verdict, ClientError> {
    let secret = user_secret.and_then(|s| s.scram.clone());
    let known = secret.is_some();
    let mut server = scram::ScramServer::new(secret.unwrap_or_else(|| decoy.clone()));
    if let Some(end_point) = stream.tls_server_end_point() {
        server = server.with_channel_binding(end_point.to_vec());
    }
    let mut out = BytesMut::with_capacity(256);
    backend::auth_sasl(&mut out, server.offered_mechanisms());
    stream.write_all(&out).await?;

    let msg = read_auth_message(stream, buf).await?;
    let (mechanism, data) = frontend::parse_sasl_initial_response(&msg.body)?;
    let Ok(first) = server.handle_client_first(mechanism, data) else {
        return Ok(Verdict::default());
    };
    out.clear();
    backend::auth_sasl_continue(&mut out, &first);
    stream.write_all(&out).await?;

    let msg = read_auth_message(stream, buf).await?;
    let Ok(last) = server.handle_client_final(&msg.body) else {
        return Ok(Verdict::default());
    };
    let Some(user_secret) = user_secret.filter(|_| known) else {
        return Ok(Verdict::default());
    };
    out.clear();
    backend::auth_sasl_final(&mut out, &last);
    stream.write_all(&out).await?;
    // A plaintext password logs in to the server by itself; a verifier needs the
    // ClientKey this exchange revealed.
    let passthrough = match (&user_secret.plain, &user_secret.scram, server.client_key()) {
        (None, Some(secret), Some(client_key)) => Some(PassThrough::Scram {
            client_key,
            secret: secret.clone(),
        }),
        _ => None,
    };
    Ok(Verdict {
        ok: true,
        passthrough,
    })
}

async fn read_auth_message(
    stream: &mut Stream,
    buf: &mut BytesMut,
) -> Result<Message, ClientError> {
    loop {
        if let Some(m) = split_message(buf, MAX_AUTH_MESSAGE)? {
            if m.tag != frontend::tag::PASSWORD {
                return Err(ClientError::Refused(format!(
                    "expected password response, got message type {:?}",
                    m.tag as char
                )));
            }
            return Ok(m);
        }
        if stream.read_buf(buf).await? == 0 {
            return Err(ClientError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
    }
}
