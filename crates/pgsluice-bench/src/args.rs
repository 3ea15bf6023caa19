//! Command-line flags of the orchestrator (parsed by hand: there are few).

use std::path::PathBuf;

/// pgbench `-M` query mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Mode {
    Simple,
    Extended,
    Prepared,
}

impl Mode {
    pub(crate) const ALL: [Mode; 3] = [Mode::Simple, Mode::Extended, Mode::Prepared];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Mode::Simple => "simple",
            Mode::Extended => "extended",
            Mode::Prepared => "prepared",
        }
    }

    fn parse(s: &str) -> Result<Mode, String> {
        Mode::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| format!("unknown mode `{s}` (simple, extended, prepared)"))
    }
}

/// pgbench built-in script.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Workload {
    SelectOnly,
    TpcbLike,
}

impl Workload {
    pub(crate) const ALL: [Workload; 2] = [Workload::SelectOnly, Workload::TpcbLike];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Workload::SelectOnly => "select-only",
            Workload::TpcbLike => "tpcb-like",
        }
    }

    /// The pgbench flag selecting the script.
    pub(crate) fn pgbench_flag(self) -> &'static str {
        match self {
            Workload::SelectOnly => "--builtin=select-only",
            Workload::TpcbLike => "--builtin=tpcb-like",
        }
    }

    fn parse(s: &str) -> Result<Workload, String> {
        Workload::ALL
            .into_iter()
            .find(|w| w.as_str() == s)
            .ok_or_else(|| format!("unknown workload `{s}` (select-only, tpcb-like)"))
    }
}

/// One throughput measurement point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Cell {
    pub(crate) workload: Workload,
    pub(crate) mode: Mode,
    pub(crate) clients: u32,
}

/// Sections that can be run or skipped.
pub(crate) const SECTIONS: [&str; 6] = [
    "throughput",
    "latency",
    "memory",
    "memory-tls",
    "pooler-only",
    "storm",
];

/// All settings of one benchmark run.
#[derive(Debug, Clone)]
pub(crate) struct Args {
    pub(crate) quick: bool,
    pub(crate) rounds: usize,
    pub(crate) duration: u32,
    pub(crate) cells: Vec<Cell>,
    pub(crate) latency_clients: Vec<u32>,
    pub(crate) pool_size: u32,
    pub(crate) workers: Option<usize>,
    pub(crate) pooler_only_workers: usize,
    pub(crate) pooler_only_clients: Vec<u32>,
    pub(crate) scale: u32,
    pub(crate) max_connections: u32,
    pub(crate) idle_clients: usize,
    pub(crate) storm_clients: usize,
    pub(crate) out: PathBuf,
    pub(crate) pgsluice: Option<PathBuf>,
    pub(crate) build: bool,
    pub(crate) sections: Vec<&'static str>,
}

/// What the command line asks for.
pub(crate) enum Parsed {
    Run(Box<Args>),
    Help,
    /// Internal: serve the fake backend on this address.
    FakePg(String),
}

pub(crate) const USAGE: &str = "\
usage: pgsluice-bench [--quick] [options]

Runs pgsluice, PgBouncer and direct PostgreSQL through pgbench (alternating the
contenders, several rounds) and writes bench/results/<timestamp>/results.md,
runs.csv, results.json, chart.svg and tps-*.svg (one per table). See bench/README.md.

  --quick                 ~4-minute smoke run (fewer cells, 2 rounds of 2 s)
  --rounds N              rounds per cell (default 3; quick 2)
  --duration SECS         pgbench -T per run (default 10; quick 2)
  --clients LIST          client counts, e.g. 1,10,100,1000 (default)
  --modes LIST            simple,extended,prepared (default: all)
  --workloads LIST        select-only,tpcb-like (default: both)
  --only LIST             sections to run: throughput,latency,memory,memory-tls,
                          pooler-only,storm
  --pool-size N           server connections per pool, both poolers (default 20)
  --workers N             pgsluice worker threads (default: pgsluice's, half the cores)
  --pooler-only-workers N pgsluice worker threads in the pooler-only test (default 2)
  --scale N               pgbench scale factor (default 10; quick 1)
  --max-connections N     PostgreSQL max_connections (default 300); direct runs
                          need clients + 2 pools + 5 below it
  --idle-clients N        idle authenticated clients for the memory tests (default 10000)
  --storm-clients N       clients connecting at once in the storm test (default 2000)
  --out DIR               results parent directory (default bench/results)
  --pgsluice PATH         pgsluice binary (default: target/release/pgsluice,
                          built with cargo first)
  --no-build              do not run `cargo build --release -p pgsluice`
  -h, --help              this text
";

fn list<T>(v: &str, f: impl Fn(&str) -> Result<T, String>) -> Result<Vec<T>, String> {
    v.split(',').filter(|s| !s.is_empty()).map(f).collect()
}

fn number<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T, String> {
    v.parse()
        .map_err(|_| format!("{flag}: `{v}` is not a valid number"))
}

/// The repository root (two levels above this crate).
pub(crate) fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Parses `std::env::args()`.
pub(crate) fn parse(argv: Vec<String>) -> Result<Parsed, String> {
    let mut it = argv.into_iter();
    let mut flags: Vec<(String, Option<String>)> = Vec::new();
    while let Some(a) = it.next() {
        let takes_value = !matches!(a.as_str(), "--quick" | "--no-build" | "-h" | "--help");
        if let Some((k, v)) = a.split_once('=').filter(|(k, _)| k.starts_with("--")) {
            flags.push((k.to_owned(), Some(v.to_owned())));
        } else if takes_value {
            let v = it.next().ok_or_else(|| format!("{a} needs a value"))?;
            flags.push((a, Some(v)));
        } else {
            flags.push((a, None));
        }
    }
    if flags.iter().any(|(k, _)| k == "-h" || k == "--help") {
        return Ok(Parsed::Help);
    }
    if let Some((_, Some(addr))) = flags.iter().find(|(k, _)| k == "--serve-fakepg") {
        return Ok(Parsed::FakePg(addr.clone()));
    }
    let quick = flags.iter().any(|(k, _)| k == "--quick");
    let mut a = Args {
        quick,
        rounds: if quick { 2 } else { 3 },
        duration: if quick { 2 } else { 10 },
        cells: Vec::new(),
        latency_clients: vec![1, 10],
        pool_size: 20,
        workers: None,
        pooler_only_workers: 2,
        pooler_only_clients: if quick { vec![100] } else { vec![10, 100] },
        scale: if quick { 1 } else { 10 },
        max_connections: 300,
        idle_clients: 10_000,
        storm_clients: 2_000,
        out: repo_root().join("bench/results"),
        pgsluice: None,
        build: true,
        sections: SECTIONS.to_vec(),
    };
    let mut clients: Option<Vec<u32>> = None;
    let mut modes: Option<Vec<Mode>> = None;
    let mut workloads: Option<Vec<Workload>> = None;
    for (k, v) in flags {
        let v = v.unwrap_or_default();
        match k.as_str() {
            "--quick" => {}
            "--no-build" => a.build = false,
            "--rounds" => a.rounds = number::<usize>(&k, &v)?.max(1),
            "--duration" => a.duration = number::<u32>(&k, &v)?.max(1),
            "--clients" => clients = Some(list(&v, |s| number(&k, s))?),
            "--modes" => modes = Some(list(&v, Mode::parse)?),
            "--workloads" => workloads = Some(list(&v, Workload::parse)?),
            "--only" => {
                a.sections = list(&v, |s| {
                    SECTIONS
                        .into_iter()
                        .find(|x| *x == s)
                        .ok_or_else(|| format!("--only: unknown section `{s}`"))
                })?
            }
            "--pool-size" => a.pool_size = number(&k, &v)?,
            "--workers" => a.workers = Some(number(&k, &v)?),
            "--pooler-only-workers" => a.pooler_only_workers = number(&k, &v)?,
            "--scale" => a.scale = number::<u32>(&k, &v)?.max(1),
            "--max-connections" => a.max_connections = number(&k, &v)?,
            "--idle-clients" => a.idle_clients = number(&k, &v)?,
            "--storm-clients" => a.storm_clients = number(&k, &v)?,
            "--out" => a.out = PathBuf::from(v),
            "--pgsluice" => a.pgsluice = Some(PathBuf::from(v)),
            other => return Err(format!("unknown flag {other}\n\n{USAGE}")),
        }
    }
    let explicit = clients.is_some() || modes.is_some() || workloads.is_some();
    let clients = clients.unwrap_or_else(|| vec![1, 10, 100, 1000]);
    let modes = modes.unwrap_or_else(|| Mode::ALL.to_vec());
    let workloads = workloads.unwrap_or_else(|| Workload::ALL.to_vec());
    for &workload in &workloads {
        for &mode in &modes {
            for &c in &clients {
                if quick && !explicit && !quick_cell(workload, mode, c) {
                    continue;
                }
                a.cells.push(Cell {
                    workload,
                    mode,
                    clients: c,
                });
            }
        }
    }
    Ok(Parsed::Run(Box::new(a)))
}

/// The reduced matrix of `--quick`: select-only in simple mode at every client count
/// and in extended mode up to 100, a prepared-mode probe at 10 clients, tpcb-like
/// (simple) at 10 and 100.
fn quick_cell(w: Workload, m: Mode, c: u32) -> bool {
    match (w, m) {
        (Workload::SelectOnly, Mode::Simple) => true,
        (Workload::SelectOnly, Mode::Extended) => c != 1000,
        (Workload::SelectOnly, Mode::Prepared) => c == 10,
        (Workload::TpcbLike, Mode::Simple) => c == 10 || c == 100,
        (Workload::TpcbLike, _) => false,
    }
}
