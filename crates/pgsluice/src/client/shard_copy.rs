//! `COPY table FROM STDIN` on a sharded database: every shard runs the COPY, the
//! client's rows are split by their key ([`CopySplitter`]) and each shard gets its
//! own; CopyDone ends it everywhere and the client is told `COPY <total>`. A
//! malformed row, a CopyFail or any shard's error aborts the COPY on every shard.

use bytes::{BufMut, BytesMut};
use pgsluice_protocol::backend::{self, tag as btag};
use pgsluice_protocol::frame::Message;
use pgsluice_protocol::frontend::tag as ftag;
use pgsluice_protocol::SqlState;

use super::shard_conn::tag_count;
use super::shard_conn::{put_error, put_message, Broken};
use super::shard_session::Driver;
use crate::shard::copy::{CopyOptions, CopySplitter};

/// Rows buffered per shard before they are sent.
const SEND_AT: usize = 32 * 1024;

impl Driver<'_> {
    /// Runs a COPY FROM STDIN (the client's Query `m`) over every shard.
    pub(super) async fn copy_in(
        &mut self,
        m: &Message,
        table: usize,
        key_column: usize,
        options: &CopyOptions,
    ) -> Result<(), Broken> {
        let planner = self.set.planner();
        let Some((key_type, key_name)) = planner
            .sharding()
            .tables
            .get(table)
            .and_then(|t| Some((t.key_type?, t.column.clone())))
        else {
            self.refuse(
                SqlState::FEATURE_NOT_SUPPORTED,
                "COPY into a sharded table whose key type is unknown (set `type` in its sharded_tables entry)",
            );
            self.ready();
            return Ok(());
        };
        self.set.count_fanout();
        let n = self.set.pools().len();
        let mut req = BytesMut::with_capacity(m.body.len() + 5);
        put_message(&mut req, m);
        for i in 0..n {
            self.conn(i).await?.send(&req).await?;
        }
        // Each shard answers CopyInResponse, or an error and ReadyForQuery.
        let mut first_response = None;
        let mut error = None;
        let mut copying = vec![false; n];
        for (i, copying) in copying.iter_mut().enumerate() {
            loop {
                let r = self.conn(i).await?.next().await?;
                match r.tag {
                    btag::COPY_IN => {
                        *copying = true;
                        first_response.get_or_insert(r);
                        break;
                    }
                    btag::ERROR_RESPONSE => {
                        error.get_or_insert(r);
                    }
                    btag::READY_FOR_QUERY => break,
                    _ => {}
                }
            }
        }
        if let (None, Some(g)) = (&error, &first_response) {
            put_message(&mut self.out, g);
            self.flush().await?;
        } else {
            self.abort_copies(&copying, "COPY refused on another shard")
                .await?;
            if let Some(e) = error {
                put_message(&mut self.out, &e);
            }
            self.ready();
            return Ok(());
        }
        let mut splitter =
            CopySplitter::new(options.clone(), key_column, key_type, n).with_key_name(&key_name);
        let mut rows: Vec<Vec<u8>> = vec![Vec::new(); n];
        let mut failure: Option<(SqlState, String)> = None;
        loop {
            let c = self.read_client().await?;
            match c.tag {
                ftag::COPY_DATA if failure.is_none() => {
                    if let Err(e) = splitter.feed(&c.body, &mut rows) {
                        failure = Some((e.sqlstate, e.message));
                        self.abort_copies(&copying, "COPY row rejected by pgsluice")
                            .await?;
                        continue;
                    }
                    self.send_rows(&mut rows, SEND_AT).await?;
                }
                ftag::COPY_DATA => {}
                ftag::COPY_DONE => break,
                ftag::COPY_FAIL => {
                    if failure.is_none() {
                        let why =
                            String::from_utf8_lossy(c.body.strip_suffix(&[0]).unwrap_or(&c.body))
                                .into_owned();
                        failure = Some((
                            SqlState::QUERY_CANCELED,
                            format!("COPY from stdin failed: {why}"),
                        ));
                        self.abort_copies(&copying, &why).await?;
                    }
                    break;
                }
                ftag::FLUSH | ftag::SYNC => {}
                _ => {
                    if failure.is_none() {
                        failure = Some((
                            SqlState::PROTOCOL_VIOLATION,
                            "unexpected message type during COPY from stdin".into(),
                        ));
                        self.abort_copies(&copying, "protocol violation").await?;
                    }
                    break;
                }
            }
        }
        if let Some((code, message)) = failure {
            put_error(&mut self.out, code, &message);
            self.ready();
            return Ok(());
        }
        if let Err(e) = splitter.finish(&mut rows) {
            self.abort_copies(&copying, "COPY row rejected by pgsluice")
                .await?;
            put_error(&mut self.out, e.sqlstate, &e.message);
            self.ready();
            return Ok(());
        }
        self.send_rows(&mut rows, 0).await?;
        let mut done = BytesMut::with_capacity(5);
        done.put_u8(ftag::COPY_DONE);
        done.put_u32(4);
        for i in 0..n {
            self.conn(i).await?.send(&done).await?;
        }
        let mut total = 0u64;
        let mut error = None;
        for i in 0..n {
            let (msgs, err) = self.conn(i).await?.collect().await?;
            error = error.or(err);
            total += msgs
                .iter()
                .filter(|r| r.tag == btag::COMMAND_COMPLETE)
                .map(|r| tag_count(&r.body))
                .sum::<u64>();
        }
        match error {
            Some(e) => put_message(&mut self.out, &e),
            None => backend::command_complete(&mut self.out, &format!("COPY {total}")),
        }
        self.ready();
        Ok(())
    }

    /// Sends each shard's buffered rows as CopyData once they reach `at` bytes.
    async fn send_rows(&mut self, rows: &mut [Vec<u8>], at: usize) -> Result<(), Broken> {
        for (i, r) in rows.iter_mut().enumerate() {
            if r.is_empty() || r.len() < at {
                continue;
            }
            let mut msg = BytesMut::with_capacity(r.len() + 5);
            msg.put_u8(ftag::COPY_DATA);
            msg.put_u32(r.len() as u32 + 4);
            msg.put_slice(r);
            r.clear();
            self.conn(i).await?.send(&msg).await?;
        }
        Ok(())
    }

    /// Ends the COPY on the shards still in it with CopyFail, reading their errors.
    async fn abort_copies(&mut self, copying: &[bool], why: &str) -> Result<(), Broken> {
        let mut fail = BytesMut::new();
        fail.put_u8(ftag::COPY_FAIL);
        fail.put_u32((4 + why.len() + 1) as u32);
        fail.put_slice(why.as_bytes());
        fail.put_u8(0);
        for (i, _) in copying.iter().enumerate().filter(|(_, c)| **c) {
            let conn = self.conn(i).await?;
            if conn.busy {
                conn.send(&fail).await?;
                conn.collect().await?;
            }
        }
        Ok(())
    }
}
