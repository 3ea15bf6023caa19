//! A [`Config`] as a TOML table: for applying overrides to a configuration
//! that did not come from a TOML file, and for `--print-config`.

use std::path::Path;

use toml::{Table, Value};

use super::{Config, DatabaseConfig, HostConfig, HostRole, ReplicaLag, Secs};

/// What replaces passwords in [`to_redacted_toml`].
const REDACTED: &str = "<redacted>";

fn int(n: usize) -> Value {
    Value::Integer(i64::try_from(n).unwrap_or(i64::MAX))
}

fn secs(s: Secs) -> Value {
    let d = s.0;
    if d.subsec_nanos() == 0 {
        Value::Integer(i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
    } else {
        let millis = d.as_nanos().div_ceil(1_000_000);
        Value::String(format!("{millis}ms"))
    }
}

fn string(s: &str) -> Value {
    Value::String(s.to_owned())
}

fn strings(items: &[String]) -> Value {
    Value::Array(items.iter().map(|s| string(s)).collect())
}

fn opt_string(t: &mut Table, key: &str, v: Option<&str>) {
    if let Some(v) = v {
        t.insert(key.into(), string(v));
    }
}

fn opt_path(t: &mut Table, key: &str, v: Option<&Path>) {
    if let Some(v) = v {
        t.insert(key.into(), Value::String(v.display().to_string()));
    }
}

/// A [`Config`] as a TOML table (what a file saying exactly this would parse to).
pub(crate) fn to_table(cfg: &Config) -> Table {
    let g = &cfg.general;
    let mut general = Table::new();
    let listen = g
        .listen
        .iter()
        .map(|a| Value::String(a.to_string()))
        .collect();
    general.insert("listen".into(), Value::Array(listen));
    if let Some(w) = g.workers {
        general.insert("workers".into(), int(w));
    }
    if let Some(n) = g.relay_lanes {
        general.insert("relay_lanes".into(), int(n));
    }
    general.insert("max_client_conn".into(), int(g.max_client_conn));
    general.insert("pool_mode".into(), string(g.pool_mode.as_str()));
    general.insert("default_pool_size".into(), int(g.default_pool_size));
    general.insert("min_pool_size".into(), int(g.min_pool_size));
    general.insert("query_wait_timeout".into(), secs(g.query_wait_timeout));
    general.insert("query_wait_notify".into(), secs(g.query_wait_notify));
    general.insert(
        "server_connect_timeout".into(),
        secs(g.server_connect_timeout),
    );
    general.insert("server_idle_timeout".into(), secs(g.server_idle_timeout));
    general.insert("server_lifetime".into(), secs(g.server_lifetime));
    general.insert("server_reset_query".into(), string(&g.server_reset_query));
    general.insert(
        "server_reset_query_always".into(),
        Value::Boolean(g.server_reset_query_always),
    );
    general.insert("auth_type".into(), string(g.auth_type.as_str()));
    general.insert("client_login_timeout".into(), secs(g.client_login_timeout));
    general.insert("shutdown_timeout".into(), secs(g.shutdown_timeout));
    general.insert("log_level".into(), string(&g.log_level));
    general.insert("log_format".into(), string(g.log_format.as_str()));
    general.insert("max_message_size".into(), int(g.max_message_size));
    general.insert(
        "application_name_add_host".into(),
        Value::Boolean(g.application_name_add_host),
    );
    general.insert("admin_users".into(), strings(&g.admin_users));
    general.insert("stats_users".into(), strings(&g.stats_users));
    opt_string(
        &mut general,
        "metrics_auth_token",
        g.metrics_auth_token.as_ref().map(super::Token::expose),
    );
    let allow: Vec<String> = g.metrics_allow.iter().map(ToString::to_string).collect();
    general.insert("metrics_allow".into(), strings(&allow));
    opt_path(&mut general, "auth_file", g.auth_file.as_deref());
    opt_path(&mut general, "auth_hba_file", g.auth_hba_file.as_deref());
    opt_path(
        &mut general,
        "auth_ident_file",
        g.auth_ident_file.as_deref(),
    );
    opt_string(&mut general, "auth_user", g.auth_user.as_deref());
    general.insert("auth_query".into(), string(&g.auth_query));
    opt_string(&mut general, "auth_dbname", g.auth_dbname.as_deref());
    general.insert("auth_query_miss_ttl".into(), secs(g.auth_query_miss_ttl));
    opt_string(
        &mut general,
        "unix_socket_dir",
        g.unix_socket_dir.as_deref(),
    );
    general.insert(
        "unix_socket_mode".into(),
        Value::String(format!("0{:o}", g.unix_socket_mode)),
    );
    opt_string(
        &mut general,
        "unix_socket_group",
        g.unix_socket_group.as_deref(),
    );
    general.insert(
        "ignore_startup_parameters".into(),
        strings(&g.ignore_startup_parameters),
    );
    general.insert(
        "track_extra_parameters".into(),
        strings(&g.track_extra_parameters),
    );
    general.insert(
        "server_round_robin".into(),
        Value::Boolean(g.server_round_robin),
    );
    general.insert("max_db_connections".into(), int(g.max_db_connections));
    general.insert("max_user_connections".into(), int(g.max_user_connections));
    general.insert(
        "max_db_client_connections".into(),
        int(g.max_db_client_connections),
    );
    general.insert(
        "max_user_client_connections".into(),
        int(g.max_user_client_connections),
    );
    general.insert("peer_id".into(), int(usize::from(g.peer_id)));
    general.insert("so_reuseport".into(), Value::Boolean(g.so_reuseport));
    general.insert("reserve_pool_size".into(), int(g.reserve_pool_size));
    general.insert("reserve_pool_timeout".into(), secs(g.reserve_pool_timeout));
    general.insert("server_login_retry".into(), secs(g.server_login_retry));
    general.insert("transaction_timeout".into(), secs(g.transaction_timeout));
    general.insert("cancel_wait_timeout".into(), secs(g.cancel_wait_timeout));
    general.insert("query_timeout".into(), secs(g.query_timeout));
    general.insert(
        "idle_transaction_timeout".into(),
        secs(g.idle_transaction_timeout),
    );
    general.insert("client_idle_timeout".into(), secs(g.client_idle_timeout));
    general.insert("stats_period".into(), secs(g.stats_period));
    general.insert(
        "max_prepared_statements".into(),
        int(g.max_prepared_statements),
    );
    opt_path(&mut general, "pidfile", g.pidfile.as_deref());
    opt_path(&mut general, "logfile", g.logfile.as_deref());
    general.insert("syslog".into(), Value::Boolean(g.syslog));
    general.insert("syslog_ident".into(), string(&g.syslog_ident));
    general.insert("syslog_facility".into(), string(g.syslog_facility.as_str()));
    for (key, on) in [
        ("log_connections", g.log_connections),
        ("log_disconnections", g.log_disconnections),
        ("log_pooler_errors", g.log_pooler_errors),
        ("log_stats", g.log_stats),
    ] {
        general.insert(key.into(), Value::Boolean(on));
    }
    opt_string(&mut general, "user", g.user.as_deref());
    general.insert(
        "client_tls_sslmode".into(),
        string(g.client_tls_sslmode.as_str()),
    );
    opt_path(
        &mut general,
        "client_tls_key_file",
        g.client_tls_key_file.as_deref(),
    );
    opt_path(
        &mut general,
        "client_tls_cert_file",
        g.client_tls_cert_file.as_deref(),
    );
    opt_path(
        &mut general,
        "client_tls_ca_file",
        g.client_tls_ca_file.as_deref(),
    );
    general.insert(
        "client_tls_protocols".into(),
        string(&g.client_tls_protocols),
    );
    general.insert("client_tls_ciphers".into(), string(&g.client_tls_ciphers));
    general.insert(
        "server_tls_sslmode".into(),
        string(g.server_tls_sslmode.as_str()),
    );
    opt_path(
        &mut general,
        "server_tls_ca_file",
        g.server_tls_ca_file.as_deref(),
    );
    opt_path(
        &mut general,
        "server_tls_key_file",
        g.server_tls_key_file.as_deref(),
    );
    opt_path(
        &mut general,
        "server_tls_cert_file",
        g.server_tls_cert_file.as_deref(),
    );
    general.insert(
        "server_tls_protocols".into(),
        string(&g.server_tls_protocols),
    );
    general.insert("server_tls_ciphers".into(), string(&g.server_tls_ciphers));

    let mut databases = Table::new();
    for (name, d) in &cfg.databases {
        let mut t = Table::new();
        if (d.hosts.is_none() && d.shards.is_none()) || !d.host.is_empty() {
            t.insert("host".into(), string(&d.host));
        }
        t.insert("port".into(), Value::Integer(d.port.into()));
        replica_keys(&mut t, d);
        shard_keys(&mut t, d);
        let opt_strings = [
            ("dbname", &d.dbname),
            ("user", &d.user),
            ("password", &d.password),
            ("application_name", &d.application_name),
            ("auth_user", &d.auth_user),
            ("auth_query", &d.auth_query),
            ("auth_dbname", &d.auth_dbname),
            ("connect_query", &d.connect_query),
            ("client_encoding", &d.client_encoding),
            ("datestyle", &d.datestyle),
            ("timezone", &d.timezone),
        ];
        for (k, v) in opt_strings {
            if let Some(v) = v {
                t.insert(k.into(), string(v));
            }
        }
        if let Some(n) = d.pool_size {
            t.insert("pool_size".into(), int(n));
        }
        if let Some(n) = d.min_pool_size {
            t.insert("min_pool_size".into(), int(n));
        }
        if let Some(m) = d.pool_mode {
            t.insert("pool_mode".into(), string(m.as_str()));
        }
        if let Some(n) = d.reserve_pool {
            t.insert("reserve_pool".into(), int(n));
        }
        if let Some(n) = d.max_db_connections {
            t.insert("max_db_connections".into(), int(n));
        }
        if let Some(n) = d.max_db_client_connections {
            t.insert("max_db_client_connections".into(), int(n));
        }
        databases.insert(name.clone(), Value::Table(t));
    }

    let mut users = Table::new();
    for (name, u) in &cfg.users {
        let mut t = Table::new();
        if let Some(p) = &u.password {
            t.insert("password".into(), string(p));
        }
        if let Some(m) = u.pool_mode {
            t.insert("pool_mode".into(), string(m.as_str()));
        }
        if let Some(n) = u.pool_size {
            t.insert("pool_size".into(), int(n));
        }
        if let Some(n) = u.reserve_pool_size {
            t.insert("reserve_pool_size".into(), int(n));
        }
        if let Some(n) = u.max_user_connections {
            t.insert("max_user_connections".into(), int(n));
        }
        if let Some(n) = u.max_user_client_connections {
            t.insert("max_user_client_connections".into(), int(n));
        }
        users.insert(name.clone(), Value::Table(t));
    }

    let mut peers = Table::new();
    for (id, p) in &cfg.peers {
        let mut t = Table::new();
        t.insert("host".into(), string(&p.host));
        t.insert("port".into(), int(usize::from(p.port)));
        if let Some(n) = p.pool_size {
            t.insert("pool_size".into(), int(n));
        }
        peers.insert(id.clone(), Value::Table(t));
    }

    let mut root = Table::new();
    root.insert("general".into(), Value::Table(general));
    root.insert("databases".into(), Value::Table(databases));
    root.insert("users".into(), Value::Table(users));
    if !peers.is_empty() {
        root.insert("peers".into(), Value::Table(peers));
    }
    root
}

/// A `hosts` list as tables `{ host, port, role }`.
fn host_list(hosts: &[HostConfig]) -> Value {
    let list = hosts
        .iter()
        .map(|h| {
            let mut e = Table::new();
            e.insert("host".into(), string(&h.host));
            e.insert("port".into(), Value::Integer(h.port.into()));
            if h.role != HostRole::Auto {
                e.insert("role".into(), string(h.role.as_str()));
            }
            Value::Table(e)
        })
        .collect();
    Value::Array(list)
}

/// `shards`, `sharded_tables` and `two_phase_commit`, those that are set.
fn shard_keys(t: &mut Table, d: &DatabaseConfig) {
    if let Some(shards) = &d.shards {
        let list = shards
            .iter()
            .map(|s| {
                let mut e = Table::new();
                if !s.host.is_empty() || s.hosts.is_none() {
                    e.insert("host".into(), string(&s.host));
                }
                if let Some(p) = s.port {
                    e.insert("port".into(), Value::Integer(p.into()));
                }
                if let Some(hosts) = &s.hosts {
                    e.insert("hosts".into(), host_list(hosts));
                }
                opt_string(&mut e, "dbname", s.dbname.as_deref());
                Value::Table(e)
            })
            .collect();
        t.insert("shards".into(), Value::Array(list));
    }
    if !d.sharded_tables.is_empty() {
        let list = d
            .sharded_tables
            .iter()
            .map(|s| {
                let mut e = Table::new();
                e.insert("table".into(), string(&s.table));
                e.insert("column".into(), string(&s.column));
                if let Some(ty) = s.key_type {
                    e.insert("type".into(), string(ty.name()));
                }
                Value::Table(e)
            })
            .collect();
        t.insert("sharded_tables".into(), Value::Array(list));
    }
    if d.two_phase_commit {
        t.insert("two_phase_commit".into(), Value::Boolean(true));
    }
}

/// The host list and replica settings of a database, those that are set.
fn replica_keys(t: &mut Table, d: &DatabaseConfig) {
    if let Some(hosts) = &d.hosts {
        t.insert("hosts".into(), host_list(hosts));
    }
    if d.read_write_split {
        t.insert("read_write_split".into(), Value::Boolean(true));
    }
    if let Some(v) = d.load_balance {
        t.insert("load_balance".into(), string(v.as_str()));
    }
    if let Some(v) = d.target_session_attrs {
        t.insert("target_session_attrs".into(), string(v.as_str()));
    }
    match d.max_replica_lag {
        // A bare integer is bytes; a duration is written with its unit.
        Some(ReplicaLag::Bytes(b)) => {
            let v = i64::try_from(b).map_or_else(|_| string(&format!("{b}B")), Value::Integer);
            t.insert("max_replica_lag".into(), v);
        }
        Some(lag @ ReplicaLag::Time(_)) => {
            t.insert("max_replica_lag".into(), string(&lag.to_string()));
        }
        None => {}
    }
    let durations = [
        ("health_check_interval", d.health_check_interval),
        ("health_check_timeout", d.health_check_timeout),
        ("ban_time", d.ban_time),
        ("read_your_writes", d.read_your_writes),
    ];
    for (k, v) in durations {
        if let Some(v) = v {
            t.insert(k.into(), secs(v));
        }
    }
    if let Some(v) = d.primary_reads {
        t.insert("primary_reads".into(), string(v.as_str()));
    }
    if !d.write_functions.is_empty() {
        t.insert("write_functions".into(), strings(&d.write_functions));
    }
}

/// The effective configuration as TOML text, in pgsluice's own format, with
/// every password (and `metrics_auth_token`) replaced by `"<redacted>"` (`--print-config`).
pub fn to_redacted_toml(cfg: &Config) -> String {
    let mut root = to_table(cfg);
    if let Some(t) = root
        .get_mut("general")
        .and_then(|g| g.as_table_mut())
        .and_then(|g| g.get_mut("metrics_auth_token"))
    {
        *t = string(REDACTED);
    }
    for table in ["databases", "users"] {
        let Some(Value::Table(entries)) = root.get_mut(table) else {
            continue;
        };
        for (_, entry) in entries.iter_mut() {
            if let Some(p) = entry.as_table_mut().and_then(|t| t.get_mut("password")) {
                *p = string(REDACTED);
            }
        }
    }
    toml::to_string(&root).unwrap_or_else(|e| format!("# cannot print the configuration: {e}\n"))
}
