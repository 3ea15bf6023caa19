//! Pipelines with errors, against a model of PostgreSQL's extended protocol: the same
//! client messages go once to the model directly and once through the rewriting path
//! (with two server connections, the model behind each), and the client must see the
//! same bytes. The model keeps statements by name, fails a Parse of a missing table,
//! and skips every message after an error until Sync, as PostgreSQL does; its results
//! carry the statement text, so a statement mixed up shows.

use std::collections::HashMap;

use bytes::{BufMut, BytesMut};
use pgsluice_protocol::frame::parse_header;
use pgsluice_protocol::frontend;
use proptest::prelude::*;

use super::{ClientStatements, ReadPath, Rewriter, StatementRegistry};
use crate::client::relay::WireState;
use crate::params::ParamSet;

const GOOD: [&str; 2] = ["select 1", "select 2"];
const MISSING: &str = "select * from missing";

/// PostgreSQL's extended protocol, reduced to what statement bookkeeping can get wrong.
#[derive(Default)]
struct Model {
    stmts: HashMap<String, String>,
    portal: Option<String>,
    skipping: bool,
    /// Parse messages that created a named statement.
    parses: usize,
}

fn cstr(b: &[u8]) -> (&str, &[u8]) {
    let n = b.iter().position(|&c| c == 0).expect("nul");
    (std::str::from_utf8(&b[..n]).expect("utf8"), &b[n + 1..])
}

fn error(out: &mut BytesMut, code: &str, msg: &str) {
    let body = format!("SERROR\0C{code}\0M{msg}\0\0");
    out.put_u8(b'E');
    out.put_u32(body.len() as u32 + 4);
    out.extend_from_slice(body.as_bytes());
}

fn empty(out: &mut BytesMut, tag: u8) {
    out.extend_from_slice(&[tag, 0, 0, 0, 4]);
}

impl Model {
    fn fail(&mut self, out: &mut BytesMut, code: &str, msg: &str) {
        error(out, code, msg);
        self.skipping = true;
    }

    fn missing_stmt(name: &str) -> String {
        if name.is_empty() {
            "unnamed prepared statement does not exist".into()
        } else {
            format!("prepared statement \"{name}\" does not exist")
        }
    }

    /// Answers every complete message of `data`.
    fn handle(&mut self, data: &[u8]) -> BytesMut {
        let mut out = BytesMut::new();
        let mut rest = data;
        while let Ok(Some(h)) = parse_header(rest, u32::MAX) {
            let body = &rest[5..h.total_len()];
            rest = &rest[h.total_len()..];
            if self.skipping && h.tag != b'S' {
                continue;
            }
            self.message(h.tag, body, &mut out);
        }
        assert!(rest.is_empty(), "whole messages only");
        out
    }

    fn message(&mut self, tag: u8, body: &[u8], out: &mut BytesMut) {
        match tag {
            b'P' => {
                let p = frontend::parse_parse(body).expect("parse");
                let query = String::from_utf8(p.query.to_vec()).expect("utf8");
                if query.contains("missing") {
                    self.fail(out, "42P01", "relation \"missing\" does not exist");
                } else if !p.name.is_empty() && self.stmts.contains_key(p.name) {
                    let m = format!("prepared statement \"{}\" already exists", p.name);
                    self.fail(out, "42P05", &m);
                } else {
                    self.parses += usize::from(!p.name.is_empty());
                    self.stmts.insert(p.name.into(), query);
                    empty(out, b'1');
                }
            }
            b'B' => {
                let (_, rest) = cstr(body);
                let (name, _) = cstr(rest);
                match self.stmts.get(name) {
                    Some(q) => {
                        self.portal = Some(q.clone());
                        empty(out, b'2');
                    }
                    None => self.fail(out, "26000", &Self::missing_stmt(name)),
                }
            }
            b'D' => {
                let (kind, name) = frontend::parse_target(body).expect("target");
                let found = if kind == b'S' {
                    self.stmts.get(name).cloned()
                } else {
                    self.portal.clone()
                };
                match (found, kind) {
                    (Some(q), b'S') => {
                        out.extend_from_slice(&[b't', 0, 0, 0, 6, 0, 0]);
                        pgsluice_protocol::backend::row_description(out, &[(&q, 25)]);
                    }
                    (Some(q), _) => pgsluice_protocol::backend::row_description(out, &[(&q, 25)]),
                    (None, b'S') => self.fail(out, "26000", &Self::missing_stmt(name)),
                    (None, _) => self.fail(out, "34000", "portal \"\" does not exist"),
                }
            }
            b'E' => match self.portal.clone() {
                Some(q) => {
                    pgsluice_protocol::backend::data_row(out, &[Some(&q)]);
                    pgsluice_protocol::backend::command_complete(out, "SELECT 1");
                }
                None => self.fail(out, "34000", "portal \"\" does not exist"),
            },
            b'C' => {
                let (kind, name) = frontend::parse_target(body).expect("target");
                if kind == b'S' {
                    self.stmts.remove(name);
                } else {
                    self.portal = None;
                }
                empty(out, b'3');
            }
            b'S' => {
                self.skipping = false;
                self.portal = None;
                pgsluice_protocol::backend::ready_for_query(
                    out,
                    pgsluice_protocol::backend::TxStatus::Idle,
                );
            }
            b'H' => {}
            other => panic!("model does not speak {}", other as char),
        }
    }
}

/// One server connection behind the pooler: its rewriting state, the model, and the
/// model's replies not delivered yet.
struct Conn {
    ext: Rewriter,
    server: Model,
    undelivered: BytesMut,
}

/// The pooler's side: one client, two server connections.
struct Pooler {
    registry: StatementRegistry,
    client: ClientStatements,
    conns: [Conn; 2],
    on: usize,
    flow: WireState,
    to_client: BytesMut,
}

impl Pooler {
    fn new(max_prepared: usize) -> Self {
        let conn = || Conn {
            ext: Rewriter::new(1 << 20, max_prepared),
            server: Model::default(),
            undelivered: BytesMut::new(),
        };
        let mut p = Pooler {
            registry: StatementRegistry::default(),
            client: ClientStatements::default(),
            conns: [conn(), conn()],
            on: 0,
            flow: WireState::new(),
            to_client: BytesMut::new(),
        };
        p.conns[0].ext.begin_checkout();
        p
    }

    fn send(&mut self, chunk: &[u8]) {
        let c = &mut self.conns[self.on];
        if c.ext.quiescent() && self.flow.idle() {
            // A new transaction: the relay starts a checkout.
            c.ext.begin_checkout();
        }
        let pass = c
            .ext
            .client_bytes(chunk, &self.registry, &mut self.client, &mut self.flow)
            .expect("valid client bytes");
        let sent = match pass.path {
            ReadPath::AsRead => chunk.to_vec(),
            ReadPath::Rewritten => c.ext.c2s_out.split().to_vec(),
        };
        let reply = c.server.handle(&sent);
        c.undelivered.extend_from_slice(&reply);
        self.to_client.extend_from_slice(&c.ext.s2c_out.split());
    }

    fn deliver(&mut self) {
        let c = &mut self.conns[self.on];
        let data = c.undelivered.split();
        if data.is_empty() {
            return;
        }
        let (mut cp, mut sp) = (ParamSet::default(), ParamSet::default());
        let path = c
            .ext
            .server_bytes(&data, &mut self.flow, &mut self.client, &mut cp, &mut sp)
            .expect("valid server bytes");
        match path {
            ReadPath::AsRead => self.to_client.extend_from_slice(&data),
            ReadPath::Rewritten => self.to_client.extend_from_slice(&c.ext.s2c_out.split()),
        }
    }

    /// Moves the client to the other connection when this one is free, as the pool
    /// does between transactions.
    fn switch(&mut self) -> bool {
        self.deliver();
        if !(self.conns[self.on].ext.quiescent() && self.flow.idle()) {
            return false;
        }
        self.on = 1 - self.on;
        self.conns[self.on].ext.begin_checkout();
        // The unnamed statement does not follow a client to another connection (it
        // does not outlive a transaction in transaction pooling); not compared here.
        self.conns[self.on].server.stmts.remove("");
        true
    }

    fn inexact(&self) -> bool {
        self.conns.iter().any(|c| c.ext.book.inexact)
    }
}

/// A client message, by kind.
#[derive(Debug, Clone, Copy)]
enum Msg {
    /// Parse of name `s{0}` with good text `{1}`, or the failing one when `{1}` is 2.
    Parse(u8, u8),
    ParseUnnamed(u8),
    Bind(u8),
    BindUnnamed,
    Describe(u8),
    DescribePortal,
    Execute,
    Close(u8),
    Sync,
    Flush,
}

fn write(buf: &mut BytesMut, m: Msg) {
    let text = |t: u8| GOOD.get(t as usize).copied().unwrap_or(MISSING).as_bytes();
    let name = |n: u8| format!("s{n}");
    match m {
        Msg::Parse(n, t) => frontend::parse(buf, &name(n), text(t), &[]),
        Msg::ParseUnnamed(t) => frontend::parse(buf, "", text(t), &[]),
        Msg::Bind(n) => frontend::bind_text(buf, "", &name(n), &[]),
        Msg::BindUnnamed => frontend::bind_text(buf, "", "", &[]),
        Msg::Describe(n) => frontend::target_message(buf, b'D', b'S', &name(n)),
        Msg::DescribePortal => frontend::target_message(buf, b'D', b'P', ""),
        Msg::Execute => frontend::execute(buf, "", 0),
        Msg::Close(n) => frontend::target_message(buf, b'C', b'S', &name(n)),
        Msg::Sync => frontend::sync(buf),
        Msg::Flush => buf.extend_from_slice(&[b'H', 0, 0, 0, 4]),
    }
}

fn msg() -> impl Strategy<Value = Msg> {
    prop_oneof![
        3 => (0u8..4, 0u8..3).prop_map(|(n, t)| Msg::Parse(n, t)),
        1 => (0u8..3).prop_map(Msg::ParseUnnamed),
        4 => (0u8..4).prop_map(Msg::Bind),
        1 => Just(Msg::BindUnnamed),
        1 => (0u8..4).prop_map(Msg::Describe),
        1 => Just(Msg::DescribePortal),
        3 => Just(Msg::Execute),
        1 => (0u8..4).prop_map(Msg::Close),
        3 => Just(Msg::Sync),
        1 => Just(Msg::Flush),
    ]
}

/// What the test driver does next.
#[derive(Debug, Clone)]
enum Step {
    /// The client sends these messages in one read.
    Send(Vec<Msg>),
    /// The server's replies so far reach the pooler.
    Deliver,
    /// The client moves to the other server connection if it can.
    Switch,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => prop::collection::vec(msg(), 1..6).prop_map(Step::Send),
        2 => Just(Step::Deliver),
        1 => Just(Step::Switch),
    ]
}

fn bytes_of(msgs: &[Msg]) -> BytesMut {
    let mut b = BytesMut::new();
    for &m in msgs {
        write(&mut b, m);
    }
    b
}

/// Runs `steps` both ways; None when the pooler took a path documented as possibly
/// differing from PostgreSQL (the comparison stops there).
fn run(steps: &[Step], max_prepared: usize) -> Option<(BytesMut, BytesMut)> {
    let mut direct = Model::default();
    let mut expected = BytesMut::new();
    let mut p = Pooler::new(max_prepared);
    for s in steps {
        match s {
            Step::Send(msgs) => {
                let b = bytes_of(msgs);
                expected.extend_from_slice(&direct.handle(&b));
                p.send(&b);
            }
            Step::Deliver => p.deliver(),
            Step::Switch => {
                if p.switch() {
                    direct.stmts.remove("");
                }
            }
        }
        if p.inexact() {
            return None;
        }
    }
    // The end of the conversation: a last Sync, everything delivered.
    let b = bytes_of(&[Msg::Sync]);
    expected.extend_from_slice(&direct.handle(&b));
    p.send(&b);
    p.deliver();
    assert!(p.conns[p.on].ext.quiescent(), "settled after the last Sync");
    (!p.inexact()).then_some((expected, p.to_client))
}

/// Client-visible messages, readable.
fn show(b: &[u8]) -> Vec<String> {
    let mut v = Vec::new();
    let mut rest = b;
    while let Ok(Some(h)) = parse_header(rest, u32::MAX) {
        let body = &rest[5..h.total_len()];
        let text = match h.tag {
            b'D' => pgsluice_protocol::backend::parse_data_row(body)
                .expect("data row")
                .iter()
                .map(|c| String::from_utf8_lossy(c.unwrap_or_default()).into_owned())
                .collect::<Vec<_>>()
                .join(","),
            _ => String::from_utf8_lossy(body).into_owned(),
        };
        v.push(format!("{}{text}", h.tag as char));
        rest = &rest[h.total_len()..];
    }
    v
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, ..ProptestConfig::default() })]

    #[test]
    fn pipelines_with_errors_answer_as_postgres_does(
        steps in prop::collection::vec(step(), 1..25),
        max_prepared in 1usize..4,
    ) {
        if let Some((expected, got)) = run(&steps, max_prepared) {
            prop_assert_eq!(show(&expected), show(&got));
        }
    }
}

/// Runs a script whose outcome is exactly PostgreSQL's and returns what the client saw.
fn exact(steps: &[Step], max_prepared: usize) -> Vec<String> {
    let (expected, got) = run(steps, max_prepared).expect("no inexact path");
    assert_eq!(show(&expected), show(&got));
    show(&got)
}

fn errors(seen: &[String]) -> Vec<&String> {
    seen.iter().filter(|m| m.starts_with('E')).collect()
}

use Msg::*;
use Step::{Deliver, Send as S, Switch};

/// The case: the second query of a pipeline fails, the third is prepared;
/// afterwards six prepared queries (new names, same texts) all run.
#[test]
fn statement_parsed_after_an_error_is_not_recorded() {
    let mut steps = vec![S(vec![
        Parse(0, 0),
        Bind(0),
        Execute,
        Parse(1, 2),
        Bind(1),
        Execute,
        Parse(2, 1),
        Bind(2),
        Execute,
        Sync,
    ])];
    steps.push(Deliver);
    for _ in 0..3 {
        steps.push(S(vec![Close(3), Parse(3, 1), Bind(3), Execute, Sync]));
        steps.push(S(vec![Bind(0), Execute, Sync]));
    }
    let seen = exact(&steps, 200);
    assert_eq!(errors(&seen).len(), 1, "only the missing table: {seen:?}");
    assert!(errors(&seen)[0].contains("42P01"));
    assert_eq!(seen.iter().filter(|m| m.starts_with("Dselect")).count(), 7);
}

/// A Parse pgsluice injects for a Bind inside an error window is skipped by the server:
/// the next Bind must inject it again.
#[test]
fn injected_parse_in_an_error_window_is_sent_again() {
    let steps = vec![
        S(vec![Parse(0, 0), Sync]),
        Deliver,
        Switch,
        S(vec![ParseUnnamed(2), Bind(0), Execute, Sync]),
        Deliver,
        S(vec![Bind(0), Execute, Sync]),
    ];
    let seen = exact(&steps, 200);
    assert_eq!(errors(&seen).len(), 1, "{seen:?}");
    assert!(seen.iter().any(|m| m == "Dselect 1"));
}

/// An eviction Close skipped in an error window leaves the statement on the server: a
/// later Parse of it must not collide (42P05).
#[test]
fn eviction_close_in_an_error_window_is_not_recorded() {
    let steps = vec![
        S(vec![Parse(0, 0), Sync]),
        Deliver,
        // s1 needs room: s0 is evicted, but the Close is skipped with the rest.
        S(vec![ParseUnnamed(2), Parse(1, 1), Sync]),
        Deliver,
        S(vec![Bind(0), Execute, Sync]),
    ];
    let seen = exact(&steps, 1);
    assert_eq!(errors(&seen).len(), 1, "{seen:?}");
}

/// Replies pgsluice makes up (ParseComplete of a statement the server has,
/// CloseComplete) are skipped after an error like any other, and so are their effects.
#[test]
fn local_answers_in_an_error_window_change_nothing() {
    let steps = vec![
        S(vec![Parse(0, 0), Sync]),
        Deliver,
        // s1 = the text s0 has (answered locally), s0 closed (locally): both skipped.
        S(vec![ParseUnnamed(2), Parse(1, 0), Close(0), Sync]),
        Deliver,
        S(vec![Bind(0), Execute, Sync]),
        S(vec![Parse(1, 1), Bind(1), Execute, Sync]),
    ];
    let seen = exact(&steps, 200);
    assert_eq!(errors(&seen).len(), 1, "{seen:?}");
    assert!(seen.iter().any(|m| m == "Dselect 1"));
    assert!(seen.iter().any(|m| m == "Dselect 2"));
}

/// A Flush does not end the error window; the Sync does.
#[test]
fn flush_does_not_end_the_error_window() {
    let steps = vec![
        S(vec![Parse(0, 2), Flush, Parse(1, 0), Flush]),
        Deliver,
        S(vec![Parse(1, 0), Bind(1), Flush, Sync]),
        Deliver,
        S(vec![Parse(1, 0), Bind(1), Execute, Sync]),
    ];
    let seen = exact(&steps, 200);
    assert_eq!(errors(&seen).len(), 1, "{seen:?}");
}

/// Describe (and Bind) of a statement whose Parse failed, in a later Sync window sent
/// before the failure came back: the server's error names the client's statement.
#[test]
fn describe_of_a_statement_that_failed_to_parse() {
    let steps = vec![S(vec![Parse(0, 2), Sync, Describe(0), Sync, Bind(0), Sync])];
    let seen = exact(&steps, 200);
    let errs = errors(&seen);
    assert_eq!(errs.len(), 3, "{seen:?}");
    assert!(errs[1].contains("prepared statement \"s0\" does not exist"));
}

/// A statement injected in one Sync window and needed again in the next before the
/// first answer came: closed and parsed again, never "already exists".
#[test]
fn statement_needed_again_across_sync_windows() {
    let steps = vec![
        S(vec![Parse(0, 0), Sync]),
        Deliver,
        Switch,
        S(vec![Bind(0), Execute, Sync, Bind(0), Execute, Sync]),
        S(vec![Bind(0), Execute, Sync]),
    ];
    let seen = exact(&steps, 200);
    assert!(errors(&seen).is_empty(), "{seen:?}");
    assert_eq!(seen.iter().filter(|m| *m == "Dselect 1").count(), 3);
}

/// A name parsed again in the next Sync window before the first answer came (libpq
/// pipelines do this): refused (42P05) exactly when the first Parse succeeded.
#[test]
fn name_parsed_again_across_sync_windows() {
    let skipped = vec![S(vec![
        ParseUnnamed(2),
        Parse(1, 0),
        Sync,
        Parse(1, 0),
        Bind(1),
        Execute,
        Sync,
    ])];
    let seen = exact(&skipped, 200);
    assert_eq!(errors(&seen).len(), 1, "{seen:?}");
    assert!(seen.iter().any(|m| m == "Dselect 1"));
    let done = vec![S(vec![
        Parse(1, 0),
        Sync,
        Parse(1, 0),
        Sync,
        Bind(1),
        Execute,
        Sync,
    ])];
    let seen = exact(&done, 200);
    assert_eq!(errors(&seen).len(), 1, "{seen:?}");
    assert!(errors(&seen)[0].contains("prepared statement \"s1\" already exists"));
}

/// A statement the connection holds is evicted (max_prepared = 1) in a Sync window that
/// an error skips, and parsed there again for a new name: the eviction's Close is
/// skipped too, so the statement stays on the server while the name does not exist.
/// A Bind of that name in the next window, sent before the error came back, may run
/// where PostgreSQL reports 26000 (a documented limit): pgsluice must not count it as
/// sure. Once the error came back, the Bind is answered exactly.
#[test]
fn parse_after_an_eviction_in_a_skipped_window() {
    let window = vec![
        S(vec![Parse(1, 0)]),
        S(vec![Sync]),
        Switch,
        Switch,
        // Parse of s3 evicts s1's statement; s2 parses it again; Bind(0) fails first.
        S(vec![Bind(0), Parse(3, 1), Parse(2, 0), Sync]),
    ];
    let mut pipelined = window.clone();
    pipelined.extend([S(vec![Bind(2)]), S(vec![Parse(0, 0)])]);
    assert!(
        run(&pipelined, 1).is_none(),
        "the Bind of s2 rests on a Parse that may be skipped with the eviction"
    );
    let mut read_first = window;
    read_first.extend([Deliver, S(vec![Bind(2)]), S(vec![Parse(0, 0)])]);
    let seen = exact(&read_first, 1);
    let errs = errors(&seen);
    assert_eq!(errs.len(), 2, "{seen:?}");
    assert!(errs[1].contains("prepared statement \"s2\" does not exist"));
}
