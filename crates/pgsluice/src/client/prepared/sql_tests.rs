//! SQL-level prepared statements in simple queries, against a model of PostgreSQL: the
//! same queries go once to the model directly and once through the rewriting path (two
//! server connections, the model behind each, the client switching between them), and
//! the client must see the same bytes (the model: [`super::sql_model`]).

use bytes::{BufMut, BytesMut};
use pgsluice_protocol::frame::parse_header;
use pgsluice_protocol::frontend;
use proptest::prelude::*;

use super::sql::SERVER_PREFIX;
use super::sql_model::Model;
use super::{ClientStatements, ReadPath, Rewriter, StatementRegistry};
use crate::client::relay::WireState;
use crate::params::ParamSet;

/// One server connection behind the pooler.
struct Conn {
    ext: Rewriter,
    server: Model,
}

/// The pooler's side: one client, two server connections.
struct Pooler {
    registry: StatementRegistry,
    client: ClientStatements,
    conns: [Conn; 2],
    flow: WireState,
    /// Feed both directions a byte at a time (through the framers).
    bytewise: bool,
}

impl Pooler {
    fn new(max_prepared: usize) -> Self {
        let conn = || Conn {
            ext: Rewriter::new(1 << 20, max_prepared),
            server: Model::default(),
        };
        Pooler {
            registry: StatementRegistry::default(),
            client: ClientStatements::default(),
            conns: [conn(), conn()],
            flow: WireState::new(),
            bytewise: false,
        }
    }

    /// One query on connection `on`; what the client receives.
    fn query(&mut self, on: usize, sql: &str) -> BytesMut {
        self.pipeline(on, &[sql])
    }

    /// Queries sent together (before any answer) on connection `on`.
    fn pipeline(&mut self, on: usize, sqls: &[&str]) -> BytesMut {
        let mut msg = BytesMut::new();
        for q in sqls {
            frontend::query(&mut msg, q);
        }
        self.send(on, &sqls.join(" | "), msg)
    }

    /// Client messages `msg` (described as `sql`) on connection `on`.
    fn send(&mut self, on: usize, sql: &str, msg: BytesMut) -> BytesMut {
        let c = &mut self.conns[on];
        assert!(c.ext.quiescent());
        c.ext.begin_checkout();
        let step = if self.bytewise { 1 } else { msg.len() };
        let mut sent = Vec::new();
        for chunk in msg.chunks(step) {
            let pass = c
                .ext
                .client_bytes(chunk, &self.registry, &mut self.client, &mut self.flow)
                .unwrap();
            match pass.path {
                ReadPath::AsRead => sent.extend_from_slice(chunk),
                ReadPath::Rewritten => sent.extend_from_slice(&c.ext.c2s_out.split()),
            }
        }
        let mut to_client = c.ext.s2c_out.split();
        let answer = c.server.handle(&sent);
        let (mut cp, mut sp) = (ParamSet::default(), ParamSet::default());
        let step = if self.bytewise {
            1
        } else {
            answer.len().max(1)
        };
        for chunk in answer.chunks(step) {
            let path = c
                .ext
                .server_bytes(chunk, &mut self.flow, &mut self.client, &mut cp, &mut sp)
                .unwrap();
            match path {
                ReadPath::AsRead => to_client.extend_from_slice(chunk),
                ReadPath::Rewritten => to_client.extend_from_slice(&c.ext.s2c_out.split()),
            }
        }
        assert!(c.ext.quiescent(), "settled after the answer to {sql:?}");
        to_client
    }

    fn server_names(&self, on: usize) -> Vec<String> {
        let mut v: Vec<_> = self.conns[on].server.stmts.keys().cloned().collect();
        v.sort();
        v
    }
}

/// The message types in `data`.
fn tags(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = data;
    while let Ok(Some(h)) = parse_header(rest, u32::MAX) {
        out.push(h.tag);
        rest = &rest[h.total_len()..];
    }
    out
}

/// Runs `script` ((connection, query) pairs) both ways and compares each answer.
fn same_as_postgres(max_prepared: usize, script: &[(usize, &str)]) -> Pooler {
    same_as_postgres_fed(max_prepared, false, script)
}

/// [`same_as_postgres`], `bytewise` or in whole reads.
fn same_as_postgres_fed(max_prepared: usize, bytewise: bool, script: &[(usize, &str)]) -> Pooler {
    let mut direct = Model::default();
    let mut pooler = Pooler::new(max_prepared);
    pooler.bytewise = bytewise;
    let mut last = 0;
    for &(on, sql) in script {
        // Inside a transaction block the client keeps its connection.
        let on = if direct.tx.is_some() { last } else { on };
        last = on;
        let mut msg = BytesMut::new();
        frontend::query(&mut msg, sql);
        let want = direct.handle(&msg);
        let got = pooler.query(on, sql);
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&want),
            "answer to {sql:?} on connection {on}"
        );
    }
    pooler
}

#[test]
fn statements_follow_the_client_across_connections() {
    let p = same_as_postgres(
        10,
        &[
            (0, "PREPARE p(int) AS SELECT $1 + 1"),
            (1, "EXECUTE p(1)"),
            (1, "execute P (2)"),
            (0, "EXECUTE \"p\"(3)"),
            (1, "explain execute p(4)"),
        ],
    );
    // Each connection holds the statement under its server name, prepared once.
    for on in 0..2 {
        let names = p.server_names(on);
        assert_eq!(names.len(), 1, "{names:?}");
        assert!(names[0].starts_with(SERVER_PREFIX), "{names:?}");
        assert_eq!(p.conns[on].server.prepares, 1);
    }
    assert_eq!(p.client.sql_len(), 1);
}

#[test]
fn duplicate_unknown_and_deallocate_answer_as_postgres() {
    let p = same_as_postgres(
        10,
        &[
            (0, "prepare a as select 1"),
            (1, "prepare a as select 2"),
            (1, "select 1; PREPARE a AS select 3; select 2"),
            (0, "execute nope"),
            (1, "deallocate nope"),
            (1, "execute pgsluice_sql_1"),
            (1, "deallocate a"),
            (0, "execute a"),
            (
                0,
                "prepare a as select 4; execute a; deallocate prepare a; prepare a as select 5",
            ),
            (1, "execute a"),
            (0, "deallocate all"),
            (1, "execute a"),
        ],
    );
    assert_eq!(p.client.sql_len(), 0);
    // DEALLOCATE of a statement connection 1 lacked prepared a stand-in there first:
    // nothing of the client's is left behind on either connection.
    assert!(p.server_names(0).is_empty(), "{:?}", p.server_names(0));
}

#[test]
fn errors_keep_postgres_semantics() {
    same_as_postgres(
        10,
        &[
            // PREPARE is not transactional: it stays after the error and the rollback.
            (0, "begin"),
            (0, "prepare a(int) as select $1"),
            (0, "select 1/0"),
            (0, "execute a(1)"),
            (0, "rollback"),
            (1, "execute a(1)"),
            (
                0,
                "prepare b as select 2; select 1/0; prepare c as select 3",
            ),
            (1, "execute b; execute c"),
            // A failed PREPARE leaves no name.
            (1, "prepare m as select * from missing"),
            (0, "execute m"),
            // Positions point into the client's text.
            (1, "select 1; execute a('x')"),
            (0, "execute a ('x')"),
            (1, "begin; execute b; execute a('x')"),
            (0, "rollback"),
        ],
    );
}

#[test]
fn the_bound_evicts_other_statements_with_deallocate() {
    let mut p = same_as_postgres(
        2,
        &[
            (0, "prepare a as select 1"),
            (0, "prepare b as select 2"),
            (0, "prepare c as select 3"),
            (0, "execute a"),
            (0, "execute b; execute c"),
        ],
    );
    let names = p.server_names(0);
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(
        p.registry
            .stats
            .evictions
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );
    // All three in one text: the bound gives way rather than evict what the text uses.
    let got = p.query(1, "execute a; execute b; execute c");
    assert_eq!(tags(&got), b"DCDCDCZ", "{got:?}");
    assert_eq!(p.server_names(1).len(), 3);
}

#[test]
fn a_protocol_level_name_is_taken_for_prepare_too() {
    let mut p = Pooler::new(10);
    let stmt = p.registry.intern(b"select 1", &[]);
    p.client.insert("s0", stmt);
    let got = p.query(0, "prepare s0 as select 2");
    let text = String::from_utf8_lossy(&got);
    assert!(text.contains("C42P05"), "{text}");
    assert!(
        text.contains("prepared statement \"s0\" already exists"),
        "{text}"
    );
    // DEALLOCATE ALL forgets both kinds, as PostgreSQL drops both.
    p.query(0, "prepare q as select 3");
    assert_eq!((p.client.len(), p.client.sql_len()), (1, 1));
    p.query(1, "deallocate all");
    assert_eq!((p.client.len(), p.client.sql_len()), (0, 0));
}

#[test]
fn pipelined_queries_see_the_statements_of_earlier_ones() {
    for (first, then) in [
        ("prepare a as select 1", "execute a"),
        ("prepare a as select * from missing", "execute a"),
        (
            "prepare a as select 1; select 1/0",
            "execute a; deallocate a",
        ),
    ] {
        let mut direct = Model::default();
        let mut msg = BytesMut::new();
        frontend::query(&mut msg, first);
        frontend::query(&mut msg, then);
        let want = direct.handle(&msg);
        let mut p = Pooler::new(10);
        let got = p.pipeline(0, &[first, then]);
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&want),
            "{first} | {then}"
        );
        // And on the other connection, the statement follows.
        let again = p.query(1, "execute a");
        let want = direct.handle(&{
            let mut m = BytesMut::new();
            frontend::query(&mut m, "execute a");
            m
        });
        assert_eq!(
            again, want,
            "{first} | {then}, then on the other connection"
        );
    }
}

/// Parse (named `stmt`, unless empty) / Bind / Execute / Sync of `sql`; `stmt` None:
/// Bind / Execute / Sync of a statement parsed before.
fn extended(stmt: &str, sql: Option<&str>) -> BytesMut {
    let mut m = BytesMut::new();
    if let Some(sql) = sql {
        frontend::parse(&mut m, stmt, sql.as_bytes(), &[]);
    }
    // Bind: unnamed portal, no formats, no parameters.
    m.put_u8(b'B');
    m.put_u32((4 + 1 + stmt.len() + 1 + 6) as u32);
    m.put_u8(0);
    m.extend_from_slice(stmt.as_bytes());
    m.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0]);
    frontend::execute(&mut m, "", 0);
    frontend::sync(&mut m);
    m
}

#[test]
fn extended_execute_follows_the_client_too() {
    let script: Vec<(usize, &str, BytesMut)> = vec![
        (
            0,
            "prepare",
            query_msg("prepare p as select 1; prepare r as select 2"),
        ),
        // Another connection, which lacks p: prepared before the Parse.
        (1, "parse s1", extended("s1", Some("EXECUTE p"))),
        (1, "bind s1", extended("s1", None)),
        // s1 follows the client as a protocol-level statement, p with it.
        (0, "bind s1 on 0", extended("s1", None)),
        (1, "unnamed", extended("", Some("execute r"))),
        (0, "unknown", extended("", Some("execute nope"))),
        (1, "deallocate", query_msg("deallocate p")),
    ];
    let mut direct = Model::default();
    let mut p = Pooler::new(10);
    for (on, what, msg) in script {
        let want = direct.handle(&msg);
        let got = p.send(on, what, msg);
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&want),
            "{what} on connection {on}"
        );
    }
    // s1 EXECUTEs p, which is gone: PostgreSQL fails its Execute (26000, "p"); pgsluice
    // fails its Bind (26000, "s1") rather than run what p stood for on connection 0.
    for on in [0, 1] {
        let got = p.send(on, "bind s1 after deallocate", extended("s1", None));
        let text = String::from_utf8_lossy(&got);
        assert!(
            text.contains("C26000\0Mprepared statement \"s1\" does not exist"),
            "{text}"
        );
    }
    // A new p does not revive it either.
    p.query(0, "prepare p as select 9");
    let got = p.send(0, "bind s1 after prepare", extended("s1", None));
    assert!(String::from_utf8_lossy(&got).contains("C26000"));
}

#[test]
fn extended_execute_in_a_pipeline_where_the_statement_is_missing_is_refused() {
    let mut p = Pooler::new(10);
    p.query(0, "prepare p as select 1");
    // An unsynced Parse first: a query cannot go in before the second one.
    let mut msg = BytesMut::new();
    frontend::parse(&mut msg, "", b"select 1", &[]);
    msg.extend_from_slice(&extended("s1", Some("EXECUTE p")));
    let got = p.send(1, "pipelined", msg);
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.contains("feature_not_supported") || text.contains("0A000"),
        "{text}"
    );
    // Where the statement is, the same pipeline runs.
    let mut msg = BytesMut::new();
    frontend::parse(&mut msg, "", b"select 1", &[]);
    msg.extend_from_slice(&extended("s2", Some("EXECUTE p")));
    let got = p.send(0, "pipelined where present", msg);
    assert!(String::from_utf8_lossy(&got).contains("as select 1"));
}

#[test]
fn a_text_that_executes_is_never_answered_without_the_rewriting_path() {
    // Another client's Parse of the same text left a verified statement behind; a Parse
    // of that text must still go through the client's own names.
    let r = StatementRegistry::default();
    let kept = r.intern(b"execute p(1)", &[]);
    kept.mark_verified();
    assert!(r.verified(b"execute p(1)", &[]).is_none());
    let kept_too = r.intern(b"select 1", &[]);
    kept_too.mark_verified();
    assert!(r.verified(b"select 1", &[]).is_some());
    drop((kept, kept_too));
}

fn query_msg(sql: &str) -> BytesMut {
    let mut m = BytesMut::new();
    frontend::query(&mut m, sql);
    m
}

#[test]
fn extended_protocol_refuses_sql_prepare() {
    let mut p = Pooler::new(10);
    let mut msg = BytesMut::new();
    frontend::parse(&mut msg, "", b"PREPARE p AS select 1", &[]);
    frontend::sync(&mut msg);
    let c = &mut p.conns[0];
    c.ext.begin_checkout();
    c.ext
        .client_bytes(&msg, &p.registry, &mut p.client, &mut p.flow)
        .unwrap();
    let sent = c.ext.c2s_out.split();
    let text = String::from_utf8_lossy(&sent);
    assert!(text.contains("feature_not_supported"), "{text}");
    assert!(text.contains("extended protocol"), "{text}");
}

fn any_statement() -> impl Strategy<Value = String> {
    let name = prop_oneof![Just("a"), Just("b")];
    prop_oneof![
        (name.clone(), 1u8..4).prop_map(|(n, v)| format!("prepare {n} as select {v}")),
        name.clone().prop_map(|n| format!("execute {n}")),
        name.clone().prop_map(|n| format!("execute {n}('x')")),
        name.prop_map(|n| format!("deallocate {n}")),
        Just("deallocate all".to_owned()),
        Just("select 1/0".to_owned()),
        Just("begin".to_owned()),
        Just("rollback".to_owned()),
        Just("prepare m as select * from missing".to_owned()),
    ]
}

proptest! {
    #[test]
    fn any_script_answers_as_postgres(
        steps in prop::collection::vec(
            (0usize..2, prop::collection::vec(any_statement(), 1..4)),
            1..12,
        ),
        max_prepared in 1usize..4,
        bytewise in any::<bool>(),
    ) {
        let texts: Vec<(usize, String)> =
            steps.into_iter().map(|(on, s)| (on, s.join("; "))).collect();
        let script: Vec<(usize, &str)> = texts.iter().map(|(on, s)| (*on, s.as_str())).collect();
        same_as_postgres_fed(max_prepared, bytewise, &script);
    }
}
