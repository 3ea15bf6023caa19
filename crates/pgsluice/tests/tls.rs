//! TLS both ways with real clients and a real PostgreSQL: psql (libpq) and
//! tokio-postgres (rustls) reach pgsluice with `sslmode=verify-full` and
//! `channel_binding=require` (SCRAM-SHA-256-PLUS); pgsluice reaches a PostgreSQL that
//! only accepts `hostssl` logins with `server_tls_sslmode = verify-full`; client
//! certificates (`auth_type = cert`); certificates replaced and reloaded with SIGHUP.
//!
//! Certificates are made for each test with the `openssl` command: a CA, a server
//! certificate for `localhost` and 127.0.0.1, and a client certificate for `app`.

mod admin_common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use admin_common::{pg_with_app, APP_PW};
use pgsluice_testkit::{pg_bin, PgCluster, Pooler};

const T: Duration = Duration::from_secs(30);

/// A directory of certificates, removed on drop.
struct Certs {
    dir: PathBuf,
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Certs {
    /// A CA, `server.crt`/`server.key` (CN `cn`, SAN localhost and 127.0.0.1) and
    /// `client.crt`/`client.key` (CN app).
    fn new(name: &str) -> Certs {
        let dir = std::env::temp_dir().join(format!("pgsluice-tls-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let c = Certs { dir };
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
            "30",
            "-subj",
            "/CN=pgsluice test CA",
        ];
        ca.extend(ec);
        ca.extend([
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        openssl(&c.dir, &ca);
        c.issue(
            "server",
            "localhost",
            "serverAuth",
            Some("DNS:localhost,IP:127.0.0.1"),
        );
        c.issue("client", "app", "clientAuth", None);
        c
    }

    /// Issues `<name>.crt` and `<name>.key` signed by the CA.
    fn issue(&self, name: &str, cn: &str, usage: &str, san: Option<&str>) {
        let subj = format!("/CN={cn}");
        let (key, csr, crt) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.crt"),
        );
        openssl(
            &self.dir,
            &[
                "req",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-subj",
                &subj,
                "-keyout",
                &key,
                "-out",
                &csr,
            ],
        );
        let mut ext = format!("basicConstraints=CA:FALSE\nextendedKeyUsage={usage}\n");
        if let Some(san) = san {
            ext += &format!("subjectAltName={san}\n");
        }
        let ext_file = format!("{name}.ext");
        std::fs::write(self.dir.join(&ext_file), ext).unwrap();
        openssl(
            &self.dir,
            &[
                "x509",
                "-req",
                "-days",
                "30",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &crt,
                "-extfile",
                &ext_file,
            ],
        );
    }

    fn path(&self, file: &str) -> String {
        self.dir.join(file).to_str().unwrap().to_owned()
    }
}

/// Turns on TLS in `pg` with the server certificate of `certs`, and lets TCP clients
/// in with SCRAM over TLS only (`hostssl`; plain TCP is rejected).
fn pg_tls_only(pg: &PgCluster, certs: &Certs) {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let data = pg.data_dir();
    let owner = std::fs::metadata(data).unwrap();
    for f in ["server.crt", "server.key", "ca.crt"] {
        let to = data.join(format!("test-{f}"));
        std::fs::copy(certs.dir.join(f), &to).unwrap();
        std::os::unix::fs::chown(&to, Some(owner.uid()), Some(owner.gid())).unwrap();
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    std::fs::write(
        data.join("pg_hba.conf"),
        "local all all trust\n\
         hostssl all all 127.0.0.1/32 scram-sha-256\n\
         hostnossl all all 127.0.0.1/32 reject\n",
    )
    .unwrap();
    pg.psql(
        "ALTER SYSTEM SET ssl_cert_file = 'test-server.crt'; \
         ALTER SYSTEM SET ssl_key_file = 'test-server.key'; \
         ALTER SYSTEM SET ssl = on; SELECT pg_reload_conf()",
    )
    .unwrap();
    let deadline = std::time::Instant::now() + T;
    while pg.psql("SHOW ssl").unwrap() != "on" {
        assert!(
            std::time::Instant::now() < deadline,
            "PostgreSQL did not turn ssl on"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A pgsluice child process on a TOML file.
struct Setup {
    file: PathBuf,
    pooler: Pooler,
    addr: SocketAddr,
}

fn spawn(certs: &Certs, general: &str, db_host: &str, pg: &PgCluster) -> Setup {
    let file = certs.dir.join("pgsluice.toml");
    let text = format!(
        "[general]\nlisten = \"127.0.0.1:0\"\nlog_level = \"info\"\n{general}\n\
         [users.app]\npassword = \"{APP_PW}\"\n\n\
         [databases.app]\nhost = \"{db_host}\"\nport = {}\n",
        pg.port()
    );
    std::fs::write(&file, text).unwrap();
    let bin = Path::new(env!("CARGO_BIN_EXE_pgsluice"));
    let pooler = Pooler::spawn(bin, &[file.to_str().unwrap()], &[]).expect("spawn pgsluice");
    let addr = pooler.addr();
    Setup { file, pooler, addr }
}

fn client_tls_settings(certs: &Certs, mode: &str) -> String {
    format!(
        "client_tls_sslmode = \"{mode}\"\nclient_tls_cert_file = \"{}\"\n\
         client_tls_key_file = \"{}\"\nclient_tls_ca_file = \"{}\"\n",
        certs.path("server.crt"),
        certs.path("server.key"),
        certs.path("ca.crt"),
    )
}

/// psql with a libpq connection string; (success, stdout, stderr).
fn psql(conninfo: &str, sql: &str) -> (bool, String, String) {
    let out = Command::new(pg_bin("psql"))
        .args([
            "-X",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            conninfo,
            "-c",
            sql,
        ])
        .env("PGCONNECT_TIMEOUT", "10")
        .env_remove("PGPASSFILE")
        .env_remove("PGSERVICE")
        .env_remove("PGSSLMODE")
        .env_remove("PSQLRC")
        .output()
        .expect("run psql");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        String::from_utf8_lossy(&out.stderr).trim().to_owned(),
    )
}

fn conninfo(addr: SocketAddr, certs: &Certs, extra: &str) -> String {
    format!(
        "host=localhost hostaddr=127.0.0.1 port={} user=app dbname=app password={APP_PW} \
         sslrootcert={} {extra}",
        addr.port(),
        certs.path("ca.crt")
    )
}

#[test]
fn psql_verify_full_with_channel_binding() {
    let certs = Certs::new("psql");
    let pg = pg_with_app();
    let s = spawn(
        &certs,
        &client_tls_settings(&certs, "require"),
        "127.0.0.1",
        &pg,
    );

    let (ok, out, err) = psql(
        &conninfo(
            s.addr,
            &certs,
            "sslmode=verify-full channel_binding=require",
        ),
        "select 'tls ok'",
    );
    assert!(ok, "psql over TLS failed: {err}");
    assert_eq!(out, "tls ok");

    // Plain TCP is refused under client_tls_sslmode = require.
    let (ok, _, err) = psql(&conninfo(s.addr, &certs, "sslmode=disable"), "select 1");
    assert!(!ok);
    assert!(err.contains("TLS required"), "{err}");

    // The certificate does not name this host: verify-full fails, as it must.
    let other = format!(
        "host=127.0.0.2 hostaddr=127.0.0.1 port={} user=app dbname=app password={APP_PW} \
         sslrootcert={} sslmode=verify-full",
        s.addr.port(),
        certs.path("ca.crt")
    );
    let (ok, _, err) = psql(&other, "select 1");
    assert!(!ok);
    assert!(err.contains("does not match host name"), "{err}");
}

/// A rustls client configuration trusting the test CA, with an optional client
/// certificate.
fn rustls_client(certs: &Certs, client_cert: bool) -> rustls::ClientConfig {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(certs.path("ca.crt")).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    if client_cert {
        let chain = CertificateDer::pem_file_iter(certs.path("client.crt"))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(certs.path("client.key")).unwrap();
        builder.with_client_auth_cert(chain, key).unwrap()
    } else {
        builder.with_no_client_auth()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_postgres_rustls_with_channel_binding() {
    let certs = Certs::new("tokio");
    let pg = pg_with_app();
    let s = spawn(
        &certs,
        &format!(
            "admin_users = [\"app\"]\n{}",
            client_tls_settings(&certs, "require")
        ),
        "127.0.0.1",
        &pg,
    );
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(rustls_client(&certs, false));
    let cfg = format!(
        "host=localhost hostaddr=127.0.0.1 port={} user=app dbname=app password={APP_PW} \
         sslmode=require channel_binding=require",
        s.addr.port()
    );
    let (client, conn) = tokio_postgres::connect(&cfg, tls)
        .await
        .expect("TLS connect");
    let task = tokio::spawn(conn);
    // A few round trips, and one larger than a TLS record both ways.
    let big = "x".repeat(100_000);
    for i in 0..20i32 {
        let row = client
            .query_one("select $1::int4 + 1, $2::text", &[&i, &big])
            .await
            .unwrap();
        assert_eq!(row.get::<_, i32>(0), i + 1);
        assert_eq!(row.get::<_, String>(1).len(), big.len());
    }
    // SHOW CLIENTS names the client's TLS session as PgBouncer does.
    let admin_cfg = cfg.replace("dbname=app", "dbname=pgbouncer");
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(rustls_client(&certs, false));
    let (admin, admin_conn) = tokio_postgres::connect(&admin_cfg, tls)
        .await
        .expect("admin console over TLS");
    let admin_task = tokio::spawn(admin_conn);
    let mut labels = Vec::new();
    for m in admin.simple_query("SHOW CLIENTS").await.unwrap() {
        if let tokio_postgres::SimpleQueryMessage::Row(r) = m {
            if r.get("database") == Some("app") {
                labels.push(r.get("tls").unwrap_or_default().to_owned());
            }
        }
    }
    assert_eq!(labels.len(), 1, "{labels:?}");
    assert!(
        labels[0].starts_with("TLSv1.3/TLS_") && labels[0].contains("/ECDH="),
        "{labels:?}"
    );
    drop(admin);
    admin_task.await.unwrap().unwrap();
    drop(client);
    task.await.unwrap().unwrap();
}

#[test]
fn server_side_verify_full_uses_tls_and_scram_plus() {
    let certs = Certs::new("server");
    let pg = pg_with_app();
    pg_tls_only(&pg, &certs);
    let general = format!(
        "admin_users = [\"app\"]\nserver_tls_sslmode = \"verify-full\"\nserver_tls_ca_file = \"{}\"\n",
        certs.path("ca.crt")
    );
    let s = spawn(&certs, &general, "127.0.0.1", &pg);
    let plain = format!(
        "host=127.0.0.1 port={} user=app dbname=app password={APP_PW} sslmode=disable",
        s.addr.port()
    );
    let (ok, out, err) = psql(
        &plain,
        "select ssl from pg_stat_ssl where pid = pg_backend_pid()",
    );
    assert!(ok, "query through pgsluice failed: {err}");
    assert_eq!(out, "t", "the server connection must be TLS");
    let line = s
        .pooler
        .wait_for_line_since(0, "server connection opened", T)
        .expect("server connection logged");
    assert!(line.contains("SCRAM-SHA-256-PLUS"), "{line}");
    assert!(line.contains("tls=true"), "{line}");
    // SHOW SERVERS names the connection's TLS session (column 18, `tls`).
    let (ok, out, err) = psql(
        &plain.replace("dbname=app", "dbname=pgbouncer"),
        "SHOW SERVERS",
    );
    assert!(ok, "SHOW SERVERS: {err}");
    let tls: Vec<&str> = out.lines().filter_map(|l| l.split('|').nth(17)).collect();
    assert!(
        !tls.is_empty() && tls.iter().all(|t| t.starts_with("TLSv1.3/TLS_")),
        "{out}"
    );
}

#[test]
fn server_side_verify_full_refuses_unknown_ca() {
    let certs = Certs::new("badca");
    let other = Certs::new("badca-other");
    let pg = pg_with_app();
    pg_tls_only(&pg, &certs);
    // Trusting another CA: the server's certificate does not validate.
    let general = format!(
        "server_tls_sslmode = \"verify-full\"\nserver_tls_ca_file = \"{}\"\n",
        other.path("ca.crt")
    );
    let s = spawn(&certs, &general, "127.0.0.1", &pg);
    let plain = format!(
        "host=127.0.0.1 port={} user=app dbname=app password={APP_PW} sslmode=disable",
        s.addr.port()
    );
    let (ok, _, err) = psql(&plain, "select 1");
    assert!(!ok);
    assert!(err.contains("TLS with server"), "{err}");
}

#[test]
fn client_certificate_authentication() {
    let certs = Certs::new("cert");
    let pg = pg_with_app();
    let general = format!(
        "auth_type = \"cert\"\n{}",
        client_tls_settings(&certs, "verify-full")
    );
    let s = spawn(&certs, &general, "127.0.0.1", &pg);
    let with_cert = format!(
        "sslmode=verify-full sslcert={} sslkey={}",
        certs.path("client.crt"),
        certs.path("client.key")
    );
    let (ok, out, err) = psql(&conninfo(s.addr, &certs, &with_cert), "select current_user");
    assert!(ok, "cert login failed: {err}");
    assert_eq!(out, "app");

    // No client certificate: the handshake fails.
    let (ok, _, _) = psql(&conninfo(s.addr, &certs, "sslmode=verify-full"), "select 1");
    assert!(!ok);

    // A valid certificate for another user name.
    let (ok, _, err) = psql(
        &format!(
            "host=localhost hostaddr=127.0.0.1 port={} user=postgres dbname=app \
             sslrootcert={} {with_cert}",
            s.addr.port(),
            certs.path("ca.crt")
        ),
        "select 1",
    );
    assert!(!ok);
    assert!(err.contains("certificate authentication failed"), "{err}");
}

/// The subject of the certificate pgsluice presents, as `openssl s_client` sees it.
fn served_subject(addr: SocketAddr) -> String {
    let out = Command::new("openssl")
        .args([
            "s_client",
            "-starttls",
            "postgres",
            "-connect",
            &addr.to_string(),
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run openssl s_client");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find(|l| l.starts_with("subject="))
        .unwrap_or_else(|| panic!("no subject in: {text}"))
        .to_owned()
}

#[test]
fn reload_serves_new_certificate() {
    let certs = Certs::new("reload");
    let pg = pg_with_app();
    let s = spawn(
        &certs,
        &client_tls_settings(&certs, "prefer"),
        "127.0.0.1",
        &pg,
    );
    assert!(served_subject(s.addr).contains("CN = localhost"));

    certs.issue(
        "server",
        "renewed",
        "serverAuth",
        Some("DNS:localhost,IP:127.0.0.1"),
    );
    let since = s.pooler.line_count();
    s.pooler.signal(libc::SIGHUP).unwrap();
    s.pooler
        .wait_for_line_since(since, "configuration reloaded", T)
        .expect("reloaded");
    assert!(served_subject(s.addr).contains("CN = renewed"));
    let (ok, out, err) = psql(
        &conninfo(
            s.addr,
            &certs,
            "sslmode=verify-full channel_binding=require",
        ),
        "select 'renewed ok'",
    );
    assert!(ok, "{err}");
    assert_eq!(out, "renewed ok");

    // A broken key file: the reload fails and the running certificate stays.
    std::fs::write(certs.dir.join("server.key"), "garbage").unwrap();
    let since = s.pooler.line_count();
    s.pooler.signal(libc::SIGHUP).unwrap();
    s.pooler
        .wait_for_line_since(since, "reload failed", T)
        .expect("reload refused");
    assert!(served_subject(s.addr).contains("CN = renewed"));
    let _ = &s.file;
}

#[test]
fn server_side_lower_modes() {
    let certs = Certs::new("modes");
    let pg = pg_with_app();
    let query = "select ssl from pg_stat_ssl where pid = pg_backend_pid()";
    let run = |s: &Setup| {
        psql(
            &format!(
                "host=127.0.0.1 port={} user=app dbname=app password={APP_PW} sslmode=disable",
                s.addr.port()
            ),
            query,
        )
    };
    // PostgreSQL without TLS: prefer falls back to plain TCP, require refuses.
    let s = spawn(
        &certs,
        "server_tls_sslmode = \"prefer\"\n",
        "127.0.0.1",
        &pg,
    );
    assert_eq!(run(&s).1, "f");
    drop(s);
    let s = spawn(
        &certs,
        "server_tls_sslmode = \"require\"\n",
        "127.0.0.1",
        &pg,
    );
    let (ok, _, err) = run(&s);
    assert!(!ok);
    assert!(err.contains("does not accept TLS"), "{err}");
    drop(s);

    // TLS-only PostgreSQL: allow retries with TLS after the plain login is refused;
    // prefer and require use TLS without validating the certificate.
    pg_tls_only(&pg, &certs);
    for mode in ["allow", "prefer", "require"] {
        let s = spawn(
            &certs,
            &format!("server_tls_sslmode = \"{mode}\"\n"),
            "127.0.0.1",
            &pg,
        );
        let (ok, out, err) = run(&s);
        assert!(ok, "{mode}: {err}");
        assert_eq!(out, "t", "{mode}");
    }
}

/// `auth_type = hba` with `cert map=...`: the user name map of `auth_ident_file` says
/// which certificate common name may log in as which user (a certificate for the user
/// name itself is not enough), and SIGHUP reads the map file again.
#[test]
fn cert_rule_with_user_name_map() {
    let certs = Certs::new("certmap");
    certs.issue("alice", "alice@example.com", "clientAuth", None);
    let pg = pg_with_app();
    std::fs::write(
        certs.dir.join("hba.conf"),
        "hostssl all all 127.0.0.1/32 cert map=certs\n",
    )
    .unwrap();
    std::fs::write(
        certs.dir.join("ident.conf"),
        "# MAPNAME SYSTEM-USERNAME    PG-USERNAME\ncerts   alice@example.com  app\n",
    )
    .unwrap();
    let general = format!(
        "auth_type = \"hba\"\nauth_hba_file = \"hba.conf\"\nauth_ident_file = \"ident.conf\"\n{}",
        client_tls_settings(&certs, "verify-full")
    );
    let s = spawn(&certs, &general, "127.0.0.1", &pg);
    let with_cert = |name: &str| {
        format!(
            "sslmode=verify-full sslcert={} sslkey={}",
            certs.path(&format!("{name}.crt")),
            certs.path(&format!("{name}.key"))
        )
    };
    // alice@example.com's certificate logs in as app through the map.
    let (ok, out, err) = psql(
        &conninfo(s.addr, &certs, &with_cert("alice")),
        "select current_user",
    );
    assert!(ok, "mapped cert login failed: {err}");
    assert_eq!(out, "app");
    // A certificate whose common name is app: the map does not list it.
    let (ok, _, err) = psql(&conninfo(s.addr, &certs, &with_cert("client")), "select 1");
    assert!(!ok);
    assert!(
        err.contains("certificate authentication failed for user \"app\""),
        "{err}"
    );

    // The map is read again on SIGHUP: now app's own certificate is listed too.
    std::fs::write(
        certs.dir.join("ident.conf"),
        "certs alice@example.com app\ncerts app all\n",
    )
    .unwrap();
    let since = s.pooler.line_count();
    s.pooler.signal(libc::SIGHUP).unwrap();
    s.pooler
        .wait_for_line_since(since, "configuration reloaded", T)
        .expect("reloaded");
    let (ok, out, err) = psql(
        &conninfo(s.addr, &certs, &with_cert("client")),
        "select current_user",
    );
    assert!(ok, "{err}");
    assert_eq!(out, "app");

    // A broken map file is refused naming file and line; the maps in force stay.
    std::fs::write(certs.dir.join("ident.conf"), "certs /^(.*)$ \\1\n").unwrap();
    let since = s.pooler.line_count();
    s.pooler.signal(libc::SIGHUP).unwrap();
    let line = s
        .pooler
        .wait_for_line_since(since, "reload failed", T)
        .expect("reload refused");
    assert!(line.contains("ident.conf:1:"), "{line}");
    let (ok, _, err) = psql(&conninfo(s.addr, &certs, &with_cert("alice")), "select 1");
    assert!(ok, "{err}");
}
