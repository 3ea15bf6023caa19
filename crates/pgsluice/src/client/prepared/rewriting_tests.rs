//! Sending reads in place against sending them through the framer: the same conversation, fed once in
//! message-aligned reads (eligible for [`ReadPath::AsRead`]) and once a byte at a time
//! (always through the framers), must send the same bytes both ways and leave the same
//! state behind.

use bytes::{BufMut, BytesMut};
use pgsluice_protocol::backend::{self, TxStatus};
use pgsluice_protocol::frontend;
use proptest::prelude::*;

use super::{ReadPath, Rewriter};
use crate::client::prepared::{ClientStatements, StatementRegistry};
use crate::client::relay::WireState;
use crate::params::ParamSet;

/// One side of the comparison: a connection's rewriting state and its client's.
struct Side {
    ext: Rewriter,
    registry: StatementRegistry,
    client: ClientStatements,
    flow: WireState,
    client_params: ParamSet,
    server_params: ParamSet,
    to_server: Vec<u8>,
    to_client: Vec<u8>,
    as_read: usize,
}

impl Side {
    fn new() -> Self {
        Side {
            ext: Rewriter::new(1 << 20, 4),
            registry: StatementRegistry::default(),
            client: ClientStatements::default(),
            flow: WireState::new(),
            client_params: ParamSet::default(),
            server_params: ParamSet::default(),
            to_server: Vec::new(),
            to_client: Vec::new(),
            as_read: 0,
        }
    }

    fn client_sends(&mut self, chunk: &[u8]) {
        let pass = self
            .ext
            .client_bytes(chunk, &self.registry, &mut self.client, &mut self.flow)
            .expect("valid client bytes");
        assert!(!pass.terminated);
        if pass.path == ReadPath::AsRead {
            assert!(self.ext.c2s_out.is_empty());
            self.as_read += 1;
            self.to_server.extend_from_slice(chunk);
        }
        self.to_server.extend_from_slice(&self.ext.c2s_out.split());
        self.to_client.extend_from_slice(&self.ext.s2c_out.split());
    }

    fn server_sends(&mut self, chunk: &[u8]) {
        let path = self
            .ext
            .server_bytes(
                chunk,
                &mut self.flow,
                &mut self.client,
                &mut self.client_params,
                &mut self.server_params,
            )
            .expect("valid server bytes");
        if path == ReadPath::AsRead {
            assert!(self.ext.s2c_out.is_empty());
            self.as_read += 1;
            self.to_client.extend_from_slice(chunk);
        }
        self.to_client.extend_from_slice(&self.ext.s2c_out.split());
    }

    /// Everything observable, for comparison. The queue is not: a side whose reads are
    /// whole messages counts plain requests instead of queueing them
    /// ([`super::super::book::Book::end_read`]); whether anything is in flight is.
    fn state(&self) -> String {
        format!(
            "idle {} flow {:?} client statements {} server statements {} params {:?}",
            self.ext.book.idle(),
            self.flow,
            self.client.len(),
            self.ext.book.stmts.len(),
            self.client_params.iter().collect::<Vec<_>>()
        )
    }
}

/// A client message, by kind.
#[derive(Debug, Clone, Copy)]
enum Msg {
    Query,
    RefusedQuery,
    ParseUnnamed,
    ParseNamed(u8),
    BindUnnamed,
    BindNamed(u8),
    DescribePortal,
    DescribeNamed(u8),
    CloseNamed(u8),
    ClosePortal,
    Execute,
    Sync,
    Flush,
}

fn msg() -> impl Strategy<Value = Msg> {
    prop_oneof![
        Just(Msg::Query),
        Just(Msg::RefusedQuery),
        Just(Msg::ParseUnnamed),
        (0u8..3).prop_map(Msg::ParseNamed),
        Just(Msg::BindUnnamed),
        (0u8..3).prop_map(Msg::BindNamed),
        Just(Msg::DescribePortal),
        (0u8..3).prop_map(Msg::DescribeNamed),
        (0u8..3).prop_map(Msg::CloseNamed),
        Just(Msg::ClosePortal),
        Just(Msg::Execute),
        Just(Msg::Sync),
        Just(Msg::Flush),
    ]
}

fn write(buf: &mut BytesMut, m: Msg) {
    let name = |n: u8| format!("s{n}");
    match m {
        Msg::Query => frontend::query(buf, "select 1"),
        Msg::RefusedQuery => frontend::query(buf, "SET search_path = x"),
        Msg::ParseUnnamed => frontend::parse(buf, "", b"select $1", &[23]),
        Msg::ParseNamed(n) => frontend::parse(buf, &name(n), b"select 2", &[]),
        Msg::BindUnnamed => frontend::bind_text(buf, "", "", &[Some(b"1")]),
        Msg::BindNamed(n) => frontend::bind_text(buf, "", &name(n), &[]),
        Msg::DescribePortal => frontend::target_message(buf, b'D', b'P', ""),
        Msg::DescribeNamed(n) => frontend::target_message(buf, b'D', b'S', &name(n)),
        Msg::CloseNamed(n) => frontend::target_message(buf, b'C', b'S', &name(n)),
        Msg::ClosePortal => frontend::target_message(buf, b'C', b'P', ""),
        Msg::Execute => frontend::execute(buf, "", 0),
        Msg::Sync => frontend::sync(buf),
        Msg::Flush => buf.extend_from_slice(&[b'H', 0, 0, 0, 4]),
    }
}

/// What a server answers to what the queue expects, in order; `fail` makes the first
/// Parse answered fail (PostgreSQL then skips to the Sync). `ext` must queue every
/// request (fed a byte at a time: it counts none).
fn replies(ext: &Rewriter, fail: bool) -> Vec<BytesMut> {
    use super::super::book::Expect;
    assert!(!ext.book.counting(), "the reference side counted a request");
    let mut out = Vec::new();
    let mut skipping = false;
    let mut failed = !fail;
    for e in ext.book.queued() {
        let mut m = BytesMut::new();
        if skipping && !matches!(e, Expect::Sync) {
            continue;
        }
        match e {
            Expect::Parse { .. } if !failed => {
                failed = true;
                skipping = true;
                m.put_u8(b'E');
                let body = b"SERROR\0C42601\0Msyntax error\0\0";
                m.put_u32(body.len() as u32 + 4);
                m.extend_from_slice(body);
            }
            Expect::Parse { .. } => m.extend_from_slice(&[b'1', 0, 0, 0, 4]),
            Expect::Bind(_) => m.extend_from_slice(&[b'2', 0, 0, 0, 4]),
            Expect::DescribeStatement(_) => {
                m.extend_from_slice(&[b't', 0, 0, 0, 6, 0, 0]);
                m.extend_from_slice(&[b'n', 0, 0, 0, 4]);
            }
            Expect::DescribePortal => backend::row_description(&mut m, &[("x", 23)]),
            Expect::Execute => {
                backend::data_row(&mut m, &[Some("1")]);
                backend::command_complete(&mut m, "SELECT 1");
            }
            Expect::Close { .. } => m.extend_from_slice(&[b'3', 0, 0, 0, 4]),
            Expect::Query | Expect::SqlQuery(_) => m = query_reply(),
            Expect::Sync | Expect::FunctionCall => {
                skipping = false;
                backend::ready_for_query(&mut m, TxStatus::Idle);
            }
            Expect::Synth(_) => continue,
        }
        out.push(m);
    }
    out
}

/// The server's answer to a simple query (one row, a ParameterStatus, ReadyForQuery).
fn query_reply() -> BytesMut {
    let mut m = BytesMut::new();
    backend::row_description(&mut m, &[("x", 23)]);
    backend::data_row(&mut m, &[Some("1")]);
    backend::command_complete(&mut m, "SELECT 1");
    backend::parameter_status(&mut m, "application_name", "app");
    backend::ready_for_query(&mut m, TxStatus::Idle);
    m
}

/// Splits `messages` into reads of `sizes[i] % 3 + 1` messages each.
fn group(messages: &[BytesMut], sizes: &[usize]) -> Vec<Vec<u8>> {
    let mut reads = Vec::new();
    let mut i = 0;
    let mut k = 0;
    while i < messages.len() {
        let n = sizes.get(k).map_or(1, |s| s % 3 + 1);
        let end = (i + n).min(messages.len());
        reads.push(
            messages[i..end]
                .iter()
                .flat_map(|m| m.iter().copied())
                .collect(),
        );
        i = end;
        k += 1;
    }
    reads
}

/// Splits the bytes of `messages` into reads of `sizes[k] * 7 + 1` bytes (cycling),
/// which end anywhere: between messages, in a header, in a body.
fn cut(messages: &[BytesMut], sizes: &[usize]) -> Vec<Vec<u8>> {
    let all: Vec<u8> = messages.iter().flat_map(|m| m.iter().copied()).collect();
    let mut reads = Vec::new();
    let mut at = 0;
    let mut k = 0;
    while at < all.len() {
        let n = sizes.get(k % sizes.len().max(1)).map_or(1, |s| s * 7 + 1);
        let end = (at + n).min(all.len());
        reads.push(all[at..end].to_vec());
        at = end;
        k += 1;
    }
    reads
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn in_place_and_framed_routes_agree(
        rounds in prop::collection::vec(
            (prop::collection::vec(msg(), 1..8), prop::collection::vec(0usize..9, 8), any::<bool>()),
            1..5,
        )
    ) {
        let mut fast = Side::new();
        let mut slow = Side::new();
        // Server reads cut anywhere: whole messages handled in place, the rest framed.
        let mut mid = Side::new();
        for (msgs, sizes, fail) in rounds {
            let messages: Vec<BytesMut> = msgs
                .iter()
                .map(|&m| {
                    let mut b = BytesMut::new();
                    write(&mut b, m);
                    b
                })
                .collect();
            for read in group(&messages, &sizes) {
                fast.client_sends(&read);
                mid.client_sends(&read);
                for b in &read {
                    slow.client_sends(std::slice::from_ref(b));
                }
            }
            prop_assert_eq!(&fast.to_server, &slow.to_server);
            prop_assert_eq!(fast.state(), slow.state());
            let answers = replies(&slow.ext, fail);
            for read in group(&answers, &sizes) {
                fast.server_sends(&read);
                for b in &read {
                    slow.server_sends(std::slice::from_ref(b));
                }
            }
            for read in cut(&answers, &sizes) {
                mid.server_sends(&read);
            }
            prop_assert_eq!(&fast.to_client, &slow.to_client);
            prop_assert_eq!(fast.state(), slow.state());
            prop_assert_eq!(&mid.to_client, &slow.to_client);
            prop_assert_eq!(mid.state(), slow.state());
        }
        // Byte-at-a-time reads never take the in-place path.
        prop_assert_eq!(slow.as_read, 0);
    }
}

#[test]
fn plain_traffic_goes_as_read() {
    let mut side = Side::new();
    let mut q = BytesMut::new();
    frontend::query(&mut q, "select 1");
    side.client_sends(&q);
    assert_eq!(side.as_read, 1, "a simple query is sent as read");
    assert!(side.ext.book.counting(), "and counted, not queued");
    assert!(!side.ext.quiescent());
    side.server_sends(&query_reply());
    assert_eq!(side.as_read, 2, "its result is sent as read");
    assert!(side.ext.quiescent());
    // A named statement's Bind is rewritten: not as read.
    let mut p = BytesMut::new();
    frontend::parse(&mut p, "s0", b"select 2", &[]);
    frontend::bind_text(&mut p, "", "s0", &[]);
    frontend::sync(&mut p);
    side.client_sends(&p);
    assert_eq!(side.as_read, 2);
    assert!(side.to_server.windows(9).any(|w| w == b"PGSLUICE_"));
}

#[test]
fn lone_query_takes_exactly_one_whole_query() {
    use super::lone_query;
    let q = |body: &[u8]| {
        let mut b = BytesMut::new();
        b.put_u8(b'Q');
        b.put_u32(body.len() as u32 + 4);
        b.extend_from_slice(body);
        b.to_vec()
    };
    let one = q(b"select 1\0");
    assert_eq!(lone_query(&one, 1 << 20), Some(&b"select 1\0"[..]));
    // Two messages, a part of one, a longer one than allowed, another type: the loop.
    assert_eq!(
        lone_query(&[one.clone(), one.clone()].concat(), 1 << 20),
        None
    );
    assert_eq!(lone_query(&one[..one.len() - 1], 1 << 20), None);
    assert_eq!(lone_query(&one[..4], 1 << 20), None);
    assert_eq!(lone_query(&one, 8), None);
    let mut parse = one.clone();
    parse[0] = b'P';
    assert_eq!(lone_query(&parse, 1 << 20), None);
    // A declared length under 4 is for the framer to refuse.
    assert_eq!(lone_query(&[b'Q', 0, 0, 0, 0], 1 << 20), None);
}

#[test]
fn a_remembered_harmless_text_hides_no_other_text() {
    let mut side = Side::new();
    for sql in ["select 1", "select 1", "SET search_path = a", "select 1"] {
        let mut q = BytesMut::new();
        frontend::query(&mut q, sql);
        side.client_sends(&q);
        side.server_sends(&query_reply());
        assert!(side.ext.quiescent());
    }
    assert_eq!(side.ext.book.harmless, b"select 1");
    // The SET between two known harmless texts was read for what it changes.
    assert_eq!(
        side.ext.take_carry().settings,
        vec!["search_path".to_string()]
    );
}

#[test]
fn a_read_that_queues_nothing_counts_nothing() {
    // An unnamed request, counted, then a Flush alone (it expects no reply): one
    // ReadyForQuery settles the connection.
    let mut side = Side::new();
    let mut req = BytesMut::new();
    frontend::parse(&mut req, "", b"select 1", &[]);
    frontend::bind_text(&mut req, "", "", &[]);
    frontend::execute(&mut req, "", 0);
    frontend::sync(&mut req);
    side.client_sends(&req);
    assert!(side.ext.book.counting());
    side.client_sends(&[b'H', 0, 0, 0, 4]);
    let mut answer = BytesMut::new();
    answer.extend_from_slice(&[b'1', 0, 0, 0, 4, b'2', 0, 0, 0, 4]);
    backend::data_row(&mut answer, &[Some("1")]);
    backend::command_complete(&mut answer, "SELECT 1");
    backend::ready_for_query(&mut answer, TxStatus::Idle);
    side.server_sends(&answer);
    assert!(side.ext.quiescent(), "{:?}", side.ext.book.queued());
    assert_eq!(side.as_read, 3, "request and answer went as read");
}
