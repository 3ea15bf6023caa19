//! TLS with rustls (ring provider): the configurations built from the
//! `client_tls_*` and `server_tls_*` settings, and the handshakes.
//!
//! [`TlsState`] is built from `[general]` at startup and again on every reload, so
//! changed certificate, key and CA files serve new connections without a restart. A
//! broken file at startup is a startup error; at reload, the reload fails and the
//! running state stays. Should a state ever be missing its material, it fails closed:
//! no TLS, and no plaintext where the mode requires TLS.

pub mod label;
mod verify;

use std::io;
use std::path::Path;
use std::sync::Arc;

use pgsluice_protocol::auth::cert;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::version::{TLS12, TLS13};
use rustls::{ClientConfig, RootCertStore, ServerConfig, SupportedProtocolVersion};
use tokio::net::TcpStream;

use crate::config::{General, TlsMode};
use crate::net::{Stream, TlsIo};

/// The TLS material in force: toward clients and toward servers.
#[derive(Debug, Clone, Default)]
pub struct TlsState {
    /// TLS toward clients (pgsluice is the TLS server).
    pub clients: Arc<ClientTls>,
    /// TLS toward servers (pgsluice is the TLS client); `None` when disabled.
    pub servers: Option<Arc<ServerTls>>,
}

impl TlsState {
    /// Builds both sides from the settings, reading every file they name.
    pub fn load(g: &General) -> Result<TlsState, String> {
        Ok(TlsState {
            clients: Arc::new(ClientTls::load(g)?),
            servers: ServerTls::load(g)?.map(Arc::new),
        })
    }

    /// The state used when [`TlsState::load`] failed: the modes without the material,
    /// so that nothing is encrypted and nothing that must be encrypted goes in clear.
    pub fn refusing(g: &General) -> TlsState {
        TlsState {
            clients: Arc::new(ClientTls {
                mode: g.client_tls_sslmode,
                acceptor: None,
            }),
            servers: (g.server_tls_sslmode != TlsMode::Disable).then(|| {
                Arc::new(ServerTls {
                    mode: g.server_tls_sslmode,
                    config: None,
                    fingerprint: Vec::new(),
                })
            }),
        }
    }
}

/// TLS toward clients.
#[derive(Debug, Default)]
pub struct ClientTls {
    /// `client_tls_sslmode`.
    pub mode: TlsMode,
    /// The server configuration and the channel binding data of its certificate.
    acceptor: Option<(Arc<ServerConfig>, EndPoint)>,
}

/// `tls-server-end-point` channel binding data of a certificate, shared by every
/// connection that presents it.
type EndPoint = Option<Arc<[u8]>>;

impl ClientTls {
    fn load(g: &General) -> Result<ClientTls, String> {
        let mode = g.client_tls_sslmode;
        if mode == TlsMode::Disable {
            return Ok(ClientTls::default());
        }
        let (Some(cert_file), Some(key_file)) = (&g.client_tls_cert_file, &g.client_tls_key_file)
        else {
            return Err(format!(
                "client_tls_sslmode = {mode} needs client_tls_cert_file and client_tls_key_file"
            ));
        };
        let chain = read_certs(cert_file, "client_tls_cert_file")?;
        let key = read_key(key_file, "client_tls_key_file")?;
        let end_point = cert::tls_server_end_point(&chain[0]).map(Arc::from);
        let versions = protocol_versions(&g.client_tls_protocols, "client_tls_protocols")?;
        let builder = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&versions)
            .map_err(|e| format!("client_tls_protocols: {e}"))?;
        let builder = match mode {
            TlsMode::VerifyCa | TlsMode::VerifyFull => {
                let ca = g.client_tls_ca_file.as_deref().ok_or_else(|| {
                    format!("client_tls_sslmode = {mode} needs client_tls_ca_file")
                })?;
                let roots = read_roots(ca, "client_tls_ca_file")?;
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider(),
                )
                .build()
                .map_err(|e| format!("client_tls_ca_file: {e}"))?;
                builder.with_client_cert_verifier(verifier)
            }
            // PgBouncer does not validate client certificates below verify-ca.
            _ => builder.with_no_client_auth(),
        };
        let config = builder
            .with_single_cert(chain, key)
            .map_err(|e| format!("client_tls_cert_file / client_tls_key_file: {e}"))?;
        Ok(ClientTls {
            mode,
            acceptor: Some((Arc::new(config), end_point)),
        })
    }

    /// Whether an SSLRequest is answered with 'S'.
    pub fn offers_tls(&self) -> bool {
        self.acceptor.is_some()
    }

    /// Whether clients must use TLS (require, verify-ca, verify-full).
    pub fn requires_tls(&self) -> bool {
        matches!(
            self.mode,
            TlsMode::Require | TlsMode::VerifyCa | TlsMode::VerifyFull
        )
    }

    /// Runs the TLS handshake with a client that sent SSLRequest and got 'S'.
    pub async fn accept(&self, tcp: TcpStream) -> io::Result<Stream> {
        let Some((config, end_point)) = &self.acceptor else {
            return Err(io::Error::other("TLS toward clients is not configured"));
        };
        let tls = tokio_rustls::TlsAcceptor::from(config.clone())
            .accept(tcp)
            .await?;
        Ok(Stream::TlsAccepted(Box::new(TlsIo::new(
            tls,
            end_point.clone(),
        ))))
    }
}

/// TLS toward servers.
#[derive(Debug)]
pub struct ServerTls {
    /// `server_tls_sslmode` (never `disable`).
    pub mode: TlsMode,
    /// `None` when the files could not be loaded: every connection fails.
    config: Option<Arc<ClientConfig>>,
    /// What the configuration was built from, to tell whether a reload changed it.
    fingerprint: Vec<u8>,
}

impl PartialEq for ServerTls {
    fn eq(&self, other: &Self) -> bool {
        self.mode == other.mode && self.fingerprint == other.fingerprint
    }
}

impl Eq for ServerTls {}

impl ServerTls {
    fn load(g: &General) -> Result<Option<ServerTls>, String> {
        let mode = g.server_tls_sslmode;
        if mode == TlsMode::Disable {
            return Ok(None);
        }
        let mut fp = Fingerprint::default();
        fp.add(mode.as_str().as_bytes());
        fp.add(g.server_tls_protocols.as_bytes());
        let versions = protocol_versions(&g.server_tls_protocols, "server_tls_protocols")?;
        let builder = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&versions)
            .map_err(|e| format!("server_tls_protocols: {e}"))?;
        let verifier: Arc<dyn rustls::client::danger::ServerCertVerifier> = match mode {
            TlsMode::VerifyCa | TlsMode::VerifyFull => {
                let ca = g.server_tls_ca_file.as_deref().ok_or_else(|| {
                    format!("server_tls_sslmode = {mode} needs server_tls_ca_file")
                })?;
                fp.add(&std::fs::read(ca).unwrap_or_default());
                let roots = read_roots(ca, "server_tls_ca_file")?;
                let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider(),
                )
                .build()
                .map_err(|e| format!("server_tls_ca_file: {e}"))?;
                if mode == TlsMode::VerifyFull {
                    webpki
                } else {
                    Arc::new(verify::IgnoreHostName(webpki))
                }
            }
            // allow, prefer, require: encrypted, certificate not validated (as PgBouncer).
            _ => Arc::new(verify::NoValidation(provider())),
        };
        let builder = builder
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let config = match (&g.server_tls_cert_file, &g.server_tls_key_file) {
            (Some(c), Some(k)) => {
                fp.add(&std::fs::read(c).unwrap_or_default());
                fp.add(&std::fs::read(k).unwrap_or_default());
                let chain = read_certs(c, "server_tls_cert_file")?;
                let key = read_key(k, "server_tls_key_file")?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| format!("server_tls_cert_file / server_tls_key_file: {e}"))?
            }
            (None, None) => builder.with_no_client_auth(),
            _ => return Err("server_tls_cert_file and server_tls_key_file go together".to_owned()),
        };
        Ok(Some(ServerTls {
            mode,
            config: Some(Arc::new(config)),
            fingerprint: fp.finish(),
        }))
    }

    /// Whether a server that answers SSLRequest with 'N' must be refused.
    pub fn requires_tls(&self) -> bool {
        matches!(
            self.mode,
            TlsMode::Require | TlsMode::VerifyCa | TlsMode::VerifyFull
        )
    }

    /// Runs the TLS handshake with a server that answered SSLRequest with 'S'.
    pub async fn connect(&self, tcp: TcpStream, host: &str) -> io::Result<Stream> {
        let name = ServerName::try_from(host.to_owned())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let config = self
            .config
            .clone()
            .ok_or_else(|| io::Error::other("the server_tls_* files could not be loaded"))?;
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await?;
        let end_point = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(|c| cert::tls_server_end_point(c))
            .map(Arc::from);
        Ok(Stream::TlsConnected(Box::new(TlsIo::new(tls, end_point))))
    }
}

/// The crypto provider: ring, with its default cipher suites (all of them AEAD with
/// forward secrecy).
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The TLS versions named by a `*_tls_protocols` value. rustls implements TLS 1.2 and
/// 1.3; older versions in a list are ignored, a list of only older versions is an error.
fn protocol_versions(
    value: &str,
    key: &str,
) -> Result<Vec<&'static SupportedProtocolVersion>, String> {
    let mut v12 = false;
    let mut v13 = false;
    for word in value
        .split(|c: char| c == ',' || c == ':' || c.is_whitespace())
        .filter(|w| !w.is_empty())
    {
        match word.to_ascii_lowercase().as_str() {
            "secure" | "all" | "legacy" | "default" => (v12, v13) = (true, true),
            "tlsv1.2" => v12 = true,
            "tlsv1.3" => v13 = true,
            "tlsv1" | "tlsv1.0" | "tlsv1.1" => {}
            other => return Err(format!("{key}: unknown TLS protocol `{other}`")),
        }
    }
    let mut out = Vec::new();
    if v13 {
        out.push(&TLS13);
    }
    if v12 {
        out.push(&TLS12);
    }
    if out.is_empty() {
        return Err(format!(
            "{key} = {value:?} allows no TLS version pgsluice supports (tlsv1.2, tlsv1.3)"
        ));
    }
    Ok(out)
}

fn read_certs(path: &Path, key: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{key} {}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{key} {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{key} {}: no certificate found", path.display()));
    }
    Ok(certs)
}

fn read_key(path: &Path, key: &str) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| format!("{key} {}: {e}", path.display()))
}

fn read_roots(path: &Path, key: &str) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for c in read_certs(path, key)? {
        roots
            .add(c)
            .map_err(|e| format!("{key} {}: {e}", path.display()))?;
    }
    Ok(roots)
}

/// The settings and file contents a [`ServerTls`] was built from (a few KB).
#[derive(Default)]
struct Fingerprint(Vec<u8>);

impl Fingerprint {
    fn add(&mut self, bytes: &[u8]) {
        self.0
            .extend_from_slice(&(bytes.len() as u64).to_be_bytes());
        self.0.extend_from_slice(bytes);
    }

    fn finish(self) -> Vec<u8> {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols() {
        let v = protocol_versions("secure", "k").unwrap();
        assert_eq!(v.len(), 2);
        let v = protocol_versions("tlsv1.3", "k").unwrap();
        assert_eq!(v, vec![&TLS13]);
        let v = protocol_versions("tlsv1.1, tlsv1.2", "k").unwrap();
        assert_eq!(v, vec![&TLS12]);
        assert!(protocol_versions("tlsv1.1", "k")
            .unwrap_err()
            .contains("allows no TLS version"));
        assert!(protocol_versions("sslv3", "k")
            .unwrap_err()
            .contains("unknown TLS protocol `sslv3`"));
    }

    #[test]
    fn modes_need_their_files() {
        let g = General {
            client_tls_sslmode: TlsMode::Require,
            ..General::default()
        };
        assert!(TlsState::load(&g)
            .unwrap_err()
            .contains("needs client_tls_cert_file"));
        let g = General {
            server_tls_sslmode: TlsMode::VerifyFull,
            ..General::default()
        };
        assert!(TlsState::load(&g)
            .unwrap_err()
            .contains("needs server_tls_ca_file"));
        let g = General {
            server_tls_sslmode: TlsMode::Require,
            ..General::default()
        };
        let s = TlsState::load(&g).unwrap();
        assert!(s.servers.unwrap().requires_tls());
        assert!(!s.clients.offers_tls());
    }
}
