//! Telling pgsluice's TOML format from PgBouncer's ini format.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use super::InvalidValue;

/// The format of a configuration file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigFormat {
    /// pgsluice's own TOML format (`[general]`, `[databases.<name>]`, `[users.<name>]`).
    Toml,
    /// PgBouncer's pgbouncer.ini format (`[pgbouncer]`, `[databases]`, `[users]`).
    Ini,
}

impl ConfigFormat {
    /// The spelling used by `--format`.
    pub fn as_str(self) -> &'static str {
        match self {
            ConfigFormat::Toml => "toml",
            ConfigFormat::Ini => "ini",
        }
    }

    /// Guesses the format of a file: by extension (`.ini`, `.toml`), else by
    /// content. A file is ini when it has a `[pgbouncer]` or `[peers]` section,
    /// a `%include` line or `;` comments, or when it has a `[databases]` or
    /// `[users]` section and is not valid TOML; otherwise it is TOML.
    pub fn detect(path: &Path, text: &str) -> ConfigFormat {
        match path.extension().and_then(|e| e.to_str()) {
            Some(e) if e.eq_ignore_ascii_case("ini") => return ConfigFormat::Ini,
            Some(e) if e.eq_ignore_ascii_case("toml") => return ConfigFormat::Toml,
            _ => {}
        }
        let mut ini_section = false;
        for line in text.lines().map(str::trim) {
            let lower = line.to_ascii_lowercase();
            if line.starts_with(';') || lower.starts_with("%include") {
                return ConfigFormat::Ini;
            }
            match lower.replace(' ', "").as_str() {
                "[pgbouncer]" | "[peers]" => return ConfigFormat::Ini,
                "[databases]" | "[users]" => ini_section = true,
                _ => {}
            }
        }
        if ini_section && text.parse::<toml::Table>().is_err() {
            ConfigFormat::Ini
        } else {
            ConfigFormat::Toml
        }
    }
}

impl fmt::Display for ConfigFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ConfigFormat {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "toml" => Ok(ConfigFormat::Toml),
            "ini" | "pgbouncer" => Ok(ConfigFormat::Ini),
            _ => Err(InvalidValue(format!(
                "invalid configuration format `{s}`: expected `toml` or `ini`"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detection() {
        let d = |name: &str, text: &str| ConfigFormat::detect(Path::new(name), text);
        assert_eq!(d("a.ini", "[general]\n"), ConfigFormat::Ini);
        assert_eq!(d("a.toml", "[pgbouncer]\n"), ConfigFormat::Toml);
        assert_eq!(
            d("a.conf", "[pgbouncer]\nlisten_port = 6432\n"),
            ConfigFormat::Ini
        );
        assert_eq!(d("a", ";; c\n[databases]\n"), ConfigFormat::Ini);
        assert_eq!(d("a", "%include x.ini\n"), ConfigFormat::Ini);
        assert_eq!(d("a", "[databases]\napp = host=x\n"), ConfigFormat::Ini);
        assert_eq!(
            d("a", "[databases]\napp = { host = \"x\" }\n"),
            ConfigFormat::Toml
        );
        assert_eq!(
            d("a.conf", "[general]\npool_mode = \"session\"\n"),
            ConfigFormat::Toml
        );
        assert_eq!(d("a", ""), ConfigFormat::Toml);
    }
}
