//! Unit tests of the session's own decisions (no socket, no server): what it answers
//! locally, when a client stops setting up, what an idle wait's end tells the client,
//! what it serves before reading.

use std::sync::Arc;

use bytes::BytesMut;
use pgsluice_protocol::SqlState;

use super::{idle_end, Idle, IdleEnd, Session};
use crate::client::context::ClientContext;
use crate::client::param_request::{first_word, FirstWord};
use crate::client::stop::Stop;
use crate::config::{Config, DatabaseConfig, PoolMode, UserConfig};
use crate::params::ParamSet;
use crate::router::{Target, Work};

fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    v.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    v.extend_from_slice(body);
    v
}

/// Parse of `name` for `query`, no parameter types.
fn parse(name: &str, query: &str) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(name.as_bytes());
    body.push(0);
    body.extend_from_slice(query.as_bytes());
    body.extend_from_slice(&[0, 0, 0]);
    msg(b'P', &body)
}

fn session(pending: &[u8]) -> (Session, Arc<ClientContext>) {
    let mut cfg = Config::default();
    cfg.databases
        .insert("db".into(), DatabaseConfig::new("127.0.0.1"));
    cfg.users.insert(
        "u".into(),
        UserConfig {
            password: Some("pw".into()),
            ..Default::default()
        },
    );
    let (ctx, _shutdown) = ClientContext::for_tests(cfg);
    let route = ctx.router.route("db", "u").expect("a configured database");
    let cancel = ctx.cancel.register();
    let s = Session::new(ctx.clone(), route, ParamSet::default(), cancel, pending);
    (s, ctx)
}

#[tokio::test]
async fn the_route_sends_work_to_the_clients_pool() {
    let (s, _ctx) = session(b"");
    let Target::One(p) = s.route.target(Work::unclassified(b"Q")) else {
        panic!("one pool")
    };
    assert!(Arc::ptr_eq(p, s.route.home()));
    assert_eq!(s.route.mode(), PoolMode::Transaction);
}

#[tokio::test]
async fn a_prepare_of_a_statement_a_server_accepted_is_answered_locally() {
    let (mut s, ctx) = session(b"");
    // The registry keeps statements that someone holds: this test holds it.
    let stmt = ctx.statements.intern(b"select 1", &[]);
    stmt.mark_verified();
    let mut req = parse("s1", "select 1");
    req.extend(msg(b'S', b""));
    let reply = s.answer_locally(&req).expect("answered without a server");
    let mut want = msg(b'1', b"");
    want.extend(msg(b'Z', b"I"));
    assert_eq!(&reply[..], &want[..]);
    assert!(s.stmts.contains("s1"));
    // The same name again is the client's error to get from PostgreSQL: not local.
    assert!(s.answer_locally(&req).is_none());
}

#[tokio::test]
async fn other_prepares_go_to_a_server() {
    let (mut s, ctx) = session(b"");
    // Never accepted by a server.
    let mut req = parse("s1", "select 2");
    req.extend(msg(b'S', b""));
    assert!(s.answer_locally(&req).is_none());
    // Unnamed, or followed by more than a Sync.
    let stmt = ctx.statements.intern(b"select 1", &[]);
    stmt.mark_verified();
    let mut unnamed = parse("", "select 1");
    unnamed.extend(msg(b'S', b""));
    assert!(s.answer_locally(&unnamed).is_none());
    let mut with_bind = parse("s2", "select 1");
    with_bind.extend(msg(b'B', b"\0s2\0\0\0\0\0\0\0"));
    with_bind.extend(msg(b'S', b""));
    assert!(s.answer_locally(&with_bind).is_none());
    // No Sync yet: the client may still send an Execute.
    assert!(s.answer_locally(&parse("s3", "select 1")).is_none());
    assert!(s.stmts.is_empty());
}

#[tokio::test]
async fn setting_up_ends_at_the_first_request_that_sets_nothing() {
    let (mut s, _ctx) = session(b"");
    // A parameter PostgreSQL does not report: pgsluice runs the SET and carries it.
    let set = msg(b'Q', b"SET myapp.tenant = 'x'\0");
    let plan = |s: &mut Session, m: &[u8], mode| s.param_plan(m, mode, first_word(m));
    assert_eq!(first_word(&set), FirstWord::Set);
    assert!(plan(&mut s, &set, PoolMode::Transaction).is_some());
    assert!(s.setting_up);
    // Still a parameter request: search_path is tracked (read back), nothing to plan.
    let path = msg(b'Q', b"SET search_path = a\0");
    assert!(plan(&mut s, &path, PoolMode::Transaction).is_none());
    assert!(s.setting_up);
    let select = msg(b'Q', b"select 1\0");
    assert_eq!(first_word(&select), FirstWord::Other);
    assert!(plan(&mut s, &select, PoolMode::Transaction).is_none());
    assert!(!s.setting_up);
    // Session mode: the server keeps its settings; nothing to plan.
    let (mut s, _ctx) = session(b"");
    assert!(plan(&mut s, &set, PoolMode::Session).is_none());
    assert_eq!(
        first_word(&msg(b'Q', b" UNLISTEN *\0")),
        FirstWord::Unlisten
    );
    assert_eq!(first_word(&msg(b'Q', b"settle\0")), FirstWord::Other);
    assert_eq!(first_word(&msg(b'Q', b"set_x = 1\0")), FirstWord::Other);
    assert_eq!(first_word(&msg(b'Q', b"listen2\0")), FirstWord::Other);
}

#[tokio::test]
async fn bytes_that_came_with_the_login_are_served_before_a_stop() {
    let q = msg(b'Q', b"select 1\0");
    let (mut s, _ctx) = session(&q);
    assert!(s.has_pending());
    match s.ready_work(Some(Stop::Shutdown)) {
        Idle::Data(b) => assert_eq!(&b[..], &q[..]),
        _ => panic!("the pending request comes first"),
    }
    assert!(matches!(
        s.ready_work(Some(Stop::Shutdown)),
        Idle::End(IdleEnd::Stopped(Stop::Shutdown))
    ));
    s.set_pending(BytesMut::from(&b"X\0\0\0\x04"[..]));
    assert!(matches!(s.ready_work(None), Idle::Data(_)));
    assert!(matches!(s.ready_work(None), Idle::End(IdleEnd::Closed)));
}

#[test]
fn what_an_idle_end_tells_the_client() {
    let (n, reason) = idle_end(IdleEnd::Timeout);
    assert_eq!(n.expect("a FATAL").code, SqlState::IDLE_SESSION_TIMEOUT);
    assert_eq!(reason, "client_idle_timeout");
    let (n, reason) = idle_end(IdleEnd::Stopped(Stop::Killed));
    let n = n.expect("a FATAL");
    assert_eq!(n.code, SqlState::ADMIN_SHUTDOWN);
    assert_eq!(n.message, "admin forced disconnect");
    assert_eq!(reason, "killed by admin command");
    let (n, reason) = idle_end(IdleEnd::Stopped(Stop::Shutdown));
    assert_eq!(n.expect("a FATAL").code, SqlState::ADMIN_SHUTDOWN);
    assert_eq!(reason, "shutdown");
    assert!(matches!(idle_end(IdleEnd::Closed), (None, "client closed")));
}

#[test]
fn a_finished_requests_read_buffer_serves_the_next_read() {
    use super::buffers::{idle_read_buffer, recycle_read_buffer, SPARE_READ};
    use super::IDLE_READ;
    let mut first = idle_read_buffer();
    first.extend_from_slice(b"Q\0\0\0\x0dselect 1\0");
    let at = first.as_ptr();
    recycle_read_buffer(first);
    let again = idle_read_buffer();
    assert_eq!(again.as_ptr(), at, "the spare is reused");
    assert!(again.is_empty());
    // A buffer that grew past an idle read's size is freed, not kept.
    let mut grown = again;
    grown.reserve(IDLE_READ * 4);
    recycle_read_buffer(grown);
    assert_eq!(SPARE_READ.with_borrow(Vec::len), 0);
}
