//! Tests of the `auth_hba_file` parser: every field form and every error, and that
//! no input makes it panic.

use std::collections::HashMap;
use std::net::IpAddr;

use super::*;

/// Parses with `@file` lists taken from `files`.
fn parse_with(text: &str, files: &[(&str, &str)]) -> Result<HbaRules, HbaError> {
    let files: HashMap<String, String> = files
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let mut read = |_including: &str, name: &str| {
        files
            .get(name)
            .map(|t| (name.to_owned(), t.clone()))
            .ok_or_else(|| format!("cannot read `@{name}`: no such file"))
    };
    parse(text, "hba.conf", &mut read)
}

fn rules(text: &str) -> HbaRules {
    parse_with(text, &[]).unwrap_or_else(|e| panic!("{text:?}: {e}"))
}

fn one(text: &str) -> HbaRule {
    let r = rules(text);
    assert_eq!(r.rules.len(), 1, "{text:?}");
    r.rules[0].clone()
}

/// The error for `text`: (line, field, message).
fn error(text: &str) -> (usize, &'static str, String) {
    let e = parse_with(text, &[]).expect_err(text);
    assert_eq!(e.file, "hba.conf");
    (e.line, e.field, e.message)
}

fn assert_error(text: &str, line: usize, field: &str, needle: &str) {
    let (l, f, m) = error(text);
    assert_eq!((l, f), (line, field), "{text:?}: {m}");
    assert!(m.contains(needle), "{text:?}: {m:?} lacks {needle:?}");
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

fn names(list: &[&str]) -> Vec<DbMatch> {
    list.iter()
        .map(|n| DbMatch::Name((*n).to_owned()))
        .collect()
}
#[test]
fn record_types_and_methods() {
    let r = rules(
        "local all all peer\n\
         host all all all trust\n\
         hostssl all all all cert\n\
         hostnossl all all all reject\n\
         host all all all md5\n\
         host all all all password\n\
         host all all all scram-sha-256\n",
    );
    let got: Vec<(ConnType, HbaMethod)> = r.rules.iter().map(|r| (r.conn, r.method)).collect();
    assert_eq!(
        got,
        vec![
            (ConnType::Local, HbaMethod::Peer),
            (ConnType::Host, HbaMethod::Trust),
            (ConnType::HostSsl, HbaMethod::Cert),
            (ConnType::HostNoSsl, HbaMethod::Reject),
            (ConnType::Host, HbaMethod::Md5),
            (ConnType::Host, HbaMethod::Password),
            (ConnType::Host, HbaMethod::ScramSha256),
        ]
    );
    assert_eq!(r.rules[0].address, AddrMatch::All);
    assert_eq!(
        r.rules.iter().map(|r| r.line).collect::<Vec<_>>(),
        (1..=7).collect::<Vec<_>>()
    );
    assert_eq!(r.file, "hba.conf");
}

#[test]
fn comments_blank_lines_and_continuations() {
    let r = rules(
        "# a comment\n\n   \t\n\
         local all all trust # trailing comment\n\
         host app,\\\n  other admin \\\n 10.0.0.0/8 md5\r\n\
         local all all trust#comment right after\\ \n",
    );
    assert_eq!(r.rules.len(), 3);
    assert_eq!(r.rules[0].line, 4);
    assert_eq!(
        r.rules[1].line, 5,
        "a continued rule has its first line's number"
    );
    assert_eq!(r.rules[1].databases, names(&["app", "other"]));
    assert_eq!(r.rules[2].line, 8);
    // The line numbers after a continuation stay right.
    assert_error("host all all all \\\n md5\nbogus", 3, "type", "bogus");
    // A continuation on the last line.
    assert_eq!(one("local all all trust\\").method, HbaMethod::Trust);
}

#[test]
fn database_field_forms() {
    let r = one("local all all trust");
    assert_eq!(r.databases, vec![DbMatch::All]);
    let r = one("local sameuser,replication,app all trust");
    assert_eq!(
        r.databases,
        vec![
            DbMatch::SameUser,
            DbMatch::Replication,
            DbMatch::Name("app".into())
        ]
    );
    // Spaces after commas, quoted names (quoted keywords are names), case kept.
    let r = one(r#"local a, "my db", "all",ALL,"x"y"z w" all trust"#);
    assert_eq!(r.databases, names(&["a", "my db", "all", "ALL", "xyz w"]));
    // Blanks before a comma continue the list, as PgBouncer reads it.
    let r = one("host  db1 , db2 ,db3  user1 ,  user2  127.0.0.1/32  md5");
    assert_eq!(r.databases, names(&["db1", "db2", "db3"]));
    assert_eq!(
        r.users,
        vec![
            UserMatch::Name("user1".into()),
            UserMatch::Name("user2".into())
        ]
    );
    // A quoted comma and hash are part of the name.
    let r = one(r#"local "a,b#c" all trust"#);
    assert_eq!(r.databases, names(&["a,b#c"]));
    // An empty quoted name is a name that matches nothing.
    assert_eq!(one(r#"local "" all trust"#).databases, names(&[""]));
}

#[test]
fn user_field_forms() {
    assert_eq!(one("local all all trust").users, vec![UserMatch::All]);
    assert_eq!(
        one(r#"local all alice,"bob smith", "all" trust"#).users,
        vec![
            UserMatch::Name("alice".into()),
            UserMatch::Name("bob smith".into()),
            UserMatch::Name("all".into())
        ]
    );
    // A quoted + is a name.
    assert_eq!(
        one(r#"local all "+admins" trust"#).users,
        vec![UserMatch::Name("+admins".into())]
    );
}

#[test]
fn at_file_lists() {
    let files = [
        ("dbs", "app, other # comment\n\"quoted db\"\n\n@more\n"),
        ("more", "third"),
        ("users", "alice\nbob\nall\n"),
        ("loop", "@loop"),
        ("bad", "ok\n+group\n"),
        ("unterminated", "\n\"open"),
    ];
    let r = parse_with("local @dbs,solo @users trust", &files).unwrap();
    assert_eq!(
        r.rules[0].databases,
        names(&["app", "other", "quoted db", "third", "solo"])
    );
    assert_eq!(
        r.rules[0].users,
        vec![
            UserMatch::Name("alice".into()),
            UserMatch::Name("bob".into()),
            UserMatch::All
        ]
    );
    // A quoted @ is a name.
    assert_eq!(one(r#"local "@dbs" all trust"#).databases, names(&["@dbs"]));
    // Errors: missing file (on the including line), loops, errors inside a list (its
    // own file and line).
    let e = parse_with("\nlocal @missing all trust", &files).unwrap_err();
    assert_eq!(
        (e.file.as_str(), e.line, e.field),
        ("hba.conf", 2, "database")
    );
    assert!(e.message.contains("@missing"), "{}", e.message);
    let e = parse_with("local all @loop trust", &files).unwrap_err();
    assert_eq!((e.line, e.field), (1, "user"));
    assert!(e.message.contains("nested"), "{}", e.message);
    let e = parse_with("local all @bad trust", &files).unwrap_err();
    assert_eq!((e.file.as_str(), e.line, e.field), ("bad", 2, "user"));
    assert!(e.message.contains("+group"), "{}", e.message);
    let e = parse_with("local @unterminated all trust", &files).unwrap_err();
    assert_eq!((e.file.as_str(), e.line), ("unterminated", 2));
    assert_error("local @ all trust", 1, "database", "file name");
}

#[test]
fn address_forms() {
    let net = |a: &str, m: &str| AddrMatch::Net {
        addr: ip(a),
        mask: ip(m),
    };
    assert_eq!(one("host all all all md5").address, AddrMatch::All);
    assert_eq!(
        one("host all all 10.1.0.0/16 md5").address,
        net("10.1.0.0", "255.255.0.0")
    );
    assert_eq!(
        one("host all all 10.1.2.3/32 md5").address,
        net("10.1.2.3", "255.255.255.255")
    );
    assert_eq!(
        one("host all all 0.0.0.0/0 md5").address,
        net("0.0.0.0", "0.0.0.0")
    );
    assert_eq!(
        one("host all all 10.1.0.0 255.255.0.0 md5").address,
        net("10.1.0.0", "255.255.0.0")
    );
    assert_eq!(
        one("host all all fe80::/10 md5").address,
        net("fe80::", "ffc0::")
    );
    assert_eq!(
        one("host all all ::1/128 md5").address,
        net("::1", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")
    );
    assert_eq!(one("host all all ::/0 md5").address, net("::", "::"));
    assert_eq!(
        one("host all all 2001:db8:: ffff:ffff:: md5").address,
        net("2001:db8::", "ffff:ffff::")
    );
}

#[test]
fn every_error() {
    let cases: &[(&str, usize, &str, &str)] = &[
        ("bogus all all trust", 1, "type", "`bogus`"),
        (
            "\"local\" all all trust",
            1,
            "type",
            "invalid connection type",
        ),
        (
            "hostgssenc all all all trust",
            1,
            "type",
            "`hostgssenc` is not supported",
        ),
        ("hostnogssenc all all all trust", 1, "type", "not supported"),
        ("include other.conf", 1, "type", "`include` directives"),
        ("include_dir conf.d", 1, "type", "`include_dir`"),
        (
            "local,host all all trust",
            1,
            "type",
            "a list (`local,host`)",
        ),
        (
            "local",
            1,
            "database",
            "end of line before the database field",
        ),
        ("local all", 1, "user", "end of line before the user field"),
        (
            "local all all",
            1,
            "method",
            "end of line before the method field",
        ),
        (
            "host all all",
            1,
            "address",
            "end of line before the address field",
        ),
        ("host all all all", 1, "method", "end of line"),
        (
            "local samerole all trust",
            1,
            "database",
            "`samerole` is not supported",
        ),
        ("local samegroup all trust", 1, "database", "`samegroup`"),
        ("local /^db all trust", 1, "database", "regular expressions"),
        ("local all /^u trust", 1, "user", "regular expressions"),
        (
            "local all +admins trust",
            1,
            "user",
            "`+admins`: group membership",
        ),
        (
            "host all all samehost trust",
            1,
            "address",
            "`samehost` is not supported",
        ),
        (
            "host all all samenet trust",
            1,
            "address",
            "`samenet` is not supported",
        ),
        (
            "host all all db.example.com trust",
            1,
            "address",
            "`db.example.com` is not an IP address",
        ),
        (
            "host all all .example.com trust",
            1,
            "address",
            "host names",
        ),
        (
            "host all all 10.0.0.0/33 trust",
            1,
            "address",
            "invalid CIDR mask in address `10.0.0.0/33`",
        ),
        (
            "host all all ::/129 trust",
            1,
            "address",
            "invalid CIDR mask",
        ),
        (
            "host all all 10.0.0.0/+8 trust",
            1,
            "address",
            "invalid CIDR mask",
        ),
        (
            "host all all 10.0.0.0/ trust",
            1,
            "address",
            "invalid CIDR mask",
        ),
        (
            "host all all 10.0.0/8 trust",
            1,
            "address",
            "invalid IP address `10.0.0`",
        ),
        (
            "host all all 10.0.0.0,10.1.0.0 trust",
            1,
            "address",
            "a list",
        ),
        ("host all all 10.0.0.0", 1, "mask", "expected a netmask"),
        (
            "host all all 10.0.0.0 trust",
            1,
            "mask",
            "invalid netmask `trust`",
        ),
        (
            "host all all 10.0.0.0 ffff:: trust",
            1,
            "mask",
            "not of the same family",
        ),
        (
            "host all all 10.0.0.0 255.0.0.0",
            1,
            "method",
            "end of line before the method field",
        ),
        (
            "local all all ident",
            1,
            "method",
            "`ident` is not supported",
        ),
        ("local all all pam", 1, "method", "`pam` is not supported"),
        ("host all all all ldap", 1, "method", "not supported"),
        ("host all all all gss", 1, "method", "not supported"),
        ("host all all all any", 1, "method", "not supported"),
        ("host all all all plain", 1, "method", "not supported"),
        (
            "host all all all sha1",
            1,
            "method",
            "invalid authentication method `sha1`",
        ),
        (
            "host all all all \"trust\"",
            1,
            "method",
            "invalid authentication method",
        ),
        ("host all all all trust,md5", 1, "method", "a list"),
        (
            "host all all all peer",
            1,
            "method",
            "only supported on local",
        ),
        (
            "hostssl all all all peer",
            1,
            "method",
            "only supported on local",
        ),
        (
            "host all all all cert",
            1,
            "method",
            "only supported on hostssl",
        ),
        (
            "hostnossl all all all cert",
            1,
            "method",
            "only supported on hostssl",
        ),
        (
            "local all all cert",
            1,
            "method",
            "only supported on hostssl",
        ),
        (
            "local all all md5 map=omicron",
            1,
            "option",
            "only valid for the cert and peer methods",
        ),
        (
            "hostssl all all all md5 clientcert=verify-full",
            1,
            "option",
            "`clientcert`",
        ),
        ("local all all trust extra", 1, "option", "name=value"),
        (
            "local \"all all trust",
            1,
            "line",
            "unterminated quoted string",
        ),
        ("local a,,b all trust", 1, "line", "empty entry"),
        ("local ,a all trust", 1, "type", "a list"),
        (",local all all trust", 1, "line", "empty entry"),
        ("local a, all trust", 1, "method", "end of line"),
        ("local all a,", 1, "line", "ends with a comma"),
        ("local all all trust\n\nbad line here", 3, "type", "`bad`"),
    ];
    for (text, line, field, needle) in cases {
        assert_error(text, *line, field, needle);
    }
}

#[test]
fn errors_name_the_file() {
    let e = parse_with("bogus", &[]).unwrap_err();
    assert_eq!(e.to_string(), format!("hba.conf:1: type: {}", e.message));
}

mod never_panics {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_text(text in "\\PC{0,200}") {
            let _ = parse_with(&text, &[("f", "a,b\n@f")]);
        }

        #[test]
        fn hba_like_text(
            words in proptest::collection::vec(
                prop_oneof![
                    Just("local".to_owned()), Just("host".to_owned()), Just("hostssl".to_owned()),
                    Just("all".to_owned()), Just("@f".to_owned()), Just("\"".to_owned()),
                    Just(",".to_owned()), Just("#".to_owned()), Just("\\\n".to_owned()),
                    Just("\n".to_owned()), Just("10.0.0.0/8".to_owned()), Just("::1".to_owned()),
                    Just("255.0.0.0".to_owned()), Just("md5".to_owned()), Just("peer".to_owned()),
                    Just("map=x".to_owned()), Just("/".to_owned()), "[a-z0-9:./+@=\"]{0,12}",
                ],
                0..24,
            ),
            seps in proptest::collection::vec(prop_oneof![Just(" "), Just(""), Just("\t"), Just(",")], 24),
        ) {
            let mut text = String::new();
            for (w, s) in words.iter().zip(&seps) {
                text.push_str(w);
                text.push_str(s);
            }
            if let Ok(r) = parse_with(&text, &[("f", "x, y\n@f")]) {
                for t in [Transport::Unix, tcp("10.1.1.1", true), tcp("::1", false)] {
                    let _ = r.find(t, "x", "y");
                }
            }
        }
    }
}
