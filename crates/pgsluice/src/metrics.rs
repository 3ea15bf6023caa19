//! The optional Prometheus endpoint (`metrics_listen`): a small HTTP/1.1 responder that
//! answers `GET /metrics` with the text exposition format (version 0.0.4), one request
//! per connection. The metric list is in `docs/metrics.md`.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::admin::Console;
use crate::shutdown::TaskTracker;
use crate::stats::{HistogramSnapshot, BUCKETS_US};

/// Largest request head accepted.
const MAX_REQUEST: usize = 8 * 1024;
/// Time a scraper has to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Accepts scrapes until shutdown; each is answered in a task of `tasks`.
pub async fn serve(listener: TcpListener, console: Arc<dyn Console>, tasks: TaskTracker) {
    let mut shutdown = console.shutdown_watch();
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.requested() => return,
        };
        match accepted {
            Ok((sock, _)) => {
                let console = console.clone();
                tasks.spawn(async move {
                    let _ = tokio::time::timeout(REQUEST_TIMEOUT, answer(sock, &*console)).await;
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "metrics accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn answer(mut sock: TcpStream, console: &dyn Console) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = sock.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > MAX_REQUEST {
            return respond(
                &mut sock,
                "431 Request Header Fields Too Large",
                "text/plain",
                "",
            )
            .await;
        }
    }
    let head = String::from_utf8_lossy(&buf);
    let mut parts = head.lines().next().unwrap_or("").split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET" | "HEAD", "/metrics") => {
            let body = render(console);
            let body = if method == "HEAD" {
                String::new()
            } else {
                body
            };
            respond(
                &mut sock,
                "200 OK",
                "text/plain; version=0.0.4; charset=utf-8",
                &body,
            )
            .await
        }
        ("GET" | "HEAD", _) => {
            respond(&mut sock, "404 Not Found", "text/plain", "not found\n").await
        }
        _ => {
            respond(
                &mut sock,
                "405 Method Not Allowed",
                "text/plain",
                "only GET /metrics\n",
            )
            .await
        }
    }
}

async fn respond(
    sock: &mut TcpStream,
    status: &str,
    ctype: &str,
    body: &str,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    sock.write_all(head.as_bytes()).await?;
    sock.write_all(body.as_bytes()).await?;
    sock.shutdown().await
}

/// Escapes a label value.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

struct Family<'a> {
    out: &'a mut String,
}

impl Family<'_> {
    fn header(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &str, value: impl std::fmt::Display) {
        if labels.is_empty() {
            let _ = writeln!(self.out, "{name} {value}");
        } else {
            let _ = writeln!(self.out, "{name}{{{labels}}} {value}");
        }
    }

    fn histogram(&mut self, name: &str, labels: &str, h: &HistogramSnapshot) {
        let mut cumulative = 0;
        for (i, bound) in BUCKETS_US.iter().enumerate() {
            cumulative += h.buckets[i];
            let le = *bound as f64 / 1e6;
            self.sample(
                &format!("{name}_bucket"),
                &format!("{labels},le=\"{le}\""),
                cumulative,
            );
        }
        self.sample(
            &format!("{name}_bucket"),
            &format!("{labels},le=\"+Inf\""),
            h.count,
        );
        self.sample(&format!("{name}_sum"), labels, h.sum_us as f64 / 1e6);
        self.sample(&format!("{name}_count"), labels, h.count);
    }
}

/// A counter family: name, help, and how to read it from a pool's totals.
type Counter = (&'static str, &'static str, fn(&crate::stats::Totals) -> f64);

/// The whole exposition text.
pub fn render(console: &dyn Console) -> String {
    let mut out = String::with_capacity(16 * 1024);
    let pools = console.router().pools();
    let flags = console.router().db_flags();
    let mut f = Family { out: &mut out };

    f.header("pgsluice_up", "gauge", "1 while pgsluice serves.");
    f.sample("pgsluice_up", "", 1);
    f.header("pgsluice_info", "gauge", "Version information.");
    f.sample(
        "pgsluice_info",
        &format!("version=\"{}\"", env!("CARGO_PKG_VERSION")),
        1,
    );
    f.header("pgsluice_uptime_seconds", "gauge", "Seconds since start.");
    f.sample("pgsluice_uptime_seconds", "", console.uptime().as_secs());
    f.header(
        "pgsluice_paused",
        "gauge",
        "1 while PAUSE or SUSPEND is in force for every database.",
    );
    f.sample(
        "pgsluice_paused",
        "",
        u8::from(flags.paused_all || flags.suspended),
    );
    f.header(
        "pgsluice_clients_parked",
        "gauge",
        "Idle clients parked without a task (their sockets in the parking epoll set).",
    );
    f.sample(
        "pgsluice_clients_parked",
        "",
        console.client_counts().parked,
    );
    let (ok, failed) = console.reload_counts();
    f.header(
        "pgsluice_config_reloads_total",
        "counter",
        "Configuration reloads by result.",
    );
    f.sample("pgsluice_config_reloads_total", "result=\"success\"", ok);
    f.sample(
        "pgsluice_config_reloads_total",
        "result=\"failure\"",
        failed,
    );
    f.header(
        "pgsluice_admin_clients",
        "gauge",
        "Clients connected to the admin console.",
    );
    f.sample("pgsluice_admin_clients", "", console.admin_clients().len());

    let labels: Vec<String> = pools
        .iter()
        .map(|p| {
            format!(
                "database=\"{}\",user=\"{}\"",
                esc(&p.key().database),
                esc(&p.key().user)
            )
        })
        .collect();
    let counts: Vec<_> = pools.iter().map(|p| p.counts()).collect();

    f.header(
        "pgsluice_pool_client_connections",
        "gauge",
        "Client connections by pool and state.",
    );
    for (l, c) in labels.iter().zip(&counts) {
        let idle = c.cl_active - c.cl_linked;
        for (state, n) in [
            ("active", c.cl_linked),
            ("idle", idle),
            ("waiting", c.cl_waiting),
        ] {
            f.sample(
                "pgsluice_pool_client_connections",
                &format!("{l},state=\"{state}\""),
                n,
            );
        }
    }
    f.header(
        "pgsluice_pool_server_connections",
        "gauge",
        "Server connections by pool and state.",
    );
    for (l, c) in labels.iter().zip(&counts) {
        for (state, n) in [
            ("active", c.sv_active),
            ("idle", c.sv_idle),
            ("tested", c.sv_tested),
            ("login", c.sv_login),
        ] {
            f.sample(
                "pgsluice_pool_server_connections",
                &format!("{l},state=\"{state}\""),
                n,
            );
        }
    }
    f.header(
        "pgsluice_pool_max_wait_seconds",
        "gauge",
        "How long the oldest waiting client has waited.",
    );
    for (l, c) in labels.iter().zip(&counts) {
        f.sample(
            "pgsluice_pool_max_wait_seconds",
            l,
            c.maxwait_us as f64 / 1e6,
        );
    }
    f.header(
        "pgsluice_pool_size",
        "gauge",
        "Configured maximum of server connections.",
    );
    for (l, p) in labels.iter().zip(&pools) {
        f.sample("pgsluice_pool_size", l, p.settings().size);
    }
    f.header(
        "pgsluice_pool_paused",
        "gauge",
        "1 while the pool is paused.",
    );
    for (l, p) in labels.iter().zip(&pools) {
        f.sample("pgsluice_pool_paused", l, u8::from(p.is_paused()));
    }

    let totals: Vec<_> = pools.iter().map(|p| p.stats.totals()).collect();
    let counters: [Counter; 12] = [
        (
            "pgsluice_server_assignments_total",
            "Server connections assigned to clients.",
            |t| t.server_assignments as f64,
        ),
        ("pgsluice_transactions_total", "Transactions pooled.", |t| {
            t.xacts as f64
        }),
        ("pgsluice_queries_total", "Queries pooled.", |t| {
            t.queries as f64
        }),
        (
            "pgsluice_received_bytes_total",
            "Bytes received from clients.",
            |t| t.received as f64,
        ),
        ("pgsluice_sent_bytes_total", "Bytes sent to clients.", |t| {
            t.sent as f64
        }),
        (
            "pgsluice_transaction_time_seconds_total",
            "Time server connections were held by clients.",
            |t| t.xact_time_us as f64 / 1e6,
        ),
        (
            "pgsluice_query_time_seconds_total",
            "Time spent in queries.",
            |t| t.query_time_us as f64 / 1e6,
        ),
        (
            "pgsluice_wait_time_seconds_total",
            "Time clients waited for a server connection.",
            |t| t.wait_time_us as f64 / 1e6,
        ),
        ("pgsluice_client_logins_total", "Client logins.", |t| {
            t.client_connects as f64
        }),
        (
            "pgsluice_prepared_client_parses_total",
            "Parse messages of named statements from clients (SHOW STATS total_client_parse_count).",
            |t| t.client_parses as f64,
        ),
        (
            "pgsluice_prepared_server_parses_total",
            "Parse messages of named statements sent to servers (SHOW STATS total_server_parse_count).",
            |t| t.server_parses as f64,
        ),
        (
            "pgsluice_prepared_binds_total",
            "Bind messages of named statements from clients (SHOW STATS total_bind_count).",
            |t| t.binds as f64,
        ),
    ];
    for (name, help, get) in counters {
        f.header(name, "counter", help);
        for (l, t) in labels.iter().zip(&totals) {
            f.sample(name, l, get(t));
        }
    }
    f.header(
        "pgsluice_server_connections_opened_total",
        "counter",
        "Server connections opened.",
    );
    for (l, t) in labels.iter().zip(&totals) {
        f.sample(
            "pgsluice_server_connections_opened_total",
            l,
            t.servers_opened,
        );
    }

    let hists: Vec<_> = pools.iter().map(|p| p.stats.histograms()).collect();
    f.header(
        "pgsluice_query_duration_seconds",
        "histogram",
        "Query duration (per transaction: hold time divided by its queries).",
    );
    for (l, h) in labels.iter().zip(&hists) {
        f.histogram("pgsluice_query_duration_seconds", l, &h.0);
    }
    f.header(
        "pgsluice_transaction_duration_seconds",
        "histogram",
        "Time a server connection was held for one transaction.",
    );
    for (l, h) in labels.iter().zip(&hists) {
        f.histogram("pgsluice_transaction_duration_seconds", l, &h.1);
    }
    f.header(
        "pgsluice_wait_duration_seconds",
        "histogram",
        "Time a client waited for a server connection.",
    );
    for (l, h) in labels.iter().zip(&hists) {
        f.histogram("pgsluice_wait_duration_seconds", l, &h.2);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_escaping() {
        assert_eq!(esc("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
