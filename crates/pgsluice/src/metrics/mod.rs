//! The optional Prometheus endpoint (`metrics_listen`): a small HTTP/1.1 responder that
//! answers `GET /metrics` with the text exposition format (version 0.0.4), one request
//! per connection. The metric list is in `docs/metrics.md`. The process-wide series
//! are here; `pools` and `hosts` write the per-pool and per-host ones.

mod hosts;
mod pools;
mod text;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::admin::Console;
use crate::shutdown::TaskTracker;
use text::Family;

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

/// The whole exposition text.
pub fn render(console: &dyn Console) -> String {
    let mut out = String::with_capacity(16 * 1024);
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

    pools::render(&mut f, &console.router().pools());
    hosts::render(&mut f, &console.router().clusters(), Instant::now());
    out
}
