//! The session driver of a sharded database's clients. Where the ordinary session
//! relays bytes to one server connection, this driver reads whole frontend messages,
//! asks the database's [`Planner`](crate::shard::plan::Planner) where each statement
//! runs, checks connections out of the chosen shards' pools and answers the client
//! from their replies: one shard's reply as it is, every shard's combined (DDL, split
//! INSERTs, COPY, SELECTs merged by [`crate::shard::merge`]), or a refusal.
//!
//! Transactions: BEGIN is answered here and sent to the first shard the transaction
//! touches; every later statement must run on that shard (another one, or every
//! shard, is refused and fails the transaction, as PostgreSQL fails a transaction
//! after an error). The connection is held until COMMIT or ROLLBACK (transaction
//! pooling whatever the pool mode). Connections are given back only when their last
//! ReadyForQuery said idle and nothing is pending; a connection that ran a session
//! SET, or anything unfinished, is closed instead.
//!
//! The driver loop and the simple protocol are here; transaction blocks are in
//! `shard_txn.rs`, statements over several shards (split INSERT, merged SELECT) in
//! `shard_multi.rs`, the extended protocol in `shard_extended.rs` (result formats in
//! `shard_binary.rs`), COPY in `shard_copy.rs`, the server side in `shard_conn.rs`.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::BytesMut;
use pgsluice_protocol::backend::{self, tag as btag, TxStatus};
use pgsluice_protocol::frame::{split_message, Message};
use pgsluice_protocol::frontend::{self, tag as ftag};
use pgsluice_protocol::SqlState;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::conclude::Next;
use super::context::ClientContext;
use super::shard_conn::{lookup_catalog, put_error, put_message, Broken, ShardConn};
use crate::cancel::CancelHandle;
use crate::error::ClientNotice;
use crate::net::Stream;
use crate::params::ParamSet;
use crate::pool::listing::ClientInfo;
use crate::router::{Route, ShardSet};
use crate::shard::plan::{Plan, TxnCommand};
use crate::sync::LockExt;

/// Output is written to the client once this much is buffered.
const FLUSH_AT: usize = 64 * 1024;

/// A prepared statement of the client (the unnamed one under "").
#[derive(Debug, Clone)]
pub(super) struct Stmt {
    pub(super) sql: Arc<str>,
    pub(super) param_types: Vec<u32>,
}

/// What a client of a sharded database keeps between requests (in its route).
#[derive(Debug, Default)]
pub(super) struct ShardClient {
    /// Its prepared statements: parsed again on whichever shard runs them.
    pub(super) stmts: HashMap<String, Stmt>,
    /// `SET pgsluice.shard = n`.
    pub(super) override_shard: Option<usize>,
}

/// An open transaction block.
#[derive(Debug)]
pub(super) struct Txn {
    /// The shard it runs on, once a statement touched one.
    pub(super) shard: Option<usize>,
    /// The client's BEGIN, sent to that shard first ("" when the block was opened by
    /// a statement the shard ran).
    pub(super) begin: String,
    /// Failed by a refusal here (the shard itself reports its own failures).
    pub(super) failed: bool,
}

/// One request's driver: from an idle client's first bytes until it is idle again
/// (outside a transaction, nothing pending).
pub(super) struct Driver<'a> {
    pub(super) set: &'a Arc<ShardSet>,
    info: &'a Arc<ClientInfo>,
    /// The client's cancel key: while connections are held, a cancel reaches them all.
    cancel: &'a CancelHandle,
    pub(super) params: &'a mut ParamSet,
    stream: &'a mut Stream,
    inbuf: BytesMut,
    pub(super) client: ShardClient,
    pub(super) conns: Vec<Option<ShardConn>>,
    pub(super) txn: Option<Txn>,
    pub(super) out: BytesMut,
    /// An error in the current extended-protocol batch: the rest up to Sync is skipped.
    pub(super) skip: bool,
    max_message: u32,
}

/// Serves an idle client's request on a sharded database; `prefix` holds what was
/// read so far. Returns how the session goes on and bytes of a next request already
/// read.
pub(super) async fn serve(
    ctx: &Arc<ClientContext>,
    route: &Route,
    params: &mut ParamSet,
    stream: &mut Stream,
    info: &Arc<ClientInfo>,
    cancel: &CancelHandle,
    prefix: BytesMut,
) -> (Next, Option<BytesMut>) {
    let Some((set, slot)) = route.shards() else {
        let n = ClientNotice::fatal(SqlState::INTERNAL_ERROR, "not a sharded database");
        return (Next::End(Some(n), "internal error"), None);
    };
    let client = slot
        .locked()
        .get_mut::<ShardClient>()
        .map(std::mem::take)
        .unwrap_or_default();
    let max_message = ctx.live.relay_values().max_message;
    let mut d = Driver {
        set,
        info,
        cancel,
        params,
        stream,
        inbuf: prefix,
        client,
        conns: (0..set.pools().len()).map(|_| None).collect(),
        txn: None,
        out: BytesMut::with_capacity(1024),
        skip: false,
        max_message,
    };
    let next = d.run().await;
    // Connections still held (the session ends): given back only if clean.
    d.release_all();
    *slot.locked().get_or_insert_with(ShardClient::default) = std::mem::take(&mut d.client);
    let rest = std::mem::take(&mut d.inbuf);
    (next, (!rest.is_empty()).then_some(rest))
}

impl Driver<'_> {
    async fn run(&mut self) -> Next {
        let mut batch: Vec<Message> = Vec::new();
        loop {
            let m = match split_message(&mut self.inbuf, self.max_message) {
                Ok(Some(m)) => m,
                Ok(None) => {
                    if batch.is_empty() && self.txn.is_none() && self.inbuf.is_empty() {
                        return Next::Continue;
                    }
                    match self.stream.read_buf(&mut self.inbuf).await {
                        Ok(0) | Err(_) => return Next::End(None, "client closed"),
                        Ok(_) => continue,
                    }
                }
                Err(e) => {
                    let n = ClientNotice::fatal(SqlState::PROTOCOL_VIOLATION, e.to_string());
                    return Next::End(Some(n), "protocol violation");
                }
            };
            let done = match m.tag {
                ftag::TERMINATE => return Next::End(None, "client terminated"),
                ftag::QUERY => self.simple(&m).await,
                ftag::PARSE | ftag::BIND | ftag::DESCRIBE | ftag::EXECUTE | ftag::CLOSE => {
                    batch.push(m);
                    Ok(())
                }
                ftag::SYNC => self.extended(std::mem::take(&mut batch), true).await,
                ftag::FLUSH => self.extended(std::mem::take(&mut batch), false).await,
                // Outside COPY, as PostgreSQL does: ignored.
                ftag::COPY_DATA | ftag::COPY_DONE | ftag::COPY_FAIL => Ok(()),
                _ => {
                    put_error(
                        &mut self.out,
                        SqlState::FEATURE_NOT_SUPPORTED,
                        "this message type is not supported on a sharded database",
                    );
                    self.ready();
                    Ok(())
                }
            };
            let flushed = match done {
                Ok(()) => self.flush().await,
                Err(e) => Err(e),
            };
            match flushed {
                Ok(()) => {}
                Err(Broken::Client) => return Next::End(None, "client connection error"),
                Err(Broken::Server(n)) => return Next::End(Some(n), "server connection lost"),
            }
            if self.txn.is_none() && batch.is_empty() {
                self.release_all();
            }
        }
    }

    /// Writes what is buffered for the client.
    pub(super) async fn flush(&mut self) -> Result<(), Broken> {
        if self.out.is_empty() {
            return Ok(());
        }
        let r = self.stream.write_all(&self.out).await;
        self.out.clear();
        r.map_err(|_| Broken::Client)
    }

    /// Writes the buffer when it grew large (long results stream out).
    pub(super) async fn flush_if_big(&mut self) -> Result<(), Broken> {
        if self.out.len() >= FLUSH_AT {
            self.flush().await
        } else {
            Ok(())
        }
    }

    /// The next whole message from the client (inside COPY).
    pub(super) async fn read_client(&mut self) -> Result<Message, Broken> {
        loop {
            match split_message(&mut self.inbuf, self.max_message) {
                Ok(Some(m)) => return Ok(m),
                Ok(None) => {}
                Err(_) => return Err(Broken::Client),
            }
            match self.stream.read_buf(&mut self.inbuf).await {
                Ok(0) | Err(_) => return Err(Broken::Client),
                Ok(_) => {}
            }
        }
    }

    /// Gives every held connection back (clean ones to their pool, others closed).
    fn release_all(&mut self) {
        for c in self.conns.iter_mut() {
            if let Some(c) = c.take() {
                c.release();
            }
        }
        self.cancel.attach_shards(Vec::new());
    }

    /// The connection of shard `shard`, checked out if not held yet.
    pub(super) async fn conn(&mut self, shard: usize) -> Result<&mut ShardConn, Broken> {
        if self.conns[shard].is_none() {
            let c = ShardConn::checkout(self.set, shard, self.info, self.params).await?;
            self.conns[shard] = Some(c);
            let targets = self
                .conns
                .iter_mut()
                .flatten()
                .map(ShardConn::cancel_target)
                .collect();
            self.cancel.attach_shards(targets);
        }
        Ok(self.conns[shard]
            .as_mut()
            .expect("held or just checked out"))
    }

    /// The transaction status the client is told.
    pub(super) fn status(&self) -> TxStatus {
        match &self.txn {
            None => TxStatus::Idle,
            Some(t) if t.failed => TxStatus::Failed,
            Some(Txn { shard: Some(s), .. }) => self.conns[*s]
                .as_ref()
                .map_or(TxStatus::InTransaction, |c| c.status),
            Some(_) => TxStatus::InTransaction,
        }
    }

    /// Appends ReadyForQuery with the client's status.
    pub(super) fn ready(&mut self) {
        let status = self.status();
        backend::ready_for_query(&mut self.out, status);
    }

    /// Appends an error; inside a transaction block it fails the block.
    pub(super) fn refuse(&mut self, code: SqlState, message: &str) {
        self.set.count_refused();
        put_error(&mut self.out, code, message);
        if let Some(t) = &mut self.txn {
            t.failed = true;
        }
    }

    /// Reads the first shard's catalog when the planner needs it.
    pub(super) async fn ensure_catalog(&mut self) -> Result<(), Broken> {
        if !self.set.catalog_stale() {
            return Ok(());
        }
        let set = self.set.clone();
        let _one = set.lookup.lock().await;
        if !set.catalog_stale() {
            return Ok(());
        }
        let conn = self.conn(0).await?;
        if conn.status == TxStatus::Failed {
            return Ok(());
        }
        lookup_catalog(&set, conn).await
    }

    /// The plan of `sql`, with the client's `SET pgsluice.shard` applied.
    pub(super) fn plan(&self, sql: &str) -> Arc<Plan> {
        let plan = self.set.planner().plan(sql);
        match (self.client.override_shard, &*plan) {
            (
                Some(n),
                Plan::Home
                | Plan::Shard(_)
                | Plan::ByParam { .. }
                | Plan::FanOut(_)
                | Plan::SplitInsert(_),
            ) => Arc::new(Plan::Shard(n)),
            _ => plan,
        }
    }

    /// After a statement ran on shard `shard` alone: its status opens, keeps or ends
    /// the client's transaction block.
    pub(super) fn after_single(&mut self, shard: usize) {
        let status = self.conns[shard]
            .as_ref()
            .map_or(TxStatus::Idle, |c| c.status);
        match (status, &mut self.txn) {
            (TxStatus::Idle, _) => self.txn = None,
            (_, Some(t)) => t.shard = Some(shard),
            (_, None) => {
                self.txn = Some(Txn {
                    shard: Some(shard),
                    begin: String::new(),
                    failed: false,
                })
            }
        }
    }

    /// A simple Query.
    async fn simple(&mut self, m: &Message) -> Result<(), Broken> {
        let sql = match frontend::parse_query(&m.body).map(std::str::from_utf8) {
            Ok(Ok(s)) => s.to_owned(),
            _ => {
                put_error(
                    &mut self.out,
                    SqlState::CHARACTER_NOT_IN_REPERTOIRE,
                    "a sharded database takes UTF-8 statements only",
                );
                self.ready();
                return Ok(());
            }
        };
        if self.txn.as_ref().is_some_and(|t| t.failed) && !is_txn_end(&self.plan(&sql)) {
            self.aborted();
            return Ok(());
        }
        self.ensure_catalog().await?;
        let plan = self.plan(&sql);
        match &*plan {
            Plan::Refuse(u) => {
                self.refuse(u.sqlstate, &u.message);
                self.ready();
            }
            Plan::Transaction(cmd) => self.txn_command(cmd, m).await?,
            Plan::SetShard(n) => {
                self.set_shard(*n);
                self.ready();
            }
            _ if self.txn.is_some() => self.in_txn(&plan, m).await?,
            Plan::Home => self.single(0, m).await?,
            Plan::Shard(i) => self.single(*i, m).await?,
            Plan::All => self.all(m).await?,
            Plan::SplitInsert(parts) => self.split_insert(parts).await?,
            Plan::FanOut(mp) => {
                let text = mp.shard_sql().unwrap_or(&sql).to_owned();
                self.fan_out(mp, &text).await?;
            }
            Plan::CopyIn {
                table,
                key_column,
                options,
            } => self.copy_in(m, *table, *key_column, options).await?,
            Plan::ByParam { .. } => {
                self.refuse(
                    SqlState::FEATURE_NOT_SUPPORTED,
                    "a statement with parameters needs the extended protocol",
                );
                self.ready();
            }
        }
        Ok(())
    }

    /// The error of a statement in a failed transaction block.
    pub(super) fn aborted(&mut self) {
        put_error(
            &mut self.out,
            SqlState::IN_FAILED_SQL_TRANSACTION,
            "current transaction is aborted, commands ignored until end of transaction block",
        );
        self.ready();
    }

    /// `SET pgsluice.shard` / `RESET pgsluice.shard`, answered here.
    pub(super) fn set_shard(&mut self, n: Option<usize>) {
        let shards = self.set.pools().len();
        match n {
            Some(n) if n >= shards => put_error(
                &mut self.out,
                SqlState::INVALID_PARAMETER_VALUE,
                &format!(
                    "shard {n} does not exist: the database has {shards} shards (0 to {})",
                    shards - 1
                ),
            ),
            Some(_) => {
                self.client.override_shard = n;
                backend::command_complete(&mut self.out, "SET");
            }
            None => {
                self.client.override_shard = None;
                backend::command_complete(&mut self.out, "RESET");
            }
        }
    }

    /// Sends `m` to shard `shard` and relays its reply, ReadyForQuery included.
    pub(super) async fn single(&mut self, shard: usize, m: &Message) -> Result<(), Broken> {
        self.set.count_single(shard);
        let mut req = BytesMut::with_capacity(m.body.len() + 5);
        put_message(&mut req, m);
        self.conn(shard).await?.send(&req).await?;
        loop {
            let r = self.conn(shard).await?.next().await?;
            if r.tag == btag::PARAMETER_STATUS {
                if let Ok((k, v)) = backend::parse_parameter_status(&r.body) {
                    self.params.set(k, v);
                }
            }
            if r.tag == btag::COMMAND_COMPLETE && changes_session(&r.body) {
                self.conn(shard).await?.dirty = true;
            }
            put_message(&mut self.out, &r);
            if r.tag == btag::READY_FOR_QUERY {
                break;
            }
            self.flush_if_big().await?;
        }
        self.after_single(shard);
        Ok(())
    }

    /// Sends `req` to every shard and reads every reply: the first shard's messages,
    /// and the first error of any.
    pub(super) async fn on_every_shard(
        &mut self,
        req: &[u8],
    ) -> Result<(Vec<Message>, Option<Message>), Broken> {
        let n = self.set.pools().len();
        for i in 0..n {
            self.conn(i).await?.send(req).await?;
        }
        let mut first = Vec::new();
        let mut error = None;
        for i in 0..n {
            let (msgs, err) = self.conn(i).await?.collect().await?;
            if i == 0 {
                first = msgs;
            }
            if error.is_none() {
                error = err;
            }
        }
        Ok((first, error))
    }

    /// A statement for every shard (DDL): the first shard's reply once all succeeded,
    /// else the first error.
    async fn all(&mut self, m: &Message) -> Result<(), Broken> {
        self.set.count_fanout();
        let mut req = BytesMut::with_capacity(m.body.len() + 5);
        put_message(&mut req, m);
        let (first, error) = self.on_every_shard(&req).await?;
        self.set.mark_catalog_stale();
        if let Some(e) = self.rollback_open_blocks().await? {
            put_error(&mut self.out, SqlState::FEATURE_NOT_SUPPORTED, &e);
        } else if let Some(e) = error {
            put_message(&mut self.out, &e);
        } else {
            for r in &first {
                put_message(&mut self.out, r);
            }
        }
        self.ready();
        Ok(())
    }

    /// Rolls back the blocks a statement over several shards left open (a block over
    /// several shards is not supported); the refusal's text if there were any.
    pub(super) async fn rollback_open_blocks(&mut self) -> Result<Option<String>, Broken> {
        let mut any = false;
        for i in 0..self.conns.len() {
            let open = self.conns[i]
                .as_ref()
                .is_some_and(|c| c.status != TxStatus::Idle);
            if open {
                any = true;
                let _ = self.conn(i).await?.run_quiet("ROLLBACK").await?;
            }
        }
        Ok(any.then(|| {
            "a transaction block over several shards is not supported (rolled back on every shard)"
                .to_owned()
        }))
    }
}

/// Whether a plan ends a transaction block (allowed in a failed one).
fn is_txn_end(plan: &Plan) -> bool {
    matches!(
        plan,
        Plan::Transaction(TxnCommand::Commit | TxnCommand::Rollback)
    )
}

/// The row count at the end of a CommandComplete tag (`INSERT 0 5`, `COPY 3`).
pub(super) fn tag_count(body: &[u8]) -> u64 {
    let text = body.strip_suffix(&[0]).unwrap_or(body);
    std::str::from_utf8(text)
        .ok()
        .and_then(|t| t.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Whether a CommandComplete tag is of a statement that changes the session beyond
/// the transaction (SET, RESET, DISCARD, PREPARE, LISTEN...): such a connection is
/// closed rather than given to another client.
pub(super) fn changes_session(body: &[u8]) -> bool {
    let text = body.strip_suffix(&[0]).unwrap_or(body);
    matches!(
        text,
        b"SET"
            | b"RESET"
            | b"DISCARD ALL"
            | b"DISCARD"
            | b"PREPARE"
            | b"LISTEN"
            | b"DECLARE CURSOR"
    ) || text.starts_with(b"CREATE TEMP")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_come_from_command_tags() {
        assert_eq!(tag_count(b"INSERT 0 12\0"), 12);
        assert_eq!(tag_count(b"COPY 300\0"), 300);
        assert_eq!(tag_count(b"BEGIN\0"), 0);
    }

    #[test]
    fn session_changes_are_recognised() {
        assert!(changes_session(b"SET\0"));
        assert!(changes_session(b"DISCARD ALL\0"));
        assert!(!changes_session(b"SELECT 1\0"));
        assert!(!changes_session(b"INSERT 0 1\0"));
    }
}
