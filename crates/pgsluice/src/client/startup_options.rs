//! The `options` startup parameter (`PGOPTIONS='-c DateStyle=German'`): split as
//! PostgreSQL splits it (`pg_split_opts`: words at unescaped white space, a backslash
//! takes the next character literally) and read as the backend reads its switches
//! (`-c name=value`, `-cname=value`, `--name=value`; dashes in a name become
//! underscores). Other backend switches (`-B`, `-e`, `-F`...) are not supported, as in
//! PgBouncer: they tune the server process, not a pooled session.

use pgsluice_protocol::SqlState;

/// Why an options string was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct OptionsError {
    /// The SQLSTATE to send.
    pub code: SqlState,
    /// The message, in PostgreSQL's or PgBouncer's words.
    pub message: String,
}

fn syntax(message: String) -> OptionsError {
    OptionsError {
        code: SqlState::SYNTAX_ERROR,
        message,
    }
}

/// The `(name, value)` settings an options string asks for, in order.
pub(super) fn settings(options: &str) -> Result<Vec<(String, String)>, OptionsError> {
    let words = split(options);
    let mut out = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let word = &words[i];
        i += 1;
        let (switch, arg) = if let Some(long) = word.strip_prefix("--") {
            if long.is_empty() {
                // getopt's end of switches: anything after it is an argument the
                // backend does not take.
                return match words.get(i) {
                    Some(w) => Err(invalid(w)),
                    None => Ok(out),
                };
            }
            ("--", long.to_owned())
        } else if let Some(rest) = word.strip_prefix("-c") {
            if rest.is_empty() {
                let Some(next) = words.get(i) else {
                    return Err(invalid(word));
                };
                i += 1;
                ("-c ", next.clone())
            } else {
                ("-c ", rest.to_owned())
            }
        } else if word.starts_with('-') {
            return Err(OptionsError {
                code: SqlState::PROTOCOL_VIOLATION,
                message: "unsupported options startup parameter: only '-c config=val' and '--config=val' are allowed".into(),
            });
        } else {
            return Err(invalid(word));
        };
        let Some((name, value)) = arg.split_once('=') else {
            return Err(syntax(format!("{switch}{arg} requires a value")));
        };
        out.push((name.replace('-', "_"), value.to_owned()));
    }
    Ok(out)
}

fn invalid(word: &str) -> OptionsError {
    syntax(format!(
        "invalid command-line argument for server process: {word}"
    ))
}

/// Splits at white space not escaped by a backslash; a backslash takes the next
/// character as it is (PostgreSQL's `pg_split_opts`).
fn split(options: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut chars = options.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_ascii_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return words;
        }
        let mut word = String::new();
        while let Some(c) = chars.next_if(|c| !c.is_ascii_whitespace()) {
            if c == '\\' {
                if let Some(escaped) = chars.next() {
                    word.push(escaped);
                }
            } else {
                word.push(c);
            }
        }
        words.push(word);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(options: &str) -> Vec<(String, String)> {
        settings(options).unwrap()
    }

    fn pair(n: &str, v: &str) -> (String, String) {
        (n.into(), v.into())
    }

    #[test]
    fn reads_settings_as_postgres_does() {
        assert_eq!(ok("-c DateStyle=German"), vec![pair("DateStyle", "German")]);
        assert_eq!(
            ok("  -cTimeZone=UTC --application-name=my\\ app\t-c a.b=x=y "),
            vec![
                pair("TimeZone", "UTC"),
                pair("application_name", "my app"),
                pair("a.b", "x=y")
            ]
        );
        assert_eq!(
            ok("-c search_path=a\\,\\ b\\\\c"),
            vec![pair("search_path", "a, b\\c")]
        );
        assert_eq!(ok("-c x="), vec![pair("x", "")]);
        assert_eq!(ok(""), vec![]);
        assert_eq!(ok("   "), vec![]);
        assert_eq!(ok("-c a=1 --"), vec![pair("a", "1")]);
        // A trailing backslash escapes nothing.
        assert_eq!(ok("-c a=1\\"), vec![pair("a", "1")]);
    }

    #[test]
    fn refuses_what_postgres_or_pgbouncer_refuse() {
        let err = |o: &str| settings(o).unwrap_err();
        assert_eq!(err("-c DateStyle").message, "-c DateStyle requires a value");
        assert_eq!(err("-c DateStyle").code, SqlState::SYNTAX_ERROR);
        assert_eq!(err("--geqo").message, "--geqo requires a value");
        assert_eq!(
            err("-c").message,
            "invalid command-line argument for server process: -c"
        );
        assert_eq!(
            err("DateStyle=ISO").message,
            "invalid command-line argument for server process: DateStyle=ISO"
        );
        assert_eq!(
            err("-- extra").message,
            "invalid command-line argument for server process: extra"
        );
        let e = err("-e");
        assert_eq!(e.code, SqlState::PROTOCOL_VIOLATION);
        assert!(e
            .message
            .starts_with("unsupported options startup parameter"));
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,60}") {
            let _ = settings(&s);
        }
    }
}
