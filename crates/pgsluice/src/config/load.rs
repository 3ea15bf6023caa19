//! Loading a [`Config`]: TOML text, environment overrides, validation.
//!
//! The pipeline is:
//!
//! 1. parse the file and deserialize it as is, so that syntax, unknown-key
//!    and type errors carry the file's own line numbers;
//! 2. apply overrides (`PGSLUICE_*` environment variables, then
//!    command-line flags) to the parsed [`toml::Table`], and deserialize
//!    again; an error at that point is blamed on the variable or flag that
//!    set the offending key;
//! 3. run [`Config::validate`]'s checks and report the line of the key at
//!    fault (or the variable/flag that set it).
//!
//! # Environment variables
//!
//! * `PGSLUICE_<KEY>` sets `[general]` key `<key>` (the name is lowercased):
//!   `PGSLUICE_POOL_MODE=session`, `PGSLUICE_DEFAULT_POOL_SIZE=5`.
//! * `PGSLUICE_DATABASES__<NAME>__<KEY>` and `PGSLUICE_USERS__<NAME>__<KEY>`
//!   set keys of `[databases.<NAME>]` / `[users.<NAME>]`. `<NAME>` is used
//!   exactly as given (case preserved, may itself contain `__`: the last
//!   `__` separates the key); `<KEY>` is lowercased. The table is created if
//!   the file has none.
//!
//! A value is read as a TOML literal when it is one (`5`, `true`, `"x"`,
//! `["a:1", "b:2"]`), otherwise as a plain string (`session`, `30s`,
//! `127.0.0.1:7000`). A literal of the wrong type for a string key (a
//! numeric password) is retried as a plain string. A variable naming an
//! unknown key is an error.

use std::path::{Path, PathBuf};

use toml::{Table, Value};

use super::locate::{line_of_offset, Scan};
pub(crate) use super::table::to_table;
use super::{pgbouncer, Config, ConfigFormat, Issue};

/// Prefix of the environment variables read by [`apply_env`].
pub const ENV_PREFIX: &str = "PGSLUICE_";

/// A configuration error. Every variant's message says where the problem is.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A problem with one key of a file. `line` is 1-based; 0 when the key
    /// does not appear in the file (it came from a default).
    #[error("{file}:{line}: key `{key}`: {message}")]
    At {
        /// The file's name as given.
        file: String,
        /// 1-based line number (0 = not in the file).
        line: usize,
        /// Dotted key path, e.g. `general.pool_mode` or `databases.app.host`.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// A problem with a file as a whole (unreadable, unsupported format...).
    #[error("{file}: {message}")]
    File {
        /// The file's name as given.
        file: String,
        /// What is wrong.
        message: String,
    },
    /// A problem with a `PGSLUICE_*` environment variable.
    #[error("environment variable {var}: {message}")]
    Env {
        /// The variable's name.
        var: String,
        /// What is wrong.
        message: String,
    },
    /// Quick-mode, URL and command-line errors.
    #[error("{0}")]
    Invalid(String),
}

/// Where an override comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Origin {
    /// An environment variable (its name).
    Env(String),
    /// A command-line flag (e.g. `--pool-size`).
    Flag(&'static str),
}

/// One key set from outside the file.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Override {
    /// Full key path, e.g. `["general", "pool_mode"]`.
    pub(crate) path: Vec<String>,
    pub(crate) value: Value,
    /// The raw text, when `value` was read as a TOML literal and may be
    /// retried as a plain string.
    pub(crate) raw: Option<String>,
    pub(crate) origin: Origin,
}

impl Override {
    /// An override set by a command-line flag.
    pub(crate) fn flag(flag: &'static str, path: &[&str], value: Value) -> Override {
        Override {
            path: path.iter().map(|s| (*s).to_owned()).collect(),
            value,
            raw: None,
            origin: Origin::Flag(flag),
        }
    }

    fn error(&self, message: String) -> ConfigError {
        self.error_at(&self.path, message)
    }

    /// An error about `key` (a key of the table this override touches).
    fn error_at(&self, key: &[String], message: String) -> ConfigError {
        let key = key.join(".");
        match &self.origin {
            Origin::Env(var) => ConfigError::Env {
                var: var.clone(),
                message: format!("key `{key}`: {message}"),
            },
            Origin::Flag(flag) => ConfigError::Invalid(format!("{flag}: {message}")),
        }
    }
}

/// Reads a configuration file (pgsluice's TOML, or PgBouncer's
/// pgbouncer.ini: see [`ConfigFormat::detect`]), applies `PGSLUICE_*`
/// environment overrides (from the given iterator, normally [`env_vars`] or
/// `std::env::vars()`), deserializes and validates.
pub fn load_file(
    path: &Path,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, ConfigError> {
    load_file_with(path, None, env, Vec::new())
}

/// [`load_file`] with the format given (`None` = detect it).
pub fn load_file_as(
    path: &Path,
    format: Option<ConfigFormat>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, ConfigError> {
    load_file_with(path, format, env, Vec::new())
}

/// Like [`load_file`], on text already read; `file_name` is used in messages
/// and as [`Config::source`].
pub fn parse_str(
    text: &str,
    file_name: &str,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, ConfigError> {
    let overrides = env_overrides(env)?;
    build_from_text(text, file_name, PathBuf::from(file_name), overrides)
}

/// Applies `PGSLUICE_*` environment overrides to an existing configuration
/// (quick mode), then validates it again. [`Config::source`] is kept.
pub fn apply_env(
    cfg: Config,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, ConfigError> {
    let overrides = env_overrides(env)?;
    apply_overrides(cfg, overrides)
}

/// The process's `PGSLUICE_*` environment variables, for [`load_file`] /
/// [`apply_env`]. Unlike `std::env::vars()` this does not panic on
/// non-UTF-8 variables: unrelated ones are skipped, ours are an error.
pub fn env_vars() -> Result<Vec<(String, String)>, ConfigError> {
    let mut out = Vec::new();
    for (k, v) in std::env::vars_os() {
        let name = k.to_string_lossy();
        if !name.starts_with(ENV_PREFIX) {
            continue;
        }
        match (k.to_str(), v.into_string()) {
            (Some(k), Ok(v)) => out.push((k.to_owned(), v)),
            _ => {
                return Err(ConfigError::Env {
                    var: name.into_owned(),
                    message: "not valid UTF-8".to_owned(),
                })
            }
        }
    }
    Ok(out)
}

/// [`load_file_as`] with extra (command-line) overrides applied after the
/// environment.
pub(crate) fn load_file_with(
    path: &Path,
    format: Option<ConfigFormat>,
    env: impl IntoIterator<Item = (String, String)>,
    extra: Vec<Override>,
) -> Result<Config, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
        file: file.clone(),
        message: format!("cannot read the configuration file: {e}"),
    })?;
    let mut overrides = env_overrides(env)?;
    overrides.extend(extra);
    match format.unwrap_or_else(|| ConfigFormat::detect(path, &text)) {
        ConfigFormat::Toml => build_from_text(&text, &file, path.to_path_buf(), overrides),
        ConfigFormat::Ini => {
            let (cfg, locs) = pgbouncer::read(path, &text)?;
            finish_located(cfg, overrides, &file, &|key| {
                locs.find(key)
                    .map(|(loc, shown)| (loc.file, loc.line, shown))
            })
        }
    }
}

/// Finds (file, line, key as written) for a configuration key path.
pub(crate) type Locator<'a> = dyn Fn(&[String]) -> Option<(String, usize, String)> + 'a;

/// Applies overrides to a configuration read from a non-TOML file, then
/// validates it; `locate` gives (file, line, key as written) for a key path.
pub(crate) fn finish_located(
    mut cfg: Config,
    overrides: Vec<Override>,
    file: &str,
    locate: &Locator<'_>,
) -> Result<Config, ConfigError> {
    if !overrides.is_empty() {
        let source = cfg.source.take();
        let notices = std::mem::take(&mut cfg.notices);
        let extra = std::mem::take(&mut cfg.pgbouncer_extra);
        let base = to_table(&cfg);
        cfg = deserialize_with_overrides(&base, &overrides, &Located::none(file))?;
        cfg.source = source;
        cfg.notices = notices;
        cfg.pgbouncer_extra = extra;
    }
    load_hba(&mut cfg, &overrides, &|key, message| match locate(key) {
        Some((file, line, key)) => ConfigError::At {
            file,
            line,
            key,
            message,
        },
        None => Located::none(file).error(key, message),
    })?;
    let Err(Issue { keys, message }) = cfg.check() else {
        return Ok(cfg);
    };
    for key in &keys {
        if let Some(o) = overrides.iter().rev().find(|o| &o.path == key) {
            return Err(o.error(message));
        }
        if let Some((file, line, key)) = locate(key) {
            return Err(ConfigError::At {
                file,
                line,
                key,
                message,
            });
        }
    }
    if let Some(o) = keys
        .first()
        .and_then(|k| override_in_table(overrides.as_slice(), k))
    {
        return Err(o.error_at(&keys[0], message));
    }
    Err(ConfigError::At {
        file: file.to_owned(),
        line: 0,
        key: keys.first().map(|k| k.join(".")).unwrap_or_default(),
        message,
    })
}

/// [`super::hba::load_into`], blaming an override of `auth_hba_file` (or
/// `auth_ident_file`) for an unreadable file, else `at_key`.
fn load_hba(
    cfg: &mut Config,
    overrides: &[Override],
    at_key: &dyn Fn(&[String], String) -> ConfigError,
) -> Result<(), ConfigError> {
    super::hba::load_into(cfg, &|ident, m| {
        let name = if ident {
            "auth_ident_file"
        } else {
            "auth_hba_file"
        };
        let key = ["general".to_owned(), name.to_owned()];
        match overrides.iter().rev().find(|o| o.path == key) {
            Some(o) => o.error(m),
            None => at_key(&key, m),
        }
    })
}

/// Applies overrides (already collected) to a configuration and validates.
pub(crate) fn apply_overrides(
    cfg: Config,
    overrides: Vec<Override>,
) -> Result<Config, ConfigError> {
    let file = cfg
        .source
        .as_ref()
        .map_or_else(|| "<command line>".to_owned(), |p| p.display().to_string());
    let source = cfg.source.clone();
    let base = to_table(&cfg);
    let mut out = if overrides.is_empty() {
        cfg
    } else {
        let mut out = deserialize_with_overrides(&base, &overrides, &Located::none(&file))?;
        out.pgbouncer_extra.clone_from(&cfg.pgbouncer_extra);
        load_hba(&mut out, &overrides, &|key, m| {
            Located::none(&file).error(key, m)
        })?;
        out
    };
    out.source = source;
    check(&out, &overrides, &Located::none(&file))?;
    Ok(out)
}

/// The original text, to locate keys in.
struct Located<'a> {
    file: &'a str,
    scan: Option<Scan<'a>>,
}

impl<'a> Located<'a> {
    fn none(file: &'a str) -> Located<'a> {
        Located { file, scan: None }
    }

    /// An error about `path`: at its line if the text has it, line 0 if
    /// there is a text without it, [`ConfigError::Invalid`] with no text.
    fn error(&self, path: &[String], message: String) -> ConfigError {
        let key = path.join(".");
        match &self.scan {
            Some(scan) => ConfigError::At {
                file: self.file.to_owned(),
                line: scan.find(path).unwrap_or(0),
                key,
                message,
            },
            None => ConfigError::Invalid(format!("key `{key}`: {message}")),
        }
    }
}

fn build_from_text(
    text: &str,
    file: &str,
    path: PathBuf,
    overrides: Vec<Override>,
) -> Result<Config, ConfigError> {
    let scan = Scan::new(text);
    let base: Table = text
        .parse()
        .map_err(|e: toml::de::Error| de_error_at(&e, text, &scan, file, true))?;
    let mut cfg: Config =
        toml::from_str(text).map_err(|e| de_error_at(&e, text, &scan, file, false))?;
    let located = Located {
        file,
        scan: Some(scan),
    };
    if !overrides.is_empty() {
        cfg = deserialize_with_overrides(&base, &overrides, &located)?;
    }
    if let Some(auth_file) = cfg.general.auth_file.clone() {
        let resolved = super::ini::resolve_path(&path, &auth_file.display().to_string());
        super::userlist::merge_into(&mut cfg, &resolved).map_err(|e| match e {
            ConfigError::File { message, .. } => {
                located.error(&["general".to_owned(), "auth_file".to_owned()], message)
            }
            other => other,
        })?;
        cfg.general.auth_file = Some(resolved);
    }
    if let Some(hba_file) = &cfg.general.auth_hba_file {
        let resolved = super::ini::resolve_path(&path, &hba_file.display().to_string());
        cfg.general.auth_hba_file = Some(resolved);
    }
    if let Some(ident_file) = &cfg.general.auth_ident_file {
        let resolved = super::ini::resolve_path(&path, &ident_file.display().to_string());
        cfg.general.auth_ident_file = Some(resolved);
    }
    load_hba(&mut cfg, &overrides, &|key, m| located.error(key, m))?;
    cfg.source = Some(path);
    check(&cfg, &overrides, &located)?;
    Ok(cfg)
}

/// Runs the validation checks and blames an override, a line, or a key.
fn check(cfg: &Config, overrides: &[Override], located: &Located<'_>) -> Result<(), ConfigError> {
    let Err(Issue { keys, message }) = cfg.check() else {
        return Ok(());
    };
    for key in &keys {
        if let Some(o) = overrides.iter().rev().find(|o| &o.path == key) {
            return Err(o.error(message));
        }
        if let Some(line) = located.scan.as_ref().and_then(|s| s.find(key)) {
            return Err(ConfigError::At {
                file: located.file.to_owned(),
                line,
                key: key.join("."),
                message,
            });
        }
    }
    // A key missing from its table (`host` of a database): the table's line in the
    // file, else the variable or flag that created the table.
    let first = keys.first().map_or(&[][..], |k| k.as_slice());
    let table = first.split_last().map_or(&[][..], |(_, t)| t);
    if let Some(line) = located
        .scan
        .as_ref()
        .filter(|_| table.len() > 1)
        .and_then(|s| s.find(table))
    {
        return Err(ConfigError::At {
            file: located.file.to_owned(),
            line,
            key: first.join("."),
            message,
        });
    }
    if let Some(o) = override_in_table(overrides, first) {
        return Err(o.error_at(first, message));
    }
    Err(located.error(first, message))
}

/// The last override that sets a key of the table holding `key`
/// (`databases.app.port` for `databases.app.host`).
fn override_in_table<'o>(overrides: &'o [Override], key: &[String]) -> Option<&'o Override> {
    let (_, table) = key.split_last()?;
    if table.len() < 2 {
        return None;
    }
    overrides
        .iter()
        .rev()
        .find(|o| o.path.len() == key.len() && o.path.starts_with(table))
}

/// Extracts the name in "unknown field `x`" / "missing field `x`".
fn field_in_message<'m>(message: &'m str, prefix: &str) -> Option<&'m str> {
    let rest = message.split_once(prefix)?.1;
    rest.split_once('`').map(|(f, _)| f)
}

/// The line and key path a deserialization error is about.
fn error_location(
    e: &toml::de::Error,
    text: &str,
    scan: &Scan<'_>,
    syntax: bool,
) -> (usize, Vec<String>) {
    let Some(span) = e.span() else {
        let mut path = Vec::new();
        if let Some(f) = field_in_message(e.message(), "missing field `") {
            path.push(f.to_owned());
        }
        return (0, path);
    };
    let line = line_of_offset(text, refine_offset(e.message(), text, span.clone()));
    let mut path = if syntax {
        scan.syntax_key_at_line(line)
    } else {
        scan.key_at_line(line)
    };
    let msg = e.message();
    if let Some(f) = field_in_message(msg, "unknown field `") {
        if path.last().map(String::as_str) != Some(f) {
            path.push(f.to_owned());
        }
    } else if let Some(f) = field_in_message(msg, "missing field `") {
        if !scan.is_header(line) && path.len() > 1 && !text_is_inline_table(text, span) {
            path.pop();
        }
        path.push(f.to_owned());
    }
    (line, path)
}

/// For an error about a multi-line value (an array), the offset of the
/// element named in the message (``invalid listen address `x` ``), else the
/// start of the span.
fn refine_offset(message: &str, text: &str, span: std::ops::Range<usize>) -> usize {
    let start = span.start;
    let Some(value) = text.get(span) else {
        return start;
    };
    if !value.contains('\n') {
        return start;
    }
    let Some(token) = message.split('`').nth(1).filter(|t| !t.is_empty()) else {
        return start;
    };
    [format!("\"{token}\""), format!("'{token}'")]
        .iter()
        .find_map(|quoted| value.find(quoted.as_str()))
        .map_or(start, |pos| start + pos)
}

/// Whether a span covers an inline table (`{ ... }`).
fn text_is_inline_table(text: &str, span: std::ops::Range<usize>) -> bool {
    text.get(span)
        .is_some_and(|s| s.trim_start().starts_with('{'))
}

fn clean_message(e: &toml::de::Error) -> String {
    e.message().trim().to_owned()
}

fn de_error_at(
    e: &toml::de::Error,
    text: &str,
    scan: &Scan<'_>,
    file: &str,
    syntax: bool,
) -> ConfigError {
    let (line, path) = error_location(e, text, scan, syntax);
    let key = if path.is_empty() {
        "(top level)".to_owned()
    } else {
        path.join(".")
    };
    ConfigError::At {
        file: file.to_owned(),
        line,
        key,
        message: clean_message(e),
    }
}

/// Applies every override to `base` and deserializes, retrying literal
/// values as strings when their type is wrong. Errors blame an override.
fn deserialize_with_overrides(
    base: &Table,
    overrides: &[Override],
    located: &Located<'_>,
) -> Result<Config, ConfigError> {
    let mut overrides = overrides.to_vec();
    // Each retry turns one literal into a string, so this terminates.
    for _ in 0..=overrides.len() {
        let mut table = base.clone();
        for o in &overrides {
            set_path(&mut table, &o.path, o.value.clone()).map_err(|m| o.error(m))?;
        }
        let text = toml::to_string(&table)
            .map_err(|e| ConfigError::Invalid(format!("cannot apply overrides: {e}")))?;
        let e = match toml::from_str::<Config>(&text) {
            Ok(cfg) => return Ok(cfg),
            Err(e) => e,
        };
        let scan = Scan::new(&text);
        let (_, path) = error_location(&e, &text, &scan, false);
        let message = clean_message(&e);
        let Some(i) = overrides.iter().rposition(|o| o.path == path) else {
            // A missing key in a table created by overrides?
            let table_path = path.split_last().map_or(&[][..], |(_, t)| t);
            return Err(overrides
                .iter()
                .find(|o| o.path.split_last().map(|(_, t)| t) == Some(table_path))
                .map_or_else(
                    || located.error(&path, message.clone()),
                    |o| o.error_at(&path, message.clone()),
                ));
        };
        let o = &mut overrides[i];
        match o.raw.take() {
            Some(raw) if message.contains("invalid type") && !o.value.is_str() => {
                o.value = Value::String(raw);
            }
            _ => return Err(o.error(message)),
        }
    }
    Err(ConfigError::Invalid("cannot apply overrides".to_owned()))
}

/// Sets `path` in `table`, creating intermediate tables.
fn set_path(table: &mut Table, path: &[String], value: Value) -> Result<(), String> {
    let Some((last, parents)) = path.split_last() else {
        return Err("empty key".to_owned());
    };
    let mut t = table;
    for (i, p) in parents.iter().enumerate() {
        let entry = t
            .entry(p.clone())
            .or_insert_with(|| Value::Table(Table::new()));
        t = entry.as_table_mut().ok_or_else(|| {
            format!(
                "`{}` is not a table in the configuration",
                parents[..=i].join(".")
            )
        })?;
    }
    t.insert(last.clone(), value);
    Ok(())
}

/// Turns `PGSLUICE_*` variables into overrides (sorted by variable name, so
/// the result does not depend on the environment's order).
pub(crate) fn env_overrides(
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Vec<Override>, ConfigError> {
    let mut vars: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX))
        .collect();
    vars.sort();
    vars.into_iter()
        .map(|(var, raw)| {
            let path = env_path(&var).map_err(|message| ConfigError::Env {
                var: var.clone(),
                message,
            })?;
            let (value, raw) = match env_literal(&raw) {
                Some(v) => (v, Some(raw)),
                None => (Value::String(raw), None),
            };
            Ok(Override {
                path,
                value,
                raw,
                origin: Origin::Env(var),
            })
        })
        .collect()
}

/// The key path an environment variable names.
fn env_path(var: &str) -> Result<Vec<String>, String> {
    let rest = &var[ENV_PREFIX.len()..];
    for (prefix, table) in [("DATABASES__", "databases"), ("USERS__", "users")] {
        if let Some(r) = rest.strip_prefix(prefix) {
            return match r.rsplit_once("__") {
                Some((name, key)) if !name.is_empty() && !key.is_empty() => Ok(vec![
                    table.to_owned(),
                    name.to_owned(),
                    key.to_ascii_lowercase(),
                ]),
                _ => Err(format!(
                    "expected {ENV_PREFIX}{prefix}<NAME>__<KEY>, e.g. {ENV_PREFIX}{prefix}app__POOL_SIZE"
                )),
            };
        }
    }
    if rest.is_empty() || rest.contains("__") {
        return Err(format!(
            "expected {ENV_PREFIX}<KEY> for a [general] key, or \
             {ENV_PREFIX}DATABASES__<NAME>__<KEY> / {ENV_PREFIX}USERS__<NAME>__<KEY>"
        ));
    }
    Ok(vec!["general".to_owned(), rest.to_ascii_lowercase()])
}

/// The value of `raw` if it is a single TOML literal.
fn env_literal(raw: &str) -> Option<Value> {
    let mut t: Table = format!("v = {raw}").parse().ok()?;
    if t.len() != 1 {
        return None;
    }
    t.remove("v")
}
