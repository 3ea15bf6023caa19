//! PgBouncer's `auth_file` (userlist.txt): one user per line,
//! `"name" "secret"`, with `""` standing for a double quote inside a field.
//! The secret is a cleartext password, `md5` + 32 hex digits, or a
//! `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` verifier.
//! Anything after the second field is ignored, as by PgBouncer; blank lines
//! and lines starting with `;` or `#` are skipped.

use std::path::Path;

use super::check::scram_verifier_shape_ok;
use super::{Config, ConfigError, PasswordKind};

/// One user of an auth file.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct AuthEntry {
    pub(crate) user: String,
    /// The secret; `None` for an empty one.
    pub(crate) secret: Option<String>,
    pub(crate) line: usize,
}

impl std::fmt::Debug for AuthEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthEntry")
            .field("user", &self.user)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("line", &self.line)
            .finish()
    }
}

/// Parses auth file text; `file` names it in errors.
pub(crate) fn parse(text: &str, file: &str) -> Result<Vec<AuthEntry>, ConfigError> {
    let mut out = Vec::new();
    for (i, raw) in text.split('\n').enumerate() {
        let line = raw.strip_suffix('\r').unwrap_or(raw).trim();
        if line.is_empty() || line.starts_with(';') || line.starts_with('#') {
            continue;
        }
        let at = |key: &str, message: &str| ConfigError::At {
            file: file.to_owned(),
            line: i + 1,
            key: key.to_owned(),
            message: message.to_owned(),
        };
        let (user, rest) =
            quoted(line).ok_or_else(|| at("(user name)", "expected `\"user\" \"secret\"`"))?;
        if user.is_empty() {
            return Err(at("(user name)", "empty user name"));
        }
        let (secret, _ignored) = quoted(rest.trim_start())
            .ok_or_else(|| at(&user, "expected a double-quoted secret after the user name"))?;
        if PasswordKind::of(&secret) == PasswordKind::ScramSha256
            && !scram_verifier_shape_ok(&secret)
        {
            return Err(at(
                &user,
                "malformed SCRAM verifier: expected SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>",
            ));
        }
        out.push(AuthEntry {
            user,
            secret: (!secret.is_empty()).then_some(secret),
            line: i + 1,
        });
    }
    Ok(out)
}

/// A leading `"..."` field (with `""` escapes) and the text after it.
fn quoted(s: &str) -> Option<(String, &str)> {
    let body = s.strip_prefix('"')?;
    let mut out = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        if c != '"' {
            out.push(c);
        } else if body[i + 1..].starts_with('"') {
            out.push('"');
            chars.next();
        } else {
            return Some((out, &body[i + 1..]));
        }
    }
    None
}

/// Loads the auth file at `path` into `cfg.users`: each user gets the file's
/// secret unless the configuration already gives it a password. Returns
/// `(user, line)` of every entry, for error messages. A user listed twice
/// keeps the later secret (a notice says so).
pub(crate) fn merge_into(
    cfg: &mut Config,
    path: &Path,
) -> Result<Vec<(String, usize)>, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
        file: file.clone(),
        message: format!("cannot read the auth_file: {e}"),
    })?;
    let entries = parse(&text, &file)?;
    let preset: std::collections::BTreeSet<String> = cfg
        .users
        .iter()
        .filter(|(_, u)| u.password.is_some())
        .map(|(name, _)| name.clone())
        .collect();
    let mut seen: std::collections::BTreeMap<String, usize> = Default::default();
    let mut lines = Vec::with_capacity(entries.len());
    for e in entries {
        if let Some(first) = seen.insert(e.user.clone(), e.line) {
            cfg.notices.push(format!(
                "{file}:{}: user `{}` is listed again (first at line {first}); the later secret is used",
                e.line, e.user
            ));
        }
        lines.push((e.user.clone(), e.line));
        if preset.contains(&e.user) {
            continue;
        }
        cfg.users.entry(e.user).or_default().password = e.secret;
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_and_escapes() {
        let scram = "SCRAM-SHA-256$4096:c2FsdA==$c3RvcmVk:c2VydmVy";
        let text = format!(
            ";; comment\n\"alice\" \"secret pw\"\n\n\"bob\" \"md5a3556571e93b0d20722ba62be61e8c2d\" extra ignored\n\
             # another\n\"car\"\"ol\" \"{scram}\"\n\"dave\" \"\"\n\"e\" \"a\"\"b\"\n"
        );
        let e = parse(&text, "u.txt").unwrap();
        let got: Vec<(&str, Option<&str>, usize)> = e
            .iter()
            .map(|e| (e.user.as_str(), e.secret.as_deref(), e.line))
            .collect();
        assert_eq!(
            got,
            vec![
                ("alice", Some("secret pw"), 2),
                ("bob", Some("md5a3556571e93b0d20722ba62be61e8c2d"), 4),
                ("car\"ol", Some(scram), 6),
                ("dave", None, 7),
                ("e", Some("a\"b"), 8),
            ]
        );
    }

    #[test]
    fn bad_lines() {
        let err = |t: &str| match parse(t, "u.txt") {
            Err(ConfigError::At { line, message, .. }) => (line, message),
            other => panic!("{other:?}"),
        };
        assert_eq!(err("\n alice secret\n").0, 2);
        assert!(err("\"alice\"\n").1.contains("secret"));
        assert!(err("\"alice\" \"pw\n").1.contains("secret"));
        assert!(err("\"\" \"pw\"\n").1.contains("empty user"));
        assert!(err("\"a\" \"SCRAM-SHA-256$x\"\n")
            .1
            .contains("malformed SCRAM"));
    }
}
