//! The benchmark run: set up PostgreSQL and the poolers, run each section, write the
//! results folder.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Instant;

use pgsluice_protocol::auth::scram::ScramSecret;
use pgsluice_testkit::{pg_bin, ClusterOptions, HostAuth, PgCluster};

use crate::args::{Args, Cell, Mode, Workload};
use crate::model::{Contender, Latency, Results, Sample, Skipped};
use crate::pgbench::{self, Script};
use crate::procs::{self, Backend, RunningPooler, TempDir, DB, PASSWORD, USER};
use crate::{chart, progress, report};

/// Where each contender listens during a section (None = not running).
struct Targets<'a> {
    pgsluice: Option<&'a RunningPooler>,
    pgbouncer: Option<&'a RunningPooler>,
    direct_port: u16,
    dbname: &'a str,
}

impl Targets<'_> {
    fn port(&self, who: Contender) -> Option<u16> {
        match who {
            Contender::Pgsluice => self.pgsluice.map(|p| p.addr().port()),
            Contender::Pgbouncer => self.pgbouncer.map(|p| p.addr().port()),
            Contender::Direct => Some(self.direct_port),
        }
    }

    fn pid(&self, who: Contender) -> Option<u32> {
        match who {
            Contender::Pgsluice => self.pgsluice.map(RunningPooler::pid),
            Contender::Pgbouncer => self.pgbouncer.map(RunningPooler::pid),
            Contender::Direct => None,
        }
    }
}

/// Counts runs done and estimates the time left.
struct Progress {
    total: usize,
    done: usize,
    started: Instant,
}

impl Progress {
    fn tick(&mut self) -> String {
        self.done += 1;
        let per = self.started.elapsed().as_secs_f64() / self.done as f64;
        let left = per * self.total.saturating_sub(self.done) as f64;
        format!("[{}/{} ~{:.0}s left]", self.done, self.total, left)
    }
}

/// Runs everything `a` asks for and writes the results folder.
pub(crate) fn run(a: &Args, pgsluice_bin: &Path) -> Result<(), String> {
    let (stamp, iso) = crate::utc_now();
    let out_dir = a.out.join(&stamp);
    fs::create_dir_all(&out_dir).map_err(|e| format!("creating {}: {e}", out_dir.display()))?;
    let work = TempDir::new("work").map_err(|e| e.to_string())?;
    let mut r = Results::default();
    meta(a, pgsluice_bin, &iso, &mut r);

    let wants = |s: &str| a.sections.contains(&s);
    if ["throughput", "latency", "memory", "memory-tls", "storm"]
        .iter()
        .any(|s| wants(s))
    {
        if let Err(e) = postgres_sections(a, pgsluice_bin, work.path(), &mut r) {
            progress(format_args!("PostgreSQL sections failed: {e}"));
            r.failures.push(format!("PostgreSQL sections: {e}"));
        }
    }
    if wants("pooler-only") {
        if let Err(e) = pooler_only(a, pgsluice_bin, work.path(), &mut r) {
            progress(format_args!("pooler-only section failed: {e}"));
            r.failures.push(format!("pooler-only: {e}"));
        }
    }

    let md = report::markdown(&r);
    let write = |name: &str, text: &str| {
        fs::write(out_dir.join(name), text).map_err(|e| format!("writing {name}: {e}"))
    };
    write("results.md", &md)?;
    write("runs.csv", &report::csv(&r))?;
    write("results.json", &report::json(&r))?;
    for c in chart::charts(&r)? {
        write(&c.file, &c.svg)?;
    }
    println!("{md}");
    progress(format_args!("results written to {}", out_dir.display()));
    Ok(())
}

fn meta(a: &Args, pgsluice_bin: &Path, iso: &str, r: &mut Results) {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "?".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let git = std::process::Command::new("git")
        .args(["describe", "--always", "--dirty"])
        .current_dir(crate::args::repo_root())
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let mut m = vec![
        ("date", iso.to_owned()),
        ("machine", format!("{cores} cores, {cpu}")),
        (
            "kernel",
            fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_owned(),
        ),
        (
            "pgsluice",
            format!("{} (git {git}), {}", crate::version_of(pgsluice_bin), pgsluice_bin.display()),
        ),
        ("PgBouncer", procs::pgbouncer_version().unwrap_or_default()),
        ("pgbench", crate::version_of(&pgbench::pgbench_bin())),
        ("PostgreSQL", crate::version_of(&pg_bin("postgres"))),
        (
            "mode",
            format!(
                "{}: {} rounds x {} s per cell (pgbench -T gets 1 s more per 250 clients for its connections), scale {}, pool size {} (both poolers, transaction mode, SCRAM), pgsluice workers {}",
                if a.quick { "quick" } else { "full" },
                a.rounds,
                a.duration,
                a.scale,
                a.pool_size,
                a.workers.map_or("default (half the cores)".into(), |w| w.to_string()),
            ),
        ),
    ];
    m.push((
        "note",
        "pooler, PostgreSQL and pgbench share the same cores; compare within this run only"
            .to_owned(),
    ));
    r.meta = m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
}

fn postgres_sections(a: &Args, bin: &Path, work: &Path, r: &mut Results) -> Result<(), String> {
    progress(format_args!(
        "starting PostgreSQL (max_connections {})",
        a.max_connections
    ));
    let opts = ClusterOptions {
        host_auth: HostAuth::Scram,
        max_connections: a.max_connections,
        settings: vec![("shared_buffers".into(), "128MB".into())],
    };
    let pg = PgCluster::start_with(opts).map_err(|e| format!("starting PostgreSQL: {e}"))?;
    pg.create_user(USER, PASSWORD).map_err(|e| e.to_string())?;
    pg.create_database(DB, USER).map_err(|e| e.to_string())?;
    let backend = Backend {
        port: pg.port(),
        dbname: DB.into(),
    };
    let secret = pg
        .psql(&format!(
            "select rolpassword from pg_authid where rolname = '{USER}'"
        ))
        .map_err(|e| format!("reading the SCRAM verifier: {e}"))?;
    let wants = |s: &str| a.sections.contains(&s);
    if wants("throughput") || wants("latency") {
        progress(format_args!("pgbench -i -s {}", a.scale));
        pgbench::initialize(pg.port(), DB, a.scale).map_err(|e| e.to_string())?;
        progress(format_args!("starting pgsluice and PgBouncer"));
        let sl = procs::start_pgsluice(bin, &backend, a.pool_size, a.workers, &[])
            .map_err(|e| format!("starting pgsluice: {e}"))?;
        let pb = procs::start_pgbouncer(&backend, a.pool_size, &secret, "")
            .map_err(|e| format!("starting PgBouncer: {e}"))?;
        let t = Targets {
            pgsluice: Some(&sl),
            pgbouncer: Some(&pb),
            direct_port: pg.port(),
            dbname: DB,
        };
        warm_up(a, &t, work);
        if wants("throughput") {
            throughput(a, &t, work, r);
        }
        if wants("latency") {
            latency(a, &t, work, r);
        }
        sl.stop();
        pb.stop();
    }
    crate::many::sections(a, bin, &backend, &secret, work, r);
    Ok(())
}

/// One short run per contender so pools are open before the first measurement.
fn warm_up(a: &Args, t: &Targets<'_>, work: &Path) {
    progress(format_args!("warm-up"));
    for who in Contender::ALL {
        let Some(port) = t.port(who) else { continue };
        let run = pgbench::Run {
            port,
            dbname: t.dbname,
            script: Script::Builtin(Workload::SelectOnly.pgbench_flag()),
            mode: Mode::Simple,
            clients: a.pool_size.min(20),
            duration: 1,
            log_prefix: None,
            work_dir: work,
        };
        if let Ok(o) = pgbench::run(&run) {
            if !o.clean() {
                progress(format_args!(
                    "warm-up through {} had errors: {}",
                    who.name(),
                    o.first_error.unwrap_or_default()
                ));
            }
        }
    }
}

/// Contender order for a round: rotated each round so no one always goes first.
fn order(round: usize, who: &[Contender]) -> Vec<Contender> {
    let mut v = who.to_vec();
    if !v.is_empty() {
        let k = round % v.len();
        v.rotate_left(k);
    }
    v
}

/// Direct runs need PostgreSQL connections for every client, next to the poolers' pools.
fn direct_fits(a: &Args, clients: u32) -> bool {
    clients + 2 * a.pool_size + 5 <= a.max_connections
}

/// Extra seconds of `pgbench -T` for many clients: pgbench's duration includes the
/// initial connections (each a SCRAM login), and its tps excludes them.
fn connect_allowance(clients: u32) -> u32 {
    clients.div_ceil(250)
}

/// Runs one pgbench measurement and records it (with the pooler's CPU).
#[allow(clippy::too_many_arguments)]
fn measure(
    section: &'static str,
    cell: Cell,
    who: Contender,
    round: usize,
    script: Script,
    a: &Args,
    t: &Targets<'_>,
    work: &Path,
    r: &mut Results,
) -> io::Result<bool> {
    let Some(port) = t.port(who) else {
        return Ok(false);
    };
    let pid = t.pid(who);
    let before = pid.and_then(procs::cpu_ticks);
    let run = pgbench::Run {
        port,
        dbname: t.dbname,
        script,
        mode: cell.mode,
        clients: cell.clients,
        duration: a.duration + connect_allowance(cell.clients),
        log_prefix: None,
        work_dir: work,
    };
    let outcome = pgbench::run(&run)?;
    let after = pid.and_then(procs::cpu_ticks);
    let cpu_us_per_tx = match (before, after) {
        (Some(b), Some(e)) if outcome.processed > 0 => Some(
            (e.saturating_sub(b)) as f64 / procs::clock_ticks() * 1e6 / outcome.processed as f64,
        ),
        _ => None,
    };
    let clean = outcome.clean();
    r.samples.push(Sample {
        section,
        cell,
        contender: who,
        round,
        outcome,
        cpu_us_per_tx,
    });
    Ok(clean)
}

fn describe(s: &Sample) -> String {
    let o = &s.outcome;
    let cpu = s
        .cpu_us_per_tx
        .map_or(String::new(), |c| format!(", {c:.1} µs CPU/tx"));
    if o.clean() {
        format!("{:.0} tps{cpu}", o.tps)
    } else {
        format!(
            "ERRORS ({} aborted, {} failed): {}",
            o.aborted,
            o.failed,
            o.first_error.as_deref().unwrap_or("?")
        )
    }
}

fn throughput(a: &Args, t: &Targets<'_>, work: &Path, r: &mut Results) {
    let per_cell = |c: &Cell| {
        Contender::ALL
            .iter()
            .filter(|w| **w != Contender::Direct || direct_fits(a, c.clients))
            .count()
    };
    let total = a.cells.iter().map(per_cell).sum::<usize>() * a.rounds;
    let mut prog = Progress {
        total,
        done: 0,
        started: Instant::now(),
    };
    progress(format_args!(
        "throughput: {} pgbench runs of {} s",
        total, a.duration
    ));
    for &cell in &a.cells {
        if !direct_fits(a, cell.clients) {
            r.skipped.push(Skipped {
                section: "throughput",
                cell,
                contender: Contender::Direct,
                reason: format!("max_connections {}", a.max_connections),
            });
        }
        let who: Vec<Contender> = Contender::ALL
            .into_iter()
            .filter(|w| *w != Contender::Direct || direct_fits(a, cell.clients))
            .collect();
        // A contender whose run had errors is not run again in this cell.
        let mut failed: Vec<Contender> = Vec::new();
        for round in 0..a.rounds {
            for w in order(round, &who) {
                let label = format!(
                    "{} -M {} c={} {} round {}/{}",
                    cell.workload.as_str(),
                    cell.mode.as_str(),
                    cell.clients,
                    w.name(),
                    round + 1,
                    a.rounds
                );
                if failed.contains(&w) {
                    progress(format_args!(
                        "{} {label}: skipped (errors earlier)",
                        prog.tick()
                    ));
                    continue;
                }
                let script = Script::Builtin(cell.workload.pgbench_flag());
                match measure("throughput", cell, w, round, script, a, t, work, r) {
                    Ok(clean) => {
                        if !clean {
                            failed.push(w);
                        }
                        let s = r.samples.last().map(describe).unwrap_or_default();
                        progress(format_args!("{} {label}: {s}", prog.tick()));
                    }
                    Err(e) => {
                        progress(format_args!(
                            "{} {label}: cannot run pgbench: {e}",
                            prog.tick()
                        ));
                        failed.push(w);
                    }
                }
            }
        }
    }
}

fn latency(a: &Args, t: &Targets<'_>, work: &Path, r: &mut Results) {
    let mode = Mode::Simple;
    for &clients in &a.latency_clients {
        let who: Vec<Contender> = Contender::ALL
            .into_iter()
            .filter(|w| *w != Contender::Direct || direct_fits(a, clients))
            .collect();
        let mut acc: Vec<Latency> = who
            .iter()
            .map(|w| Latency {
                contender: *w,
                clients,
                mode,
                samples_us: Vec::new(),
                errors: 0,
            })
            .collect();
        for round in 0..a.rounds {
            for w in order(round, &who) {
                let Some(port) = t.port(w) else { continue };
                let prefix = work.join(format!("lat-{}-{clients}-{round}", w.name()));
                let run = pgbench::Run {
                    port,
                    dbname: t.dbname,
                    script: Script::Builtin(Workload::SelectOnly.pgbench_flag()),
                    mode,
                    clients,
                    duration: a.duration,
                    log_prefix: Some(prefix.clone()),
                    work_dir: work,
                };
                let res = pgbench::run(&run).and_then(|o| {
                    let lat = pgbench::read_latency_logs(&prefix)?;
                    Ok((o, lat))
                });
                let slot = acc.iter_mut().find(|l| l.contender == w);
                match (res, slot) {
                    (Ok((o, lat)), Some(slot)) => {
                        progress(format_args!(
                            "latency c={clients} {} round {}/{}: {} transactions logged, avg {:.3} ms",
                            w.name(),
                            round + 1,
                            a.rounds,
                            lat.len(),
                            o.latency_ms
                        ));
                        slot.errors += o.failed + o.aborted;
                        slot.samples_us.extend(lat);
                    }
                    (Err(e), _) => progress(format_args!("latency {}: {e}", w.name())),
                    _ => {}
                }
            }
        }
        for mut l in acc {
            l.samples_us.sort_unstable();
            r.latency.push(l);
        }
    }
}

fn pooler_only(a: &Args, bin: &Path, work: &Path, r: &mut Results) -> Result<(), String> {
    progress(format_args!(
        "pooler-only: fake backend, pgsluice with {} workers",
        a.pooler_only_workers
    ));
    let fake = procs::start_fakepg().map_err(|e| format!("starting the fake backend: {e}"))?;
    let backend = Backend {
        port: fake.addr().port(),
        dbname: "fake".into(),
    };
    let sl = procs::start_pgsluice(bin, &backend, a.pool_size, Some(a.pooler_only_workers), &[])
        .map_err(|e| format!("starting pgsluice: {e}"))?;
    // The fake backend trusts everyone; PgBouncer's clients still log in with SCRAM.
    let secret = ScramSecret::generate(PASSWORD).encode();
    let pb = procs::start_pgbouncer(&backend, a.pool_size, &secret, "")
        .map_err(|e| format!("starting PgBouncer: {e}"))?;
    let script: PathBuf = work.join("select1.sql");
    fs::write(&script, "select 1;\n").map_err(|e| e.to_string())?;
    let t = Targets {
        pgsluice: Some(&sl),
        pgbouncer: Some(&pb),
        direct_port: backend.port,
        dbname: "fake",
    };
    let cells: Vec<Cell> = a
        .pooler_only_clients
        .iter()
        .map(|&clients| Cell {
            workload: Workload::SelectOnly,
            mode: Mode::Simple,
            clients,
        })
        .collect();
    let total = cells.len() * a.rounds * Contender::ALL.len();
    let mut prog = Progress {
        total,
        done: 0,
        started: Instant::now(),
    };
    for cell in cells {
        for round in 0..a.rounds {
            for w in order(round, &Contender::ALL) {
                let label = format!(
                    "pooler-only c={} {} round {}/{}",
                    cell.clients,
                    w.name(),
                    round + 1,
                    a.rounds
                );
                match measure(
                    "pooler-only",
                    cell,
                    w,
                    round,
                    Script::File(script.clone()),
                    a,
                    &t,
                    work,
                    r,
                ) {
                    Ok(_) => {
                        let s = r.samples.last().map(describe).unwrap_or_default();
                        progress(format_args!("{} {label}: {s}", prog.tick()));
                    }
                    Err(e) => progress(format_args!("{} {label}: {e}", prog.tick())),
                }
            }
        }
    }
    sl.stop();
    pb.stop();
    drop(fake);
    Ok(())
}
