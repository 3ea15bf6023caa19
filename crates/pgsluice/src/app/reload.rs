//! Hot reload (RELOAD, SIGHUP, SET): a new configuration is validated as a whole
//! before anything changes; then it replaces the old one without dropping a client.
//!
//! What changes on the fly: databases and users (added ones serve new clients; pools of
//! removed ones keep serving their clients and close once those leave), pool sizes and
//! modes, timeouts, the reset query, passwords, `max_client_conn`, the log level, the
//! `auth_hba_file` rules, and the TLS settings and files (read again at every reload;
//! new connections use them).
//! Connections to a database whose host, port, dbname or login changed are closed when
//! released (as RECONNECT). What needs a restart (`listen`, `workers`, `log_format`,
//! `metrics_listen`) keeps its running value, with a warning.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{pool_spec, App};
use crate::client::auth::Secrets;
use crate::config::Config;
use crate::sync::LockExt;
use crate::tls::TlsState;

/// What a successful reload did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadReport {
    /// Changes applied, for the log.
    pub changes: Vec<String>,
    /// Settings that need a restart and were left as they are.
    pub warnings: Vec<String>,
}

impl App {
    /// Reads the configuration again (see [`super::Reloader`]) and applies it. On any
    /// error nothing changes and the error says why.
    pub fn reload(self: &Arc<Self>) -> Result<ReloadReport, String> {
        let r = (self.reloader)()
            .map_err(|e| e.to_string())
            .and_then(|cfg| self.apply_config(cfg));
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

    /// Validates `new` and makes it the configuration in force.
    pub fn apply_config(self: &Arc<Self>, mut new: Config) -> Result<ReloadReport, String> {
        new.validate().map_err(|e| e.to_string())?;
        let old = self.config();
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
        if n.log_level != o.log_level {
            if let Some(log) = &self.log {
                log.set_level(&n.log_level)?;
            }
            rep.changes
                .push(format!("log_level = {:?}", n.log_level.as_str()));
        }
        if n.max_client_conn != o.max_client_conn {
            self.set_client_limit(n.max_client_conn);
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

        // Certificate, key and CA files are read again on every reload.
        let tls = TlsState::load(&new.general)?;
        let secrets = Secrets::from_config(&new);
        self.hot.set(&new.general);
        self.config.store(Arc::new(new));
        self.secrets.store(Arc::new(secrets));
        self.tls.store(Arc::new(tls));
        self.update_pools();
        self.warm_pools();
        Ok(rep)
    }

    /// Brings every pool in line with the configuration in force.
    fn update_pools(self: &Arc<Self>) {
        let cfg = self.config();
        self.update_groups(&cfg);
        let tls = self.tls().servers.clone();
        let mut gone = Vec::new();
        {
            let mut pools = self.lock_pools();
            pools.retain(|key, pool| {
                match pool_spec(&cfg, tls.clone(), &key.database, &key.user) {
                    Some((target, settings)) => {
                        pool.set_target(target);
                        pool.set_settings(settings);
                        true
                    }
                    None => {
                        gone.push(pool.clone());
                        false
                    }
                }
            });
        }
        for p in &gone {
            tracing::info!(pool = %p.key(), clients = p.client_count(), "pool retired by reload; it closes when its clients leave");
            p.retire();
        }
        self.retired.locked().extend(gone);
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
                tokio::spawn(async move {
                    if let Ok(p) = slots.acquire_many_owned(remaining as u32).await {
                        p.forget();
                    }
                });
            }
        }
    }
}
