//! The live dashboard on `metrics_listen`: headless Chromium renders `/` under load
//! (the DOM names the pool, figures change between two renders, a screenshot is kept in
//! target/test-artifacts/dashboard.png), `/api/stats` is JSON holding the pool,
//! `/metrics` keeps its histograms, and `metrics_auth_token` / `metrics_allow` refuse
//! with 401 / 403.
//!
//! The browser test needs Debian's `chromium` (scripts/install-deps installs it). Without
//! it the test says so and passes, unless `REQUIRE_CHROMIUM` is set (CI sets it).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use pgsluice::config::{PoolMode, Token};
use serde_json::Value;

const TOKEN: &str = "dash-token-7";

/// `GET path` with optional extra header lines; (status code, body).
fn http_get(addr: SocketAddr, path: &str, headers: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect to metrics_listen");
    s.set_read_timeout(Some(PROMPTLY)).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n{headers}\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {out:?}"));
    let body = out.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned();
    (status, body)
}

async fn get(addr: SocketAddr, path: &str, headers: &str) -> (u16, String) {
    let (path, headers) = (path.to_owned(), headers.to_owned());
    tokio::task::spawn_blocking(move || http_get(addr, &path, &headers))
        .await
        .unwrap()
}

/// `/api/stats` (with the token), parsed.
async fn api_stats(addr: SocketAddr) -> Value {
    let (status, body) = get(addr, &format!("/api/stats?token={TOKEN}"), "").await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

fn total_xacts(stats: &Value) -> u64 {
    stats["summary"]["totals"]["xacts"].as_u64().unwrap()
}

/// Clients running short transactions through the pooler until `stop` is set.
fn start_load(addr: SocketAddr, stop: Arc<AtomicBool>) -> Vec<tokio::task::JoinHandle<()>> {
    (0..4)
        .map(|i| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let c = connect(addr).await;
                while !stop.load(Ordering::Relaxed) {
                    if i == 0 {
                        c.batch_execute("BEGIN; SELECT pg_sleep(0.002); SELECT 1; COMMIT")
                            .await
                            .unwrap();
                    } else {
                        c.simple_query("SELECT 1").await.unwrap();
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            })
        })
        .collect()
}

/// The Chromium binary, if installed.
fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser"].iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// Runs headless Chromium with `args` and returns its stdout; fails after two minutes.
fn run_chromium(bin: &Path, profile: &Path, args: &[String]) -> String {
    let mut child = Command::new(bin)
        .args([
            "--headless",
            "--disable-gpu",
            "--no-sandbox",
            "--no-first-run",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start chromium");
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let out = reader.join().unwrap();
            let mut err = String::new();
            let _ = child.stderr.take().unwrap().read_to_string(&mut err);
            assert!(status.success(), "chromium {args:?}: {status}\n{err}");
            return out;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium {args:?} did not finish in two minutes");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The number shown in the element with id `id` of a dumped DOM.
fn shown_number(dom: &str, id: &str) -> Option<u64> {
    let at = dom.find(&format!("id=\"{id}\">"))? + id.len() + 6;
    let digits: String = dom[at..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

fn artifacts_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"),
        PathBuf::from,
    );
    target.join("test-artifacts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headless_chromium_renders_the_dashboard_under_load() {
    let Some(browser) = chromium() else {
        assert!(
            std::env::var_os("REQUIRE_CHROMIUM").is_none(),
            "REQUIRE_CHROMIUM is set but no chromium is on PATH (scripts/install-deps installs it)"
        );
        println!("SKIPPED: chromium is not installed (apt-get install chromium, or run scripts/install-deps)");
        return;
    };
    let s = setup_with(PoolMode::Transaction, 3, |cfg, _| {
        cfg.general.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
        cfg.general.metrics_auth_token = Some(Token::new(TOKEN));
    })
    .await;
    let metrics = s.server().metrics_addr().expect("metrics endpoint");
    let stop = Arc::new(AtomicBool::new(false));
    let load = start_load(s.addr, stop.clone());
    eventually("transactions in /api/stats", PROMPTLY, || async {
        (total_xacts(&api_stats(metrics).await) > 20).then_some(())
    })
    .await;

    let profile = std::env::temp_dir().join(format!("pgsluice-chromium-{}", std::process::id()));
    let url = format!("http://{metrics}/?token={TOKEN}&interval=1000");
    let dump = {
        let (browser, profile, url) = (browser.clone(), profile.clone(), url.clone());
        move || {
            run_chromium(
                &browser,
                &profile,
                &[
                    "--virtual-time-budget=5000".into(),
                    "--dump-dom".into(),
                    url,
                ],
            )
        }
    };
    let first = tokio::task::spawn_blocking(dump.clone()).await.unwrap();
    assert!(
        first.contains("data-pool=\"appdb\""),
        "the pool row:\n{first}"
    );
    assert!(first.contains(">appdb<"), "the pool's name:\n{first}");
    assert!(!first.contains(PASSWORD), "no credential on the page");
    let xacts1 = shown_number(&first, "total-xacts").expect("total-xacts shown");
    assert!(xacts1 > 0, "{first}");

    // Wait until more transactions have run, then render again.
    eventually("more transactions", PROMPTLY, || async {
        (total_xacts(&api_stats(metrics).await) > xacts1 + 50).then_some(())
    })
    .await;
    let second = tokio::task::spawn_blocking(dump).await.unwrap();
    let xacts2 = shown_number(&second, "total-xacts").expect("total-xacts shown");
    assert!(xacts2 > xacts1, "figures change: {xacts1} then {xacts2}");
    assert!(second.contains("data-pool=\"appdb\""), "{second}");
    assert!(
        second.contains("id=\"status\" class=\"\">updated"),
        "the page got its data:\n{second}"
    );
    assert!(
        shown_number(&second, "tps").is_some(),
        "a transaction rate once the page has two samples:\n{second}"
    );

    let dir = artifacts_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let png = dir.join("dashboard.png");
    let _ = std::fs::remove_file(&png);
    let shot = {
        let (png, profile) = (png.clone(), profile.clone());
        move || {
            run_chromium(
                &browser,
                &profile,
                &[
                    "--virtual-time-budget=8000".into(),
                    format!("--screenshot={}", png.display()),
                    "--window-size=1280,900".into(),
                    url,
                ],
            )
        }
    };
    tokio::task::spawn_blocking(shot).await.unwrap();
    let size = std::fs::metadata(&png).map(|m| m.len()).unwrap_or(0);
    assert!(
        size > 10_000,
        "screenshot {} is {size} bytes",
        png.display()
    );
    println!("screenshot: {}", png.display());

    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    let _ = std::fs::remove_dir_all(&profile);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_api_stats_with_access_control() {
    let s = setup_with(PoolMode::Transaction, 3, |cfg, _| {
        cfg.general.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
        cfg.general.metrics_auth_token = Some(Token::new(TOKEN));
        cfg.general.metrics_allow = vec!["127.0.0.0/8".parse().unwrap()];
    })
    .await;
    let metrics = s.server().metrics_addr().expect("metrics endpoint");
    let c = connect(s.addr).await;
    for _ in 0..5 {
        c.simple_query("SELECT 1").await.unwrap();
    }

    // Without the token: 401 on every path; with it in the header or the query: 200.
    for path in ["/", "/metrics", "/api/stats"] {
        assert_eq!(get(metrics, path, "").await.0, 401, "{path}");
        let wrong = format!("Authorization: Bearer {TOKEN}x\r\n");
        assert_eq!(get(metrics, path, &wrong).await.0, 401, "{path}");
    }
    let bearer = format!("Authorization: Bearer {TOKEN}\r\n");
    let (status, text) = get(metrics, "/metrics", &bearer).await;
    assert_eq!(status, 200);
    for series in [
        "pgsluice_wait_duration_seconds_bucket{",
        "pgsluice_query_duration_seconds_bucket{",
        "pgsluice_transaction_duration_seconds_bucket{",
        "pgsluice_wait_duration_seconds_sum{",
        "pgsluice_transaction_duration_seconds_count{",
    ] {
        assert!(text.contains(series), "{series} missing in\n{text}");
    }
    let (status, page) = get(metrics, &format!("/?token={TOKEN}"), "").await;
    assert_eq!(status, 200);
    assert!(
        page.contains("<canvas") && page.contains("/api/stats"),
        "{page}"
    );

    let stats = api_stats(metrics).await;
    let pools = stats["pools"].as_array().expect("pools");
    let pool = pools
        .iter()
        .find(|p| p["database"] == DB)
        .unwrap_or_else(|| panic!("{DB} in {stats:#}"));
    assert_eq!(pool["user"], USER);
    assert!(pool["totals"]["xacts"].as_u64().unwrap() >= 5, "{pool:#}");
    assert!(
        pool["latency"]["xact"]["p50_us"].as_u64().is_some(),
        "{pool:#}"
    );
    assert!(
        pool["latency"]["wait"]["p99_us"].as_u64().is_some(),
        "{pool:#}"
    );
    assert_eq!(pool["pool_size"], 3);
    assert!(!stats.to_string().contains(PASSWORD), "no credential");
    assert!(stats["hosts"].as_array().is_some_and(|h| !h.is_empty()));
    // The first request left a copy of the histograms: the next has a recent window.
    let again = api_stats(metrics).await;
    assert!(again["recent_s"].as_f64().is_some(), "{again:#}");
    assert!(again["summary"]["latency_recent"]["xact"].is_object());

    // An allow-list without this address: 403, even with the token.
    let mut cfg = config(&s.pg);
    cfg.general.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    cfg.general.metrics_allow = vec!["192.0.2.0/24".parse().unwrap()];
    let (other, _) = start_pooler(cfg).await;
    let fenced = other.metrics_addr().expect("metrics endpoint");
    assert_eq!(get(fenced, "/api/stats", &bearer).await.0, 403);
    assert_eq!(get(fenced, "/metrics", "").await.0, 403);
}
