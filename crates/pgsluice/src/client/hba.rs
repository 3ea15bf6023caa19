//! Choosing the authentication method of one client connection: `auth_type`, or with
//! `auth_type = hba` the first matching rule of `auth_hba_file` (refusing the client
//! the way PostgreSQL does when a rule rejects it or none matches, and checking `peer`
//! rules against the unix-socket peer's OS user, and `cert` rules with a `map=` against
//! the user name map of `auth_ident_file`).

use pgsluice_protocol::SqlState;

use crate::config::hba::{HbaMethod, Transport};
use crate::config::{AuthType, Config};
use crate::error::ClientNotice;
use crate::net::Stream;

/// The method `authenticate` runs for this client, or the FATAL to refuse it with.
pub(crate) async fn method_for(
    stream: &Stream,
    cfg: &Config,
    database: &str,
    user: &str,
) -> Result<AuthType, ClientNotice> {
    if cfg.general.auth_type != AuthType::Hba {
        return Ok(cfg.general.auth_type);
    }
    let transport = transport_of(stream);
    let (host, encryption) = match transport {
        Transport::Unix => ("[local]".to_owned(), "no encryption"),
        Transport::Tcp { addr, tls } => (
            addr.to_string(),
            if tls {
                "SSL encryption"
            } else {
                "no encryption"
            },
        ),
    };
    let refuse = |what: &str| {
        ClientNotice::fatal(
            SqlState::INVALID_AUTHORIZATION,
            format!("{what} for host \"{host}\", user \"{user}\", database \"{database}\", {encryption}"),
        )
    };
    // Validation guarantees the rules with auth_type = hba; without them, refuse.
    let Some((rules, rule)) = cfg
        .hba
        .as_ref()
        .and_then(|r| Some((r, r.find(transport, database, user)?)))
    else {
        return Err(refuse("no pg_hba.conf entry"));
    };
    tracing::debug!(line = rule.line, method = %rule.method, "auth_hba_file rule matched");
    Ok(match rule.method {
        HbaMethod::Reject => return Err(refuse("pg_hba.conf rejects connection")),
        HbaMethod::Trust => AuthType::Trust,
        HbaMethod::Md5 => AuthType::Md5,
        HbaMethod::Password => AuthType::Plain,
        HbaMethod::ScramSha256 => AuthType::ScramSha256,
        HbaMethod::Cert => {
            let Some(map) = &rule.map else {
                // No map: `authenticate` checks that the common name is the user name.
                return Ok(AuthType::Cert);
            };
            // The certificate was validated in the TLS handshake (hostssl rules only
            // match TLS clients; client_tls_sslmode verify-ca or verify-full).
            let cn = stream
                .client_certificate()
                .and_then(pgsluice_protocol::auth::cert::subject_common_name);
            if !cn
                .as_deref()
                .is_some_and(|cn| rules.permits(rule, cn, user))
            {
                tracing::info!(user, common_name = ?cn, map, line = rule.line, "certificate user name map has no match");
                return Err(crate::client::auth::failure_notice(AuthType::Cert, user));
            }
            AuthType::Trust
        }
        HbaMethod::Peer => {
            let uid = crate::net::peer_uid(stream);
            let os_user = match uid {
                Some(uid) => tokio::task::spawn_blocking(move || crate::net::os_user_name(uid))
                    .await
                    .ok()
                    .flatten(),
                None => None,
            };
            if !os_user
                .as_deref()
                .is_some_and(|os| rules.permits(rule, os, user))
            {
                tracing::info!(user, os_user = ?os_user, uid = ?uid, map = ?rule.map, "peer authentication failed");
                return Err(ClientNotice::fatal(
                    SqlState::INVALID_AUTHORIZATION,
                    format!("Peer authentication failed for user \"{user}\""),
                ));
            }
            AuthType::Trust
        }
    })
}

/// How the client is connected, for rule matching.
fn transport_of(stream: &Stream) -> Transport {
    let tls = stream.is_tls();
    match stream.tcp().and_then(|t| t.peer_addr().ok()) {
        Some(a) => Transport::Tcp {
            addr: a.ip().to_canonical(),
            tls,
        },
        None if matches!(stream, Stream::Unix(_)) => Transport::Unix,
        // A TCP socket whose peer address cannot be read (already gone): no rule with
        // an address matches it.
        None => Transport::Tcp {
            addr: std::net::Ipv6Addr::UNSPECIFIED.into(),
            tls,
        },
    }
}
