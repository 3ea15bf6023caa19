//! What the router knows of each host of a replicated database: its role as the host
//! itself reports it (`pg_is_in_recovery()`), whether it is up or banned, and how far
//! behind the primary it is. Sans-IO: the health checker ([`super::health`]) and
//! failed checkouts feed observations in; routing reads a published snapshot
//! ([`HostSet::view`]) with one atomic load.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::config::{HostConfig, HostRole, ReplicaLag};
use crate::sync::LockExt;

/// A host's role as it reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Not checked yet, or not reachable since start.
    Unknown,
    /// Accepts writes (`pg_is_in_recovery()` is false).
    Primary,
    /// A hot standby (`pg_is_in_recovery()` is true).
    Standby,
}

impl Role {
    /// The spelling in SHOW HOSTS and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Unknown => "unknown",
            Role::Primary => "primary",
            Role::Standby => "replica",
        }
    }
}

/// Whether a host takes work now, as SHOW HOSTS and the metrics report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Availability {
    /// Its last check succeeded and no ban runs.
    Up,
    /// Its last check (or connection attempt) failed, or it was never reached; no
    /// ban runs any more, so the next successful check brings it back.
    Down,
    /// Left out of routing until its ban ends (even if a check succeeded since).
    Banned,
}

impl Availability {
    /// The spelling in SHOW HOSTS.
    pub fn as_str(self) -> &'static str {
        match self {
            Availability::Up => "up",
            Availability::Down => "down",
            Availability::Banned => "banned",
        }
    }
}

/// What one successful health check saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observation {
    /// `pg_is_in_recovery()`.
    pub in_recovery: bool,
    /// The primary's `pg_current_wal_lsn()`, or a standby's `pg_last_wal_replay_lsn()`.
    pub lsn: u64,
    /// A standby's time since its last replayed transaction.
    pub replay_age: Option<Duration>,
}

/// The router's record of one host.
#[derive(Debug, Clone)]
pub struct HostState {
    /// Where it is and its configured role.
    pub config: HostConfig,
    /// Its role, as it last reported it.
    pub role: Role,
    /// Whether the last check (or connection attempt) succeeded.
    pub up: bool,
    /// Left out of routing until then (after failures).
    pub banned_until: Option<Instant>,
    /// Failures since the host was last healthy; the ban doubles with each, up to 8x.
    pub strikes: u32,
    /// Checks that failed since start.
    pub checks_failed: u64,
    /// The LSN the last check saw.
    pub lsn: Option<u64>,
    /// WAL bytes a standby has still to replay, against the primary's last LSN.
    pub lag_bytes: Option<u64>,
    /// A standby's time since its last replayed transaction.
    pub replay_age: Option<Duration>,
    /// When the last check ended.
    pub last_check: Option<Instant>,
    /// Why the last failure happened.
    pub last_error: Option<String>,
}

impl HostState {
    fn new(config: HostConfig) -> HostState {
        HostState {
            config,
            role: Role::Unknown,
            up: false,
            banned_until: None,
            strikes: 0,
            checks_failed: 0,
            lsn: None,
            lag_bytes: None,
            replay_age: None,
            last_check: None,
            last_error: None,
        }
    }

    /// Its availability at `now` (the admin views' reading of [`HostView::usable`]).
    pub fn availability(&self, now: Instant) -> Availability {
        if self.banned_until.is_some_and(|b| b > now) {
            Availability::Banned
        } else if self.up {
            Availability::Up
        } else {
            Availability::Down
        }
    }

    /// Records a failed check or connection attempt: down, banned with backoff.
    fn failed(&mut self, now: Instant, ban_time: Duration, why: String) {
        self.up = false;
        self.strikes = self.strikes.saturating_add(1);
        self.checks_failed += 1;
        let factor = 1u32 << self.strikes.clamp(1, 4).saturating_sub(1);
        let until = now + ban_time * factor;
        self.banned_until = Some(self.banned_until.map_or(until, |b| b.max(until)));
        self.last_check = Some(now);
        self.last_error = Some(why);
    }

    /// Records a successful check. A ban still running stays until it expires.
    fn observed(&mut self, now: Instant, o: Observation) {
        self.up = true;
        self.role = if o.in_recovery {
            Role::Standby
        } else {
            Role::Primary
        };
        self.lsn = Some(o.lsn);
        self.replay_age = o.replay_age;
        self.last_check = Some(now);
        if self.banned_until.is_some_and(|b| b <= now) {
            self.banned_until = None;
            self.strikes = 0;
        }
        if self.banned_until.is_none() {
            self.strikes = 0;
            self.last_error = None;
        }
    }
}

/// The part of a host's state routing reads, per checkout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostView {
    /// Reported role; `Unknown` while down since start.
    pub role: Role,
    /// Configured role (a fixed role keeps the host out of the other one).
    pub configured: HostRole,
    /// Up and not banned at `banned_until`.
    pub up: bool,
    /// Banned until then.
    pub banned_until: Option<Instant>,
    /// Replay lag of a standby in bytes (None: unknown, e.g. no primary seen).
    pub lag_bytes: Option<u64>,
    /// A standby's time since its last replayed transaction.
    pub replay_age: Option<Duration>,
}

impl HostView {
    /// Whether the host may take work at `now`.
    pub fn usable(&self, now: Instant) -> bool {
        self.up && self.banned_until.is_none_or(|b| b <= now)
    }

    /// Whether it may take writes: it says it is a primary, and is not configured as
    /// a replica.
    pub fn is_primary(&self) -> bool {
        self.role == Role::Primary && self.configured != HostRole::Replica
    }

    /// Whether it may take replica reads: a standby not configured as the primary.
    pub fn is_standby(&self) -> bool {
        self.role == Role::Standby && self.configured != HostRole::Primary
    }

    /// Whether its lag is within `max` (no limit: always).
    pub fn lag_within(&self, max: Option<ReplicaLag>) -> bool {
        match max {
            None => true,
            Some(ReplicaLag::Bytes(b)) => self.lag_bytes.unwrap_or(0) <= b,
            // Nothing outstanding: current, however old its last transaction is.
            Some(ReplicaLag::Time(_)) if self.lag_bytes == Some(0) => true,
            Some(ReplicaLag::Time(d)) => self.replay_age.is_none_or(|a| a <= d),
        }
    }
}

/// The hosts of one replicated database, shared by its routes and its checker.
#[derive(Debug)]
pub struct HostSet {
    states: Mutex<Vec<HostState>>,
    view: ArcSwap<Vec<HostView>>,
    /// Bumped at every change of the view, for clients waiting for a host.
    changed: watch::Sender<u64>,
}

impl HostSet {
    /// A set of `hosts` in configuration order, none checked yet.
    pub fn new(hosts: Vec<HostConfig>) -> HostSet {
        let states: Vec<HostState> = hosts.into_iter().map(HostState::new).collect();
        let view = states.iter().map(view_of).collect();
        HostSet {
            states: Mutex::new(states),
            view: ArcSwap::from_pointee(view),
            changed: watch::channel(0).0,
        }
    }

    /// How many hosts.
    pub fn len(&self) -> usize {
        self.view.load().len()
    }

    /// Whether the set has no host.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The hosts as routing sees them now.
    pub fn view(&self) -> arc_swap::Guard<Arc<Vec<HostView>>> {
        self.view.load()
    }

    /// A copy of every host's full record (SHOW HOSTS, metrics).
    pub fn states(&self) -> Vec<HostState> {
        self.states.locked().clone()
    }

    /// The configuration of host `i`.
    pub fn config(&self, i: usize) -> HostConfig {
        self.states.locked()[i].config.clone()
    }

    /// Records the result of a check of host `i`.
    pub fn record(
        &self,
        i: usize,
        now: Instant,
        result: Result<Observation, String>,
        ban_time: Duration,
    ) {
        self.update(|states| {
            let Some(h) = states.get_mut(i) else { return };
            match result {
                Ok(o) => h.observed(now, o),
                Err(why) => h.failed(now, ban_time, why),
            }
        });
    }

    /// Records that a connection to host `i` failed outside a check: banned now, as
    /// a failed check would.
    pub fn report_failure(&self, i: usize, now: Instant, ban_time: Duration, why: String) {
        self.record(i, now, Err(why), ban_time);
    }

    /// A receiver that sees every change of the view.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn update(&self, f: impl FnOnce(&mut Vec<HostState>)) {
        let mut states = self.states.locked();
        let before: Vec<HostView> = states.iter().map(view_of).collect();
        f(&mut states);
        recompute_lag(&mut states);
        let after: Vec<HostView> = states.iter().map(view_of).collect();
        if after != before {
            self.view.store(Arc::new(after));
            self.changed.send_modify(|v| *v += 1);
        }
    }
}

/// Each standby's lag against the newest LSN a primary reported.
fn recompute_lag(states: &mut [HostState]) {
    let primary = states
        .iter()
        .filter(|h| h.up && h.role == Role::Primary)
        .filter_map(|h| h.lsn)
        .max();
    for h in states.iter_mut() {
        h.lag_bytes = match (h.role, primary, h.lsn) {
            (Role::Standby, Some(p), Some(l)) => Some(p.saturating_sub(l)),
            (Role::Primary, _, _) => Some(0),
            _ => None,
        };
    }
}

fn view_of(h: &HostState) -> HostView {
    HostView {
        role: h.role,
        configured: h.config.role,
        up: h.up,
        banned_until: h.banned_until,
        lag_bytes: h.lag_bytes,
        replay_age: h.replay_age,
    }
}

/// Parses PostgreSQL's text form of an LSN (`16/B374D848`).
pub(super) fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.trim().split_once('/')?;
    let hi = u64::from_str_radix(hi, 16).ok()?;
    let lo = u64::from_str_radix(lo, 16).ok()?;
    (hi <= u32::MAX as u64 && lo <= u32::MAX as u64).then_some((hi << 32) | lo)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(n: usize) -> HostSet {
        HostSet::new(
            (0..n)
                .map(|i| format!("h{i}:5432").parse().unwrap())
                .collect(),
        )
    }

    fn obs(in_recovery: bool, lsn: u64) -> Result<Observation, String> {
        Ok(Observation {
            in_recovery,
            lsn,
            replay_age: in_recovery.then_some(Duration::from_millis(10)),
        })
    }

    const BAN: Duration = Duration::from_secs(2);

    #[test]
    fn roles_come_from_the_hosts_and_lag_from_the_primarys_lsn() {
        let s = set(2);
        let t = Instant::now();
        assert!(s
            .view()
            .iter()
            .all(|h| !h.usable(t) && h.role == Role::Unknown));
        s.record(0, t, obs(false, 1000), BAN);
        s.record(1, t, obs(true, 400), BAN);
        let v = s.view();
        assert!(v[0].is_primary() && v[0].usable(t));
        assert!(v[1].is_standby() && v[1].usable(t));
        assert_eq!(v[1].lag_bytes, Some(600));
        assert!(v[1].lag_within(Some(ReplicaLag::Bytes(600))));
        assert!(!v[1].lag_within(Some(ReplicaLag::Bytes(599))));
        // Promotion: the standby reports it is no longer in recovery.
        s.record(0, t, Err("refused".into()), BAN);
        s.record(1, t, obs(false, 1200), BAN);
        let v = s.view();
        assert!(!v[0].usable(t));
        assert!(v[1].is_primary());
    }

    #[test]
    fn a_failed_host_is_banned_with_backoff_and_returns_when_healthy() {
        let s = set(1);
        let t = Instant::now();
        s.record(0, t, Err("timeout".into()), BAN);
        assert_eq!(s.view()[0].banned_until, Some(t + BAN));
        s.record(0, t, Err("timeout".into()), BAN);
        assert_eq!(s.view()[0].banned_until, Some(t + BAN * 2));
        s.record(0, t, Err("timeout".into()), BAN);
        s.record(0, t, Err("timeout".into()), BAN);
        s.record(0, t, Err("timeout".into()), BAN);
        assert_eq!(s.view()[0].banned_until, Some(t + BAN * 8), "capped at 8x");
        // Healthy again, but the ban runs out first.
        s.record(0, t + BAN, obs(false, 1), BAN);
        assert!(!s.view()[0].usable(t + BAN));
        let later = t + BAN * 8;
        s.record(0, later, obs(false, 1), BAN);
        assert!(s.view()[0].usable(later));
        assert_eq!(s.states()[0].strikes, 0);
        assert_eq!(s.states()[0].checks_failed, 5);
    }

    #[test]
    fn availability_follows_checks_and_bans() {
        let s = set(1);
        let t = Instant::now();
        assert_eq!(s.states()[0].availability(t), Availability::Down);
        s.record(0, t, obs(false, 1), BAN);
        assert_eq!(s.states()[0].availability(t), Availability::Up);
        s.record(0, t, Err("refused".into()), BAN);
        assert_eq!(s.states()[0].availability(t), Availability::Banned);
        assert_eq!(s.states()[0].availability(t + BAN), Availability::Down);
        // Healthy while the ban still runs: banned until it ends, then up.
        s.record(0, t, obs(false, 1), BAN);
        assert_eq!(s.states()[0].availability(t), Availability::Banned);
        assert_eq!(s.states()[0].availability(t + BAN), Availability::Up);
    }

    #[test]
    fn time_lag_counts_only_while_wal_is_outstanding() {
        let mut v = HostView {
            role: Role::Standby,
            configured: HostRole::Auto,
            up: true,
            banned_until: None,
            lag_bytes: Some(0),
            replay_age: Some(Duration::from_secs(3600)),
        };
        let max = Some(ReplicaLag::Time(Duration::from_secs(10)));
        assert!(v.lag_within(max), "idle primary: an old replay is current");
        v.lag_bytes = Some(100);
        assert!(!v.lag_within(max));
        v.replay_age = Some(Duration::from_secs(1));
        assert!(v.lag_within(max));
    }

    #[test]
    fn configured_roles_restrict_reported_ones() {
        let mut h: HostConfig = "a".parse().unwrap();
        h.role = HostRole::Replica;
        let s = HostSet::new(vec![h]);
        let t = Instant::now();
        s.record(0, t, obs(false, 5), BAN);
        assert!(
            !s.view()[0].is_primary(),
            "configured replica never takes writes"
        );
    }

    #[test]
    fn every_change_wakes_waiters_and_no_change_does_not() {
        let s = set(1);
        let mut rx = s.subscribe();
        let t = Instant::now();
        s.record(0, t, obs(false, 5), BAN);
        assert!(rx.has_changed().unwrap());
        rx.mark_unchanged();
        s.record(0, t, obs(false, 5), BAN);
        assert!(!rx.has_changed().unwrap());
    }

    #[test]
    fn lsn_text() {
        assert_eq!(parse_lsn("0/16B3748"), Some(0x16B3748));
        assert_eq!(parse_lsn("16/B374D848"), Some((0x16 << 32) | 0xB374D848));
        assert_eq!(parse_lsn("junk"), None);
    }
}
