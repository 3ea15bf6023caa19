//! `auth_hba_file`: host-based authentication rules in PostgreSQL's `pg_hba.conf`
//! syntax, the subset PgBouncer supports, and `auth_ident_file`: the user name maps
//! (`pg_ident.conf` syntax) its `map=` options name.
//!
//! Sans-IO: [`parse`] turns text into [`HbaRules`] (reading `@file` name lists through a
//! callback), [`parse_ident`] turns a map file into [`IdentMaps`], and
//! [`HbaRules::find`] picks the first rule matching a connection. Only [`load`] touches
//! the file system.
//!
//! Supported: record types `local`, `host`, `hostssl`, `hostnossl`; databases `all`,
//! `sameuser`, `replication` (matches only replication connections, which pgsluice does
//! not serve), names, comma lists (also with blanks around the commas, as PgBouncer
//! reads them), quoted names, `@file`; users `all`, names, comma lists, `@file`;
//! addresses `all`, IPv4/IPv6 in CIDR form or with a mask column; methods `trust`,
//! `reject`, `md5`, `password`, `scram-sha-256`, `cert` (hostssl only) and `peer`
//! (local only); the option `map=NAME` on `cert` and `peer` rules; `#` comments and
//! backslash line continuation. Everything else (`samehost`, host names, `+group`,
//! `samerole`, regular expressions, other options, `include` directives, other
//! methods) is an error naming the file, the line, the field and the token.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// How deep `@file` name lists may include each other.
const MAX_INCLUDE_DEPTH: usize = 10;

/// The parsed rules of an `auth_hba_file`, in file order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HbaRules {
    /// The file the rules come from, for messages.
    pub file: String,
    /// The rules, first match wins.
    pub rules: Vec<HbaRule>,
    /// The user name maps of `auth_ident_file`, when it is set.
    pub ident: Option<IdentMaps>,
}

/// One line of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HbaRule {
    /// 1-based line number (of the first line when continued).
    pub line: usize,
    /// Record type: which connections the rule is about.
    pub conn: ConnType,
    /// Database field: matches when any entry does.
    pub databases: Vec<DbMatch>,
    /// User field: matches when any entry does.
    pub users: Vec<UserMatch>,
    /// Client address (always [`AddrMatch::All`] for `local`).
    pub address: AddrMatch,
    /// What to do with a matching connection.
    pub method: HbaMethod,
    /// `map=NAME` (cert and peer only): the user name map of `auth_ident_file` that
    /// says which certificate or OS user may log in as which database user.
    pub map: Option<String>,
}

/// Record type of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnType {
    /// `local`: unix-socket connections.
    Local,
    /// `host`: TCP connections, with or without TLS.
    Host,
    /// `hostssl`: TCP connections with TLS.
    HostSsl,
    /// `hostnossl`: TCP connections without TLS.
    HostNoSsl,
}

/// One entry of the database field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbMatch {
    /// `all`.
    All,
    /// `sameuser`: the database named like the user.
    SameUser,
    /// `replication`: physical replication connections only (never, in pgsluice).
    Replication,
    /// A database name (compared exactly).
    Name(String),
}

/// One entry of the user field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserMatch {
    /// `all`.
    All,
    /// A user name (compared exactly).
    Name(String),
}

/// The address field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddrMatch {
    /// `all` (and every `local` rule).
    All,
    /// A network: addresses equal to `addr` on the bits set in `mask` (same family).
    Net {
        /// The network address as written.
        addr: IpAddr,
        /// The netmask.
        mask: IpAddr,
    },
}

/// The method field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HbaMethod {
    /// `trust`: no password.
    Trust,
    /// `reject`: refused.
    Reject,
    /// `md5` (SCRAM when the user's secret is a SCRAM verifier, as in PostgreSQL).
    Md5,
    /// `password`: cleartext password.
    Password,
    /// `scram-sha-256`.
    ScramSha256,
    /// `cert`: TLS client certificate whose common name is the user name.
    Cert,
    /// `peer`: the unix-socket peer's OS user name must be the user name.
    Peer,
}

impl HbaMethod {
    /// The spelling in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            HbaMethod::Trust => "trust",
            HbaMethod::Reject => "reject",
            HbaMethod::Md5 => "md5",
            HbaMethod::Password => "password",
            HbaMethod::ScramSha256 => "scram-sha-256",
            HbaMethod::Cert => "cert",
            HbaMethod::Peer => "peer",
        }
    }
}

/// How a client is connected, for matching.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// A unix-domain socket.
    Unix,
    /// TCP from `addr`, with TLS or not.
    Tcp {
        /// The client's address (IPv4-mapped IPv6 addresses count as IPv4).
        addr: IpAddr,
        /// Whether the connection is encrypted with TLS.
        tls: bool,
    },
}

/// A parse error: where, which field, what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {field}: {message}")]
pub struct HbaError {
    /// The file (the HBA file or an `@file` it names).
    pub file: String,
    /// 1-based line number.
    pub line: usize,
    /// The field: `type`, `database`, `user`, `address`, `mask`, `method`, `option`.
    pub field: &'static str,
    /// What is wrong, quoting the offending token.
    pub message: String,
}

impl HbaRules {
    /// Whether `system_user` (a certificate's common name, a unix peer's OS user) may
    /// log in as `user` through `rule`: through its map when it names one, else only
    /// when the two names are equal (PostgreSQL's and PgBouncer's rule).
    pub fn permits(&self, rule: &HbaRule, system_user: &str, user: &str) -> bool {
        match &rule.map {
            None => system_user == user,
            Some(map) => self
                .ident
                .as_ref()
                .is_some_and(|i| i.permits(map, system_user, user)),
        }
    }

    /// The rules whose `map=` names a map `auth_ident_file` does not define (every
    /// login through them fails): (line, map name).
    pub fn undefined_maps(&self) -> Vec<(usize, &str)> {
        self.rules
            .iter()
            .filter_map(|r| Some((r.line, r.map.as_deref()?)))
            .filter(|(_, m)| !self.ident.as_ref().is_some_and(|i| i.defines(m)))
            .collect()
    }

    /// The first rule matching a connection, if any.
    pub fn find(&self, transport: Transport, database: &str, user: &str) -> Option<&HbaRule> {
        self.rules
            .iter()
            .find(|r| r.matches(transport, database, user))
    }
}

impl HbaRule {
    /// Whether the rule applies to this connection.
    pub fn matches(&self, transport: Transport, database: &str, user: &str) -> bool {
        let conn = match (self.conn, transport) {
            (ConnType::Local, Transport::Unix) | (ConnType::Host, Transport::Tcp { .. }) => true,
            (ConnType::HostSsl, Transport::Tcp { tls, .. }) => tls,
            (ConnType::HostNoSsl, Transport::Tcp { tls, .. }) => !tls,
            _ => false,
        };
        let address = match (self.address, transport) {
            (AddrMatch::All, _) => true,
            (AddrMatch::Net { addr, mask }, Transport::Tcp { addr: client, .. }) => {
                in_network(client.to_canonical(), addr, mask)
            }
            (AddrMatch::Net { .. }, Transport::Unix) => false,
        };
        conn && address
            && self.databases.iter().any(|d| match d {
                DbMatch::All => true,
                DbMatch::SameUser => database == user,
                DbMatch::Replication => false,
                DbMatch::Name(n) => n == database,
            })
            && self.users.iter().any(|u| match u {
                UserMatch::All => true,
                UserMatch::Name(n) => n == user,
            })
    }
}

/// Whether `client` is in the network `addr`/`mask` (families must agree). Also the
/// matching of `metrics_allow` ([`super::IpNet`]).
pub(crate) fn in_network(client: IpAddr, addr: IpAddr, mask: IpAddr) -> bool {
    match (client, addr, mask) {
        (IpAddr::V4(c), IpAddr::V4(a), IpAddr::V4(m)) => {
            let m = u32::from(m);
            u32::from(c) & m == u32::from(a) & m
        }
        (IpAddr::V6(c), IpAddr::V6(a), IpAddr::V6(m)) => {
            let m = u128::from(m);
            u128::from(c) & m == u128::from(a) & m
        }
        _ => false,
    }
}

/// The netmask of a CIDR prefix length, if valid for the family.
pub(crate) fn prefix_mask(addr: IpAddr, bits: u8) -> Option<IpAddr> {
    match addr {
        IpAddr::V4(_) if bits <= 32 => {
            let m = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            Some(IpAddr::V4(m.into()))
        }
        IpAddr::V6(_) if bits <= 128 => {
            let m = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            Some(IpAddr::V6(m.into()))
        }
        _ => None,
    }
}

/// Reads `@file` name lists: given the including file and the name after `@`, returns
/// (the file's name for messages, its text), or why it cannot be read.
pub type IncludeReader<'a> = dyn FnMut(&str, &str) -> Result<(String, String), String> + 'a;

/// Reads and parses an HBA file, and the ident map file `ident` when given; `@file`
/// lists are taken relative to the directory of the file naming them.
pub fn load(path: &Path, ident: Option<&Path>) -> Result<HbaRules, LoadError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| LoadError::Read(format!("cannot read the auth_hba_file {file}: {e}")))?;
    let mut read = |including: &str, name: &str| {
        let p = Path::new(name);
        let full: PathBuf = if p.is_absolute() {
            p.to_path_buf()
        } else {
            Path::new(including)
                .parent()
                .map_or_else(|| p.to_path_buf(), |d| d.join(p))
        };
        let shown = full.display().to_string();
        std::fs::read_to_string(&full)
            .map(|t| (shown.clone(), t))
            .map_err(|e| format!("cannot read `@{name}` ({shown}): {e}"))
    };
    let mut rules = parse(&text, &file, &mut read).map_err(LoadError::Parse)?;
    if let Some(ident) = ident {
        let name = ident.display().to_string();
        let text = std::fs::read_to_string(ident).map_err(|e| {
            LoadError::ReadIdent(format!("cannot read the auth_ident_file {name}: {e}"))
        })?;
        rules.ident = Some(parse_ident(&text, &name).map_err(LoadError::Parse)?);
    }
    Ok(rules)
}

/// Reads the rules of `general.auth_hba_file` (and the maps of `auth_ident_file`) into
/// [`Config::hba`] when `auth_type = hba` (without a file, the validation checks
/// complain). `blame` makes the error for an unreadable file, about the key (`true`:
/// `auth_ident_file`); errors in the files name the file, line and field.
pub(crate) fn load_into(
    cfg: &mut super::Config,
    blame: &dyn Fn(bool, String) -> super::ConfigError,
) -> Result<(), super::ConfigError> {
    cfg.hba = None;
    if cfg.general.auth_type != super::AuthType::Hba {
        return Ok(());
    }
    let Some(path) = cfg.general.auth_hba_file.clone() else {
        return Ok(());
    };
    match load(&path, cfg.general.auth_ident_file.as_deref()) {
        Ok(rules) => {
            cfg.hba = Some(std::sync::Arc::new(rules));
            Ok(())
        }
        Err(LoadError::Read(message)) => Err(blame(false, message)),
        Err(LoadError::ReadIdent(message)) => Err(blame(true, message)),
        Err(LoadError::Parse(e)) => Err(super::ConfigError::At {
            file: e.file,
            line: e.line,
            key: e.field.to_owned(),
            message: e.message,
        }),
    }
}

/// Why [`load`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    /// The HBA file itself cannot be read.
    #[error("{0}")]
    Read(String),
    /// The ident map file cannot be read.
    #[error("{0}")]
    ReadIdent(String),
    /// A line is wrong.
    #[error("{0}")]
    Parse(HbaError),
}

impl fmt::Display for HbaMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

mod ident;
mod parse;
pub use ident::{parse_ident, IdentLine, IdentMaps, IdentUser};
pub use parse::parse;

#[cfg(test)]
mod tests_ident;
#[cfg(test)]
mod tests_match;
#[cfg(test)]
mod tests_parse;
