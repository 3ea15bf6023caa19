//! Streaming replicas and failover with real PostgreSQL: a replica streams,
//! sees the primary's rows once caught up, refuses writes, can be paused and
//! promoted (also after its primary crashed), its counters show where
//! queries ran, and nothing outlives a test that panics.

use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use pgsluice_testkit::{PgCluster, ServerIdentity, SUPERUSER, SUPERUSER_PASSWORD};

/// A primary with table `t(x int)` and a streaming replica of it.
fn pair() -> (PgCluster, PgCluster) {
    let primary = PgCluster::start().expect("start primary");
    primary.psql("create table t(x int)").unwrap();
    let started = Instant::now();
    let replica = primary.start_replica().expect("start replica");
    eprintln!("replica ready in {:?}", started.elapsed());
    (primary, replica)
}

/// Runs `sql` on `pg` with verbose errors, so a failure names its SQLSTATE.
fn psql_verbose(pg: &PgCluster, sql: &str) -> io::Result<String> {
    pg.psql(&format!("\\set VERBOSITY verbose\n{sql}"))
}

#[test]
fn replica_starts_and_streams() {
    let (primary, replica) = pair();
    assert_ne!(primary.port(), replica.port());
    assert_ne!(primary.root_dir(), replica.root_dir());
    assert_eq!(
        primary
            .psql(&format!(
                "select state, sync_state from pg_stat_replication where application_name = '{}'",
                replica.name()
            ))
            .unwrap(),
        "streaming|async"
    );
    assert_eq!(
        replica
            .psql("select status from pg_stat_wal_receiver")
            .unwrap(),
        "streaming"
    );
    assert!(!primary.is_in_recovery().unwrap());
    assert!(replica.is_in_recovery().unwrap());
    assert_eq!(
        replica.identity().unwrap(),
        ServerIdentity {
            port: replica.port(),
            in_recovery: true
        }
    );
    assert!(primary.is(&primary.identity().unwrap()));
    assert!(!replica.is(&primary.identity().unwrap()));
    // The replica keeps the primary's options and answers over TCP with them.
    assert_eq!(replica.options(), primary.options());
    let url = replica.url(SUPERUSER, SUPERUSER_PASSWORD, "postgres");
    assert_eq!(
        ServerIdentity::through(&url).unwrap(),
        replica.identity().unwrap()
    );
    // A replica of a replica is refused with a clear error.
    let err = replica.start_replica().unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::Unsupported, "{err}");
}

#[test]
fn row_inserted_on_primary_is_visible_on_replica_after_catch_up() {
    let (primary, replica) = pair();
    for round in 1..=3 {
        primary
            .psql(&format!("insert into t values ({round})"))
            .unwrap();
        let waited = Instant::now();
        let reached = replica.wait_caught_up(&primary).unwrap();
        eprintln!("caught up with insert {round} in {:?}", waited.elapsed());
        assert!(reached <= primary.current_lsn().unwrap());
        assert_eq!(
            replica.psql("select count(*), max(x) from t").unwrap(),
            format!("{round}|{round}")
        );
    }
    // Catching up again with nothing new returns at once, at the same place.
    let a = replica.wait_caught_up(&primary).unwrap();
    let b = replica.wait_caught_up(&primary).unwrap();
    assert!(b >= a);
}

#[test]
fn writes_on_replica_fail_read_only() {
    let (primary, replica) = pair();
    for sql in [
        "insert into t values (1)",
        "create table u(y int)",
        "update t set x = 2",
    ] {
        let err = psql_verbose(&replica, sql).unwrap_err().to_string();
        assert!(err.contains("25006"), "{sql}: {err}");
        assert!(err.contains("read-only transaction"), "{sql}: {err}");
    }
    // The same statement works on the primary.
    psql_verbose(&primary, "insert into t values (1)").unwrap();
}

#[test]
fn promote_makes_replica_writable() {
    let (primary, replica) = pair();
    primary.psql("insert into t values (1)").unwrap();
    replica.wait_caught_up(&primary).unwrap();
    replica.promote().unwrap();
    assert!(!replica.is_in_recovery().unwrap());
    assert!(!replica.identity().unwrap().in_recovery);
    psql_verbose(&replica, "insert into t values (2)").unwrap();
    assert_eq!(replica.psql("select sum(x) from t").unwrap(), "3");
    // The old primary is untouched: it does not see the promoted one's write.
    assert_eq!(primary.psql("select sum(x) from t").unwrap(), "1");
    let err = replica.promote().unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
    let err = primary.promote().unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
}

#[test]
fn paused_replay_shows_lag_and_resume_catches_up() {
    let (primary, replica) = pair();
    primary.psql("insert into t values (1)").unwrap();
    replica.wait_caught_up(&primary).unwrap();
    replica.pause_replay().unwrap();
    let replayed = replica.replay_lsn().unwrap();
    let primary_before = primary.current_lsn().unwrap();

    primary
        .psql("insert into t select g from generate_series(2, 100) g")
        .unwrap();
    assert!(primary.current_lsn().unwrap() > primary_before);
    // The WAL arrives, but replay stays where it was and the rows stay invisible.
    let received = replica.wait_received(&primary).unwrap();
    assert!(
        received > replayed,
        "received {received}, replayed {replayed}"
    );
    assert_eq!(replica.replay_lsn().unwrap(), replayed);
    assert_eq!(replica.psql("select count(*) from t").unwrap(), "1");
    // Waiting for replay while paused fails at once instead of timing out.
    let err = replica.wait_caught_up(&primary).unwrap_err();
    assert!(err.to_string().contains("paused"), "{err}");

    replica.resume_replay().unwrap();
    let caught_up = replica.wait_caught_up(&primary).unwrap();
    assert!(caught_up >= received);
    assert_eq!(replica.psql("select count(*) from t").unwrap(), "100");
}

#[test]
fn failover_after_primary_crash() {
    let (mut primary, replica) = pair();
    primary.psql("insert into t values (1)").unwrap();
    replica.wait_caught_up(&primary).unwrap();
    let old_pid = primary.postmaster_pid();

    primary.stop_immediate().unwrap();
    assert!(!primary.is_running());
    assert!(!proc_alive(old_pid));
    assert!(primary.psql("select 1").is_err());
    // The standby stays up, read-only, with the data it had.
    assert!(replica.is_in_recovery().unwrap());
    assert_eq!(replica.psql("select sum(x) from t").unwrap(), "1");

    replica.promote().unwrap();
    psql_verbose(&replica, "insert into t values (2)").unwrap();
    assert_eq!(replica.psql("select sum(x) from t").unwrap(), "3");
    assert_eq!(
        replica.identity().unwrap(),
        ServerIdentity {
            port: replica.port(),
            in_recovery: false
        }
    );
    // The promoted server can have a replica of its own.
    let next = replica.start_replica().unwrap();
    next.wait_caught_up(&replica).unwrap();
    assert_eq!(next.psql("select sum(x) from t").unwrap(), "3");
}

#[test]
fn stat_database_shows_where_queries_ran() {
    let (primary, replica) = pair();
    primary.psql("create database app").unwrap();
    primary
        .psql_db(
            "app",
            "create table r(x int); insert into r values (1), (2), (3)",
        )
        .unwrap();
    replica.wait_caught_up(&primary).unwrap();

    let replica_before = replica.stat_database("app").unwrap();
    const READS: u64 = 5;
    for _ in 0..READS {
        assert_eq!(replica.psql_db("app", "select sum(x) from r").unwrap(), "6");
    }
    let replica_after = replica
        .wait_stat_database("app", |s| {
            s.xact_commit >= replica_before.xact_commit + READS
                && s.tup_returned >= replica_before.tup_returned + 3 * READS
        })
        .unwrap();
    assert_eq!(replica_after.tup_inserted, 0, "a standby inserts nothing");

    let primary_before = primary.stat_database("app").unwrap();
    primary
        .psql_db("app", "insert into r values (4), (5)")
        .unwrap();
    primary
        .wait_stat_database("app", |s| {
            s.tup_inserted >= primary_before.tup_inserted + 2
                && s.xact_commit > primary_before.xact_commit
        })
        .unwrap();
    replica.wait_caught_up(&primary).unwrap();
    assert_eq!(replica.stat_database("app").unwrap().tup_inserted, 0);
    assert!(replica.stat_database("no_such_db").is_err());
}

#[test]
fn nothing_outlives_a_test_that_panics() {
    let seen: Arc<Mutex<(Vec<u32>, Vec<PathBuf>)>> = Arc::default();
    let record = Arc::clone(&seen);
    let test = std::thread::spawn(move || {
        let remember = |pg: &PgCluster| {
            let mut seen = record.lock().unwrap();
            seen.0.push(pg.postmaster_pid());
            seen.0.extend(children_of(pg.postmaster_pid()));
            seen.1.push(pg.root_dir().to_path_buf());
        };
        let (primary, replica) = pair();
        let second = primary.start_replica().unwrap();
        second.pause_replay().unwrap();
        replica.promote().unwrap();
        for pg in [&primary, &replica, &second] {
            remember(pg);
        }
        panic!("test failed midway");
    });
    assert!(test.join().is_err(), "the thread panicked");
    let (pids, dirs) = &*seen.lock().unwrap();
    // Postmasters plus at least their walsenders / walreceivers.
    assert!(pids.len() > 6, "{pids:?}");
    for pid in pids {
        assert!(!proc_alive(*pid), "process {pid} survived the drop");
    }
    for dir in dirs {
        assert!(!dir.exists(), "{} survived the drop", dir.display());
    }
}

/// Whether `pid` exists and is not a zombie.
fn proc_alive(pid: u32) -> bool {
    proc_stat(pid).is_some_and(|(state, _)| !matches!(state, 'Z' | 'X'))
}

/// Pids whose parent is `parent`.
fn children_of(parent: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| proc_stat(*pid).is_some_and(|(_, ppid)| ppid == parent))
        .collect()
}

/// (state, ppid) from /proc/PID/stat.
fn proc_stat(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    let state = fields.next()?.chars().next()?;
    Some((state, fields.next()?.parse().ok()?))
}
