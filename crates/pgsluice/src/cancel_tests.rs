//! Tests of [`super`]: keys, lookups, peering and shard targets.

use std::collections::HashSet;

use super::*;

fn target(port: u16) -> Arc<ServerTarget> {
    Arc::new(ServerTarget {
        host: "127.0.0.1".into(),
        port,
        database: "d".into(),
        user: "u".into(),
        password: None,
        application_name: None,
        tls: None,
        passthrough: None,
        scram_keys: Default::default(),
    })
}

fn backend(pid: i32) -> Arc<BackendKey> {
    Arc::new(BackendKey {
        pid,
        secret: pid.to_be_bytes().to_vec(),
    })
}

/// The backend pid a cancel with this key would reach.
fn reaches(reg: &CancelRegistry, (pid, secret): (i32, i32)) -> Option<i32> {
    reg.lookup(pid, &secret.to_be_bytes())
        .first()
        .map(|t| t.key.pid)
}

#[test]
fn keys_are_positive_and_unique() {
    let reg = Arc::new(CancelRegistry::default());
    let handles: Vec<CancelHandle> = (0..1000).map(|_| reg.register()).collect();
    let pids: HashSet<i32> = handles.iter().map(|h| h.key().0).collect();
    assert_eq!(pids.len(), 1000);
    assert!(pids.iter().all(|&p| p > 0));
    assert_eq!(reg.len(), 1000);
}

#[test]
fn pids_wrap_around_skipping_zero_and_those_in_use() {
    let reg = Arc::new(CancelRegistry::default());
    let first = reg.register();
    assert_eq!(first.key().0, 1);
    reg.next_pid.store(i32::MAX, Ordering::Relaxed);
    let last = reg.register();
    assert_eq!(last.key().0, i32::MAX);
    // Next come 0 (never issued) and 1 (still in use).
    let wrapped = reg.register();
    assert_eq!(wrapped.key().0, 2);
    // A pid is issued again once its client has gone.
    drop(first);
    reg.next_pid.store(1, Ordering::Relaxed);
    assert_eq!(reg.register().key().0, 1);
}

#[test]
fn a_cancel_reaches_its_clients_server_only_with_the_right_secret() {
    let reg = Arc::new(CancelRegistry::default());
    let (a, b) = (reg.register(), reg.register());
    a.attach(&target(5432), &backend(10));
    b.attach(&target(5433), &backend(20));
    assert_eq!(reaches(&reg, a.key()), Some(10));
    assert_eq!(reaches(&reg, b.key()), Some(20));
    let t = reg.lookup(b.key().0, &b.key().1.to_be_bytes()).remove(0);
    assert_eq!(t.target.port, 5433);
    let (pid, secret) = a.key();
    for wrong in [secret ^ 1, secret ^ i32::MIN, b.key().1] {
        if wrong != secret {
            assert_eq!(reaches(&reg, (pid, wrong)), None, "secret {wrong:#x}");
        }
    }
    let bytes = secret.to_be_bytes();
    assert!(reg.lookup(pid, &bytes[..3]).is_empty(), "short secret");
    assert!(
        reg.lookup(pid, &[&bytes[..], &[0]].concat()).is_empty(),
        "long secret"
    );
    assert!(reg.lookup(pid, &[]).is_empty());
    assert_eq!(reaches(&reg, (i32::MAX, secret)), None, "unknown pid");
}

#[test]
fn dropping_a_handle_removes_only_its_key() {
    let reg = Arc::new(CancelRegistry::default());
    let (a, b) = (reg.register(), reg.register());
    a.attach(&target(5432), &backend(10));
    b.attach(&target(5432), &backend(20));
    let a_key = a.key();
    drop(a);
    assert_eq!(reg.len(), 1);
    assert_eq!(reaches(&reg, a_key), None);
    assert_eq!(reaches(&reg, b.key()), Some(20));
    drop(b);
    assert!(reg.is_empty());
}

#[test]
fn peered_keys_carry_the_peer_id_and_a_ttl() {
    let reg = Arc::new(CancelRegistry::default());
    let handles: Vec<CancelHandle> = (0..40_000).map(|_| reg.register_as(300)).collect();
    for h in &handles {
        let (pid, secret) = h.key();
        assert!(pid > 0);
        assert_eq!(peer_of(pid), 300);
        assert_eq!(secret.to_be_bytes()[3] & TTL_MASK, TTL_MASK);
    }
    // More clients than free pid bits: some share a pid, each key still reaches
    // its own client only.
    assert_eq!(reg.len(), 40_000);
    let (a, b) = (&handles[0], &handles[32_768]);
    a.attach(&target(5432), &backend(10));
    b.attach(&target(5432), &backend(20));
    assert_eq!(reaches(&reg, a.key()), Some(10));
    assert_eq!(reaches(&reg, b.key()), Some(20));
    let a_key = a.key();
    drop(handles);
    assert!(reg.is_empty());
    assert_eq!(reaches(&reg, a_key), None);
}

#[test]
fn routes_follow_the_peer_id_and_the_ttl() {
    let reg = Arc::new(CancelRegistry::default());
    let mine = reg.register_as(7);
    let (pid, secret) = mine.key();
    let secret = secret.to_be_bytes();
    // Peering off: every key is looked up here, unchanged.
    assert_eq!(
        route(0, pid, &secret),
        CancelRoute::Local {
            secret: secret.to_vec()
        }
    );
    // Our own key, even after forwards lowered its TTL: looked up as issued.
    let mut forwarded = secret;
    forwarded[3] &= !TTL_MASK;
    assert_eq!(
        route(7, pid, &forwarded),
        CancelRoute::Local {
            secret: secret.to_vec()
        }
    );
    // Another peer's key: forwarded with the TTL lowered, until it is spent.
    let mut hops = 0;
    let mut key = secret;
    loop {
        match route(9, pid, &key) {
            CancelRoute::Peer {
                peer_id,
                pid: p,
                secret: next,
            } => {
                assert_eq!((peer_id, p), (7, pid));
                assert_eq!(next[..3], secret[..3]);
                key = next;
                hops += 1;
            }
            CancelRoute::Exhausted { peer_id } => {
                assert_eq!(peer_id, 7);
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(hops, 3);
    // Malformed secrets are looked up (and found nowhere).
    assert!(matches!(route(7, pid, &[1, 2]), CancelRoute::Local { .. }));
    assert_eq!(peered_pid(0x1_2345, 0x3fff), 0x23ff_3f45);
}

#[test]
fn peer_slots_follow_the_pool_size() {
    let reg = CancelRegistry::default();
    let a = reg.peer_slots(2, 3);
    assert_eq!(a.available_permits(), 3);
    assert!(Arc::ptr_eq(&a, &reg.peer_slots(2, 3)));
    let b = reg.peer_slots(2, 5);
    assert_eq!(b.available_permits(), 5);
    assert!(!Arc::ptr_eq(&a, &b));
}

#[test]
fn keys_are_checked_and_removed() {
    let reg = Arc::new(CancelRegistry::default());
    let h = reg.register();
    let (pid, secret) = h.key();
    assert!(
        reg.lookup(pid, &secret.to_be_bytes()).is_empty(),
        "no server yet"
    );
    let target = target(5432);
    let key = Arc::new(BackendKey {
        pid: 99,
        secret: vec![1, 2, 3, 4],
    });
    h.attach(&target, &key);
    assert_eq!(reg.lookup(pid, &secret.to_be_bytes()).remove(0).key.pid, 99);
    assert!(reg.lookup(pid, &(secret ^ 1).to_be_bytes()).is_empty());
    // Idle between transactions: nothing to cancel.
    h.detach();
    assert!(reg.lookup(pid, &secret.to_be_bytes()).is_empty());
    // Another connection replaces the remembered one; the same one is reused.
    let other = Arc::new(BackendKey {
        pid: 100,
        secret: vec![5, 6, 7, 8],
    });
    h.attach(&target, &other);
    assert_eq!(
        reg.lookup(pid, &secret.to_be_bytes()).remove(0).key.pid,
        100
    );
    h.detach();
    h.attach(&target, &key);
    assert_eq!(reg.lookup(pid, &secret.to_be_bytes()).remove(0).key.pid, 99);
    drop(h);
    assert!(reg.lookup(pid, &secret.to_be_bytes()).is_empty());
    assert!(reg.is_empty());
}

/// A key handed over from another process is registered as is; a pid in use is
/// refused; the sequence moved past the old process's keys skips them.
#[test]
fn a_handed_over_key_keeps_its_pid_and_secret() {
    let old = Arc::new(CancelRegistry::default());
    let a = old.register();
    let (pid, secret) = a.key();
    let new = Arc::new(CancelRegistry::default());
    new.skip_pids_below(old.pid_floor());
    let moved = new.register_key(pid, secret).expect("free pid");
    assert_eq!(moved.key(), (pid, secret));
    assert!(new.register_key(pid, secret ^ 1).is_none(), "pid in use");
    let fresh = new.register();
    assert!(fresh.key().0 > pid, "{:?} after {pid}", fresh.key());
    let target = target(5432);
    let key = Arc::new(BackendKey {
        pid: 7,
        secret: vec![1, 2, 3, 4],
    });
    moved.attach(&target, &key);
    assert_eq!(new.lookup(pid, &secret.to_be_bytes()).remove(0).key.pid, 7);
    drop(moved);
    assert!(new.lookup(pid, &secret.to_be_bytes()).is_empty());
}

#[test]
fn a_sharded_client_is_cancelled_on_every_shard_connection_it_holds() {
    let reg = Arc::new(CancelRegistry::default());
    let h = reg.register();
    let (pid, secret) = h.key();
    let secret = secret.to_be_bytes();
    let pids = |reg: &CancelRegistry| -> Vec<i32> {
        reg.lookup(pid, &secret).iter().map(|t| t.key.pid).collect()
    };
    h.attach_shards(vec![
        CancelTarget {
            target: target(1),
            key: backend(11),
        },
        CancelTarget {
            target: target(2),
            key: backend(12),
        },
    ]);
    assert_eq!(pids(&reg), vec![11, 12]);
    h.attach_shards(Vec::new());
    assert!(pids(&reg).is_empty(), "none held: dropped");
    h.attach_shards(vec![CancelTarget {
        target: target(1),
        key: backend(13),
    }]);
    assert_eq!(pids(&reg), vec![13]);
    drop(h);
    assert!(pids(&reg).is_empty());
    assert!(reg.shard_targets.locked().is_empty(), "nothing left behind");
}
