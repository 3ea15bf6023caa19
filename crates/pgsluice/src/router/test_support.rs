//! Clusters for unit tests of the views over them (SHOW HOSTS, metrics): pools that
//! nobody serves and no health checker, so the test records each host's checks.

use std::sync::Arc;

use super::{Cluster, HostSet, Policy};
use crate::config::{DatabaseConfig, HostConfig};
use crate::pool::{test_support, Groups, PoolKey};

/// A cluster of `db` for server user `u` over `hosts` (`host:port`, in order), with
/// one pool per host and every host unchecked.
pub(crate) fn cluster(db: &str, hosts: Vec<HostConfig>) -> Arc<Cluster> {
    let groups = Groups::standalone(db, "u");
    let pools = hosts
        .iter()
        .map(|h| {
            let p = test_support::pool(db, "u", groups.clone(), |_| {});
            let mut target = (*p.target()).clone();
            target.host = h.host.clone();
            target.port = h.port;
            p.set_target(target);
            p
        })
        .collect();
    let key = PoolKey {
        database: db.into(),
        user: "u".into(),
    };
    let policy = Policy::of(&DatabaseConfig::new("h1,h2"));
    Arc::new(Cluster::new(
        key,
        Arc::new(HostSet::new(hosts)),
        pools,
        policy,
    ))
}

/// Parses `host:port` lists.
pub(crate) fn hosts(list: &[&str]) -> Vec<HostConfig> {
    list.iter()
        .map(|h| h.parse().expect("a valid host"))
        .collect()
}
