//! Cross-field validation of a [`Config`], with the keys to blame.

use super::{os_group, Config, DatabaseConfig, HostRole, PasswordKind, MIN_MESSAGE_SIZE};

/// A validation failure, before it is located in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Issue {
    /// Candidate keys to blame, best first (full paths like `["general", "min_pool_size"]`).
    pub(crate) keys: Vec<Vec<String>>,
    pub(crate) message: String,
}

pub(crate) fn path(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| (*s).to_owned()).collect()
}

fn issue(keys: Vec<Vec<String>>, message: impl Into<String>) -> Issue {
    Issue {
        keys,
        message: message.into(),
    }
}

impl Config {
    /// What is odd in the `auth_query` and `auth_dbname` settings. Warnings, not
    /// errors: PgBouncer accepts any query text and any auth_dbname when it reads the
    /// file, and fails the logins that use them; pgsluice does the same (a lookup
    /// failure is a FATAL for that client) and says so once at load and reload.
    pub(crate) fn auth_query_warnings(&self) -> Vec<String> {
        let g = &self.general;
        let sources = std::iter::once(("general".to_owned(), Some(&g.auth_query), &g.auth_dbname))
            .chain(self.databases.iter().map(|(name, d)| {
                (
                    format!("databases.{name}"),
                    d.auth_query.as_ref(),
                    &d.auth_dbname,
                )
            }));
        let mut out = Vec::new();
        for (at, query, dbname) in sources {
            if let Some(q) = query.filter(|q| !q.contains("$1")) {
                out.push(format!(
                    "key `{at}.auth_query`: `{q}` does not use the parameter $1: the user \
                     name is always bound as $1, so PostgreSQL refuses this query at every \
                     lookup and those logins fail"
                ));
            }
            if let Some(db) = dbname.as_ref().filter(|db| self.database(db).is_none()) {
                out.push(format!(
                    "key `{at}.auth_dbname`: `{db}` is not a database of [databases]: \
                     logins that need auth_query there fail"
                ));
            }
        }
        out
    }
}

const LOG_LEVELS: &[&str] = &["trace", "debug", "info", "warn", "error", "off"];

impl Config {
    /// The cross-field checks, with the keys to blame.
    pub(crate) fn check(&self) -> Result<(), Issue> {
        let g = &self.general;
        let gk = |k: &str| path(&["general", k]);
        if g.listen.is_empty() {
            return Err(issue(
                vec![gk("listen")],
                "at least one listen address is needed",
            ));
        }
        for (i, a) in g.listen.iter().enumerate() {
            if g.listen[..i].contains(a) {
                return Err(issue(
                    vec![gk("listen")],
                    format!("address {a} is listed twice"),
                ));
            }
        }
        if g.workers == Some(0) {
            return Err(issue(
                vec![gk("workers")],
                "must be >= 1 (leave it out for one worker per core)",
            ));
        }
        self.check_peers()?;
        if let Some(group) = g.unix_socket_group.as_deref() {
            if os_group::group_id(group).is_none() {
                return Err(issue(
                    vec![gk("unix_socket_group")],
                    format!("group `{group}` does not exist"),
                ));
            }
        }
        if g.max_client_conn == 0 {
            return Err(issue(vec![gk("max_client_conn")], "must be >= 1"));
        }
        if g.auth_type == super::AuthType::Cert
            && !matches!(
                g.client_tls_sslmode,
                super::TlsMode::VerifyCa | super::TlsMode::VerifyFull
            )
        {
            return Err(issue(
                vec![gk("auth_type"), gk("client_tls_sslmode")],
                "auth_type = cert needs client_tls_sslmode = verify-ca or verify-full \
                 (and client_tls_ca_file), so that client certificates are validated",
            ));
        }
        if g.auth_type == super::AuthType::Hba && self.hba.is_none() {
            return Err(issue(
                vec![gk("auth_hba_file"), gk("auth_type")],
                if g.auth_hba_file.is_none() {
                    "auth_type = hba needs auth_hba_file (a file of pg_hba.conf-style rules)"
                } else {
                    "the rules of auth_hba_file were not read"
                },
            ));
        }
        if g.default_pool_size == 0 {
            return Err(issue(vec![gk("default_pool_size")], "must be >= 1"));
        }
        if g.min_pool_size > g.default_pool_size {
            return Err(issue(
                vec![gk("min_pool_size"), gk("default_pool_size")],
                format!(
                    "min_pool_size ({}) must not exceed default_pool_size ({})",
                    g.min_pool_size, g.default_pool_size
                ),
            ));
        }
        if g.server_connect_timeout.is_zero() {
            return Err(issue(vec![gk("server_connect_timeout")], "must be > 0"));
        }
        if g.client_login_timeout.is_zero() {
            return Err(issue(vec![gk("client_login_timeout")], "must be > 0"));
        }
        if g.max_message_size < MIN_MESSAGE_SIZE {
            return Err(issue(
                vec![gk("max_message_size")],
                format!("must be at least {MIN_MESSAGE_SIZE} bytes"),
            ));
        }
        if g.max_message_size > i32::MAX as usize {
            return Err(issue(
                vec![gk("max_message_size")],
                format!("must be at most {} bytes (protocol limit)", i32::MAX),
            ));
        }
        check_log_level(&g.log_level).map_err(|m| issue(vec![gk("log_level")], m))?;

        for (name, d) in &self.databases {
            let dk = |k: &str| path(&["databases", name, k]);
            if name.is_empty() {
                return Err(issue(
                    vec![path(&["databases", name])],
                    "database name must not be empty",
                ));
            }
            check_sharding(name, d)?;
            if d.shards.is_none() {
                check_hosts(name, d)?;
            }
            check_replica_settings(name, d)?;
            if d.port == 0 {
                return Err(issue(vec![dk("port")], "must be between 1 and 65535"));
            }
            if d.dbname.as_deref() == Some("") {
                return Err(issue(
                    vec![dk("dbname")],
                    "must not be empty (leave it out to use the key)",
                ));
            }
            if d.user.as_deref() == Some("") {
                return Err(issue(vec![dk("user")], "must not be empty"));
            }
            if d.password.is_some() && d.user.is_none() {
                return Err(issue(
                    vec![dk("password")],
                    "a database password is only used together with `user` (the forced user); \
                     put client passwords under [users.<name>]",
                ));
            }
            if d.pool_size == Some(0) {
                return Err(issue(vec![dk("pool_size")], "must be >= 1"));
            }
            let size = d.pool_size.unwrap_or(g.default_pool_size);
            let min = d.min_pool_size.unwrap_or(g.min_pool_size);
            if min > size {
                let mut keys = vec![dk("min_pool_size"), dk("pool_size")];
                if d.min_pool_size.is_none() {
                    keys.push(gk("min_pool_size"));
                }
                return Err(issue(
                    keys,
                    format!("min_pool_size ({min}) must not exceed pool_size ({size}) for database `{name}`"),
                ));
            }
        }
        for (name, u) in &self.users {
            let uk = |k: &str| path(&["users", name, k]);
            if name.is_empty() {
                return Err(issue(
                    vec![path(&["users", name])],
                    "user name must not be empty",
                ));
            }
            if u.pool_size == Some(0) {
                return Err(issue(vec![uk("pool_size")], "must be >= 1"));
            }
            if let Some(p) = &u.password {
                if PasswordKind::of(p) == PasswordKind::ScramSha256 && !scram_verifier_shape_ok(p) {
                    return Err(issue(
                        vec![uk("password")],
                        "malformed SCRAM verifier: expected SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>",
                    ));
                }
            }
        }
        Ok(())
    }
}

/// `host` or `hosts` (exactly one), and each host of the list.
pub(super) fn check_hosts(name: &str, d: &DatabaseConfig) -> Result<(), Issue> {
    let dk = |k: &str| path(&["databases", name, k]);
    let not_single = |h: &str| {
        format!("`{h}` is not a host name, IP address or socket directory (no blanks or commas)")
    };
    let Some(hosts) = &d.hosts else {
        if d.host.trim().is_empty() {
            return Err(issue(
                vec![dk("host")],
                "missing field `host`: give `host`, or `hosts` for several hosts",
            ));
        }
        // PgBouncer's form: a comma-separated list, every host on `port`.
        for h in d.host.split(',').map(str::trim) {
            if h.is_empty() {
                return Err(issue(
                    vec![dk("host")],
                    format!("`{}` has an empty entry in its host list", d.host),
                ));
            }
            if h.contains(char::is_whitespace) {
                return Err(issue(vec![dk("host")], not_single(h)));
            }
        }
        return Ok(());
    };
    if !d.host.trim().is_empty() {
        return Err(issue(
            vec![dk("hosts"), dk("host")],
            "give either `host` or `hosts`, not both",
        ));
    }
    if hosts.is_empty() {
        return Err(issue(vec![dk("hosts")], "must list at least one host"));
    }
    for (i, h) in hosts.iter().enumerate() {
        if h.host.contains(|c: char| c.is_whitespace() || c == ',') {
            return Err(issue(vec![dk("hosts")], not_single(&h.host)));
        }
        if h.port == 0 {
            return Err(issue(
                vec![dk("hosts")],
                format!("host `{}`: port must be between 1 and 65535", h.host),
            ));
        }
        if hosts[..i]
            .iter()
            .any(|o| o.host == h.host && o.port == h.port)
        {
            return Err(issue(
                vec![dk("hosts")],
                format!("host `{}` is listed twice", h.label()),
            ));
        }
    }
    let primaries: Vec<String> = hosts
        .iter()
        .filter(|h| h.role == HostRole::Primary)
        .map(|h| format!("`{}`", h.label()))
        .collect();
    if primaries.len() > 1 {
        return Err(issue(
            vec![dk("hosts")],
            format!(
                "at most one host may have role = \"primary\" ({} do)",
                primaries.join(", ")
            ),
        ));
    }
    Ok(())
}

/// The health check and routing settings of a database (meaningful with several
/// hosts or `read_write_split`, accepted on any database).
fn check_replica_settings(name: &str, d: &DatabaseConfig) -> Result<(), Issue> {
    let dk = |k: &str| path(&["databases", name, k]);
    for (key, value) in [
        ("health_check_interval", d.health_check_interval),
        ("health_check_timeout", d.health_check_timeout),
    ] {
        if value.is_some_and(|v| v.is_zero()) {
            return Err(issue(vec![dk(key)], "must be > 0"));
        }
    }
    if let Some(f) = d.write_functions.iter().find(|f| f.trim().is_empty()) {
        return Err(issue(
            vec![dk("write_functions")],
            format!("`{f}` is not a function name"),
        ));
    }
    Ok(())
}

/// Light structural check of `SCRAM-SHA-256$<iter>:<salt>$<stored>:<server>`.
pub(crate) fn scram_verifier_shape_ok(p: &str) -> bool {
    let Some(rest) = p.strip_prefix("SCRAM-SHA-256$") else {
        return false;
    };
    let Some((iter_salt, keys)) = rest.split_once('$') else {
        return false;
    };
    let Some((iter, salt)) = iter_salt.split_once(':') else {
        return false;
    };
    let Some((stored, server)) = keys.split_once(':') else {
        return false;
    };
    iter.parse::<u32>().is_ok_and(|n| n > 0)
        && !salt.is_empty()
        && !stored.is_empty()
        && !server.is_empty()
}

fn check_log_level(level: &str) -> Result<(), String> {
    let t = level.trim();
    if t.is_empty() {
        return Err("must not be empty (e.g. \"info\")".to_owned());
    }
    if !t.contains(['=', ',', ':', '[']) && !LOG_LEVELS.contains(&t.to_ascii_lowercase().as_str()) {
        return Err(format!(
            "`{t}` is not a log level: expected one of trace, debug, info, warn, error, off, \
             or a filter directive like \"info,pgsluice=debug\""
        ));
    }
    tracing_subscriber::EnvFilter::try_new(t)
        .map(|_| ())
        .map_err(|e| format!("invalid filter directive `{t}`: {e}"))
}

/// The checks of `shards`, `sharded_tables` and `two_phase_commit` on database
/// `name`, and the host checks of each shard. A database without `shards` gets
/// its own host checks from the caller.
fn check_sharding(name: &str, d: &DatabaseConfig) -> Result<(), Issue> {
    let dk = |k: &str| path(&["databases", name, k]);
    let issue = |keys: Vec<Vec<String>>, message: String| Issue { keys, message };
    let Some(shards) = &d.shards else {
        if !d.sharded_tables.is_empty() {
            return Err(issue(
                vec![dk("sharded_tables")],
                "`sharded_tables` needs `shards` (the servers to split the tables over)".into(),
            ));
        }
        if d.two_phase_commit {
            return Err(issue(
                vec![dk("two_phase_commit")],
                "`two_phase_commit` is only meaningful with `shards`".into(),
            ));
        }
        return Ok(());
    };
    if shards.is_empty() {
        return Err(issue(
            vec![dk("shards")],
            "must list at least one shard".into(),
        ));
    }
    if name == Config::FALLBACK_DATABASE {
        return Err(issue(
            vec![dk("shards")],
            "the fallback database `*` cannot be sharded".into(),
        ));
    }
    for key in ["host", "hosts"] {
        let set = match key {
            "host" => !d.host.trim().is_empty(),
            _ => d.hosts.is_some(),
        };
        if set {
            return Err(issue(
                vec![dk(key), dk("shards")],
                format!(
                    "a sharded database takes its servers from `shards`: leave out `{key}` \
                     (give each shard its `host` or `hosts`)"
                ),
            ));
        }
    }
    if d.two_phase_commit {
        return Err(issue(
            vec![dk("two_phase_commit")],
            "two-phase commit is not built yet: a transaction over several shards is \
             refused; leave `two_phase_commit` out"
                .into(),
        ));
    }
    let databases = d.shard_databases();
    for (i, (shard, db)) in shards.iter().zip(&databases).enumerate() {
        let at = |message: String| issue(vec![dk("shards")], format!("shard {i}: {message}"));
        // The same checks as a database's `host` / `hosts`, blamed on `shards`.
        check_hosts(name, db).map_err(|e| at(e.message))?;
        if db.is_replicated() {
            return Err(at(
                "replicated shards (`hosts`, a host list, read_write_split) are not served \
                 yet: give each shard one `host`"
                    .into(),
            ));
        }
        if shard.port == Some(0) {
            return Err(at("port must be between 1 and 65535".into()));
        }
        if shard.dbname.as_deref() == Some("") {
            return Err(at(
                "`dbname` must not be empty (leave it out to use the database's)".into(),
            ));
        }
        let same = databases[..i]
            .iter()
            .position(|o| o.host_list() == db.host_list() && o.dbname == db.dbname);
        if let Some(j) = same {
            return Err(at(format!(
                "the same servers and database as shard {j}: each shard needs a database of its own"
            )));
        }
    }
    let mut seen: Vec<(Option<String>, String)> = Vec::new();
    for t in &d.sharded_tables {
        let at = |message: String| issue(vec![dk("sharded_tables")], message);
        let Some(folded) = t.folded_name() else {
            return Err(at(format!(
                "table `{}` is not a table name (`table` or `schema.table`)",
                t.table
            )));
        };
        if t.column.trim().is_empty() {
            return Err(at(format!(
                "table `{}`: `column` must not be empty",
                t.table
            )));
        }
        if t.folded_column().is_none() {
            return Err(at(format!(
                "table `{}`: `{}` is not a column name",
                t.table, t.column
            )));
        }
        if seen.contains(&folded) {
            return Err(at(format!("table `{}` is listed twice", t.table)));
        }
        seen.push(folded);
    }
    Ok(())
}
