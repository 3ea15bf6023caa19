//! The many-client sections on PostgreSQL: `memory` (idle authenticated clients over
//! plain TCP), `memory-tls` (the same under `sslmode=require`, both poolers requiring
//! TLS from clients) and `storm`. Each contender is started fresh for each.

use std::path::Path;

use crate::args::Args;
use crate::clients;
use crate::model::{Contender, Results};
use crate::procs::{self, Backend};
use crate::progress;
use crate::tls::{self, TlsFiles};

/// Runs the sections of `memory`, `memory-tls` and `storm` that `a` asks for.
pub(crate) fn sections(
    a: &Args,
    bin: &Path,
    backend: &Backend,
    secret: &str,
    work: &Path,
    r: &mut Results,
) {
    let wants = |s: &str| a.sections.contains(&s);
    if wants("memory") {
        idle(a, bin, backend, secret, None, r);
    }
    if wants("memory-tls") {
        let dir = work.join("tls");
        match std::fs::create_dir_all(&dir).and_then(|()| tls::make_certs(&dir)) {
            Ok(files) => idle(a, bin, backend, secret, Some(&files), r),
            Err(e) => r.failures.push(format!("memory-tls: certificates: {e}")),
        }
    }
    if wants("storm") {
        storm(a, bin, backend, secret, r);
    }
}

fn start(
    who: Contender,
    a: &Args,
    bin: &Path,
    backend: &Backend,
    secret: &str,
    tls: Option<&TlsFiles>,
) -> Result<procs::RunningPooler, String> {
    match who {
        Contender::Pgsluice => {
            let env = tls.map(TlsFiles::pgsluice_env).unwrap_or_default();
            procs::start_pgsluice(bin, backend, a.pool_size, a.workers, &env)
        }
        _ => {
            let ini = tls.map(TlsFiles::pgbouncer_ini).unwrap_or_default();
            procs::start_pgbouncer(backend, a.pool_size, secret, &ini)
        }
    }
    .map_err(|e| format!("starting {}: {e}", who.name()))
}

fn idle(
    a: &Args,
    bin: &Path,
    backend: &Backend,
    secret: &str,
    tls: Option<&TlsFiles>,
    r: &mut Results,
) {
    let section = if tls.is_some() {
        "memory-tls"
    } else {
        "memory"
    };
    for who in [Contender::Pgsluice, Contender::Pgbouncer] {
        let p = match start(who, a, bin, backend, secret, tls) {
            Ok(p) => p,
            Err(e) => {
                r.failures.push(format!("{section}: {e}"));
                continue;
            }
        };
        progress(format_args!(
            "{section}: {} idle authenticated clients on a fresh {}",
            a.idle_clients,
            who.name()
        ));
        let connector = match tls.map(TlsFiles::connector).transpose() {
            Ok(c) => c,
            Err(e) => {
                r.failures.push(format!("{section}: client TLS: {e}"));
                return;
            }
        };
        match clients::idle_clients(p.addr(), p.pid(), a.idle_clients, connector) {
            Ok(res) => {
                progress(format_args!(
                    "{section}: {}: {} connected ({} errors), {:.0} bytes/client, all-at-once select 1: {} errors in {:.2} s",
                    who.name(),
                    res.connected,
                    res.connect_errors,
                    res.bytes_per_client().unwrap_or(0.0),
                    res.query_errors,
                    res.query_secs
                ));
                r.idle.push((who, res));
            }
            Err(e) => r.failures.push(format!("{section} ({}): {e}", who.name())),
        }
        p.stop();
    }
}

fn storm(a: &Args, bin: &Path, backend: &Backend, secret: &str, r: &mut Results) {
    for who in [Contender::Pgsluice, Contender::Pgbouncer] {
        let p = match start(who, a, bin, backend, secret, None) {
            Ok(p) => p,
            Err(e) => {
                r.failures.push(format!("storm: {e}"));
                continue;
            }
        };
        progress(format_args!(
            "storm: {} clients at once on a fresh {}",
            a.storm_clients,
            who.name()
        ));
        match clients::storm(p.addr(), a.storm_clients) {
            Ok(res) => {
                progress(format_args!(
                    "storm: {}: {} ok, {} errors, all served in {:.2} s",
                    who.name(),
                    res.ok,
                    res.errors,
                    res.total_secs
                ));
                r.storm.push((who, res));
            }
            Err(e) => r.failures.push(format!("storm ({}): {e}", who.name())),
        }
        p.stop();
    }
}
