//! Managing a pool from outside its checkouts (PAUSE, RESUME, RECONNECT, KILL, new
//! settings and target) and the views the admin console and metrics read.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::listing::{ClientInfo, ClientReg, ClientState, ServerInfo, ServerState};
use super::{Pool, PoolSettings};
use crate::server::{self, PassThrough, ServerTarget};
use crate::sync::LockExt;

/// How often waits re-check their condition even without a wake-up.
const RECHECK: Duration = Duration::from_millis(100);

/// The per-state counts of one pool (SHOW POOLS).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolCounts {
    /// Clients linked to a server connection or idle (PgBouncer's cl_active).
    pub cl_active: usize,
    /// Clients waiting for a server connection.
    pub cl_waiting: usize,
    /// Of `cl_active`, those linked to a server connection.
    pub cl_linked: usize,
    /// Server connections linked to a client.
    pub sv_active: usize,
    /// Idle server connections.
    pub sv_idle: usize,
    /// Server connections running the reset query.
    pub sv_tested: usize,
    /// Server connections being opened.
    pub sv_login: usize,
    /// Server connections marked to close when released.
    pub close_needed: usize,
    /// How long the oldest waiting client has waited, µs.
    pub maxwait_us: u64,
}

impl PoolCounts {
    /// The counts of two pools listed as one (a replicated database's host pools in
    /// SHOW POOLS): the numbers add up, `maxwait_us` is the longer wait.
    pub fn combine(&self, other: &PoolCounts) -> PoolCounts {
        PoolCounts {
            cl_active: self.cl_active + other.cl_active,
            cl_waiting: self.cl_waiting + other.cl_waiting,
            cl_linked: self.cl_linked + other.cl_linked,
            sv_active: self.sv_active + other.sv_active,
            sv_idle: self.sv_idle + other.sv_idle,
            sv_tested: self.sv_tested + other.sv_tested,
            sv_login: self.sv_login + other.sv_login,
            close_needed: self.close_needed + other.close_needed,
            maxwait_us: self.maxwait_us.max(other.maxwait_us),
        }
    }
}

impl Pool {
    /// Counts clients and server connections by state.
    pub fn counts(&self) -> PoolCounts {
        let now = crate::clock::wall_us_now();
        let mut c = PoolCounts::default();
        for cl in self.clients.snapshot() {
            match cl.state() {
                ClientState::Waiting => {
                    c.cl_waiting += 1;
                    if let Some(t) = cl.wait_since_us() {
                        c.maxwait_us = c.maxwait_us.max(now.saturating_sub(t));
                    }
                }
                ClientState::Active => {
                    c.cl_active += 1;
                    c.cl_linked += 1;
                }
                ClientState::Idle => c.cl_active += 1,
            }
        }
        let epoch = self.epoch.load(Ordering::Relaxed);
        let mut registered = 0;
        for s in self.servers.snapshot() {
            match s.state() {
                ServerState::Active => c.sv_active += 1,
                ServerState::Idle => c.sv_idle += 1,
                ServerState::Tested => c.sv_tested += 1,
                ServerState::Closing => continue,
            }
            registered += 1;
            if s.epoch < epoch {
                c.close_needed += 1;
            }
        }
        c.sv_login = self.lock().total.saturating_sub(registered);
        c
    }

    /// Every client of the pool.
    pub fn clients(&self) -> Vec<Arc<ClientInfo>> {
        self.clients.snapshot()
    }

    /// One pass of the parking sweep over the pool's clients ([`ClientInfo::sweep`]).
    pub(crate) fn sweep_clients(&self) {
        self.clients.for_each(|c| c.sweep());
    }

    /// Every open server connection of the pool (closing ones excluded).
    pub fn servers(&self) -> Vec<Arc<ServerInfo>> {
        let mut v = self.servers.snapshot();
        v.retain(|s| s.state() != ServerState::Closing);
        v
    }

    /// Registers a logged-in client in the pool's list until the guard drops.
    pub fn register_client(&self, info: Arc<ClientInfo>) -> ClientReg {
        self.stats.client_connected();
        ClientReg::new(info, self.clients.clone())
    }

    /// Whether a server connection opened in `epoch` will be closed when released.
    pub fn close_needed(&self, s: &ServerInfo) -> bool {
        s.epoch < self.epoch.load(Ordering::Relaxed)
    }

    /// Replaces the settings (RELOAD, SET). A larger size lets waiting clients open
    /// connections at once; a smaller one closes connections as they come back.
    pub fn set_settings(self: &Arc<Self>, settings: PoolSettings) {
        self.hot.set(&settings);
        self.settings.store(Arc::new(settings));
        self.grant_waiters();
        self.maintain(std::time::Instant::now());
    }

    /// Points new connections at `target`; connections to the old one are closed when
    /// released (as RECONNECT does). No-op when unchanged.
    pub fn set_target(&self, target: ServerTarget) {
        if *self.target.load_full() == target {
            return;
        }
        self.target.store(Arc::new(target));
        *self.startup.locked() = None;
        self.clear_login_failure();
        self.reconnect();
    }

    /// Remembers the credential of a client's successful login for the pool's new
    /// server connections (replacing any earlier one); open connections are kept.
    pub fn set_passthrough(&self, credential: PassThrough) {
        let current = self.passthrough.load();
        if current.as_deref() != Some(&credential) {
            self.passthrough.store(Some(Arc::new(credential)));
        }
    }

    /// The credential of a client's login that the pool's new connections log in
    /// with, if any (an upgrade's handover carries it to the new process).
    pub fn passthrough(&self) -> Option<Arc<PassThrough>> {
        self.passthrough.load_full()
    }

    /// Where new connections go, with the passed-through credential if any.
    pub fn connect_target(&self) -> Arc<ServerTarget> {
        let target = self.target();
        match self.passthrough.load_full() {
            Some(p) => Arc::new(ServerTarget {
                passthrough: Some(p),
                ..(*target).clone()
            }),
            None => target,
        }
    }

    /// RECONNECT: every open connection is closed when released; idle ones now.
    pub fn reconnect(&self) {
        self.epoch.fetch_add(1, Ordering::Relaxed);
        self.clear_login_failure();
        let idle = {
            let mut st = self.lock();
            let idle = std::mem::take(&mut st.idle);
            st.total -= idle.len();
            idle
        };
        self.close_members(idle, "reconnect requested");
    }

    /// PAUSE: no more assignments; idle connections close now, the others when
    /// released. Clients that ask for a connection wait until [`Pool::resume`].
    pub fn pause(&self) {
        let idle = {
            let mut st = self.lock();
            st.paused = true;
            let idle = std::mem::take(&mut st.idle);
            st.total -= idle.len();
            idle
        };
        self.close_members(idle, "pool paused");
    }

    /// RESUME: waiting clients get connections again.
    pub fn resume(self: &Arc<Self>) {
        self.lock().paused = false;
        self.clear_login_failure();
        self.grant_waiters();
        self.changed.notify_waiters();
    }

    /// Whether the pool is paused.
    pub fn is_paused(&self) -> bool {
        self.lock().paused
    }

    /// Whether [`Pool::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// KILL: pause, close the connections of every client (they are dropped without
    /// waiting for their transactions) and cancel the queries running for them.
    pub fn kill(&self) {
        self.pause();
        for s in self.servers() {
            if s.state() == ServerState::Active {
                let (target, key) = (s.target.clone(), s.key.clone());
                // send_cancel gives up after 5 s.
                self.background.spawn(async move {
                    let _ = server::send_cancel(&target, &key).await;
                });
            }
        }
        for c in self.clients.snapshot() {
            c.kill();
        }
    }

    /// Open connections plus connections being opened.
    pub fn server_count(&self) -> usize {
        self.lock().total
    }

    /// Number of open server connections still marked for closing.
    pub fn close_needed_count(&self) -> usize {
        let epoch = self.epoch.load(Ordering::Relaxed);
        self.servers().iter().filter(|s| s.epoch < epoch).count()
    }

    /// Waits until `done(self)` holds, re-checking whenever a connection is released
    /// or closed (and every 100 ms).
    pub async fn wait_until(&self, done: impl Fn(&Pool) -> bool) {
        /// Counts this task in `watchers` while it waits.
        struct Watching<'a>(&'a std::sync::atomic::AtomicUsize);
        impl Drop for Watching<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        self.watchers.fetch_add(1, Ordering::SeqCst);
        let _watching = Watching(&self.watchers);
        loop {
            let notified = self.changed.notified();
            if done(self) {
                return;
            }
            let _ = tokio::time::timeout(RECHECK, notified).await;
        }
    }

    /// Marks the pool as left over from an older configuration.
    pub fn retire(&self) {
        self.retired.store(true, Ordering::Relaxed);
    }

    /// Whether [`Pool::retire`] was called.
    pub fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Relaxed)
    }

    /// Number of clients using the pool.
    pub fn client_count(&self) -> usize {
        self.clients.len()
    }
}
