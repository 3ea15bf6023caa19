//! Tests of `auth_ident_file` (user name maps): the parser and its errors, the matcher
//! with `map=` rules, and loading both files through TOML and pgbouncer.ini.

use super::*;

fn maps(text: &str) -> IdentMaps {
    parse_ident(text, "ident.conf").unwrap_or_else(|e| panic!("{text:?}: {e}"))
}

/// (line, field, message) of the error for `text`.
fn error(text: &str) -> (usize, &'static str, String) {
    let e = parse_ident(text, "ident.conf").expect_err(text);
    assert_eq!(e.file, "ident.conf");
    (e.line, e.field, e.message)
}

fn rules_with(hba: &str, ident: &str) -> HbaRules {
    let mut no_files = |_: &str, name: &str| Err(format!("no file {name}"));
    let mut r = parse(hba, "hba.conf", &mut no_files).unwrap_or_else(|e| panic!("{e}"));
    r.ident = Some(maps(ident));
    r
}

#[test]
fn lines_comments_quotes_and_all() {
    let m = maps(
        "# MAPNAME  SYSTEM-USERNAME       PG-USERNAME\n\
         certs      alice@example.com     app    # a comment\n\
         \n\
         certs      \"bob smith\"           all\n\
         certs      carol                 \"all\"\n\
         peers      postgres              \\\n\
                    app\n\
         quoted     \"/not/a/regex\"        \"+not_a_group\"\n",
    );
    let got: Vec<(usize, &str, &str, &IdentUser)> = m
        .lines
        .iter()
        .map(|l| (l.line, l.map.as_str(), l.system_user.as_str(), &l.pg_user))
        .collect();
    let name = |s: &str| IdentUser::Name(s.into());
    assert_eq!(
        got,
        vec![
            (2, "certs", "alice@example.com", &name("app")),
            (4, "certs", "bob smith", &IdentUser::All),
            (5, "certs", "carol", &name("all")),
            (6, "peers", "postgres", &name("app")),
            (8, "quoted", "/not/a/regex", &name("+not_a_group")),
        ]
    );
    assert!(maps("").lines.is_empty());
}

#[test]
fn permits_exact_names_and_all() {
    let m = maps(
        "certs alice@example.com app\n\
         certs alice@example.com report\n\
         certs admin all\n\
         other bob app\n",
    );
    assert!(m.permits("certs", "alice@example.com", "app"));
    assert!(m.permits("certs", "alice@example.com", "report"));
    assert!(!m.permits("certs", "alice@example.com", "postgres"));
    assert!(m.permits("certs", "admin", "anyone"));
    // Names are compared exactly; maps are separate.
    assert!(!m.permits("certs", "Alice@example.com", "app"));
    assert!(!m.permits("certs", "bob", "app"));
    assert!(m.permits("other", "bob", "app"));
    assert!(!m.permits("nosuch", "bob", "app"));
    assert!(m.defines("other") && !m.defines("nosuch"));
}

#[test]
fn rules_use_their_map_or_require_equal_names() {
    let r = rules_with(
        "local all all peer map=peers\n\
         hostssl all all all cert map=certs\n\
         hostssl all all all cert\n\
         local all all peer map=missing\n",
        "peers postgres app\ncerts alice app\n",
    );
    let [peer, cert, plain_cert, missing] = &r.rules[..] else {
        panic!("{:?}", r.rules)
    };
    assert_eq!(peer.map.as_deref(), Some("peers"));
    assert!(r.permits(peer, "postgres", "app"));
    // With a map, the same name is not enough: PostgreSQL's rule.
    assert!(!r.permits(peer, "app", "app"));
    assert!(r.permits(cert, "alice", "app"));
    assert!(!r.permits(cert, "alice", "postgres"));
    assert!(r.permits(plain_cert, "app", "app"));
    assert!(!r.permits(plain_cert, "alice", "app"));
    assert!(!r.permits(missing, "postgres", "app"));
    assert_eq!(r.undefined_maps(), vec![(4, "missing")]);
    // No auth_ident_file at all: every map is undefined and permits nothing.
    let mut none = r.clone();
    none.ident = None;
    assert!(!none.permits(peer, "postgres", "app"));
    assert_eq!(none.undefined_maps().len(), 3);
}

#[test]
fn errors_name_line_field_and_token() {
    let cases: &[(&str, usize, &str, &str)] = &[
        ("certs alice", 1, "database user", "end of line"),
        ("certs", 1, "system user", "end of line"),
        ("\ncerts alice app extra", 2, "line", "`extra`"),
        ("certs alice,bob app", 1, "system user", "a list"),
        ("certs alice app,report", 1, "database user", "a list"),
        ("a,b alice app", 1, "map", "a list"),
        (
            "certs /^(.*)@example\\.com$ \\1",
            1,
            "system user",
            "regular expressions",
        ),
        ("certs alice +admins", 1, "database user", "+admins"),
        (
            "certs alice /^app",
            1,
            "database user",
            "regular expressions",
        ),
        ("include other.conf", 1, "map", "`include`"),
        ("include_dir conf.d", 1, "map", "`include_dir`"),
        ("certs \"alice app", 1, "line", "unterminated"),
    ];
    for (text, line, field, needle) in cases {
        let (l, f, m) = error(text);
        assert_eq!((l, f), (*line, *field), "{text:?}: {m}");
        assert!(m.contains(needle), "{text:?}: {m:?} lacks {needle:?}");
    }
    // A map named `include` with three fields is a map line.
    assert_eq!(maps("include alice app").lines[0].map, "include");
}

#[test]
fn map_option_parsing() {
    let mut no_files = |_: &str, name: &str| Err(format!("no file {name}"));
    let mut p = |t: &str| parse(t, "hba.conf", &mut no_files);
    let r = p("hostssl all all 10.0.0.0/8 cert map=\"my map\"").unwrap();
    assert_eq!(r.rules[0].map.as_deref(), Some("my map"));
    assert_eq!(
        p("local all all peer").unwrap().rules[0].map,
        None,
        "no option, no map"
    );
    for (text, needle) in [
        (
            "local all all md5 map=x",
            "only valid for the cert and peer",
        ),
        (
            "host all all all trust map=x",
            "only valid for the cert and peer",
        ),
        ("local all all peer map=", "map=NAME"),
        ("local all all peer map=a,b", "map=NAME"),
        ("local all all peer map=x ident_file=y", "`ident_file`"),
    ] {
        let e = p(text).expect_err(text);
        assert_eq!((e.line, e.field), (1, "option"), "{text}: {e}");
        assert!(e.message.contains(needle), "{text}: {e}");
    }
}

/// Loading `auth_ident_file` with the HBA file, through both configuration formats.
mod config_loading {
    use std::path::{Path, PathBuf};

    use crate::config::{load_file, ConfigError};

    fn write_files(test: &str, files: &[(&str, &str)]) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("pgsluice-ident-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, text) in files {
            std::fs::write(dir.join(name), text).unwrap();
        }
        dir.join(files[0].0)
    }

    const TOML: &str = "[general]\nauth_type = \"hba\"\nauth_hba_file = \"hba.conf\"\n\
                        auth_ident_file = \"ident.conf\"\n\
                        [databases.app]\nhost = \"127.0.0.1\"\n";
    const INI: &str = "[databases]\napp = host=127.0.0.1\n[pgbouncer]\nlisten_addr = 127.0.0.1\n\
                       auth_type = hba\nauth_hba_file = hba.conf\nauth_ident_file = ident.conf\n";

    #[test]
    fn both_formats_read_the_maps_next_to_the_config() {
        for (name, text) in [("pgsluice.toml", TOML), ("pgbouncer.ini", INI)] {
            let p = write_files(
                &format!("ok-{name}"),
                &[
                    (name, text),
                    ("hba.conf", "local all all peer map=m\n"),
                    ("ident.conf", "m postgres app\n"),
                ],
            );
            let c = load_file(&p, Vec::new()).unwrap_or_else(|e| panic!("{name}: {e}"));
            let ident_path = p.parent().unwrap().join("ident.conf");
            assert_eq!(
                c.general.auth_ident_file.as_deref(),
                Some(ident_path.as_path())
            );
            let hba = c.hba.as_ref().unwrap();
            let ident = hba.ident.as_ref().expect("maps loaded");
            assert_eq!(ident.file, ident_path.display().to_string());
            assert!(hba.permits(&hba.rules[0], "postgres", "app"));
            assert!(
                !c.warnings().iter().any(|w| w.contains("map=")),
                "{:?}",
                c.warnings()
            );
            assert!(crate::config::to_redacted_toml(&c).contains("auth_ident_file"));
        }
    }

    #[test]
    fn errors_name_the_ident_file_and_line_or_the_key() {
        for (name, text, key_line) in [("pgsluice.toml", TOML, 4), ("pgbouncer.ini", INI, 7)] {
            let p = write_files(
                &format!("broken-{name}"),
                &[
                    (name, text),
                    ("hba.conf", "local all all peer map=m\n"),
                    ("ident.conf", "# maps\nm postgres +group\n"),
                ],
            );
            match load_file(&p, Vec::new()) {
                Err(ConfigError::At {
                    file, line, key, ..
                }) => {
                    assert!(file.ends_with("ident.conf"), "{file}");
                    assert_eq!((line, key.as_str()), (2, "database user"));
                }
                other => panic!("{name}: {other:?}"),
            }
            std::fs::remove_file(p.parent().unwrap().join("ident.conf")).unwrap();
            match load_file(&p, Vec::new()) {
                Err(ConfigError::At {
                    file,
                    line,
                    key,
                    message,
                }) => {
                    assert_eq!(Path::new(&file).file_name().unwrap(), name);
                    assert_eq!(line, key_line, "{name}");
                    assert!(key.ends_with("auth_ident_file"), "{key}");
                    assert!(message.contains("cannot read the auth_ident_file"));
                }
                other => panic!("{name}: {other:?}"),
            }
        }
    }

    #[test]
    fn undefined_maps_and_unused_file_warn() {
        let p = write_files(
            "undefined",
            &[
                (
                    "pgsluice.toml",
                    "[general]\nauth_type = \"hba\"\nauth_hba_file = \"hba.conf\"\n\
                     [databases.app]\nhost = \"127.0.0.1\"\n",
                ),
                (
                    "hba.conf",
                    "local all all trust\nlocal all all peer map=m\n",
                ),
            ],
        );
        let c = load_file(&p, Vec::new()).unwrap();
        assert!(
            c.warnings()
                .iter()
                .any(|w| w.contains("hba.conf:2: map=m") && w.contains("does not define")),
            "{:?}",
            c.warnings()
        );
        let p = write_files(
            "unused",
            &[
                (
                    "pgsluice.toml",
                    "[general]\nauth_ident_file = \"ident.conf\"\n\
                     [databases.app]\nhost = \"127.0.0.1\"\n",
                ),
                ("ident.conf", "not a valid line at all\n"),
            ],
        );
        let c = load_file(&p, Vec::new()).unwrap();
        assert!(
            c.warnings()
                .iter()
                .any(|w| w.contains("auth_ident_file") && w.contains("not used")),
            "{:?}",
            c.warnings()
        );
    }
}
