//! pgbouncer.ini into a [`Config`]: `[pgbouncer]` settings, `[databases]`
//! connection strings (with the `*` fallback), `[users]`, `[peers]`, and the
//! `auth_file`.
//!
//! Unknown sections, keys and parameters and invalid values are errors
//! naming the file, line and key (`pgbouncer.listen_port`,
//! `databases.app.pool_size`...). Keys pgsluice does not implement yet are
//! validated and listed in [`Config::notices`] with their file and line (see
//! [`super::pgbouncer_keys`] for the status of each key).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::str::FromStr;

use super::ini::{self, Entry, Loc};
use super::pgbouncer_hosts::{self as hosts, HostsKey};
use super::pgbouncer_keys::{check_ignored, lookup, Handling, KeyInfo, Section, Status};
use super::pgbouncer_settings::{self as settings, Applied};
use super::types::{parse_count, split_list};
use super::{connstr, userlist, Config, ConfigError, DatabaseConfig, General, PoolMode};

/// The server socket directory PgBouncer uses when `unix_socket_dir` is not set.
const DEFAULT_SOCKET_DIR: &str = "/tmp";

/// Where each configuration key came from, for error messages: config key
/// path (`["general", "listen"]`) to the line and the key as the file names
/// it (`pgbouncer.listen_addr`).
#[derive(Debug, Default)]
pub(crate) struct Locations(BTreeMap<Vec<String>, (Loc, String)>);

impl Locations {
    fn set(&mut self, path: &[&str], loc: &Loc, key: String) {
        let path = path.iter().map(|s| (*s).to_owned()).collect();
        self.0.insert(path, (loc.clone(), key));
    }

    /// The line and displayed key for a config key path: the path itself, else
    /// the closest enclosing entry (a database or user line).
    pub(crate) fn find(&self, path: &[String]) -> Option<(Loc, String)> {
        if let Some(found) = self.0.get(path) {
            return Some(found.clone());
        }
        (2..path.len()).rev().find_map(|n| {
            self.0
                .get(&path[..n])
                .map(|(loc, _)| (loc.clone(), display_key(path)))
        })
    }
}

/// `general.x` is written `pgbouncer.x` in an ini file.
fn display_key(path: &[String]) -> String {
    match path.split_first() {
        Some((first, rest)) if first == "general" => std::iter::once("pgbouncer".to_owned())
            .chain(rest.iter().cloned())
            .collect::<Vec<_>>()
            .join("."),
        _ => path.join("."),
    }
}

/// Reads a pgbouncer.ini file (and its includes and auth_file) into a
/// configuration, before overrides and validation.
pub(crate) fn read(path: &Path, text: &str) -> Result<(Config, Locations), ConfigError> {
    let file = path.display().to_string();
    let entries = ini::read_text(text, &file)?;
    let mut b = Builder::default();
    b.cfg.general = General::pgbouncer_defaults();
    for e in entries {
        b.entry(e)?;
    }
    b.finish()?;
    b.cfg.source = Some(path.to_path_buf());
    Ok((b.cfg, b.locs))
}

#[derive(Default)]
struct Builder {
    cfg: Config,
    locs: Locations,
    listen_addr: Option<(String, Loc)>,
    listen_port: Option<(u16, Loc)>,
    auth_file: Option<(String, Loc)>,
    databases: Vec<Entry>,
    users: Vec<Entry>,
}

fn at(loc: &Loc, key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::At {
        file: loc.file.clone(),
        line: loc.line,
        key: key.to_owned(),
        message: message.into(),
    }
}

/// The warning for a key that is set but not implemented.
fn not_implemented(loc: &Loc, key: &str, info: &KeyInfo) -> String {
    let what = match info.status {
        Status::NotApplicable => "has no effect in pgsluice",
        _ => "is not implemented yet",
    };
    let note = if info.note.is_empty() {
        String::new()
    } else {
        format!(" ({})", info.note.trim_end_matches('.'))
    };
    format!(
        "{}:{}: key `{key}`: this setting {what}{note}; it is ignored",
        loc.file, loc.line
    )
}

impl Builder {
    fn entry(&mut self, e: Entry) -> Result<(), ConfigError> {
        match e.section.as_str() {
            "pgbouncer" => self.setting(e),
            "databases" => {
                self.databases.push(e);
                Ok(())
            }
            "users" => {
                self.users.push(e);
                Ok(())
            }
            "peers" => self.peer(&e),
            other => Err(at(
                &e.loc,
                &format!("{other}.{}", e.key),
                format!("unknown section [{other}]: expected [pgbouncer], [databases], [users] or [peers]"),
            )),
        }
    }

    /// One `[pgbouncer]` line.
    fn setting(&mut self, e: Entry) -> Result<(), ConfigError> {
        let name = e.key.to_ascii_lowercase();
        let key = format!("pgbouncer.{name}");
        let Some(info) = lookup(Section::Pgbouncer, &name) else {
            return Err(at(
                &e.loc,
                &key,
                format!("unknown setting `{}` in [pgbouncer]", e.key),
            ));
        };
        match info.handling {
            Handling::Ignored(kind, inert) => {
                let inert =
                    check_ignored(kind, inert, &e.value).map_err(|m| at(&e.loc, &key, m))?;
                if !inert {
                    self.cfg.notices.push(not_implemented(&e.loc, &key, info));
                }
                // Kept for SHOW CONFIG.
                self.cfg
                    .pgbouncer_extra
                    .insert(info.name.to_owned(), e.value.trim().to_owned());
                Ok(())
            }
            Handling::Mapped => {
                // As written, for SHOW CONFIG (which prefers the typed value).
                self.cfg
                    .pgbouncer_extra
                    .insert(info.name.to_owned(), e.value.trim().to_owned());
                let applied = settings::apply(&mut self.cfg.general, &name, &e.value)
                    .map_err(|m| at(&e.loc, &key, m))?;
                let field = match applied {
                    Applied::Field(field) => field,
                    Applied::ListenAddr(v) => {
                        self.listen_addr = Some((v, e.loc.clone()));
                        "listen"
                    }
                    Applied::ListenPort(port) => {
                        self.listen_port = Some((port, e.loc.clone()));
                        "listen_port"
                    }
                    Applied::AuthFile(f) => {
                        self.auth_file = f.map(|f| (f, e.loc.clone()));
                        "auth_file"
                    }
                    Applied::AuthHbaFile(f) => {
                        // Resolved like auth_file: next to the file that names it.
                        self.cfg.general.auth_hba_file =
                            f.map(|f| ini::resolve_path(Path::new(&e.loc.file), &f));
                        "auth_hba_file"
                    }
                    Applied::AuthIdentFile(f) => {
                        self.cfg.general.auth_ident_file =
                            f.map(|f| ini::resolve_path(Path::new(&e.loc.file), &f));
                        "auth_ident_file"
                    }
                };
                self.locs.set(&["general", field], &e.loc, key);
                Ok(())
            }
        }
    }

    /// One `[peers]` line: validated, then warned about.
    fn peer(&mut self, e: &Entry) -> Result<(), ConfigError> {
        let key = format!("peers.{}", e.key);
        let params = connstr::parse(&e.value).map_err(|m| at(&e.loc, &key, m))?;
        let mut peer = super::PeerConfig {
            host: String::new(),
            port: 6432,
            pool_size: None,
        };
        for (k, v) in params {
            let pkey = format!("{key}.{k}");
            let bad = |v: &str| at(&e.loc, &pkey, format!("invalid value `{v}`"));
            lookup(Section::Peer, &k)
                .ok_or_else(|| at(&e.loc, &pkey, format!("unknown peer parameter `{k}`")))?;
            match k.as_str() {
                "host" => peer.host = v,
                "port" => {
                    peer.port = v
                        .parse::<u16>()
                        .ok()
                        .filter(|p| *p > 0)
                        .ok_or_else(|| bad(&v))?;
                }
                "pool_size" => peer.pool_size = Some(parse_count(&v).map_err(|_| bad(&v))?),
                _ => {}
            }
            self.locs.set(&["peers", &e.key, &k], &e.loc, pkey.clone());
        }
        self.locs.set(&["peers", &e.key], &e.loc, key);
        self.cfg.peers.insert(e.key.clone(), peer);
        Ok(())
    }

    fn finish(&mut self) -> Result<(), ConfigError> {
        self.finish_listen()?;
        for e in std::mem::take(&mut self.databases) {
            self.database(e)?;
        }
        for e in std::mem::take(&mut self.users) {
            self.user(e)?;
        }
        if let Some((name, loc)) = self.auth_file.take() {
            let resolved = ini::resolve_path(Path::new(&loc.file), &name);
            self.cfg.general.auth_file = Some(resolved.clone());
            let lines = userlist::merge_into(&mut self.cfg, &resolved).map_err(|e| match e {
                ConfigError::File { message, .. } => at(&loc, "pgbouncer.auth_file", message),
                other => other,
            })?;
            let file = resolved.display().to_string();
            for (user, line) in lines {
                let l = Loc {
                    file: file.clone(),
                    line,
                };
                self.locs
                    .set(&["users", &user, "password"], &l, format!("users.{user}"));
            }
        }
        self.resolve_created_files();
        self.located_unimplemented();
        Ok(())
    }

    /// A relative `pidfile` or `logfile` is taken in the directory of the
    /// file that names it.
    fn resolve_created_files(&mut self) {
        let g = &mut self.cfg.general;
        for (key, value) in [("pidfile", &mut g.pidfile), ("logfile", &mut g.logfile)] {
            let Some(p) = value.as_ref().filter(|p| p.is_relative()) else {
                continue;
            };
            let Some((loc, _)) = self.locs.find(&["general".to_owned(), key.to_owned()]) else {
                continue;
            };
            if let Some(dir) = Path::new(&loc.file).parent() {
                *value = Some(dir.join(p));
            }
        }
    }

    /// `listen_addr` + `listen_port` into `general.listen`.
    fn finish_listen(&mut self) -> Result<(), ConfigError> {
        let port = self.listen_port.as_ref().map_or(6432, |(p, _)| *p);
        let addrs = self
            .listen_addr
            .as_ref()
            .map(|(v, _)| split_list(v))
            .unwrap_or_default();
        let mut listen: Vec<SocketAddr> = Vec::new();
        let mut add = |a: SocketAddr| {
            if !listen.contains(&a) {
                listen.push(a);
            }
        };
        if addrs.is_empty() {
            let loc = self
                .listen_addr
                .as_ref()
                .map(|(_, l)| l)
                .or(self.listen_port.as_ref().map(|(_, l)| l));
            let place = loc.map_or_else(|| self.file_name(), |l| format!("{}:{}", l.file, l.line));
            self.cfg.notices.push(format!(
                "{place}: key `pgbouncer.listen_addr`: not set, so PgBouncer would accept only unix-socket \
                 connections; pgsluice does not listen on unix sockets yet and listens on 127.0.0.1:{port} instead"
            ));
            add(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
        }
        for a in &addrs {
            let loc = &self
                .listen_addr
                .as_ref()
                .expect("addresses come from listen_addr")
                .1;
            if a == "*" {
                add(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port));
            } else if a.eq_ignore_ascii_case("localhost") {
                add(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
            } else if let Ok(ip) = a
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>()
            {
                add(SocketAddr::new(ip, port));
            } else {
                let found = (a.as_str(), port).to_socket_addrs().map_err(|e| {
                    at(
                        loc,
                        "pgbouncer.listen_addr",
                        format!("cannot resolve `{a}`: {e}"),
                    )
                })?;
                found.for_each(&mut add);
            }
        }
        self.cfg.general.listen = listen;
        let listen_loc = self
            .listen_addr
            .as_ref()
            .map(|(_, l)| (l.clone(), "pgbouncer.listen_addr"))
            .or_else(|| {
                self.listen_port
                    .as_ref()
                    .map(|(_, l)| (l.clone(), "pgbouncer.listen_port"))
            });
        if let Some((loc, key)) = listen_loc {
            self.locs.set(&["general", "listen"], &loc, key.to_owned());
        }
        Ok(())
    }

    fn file_name(&self) -> String {
        self.cfg
            .source
            .as_ref()
            .map_or_else(|| "pgbouncer.ini".to_owned(), |p| p.display().to_string())
    }

    /// One `[databases]` line.
    fn database(&mut self, e: Entry) -> Result<(), ConfigError> {
        let name = e.key.clone();
        let key = format!("databases.{name}");
        if name.eq_ignore_ascii_case("pgbouncer") {
            return Err(at(
                &e.loc,
                &key,
                "the database name `pgbouncer` is reserved for the admin console",
            ));
        }
        let params = connstr::parse(&e.value).map_err(|m| at(&e.loc, &key, m))?;
        let mut d = DatabaseConfig::new("");
        let mut host: Option<String> = None;
        let mut port: Option<String> = None;
        for (k, v) in params {
            let pkey = format!("{key}.{k}");
            let err = |m: String| at(&e.loc, &pkey, m);
            if hosts::is_extension(&k) {
                hosts::apply_extension(&mut d, &k, &v).map_err(err)?;
                self.locs
                    .set(&["databases", &name, &k], &e.loc, pkey.clone());
                continue;
            }
            let info = lookup(Section::Database, &k)
                .ok_or_else(|| err(format!("unknown connection parameter `{k}`")))?;
            if let Handling::Ignored(kind, inert) = info.handling {
                if !check_ignored(kind, inert, &v).map_err(err)? {
                    self.cfg.notices.push(not_implemented(&e.loc, &pkey, info));
                }
                continue;
            }
            let count = |v: &str| parse_count(v).map_err(|e| err(e.0));
            let some = |v: String| Some(v);
            match k.as_str() {
                "dbname" => d.dbname = (!v.is_empty()).then_some(v),
                "host" => host = (!v.is_empty()).then_some(v),
                "port" => port = Some(v),
                "load_balance_hosts" => {
                    d.load_balance = Some(hosts::load_balance_hosts(&v).map_err(err)?);
                }
                "user" => d.user = some(v),
                "password" => d.password = some(v),
                "auth_user" => d.auth_user = some(v),
                "auth_query" => d.auth_query = some(v),
                "auth_dbname" => d.auth_dbname = some(v),
                "pool_size" => d.pool_size = Some(count(&v)?),
                "min_pool_size" => d.min_pool_size = Some(count(&v)?),
                "reserve_pool" | "reserve_pool_size" => d.reserve_pool = Some(count(&v)?),
                "max_db_connections" => d.max_db_connections = Some(count(&v)?),
                "max_db_client_connections" => d.max_db_client_connections = Some(count(&v)?),
                "connect_query" => d.connect_query = some(v),
                "pool_mode" => d.pool_mode = Some(PoolMode::from_str(&v).map_err(|e| err(e.0))?),
                "client_encoding" => d.client_encoding = some(v),
                "datestyle" => d.datestyle = some(v),
                "timezone" => d.timezone = some(v),
                "application_name" => d.application_name = some(v),
                other => {
                    return Err(err(format!(
                        "parameter `{other}` is not handled (a pgsluice bug)"
                    )))
                }
            }
            self.locs
                .set(&["databases", &name, &k], &e.loc, pkey.clone());
        }
        let default_host = match self.cfg.general.unix_socket_dir.as_deref() {
            None => DEFAULT_SOCKET_DIR,
            Some("") if host.is_none() => {
                return Err(at(
                    &e.loc,
                    &key,
                    "no `host` and unix_socket_dir is empty: nowhere to connect",
                ));
            }
            Some(dir) => dir,
        };
        hosts::set_hosts(&mut d, host.as_deref(), port.as_deref(), default_host).map_err(|h| {
            let param = match h.key {
                HostsKey::Host => "host",
                HostsKey::Port => "port",
            };
            at(&e.loc, &format!("{key}.{param}"), h.message)
        })?;
        if d.hosts.is_some() {
            self.locs.set(
                &["databases", &name, "hosts"],
                &e.loc,
                format!("{key}.host"),
            );
        }
        self.locs.set(&["databases", &name], &e.loc, key.clone());
        if self.cfg.databases.insert(name.clone(), d).is_some() {
            self.cfg.notices.push(format!(
                "{}:{}: key `{key}`: database `{name}` is defined again; this later definition is used",
                e.loc.file, e.loc.line
            ));
        }
        Ok(())
    }

    /// One `[users]` line.
    fn user(&mut self, e: Entry) -> Result<(), ConfigError> {
        let name = e.key.clone();
        let key = format!("users.{name}");
        let params = connstr::parse(&e.value).map_err(|m| at(&e.loc, &key, m))?;
        let mut u = self.cfg.users.remove(&name).unwrap_or_default();
        for (k, v) in params {
            let pkey = format!("{key}.{k}");
            let err = |m: String| at(&e.loc, &pkey, m);
            let info = lookup(Section::User, &k)
                .ok_or_else(|| err(format!("unknown user parameter `{k}`")))?;
            if let Handling::Ignored(kind, inert) = info.handling {
                if !check_ignored(kind, inert, &v).map_err(err)? {
                    self.cfg.notices.push(not_implemented(&e.loc, &pkey, info));
                }
                continue;
            }
            match k.as_str() {
                "pool_mode" => u.pool_mode = Some(PoolMode::from_str(&v).map_err(|e| err(e.0))?),
                "pool_size" => u.pool_size = Some(parse_count(&v).map_err(|e| err(e.0))?),
                "reserve_pool_size" => {
                    u.reserve_pool_size = Some(parse_count(&v).map_err(|e| err(e.0))?);
                }
                "max_user_connections" => {
                    u.max_user_connections = Some(parse_count(&v).map_err(|e| err(e.0))?);
                }
                "max_user_client_connections" => {
                    u.max_user_client_connections = Some(parse_count(&v).map_err(|e| err(e.0))?);
                }
                other => {
                    return Err(err(format!(
                        "parameter `{other}` is not handled (a pgsluice bug)"
                    )))
                }
            }
            self.locs.set(&["users", &name, &k], &e.loc, pkey.clone());
        }
        self.locs.set(&["users", &name], &e.loc, key);
        self.cfg.users.insert(name, u);
        Ok(())
    }

    /// Located warnings for mapped keys set to values pgsluice does not
    /// implement ([`Config::warnings`] skips the keys warned about here).
    fn located_unimplemented(&mut self) {
        let mut notices = Vec::new();
        for (key, what) in self.cfg.general.unimplemented() {
            if let Some((loc, shown)) = self.locs.find(&["general".to_owned(), key.to_owned()]) {
                notices.push(format!("{}:{}: key `{shown}`: {what}", loc.file, loc.line));
            }
        }
        for (path, message) in self.cfg.unimplemented_entries() {
            if let Some((loc, shown)) = self.locs.find(&path) {
                notices.push(format!(
                    "{}:{}: key `{shown}`: {message}",
                    loc.file, loc.line
                ));
            }
        }
        self.cfg.notices.extend(notices);
    }
}
