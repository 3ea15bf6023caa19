//! Unit tests for replicated databases in the three configuration forms: TOML
//! (`hosts`, roles, the replica keys and their checks), pgbouncer.ini (host and port
//! lists, `load_balance_hosts`, pgsluice's extra parameters) and quick mode, and the
//! round trip through the TOML writer.

use super::*;
use std::path::PathBuf;
use std::time::Duration;

fn no_env() -> Vec<(String, String)> {
    Vec::new()
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    parse_str(text, "test.toml", no_env())
}

/// Asserts an `At` error; returns (line, key, message).
#[track_caller]
fn at(r: Result<Config, ConfigError>) -> (usize, String, String) {
    match r {
        Err(ConfigError::At {
            line, key, message, ..
        }) => (line, key, message),
        other => panic!("expected an At error, got {other:?}"),
    }
}

fn hosts(d: &DatabaseConfig) -> Vec<(String, u16, HostRole)> {
    d.host_list()
        .into_iter()
        .map(|h| (h.host, h.port, h.role))
        .collect()
}

fn h(host: &str, port: u16, role: HostRole) -> (String, u16, HostRole) {
    (host.to_owned(), port, role)
}

const REPLICATED: &str = r#"[databases.app]
hosts = [
  "h1:5432",
  { host = "h2", port = 5433, role = "replica" },
  { host = "h3", role = "primary" },
  "[::1]:6000",
  "/var/run/postgresql",
]
read_write_split = true
load_balance = "least_busy"
target_session_attrs = "prefer-standby"
max_replica_lag = "16MB"
health_check_interval = "500ms"
health_check_timeout = 3
ban_time = "10s"
read_your_writes = "2s"
primary_reads = "never"
write_functions = ["audit.log", "bump_counter"]

[databases.lagged]
host = "db1,db2"
port = 6000
max_replica_lag = "30s"
"#;

#[test]
fn toml_host_forms_roles_and_replica_keys() {
    use HostRole::{Auto, Primary, Replica};
    let c = parse(REPLICATED).unwrap();
    let d = &c.databases["app"];
    assert_eq!(d.host, "");
    assert!(d.is_replicated());
    assert_eq!(
        hosts(d),
        [
            h("h1", 5432, Auto),
            h("h2", 5433, Replica),
            h("h3", 5432, Primary),
            h("::1", 6000, Auto),
            h("/var/run/postgresql", 5432, Auto),
        ]
    );
    assert!(d.read_write_split);
    assert_eq!(d.load_balance, Some(LoadBalance::LeastBusy));
    assert_eq!(
        d.target_session_attrs,
        Some(TargetSessionAttrs::PreferStandby)
    );
    assert_eq!(d.max_replica_lag, Some(ReplicaLag::Bytes(16 << 20)));
    assert_eq!(d.health_check_interval, Some(Secs::from_millis(500)));
    assert_eq!(d.health_check_timeout, Some(Secs::from_secs(3)));
    assert_eq!(d.ban_time, Some(Secs::from_secs(10)));
    assert_eq!(d.read_your_writes, Some(Secs::from_secs(2)));
    assert_eq!(d.primary_reads, Some(PrimaryReads::Never));
    assert_eq!(d.write_functions, ["audit.log", "bump_counter"]);

    // PgBouncer's form in TOML: a comma-separated `host`, every host on `port`.
    let l = &c.databases["lagged"];
    assert!(l.is_replicated());
    assert_eq!(hosts(l), [h("db1", 6000, Auto), h("db2", 6000, Auto)]);
    assert_eq!(
        l.max_replica_lag,
        Some(ReplicaLag::Time(Duration::from_secs(30)))
    );

    // The settings are accepted on a single-host database too.
    let c =
        parse("[databases.one]\nhost = \"h\"\nread_write_split = true\nban_time = 1\n").unwrap();
    let one = &c.databases["one"];
    assert!(one.read_write_split && one.is_replicated());
    assert_eq!(hosts(one), [h("h", 5432, Auto)]);
}

#[test]
fn toml_validation_errors_name_line_and_key() {
    let cases: &[(&str, usize, &str, &str)] = &[
        // Neither host nor hosts: the table's line.
        ("[general]\n\n[databases.app]\nport = 5433\n", 3, "databases.app.host", "missing field `host`"),
        ("[databases]\nother = { host = \"h\" }\napp = { port = 1 }\n", 3, "databases.app.host", "or `hosts`"),
        // Both.
        ("[databases.app]\nhost = \"h\"\nhosts = [\"a\"]\n", 3, "databases.app.hosts", "not both"),
        ("[databases.app]\nhosts = []\n", 2, "databases.app.hosts", "at least one host"),
        (
            "[databases.app]\nhosts = [\n  { host = \"a\", role = \"primary\" },\n  { host = \"b\", role = \"primary\" },\n]\n",
            2,
            "databases.app.hosts",
            "at most one host may have role = \"primary\" (`a:5432`, `b:5432` do)",
        ),
        ("[databases.app]\nhosts = [\"a:1\", \"a:1\"]\n", 2, "databases.app.hosts", "`a:1` is listed twice"),
        ("[databases.app]\nhosts = [{ host = \"a\", port = 0 }]\n", 2, "databases.app.hosts", "port must be"),
        ("[databases.app]\nhosts = [\"a b\"]\n", 2, "databases.app.hosts", "`a b` is not a host name"),
        ("[databases.app]\nhost = \"a,,b\"\n", 2, "databases.app.host", "empty entry"),
        ("[databases.app]\nhost = \"a, b c\"\n", 2, "databases.app.host", "`b c` is not a host name"),
        (
            "[databases.app]\nhost = \"h\"\n\nhealth_check_timeout = 0\n",
            4,
            "databases.app.health_check_timeout",
            "must be > 0",
        ),
        (
            "[databases.app]\nhost = \"h\"\nhealth_check_interval = \"0ms\"\n",
            3,
            "databases.app.health_check_interval",
            "must be > 0",
        ),
        ("[databases.app]\nhost = \"h\"\nwrite_functions = [\"\"]\n", 3, "databases.app.write_functions", "not a function name"),
        // Values of the wrong kind: deserialization errors, with the value's line.
        (
            "[databases.app]\nhosts = [\n  \"a\",\n  { host = \"b\", role = \"leader\" },\n]\n",
            4,
            "databases.app.hosts",
            "invalid host role `leader`",
        ),
        (
            "[databases.app]\nhosts = [{ host = \"b\", rol = \"replica\" }]\n",
            2,
            "databases.app.hosts.rol",
            "unknown field `rol`",
        ),
        ("[databases.app]\nhosts = [\"a:x\"]\n", 2, "databases.app.hosts", "invalid port `x`"),
        ("[databases.app]\nhost = \"h\"\nload_balance = \"fastest\"\n", 3, "databases.app.load_balance", "invalid load_balance"),
        ("[databases.app]\nhost = \"h\"\ntarget_session_attrs = \"rw\"\n", 3, "databases.app.target_session_attrs", "invalid target_session_attrs"),
        ("[databases.app]\nhost = \"h\"\nmax_replica_lag = \"lots\"\n", 3, "databases.app.max_replica_lag", "invalid max_replica_lag"),
        ("[databases.app]\nhost = \"h\"\nprimary_reads = \"often\"\n", 3, "databases.app.primary_reads", "invalid primary_reads"),
        ("[databases.app]\nhost = \"h\"\nread_write_split = \"yes\"\n", 3, "databases.app.read_write_split", "invalid type"),
    ];
    for (text, line, key, msg) in cases {
        let (l, k, m) = at(parse(text));
        assert_eq!((l, k.as_str()), (*line, *key), "{text}: {m}");
        assert!(m.contains(msg), "{text}: {m}");
    }
}

#[test]
fn env_overrides_set_and_blame_replica_keys() {
    let env = |vars: &[(&str, &str)]| -> Vec<(String, String)> {
        vars.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    // A database made from variables only.
    let c = parse_str(
        "",
        "test.toml",
        env(&[
            (
                "PGSLUICE_DATABASES__app__HOSTS",
                r#"["a:1", { host = "b", role = "replica" }]"#,
            ),
            ("PGSLUICE_DATABASES__app__READ_WRITE_SPLIT", "true"),
            ("PGSLUICE_DATABASES__app__MAX_REPLICA_LAG", "1048576"),
        ]),
    )
    .unwrap();
    let d = &c.databases["app"];
    assert_eq!(
        hosts(d),
        [h("a", 1, HostRole::Auto), h("b", 5432, HostRole::Replica)]
    );
    assert!(d.read_write_split);
    assert_eq!(d.max_replica_lag, Some(ReplicaLag::Bytes(1 << 20)));
    // `hosts` from a variable next to the file's `host`: the variable is blamed.
    let e = parse_str(
        "[databases.app]\nhost = \"h\"\n",
        "test.toml",
        env(&[("PGSLUICE_DATABASES__app__HOSTS", r#"["a"]"#)]),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.starts_with("environment variable PGSLUICE_DATABASES__app__HOSTS: key `databases.app.hosts`: give either"),
        "{e}"
    );
    // A table created by a variable without a host blames that variable.
    let e = parse_str(
        "",
        "test.toml",
        env(&[("PGSLUICE_DATABASES__app__READ_WRITE_SPLIT", "true")]),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.starts_with("environment variable PGSLUICE_DATABASES__app__READ_WRITE_SPLIT: key `databases.app.host`: missing field `host`"),
        "{e}"
    );
}

#[test]
fn round_trip_through_the_toml_writer() {
    let c = parse(REPLICATED).unwrap();
    let again: Config = load::to_table(&c).try_into().unwrap();
    assert_eq!(
        again,
        Config {
            source: None,
            ..c.clone()
        }
    );
    // The printed file loads back to the same configuration.
    let printed = to_redacted_toml(&c);
    assert!(printed.contains("read_write_split = true"), "{printed}");
    assert!(printed.contains("role = \"replica\""), "{printed}");
    assert!(!printed.contains("role = \"auto\""), "{printed}");
    let reread = parse(&printed).unwrap();
    assert_eq!(reread.databases, c.databases);
    // Every variant survives.
    let mut d = DatabaseConfig::new("h");
    for (lb, tsa, lag) in [
        (
            LoadBalance::InOrder,
            TargetSessionAttrs::ReadWrite,
            ReplicaLag::Bytes(u64::MAX),
        ),
        (
            LoadBalance::Random,
            TargetSessionAttrs::Standby,
            ReplicaLag::Time(Duration::from_millis(1500)),
        ),
        (
            LoadBalance::RoundRobin,
            TargetSessionAttrs::Any,
            ReplicaLag::Bytes(0),
        ),
    ] {
        d.load_balance = Some(lb);
        d.target_session_attrs = Some(tsa);
        d.max_replica_lag = Some(lag);
        d.primary_reads = Some(PrimaryReads::Always);
        d.auth_query = Some("SELECT 1 WHERE $1 = $1".into());
        d.auth_dbname = Some("authdb".into());
        let mut cfg = Config::default();
        cfg.databases.insert("x".into(), d.clone());
        let back = parse(&to_redacted_toml(&cfg)).unwrap();
        assert_eq!(back.databases["x"], d);
    }
}

// pgbouncer.ini

fn load_ini(test: &str, text: &str) -> Result<Config, ConfigError> {
    let dir = std::env::temp_dir().join(format!(
        "pgsluice-replicas-test-{}-{test}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path: PathBuf = dir.join("pgbouncer.ini");
    std::fs::write(&path, text).unwrap();
    load_file(&path, no_env())
}

const INI_HEAD: &str = "[pgbouncer]\nlisten_addr = 127.0.0.1\n[databases]\n";

#[test]
fn ini_host_lists_ports_and_load_balance_hosts() {
    use HostRole::Auto;
    let c = load_ini(
        "lists",
        &format!(
            "{INI_HEAD}\
             one_port = host=10.0.0.1,10.0.0.2 port=6000 load_balance_hosts=disable\n\
             port_list = host=a,b,c port=5432,5433, dbname=x\n\
             same = host=a,b port=7000,7000\n\
             default_port = host=a,/var/run/postgresql\n\
             single = host=h load_balance_hosts=round-robin\n"
        ),
    )
    .unwrap();
    let one = &c.databases["one_port"];
    assert_eq!((one.host.as_str(), one.port), ("10.0.0.1,10.0.0.2", 6000));
    assert_eq!(one.load_balance, Some(LoadBalance::InOrder));
    assert!(one.is_replicated());
    let list = &c.databases["port_list"];
    assert_eq!(list.host, "");
    assert_eq!(
        hosts(list),
        [h("a", 5432, Auto), h("b", 5433, Auto), h("c", 5432, Auto)]
    );
    assert_eq!(list.dbname.as_deref(), Some("x"));
    assert_eq!(c.databases["same"].host, "a,b");
    assert_eq!(
        hosts(&c.databases["default_port"]),
        [h("a", 5432, Auto), h("/var/run/postgresql", 5432, Auto)]
    );
    let single = &c.databases["single"];
    assert_eq!(single.load_balance, Some(LoadBalance::RoundRobin));
    assert!(!single.is_replicated());
    // Nothing about hosts is warned about any more.
    assert!(
        !c.warnings()
            .iter()
            .any(|w| w.contains("host") || w.contains("load_balance")),
        "{:?}",
        c.warnings()
    );
    // SHOW DATABASES prints the list as PgBouncer does.
    let cols = pgbouncer_show::database_hosts(one);
    assert_eq!(
        (cols.host.as_str(), cols.port, cols.load_balance_hosts),
        ("10.0.0.1,10.0.0.2", Some(6000), Some("disable"))
    );
    let cols = pgbouncer_show::database_hosts(list);
    assert_eq!(
        (cols.host.as_str(), cols.port),
        ("a:5432,b:5433,c:5432", None)
    );
}

#[test]
fn ini_pgsluice_parameters() {
    let c = load_ini(
        "extensions",
        &format!(
            "{INI_HEAD}app = host=p,r1,r2 read_write_split=1 target_session_attrs=read-write \
             max_replica_lag=10s health_check_interval=0.25 health_check_timeout=2 ban_time=5 \
             read_your_writes=1.5 primary_reads=always load_balance=random \
             write_functions=audit.log,bump\n"
        ),
    )
    .unwrap();
    let d = &c.databases["app"];
    assert!(d.read_write_split);
    assert_eq!(d.target_session_attrs, Some(TargetSessionAttrs::ReadWrite));
    assert_eq!(
        d.max_replica_lag,
        Some(ReplicaLag::Time(Duration::from_secs(10)))
    );
    assert_eq!(d.health_check_interval, Some(Secs::from_millis(250)));
    assert_eq!(d.health_check_timeout, Some(Secs::from_secs(2)));
    assert_eq!(d.ban_time, Some(Secs::from_secs(5)));
    assert_eq!(d.read_your_writes, Some(Secs::from_millis(1500)));
    assert_eq!(d.primary_reads, Some(PrimaryReads::Always));
    assert_eq!(d.load_balance, Some(LoadBalance::Random));
    assert_eq!(d.write_functions, ["audit.log", "bump"]);
    // The TOML writer keeps them (what --print-config and overrides rely on).
    let again: Config = load::to_table(&c).try_into().unwrap();
    assert_eq!(again.databases, c.databases);
}

#[test]
fn ini_errors_name_file_line_and_key() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "x = host=a,b,c port=1,2\n",
            "databases.x.port",
            "2 ports for 3 hosts",
        ),
        (
            "x = host=a port=1,2\n",
            "databases.x.port",
            "2 ports for 1 host",
        ),
        (
            "x = host=a,b port=1,zero\n",
            "databases.x.port",
            "invalid port `zero`",
        ),
        ("x = host=a,,b\n", "databases.x.host", "empty entry"),
        ("x = host=a,@b\n", "databases.x.host", "abstract"),
        (
            "x = host=a,b load_balance_hosts=random\n",
            "databases.x.load_balance_hosts",
            "expected round-robin or disable",
        ),
        (
            "x = host=a target_session_attrs=rw\n",
            "databases.x.target_session_attrs",
            "invalid target_session_attrs",
        ),
        (
            "x = host=a read_write_split=maybe\n",
            "databases.x.read_write_split",
            "invalid boolean",
        ),
        (
            "x = host=a health_check_timeout=soon\n",
            "databases.x.health_check_timeout",
            "invalid duration",
        ),
        // Validation after loading: the entry's line, the parameter's key.
        (
            "x = host=a health_check_timeout=0\n",
            "databases.x.health_check_timeout",
            "must be > 0",
        ),
        (
            "x = host=a,b port=1,2 health_check_interval=0\n",
            "databases.x.health_check_interval",
            "must be > 0",
        ),
        (
            "x = host=a,b,a port=1,2,1\n",
            "databases.x.host",
            "`a:1` is listed twice",
        ),
    ];
    for (i, (entry, key, msg)) in cases.iter().enumerate() {
        let text = format!("{INI_HEAD}\n{entry}");
        match load_ini(&format!("err{i}"), &text) {
            Err(ConfigError::At {
                file,
                line,
                key: k,
                message,
            }) => {
                assert!(file.ends_with("pgbouncer.ini"), "{file}");
                assert_eq!((line, k.as_str()), (5, *key), "{entry}: {message}");
                assert!(message.contains(msg), "{entry}: {message}");
            }
            other => panic!("{entry}: expected an At error, got {other:?}"),
        }
    }
}

// Quick mode

#[test]
fn quick_mode_host_lists_and_parameters() {
    use HostRole::Auto;
    let c = Config::quick("postgres://app:secret@h1:5432,h2:5433/app").unwrap();
    let d = &c.databases["app"];
    assert_eq!(d.host, "");
    assert_eq!(hosts(d), [h("h1", 5432, Auto), h("h2", 5433, Auto)]);
    assert!(d.is_replicated());
    assert_eq!(c.users["app"].password.as_deref(), Some("secret"));

    let c = Config::quick(
        "postgresql://app@h1,h2:5433,[::1]:5432/db?target_session_attrs=standby&load_balance_hosts=disable",
    )
    .unwrap();
    let d = &c.databases["db"];
    assert_eq!(
        hosts(d),
        [
            h("h1", 5432, Auto),
            h("h2", 5433, Auto),
            h("::1", 5432, Auto)
        ]
    );
    assert_eq!(d.target_session_attrs, Some(TargetSessionAttrs::Standby));
    assert_eq!(d.load_balance, Some(LoadBalance::InOrder));

    // One host keeps `host`; the parameters apply all the same.
    let c = Config::quick("postgres://app@[::1]:5433/db?load_balance_hosts=random").unwrap();
    let d = &c.databases["db"];
    assert_eq!(
        (d.host.as_str(), d.port, d.hosts.is_none()),
        ("::1", 5433, true)
    );
    assert_eq!(d.load_balance, Some(LoadBalance::Random));

    // A repeated host is a validation error naming the key.
    let e = Config::quick("postgres://app@h1,h1/db")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("key `databases.db.hosts`") && e.contains("twice"),
        "{e}"
    );
    let e = Config::quick("postgres://app@h/db?load_balance_hosts=round-robin")
        .unwrap_err()
        .to_string();
    assert!(e.contains("expected disable or random"), "{e}");
}
