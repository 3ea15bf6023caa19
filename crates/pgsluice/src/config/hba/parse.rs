//! The `auth_hba_file` parser: logical lines (backslash continuation), tokens (quotes,
//! comma lists, `#` comments), fields, and `@file` name lists.

use std::net::IpAddr;

use super::{
    prefix_mask, AddrMatch, ConnType, DbMatch, HbaError, HbaMethod, HbaRule, HbaRules,
    IncludeReader, UserMatch, MAX_INCLUDE_DEPTH,
};

/// A token of a line: its text without quotes, and whether any part was quoted
/// (quoted tokens are never keywords).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Token {
    pub(super) text: String,
    pub(super) quoted: bool,
}

impl Token {
    pub(super) fn is_kw(&self, kw: &str) -> bool {
        !self.quoted && self.text == kw
    }
}

/// The logical lines of a text: (first line number, text), continuation lines joined.
pub(super) fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (i, raw) in text.split('\n').enumerate() {
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        let (start, mut acc) = pending.take().unwrap_or((i + 1, String::new()));
        if let Some(head) = raw.strip_suffix('\\') {
            acc.push_str(head);
            acc.push(' ');
            pending = Some((start, acc));
        } else {
            acc.push_str(raw);
            out.push((start, acc));
        }
    }
    out.extend(pending);
    out
}

/// Splits a logical line into fields, each a comma-separated list of tokens.
pub(super) fn tokenize(line: &str) -> Result<Vec<Vec<Token>>, String> {
    let blank = |c: char| c == ' ' || c == '\t' || c == '\r' || c == '\x0c' || c == '\x0b';
    let mut chars = line.chars().peekable();
    let mut fields: Vec<Vec<Token>> = Vec::new();
    let mut field: Vec<Token> = Vec::new();
    let mut after_comma = false;
    loop {
        while chars.peek().is_some_and(|&c| blank(c)) {
            chars.next();
        }
        match chars.peek() {
            None | Some('#') => break,
            Some(',') if after_comma || fields.is_empty() => {
                return Err("empty entry in a comma-separated list".to_owned());
            }
            Some(',') => {
                // A comma after blanks continues the previous field's list, as in
                // PgBouncer (`db1 , db2` and `db1 ,db2` are the list db1,db2).
                chars.next();
                field = fields.pop().unwrap_or_default();
                after_comma = true;
                continue;
            }
            _ => {}
        }
        let mut t = Token {
            text: String::new(),
            quoted: false,
        };
        let mut in_quote = false;
        let mut comma = false;
        while let Some(&c) = chars.peek() {
            if in_quote {
                chars.next();
                if c == '"' {
                    in_quote = false;
                } else {
                    t.text.push(c);
                }
                continue;
            }
            if blank(c) || c == '#' {
                break;
            }
            chars.next();
            match c {
                '"' => {
                    in_quote = true;
                    t.quoted = true;
                }
                ',' => {
                    comma = true;
                    break;
                }
                c => t.text.push(c),
            }
        }
        if in_quote {
            return Err(format!("unterminated quoted string `\"{}`", t.text));
        }
        field.push(t);
        after_comma = comma;
        if !comma {
            fields.push(std::mem::take(&mut field));
        }
    }
    if after_comma {
        return Err("a comma-separated list ends with a comma".to_owned());
    }
    Ok(fields)
}

/// Parses the text of an HBA file named `file`; `include` reads `@file` name lists.
pub fn parse(
    text: &str,
    file: &str,
    include: &mut IncludeReader<'_>,
) -> Result<HbaRules, HbaError> {
    let mut rules = Vec::new();
    for (line, l) in logical_lines(text) {
        let err = |field, message| HbaError {
            file: file.to_owned(),
            line,
            field,
            message,
        };
        let fields = tokenize(&l).map_err(|m| err("line", m))?;
        if fields.is_empty() {
            continue;
        }
        let mut p = LineParser {
            file,
            line,
            fields: fields.into_iter(),
            include,
        };
        rules.push(p.rule()?);
    }
    Ok(HbaRules {
        file: file.to_owned(),
        rules,
        ident: None,
    })
}

struct LineParser<'a, 'b> {
    file: &'a str,
    line: usize,
    fields: std::vec::IntoIter<Vec<Token>>,
    include: &'a mut IncludeReader<'b>,
}

/// What a name-list field accepts.
#[derive(Clone, Copy, PartialEq, Eq)]
enum NameField {
    Database,
    User,
}

impl NameField {
    fn as_str(self) -> &'static str {
        match self {
            NameField::Database => "database",
            NameField::User => "user",
        }
    }
}

/// One entry of a database or user field.
enum Name {
    Db(DbMatch),
    User(UserMatch),
}

impl LineParser<'_, '_> {
    fn err(&self, field: &'static str, message: impl Into<String>) -> HbaError {
        HbaError {
            file: self.file.to_owned(),
            line: self.line,
            field,
            message: message.into(),
        }
    }

    /// The next field, required.
    fn next(&mut self, field: &'static str) -> Result<Vec<Token>, HbaError> {
        self.fields
            .next()
            .ok_or_else(|| self.err(field, format!("end of line before the {field} field")))
    }

    /// The next field, which must be one token.
    fn single(&mut self, field: &'static str) -> Result<Token, HbaError> {
        let mut f = self.next(field)?;
        if f.len() > 1 {
            let list: Vec<&str> = f.iter().map(|t| t.text.as_str()).collect();
            return Err(self.err(
                field,
                format!("a list (`{}`) is not allowed here", list.join(",")),
            ));
        }
        Ok(f.remove(0))
    }

    fn rule(&mut self) -> Result<HbaRule, HbaError> {
        let t = self.single("type")?;
        let conn = match t.text.as_str() {
            _ if t.quoted => {
                return Err(self.err("type", format!("invalid connection type `{}`", t.text)))
            }
            "local" => ConnType::Local,
            "host" => ConnType::Host,
            "hostssl" => ConnType::HostSsl,
            "hostnossl" => ConnType::HostNoSsl,
            "hostgssenc" | "hostnogssenc" => {
                return Err(self.err(
                    "type",
                    format!(
                        "connection type `{}` is not supported (no GSSAPI encryption)",
                        t.text
                    ),
                ))
            }
            "include" | "include_if_exists" | "include_dir" => {
                return Err(self.err("type", format!("`{}` directives are not supported", t.text)))
            }
            other => {
                return Err(self.err(
                    "type",
                    format!(
                    "invalid connection type `{other}`: expected local, host, hostssl or hostnossl"
                ),
                ))
            }
        };
        let databases = self
            .names(NameField::Database)?
            .into_iter()
            .filter_map(|n| match n {
                Name::Db(d) => Some(d),
                Name::User(_) => None,
            })
            .collect();
        let users = self
            .names(NameField::User)?
            .into_iter()
            .filter_map(|n| match n {
                Name::User(u) => Some(u),
                Name::Db(_) => None,
            })
            .collect();
        let address = if conn == ConnType::Local {
            AddrMatch::All
        } else {
            self.address()?
        };
        let m = self.single("method")?;
        let method = self.method(&m)?;
        match (method, conn) {
            (HbaMethod::Peer, c) if c != ConnType::Local => {
                return Err(self.err(
                    "method",
                    "`peer` authentication is only supported on local (unix-socket) connections",
                ))
            }
            (HbaMethod::Cert, c) if c != ConnType::HostSsl => {
                return Err(self.err(
                    "method",
                    "`cert` authentication is only supported on hostssl connections",
                ))
            }
            _ => {}
        }
        let map = self.options(method)?;
        Ok(HbaRule {
            line: self.line,
            conn,
            databases,
            users,
            address,
            method,
            map,
        })
    }

    /// The option fields after the method: only `map=NAME`, and only for `cert` and
    /// `peer` (the methods PgBouncer applies user name maps to).
    fn options(&mut self, method: HbaMethod) -> Result<Option<String>, HbaError> {
        let mut map = None;
        while let Some(field) = self.fields.next() {
            let o = field
                .iter()
                .map(|t| t.text.as_str())
                .collect::<Vec<_>>()
                .join(",");
            match o.split_once('=') {
                Some(("map", name)) if matches!(method, HbaMethod::Cert | HbaMethod::Peer) => {
                    if name.is_empty() || field.len() > 1 {
                        return Err(self.err("option", format!("`{o}`: expected map=NAME")));
                    }
                    map = Some(name.to_owned());
                }
                Some(("map", _)) => {
                    return Err(self.err(
                        "option",
                        format!(
                            "`{o}`: user name maps are only valid for the cert and peer methods, \
                             not {method}"
                        ),
                    ))
                }
                Some((name, _)) => {
                    return Err(self.err(
                        "option",
                        format!("authentication option `{name}` (`{o}`) is not supported"),
                    ))
                }
                None => {
                    return Err(self.err(
                        "option",
                        format!("`{o}`: authentication options must be written name=value"),
                    ))
                }
            }
        }
        Ok(map)
    }

    /// A database or user field, `@file` lists expanded.
    fn names(&mut self, which: NameField) -> Result<Vec<Name>, HbaError> {
        let field = self.next(which.as_str())?;
        let mut out = Vec::new();
        let file = self.file.to_owned();
        let line = self.line;
        for t in &field {
            name_entry(t, which, &file, line, 0, self.include, &mut out)?;
        }
        Ok(out)
    }

    fn address(&mut self) -> Result<AddrMatch, HbaError> {
        let t = self.single("address")?;
        let a = t.text.as_str();
        if t.is_kw("all") {
            return Ok(AddrMatch::All);
        }
        if t.is_kw("samehost") || t.is_kw("samenet") {
            return Err(self.err("address", format!("`{a}` is not supported")));
        }
        if let Some((ip, bits)) = a.split_once('/') {
            let addr: IpAddr = ip
                .parse()
                .map_err(|_| self.err("address", format!("invalid IP address `{ip}` in `{a}`")))?;
            let mask = bits
                .parse::<u8>()
                .ok()
                .filter(|_| bits.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|b| prefix_mask(addr, b))
                .ok_or_else(|| {
                    self.err("address", format!("invalid CIDR mask in address `{a}`"))
                })?;
            return Ok(AddrMatch::Net { addr, mask });
        }
        let Ok(addr) = a.parse::<IpAddr>() else {
            return Err(self.err(
                "address",
                format!(
                    "`{a}` is not an IP address: host names and domain suffixes are not supported"
                ),
            ));
        };
        if self.fields.as_slice().is_empty() {
            return Err(self.err(
                "mask",
                format!("end of line after address `{a}`: expected a netmask (or write the address as CIDR)"),
            ));
        }
        let m = self.single("mask")?;
        let mask: IpAddr = m.text.parse().map_err(|_| {
            self.err(
                "mask",
                format!(
                    "invalid netmask `{}` (an address without /prefix needs a netmask column)",
                    m.text
                ),
            )
        })?;
        if mask.is_ipv4() != addr.is_ipv4() {
            return Err(self.err(
                "mask",
                format!(
                    "IP address `{a}` and netmask `{}` are not of the same family",
                    m.text
                ),
            ));
        }
        Ok(AddrMatch::Net { addr, mask })
    }

    fn method(&self, t: &Token) -> Result<HbaMethod, HbaError> {
        let m = t.text.as_str();
        Ok(match m {
            _ if t.quoted => {
                return Err(self.err("method", format!("invalid authentication method `{m}`")))
            }
            "trust" => HbaMethod::Trust,
            "reject" => HbaMethod::Reject,
            "md5" => HbaMethod::Md5,
            "password" => HbaMethod::Password,
            "scram-sha-256" => HbaMethod::ScramSha256,
            "cert" => HbaMethod::Cert,
            "peer" => HbaMethod::Peer,
            "ident" | "pam" | "ldap" | "radius" | "gss" | "sspi" | "bsd" | "any" | "plain"
            | "krb5" | "crypt" => {
                return Err(self.err(
                    "method",
                    format!(
                        "authentication method `{m}` is not supported in auth_hba_file \
                         (use trust, reject, md5, password, scram-sha-256, cert or peer)"
                    ),
                ))
            }
            _ => return Err(self.err("method", format!("invalid authentication method `{m}`"))),
        })
    }
}

/// One token of a database or user field (inline or from an `@file`) into `out`.
fn name_entry(
    t: &Token,
    which: NameField,
    file: &str,
    line: usize,
    depth: usize,
    include: &mut IncludeReader<'_>,
    out: &mut Vec<Name>,
) -> Result<(), HbaError> {
    let field = which.as_str();
    let err = |message: String| HbaError {
        file: file.to_owned(),
        line,
        field,
        message,
    };
    let s = t.text.as_str();
    if !t.quoted {
        if let Some(name) = s.strip_prefix('@') {
            if name.is_empty() {
                return Err(err("`@` must be followed by a file name".to_owned()));
            }
            if depth >= MAX_INCLUDE_DEPTH {
                return Err(err(format!(
                    "`@{name}`: @file lists nested more than {MAX_INCLUDE_DEPTH} deep"
                )));
            }
            let (inc_file, text) = include(file, name).map_err(err)?;
            for (inc_line, l) in logical_lines(&text) {
                let tokens = tokenize(&l).map_err(|m| HbaError {
                    file: inc_file.clone(),
                    line: inc_line,
                    field,
                    message: m,
                })?;
                for t in tokens.iter().flatten() {
                    name_entry(t, which, &inc_file, inc_line, depth + 1, include, out)?;
                }
            }
            return Ok(());
        }
        if s.starts_with('/') {
            return Err(err(format!(
                "`{s}`: regular expressions are not supported (quote the name if it starts with `/`)"
            )));
        }
    }
    let entry = match which {
        NameField::Database if t.is_kw("all") => Name::Db(DbMatch::All),
        NameField::Database if t.is_kw("sameuser") => Name::Db(DbMatch::SameUser),
        NameField::Database if t.is_kw("replication") => Name::Db(DbMatch::Replication),
        NameField::Database if t.is_kw("samerole") || t.is_kw("samegroup") => {
            return Err(err(format!("`{s}` is not supported")));
        }
        NameField::Database => Name::Db(DbMatch::Name(s.to_owned())),
        NameField::User if t.is_kw("all") => Name::User(UserMatch::All),
        NameField::User if !t.quoted && s.starts_with('+') => {
            return Err(err(format!(
                "`{s}`: group membership (+role) is not supported"
            )));
        }
        NameField::User => Name::User(UserMatch::Name(s.to_owned())),
    };
    out.push(entry);
    Ok(())
}
