//! The pgsluice binary: command line, logging, runtime, signals. Everything else is in
//! the library.
//!
//! Signals: SIGTERM and SIGINT shut down gracefully (a second one stops at once),
//! SIGQUIT stops at once, SIGHUP reloads the configuration and reopens the log file
//! (as RELOAD), SIGUSR1 pauses every pool
//! (as PAUSE), SIGUSR2 resumes (as RESUME; PgBouncer's meaning, kept: a zero-downtime
//! upgrade is asked for with `pgsluice --upgrade CONFIG` instead, see
//! [`pgsluice::app::Upgrade`]).
//!
//! Under systemd (`NOTIFY_SOCKET` set, a `Type=notify` unit) the process reports
//! READY=1 once it listens, RELOADING=1/READY=1 around a SIGHUP reload and
//! STOPPING=1 when shutdown begins ([`pgsluice::cli::sd_notify`]).

use std::process::ExitCode;

use std::sync::Arc;

use pgsluice::admin::StopRequest;
use pgsluice::app::{App, InstanceOptions, Reloader, Upgrade};
use pgsluice::cli::process::ProcessGuard;
use pgsluice::cli::sd_notify::Notifier;
use pgsluice::cli::{Cli, Command};
use pgsluice::config::{Config, ConfigError};
use pgsluice::Instance;
use tokio::signal::unix::{signal, Signal, SignalKind};

fn main() -> ExitCode {
    if pgsluice::cli::man::requested(std::env::args_os()) {
        return print_man();
    }
    let cli = Cli::parse_from_env();
    let daemon = cli.daemon;
    let upgrade = cli.upgrade;
    let command = match cli.clone().into_command() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("pgsluice: {e}");
            return ExitCode::from(2);
        }
    };
    match command {
        Command::CheckConfig(path, format) => {
            let loaded = pgsluice::config::env_vars()
                .and_then(|env| pgsluice::config::load_file_as(&path, format, env));
            match loaded {
                Ok(cfg) => {
                    for w in cfg.warnings() {
                        eprintln!("warning: {w}");
                    }
                    // The TLS files are read too, as at startup.
                    if let Err(e) = pgsluice::tls::TlsState::load(&cfg.general) {
                        eprintln!("{}: TLS: {e}", path.display());
                        return ExitCode::from(1);
                    }
                    println!("{}: configuration is valid", path.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::from(1)
                }
            }
        }
        Command::PrintConfig(cfg) => {
            for w in cfg.warnings() {
                eprintln!("warning: {w}");
            }
            print!("{}", pgsluice::config::to_redacted_toml(&cfg));
            ExitCode::SUCCESS
        }
        Command::Run(mut cfg) => match process_setup(&mut cfg, daemon, upgrade) {
            Ok(Some(mut guard)) => {
                let upgrade = upgrade.then_some(&mut guard);
                run(*cfg, reloader(cli), daemon, upgrade)
            }
            Ok(None) => ExitCode::SUCCESS,
            Err(code) => code,
        },
    }
}

/// `pgsluice --print-man`: the man page on standard output.
fn print_man() -> ExitCode {
    use std::io::Write as _;
    let written = pgsluice::cli::man::render().and_then(|page| std::io::stdout().write_all(&page));
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pgsluice: {e}");
            ExitCode::from(1)
        }
    }
}

/// PgBouncer's process switches (`-d`, `-u`/`user`, `pidfile`): see
/// [`pgsluice::cli::process`]. `Ok(None)`: this was the foreground half of `-d`, exit.
fn process_setup(
    cfg: &mut Config,
    daemon: bool,
    upgrade: bool,
) -> Result<Option<ProcessGuard>, ExitCode> {
    // `--upgrade`: the configuration (and its TLS files) is checked before the running
    // process is contacted; an error leaves it untouched.
    if upgrade {
        if let Err(e) = pgsluice::tls::TlsState::load(&cfg.general) {
            let file = cfg.source.as_ref().map(|p| p.display().to_string());
            eprintln!("{}: TLS: {e}", file.as_deref().unwrap_or("pgsluice"));
            return Err(ExitCode::from(1));
        }
    }
    let setup = if upgrade {
        pgsluice::cli::process::setup_upgrade(cfg, daemon)
    } else {
        pgsluice::cli::process::setup(cfg, daemon)
    };
    match setup {
        Ok(pgsluice::cli::process::Setup::Run(guard)) => Ok(Some(guard)),
        Ok(pgsluice::cli::process::Setup::Parent) => Ok(None),
        Err(e) => {
            eprintln!("pgsluice: {e}");
            Err(ExitCode::from(1))
        }
    }
}

/// RELOAD and SIGHUP build the configuration the way start-up did: the file (or the
/// quick-mode URL) again, then the environment, then the command-line flags.
fn reloader(cli: Cli) -> Reloader {
    Arc::new(move || match cli.clone().into_command()? {
        Command::Run(cfg) => Ok(*cfg),
        Command::CheckConfig(..) | Command::PrintConfig(_) => {
            Err(ConfigError::Invalid("nothing to reload".into()))
        }
    })
}

/// Runs the pooler; `background`: this is the background process of `-d`, whose
/// log lines go to `logfile` (and syslog) only, as PgBouncer's do. `upgrade`: take
/// over from the running process (`--upgrade`); the guard writes the pidfile.
fn run(
    cfg: Config,
    reloader: Reloader,
    background: bool,
    upgrade: Option<&mut ProcessGuard>,
) -> ExitCode {
    let g = &cfg.general;
    let outputs = pgsluice::logging::Outputs::of(g);
    let log = match pgsluice::logging::init(g.log_format, &g.log_level, !background, &outputs) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("pgsluice: {e}");
            return ExitCode::from(2);
        }
    };
    for w in cfg.warnings() {
        tracing::warn!("{w}");
    }
    // One worker: tokio's single-thread scheduler, which wakes and polls tasks without
    // the work-stealing machinery (its run queue needs no atomics). More: the
    // multi-thread one.
    let workers = cfg.general.worker_threads().max(1);
    let mut rt = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(workers);
        b
    };
    let rt = match rt.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pgsluice: cannot start runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let code = rt.block_on(async move {
        let deadline = cfg.general.shutdown_timeout.0;
        let signals = (|| {
            Ok::<_, std::io::Error>((
                signal(SignalKind::terminate())?,
                signal(SignalKind::interrupt())?,
                signal(SignalKind::quit())?,
                signal(SignalKind::hangup())?,
                signal(SignalKind::user_defined1())?,
                signal(SignalKind::user_defined2())?,
            ))
        })();
        let Ok((mut term, mut int, mut quit, hup, usr1, usr2)) = signals else {
            eprintln!("pgsluice: cannot install signal handlers");
            return ExitCode::from(1);
        };
        let taking_over = match &upgrade {
            Some(_) => match Upgrade::connect(&cfg.general).await {
                Ok(found) => Some(found),
                Err(e) => {
                    eprintln!("pgsluice: {e}");
                    return ExitCode::from(1);
                }
            },
            None => None,
        };
        let (taking_over, inherited) = taking_over.unzip();
        let pidfile = cfg.general.pidfile.clone();
        let opts = InstanceOptions {
            reloader: Some(reloader),
            log: Some(log),
            inherited,
        };
        let mut server = match Instance::start_with(cfg, opts).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot start (listen addresses or TLS files)");
                if let Some(u) = taking_over {
                    u.abort(&format!("the new process cannot start: {e}")).await;
                }
                return ExitCode::from(1);
            }
        };
        if let (Some(u), Some(guard)) = (taking_over, upgrade) {
            if let Err(code) = take_over(u, &mut server, guard, pidfile.as_deref()).await {
                return code;
            }
        }
        let notifier = Notifier::from_env();
        notifier.ready();
        tokio::spawn(control_signals(
            server.app().clone(),
            notifier.clone(),
            hup,
            usr1,
            usr2,
        ));
        let app = server.app().clone();
        let how = tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM received"); StopRequest::WaitForServers }
            _ = int.recv() => { tracing::info!("SIGINT received"); StopRequest::WaitForServers }
            _ = quit.recv() => { tracing::info!("SIGQUIT received"); StopRequest::Immediate }
            how = app.stop_requested() => how,
        };
        notifier.stopping();
        // A second SIGTERM, SIGINT or SIGQUIT stops at once.
        let second = async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
                _ = quit.recv() => {}
            }
        };
        match how {
            StopRequest::Immediate => server.shutdown(std::time::Duration::ZERO, second).await,
            StopRequest::WaitForServers => server.shutdown(deadline, second).await,
            StopRequest::WaitForClients => server.shutdown_wait_for_clients(second).await,
        }
        tracing::info!("pgsluice stopped");
        ExitCode::SUCCESS
    });
    rt.shutdown_timeout(std::time::Duration::from_millis(200));
    code
}

/// `--upgrade`, once the new instance listens: the pidfile, then `Ready` to the old
/// process, which stops accepting and sends its clients over.
async fn take_over(
    u: Upgrade,
    server: &mut Instance,
    guard: &mut ProcessGuard,
    pidfile: Option<&std::path::Path>,
) -> Result<(), ExitCode> {
    let old_pid = u.old_pid();
    if let Some(p) = pidfile {
        if let Err(e) = guard.write_pidfile(p) {
            tracing::error!(error = %e, "upgrade abandoned");
            u.abort(&e.to_string()).await;
            return Err(ExitCode::from(1));
        }
    }
    if let Err(e) = u.ready(server).await {
        tracing::error!(error = %e, "upgrade abandoned; the old process goes on");
        guard.give_back_pidfile(old_pid);
        return Err(ExitCode::from(1));
    }
    Ok(())
}

/// SIGHUP reloads (telling systemd, when it listens); SIGUSR1 pauses every pool;
/// SIGUSR2 resumes.
async fn control_signals(
    app: Arc<App>,
    notifier: Notifier,
    mut hup: Signal,
    mut usr1: Signal,
    mut usr2: Signal,
) {
    loop {
        tokio::select! {
            _ = hup.recv() => {
                tracing::info!("SIGHUP received: reloading the configuration");
                notifier.reloading();
                // Errors are logged by reload; the running configuration stays.
                let _ = app.reload().await;
                notifier.ready();
            }
            _ = usr1.recv() => {
                tracing::info!("SIGUSR1 received: pausing");
                if let Err(e) = app.pause_all() {
                    tracing::warn!(error = %e, "SIGUSR1 ignored");
                }
            }
            _ = usr2.recv() => {
                tracing::info!("SIGUSR2 received: resuming");
                if let Err(e) = app.resume_all() {
                    tracing::warn!(error = %e, "SIGUSR2 ignored");
                }
            }
        }
    }
}
