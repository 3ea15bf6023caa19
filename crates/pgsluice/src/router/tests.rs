use super::*;
use crate::config::{DatabaseConfig, UserConfig};
use crate::shutdown::Shutdown;

fn router_for(cfg: Config) -> (Router, Live, Shutdown) {
    let live = Live::new(Generation::first(cfg));
    let shutdown = Shutdown::new();
    let r = Router::new(
        live.clone(),
        Arc::new(IdGen::default()),
        shutdown.watch(),
        TaskTracker::default(),
    );
    (r, live, shutdown)
}

fn config_with(dbs: &[&str]) -> Config {
    let mut cfg = Config::default();
    for d in dbs {
        cfg.databases
            .insert((*d).into(), DatabaseConfig::new("127.0.0.1"));
    }
    cfg.users.insert(
        "u".into(),
        UserConfig {
            password: Some("pw".into()),
            ..Default::default()
        },
    );
    cfg
}

#[tokio::test]
async fn one_pool_per_database_and_user_and_every_route_targets_it() {
    let (r, _live, _s) = router_for(config_with(&["a", "b"]));
    let ra = r.route("a", "u").unwrap();
    let ra2 = r.route("a", "u").unwrap();
    assert!(Arc::ptr_eq(ra.home(), ra2.home()));
    let Target::One(p) = ra.target(Work::unclassified(b"Q")) else {
        panic!("one pool")
    };
    assert!(Arc::ptr_eq(p, ra.home()));
    let rb = r.route("b", "u").unwrap();
    assert!(!Arc::ptr_eq(ra.home(), rb.home()));
    assert_eq!(r.pools().len(), 2);
}

#[tokio::test]
async fn unknown_and_disabled_databases_are_refused() {
    let (r, _live, _s) = router_for(config_with(&["a"]));
    let e = r.route("nope", "u").unwrap_err();
    assert_eq!(e.code, SqlState::INVALID_CATALOG_NAME);
    r.flags(|f, _| f.disabled.insert("a".into()));
    let e = r.route("a", "u").unwrap_err();
    assert_eq!(e.code, SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE);
}

#[tokio::test]
async fn a_pool_created_while_paused_starts_paused() {
    let (r, _live, _s) = router_for(config_with(&["a"]));
    r.flags(|f, _| f.paused_all = true);
    let route = r.route("a", "u").unwrap();
    assert!(route.home().is_paused());
}

#[tokio::test]
async fn a_reload_retires_the_pools_of_removed_databases() {
    let (r, live, _s) = router_for(config_with(&["a", "b"]));
    let ra = r.route("a", "u").unwrap();
    let _rb = r.route("b", "u").unwrap();
    let next = Generation::build(live.next_number(), config_with(&["b"])).unwrap();
    let plan = r.plan(&next);
    let next = Arc::new(next);
    live.publish(next.clone());
    r.apply(&next, plan);
    // Still listed (retired) until its clients leave; no new route to it.
    assert_eq!(r.pools().len(), 2);
    assert!(r.route("a", "u").is_err());
    assert!(ra.home().is_retired());
    r.close_retired();
    assert_eq!(r.pools().len(), 1);
}
