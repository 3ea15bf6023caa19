//! The optional HTTP endpoint (`metrics_listen`): a small HTTP/1.1 responder, one
//! request per connection, that answers `GET /metrics` with the Prometheus text
//! exposition format (version 0.0.4), `GET /` with the live dashboard and
//! `GET /api/stats` with the JSON the dashboard polls. `access` decides who may ask
//! (`metrics_allow`, `metrics_auth_token`). The metric list is in `docs/metrics.md`,
//! the dashboard in `docs/dashboard.md`. The process-wide series are here; `pools`
//! and `hosts` write the per-pool and per-host ones.

mod access;
mod dashboard;
mod hosts;
mod pools;
mod recent;
mod shards;
mod text;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::admin::Console;
use crate::shutdown::TaskTracker;
use access::{Access, Denied, Request};
use recent::Recent;
use text::Family;

/// Largest request head accepted.
const MAX_REQUEST: usize = 8 * 1024;
/// Time a scraper has to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The dashboard's recent percentiles cover about this long...
const RECENT_SPAN: Duration = Duration::from_secs(60);
/// ...from copies of the histograms taken at most this often.
const RECENT_EVERY: Duration = Duration::from_secs(5);

/// Accepts scrapes until shutdown; each is answered in a task of `tasks`.
pub async fn serve(listener: TcpListener, console: Arc<dyn Console>, tasks: TaskTracker) {
    let mut shutdown = console.shutdown_watch();
    let recent = Arc::new(Mutex::new(Recent::new(RECENT_SPAN, RECENT_EVERY)));
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.requested() => return,
        };
        match accepted {
            Ok((sock, peer)) => {
                let (console, recent) = (console.clone(), recent.clone());
                tasks.spawn(async move {
                    let answering = answer(sock, peer, &*console, &recent);
                    let _ = tokio::time::timeout(REQUEST_TIMEOUT, answering).await;
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "metrics accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// A response: status line, content type, body, and headers beyond the usual ones.
struct Response {
    status: &'static str,
    ctype: &'static str,
    body: String,
    extra: &'static str,
}

impl Response {
    fn text(status: &'static str, body: &str) -> Response {
        Response {
            status,
            ctype: "text/plain; charset=utf-8",
            body: body.to_owned(),
            extra: "",
        }
    }
}

/// The page may run its own inline script and style and fetch from its origin; it
/// loads nothing from anywhere else.
const PAGE_HEADERS: &str = "Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n\
     Content-Security-Policy: default-src 'none'; script-src 'unsafe-inline'; \
     style-src 'unsafe-inline'; connect-src 'self'; img-src data:\r\n";

async fn answer(
    mut sock: TcpStream,
    peer: SocketAddr,
    console: &dyn Console,
    recent: &Mutex<Recent>,
) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = sock.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > MAX_REQUEST {
            let r = Response::text("431 Request Header Fields Too Large", "");
            return respond(&mut sock, r, false).await;
        }
    }
    let head = String::from_utf8_lossy(&buf);
    let req = Request::parse(&head);
    let r = route(&req, peer, console, recent);
    respond(&mut sock, r, req.method == "HEAD").await
}

/// The response to a request from `peer`.
fn route(
    req: &Request<'_>,
    peer: SocketAddr,
    console: &dyn Console,
    recent: &Mutex<Recent>,
) -> Response {
    if !matches!(req.method, "GET" | "HEAD") {
        return Response::text("405 Method Not Allowed", "only GET and HEAD\n");
    }
    let cfg = console.config();
    let access = Access {
        token: cfg.general.metrics_auth_token.as_ref().map(|t| t.expose()),
        allow: &cfg.general.metrics_allow,
    };
    match access.check(peer.ip(), req) {
        Ok(()) => {}
        Err(Denied::Forbidden) => return Response::text("403 Forbidden", "forbidden\n"),
        Err(Denied::Unauthorized) => {
            return Response {
                extra: "WWW-Authenticate: Bearer realm=\"pgsluice\"\r\n",
                ..Response::text(
                    "401 Unauthorized",
                    "unauthorized: send Authorization: Bearer <metrics_auth_token>, \
                     or add ?token=<metrics_auth_token> to the address\n",
                )
            }
        }
    }
    match req.path {
        "/metrics" => Response {
            ctype: "text/plain; version=0.0.4; charset=utf-8",
            ..Response::text("200 OK", &render(console))
        },
        "/" | "/index.html" => Response {
            status: "200 OK",
            ctype: "text/html; charset=utf-8",
            body: dashboard::PAGE.to_owned(),
            extra: PAGE_HEADERS,
        },
        "/api/stats" => {
            let snap = dashboard::Snapshot::read(console, Instant::now(), recent);
            Response {
                status: "200 OK",
                ctype: "application/json",
                body: dashboard::stats_json(&snap).to_string(),
                extra: "Cache-Control: no-store\r\n",
            }
        }
        _ => Response::text("404 Not Found", "not found\n"),
    }
}

/// Writes `r` (its head only for HEAD) and closes the connection.
async fn respond(sock: &mut TcpStream, r: Response, head_only: bool) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{}Connection: close\r\n\r\n",
        r.status,
        r.ctype,
        r.body.len(),
        r.extra
    );
    sock.write_all(head.as_bytes()).await?;
    if !head_only {
        sock.write_all(r.body.as_bytes()).await?;
    }
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
    shards::render(&mut f, &console.router().shard_sets());
    out
}
