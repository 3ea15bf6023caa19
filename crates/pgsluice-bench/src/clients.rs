//! Many-client tests with tokio-postgres: idle authenticated clients (memory per
//! client, then all of them querying at once) and a connection storm.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio_postgres::{Client, NoTls};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::procs::{rss_kib, DB, PASSWORD, USER};

/// Percentile `q` (0..=1) of sorted values (nearest rank); 0 when empty.
pub(crate) fn percentile_f(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// Result of the idle-clients test on one pooler.
#[derive(Debug, Clone, Default)]
pub(crate) struct IdleResult {
    pub(crate) wanted: usize,
    pub(crate) connected: usize,
    pub(crate) connect_errors: usize,
    pub(crate) rss_before_kib: u64,
    /// VmRSS once the first half of the clients are logged in (0: not read), and how
    /// many had connected then.
    pub(crate) rss_mid_kib: u64,
    pub(crate) connected_mid: usize,
    pub(crate) rss_after_kib: u64,
    pub(crate) connect_secs: f64,
    /// All connected clients run `select 1` at once: errors and wall time.
    pub(crate) query_errors: usize,
    pub(crate) query_secs: f64,
    pub(crate) first_error: Option<String>,
    /// The clients used TLS (`sslmode=require`).
    pub(crate) tls: bool,
}

impl IdleResult {
    /// Resident bytes added per client: the slope over the second half of the logins
    /// (VmRSS after all of them minus VmRSS after the first half, over the clients of the
    /// second half). A pooler's own warm-up after its listening line (threads starting,
    /// code paged in, allocator arenas) lands in the first half and so is left out; it
    /// is a fixed cost, not a cost per client. Without a half-way reading, the whole run.
    pub(crate) fn bytes_per_client(&self) -> Option<f64> {
        let second_half = self.connected.saturating_sub(self.connected_mid);
        if self.rss_mid_kib > 0 && self.connected_mid > 0 && second_half > 0 {
            return Some(
                (self.rss_after_kib as f64 - self.rss_mid_kib as f64) * 1024.0 / second_half as f64,
            );
        }
        self.bytes_per_client_whole_run()
    }

    /// Resident bytes added per client over the whole run (fixed costs included).
    pub(crate) fn bytes_per_client_whole_run(&self) -> Option<f64> {
        (self.connected > 0).then(|| {
            (self.rss_after_kib as f64 - self.rss_before_kib as f64) * 1024.0
                / self.connected as f64
        })
    }
}

/// Result of a connection storm.
#[derive(Debug, Clone, Default)]
pub(crate) struct StormResult {
    pub(crate) clients: usize,
    pub(crate) ok: usize,
    pub(crate) errors: usize,
    pub(crate) total_secs: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) max_ms: f64,
    pub(crate) first_error: Option<String>,
}

fn config(addr: SocketAddr) -> tokio_postgres::Config {
    let mut c = tokio_postgres::Config::new();
    c.host(addr.ip().to_string())
        .port(addr.port())
        .user(USER)
        .password(PASSWORD)
        .dbname(DB)
        .connect_timeout(Duration::from_secs(60));
    c
}

async fn connect(cfg: &tokio_postgres::Config) -> Result<Client, tokio_postgres::Error> {
    let (client, conn) = cfg.connect(NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

async fn connect_tls(
    cfg: &tokio_postgres::Config,
    tls: MakeRustlsConnect,
) -> Result<Client, tokio_postgres::Error> {
    let (client, conn) = cfg.connect(tls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
}

/// Opens `n` authenticated clients (at most 64 logins in flight; with `tls`,
/// `sslmode=require`) in two halves, reads the pooler's VmRSS before, between and after
/// them (see [`IdleResult::bytes_per_client`]), then has every client run `select 1` at
/// once.
pub(crate) fn idle_clients(
    addr: SocketAddr,
    pid: u32,
    n: usize,
    tls: Option<MakeRustlsConnect>,
) -> std::io::Result<IdleResult> {
    let rt = runtime()?;
    rt.block_on(async move {
        let mut res = IdleResult {
            wanted: n,
            rss_before_kib: rss_kib(pid).unwrap_or(0),
            tls: tls.is_some(),
            ..IdleResult::default()
        };
        let mut cfg = config(addr);
        if tls.is_some() {
            cfg.ssl_mode(tokio_postgres::config::SslMode::Require);
        }
        let cfg = Arc::new(cfg);
        let started = Instant::now();
        let first = n / 2;
        let mut clients = Vec::with_capacity(n);
        login_batch(&cfg, &tls, first, n, started, &mut clients, &mut res).await;
        let mut login_time = started.elapsed();
        // Let the pooler finish whatever it does after a login before reading its RSS.
        tokio::time::sleep(Duration::from_millis(500)).await;
        res.rss_mid_kib = rss_kib(pid).unwrap_or(0);
        res.connected_mid = clients.len();
        let second = Instant::now();
        login_batch(&cfg, &tls, n - first, n, started, &mut clients, &mut res).await;
        login_time += second.elapsed();
        res.connect_secs = login_time.as_secs_f64();
        res.connected = clients.len();
        tokio::time::sleep(Duration::from_millis(500)).await;
        res.rss_after_kib = rss_kib(pid).unwrap_or(0);

        let clients: Vec<Arc<Client>> = clients.into_iter().map(Arc::new).collect();
        let started = Instant::now();
        let queries: Vec<_> = clients
            .iter()
            .map(|c| {
                let c = c.clone();
                tokio::spawn(async move { c.simple_query("select 1").await.map(|_| ()) })
            })
            .collect();
        for q in queries {
            tally(q.await, &mut res.query_errors, &mut res.first_error);
        }
        res.query_secs = started.elapsed().as_secs_f64();
        drop(clients);
        Ok(res)
    })
}

/// The value of a spawned task's result, or None after counting its error (the task's
/// own, or its panic) in `errors` and keeping the first one's text.
fn tally<T>(
    r: Result<Result<T, tokio_postgres::Error>, tokio::task::JoinError>,
    errors: &mut usize,
    first: &mut Option<String>,
) -> Option<T> {
    let e = match r {
        Ok(Ok(v)) => return Some(v),
        Ok(Err(e)) => e.to_string(),
        Err(e) => e.to_string(),
    };
    *errors += 1;
    first.get_or_insert(e);
    None
}

/// Logs in `count` more clients (at most 64 logins in flight) into `clients`, counting
/// errors in `res`; `n` and `started` only feed the progress lines.
async fn login_batch(
    cfg: &Arc<tokio_postgres::Config>,
    tls: &Option<MakeRustlsConnect>,
    count: usize,
    n: usize,
    started: Instant,
    clients: &mut Vec<Client>,
    res: &mut IdleResult,
) {
    let gate = Arc::new(Semaphore::new(64));
    let mut tasks = Vec::with_capacity(count);
    for _ in 0..count {
        let cfg = cfg.clone();
        let gate = gate.clone();
        let tls = tls.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await;
            match tls {
                Some(tls) => connect_tls(&cfg, tls).await,
                None => connect(&cfg).await,
            }
        }));
    }
    for t in tasks {
        if let Some(c) = tally(t.await, &mut res.connect_errors, &mut res.first_error) {
            clients.push(c);
        }
        let done = clients.len() + res.connect_errors;
        if done.is_multiple_of(2000) {
            crate::progress(format_args!(
                "  ... {done} of {n} clients connected ({:.1} s)",
                started.elapsed().as_secs_f64()
            ));
        }
    }
}

/// `n` clients connect at the same moment, run `select 1` and disconnect.
pub(crate) fn storm(addr: SocketAddr, n: usize) -> std::io::Result<StormResult> {
    let rt = runtime()?;
    rt.block_on(async move {
        let cfg = Arc::new(config(addr));
        let start = Arc::new(tokio::sync::Barrier::new(n + 1));
        let mut tasks = Vec::with_capacity(n);
        for _ in 0..n {
            let cfg = cfg.clone();
            let start = start.clone();
            tasks.push(tokio::spawn(async move {
                start.wait().await;
                let t = Instant::now();
                let r = async {
                    let c = connect(&cfg).await?;
                    c.simple_query("select 1").await?;
                    Ok::<_, tokio_postgres::Error>(())
                };
                let r = tokio::time::timeout(Duration::from_secs(120), r).await;
                (t.elapsed(), r)
            }));
        }
        start.wait().await;
        let started = Instant::now();
        let mut res = StormResult {
            clients: n,
            ..StormResult::default()
        };
        let mut times = Vec::with_capacity(n);
        for t in tasks {
            match t.await {
                Ok((d, Ok(Ok(())))) => {
                    res.ok += 1;
                    times.push(d.as_secs_f64() * 1000.0);
                }
                Ok((_, Ok(Err(e)))) => {
                    res.errors += 1;
                    res.first_error.get_or_insert_with(|| e.to_string());
                }
                Ok((_, Err(_))) => {
                    res.errors += 1;
                    res.first_error
                        .get_or_insert_with(|| "no answer within 120 s".into());
                }
                Err(e) => {
                    res.errors += 1;
                    res.first_error.get_or_insert_with(|| e.to_string());
                }
            }
        }
        res.total_secs = started.elapsed().as_secs_f64();
        times.sort_by(f64::total_cmp);
        res.p50_ms = percentile_f(&times, 0.50);
        res.p99_ms = percentile_f(&times, 0.99);
        res.max_ms = times.last().copied().unwrap_or(0.0);
        Ok(res)
    })
}
