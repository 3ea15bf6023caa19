//! `pgsluice-demo`: starts a throwaway PostgreSQL cluster with user `app`
//! (password `app`) and database `app`, then runs pgsluice in front of it
//! until Ctrl-C / SIGTERM (or until pgsluice exits), and cleans everything up.
//!
//! Usage: `pgsluice-demo [EXTRA PGSLUICE ARGS...]`
//!
//! Environment:
//! - `DEMO_LISTEN`: listen address (default `127.0.0.1:6432`)
//! - `DEMO_PGSLUICE_BIN`: pgsluice binary (default: `pgsluice` next to this program)
//! - `PG_BIN`: PostgreSQL bin dir (default: newest /usr/lib/postgresql/*/bin)

use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use pgsluice_testkit::{send_signal, ClusterOptions, HostAuth, PgCluster};

/// Last signal received (0 = none) and how many were received.
static LAST_SIGNAL: AtomicI32 = AtomicI32::new(0);
static SIGNAL_COUNT: AtomicUsize = AtomicUsize::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    LAST_SIGNAL.store(sig, Ordering::SeqCst);
    SIGNAL_COUNT.fetch_add(1, Ordering::SeqCst);
}

#[allow(unsafe_code)]
fn install_signal_handlers() {
    let handler: extern "C" fn(libc::c_int) = on_signal;
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: `on_signal` only performs atomic stores/adds, which are
        // async-signal-safe; it lives for the whole program. signal(2) has no
        // other memory-safety preconditions.
        unsafe {
            libc::signal(sig, handler as libc::sighandler_t);
        }
    }
}

fn signalled() -> bool {
    SIGNAL_COUNT.load(Ordering::SeqCst) > 0
}

fn main() -> ExitCode {
    install_signal_handlers();
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("pgsluice-demo: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn pgsluice_binary() -> Result<PathBuf, String> {
    if let Some(bin) = std::env::var_os("DEMO_PGSLUICE_BIN").filter(|b| !b.is_empty()) {
        return Ok(PathBuf::from(bin));
    }
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let bin = exe
        .parent()
        .ok_or("current_exe has no parent dir")?
        .join("pgsluice");
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(format!(
            "{} not found; build it first: cargo build --release -p pgsluice -p pgsluice-testkit \
             (or set DEMO_PGSLUICE_BIN)",
            bin.display()
        ))
    }
}

fn run() -> Result<ExitCode, String> {
    let bin = pgsluice_binary()?;
    let listen = std::env::var("DEMO_LISTEN").unwrap_or_else(|_| "127.0.0.1:6432".to_string());
    let listen_addr: SocketAddr = listen
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| format!("DEMO_LISTEN={listen:?} is not a host:port address"))?;
    if let Err(e) = TcpListener::bind(listen_addr) {
        return Err(format!(
            "cannot listen on {listen}: {e} (another pooler running? \
             set DEMO_LISTEN=127.0.0.1:6433 for another port)"
        ));
    }
    let extra: Vec<String> = std::env::args().skip(1).collect();

    eprintln!("pgsluice-demo: starting a throwaway PostgreSQL cluster ...");
    let cluster = PgCluster::start_detached(ClusterOptions::with_auth(HostAuth::Scram))
        .map_err(|e| format!("starting PostgreSQL: {e}"))?;
    cluster
        .create_user("app", "app")
        .and_then(|()| cluster.create_database("app", "app"))
        .map_err(|e| format!("creating user/database: {e}"))?;
    let version = cluster.psql("show server_version").unwrap_or_default();
    eprintln!(
        "pgsluice-demo: PostgreSQL {version} on 127.0.0.1:{} (data {}, log {})",
        cluster.port(),
        cluster.data_dir().display(),
        cluster.log_path().display()
    );
    if signalled() {
        eprintln!("pgsluice-demo: interrupted; stopping PostgreSQL");
        return Ok(ExitCode::SUCCESS);
    }

    let backend = cluster.url("app", "app", "app");
    let mut args: Vec<String> = vec![
        "--listen".into(),
        listen.clone(),
        "--backend".into(),
        backend,
        "--pool-mode".into(),
        "transaction".into(),
        "--pool-size".into(),
        "20".into(),
    ];
    args.extend(extra);
    eprintln!(
        "pgsluice-demo: running {} {}",
        bin.display(),
        args.join(" ")
    );
    let mut child = Command::new(&bin)
        .args(&args)
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| format!("spawning {}: {e}", bin.display()))?;

    // Tell the user how to connect as soon as pgsluice accepts connections.
    let mut announced = false;
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break Some(status);
        }
        if signalled() {
            break None;
        }
        if !announced
            && TcpStream::connect_timeout(&listen_addr, Duration::from_millis(200)).is_ok()
        {
            announced = true;
            print_banner(listen_addr, cluster.port(), child.id());
        }
        if !announced && started.elapsed() > Duration::from_secs(30) {
            announced = true;
            eprintln!("pgsluice-demo: warning: pgsluice is not accepting connections on {listen} after 30 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };

    let code = match status {
        Some(status) => {
            eprintln!("pgsluice-demo: pgsluice exited ({status}); stopping PostgreSQL");
            exit_code_of(status)
        }
        None => {
            let status = shut_down(&mut child);
            eprintln!(
                "pgsluice-demo: pgsluice stopped ({}); stopping PostgreSQL",
                status.map_or("killed".to_string(), |s| s.to_string())
            );
            ExitCode::SUCCESS
        }
    };
    drop(cluster);
    eprintln!("pgsluice-demo: done");
    Ok(code)
}

fn print_banner(listen: SocketAddr, pg_port: u16, pid: u32) {
    let (host, port) = (listen.ip(), listen.port());
    println!();
    println!("================================================================");
    println!(" pgsluice (pid {pid}) is listening on {listen}");
    println!(" in transaction mode, pool size 20, in front of PostgreSQL on 127.0.0.1:{pg_port}");
    println!();
    println!(" Connect with: PGPASSWORD=app psql -h {host} -p {port} -U app app");
    println!();
    println!(" Benchmark:    PGPASSWORD=app pgbench -i -h {host} -p {port} -U app app");
    println!("               PGPASSWORD=app pgbench -c 50 -T 10 -h {host} -p {port} -U app app");
    println!(" Bypass pool:  PGPASSWORD=app psql -h 127.0.0.1 -p {pg_port} -U app app");
    println!();
    println!(" Press Ctrl-C to stop (PostgreSQL and its data are thrown away).");
    println!("================================================================");
    println!();
}

/// Stops pgsluice after we got a signal: a terminal's Ctrl-C reached it too,
/// so give it a moment to exit by itself, then SIGTERM, then SIGKILL. A
/// second Ctrl-C skips straight to SIGKILL.
fn shut_down(child: &mut Child) -> Option<ExitStatus> {
    let pid = child.id();
    let first_signal = LAST_SIGNAL.load(Ordering::SeqCst);
    let grace = if first_signal == libc::SIGINT {
        Duration::from_secs(2)
    } else {
        Duration::ZERO
    };
    eprintln!("pgsluice-demo: shutting down pgsluice ...");
    let mut count_at_start = SIGNAL_COUNT.load(Ordering::SeqCst);
    let mut phase = 0; // 0: grace, 1: SIGTERM sent, 2: SIGKILL sent
    let mut deadline = Instant::now() + grace;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        let again = SIGNAL_COUNT.load(Ordering::SeqCst) > count_at_start;
        if again && phase < 2 {
            eprintln!("pgsluice-demo: second signal, killing pgsluice");
            let _ = child.kill();
            phase = 2;
            count_at_start = usize::MAX;
        } else if Instant::now() >= deadline {
            match phase {
                0 => {
                    let _ = send_signal(pid, libc::SIGTERM);
                    phase = 1;
                    deadline = Instant::now() + Duration::from_secs(10);
                }
                1 => {
                    eprintln!("pgsluice-demo: pgsluice did not stop within 10 s, killing it");
                    let _ = child.kill();
                    phase = 2;
                    deadline = Instant::now() + Duration::from_secs(5);
                }
                _ => return child.wait().ok(),
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn exit_code_of(status: ExitStatus) -> ExitCode {
    match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(c) => ExitCode::from(u8::try_from(c).unwrap_or(1)),
        None => ExitCode::FAILURE,
    }
}
