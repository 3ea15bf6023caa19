//! The pgsluice binary: command line, logging, runtime, signals. Everything else is in
//! the library.

use std::process::ExitCode;

use pgsluice::cli::{Cli, Command};
use pgsluice::config::Config;
use pgsluice::Server;
use tokio::signal::unix::{signal, SignalKind};

fn main() -> ExitCode {
    let cli = Cli::parse_from_env();
    let daemon = cli.daemon;
    let command = match cli.into_command() {
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
        Command::Run(mut cfg) => match process_setup(&mut cfg, daemon) {
            Ok(Some(_guard)) => run(*cfg),
            Ok(None) => ExitCode::SUCCESS,
            Err(code) => code,
        },
    }
}

/// PgBouncer's process switches (`-d`, `-u`/`user`, `pidfile`): see
/// [`pgsluice::cli::process`]. `Ok(None)`: this was the foreground half of `-d`, exit.
fn process_setup(
    cfg: &mut Config,
    daemon: bool,
) -> Result<Option<pgsluice::cli::process::ProcessGuard>, ExitCode> {
    match pgsluice::cli::process::setup(cfg, daemon) {
        Ok(pgsluice::cli::process::Setup::Run(guard)) => Ok(Some(guard)),
        Ok(pgsluice::cli::process::Setup::Parent) => Ok(None),
        Err(e) => {
            eprintln!("pgsluice: {e}");
            Err(ExitCode::from(1))
        }
    }
}

fn run(cfg: Config) -> ExitCode {
    if let Err(e) = pgsluice::logging::init(cfg.general.log_format, &cfg.general.log_level) {
        eprintln!("pgsluice: {e}");
        return ExitCode::from(2);
    }
    for w in cfg.warnings() {
        tracing::warn!("{w}");
    }
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = cfg.general.workers {
        rt.worker_threads(n.max(1));
    }
    let rt = match rt.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pgsluice: cannot start runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let code = rt.block_on(async move {
        let deadline = cfg.general.shutdown_timeout.0;
        let (mut term, mut int) = match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(t), Ok(i)) => (t, i),
            _ => {
                eprintln!("pgsluice: cannot install signal handlers");
                return ExitCode::from(1);
            }
        };
        let server = match Server::start(cfg).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot listen");
                return ExitCode::from(1);
            }
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
        // A second SIGTERM or SIGINT stops at once.
        let second = async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        };
        server.shutdown(deadline, second).await;
        tracing::info!("pgsluice stopped");
        ExitCode::SUCCESS
    });
    rt.shutdown_timeout(std::time::Duration::from_millis(200));
    code
}
