//! Streaming replication between throwaway clusters: starting a replica of a
//! running cluster (pg_basebackup), promoting it, pausing and resuming its WAL
//! replay, and waiting until it has caught up with its primary, so tests can
//! cover read/write splitting and failover against real standbys.
//!
//! A replica is an ordinary [`PgCluster`] (own temp dir, port, cleanup on
//! drop); nothing here ties its lifetime to the primary's. Every wait polls a
//! condition with a deadline and fails with what it saw last.

use std::fs;
use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::datadir::quote_conf_value;
use super::env::{clean_pg_env, pg_bin};
use super::lifecycle::wait_child;
use super::lsn::Lsn;
use super::poll::{poll_until, Check};
use super::sql::{parse_bool, quote_literal};
use super::{PgCluster, SUPERUSER};

/// Deadline for pg_basebackup and pg_ctl runs.
const TOOL_DEADLINE: Duration = Duration::from_secs(60);
/// Deadline for a replica to stream, catch up, pause, resume or promote.
const REPLICATION_DEADLINE: Duration = Duration::from_secs(30);

/// How far a standby has got with the WAL its primary wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Progress {
    /// Received and flushed by the WAL receiver (`pg_last_wal_receive_lsn`).
    Received,
    /// Replayed, so visible to queries (`pg_last_wal_replay_lsn`).
    Replayed,
}

impl PgCluster {
    /// Starts a streaming replica of this running primary and waits until it
    /// streams: the primary's `pg_stat_replication` shows it (under
    /// [`PgCluster::name`]) as `streaming` and it is in recovery. The replica
    /// is a copy made with `pg_basebackup -R -X stream -c fast`, has the
    /// primary's [`ClusterOptions`](super::ClusterOptions), its own temp dir
    /// and port, and is stopped and deleted on drop like any cluster. Takes
    /// well under a second on an idle primary.
    ///
    /// Err (`Unsupported`) when this cluster is itself a standby: the
    /// testkit runs with `full_page_writes = off`, which rules out a base
    /// backup taken from a standby.
    pub fn start_replica(&self) -> io::Result<PgCluster> {
        let started = Instant::now();
        if self.child.is_none() {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                format!("primary on port {} is not running", self.port),
            ));
        }
        if self.is_in_recovery()? {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "start_replica needs a primary, but port {} is a standby",
                    self.port
                ),
            ));
        }
        // From here on `replica`'s Drop cleans up on any error.
        let mut replica = PgCluster::prepare(self.opts.clone(), self.detached)?;
        replica.base_backup_from(self)?;
        replica.write_config()?;
        replica.append_conf(&format!(
            "# ---- pgsluice-testkit replica of port {} ----\ncluster_name = {}\n",
            self.port,
            quote_conf_value(replica.name())
        ))?;
        replica.launch_on_free_port()?;
        replica.wait_streaming_from(self)?;
        eprintln!(
            "pgsluice-testkit: replica of 127.0.0.1:{} streaming on 127.0.0.1:{} (pid {}) in {:.2?}, dir {}",
            self.port,
            replica.port,
            replica.pid,
            started.elapsed(),
            replica.root.display()
        );
        Ok(replica)
    }

    /// Whether the server is a standby (`pg_is_in_recovery()`).
    pub fn is_in_recovery(&self) -> io::Result<bool> {
        parse_bool(&self.psql("select pg_is_in_recovery()")?)
    }

    /// Stops the server at once, like `pg_ctl stop -m immediate` (the crash
    /// of a failover test). Same as `stop(StopMode::Immediate)`.
    pub fn stop_immediate(&mut self) -> io::Result<()> {
        self.stop(super::StopMode::Immediate)
    }

    /// Promotes this standby with `pg_ctl promote` and waits until it has
    /// left recovery, so it accepts writes. Err if it is not a standby.
    pub fn promote(&self) -> io::Result<()> {
        if !self.is_in_recovery()? {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("port {} is not a standby, nothing to promote", self.port),
            ));
        }
        let mut cmd = Command::new(pg_bin("pg_ctl"));
        cmd.args(["promote", "-W", "-D"]).arg(&self.data_dir);
        self.run_tool(cmd, "pg_ctl promote")?;
        poll_until("promotion", REPLICATION_DEADLINE, || {
            Ok(if self.is_in_recovery()? {
                Check::NotYet(format!("port {} still in recovery", self.port))
            } else {
                Check::Done(())
            })
        })
    }

    /// Pauses WAL replay on this standby (`pg_wal_replay_pause()`) and waits
    /// until replay has really stopped: from then on, writes on the primary
    /// still arrive ([`PgCluster::wait_received`]) but are not visible here.
    pub fn pause_replay(&self) -> io::Result<()> {
        self.psql("select pg_wal_replay_pause()")?;
        self.wait_pause_state("paused")
    }

    /// Resumes WAL replay paused by [`PgCluster::pause_replay`]
    /// (`pg_wal_replay_resume()`) and waits until the standby says so.
    pub fn resume_replay(&self) -> io::Result<()> {
        self.psql("select pg_wal_replay_resume()")?;
        self.wait_pause_state("not paused")
    }

    /// Waits until this standby has replayed everything `primary` had written
    /// when the call began, so a row committed there before the call is
    /// visible here. Returns the replay position reached. Fails at once if
    /// replay is paused.
    pub fn wait_caught_up(&self, primary: &PgCluster) -> io::Result<Lsn> {
        self.wait_progress(primary, Progress::Replayed)
    }

    /// Waits until this standby has received (not necessarily replayed)
    /// everything `primary` had written when the call began. With replay
    /// paused this proves that the WAL arrived while its changes stay
    /// invisible. Returns the receive position reached.
    pub fn wait_received(&self, primary: &PgCluster) -> io::Result<Lsn> {
        self.wait_progress(primary, Progress::Received)
    }

    /// Where this primary inserts its next WAL record
    /// (`pg_current_wal_insert_lsn()`). Err on a standby.
    pub fn current_lsn(&self) -> io::Result<Lsn> {
        self.psql("select pg_current_wal_insert_lsn()")?.parse()
    }

    /// The end of the last WAL record this standby replayed
    /// (`pg_last_wal_replay_lsn()`). Err on a cluster that never was a standby.
    pub fn replay_lsn(&self) -> io::Result<Lsn> {
        parse_lsn(
            "pg_last_wal_replay_lsn()",
            &self.psql("select pg_last_wal_replay_lsn()")?,
        )
    }

    /// How far this standby's WAL receiver got (`pg_last_wal_receive_lsn()`).
    /// Err on a cluster that never streamed.
    pub fn receive_lsn(&self) -> io::Result<Lsn> {
        parse_lsn(
            "pg_last_wal_receive_lsn()",
            &self.psql("select pg_last_wal_receive_lsn()")?,
        )
    }

    /// Copies `primary`'s data dir into `self.data_dir` as a standby
    /// (`standby.signal` and `primary_conninfo` over the primary's unix socket).
    fn base_backup_from(&self, primary: &PgCluster) -> io::Result<()> {
        let mut cmd = Command::new(pg_bin("pg_basebackup"));
        cmd.arg("-h")
            .arg(&primary.socket_dir)
            .arg("-p")
            .arg(primary.port.to_string())
            .args(["-U", SUPERUSER, "-D"])
            .arg(&self.data_dir)
            // -c fast: checkpoint now instead of spreading it over ~90 s.
            .args([
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
                "--no-sync",
                "--no-manifest",
            ]);
        self.run_tool(cmd, "pg_basebackup")
    }

    /// Waits until `primary` lists this replica as streaming and the replica
    /// is in recovery.
    fn wait_streaming_from(&self, primary: &PgCluster) -> io::Result<()> {
        let sql = format!(
            "select state from pg_stat_replication where application_name = {}",
            quote_literal(self.name())
        );
        poll_until("replica streaming", REPLICATION_DEADLINE, || {
            let state = primary.psql(&sql)?;
            Ok(if state == "streaming" {
                Check::Done(())
            } else {
                Check::NotYet(format!(
                    "pg_stat_replication state of {:?} on port {}: {state:?}",
                    self.name(),
                    primary.port
                ))
            })
        })?;
        if self.is_in_recovery()? {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "replica on port {} streams but is not in recovery",
                self.port
            )))
        }
    }

    /// Polls `pg_get_wal_replay_pause_state()` until it is `want`.
    fn wait_pause_state(&self, want: &str) -> io::Result<()> {
        poll_until(&format!("replay {want}"), REPLICATION_DEADLINE, || {
            let state = self.psql("select pg_get_wal_replay_pause_state()")?;
            Ok(if state == want {
                Check::Done(())
            } else {
                Check::NotYet(format!("pause state {state:?}"))
            })
        })
    }

    /// Waits until this standby's `progress` reaches the end of the last
    /// record `primary` has written.
    fn wait_progress(&self, primary: &PgCluster, progress: Progress) -> io::Result<Lsn> {
        let target = primary.last_record_end()?;
        let sql = "select pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn(), \
                   pg_is_wal_replay_paused()";
        poll_until(
            &format!("standby on port {} {progress:?} up to {target}", self.port),
            REPLICATION_DEADLINE,
            || {
                let row = self.psql_row(sql)?;
                let [received, replayed, paused] = row.as_slice() else {
                    return Err(io::Error::other(format!("unexpected row {row:?}")));
                };
                let received = parse_lsn("pg_last_wal_receive_lsn()", received)?;
                let replayed = parse_lsn("pg_last_wal_replay_lsn()", replayed)?;
                let reached = match progress {
                    Progress::Received => received,
                    Progress::Replayed if parse_bool(paused)? => {
                        return Err(io::Error::other(format!(
                            "replay on port {} is paused at {replayed}: it cannot catch up \
                             with {target} (resume_replay first)",
                            self.port
                        )))
                    }
                    Progress::Replayed => replayed,
                };
                Ok(if reached >= target {
                    Check::Done(reached)
                } else {
                    Check::NotYet(format!("received {received}, replayed {replayed}"))
                })
            },
        )
    }

    /// End of the last WAL record this primary has inserted (not only
    /// flushed: with `synchronous_commit = off` a commit returns before its
    /// record is flushed, and the walwriter streams it within ~200 ms).
    fn last_record_end(&self) -> io::Result<Lsn> {
        let row = self.psql_row(
            "select pg_current_wal_insert_lsn(), current_setting('wal_block_size'), \
             pg_size_bytes(current_setting('wal_segment_size'))",
        )?;
        let [lsn, block, segment] = row.as_slice() else {
            return Err(io::Error::other(format!("unexpected row {row:?}")));
        };
        let number = |s: &str| {
            s.parse::<u64>()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{s:?}: {e}")))
        };
        Ok(lsn
            .parse::<Lsn>()?
            .record_end_from_insert(number(block)?, number(segment)?))
    }

    /// Runs a PostgreSQL client program as the server's OS user, output
    /// appended to the server log, killed after [`TOOL_DEADLINE`]. Err with
    /// the log's tail when it fails.
    fn run_tool(&self, mut cmd: Command, what: &str) -> io::Result<()> {
        let log = fs::OpenOptions::new().append(true).open(&self.log_path)?;
        cmd.current_dir(&self.root)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        clean_pg_env(&mut cmd);
        cmd.env("LC_MESSAGES", "C").env("PGCONNECT_TIMEOUT", "10");
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid);
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("spawning {what}: {e}")))?;
        let status = match wait_child(&mut child, TOOL_DEADLINE)? {
            Some(status) => status,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "{what} did not finish within {TOOL_DEADLINE:?}; log:\n{}",
                        self.log_tail(20)
                    ),
                ));
            }
        };
        if status.success() {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "{what} failed ({status}); log:\n{}",
                self.log_tail(20)
            )))
        }
    }
}

/// An LSN column; NULL (empty) is an error naming `what`.
fn parse_lsn(what: &str, s: &str) -> io::Result<Lsn> {
    if s.trim().is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{what} is NULL (not a standby?)"),
        ));
    }
    s.parse()
}
