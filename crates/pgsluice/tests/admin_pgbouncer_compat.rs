//! Side by side with a real PgBouncer (Debian's package, 1.18 at the time of writing):
//! for every SHOW command that PgBouncer knows, each of its columns appears in
//! pgsluice's result with the same type OID and in the same relative order. pgsluice
//! follows PgBouncer's current release (1.25), which added columns in between and
//! renamed one; those differences are listed here and in docs/admin-console.md.

mod admin_common;

use std::net::SocketAddr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use admin_common::*;
use pgsluice::config::AuthType;
use pgsluice::Instance;
use pgsluice_testkit::{free_port, Pooler};

/// Columns PgBouncer renamed after 1.18: (command, old name, current name).
const RENAMED: &[(&str, &str, &str)] = &[("SHOW DATABASES", "reserve_pool", "reserve_pool_size")];

/// Type changes after 1.18 (command, column, old OID): none known.
const RETYPED: &[(&str, &str, u32)] = &[];

const COMMANDS: &[&str] = &[
    "SHOW POOLS",
    "SHOW DATABASES",
    "SHOW CLIENTS",
    "SHOW SERVERS",
    "SHOW SOCKETS",
    "SHOW ACTIVE_SOCKETS",
    "SHOW USERS",
    "SHOW STATS",
    "SHOW STATS_TOTALS",
    "SHOW STATS_AVERAGES",
    "SHOW TOTALS",
    "SHOW LISTS",
    "SHOW CONFIG",
    "SHOW MEM",
    "SHOW FDS",
    "SHOW DNS_HOSTS",
    "SHOW DNS_ZONES",
    "SHOW VERSION",
];

fn pgbouncer_bin() -> Option<PathBuf> {
    let candidates = [
        PathBuf::from("/usr/sbin/pgbouncer"),
        PathBuf::from("/usr/bin/pgbouncer"),
    ];
    candidates.into_iter().find(|p| p.is_file())
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Starts PgBouncer with trust authentication for admin/stats, pointing at `pg_port`.
fn start_pgbouncer(bin: &Path, pg_port: u16) -> (Pooler, TempDir) {
    let dir = std::env::temp_dir().join(format!("pgsluice-pgbouncer-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let port = free_port();
    let userlist = dir.join("userlist.txt");
    std::fs::write(&userlist, "\"admin\" \"x\"\n\"stats\" \"x\"\n").unwrap();
    let ini = dir.join("pgbouncer.ini");
    std::fs::write(
        &ini,
        format!(
            "[databases]\napp = host=127.0.0.1 port={pg_port} dbname=app\n\n\
             [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nauth_type = trust\n\
             auth_file = {}\nadmin_users = admin\nstats_users = stats\nunix_socket_dir =\n\
             logfile =\npidfile =\n",
            userlist.display()
        ),
    )
    .unwrap();
    for f in [&userlist, &ini] {
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    // PgBouncer refuses to run as root: switch to the postgres user then.
    let root = std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false);
    let mut cmd = Command::new(bin);
    if root {
        cmd.args(["-u", "postgres"]);
    }
    cmd.arg(&ini);
    let pooler = Pooler::spawn_command(cmd).expect("start pgbouncer");
    (pooler, TempDir(dir))
}

/// Checks that `old` (PgBouncer's) appears in `new` (ours) in order, with equal types.
fn check_columns(cmd: &str, old: &[Column], new: &[Column]) {
    let mut at = 0;
    for (name, oid) in old {
        let want = RENAMED
            .iter()
            .find(|(c, o, _)| *c == cmd && o == name)
            .map_or(name.as_str(), |(_, _, n)| *n);
        let Some(pos) = new[at..].iter().position(|(n, _)| n == want) else {
            panic!("{cmd}: column {want} missing or out of order\n pgbouncer: {old:?}\n pgsluice: {new:?}");
        };
        let ours = new[at + pos].1;
        let retyped = RETYPED
            .iter()
            .any(|(c, n, o)| *c == cmd && n == name && o == oid);
        assert!(
            ours == *oid || retyped,
            "{cmd}: column {name} has type {ours}, PgBouncer {oid}"
        );
        at += pos + 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_columns_match_a_real_pgbouncer() {
    let Some(bin) = pgbouncer_bin() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "PgBouncer is not installed (scripts/install-deps installs it)"
        );
        eprintln!("PgBouncer not installed: skipping the side-by-side comparison");
        return;
    };
    let pg = pg_with_app();
    let (bouncer, _dir) = start_pgbouncer(&bin, pg.port());
    let theirs = bouncer.addr();
    let mut cfg = base_config(&pg);
    cfg.general.auth_type = AuthType::Trust;
    let server = Instance::start(cfg).await.unwrap();
    let ours: SocketAddr = server.local_addrs()[0];
    tokio::task::spawn_blocking(move || {
        let version = raw_query(theirs, "admin", "", "pgbouncer", "SHOW VERSION").unwrap();
        eprintln!("comparing with {:?}", version.1);
        for cmd in COMMANDS {
            let (old, old_rows) = raw_query(theirs, "admin", "", "pgbouncer", cmd)
                .unwrap_or_else(|e| panic!("pgbouncer {cmd}: {e}"));
            let (new, new_rows) = raw_query(ours, "admin", "", "pgbouncer", cmd)
                .unwrap_or_else(|e| panic!("pgsluice {cmd}: {e}"));
            check_columns(cmd, &old, &new);
            // Row-per-figure views: PgBouncer's row names appear in ours, in order.
            if matches!(*cmd, "SHOW TOTALS" | "SHOW LISTS") {
                let names = |rows: &[Row]| -> Vec<Column> {
                    rows.iter()
                        .map(|r| (r[0].clone().unwrap_or_default(), 0))
                        .collect()
                };
                check_columns(cmd, &names(&old_rows), &names(&new_rows));
            }
        }
        // The SHOW VERSION text keeps the form tools parse.
        let (_, rows) = raw_query(ours, "admin", "", "pgbouncer", "SHOW VERSION").unwrap();
        let v = rows[0][0].clone().unwrap();
        let theirs_v = version.1[0][0].clone().unwrap();
        assert!(
            theirs_v.starts_with("PgBouncer ") && v.starts_with("PgBouncer "),
            "{theirs_v} / {v}"
        );
    })
    .await
    .unwrap();
    drop(bouncer);
}
