//! Unit tests for the settings of a sharded database: the issue's TOML shape,
//! replicated shards, every check with its file line and key, and the round trip
//! through the TOML writer.

use crate::config::{load, parse_str, Config, ConfigError, HostRole};
use crate::shard::KeyType;

fn parse(text: &str) -> Result<Config, ConfigError> {
    parse_str(text, "test.toml", Vec::new())
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

/// Exactly the shape of the issue's acceptance check.
const ISSUE: &str = r#"[databases.app]
dbname = "app"
shards = [ { host = "10.0.0.1", port = 5432 }, { host = "10.0.0.2", port = 5432 } ]
[[databases.app.sharded_tables]]
table = "orders"
column = "customer_id"
"#;

#[test]
fn the_issues_shape_loads() {
    let c = parse(ISSUE).unwrap();
    let d = &c.databases["app"];
    assert!(d.is_sharded());
    assert_eq!(d.host, "");
    let shards = d.shard_databases();
    assert_eq!(shards.len(), 2);
    for (s, host) in shards.iter().zip(["10.0.0.1", "10.0.0.2"]) {
        assert_eq!((s.host.as_str(), s.port), (host, 5432));
        assert_eq!(s.dbname.as_deref(), Some("app"));
        assert!(s.shards.is_none() && s.sharded_tables.is_empty());
    }
    assert_eq!(d.sharded_tables.len(), 1);
    let t = &d.sharded_tables[0];
    assert_eq!(
        (t.table.as_str(), t.column.as_str()),
        ("orders", "customer_id")
    );
    assert_eq!(t.key_type, None);
    assert_eq!(t.folded_name(), Some((None, "orders".to_owned())));
    assert!(!d.two_phase_commit);
}

#[test]
fn replicated_shards_types_and_dbnames() {
    // Replicated shards and two-phase commit are not served yet: both are config
    // errors, not settings that would be ignored or fail at login.
    for (toml, key, words) in [
        (
            "[databases.app]\nshards = [{ hosts = [\"a1\", \"a2\"] }, { host = \"b\" }]\n",
            "databases.app.shards",
            "shard 0: replicated shards",
        ),
        (
            "[databases.app]\nshards = [{ host = \"a\" }, { host = \"b1,b2\" }]\n",
            "databases.app.shards",
            "shard 1: replicated shards",
        ),
        (
            "[databases.app]\nshards = [{ host = \"a\" }]\ntwo_phase_commit = true\n",
            "databases.app.two_phase_commit",
            "two-phase commit is not built yet",
        ),
    ] {
        let e = parse(toml).unwrap_err().to_string();
        assert!(e.contains(key) && e.contains(words), "{toml}: {e}");
    }
    let c = parse(
        r#"[databases.app]
port = 6000
shards = [
  { host = "a1" },
  { host = "b", dbname = "app_b" },
]
[[databases.app.sharded_tables]]
table = "Sales.Orders"
column = "Customer_ID"
type = "bigint"
[[databases.app.sharded_tables]]
table = '"Events"'
column = "id"
type = "UUID"
"#,
    )
    .unwrap();
    let d = &c.databases["app"];
    let shards = d.shard_databases();
    let a: Vec<_> = shards[0]
        .host_list()
        .into_iter()
        .map(|h| (h.host, h.port, h.role))
        .collect();
    assert_eq!(a, [("a1".to_owned(), 6000, HostRole::Auto)]);
    assert_eq!((shards[1].host.as_str(), shards[1].port), ("b", 6000));
    assert_eq!(shards[1].dbname.as_deref(), Some("app_b"));
    assert_eq!(shards[0].dbname, None);
    assert!(!d.two_phase_commit);
    let t = &d.sharded_tables;
    assert_eq!(t[0].key_type, Some(KeyType::BigInt));
    assert_eq!(
        t[0].folded_name(),
        Some((Some("sales".to_owned()), "orders".to_owned()))
    );
    assert_eq!(t[0].folded_column().as_deref(), Some("customer_id"));
    assert_eq!(t[1].folded_name(), Some((None, "Events".to_owned())));
    assert_eq!(t[1].key_type, Some(KeyType::Uuid));

    // The TOML writer (overrides, --print-config) keeps every shard setting.
    let again: Config = load::to_table(&c).try_into().unwrap();
    assert_eq!(again, Config { source: None, ..c });
    let issue = parse(ISSUE).unwrap();
    let again: Config = load::to_table(&issue).try_into().unwrap();
    assert_eq!(
        again,
        Config {
            source: None,
            ..issue
        }
    );
}

#[test]
fn validation_errors_name_line_and_key() {
    const T: &str = "[[databases.app.sharded_tables]]\n";
    let shards = "[databases.app]\nshards = [{ host = \"a\" }, { host = \"b\" }]\n";
    let cases: Vec<(String, usize, &str, &str)> = vec![
        (
            "[databases.app]\nshards = []\n".into(),
            2,
            "databases.app.shards",
            "at least one shard",
        ),
        (
            "[databases.app]\nhost = \"h\"\nshards = [{ host = \"a\" }]\n".into(),
            2,
            "databases.app.host",
            "leave out `host`",
        ),
        (
            "[databases.app]\nhosts = [\"h\"]\nshards = [{ host = \"a\" }]\n".into(),
            2,
            "databases.app.hosts",
            "leave out `hosts`",
        ),
        (
            "[databases.app]\nshards = [{ host = \"a\" }, { port = 1 }]\n".into(),
            2,
            "databases.app.shards",
            "shard 1: missing field `host`",
        ),
        (
            "[databases.app]\nshards = [{ host = \"a\", hosts = [\"b\"] }]\n".into(),
            2,
            "databases.app.shards",
            "shard 0: give either `host` or `hosts`, not both",
        ),
        (
            "[databases.app]\nshards = [{ hosts = [] }]\n".into(),
            2,
            "databases.app.shards",
            "shard 0: must list at least one host",
        ),
        (
            "[databases.app]\nshards = [{ hosts = [\"a:1\", \"a:1\"] }]\n".into(),
            2,
            "databases.app.shards",
            "`a:1` is listed twice",
        ),
        (
            "[databases.app]\nshards = [{ hosts = [{ host = \"a\", role = \"primary\" }, { host = \"b\", role = \"primary\" }] }]\n".into(),
            2,
            "databases.app.shards",
            "at most one host may have role = \"primary\"",
        ),
        (
            "[databases.app]\nshards = [{ host = \"a b\" }]\n".into(),
            2,
            "databases.app.shards",
            "`a b` is not a host name",
        ),
        (
            "[databases.app]\nshards = [{ host = \"a\", port = 0 }]\n".into(),
            2,
            "databases.app.shards",
            "shard 0: port must be",
        ),
        (
            "[databases.app]\nshards = [{ host = \"a\", dbname = \"\" }]\n".into(),
            2,
            "databases.app.shards",
            "`dbname` must not be empty",
        ),
        (
            "[databases.app]\nshards = [{ host = \"a\" }, { host = \"a\", port = 5432 }]\n".into(),
            2,
            "databases.app.shards",
            "shard 1: the same servers and database as shard 0",
        ),
        (
            format!("[databases.app]\nhost = \"h\"\n{T}table = \"t\"\ncolumn = \"c\"\n"),
            3,
            "databases.app.sharded_tables",
            "`sharded_tables` needs `shards`",
        ),
        (
            "[databases.app]\nhost = \"h\"\ntwo_phase_commit = true\n".into(),
            3,
            "databases.app.two_phase_commit",
            "only meaningful with `shards`",
        ),
        (
            format!("{shards}{T}table = \"t\"\ncolumn = \" \"\n"),
            3,
            "databases.app.sharded_tables",
            "table `t`: `column` must not be empty",
        ),
        (
            format!("{shards}{T}table = \"t\"\ncolumn = \"a.b\"\n"),
            3,
            "databases.app.sharded_tables",
            "`a.b` is not a column name",
        ),
        (
            format!("{shards}{T}table = \"\"\ncolumn = \"c\"\n"),
            3,
            "databases.app.sharded_tables",
            "is not a table name",
        ),
        (
            format!("{shards}{T}table = \"a.b.c\"\ncolumn = \"c\"\n"),
            3,
            "databases.app.sharded_tables",
            "is not a table name",
        ),
        (
            format!("{shards}{T}table = '\"open'\ncolumn = \"c\"\n"),
            3,
            "databases.app.sharded_tables",
            "is not a table name",
        ),
        (
            // Unquoted names fold to lower case: Orders and orders are one table.
            format!("{shards}{T}table = \"orders\"\ncolumn = \"c\"\n{T}table = \"Orders\"\ncolumn = \"d\"\n"),
            3,
            "databases.app.sharded_tables",
            "table `Orders` is listed twice",
        ),
        (
            "[databases]\n\"*\" = { shards = [{ host = \"a\" }] }\n".into(),
            2,
            "databases.*.shards",
            "fallback database",
        ),
    ];
    for (text, line, key, needle) in cases {
        let (l, k, m) = at(parse(&text));
        assert_eq!((l, k.as_str()), (line, key), "{text}\n{m}");
        assert!(m.contains(needle), "{text}\n{m}");
    }
    // Quoted names keep their case: "Orders" and orders are two tables.
    let two = format!(
        "{shards}{T}table = '\"Orders\"'\ncolumn = \"c\"\n{T}table = \"orders\"\ncolumn = \"c\"\n"
    );
    assert!(parse(&two).is_ok());
    // Bad key types are type errors of the `type` key.
    let (l, k, m) = at(parse(&format!(
        "{shards}{T}table = \"t\"\ncolumn = \"c\"\ntype = \"numeric\"\n"
    )));
    assert_eq!(
        (l, k.as_str()),
        (6, "databases.app.sharded_tables.type"),
        "{m}"
    );
    assert!(m.contains("unknown sharding key type \"numeric\""), "{m}");
}

#[test]
fn environment_overrides_keep_and_replace_shard_settings() {
    let vars = |v: &[(&str, &str)]| -> Vec<(String, String)> {
        v.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    // An unrelated override goes through the TOML writer: the shards survive.
    let c = parse_str(
        ISSUE,
        "test.toml",
        vars(&[("PGSLUICE_DATABASES__app__POOL_SIZE", "3")]),
    )
    .unwrap();
    let d = &c.databases["app"];
    assert_eq!(d.pool_size, Some(3));
    assert_eq!(d.shard_databases().len(), 2);
    assert_eq!(d.sharded_tables.len(), 1);
    // A list is a TOML literal.
    let c = parse_str(
        ISSUE,
        "test.toml",
        vars(&[(
            "PGSLUICE_DATABASES__app__SHARDS",
            r#"[{ host = "a" }, { host = "b" }, { host = "c", port = 5433 }]"#,
        )]),
    )
    .unwrap();
    let shards = c.databases["app"].shard_databases();
    assert_eq!(shards.len(), 3);
    assert_eq!(shards[2].port, 5433);
    // A bad override is blamed on its variable.
    let e = parse_str(
        ISSUE,
        "test.toml",
        vars(&[("PGSLUICE_DATABASES__app__SHARDS", "[]")]),
    )
    .unwrap_err();
    assert!(
        matches!(&e, ConfigError::Env { var, .. } if var == "PGSLUICE_DATABASES__app__SHARDS"),
        "{e:?}"
    );
}
