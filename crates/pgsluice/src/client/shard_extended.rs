//! The extended protocol on a sharded database. The client's messages up to Sync (or
//! Flush) are taken one by one: Parse is remembered (and answered here when nothing
//! is in flight), Bind is planned with its statement's text and parameters (the key
//! parameter hashed as text or binary, by the Bind's format codes) and goes with a
//! fresh unnamed Parse of the statement to the chosen shard, so that the shard never
//! needs a named statement it may not have. Messages for one shard (or every shard,
//! for DDL) form a *segment*, sent together and ended with a Sync of its own when the
//! next message goes elsewhere; the client sees one reply stream, in order, and one
//! ReadyForQuery at its Sync. After an error the rest up to Sync is skipped, as
//! PostgreSQL does.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use pgsluice_protocol::backend::{self, tag as btag};
use pgsluice_protocol::frame::{Message, Reader};
use pgsluice_protocol::frontend::{self, tag as ftag};
use pgsluice_protocol::{ProtocolError, SqlState};

use super::shard_conn::{put_error, put_message, Broken};
use super::shard_session::{Driver, Stmt};
use crate::shard::hash::{key_from_binary, key_from_text, partition_hash, shard_of_hash};
use crate::shard::merge::MergePlan;
use crate::shard::plan::{Plan, TxnCommand};
use crate::shard::{KeyType, KeyValue};

/// Messages bound for the same shard(s), not sent yet.
pub(super) struct Segment {
    /// Where they go; the first shard's replies are the client's.
    pub(super) shards: Vec<usize>,
    pub(super) req: BytesMut,
    /// For each Parse in `req`, in order: whether its ParseComplete is the client's
    /// (false for the Parses pgsluice adds).
    pub(super) parses: VecDeque<bool>,
    /// A SELECT over every shard: its replies are merged.
    pub(super) merge: Option<FanOutMerge>,
}

/// What a segment running one SELECT on every shard needs to merge the replies.
pub(super) struct FanOutMerge {
    pub(super) plan: Arc<MergePlan>,
    /// The client's result format codes (the shards are asked for text).
    pub(super) formats: Vec<i16>,
    /// The client asked for the portal's RowDescription.
    pub(super) describe: bool,
}

impl Segment {
    pub(super) fn new(shards: Vec<usize>) -> Segment {
        Segment {
            shards,
            req: BytesMut::with_capacity(256),
            parses: VecDeque::new(),
            merge: None,
        }
    }

    fn merging(seg: &Option<Segment>) -> bool {
        seg.as_ref().is_some_and(|s| s.merge.is_some())
    }

    /// Adds an unnamed Parse of `stmt`, its ParseComplete swallowed.
    fn add_parse(&mut self, stmt: &Stmt) {
        frontend::parse(&mut self.req, "", stmt.sql.as_bytes(), &stmt.param_types);
        self.parses.push_back(false);
    }
}

/// Where a portal of this batch runs.
pub(super) enum PortalAt {
    /// On these shards (the segment's).
    Shards(Vec<usize>),
    /// Answered here: transaction control or `SET pgsluice.shard`.
    Local(Plan, String),
}

/// A frontend message that could not be decoded.
pub(super) fn malformed(e: ProtocolError) -> (SqlState, String) {
    (SqlState::PROTOCOL_VIOLATION, e.to_string())
}

impl Driver<'_> {
    /// Runs the extended-protocol messages of `batch`; `sync`: the client sent Sync
    /// (else Flush) after them.
    pub(super) async fn extended(&mut self, batch: Vec<Message>, sync: bool) -> Result<(), Broken> {
        let mut seg: Option<Segment> = None;
        let mut portals: HashMap<String, PortalAt> = HashMap::new();
        for m in &batch {
            match self.ext_message(m, &mut seg, &mut portals).await? {
                Ok(()) => {}
                Err((code, message)) => {
                    self.close_segment(&mut seg).await?;
                    self.refuse(code, &message);
                    break;
                }
            }
            if self.skip {
                break;
            }
        }
        self.close_segment(&mut seg).await?;
        self.skip = false;
        if sync {
            self.ready();
        }
        Ok(())
    }

    /// One message; `Err` inside: the client's error (the rest up to Sync skipped).
    async fn ext_message(
        &mut self,
        m: &Message,
        seg: &mut Option<Segment>,
        portals: &mut HashMap<String, PortalAt>,
    ) -> Result<Result<(), (SqlState, String)>, Broken> {
        // Describe S, Describe P and Execute after the Bind belong to a merging
        // segment (tokio-postgres sends Parse, Bind, Describe S, Execute, Sync).
        let own_step = matches!(m.tag, ftag::EXECUTE | ftag::DESCRIBE);
        if Segment::merging(seg) && !own_step {
            self.close_segment(seg).await?;
            if self.skip {
                return Ok(Ok(()));
            }
        }
        match m.tag {
            ftag::PARSE => {
                let p = match frontend::parse_parse(&m.body) {
                    Ok(p) => p,
                    Err(e) => return Ok(Err(malformed(e))),
                };
                let Ok(sql) = std::str::from_utf8(p.query) else {
                    return Ok(Err((
                        SqlState::CHARACTER_NOT_IN_REPERTOIRE,
                        "a sharded database takes UTF-8 statements only".into(),
                    )));
                };
                self.ensure_catalog().await?;
                if let Plan::Refuse(u) = &*self.plan(sql) {
                    return Ok(Err((u.sqlstate, u.message.clone())));
                }
                let stmt = Stmt {
                    sql: sql.into(),
                    param_types: p.param_types.clone(),
                };
                match seg {
                    Some(s) => {
                        frontend::parse(&mut s.req, "", sql.as_bytes(), &stmt.param_types);
                        s.parses.push_back(true);
                    }
                    None => backend::parse_complete(&mut self.out),
                }
                self.client.stmts.insert(p.name.to_owned(), stmt);
            }
            ftag::BIND => return self.bind(m, seg, portals).await,
            ftag::DESCRIBE => {
                let (kind, name) = match frontend::parse_target(&m.body) {
                    Ok(t) => t,
                    Err(e) => return Ok(Err(malformed(e))),
                };
                if kind == b'S' {
                    let Some(stmt) = self.client.stmts.get(name).cloned() else {
                        return Ok(Err(no_statement(name)));
                    };
                    if let Some(Segment {
                        req,
                        merge: Some(merge),
                        ..
                    }) = seg
                    {
                        // Its ParameterDescription comes from the first shard; its
                        // RowDescription is the merged result's.
                        frontend::target_message(req, ftag::DESCRIBE, b'S', "");
                        merge.describe = true;
                        return Ok(Ok(()));
                    }
                    let s = seg.get_or_insert_with(|| {
                        let shard = self.txn.as_ref().and_then(|t| t.shard).unwrap_or(0);
                        Segment::new(vec![shard])
                    });
                    s.add_parse(&stmt);
                    frontend::target_message(&mut s.req, ftag::DESCRIBE, b'S', "");
                } else {
                    match portals.get(name) {
                        Some(PortalAt::Shards(sh))
                            if seg.as_ref().is_some_and(|s| s.shards == *sh) =>
                        {
                            if let Some(s) = seg {
                                match &mut s.merge {
                                    // Described already (the merge needs it).
                                    Some(merge) => merge.describe = true,
                                    None => put_message(&mut s.req, m),
                                }
                            }
                        }
                        Some(PortalAt::Local(..)) => {
                            self.close_segment(seg).await?;
                            backend::no_data(&mut self.out);
                        }
                        _ => return Ok(Err(no_portal(name))),
                    }
                }
            }
            ftag::EXECUTE => {
                let name = match Reader::new(&m.body).cstr() {
                    Ok(n) => n.to_owned(),
                    Err(e) => return Ok(Err(malformed(e))),
                };
                match portals.get(&name) {
                    Some(PortalAt::Shards(sh)) if seg.as_ref().is_some_and(|s| s.shards == *sh) => {
                        if let Some(s) = seg {
                            put_message(&mut s.req, m);
                        }
                        if Segment::merging(seg) {
                            self.close_segment(seg).await?;
                        }
                    }
                    Some(PortalAt::Local(plan, sql)) => {
                        let (plan, sql) = (plan.clone(), sql.clone());
                        self.close_segment(seg).await?;
                        return self.run_local(&plan, &sql).await;
                    }
                    _ => return Ok(Err(no_portal(&name))),
                }
            }
            ftag::CLOSE => {
                let (kind, name) = match frontend::parse_target(&m.body) {
                    Ok(t) => t,
                    Err(e) => return Ok(Err(malformed(e))),
                };
                if kind == b'S' {
                    self.client.stmts.remove(name);
                } else {
                    portals.remove(name);
                }
                match seg {
                    // Closing the unnamed statement there is harmless (every Bind
                    // parses again) and keeps the CloseComplete in order.
                    Some(s) => frontend::target_message(&mut s.req, ftag::CLOSE, b'S', ""),
                    None => close_complete(&mut self.out),
                }
            }
            _ => {}
        }
        Ok(Ok(()))
    }

    /// A Bind: planned with its statement's text and parameters.
    async fn bind(
        &mut self,
        m: &Message,
        seg: &mut Option<Segment>,
        portals: &mut HashMap<String, PortalAt>,
    ) -> Result<Result<(), (SqlState, String)>, Broken> {
        let (portal, stmt_name, names_len) = match frontend::bind_names(&m.body) {
            Ok(Some(n)) => n,
            Ok(None) => return Ok(Err(malformed(ProtocolError::Malformed("Bind")))),
            Err(e) => return Ok(Err(malformed(e))),
        };
        let Some(stmt) = self.client.stmts.get(stmt_name).cloned() else {
            return Ok(Err(no_statement(stmt_name)));
        };
        let plan = self.plan(&stmt.sql);
        let failed = self.txn.as_ref().is_some_and(|t| t.failed);
        let ends = matches!(
            &*plan,
            Plan::Transaction(TxnCommand::Commit | TxnCommand::Rollback)
        );
        if failed && !ends {
            return Ok(Err((
                SqlState::IN_FAILED_SQL_TRANSACTION,
                "current transaction is aborted, commands ignored until end of transaction block"
                    .into(),
            )));
        }
        let shards = self.set.pools().len();
        let target: Vec<usize> = match &*plan {
            Plan::Home => vec![0],
            Plan::Shard(i) => vec![*i],
            Plan::ByParam { index, key_type } => {
                // A parameter the client declared as another integer type (psycopg
                // sends small ints as int2) is read as that type: integers hash
                // alike whatever their width.
                let int = |t: KeyType| {
                    matches!(t, KeyType::SmallInt | KeyType::Integer | KeyType::BigInt)
                };
                let key_type = stmt
                    .param_types
                    .get(*index)
                    .and_then(|&oid| KeyType::from_oid(oid))
                    .filter(|t| int(*t) && int(*key_type))
                    .unwrap_or(*key_type);
                match bind_key(&m.body[names_len..], *index, key_type, shards) {
                    Ok(s) => vec![s],
                    Err(e) => return Ok(Err(e)),
                }
            }
            Plan::All => (0..shards).collect(),
            Plan::Transaction(_) | Plan::SetShard(_) => {
                self.close_segment(seg).await?;
                backend::bind_complete(&mut self.out);
                portals.insert(
                    portal.to_owned(),
                    PortalAt::Local(plan.as_ref().clone(), stmt.sql.to_string()),
                );
                return Ok(Ok(()));
            }
            Plan::Refuse(u) => return Ok(Err((u.sqlstate, u.message.clone()))),
            Plan::FanOut(mp) => {
                return self
                    .bind_fan_out(mp, &stmt, portal, &m.body[names_len..], seg, portals)
                    .await
            }
            Plan::SplitInsert(_) | Plan::CopyIn { .. } => {
                return Ok(Err((
                    SqlState::FEATURE_NOT_SUPPORTED,
                    "a multi-row INSERT over several shards or a COPY is supported through the simple query protocol only on a sharded database".into(),
                )))
            }
        };
        if seg
            .as_ref()
            .is_some_and(|s| s.shards != target || s.merge.is_some())
        {
            self.close_segment(seg).await?;
            if self.skip {
                return Ok(Ok(()));
            }
        }
        if self.txn.is_some() {
            let one = (target.len() == 1).then(|| target[0]);
            if self.join_txn(one).await?.is_none() {
                self.skip = true;
                return Ok(Ok(()));
            }
        }
        if target.len() == 1 {
            self.set.count_single(target[0]);
        } else {
            self.set.count_fanout();
        }
        let s = seg.get_or_insert_with(|| Segment::new(target.clone()));
        s.add_parse(&stmt);
        // The Bind again, to the unnamed statement.
        let rest = &m.body[names_len..];
        s.req.put_u8(ftag::BIND);
        s.req.put_u32((4 + portal.len() + 2 + rest.len()) as u32);
        s.req.put_slice(portal.as_bytes());
        s.req.put_u8(0);
        s.req.put_u8(0);
        s.req.put_slice(rest);
        portals.insert(portal.to_owned(), PortalAt::Shards(target));
        Ok(Ok(()))
    }

    /// Sends the open segment with a Sync and relays its replies (its ReadyForQuery
    /// is not the client's). An error there skips the rest of the batch.
    pub(super) async fn close_segment(&mut self, seg: &mut Option<Segment>) -> Result<(), Broken> {
        let Some(mut s) = seg.take() else {
            return Ok(());
        };
        if let Some(merge) = s.merge.take() {
            return Box::pin(self.close_merge(s, merge)).await;
        }
        let mut req = s.req;
        frontend::sync(&mut req);
        for &sh in &s.shards {
            self.conn(sh).await?.send(&req).await?;
        }
        let mut primary_error = false;
        let mut other_error = None;
        for (k, &sh) in s.shards.iter().enumerate() {
            let mut parses = s.parses.clone();
            loop {
                let r = self.conn(sh).await?.next().await?;
                match r.tag {
                    btag::READY_FOR_QUERY => break,
                    b'1' => {
                        // Popped for every shard: each got the same Parses.
                        let clients = parses.pop_front().unwrap_or(true);
                        if clients && k == 0 {
                            put_message(&mut self.out, &r);
                        }
                    }
                    btag::ERROR_RESPONSE if k > 0 => {
                        other_error.get_or_insert(r);
                    }
                    _ if k > 0 => {}
                    tag => {
                        if tag == btag::ERROR_RESPONSE {
                            primary_error = true;
                        } else if tag == btag::PARAMETER_STATUS {
                            if let Ok((name, v)) = backend::parse_parameter_status(&r.body) {
                                self.params.set(name, v);
                            }
                        } else if tag == btag::COMMAND_COMPLETE
                            && super::shard_conn::changes_session(&r.body)
                        {
                            self.conn(sh).await?.dirty = true;
                        }
                        put_message(&mut self.out, &r);
                        self.flush_if_big().await?;
                    }
                }
            }
        }
        let mut failed = primary_error;
        if let (false, Some(e)) = (primary_error, &other_error) {
            put_message(&mut self.out, e);
            failed = true;
        }
        if s.shards.len() == 1 {
            self.after_single(s.shards[0]);
        } else {
            self.set.mark_catalog_stale();
            if let Some(e) = self.rollback_open_blocks().await? {
                put_error(&mut self.out, SqlState::FEATURE_NOT_SUPPORTED, &e);
                failed = true;
            }
        }
        if failed {
            self.skip = true;
        }
        Ok(())
    }
}

fn no_statement(name: &str) -> (SqlState, String) {
    (
        SqlState::INVALID_SQL_STATEMENT_NAME,
        format!("prepared statement \"{name}\" does not exist"),
    )
}

fn no_portal(name: &str) -> (SqlState, String) {
    (
        SqlState::INVALID_CURSOR_NAME,
        format!("portal \"{name}\" does not exist (on a sharded database a portal lives until the next Sync)"),
    )
}

fn close_complete(out: &mut BytesMut) {
    out.put_u8(b'3');
    out.put_u32(4);
}

/// The shard of Bind parameter `index` (its body after the names: formats, values).
fn bind_key(
    rest: &[u8],
    index: usize,
    key_type: KeyType,
    shards: usize,
) -> Result<usize, (SqlState, String)> {
    let mut r = Reader::new(rest);
    let nf = r.i16().map_err(malformed)?;
    let mut formats = Vec::with_capacity(nf.max(0) as usize);
    for _ in 0..nf {
        formats.push(r.i16().map_err(malformed)?);
    }
    let np = r.i16().map_err(malformed)?;
    for i in 0..np.max(0) as usize {
        let len = r.i32().map_err(malformed)?;
        let value = if len < 0 {
            None
        } else {
            Some(r.bytes(len as usize).map_err(malformed)?)
        };
        if i != index {
            continue;
        }
        let format = match formats.len() {
            0 => 0,
            1 => formats[0],
            _ => formats.get(i).copied().unwrap_or(0),
        };
        let key = match value {
            None => Ok(KeyValue::Null),
            Some(b) if format == 1 => key_from_binary(key_type, b),
            Some(b) => key_from_text(key_type, b),
        }
        .map_err(|e| (e.sqlstate(), e.to_string()))?;
        return Ok(shard_of_hash(partition_hash(&key), shards));
    }
    Err((
        SqlState::PROTOCOL_VIOLATION,
        format!("Bind has no parameter ${}", index + 1),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_parameter_is_a_protocol_violation() {
        // No formats, no parameters.
        let body = [0u8, 0, 0, 0];
        let e = bind_key(&body, 0, KeyType::BigInt, 2).unwrap_err();
        assert_eq!(e.0, SqlState::PROTOCOL_VIOLATION);
    }
}
