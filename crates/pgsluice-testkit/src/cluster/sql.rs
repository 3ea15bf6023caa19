//! Talking SQL to a cluster as its superuser: psql over the unix socket,
//! creating roles and databases, connection URLs, and the quoting all of them
//! need. Everything here runs after the cluster is ready; nothing starts or
//! stops the server.

use std::fmt::Write as _;
use std::io::{self, Write as _};
use std::process::{Command, Stdio};

use super::env::{clean_pg_env, pg_bin};
use super::{PgCluster, SUPERUSER, SUPERUSER_PASSWORD};

impl PgCluster {
    /// `postgres://postgres:postgres@127.0.0.1:PORT/postgres`.
    pub fn superuser_url(&self) -> String {
        self.url(SUPERUSER, SUPERUSER_PASSWORD, "postgres")
    }

    /// `postgres://user:password@127.0.0.1:PORT/db` (components percent-encoded).
    pub fn url(&self, user: &str, password: &str, db: &str) -> String {
        format!(
            "postgres://{}:{}@127.0.0.1:{}/{}",
            percent_encode(user),
            percent_encode(password),
            self.port,
            percent_encode(db)
        )
    }

    /// Runs `sql` with psql as the superuser over the unix socket in database
    /// `postgres` (`-X -q -A -t -v ON_ERROR_STOP=1`, script on stdin, so several
    /// statements and psql meta-commands work). Returns trimmed stdout; Err
    /// with stderr if psql fails.
    pub fn psql(&self, sql: &str) -> io::Result<String> {
        self.psql_db("postgres", sql)
    }

    /// Like [`PgCluster::psql`], in database `db`.
    pub fn psql_db(&self, db: &str, sql: &str) -> io::Result<String> {
        let mut cmd = Command::new(pg_bin("psql"));
        cmd.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(&self.socket_dir)
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-U", SUPERUSER, "-d", db, "-f", "-"]);
        run_psql(cmd, sql)
    }

    /// The first row of `sql`'s result (run like [`PgCluster::psql`]), split
    /// into its columns; a NULL is an empty string. Err if there is no row.
    pub(super) fn psql_row(&self, sql: &str) -> io::Result<Vec<String>> {
        let out = self.psql(sql)?;
        let line = out.lines().next().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, format!("no row from {sql:?}"))
        })?;
        Ok(line.split('|').map(str::to_string).collect())
    }

    /// `CREATE ROLE name LOGIN PASSWORD 'password'`, hashed with md5 for
    /// [`HostAuth::Md5`](super::HostAuth::Md5) clusters and scram-sha-256 otherwise.
    pub fn create_user(&self, name: &str, password: &str) -> io::Result<()> {
        self.psql(&format!(
            "SET password_encryption = '{}';\nCREATE ROLE {} LOGIN PASSWORD {};\n",
            self.opts.host_auth.password_encryption(),
            quote_ident(name),
            quote_literal(password)
        ))
        .map(drop)
    }

    /// `CREATE DATABASE name OWNER owner`.
    pub fn create_database(&self, name: &str, owner: &str) -> io::Result<()> {
        self.psql(&format!(
            "CREATE DATABASE {} OWNER {};\n",
            quote_ident(name),
            quote_ident(owner)
        ))
        .map(drop)
    }
}

/// Runs `sql` with psql against a connection URL or conninfo string (for
/// example a pooler's `postgres://user:pw@127.0.0.1:PORT/db`), with the same
/// flags as [`PgCluster::psql`]: trimmed stdout, or Err with stderr. Nothing
/// from the caller's environment (`PGHOST`, `PGPASSWORD`, ...) leaks in.
pub fn psql_url(url: &str, sql: &str) -> io::Result<String> {
    let mut cmd = Command::new(pg_bin("psql"));
    cmd.args([
        "-X",
        "-q",
        "-A",
        "-t",
        "-v",
        "ON_ERROR_STOP=1",
        "-d",
        url,
        "-f",
        "-",
    ]);
    run_psql(cmd, sql)
}

/// Runs a prepared psql command with `sql` as its script (10 s connect
/// timeout, clean libpq environment).
fn run_psql(mut cmd: Command, sql: &str) -> io::Result<String> {
    clean_pg_env(&mut cmd);
    cmd.env("PGCONNECT_TIMEOUT", "10");
    let out = run_with_stdin(cmd, sql.as_bytes())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(io::Error::other(format!(
            "psql failed ({}) running {sql:?}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Runs `cmd` with `input` on its stdin (written from a thread, so a child
/// that fills its stdout pipe first cannot deadlock us) and collects its output.
fn run_with_stdin(mut cmd: Command, input: &[u8]) -> io::Result<std::process::Output> {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn()?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        // psql may exit early (e.g. connection failure): ignore EPIPE.
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output()?;
    let _ = writer.join();
    Ok(out)
}

/// psql's `t`/`f`.
pub(super) fn parse_bool(s: &str) -> io::Result<bool> {
    match s.trim() {
        "t" => Ok(true),
        "f" => Ok(false),
        other => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("expected t or f, got {other:?}"),
        )),
    }
}

/// Quotes an SQL identifier: `"name"` with embedded quotes doubled.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes an SQL string literal: `'text'` with embedded quotes doubled
/// (standard_conforming_strings is on).
pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub(crate) fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}
