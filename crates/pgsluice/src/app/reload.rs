//! Hot reload (RELOAD, SIGHUP, SET): the new configuration becomes one new generation,
//! built and validated as a whole on a blocking thread (it reads files and derives
//! SCRAM verifiers); then it is published with one store, and the pools follow it,
//! without dropping a client.
//!
//! What changes on the fly: databases and users (added ones serve new clients; pools of
//! removed ones keep serving their clients and close once those leave), pool sizes and
//! modes, timeouts, the reset query, passwords, `max_client_conn`, the log level, the
//! log file and syslog settings (the log file is reopened at every reload), the
//! `auth_hba_file` rules, and the TLS settings and files (read again at every reload;
//! new connections use them).
//! Connections to a database whose host, port, dbname or login changed are closed when
//! released (as RECONNECT). What needs a restart (`listen`, `so_reuseport`, `workers`, `relay_lanes`, `log_format`,
//! `metrics_listen`) keeps its running value, with a warning.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::App;
use crate::admin::ReloadReport;
use crate::config::Config;
use crate::generation::Generation;

impl App {
    /// Reads the configuration again (see [`super::Reloader`]) and applies it. On any
    /// error nothing changes and the error says why.
    pub async fn reload(&self) -> Result<ReloadReport, String> {
        // The log file first, whatever becomes of the configuration: logrotate renamed
        // it and signalled (PgBouncer reopens on SIGHUP and RELOAD alike).
        if let Some(log) = &self.log {
            if let Err(e) = log.reopen() {
                tracing::warn!("{e}; still logging to the file open before");
            }
        }
        let reloader = self.reloader.clone();
        // The reloader reads files: off the runtime threads.
        let read = tokio::task::spawn_blocking(move || reloader())
            .await
            .map_err(|e| format!("reload task failed: {e}"))
            .and_then(|r| r.map_err(|e| e.to_string()));
        let r = match read {
            Ok(cfg) => self.apply_config(cfg).await,
            Err(e) => Err(e),
        };
        match &r {
            Ok(rep) => {
                self.reloads_ok.fetch_add(1, Ordering::Relaxed);
                for w in &rep.warnings {
                    tracing::warn!("reload: {w}");
                }
                if rep.changes.is_empty() {
                    tracing::info!("configuration reloaded: no changes");
                } else {
                    tracing::info!(changes = %rep.changes.join("; "), "configuration reloaded");
                }
            }
            Err(e) => {
                self.reloads_failed.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "configuration reload failed; the running configuration stays");
            }
        }
        r
    }

    /// Validates `new`, builds its generation and makes it the one in force.
    pub async fn apply_config(&self, mut new: Config) -> Result<ReloadReport, String> {
        // One reload at a time: each is built against the generation it replaces.
        let _one = self.reloading.lock().await;
        let old = self.live.current();
        let rep = compare(&old.config, &mut new);
        let number = self.live.next_number();
        let built = tokio::task::spawn_blocking(move || Generation::build(number, new))
            .await
            .map_err(|e| format!("reload task failed: {e}"))?
            .map_err(|e| e.0)?;
        // Everything that can fail is done: from here on the reload is applied whole.
        let (o, n) = (&old.config.general, &built.config.general);
        if n.log_level != o.log_level {
            if let Some(log) = &self.log {
                log.set_level(&n.log_level)?;
            }
        }
        if n.max_client_conn != o.max_client_conn {
            self.set_client_limit(n.max_client_conn);
        }
        if let Some(log) = &self.log {
            let outputs = crate::logging::Outputs::of(n);
            if outputs != log.outputs() {
                if let Err(e) = log.set_outputs(&outputs) {
                    tracing::warn!("{e}; still logging to the file open before");
                }
            }
        }
        let plan = self.router.plan(&built);
        let next = Arc::new(built);
        self.live.publish(next.clone());
        self.router.apply(&next, plan);
        Ok(rep)
    }

    /// Changes how many clients may be connected at once.
    fn set_client_limit(&self, limit: usize) {
        let old = self.client_limit.swap(limit, Ordering::Relaxed);
        if limit > old {
            self.client_slots.add_permits(limit - old);
        } else {
            // Connected clients keep their slots; fewer come back as they leave.
            let mut remaining = old - limit;
            remaining -= self.client_slots.forget_permits(remaining);
            if remaining > 0 {
                let slots = self.client_slots.clone();
                let mut shutdown = self.shutdown.watch();
                self.background.spawn(async move {
                    tokio::select! {
                        p = slots.acquire_many_owned(remaining as u32) => {
                            if let Ok(p) = p {
                                p.forget();
                            }
                        }
                        _ = shutdown.requested() => {}
                    }
                });
            }
        }
    }
}

/// What changes from `old` to `new`, for the log; settings that need a restart are
/// put back to their running values in `new`, with a warning.
fn compare(old: &Config, new: &mut Config) -> ReloadReport {
    let mut rep = ReloadReport::default();
    let (o, n) = (&old.general, &mut new.general);
    if n.listen != o.listen {
        rep.warnings
            .push("`listen` changes need a restart; still listening as before".into());
        n.listen.clone_from(&o.listen);
    }
    if n.workers != o.workers {
        rep.warnings.push("`workers` changes need a restart".into());
        n.workers = o.workers;
    }
    if n.relay_lanes != o.relay_lanes {
        rep.warnings
            .push("`relay_lanes` changes need a restart".into());
        n.relay_lanes = o.relay_lanes;
    }
    if n.log_format != o.log_format {
        rep.warnings
            .push("`log_format` changes need a restart".into());
        n.log_format = o.log_format;
    }
    if n.metrics_listen != o.metrics_listen {
        rep.warnings
            .push("`metrics_listen` changes need a restart".into());
        n.metrics_listen = o.metrics_listen;
    }
    if n.so_reuseport != o.so_reuseport {
        rep.warnings
            .push("`so_reuseport` changes need a restart".into());
        n.so_reuseport = o.so_reuseport;
    }
    if n.log_level != o.log_level {
        rep.changes
            .push(format!("log_level = {:?}", n.log_level.as_str()));
    }
    if n.max_client_conn != o.max_client_conn {
        rep.changes
            .push(format!("max_client_conn = {}", n.max_client_conn));
    }
    if new.general != old.general {
        rep.changes.push("[general] settings".into());
    }
    for name in new.databases.keys() {
        match old.databases.get(name) {
            None => rep.changes.push(format!("database `{name}` added")),
            Some(d) if Some(d) != new.databases.get(name) => {
                rep.changes.push(format!("database `{name}` changed"))
            }
            Some(_) => {}
        }
    }
    for name in old.databases.keys() {
        if !new.databases.contains_key(name) {
            rep.changes.push(format!("database `{name}` removed"));
        }
    }
    if new.users != old.users {
        rep.changes.push("users changed".into());
    }
    if new.hba != old.hba {
        rep.changes.push("auth_hba_file rules".into());
    }
    rep
}
