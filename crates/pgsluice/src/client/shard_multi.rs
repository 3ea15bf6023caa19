//! Statements over several shards: a multi-row INSERT split by shard, a SELECT
//! without the key merged (simple protocol here; through the extended protocol a
//! segment of its own whose replies are merged and put in the client's formats).

use std::collections::HashMap;
use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use pgsluice_protocol::backend::{self, tag as btag};
use pgsluice_protocol::frame::Message;
use pgsluice_protocol::frontend::{self, tag as ftag};
use pgsluice_protocol::{ProtocolError, SqlState};

use super::shard_binary::{bind_result_formats, client_formats};
use super::shard_conn::tag_count;
use super::shard_conn::{put_error, put_message, Broken};
use super::shard_extended::{malformed, FanOutMerge, PortalAt, Segment};
use super::shard_session::{Driver, Stmt};
use crate::shard::merge::{MergePlan, Merger};

impl Driver<'_> {
    /// A multi-row INSERT split by shard: each shard its rows, `INSERT 0 <sum>`.
    pub(super) async fn split_insert(&mut self, parts: &[(usize, String)]) -> Result<(), Broken> {
        let mut shards: Vec<usize> = parts.iter().map(|(s, _)| *s).collect();
        shards.sort_unstable();
        shards.dedup();
        if shards.len() > 1 {
            self.set.count_fanout();
        } else if let Some(&s) = shards.first() {
            self.set.count_single(s);
        }
        for &s in &shards {
            let mut req = BytesMut::new();
            for (_, sql) in parts.iter().filter(|(p, _)| *p == s) {
                frontend::query(&mut req, sql);
            }
            self.conn(s).await?.send(&req).await?;
        }
        let mut rows = 0u64;
        let mut error = None;
        for (s, _) in parts {
            let (msgs, err) = self.conn(*s).await?.collect().await?;
            error = error.or(err);
            rows += msgs
                .iter()
                .filter(|m| m.tag == btag::COMMAND_COMPLETE)
                .map(|m| tag_count(&m.body))
                .sum::<u64>();
        }
        if let Some(e) = self.rollback_open_blocks().await? {
            put_error(&mut self.out, SqlState::FEATURE_NOT_SUPPORTED, &e);
        } else if let Some(e) = error {
            put_message(&mut self.out, &e);
        } else {
            backend::command_complete(&mut self.out, &format!("INSERT 0 {rows}"));
        }
        self.ready();
        Ok(())
    }

    /// A SELECT on every shard, merged.
    pub(super) async fn fan_out(
        &mut self,
        mp: &crate::shard::merge::MergePlan,
        sql: &str,
    ) -> Result<(), Broken> {
        self.set.count_fanout();
        let n = self.set.pools().len();
        let mut req = BytesMut::new();
        frontend::query(&mut req, sql);
        for i in 0..n {
            self.conn(i).await?.send(&req).await?;
        }
        let mut merger = Merger::new(mp, n, self.set.text_bytes_order());
        let mut error: Option<Message> = None;
        let mut merge_error = None;
        let mut raw = BytesMut::new();
        for i in 0..n {
            loop {
                let r = self.conn(i).await?.next().await?;
                match r.tag {
                    btag::READY_FOR_QUERY => break,
                    btag::ERROR_RESPONSE => {
                        error.get_or_insert(r);
                    }
                    btag::ROW_DESCRIPTION
                    | btag::DATA_ROW
                    | btag::COMMAND_COMPLETE
                    | btag::EMPTY_QUERY
                        if error.is_none() && merge_error.is_none() =>
                    {
                        raw.clear();
                        put_message(&mut raw, &r);
                        let pushed = merger
                            .push(i, &raw)
                            .and_then(|()| merger.drain(&mut self.out));
                        if let Err(e) = pushed {
                            merge_error = Some(e);
                        }
                        self.flush_if_big().await?;
                    }
                    _ => {}
                }
            }
        }
        if let Some(e) = error {
            put_message(&mut self.out, &e);
        } else if let Some(e) = merge_error.or_else(|| merger.finish(&mut self.out).err()) {
            put_error(&mut self.out, e.sqlstate, &e.message);
        }
        if let Some(e) = self.rollback_open_blocks().await? {
            put_error(&mut self.out, SqlState::FEATURE_NOT_SUPPORTED, &e);
        }
        self.ready();
        Ok(())
    }

    /// A Bind of a SELECT without the key: a segment of its own over every shard,
    /// which asks for text results and describes the portal for the merge.
    pub(super) async fn bind_fan_out(
        &mut self,
        mp: &Arc<MergePlan>,
        stmt: &Stmt,
        portal: &str,
        rest: &[u8],
        seg: &mut Option<Segment>,
        portals: &mut HashMap<String, PortalAt>,
    ) -> Result<Result<(), (SqlState, String)>, Broken> {
        self.close_segment(seg).await?;
        if self.skip {
            return Ok(Ok(()));
        }
        if self.txn.is_some() && self.join_txn(None).await?.is_none() {
            self.skip = true;
            return Ok(Ok(()));
        }
        let Some((at, formats)) = bind_result_formats(rest) else {
            return Ok(Err(malformed(ProtocolError::Malformed("Bind"))));
        };
        self.set.count_fanout();
        let all: Vec<usize> = (0..self.set.pools().len()).collect();
        let mut s = Segment::new(all.clone());
        let sql = mp.shard_sql().unwrap_or(&stmt.sql);
        frontend::parse(&mut s.req, "", sql.as_bytes(), &stmt.param_types);
        s.parses.push_back(false);
        s.req.put_u8(ftag::BIND);
        s.req.put_u32((4 + portal.len() + 2 + at + 2) as u32);
        s.req.put_slice(portal.as_bytes());
        s.req.put_u8(0);
        s.req.put_u8(0);
        s.req.put_slice(&rest[..at]);
        s.req.put_i16(0);
        frontend::target_message(&mut s.req, ftag::DESCRIBE, b'P', portal);
        s.merge = Some(FanOutMerge {
            plan: mp.clone(),
            formats,
            describe: false,
        });
        *seg = Some(s);
        portals.insert(portal.to_owned(), PortalAt::Shards(all));
        Ok(Ok(()))
    }

    /// Sends a merging segment with a Sync; relays the first shard's own replies
    /// (BindComplete...) and the merged result in the client's formats.
    pub(super) async fn close_merge(
        &mut self,
        s: Segment,
        merge: FanOutMerge,
    ) -> Result<(), Broken> {
        let mut req = s.req;
        frontend::sync(&mut req);
        for &sh in &s.shards {
            self.conn(sh).await?.send(&req).await?;
        }
        let mut merger = Merger::new(&merge.plan, s.shards.len(), self.set.text_bytes_order());
        let mut merged = BytesMut::new();
        let mut raw = BytesMut::new();
        let mut error: Option<Message> = None;
        let mut merge_error = None;
        for (k, &sh) in s.shards.iter().enumerate() {
            let mut parses = s.parses.clone();
            loop {
                let r = self.conn(sh).await?.next().await?;
                match r.tag {
                    btag::READY_FOR_QUERY => break,
                    btag::ERROR_RESPONSE => {
                        error.get_or_insert(r);
                    }
                    b'1' => {
                        // Popped for every shard: each got the same Parses.
                        let clients = parses.pop_front().unwrap_or(true);
                        if clients && k == 0 {
                            put_message(&mut self.out, &r);
                        }
                    }
                    b's' => {
                        merge_error.get_or_insert((
                            SqlState::FEATURE_NOT_SUPPORTED,
                            "Execute with a row limit on a SELECT over several shards".to_owned(),
                        ));
                    }
                    btag::ROW_DESCRIPTION
                    | btag::DATA_ROW
                    | btag::COMMAND_COMPLETE
                    | btag::EMPTY_QUERY => {
                        if error.is_some() || merge_error.is_some() {
                            continue;
                        }
                        raw.clear();
                        put_message(&mut raw, &r);
                        let pushed = merger
                            .push(k, &raw)
                            .and_then(|()| merger.drain(&mut merged));
                        if let Err(e) = pushed {
                            merge_error = Some((e.sqlstate, e.message));
                        }
                    }
                    // BindComplete and the like: the first shard's.
                    _ if k == 0 => put_message(&mut self.out, &r),
                    _ => {}
                }
            }
        }
        if error.is_none() && merge_error.is_none() {
            if let Err(e) = merger.finish(&mut merged) {
                merge_error = Some((e.sqlstate, e.message));
            }
        }
        if error.is_none() && merge_error.is_none() {
            match client_formats(&merged, &merge.formats, merge.describe) {
                Ok(out) => self.out.extend_from_slice(&out),
                Err(e) => merge_error = Some((SqlState::FEATURE_NOT_SUPPORTED, e)),
            }
        }
        if let Some(e) = error {
            put_message(&mut self.out, &e);
            self.skip = true;
        } else if let Some((code, message)) = merge_error {
            put_error(&mut self.out, code, &message);
            self.skip = true;
        }
        if let Some(e) = self.rollback_open_blocks().await? {
            put_error(&mut self.out, SqlState::FEATURE_NOT_SUPPORTED, &e);
            self.skip = true;
        }
        Ok(())
    }
}
