//! `relay-lab --model tokio|mio|uring [--listen ADDR] [--backend ADDR] [--pool N]
//! [--threads N]`: a minimal transaction-pooling proxy used to measure the floor of each
//! I/O model for the relay (issue 18; see `scripts/relay-lab` and docs/performance.md).
//! Defaults: listen 127.0.0.1:26440, backend 127.0.0.1:25432, pool 20, 1 thread.

use std::process::ExitCode;

use pgsluice_bench::relaylab::{self, LabConfig, Model};

const USAGE: &str = "usage: relay-lab --model tokio|mio|uring [--listen ADDR] [--backend ADDR] [--pool N] [--threads N]";

fn main() -> ExitCode {
    let mut cfg = LabConfig {
        model: Model::Tokio,
        listen: ([127, 0, 0, 1], 26440).into(),
        backend: ([127, 0, 0, 1], 25432).into(),
        pool: 20,
        threads: 1,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "-h" || a == "--help" {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        let Some(v) = args.next() else {
            return usage(&format!("{a} needs a value"));
        };
        let ok = match a.as_str() {
            "--model" => match v.as_str() {
                "tokio" => Some(Model::Tokio),
                "mio" => Some(Model::Mio),
                "uring" => Some(Model::Uring),
                _ => None,
            }
            .map(|m| cfg.model = m),
            "--listen" => v.parse().ok().map(|x| cfg.listen = x),
            "--backend" => v.parse().ok().map(|x| cfg.backend = x),
            "--pool" => v.parse().ok().map(|x| cfg.pool = x),
            "--threads" => v.parse().ok().map(|x| cfg.threads = x),
            _ => return usage(&format!("unknown argument {a}")),
        };
        if ok.is_none() {
            return usage(&format!("bad value for {a}: {v}"));
        }
    }
    match relaylab::run(&cfg) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("relay-lab: {e}");
            ExitCode::FAILURE
        }
    }
}

fn usage(msg: &str) -> ExitCode {
    eprintln!("relay-lab: {msg}\n{USAGE}");
    ExitCode::from(2)
}
