//! Client TLS for the idle-memory test (`memory-tls`): a CA and a server certificate
//! made with the `openssl` command, both poolers told to require TLS from clients, and
//! a rustls configuration for the clients (tokio-postgres-rustls, `sslmode=require`
//! with the certificate checked against the CA).

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

/// PEM files of a server certificate (SAN 127.0.0.1) and the CA that signed it.
pub(crate) struct TlsFiles {
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
    pub(crate) ca: PathBuf,
}

impl TlsFiles {
    /// pgsluice's settings, as environment variables.
    pub(crate) fn pgsluice_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("PGSLUICE_CLIENT_TLS_SSLMODE", "require".into()),
            (
                "PGSLUICE_CLIENT_TLS_CERT_FILE",
                self.cert.display().to_string(),
            ),
            (
                "PGSLUICE_CLIENT_TLS_KEY_FILE",
                self.key.display().to_string(),
            ),
        ]
    }

    /// PgBouncer's settings, as pgbouncer.ini lines of `[pgbouncer]`.
    pub(crate) fn pgbouncer_ini(&self) -> String {
        format!(
            "client_tls_sslmode = require\nclient_tls_cert_file = {}\nclient_tls_key_file = {}\n",
            self.cert.display(),
            self.key.display()
        )
    }

    /// A connector for tokio-postgres that trusts the CA.
    pub(crate) fn connector(&self) -> io::Result<tokio_postgres_rustls::MakeRustlsConnect> {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(&self.ca).map_err(io::Error::other)? {
            roots
                .add(c.map_err(io::Error::other)?)
                .map_err(io::Error::other)?;
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
    }
}

fn openssl(dir: &Path, args: &[&str]) -> io::Result<()> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "openssl {}: {}",
            args.first().unwrap_or(&""),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Makes `ca.crt` and `server.crt`/`server.key` (P-256, SAN 127.0.0.1) in `dir`,
/// readable by all (PgBouncer runs as `postgres` when the bench runs as root).
pub(crate) fn make_certs(dir: &Path) -> io::Result<TlsFiles> {
    use std::os::unix::fs::PermissionsExt;
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec![
        "req",
        "-x509",
        "-days",
        "2",
        "-subj",
        "/CN=pgsluice-bench CA",
    ];
    ca.extend(ec);
    ca.extend(["-keyout", "ca.key", "-out", "ca.crt"]);
    ca.extend(["-addext", "basicConstraints=critical,CA:TRUE"]);
    ca.extend(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
    openssl(dir, &ca)?;
    let mut csr = vec!["req", "-new", "-subj", "/CN=127.0.0.1"];
    csr.extend(ec);
    csr.extend(["-keyout", "server.key", "-out", "server.csr"]);
    openssl(dir, &csr)?;
    std::fs::write(
        dir.join("server.ext"),
        "basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1\n",
    )?;
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-days",
            "2",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-extfile",
            "server.ext",
        ],
    )?;
    for f in ["ca.crt", "server.crt", "server.key"] {
        std::fs::set_permissions(dir.join(f), std::fs::Permissions::from_mode(0o644))?;
    }
    Ok(TlsFiles {
        cert: dir.join("server.crt"),
        key: dir.join("server.key"),
        ca: dir.join("ca.crt"),
    })
}
