//! `pgsluice-fakepg [ADDR] [--workers N]`: an instant-answer fake PostgreSQL backend
//! (trust auth; every query answers at once) for pooler-only benchmarks. ADDR defaults
//! to 127.0.0.1:0; the bound address is printed as `listening on ADDR`.

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut addr = "127.0.0.1:0".to_owned();
    let mut workers = 1;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--workers" => match args.next().and_then(|n| n.parse().ok()) {
                Some(n) => workers = n,
                None => return usage("--workers needs a number"),
            },
            "-h" | "--help" => {
                println!("usage: pgsluice-fakepg [ADDR] [--workers N]");
                return ExitCode::SUCCESS;
            }
            a if !a.starts_with('-') => addr = a.to_owned(),
            other => return usage(&format!("unknown argument {other}")),
        }
    }
    match pgsluice_bench::fakepg::run_blocking(&addr, workers) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pgsluice-fakepg: {e}");
            ExitCode::FAILURE
        }
    }
}

fn usage(msg: &str) -> ExitCode {
    eprintln!("pgsluice-fakepg: {msg}\nusage: pgsluice-fakepg [ADDR] [--workers N]");
    ExitCode::from(2)
}
