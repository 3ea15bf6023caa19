use super::*;
use crate::config::pgbouncer_keys::KEYS;

#[test]
fn every_pgbouncer_key_has_a_spec_and_back() {
    let keys: Vec<&str> = KEYS
        .iter()
        .filter(|k| k.section == Section::Pgbouncer)
        .map(|k| k.name)
        .collect();
    for k in &keys {
        assert!(changeable(k).is_some(), "no SHOW CONFIG spec for {k}");
    }
    for (name, _, _) in SPECS {
        assert!(keys.contains(name), "spec for unknown key {name}");
    }
    assert!(
        SPECS.windows(2).all(|w| w[0].0 < w[1].0),
        "SPECS not sorted"
    );
}

#[test]
fn show_databases_host_columns() {
    use crate::config::{HostConfig, HostRole};
    let cols = |d: &DatabaseConfig| {
        let c = database_hosts(d);
        (c.host, c.port, c.load_balance_hosts)
    };
    let mut d = DatabaseConfig::new("db1");
    assert_eq!(cols(&d), ("db1".into(), Some(5432), None));
    // PgBouncer's list form, printed as written.
    d.host = "a,b".into();
    d.port = 6000;
    assert_eq!(cols(&d), ("a,b".into(), Some(6000), Some("round-robin")));
    d.load_balance = Some(LoadBalance::InOrder);
    assert_eq!(cols(&d).2, Some("disable"));
    let h = |host: &str, port| HostConfig {
        host: host.into(),
        port,
        role: HostRole::Auto,
    };
    let mut d = DatabaseConfig::new("");
    d.hosts = Some(vec![h("a", 5432), h("::1", 5432)]);
    assert_eq!(cols(&d), ("a,::1".into(), Some(5432), Some("round-robin")));
    d.hosts = Some(vec![h("a", 5432), h("::1", 5433)]);
    assert_eq!(
        cols(&d),
        ("a:5432,[::1]:5433".into(), None, Some("round-robin"))
    );
    d.hosts = Some(vec![h("/tmp", 5433)]);
    assert_eq!(cols(&d), ("/tmp".into(), Some(5433), None));
}

#[test]
fn secs_print_as_c_g() {
    let f = |ms: u64| format_secs(Duration::from_millis(ms));
    assert_eq!(f(0), "0");
    assert_eq!(f(120_000), "120");
    assert_eq!(f(500), "0.5");
    assert_eq!(f(2_250), "2.25");
    assert_eq!(f(3_600_000), "3600");
    assert_eq!(f(1_000_000_000), "1e+06");
    assert_eq!(format_secs(Duration::from_micros(1)), "1e-06");
}

/// The defaults pgsluice shows for its mapped keys are PgBouncer's, except where
/// docs/pgbouncer-compat.md says pgsluice differs.
#[test]
fn mapped_defaults_match_pgbouncer_or_are_documented() {
    const DIFFER: &[&str] = &[
        "auth_query",              // schema-qualified
        "client_tls_ciphers",      // "fast"
        "server_tls_ciphers",      // "fast"
        "server_tls_sslmode",      // disable
        "listen_addr",             // 127.0.0.1
        "max_prepared_statements", // 0 = the default bound
    ];
    let cfg = Config {
        general: General::pgbouncer_defaults(),
        ..Config::default()
    };
    for row in rows(&cfg) {
        assert_eq!(row.value, row.default, "{}", row.key);
        let spec = SPECS.iter().find(|s| s.0 == row.key).unwrap();
        if !DIFFER.contains(&row.key) {
            assert_eq!(row.default, spec.1, "{}", row.key);
        }
    }
}

#[test]
fn set_validates_and_refuses_fixed_keys() {
    let cfg = Config {
        general: General::pgbouncer_defaults(),
        ..Config::default()
    };
    let ok = set(&cfg, "query_wait_notify", "3").unwrap().unwrap();
    assert_eq!(ok.config.general.query_wait_notify, Secs::from_secs(3));
    assert!(ok.notice.is_none());
    let extra = set(&cfg, "server_fast_close", "1").unwrap().unwrap();
    assert!(extra.notice.is_some());
    let row = rows(&extra.config)
        .into_iter()
        .find(|r| r.key == "server_fast_close")
        .unwrap();
    assert_eq!(row.value, "1");
    assert!(matches!(
        set(&cfg, "server_fast_close", "maybe"),
        Some(Err(SetError::Invalid(_)))
    ));
    assert_eq!(
        set(&cfg, "listen_port", "1").unwrap().unwrap_err(),
        SetError::Fixed
    );
    assert!(set(&cfg, "listen", "x").is_none());
    let v = set(&cfg, "verbose", "2").unwrap().unwrap();
    assert_eq!(v.config.general.log_level, "trace");
}
