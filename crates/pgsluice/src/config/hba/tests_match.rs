//! Tests of `auth_hba_file` rule matching, of reading the file and its `@file` lists,
//! and of loading `auth_type = hba` configurations.

use std::net::IpAddr;

use super::*;

fn rules(text: &str) -> HbaRules {
    let mut no_files = |_: &str, name: &str| Err(format!("no file {name}"));
    parse(text, "hba.conf", &mut no_files).unwrap_or_else(|e| panic!("{text:?}: {e}"))
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn tcp(addr: &str, tls: bool) -> Transport {
    Transport::Tcp {
        addr: ip(addr),
        tls,
    }
}

#[test]
fn matching_connection_types() {
    let r = rules(
        "local all all peer\n\
         hostssl all all all cert\n\
         hostnossl all all all md5\n",
    );
    let m = |t| r.find(t, "db", "u").map(|r| r.method);
    assert_eq!(m(Transport::Unix), Some(HbaMethod::Peer));
    assert_eq!(m(tcp("10.0.0.1", true)), Some(HbaMethod::Cert));
    assert_eq!(m(tcp("10.0.0.1", false)), Some(HbaMethod::Md5));
    let host = rules("host all all all trust");
    assert!(host.find(tcp("10.0.0.1", true), "d", "u").is_some());
    assert!(host.find(tcp("10.0.0.1", false), "d", "u").is_some());
    assert!(host.find(Transport::Unix, "d", "u").is_none());
    let local = rules("local all all trust");
    assert!(local.find(tcp("127.0.0.1", false), "d", "u").is_none());
}

#[test]
fn matching_addresses() {
    let r = rules(
        "host all all 10.1.0.0/16 reject\n\
         host all all 10.0.0.0 255.0.0.0 md5\n\
         host all all 2001:db8::/32 password\n\
         host all all ::1/128 trust\n\
         host all all 192.168.1.7/32 scram-sha-256\n",
    );
    let m = |a: &str| r.find(tcp(a, false), "db", "u").map(|r| r.line);
    assert_eq!(m("10.1.255.255"), Some(1));
    assert_eq!(m("10.2.0.1"), Some(2));
    assert_eq!(m("10.255.255.255"), Some(2));
    assert_eq!(m("11.0.0.1"), None);
    assert_eq!(m("2001:db8:ffff::1"), Some(3));
    assert_eq!(m("2001:db9::1"), None);
    assert_eq!(m("::1"), Some(4));
    assert_eq!(m("::2"), None);
    assert_eq!(m("192.168.1.7"), Some(5));
    assert_eq!(m("192.168.1.8"), None);
    // IPv4 rules match IPv4-mapped IPv6 clients (a dual-stack listener).
    assert_eq!(m("::ffff:10.1.0.9"), Some(1));
    // Host bits in the rule's address are ignored, as in PostgreSQL.
    let r = rules("host all all 10.1.2.3/8 trust");
    assert!(r.find(tcp("10.200.0.1", false), "d", "u").is_some());
    // /0 matches everything of its family only.
    let r = rules("host all all 0.0.0.0/0 trust");
    assert!(r.find(tcp("1.2.3.4", false), "d", "u").is_some());
    assert!(r.find(tcp("::2", false), "d", "u").is_none());
    let r = rules("host all all ::/0 trust");
    assert!(r.find(tcp("::2", false), "d", "u").is_some());
    assert!(r.find(tcp("1.2.3.4", false), "d", "u").is_none());
}

#[test]
fn matching_databases_and_users() {
    let r = rules(
        "local sameuser all trust\n\
         local app alice,bob md5\n\
         local replication all reject\n\
         local app,other all password\n\
         local all carol scram-sha-256\n",
    );
    let m = |db: &str, u: &str| r.find(Transport::Unix, db, u).map(|r| r.line);
    assert_eq!(m("alice", "alice"), Some(1));
    assert_eq!(m("app", "alice"), Some(2));
    assert_eq!(m("app", "bob"), Some(2));
    assert_eq!(m("app", "dave"), Some(4));
    assert_eq!(m("other", "alice"), Some(4));
    assert_eq!(m("third", "carol"), Some(5));
    assert_eq!(
        m("third", "dave"),
        None,
        "replication matches no ordinary connection"
    );
    // Names compare exactly.
    assert_eq!(m("APP", "dave"), None);
    assert_eq!(m("app", "Alice"), Some(4));
}

#[test]
fn first_match_wins() {
    let r = rules(
        "host all alice all reject\n\
         host all all all md5\n\
         host all alice all trust\n",
    );
    let m = |u: &str| r.find(tcp("127.0.0.1", false), "db", u).map(|r| r.method);
    assert_eq!(m("alice"), Some(HbaMethod::Reject));
    assert_eq!(m("bob"), Some(HbaMethod::Md5));
    assert!(rules("").find(Transport::Unix, "d", "u").is_none());
}

#[test]
fn load_reads_at_files_beside_the_hba_file() {
    let dir = std::env::temp_dir().join(format!("pgsluice-hba-test-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(dir.join("sub/users.txt"), "alice\n@more.txt\n").unwrap();
    std::fs::write(dir.join("sub/more.txt"), "bob").unwrap();
    std::fs::write(dir.join("hba.conf"), "local all @sub/users.txt trust\n").unwrap();
    let r = load(&dir.join("hba.conf"), None).unwrap();
    assert_eq!(
        r.rules[0].users,
        vec![
            UserMatch::Name("alice".into()),
            UserMatch::Name("bob".into())
        ]
    );
    std::fs::write(dir.join("hba.conf"), "local all @nope trust\n").unwrap();
    match load(&dir.join("hba.conf"), None) {
        Err(LoadError::Parse(e)) => {
            assert_eq!(e.line, 1);
            assert!(e.message.contains("@nope"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    assert!(
        matches!(load(&dir.join("missing.conf"), None), Err(LoadError::Read(m)) if m.contains("missing.conf"))
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Loading `auth_type = hba` through TOML and pgbouncer.ini configurations.
mod config_loading {
    use std::path::{Path, PathBuf};

    use crate::config::{load_file, AuthType, Config, ConfigError};

    /// Writes `files` into a fresh directory; returns the first file's path.
    fn write_files(test: &str, files: &[(&str, &str)]) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("pgsluice-hba-cfg-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, text) in files {
            std::fs::write(dir.join(name), text).unwrap();
        }
        dir.join(files[0].0)
    }

    fn load(p: &Path) -> Result<Config, ConfigError> {
        load_file(p, Vec::new())
    }

    fn env_load(p: &Path, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        load_file(
            p,
            env.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<Vec<_>>(),
        )
    }

    /// (file name without directory, line, key, message) of an `At` error.
    #[track_caller]
    fn at(r: Result<Config, ConfigError>) -> (String, usize, String, String) {
        match r {
            Err(ConfigError::At {
                file,
                line,
                key,
                message,
            }) => {
                let name = Path::new(&file)
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                (name, line, key, message)
            }
            other => panic!("expected a located error, got {other:?}"),
        }
    }

    const TOML: &str = "[general]\nauth_type = \"hba\"\nauth_hba_file = \"hba.conf\"\n\
                        [databases.app]\nhost = \"127.0.0.1\"\n";
    const INI: &str = "[databases]\napp = host=127.0.0.1\n[pgbouncer]\nlisten_addr = 127.0.0.1\n\
                       auth_type = hba\nauth_hba_file = hba.conf\n";

    #[test]
    fn toml_and_ini_read_the_rules_next_to_the_config() {
        for (name, text) in [("pgsluice.toml", TOML), ("pgbouncer.ini", INI)] {
            let p = write_files(
                &format!("ok-{name}"),
                &[
                    (name, text),
                    (
                        "hba.conf",
                        "local all all peer\nhost app all 10.0.0.0/8 md5\n",
                    ),
                ],
            );
            let c = load(&p).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(c.general.auth_type, AuthType::Hba);
            let hba_path = p.parent().unwrap().join("hba.conf");
            assert_eq!(c.general.auth_hba_file.as_deref(), Some(hba_path.as_path()));
            let rules = c.hba.as_ref().expect("rules loaded");
            assert_eq!(rules.rules.len(), 2, "{name}");
            assert_eq!(rules.file, hba_path.display().to_string());
            // The printed configuration names the file.
            assert!(crate::config::to_redacted_toml(&c).contains("auth_hba_file"));
        }
    }

    #[test]
    fn a_broken_file_names_its_file_line_and_field() {
        for (name, text) in [("pgsluice.toml", TOML), ("pgbouncer.ini", INI)] {
            let p = write_files(
                &format!("broken-{name}"),
                &[
                    (name, text),
                    (
                        "hba.conf",
                        "# rules\nlocal all all trust\nhost all all samenet md5\n",
                    ),
                ],
            );
            let (file, line, key, message) = at(load(&p));
            assert_eq!(
                (file.as_str(), line, key.as_str()),
                ("hba.conf", 3, "address"),
                "{name}"
            );
            assert!(message.contains("`samenet`"), "{message}");
            let e = load(&p).unwrap_err().to_string();
            assert!(e.contains("hba.conf:3:"), "{e}");
        }
    }

    #[test]
    fn missing_file_or_setting_is_an_error_at_the_key() {
        let p = write_files("missing-toml", &[("pgsluice.toml", TOML)]);
        let (file, line, key, message) = at(load(&p));
        assert_eq!(
            (file.as_str(), line, key.as_str()),
            ("pgsluice.toml", 3, "general.auth_hba_file")
        );
        assert!(
            message.contains("cannot read the auth_hba_file"),
            "{message}"
        );
        let p = write_files("missing-ini", &[("pgbouncer.ini", INI)]);
        let (file, line, key, _) = at(load(&p));
        assert_eq!(
            (file.as_str(), line, key.as_str()),
            ("pgbouncer.ini", 6, "pgbouncer.auth_hba_file")
        );
        // auth_type = hba without auth_hba_file.
        let p = write_files(
            "unset-toml",
            &[("pgsluice.toml", "[general]\nauth_type = \"hba\"\n")],
        );
        let (file, line, key, message) = at(load(&p));
        assert_eq!(
            (file.as_str(), line, key.as_str()),
            ("pgsluice.toml", 2, "general.auth_type")
        );
        assert!(message.contains("needs auth_hba_file"), "{message}");
        let p = write_files(
            "unset-ini",
            &[(
                "pgbouncer.ini",
                "[pgbouncer]\nlisten_addr = 127.0.0.1\nauth_type = hba\n",
            )],
        );
        let (_, line, key, _) = at(load(&p));
        assert_eq!((line, key.as_str()), (3, "pgbouncer.auth_type"));
    }

    #[test]
    fn env_overrides_and_other_auth_types() {
        // Set through the environment.
        let p = write_files(
            "env",
            &[
                ("pgsluice.toml", "[databases.app]\nhost = \"127.0.0.1\"\n"),
                ("hba.conf", "host all all all reject\n"),
            ],
        );
        let hba = p.parent().unwrap().join("hba.conf");
        let c = env_load(
            &p,
            &[
                ("PGSLUICE_AUTH_TYPE", "hba"),
                ("PGSLUICE_AUTH_HBA_FILE", hba.to_str().unwrap()),
            ],
        )
        .unwrap();
        assert_eq!(c.hba.as_ref().map(|r| r.rules.len()), Some(1));
        // The file is not read (nor needed to be valid) without auth_type = hba; a
        // warning says it is unused.
        let p = write_files(
            "unused",
            &[
                ("pgsluice.toml", "[general]\nauth_hba_file = \"hba.conf\"\n"),
                ("hba.conf", "not valid\n"),
            ],
        );
        let c = load(&p).unwrap();
        assert!(c.hba.is_none());
        assert!(
            c.warnings()
                .iter()
                .any(|w| w.contains("auth_hba_file") && w.contains("not used")),
            "{:?}",
            c.warnings()
        );
        // A cert rule without client certificate validation warns.
        let p = write_files(
            "cert-warn",
            &[
                ("pgsluice.toml", TOML),
                ("hba.conf", "hostssl all all all cert\n"),
            ],
        );
        let c = load(&p).unwrap();
        assert!(
            c.warnings()
                .iter()
                .any(|w| w.contains("hba.conf:1:") && w.contains("never succeeds")),
            "{:?}",
            c.warnings()
        );
    }
}
