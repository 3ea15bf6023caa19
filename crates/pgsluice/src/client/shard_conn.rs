//! The server side of the sharded session driver: a checked-out connection of one
//! shard with its read buffer, whole-message reads, and the catalog lookup that tells
//! the planner the sharded tables' key types and positions.

use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use pgsluice_protocol::backend::tag;
use pgsluice_protocol::backend::{self, TxStatus};
use pgsluice_protocol::frame::{split_message, Message};
use pgsluice_protocol::SqlState;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::error::ClientNotice;
use crate::params::ParamSet;
use crate::pool::listing::ClientInfo;
use crate::pool::{Checkout, ReturnAs};
use crate::router::{CatalogKey, ShardSet};
use crate::shard::KeyType;

/// Largest message a shard may send (a DataRow may be large; PostgreSQL's own cap).
const MAX_SERVER_MESSAGE: u32 = 1 << 30;

/// Why a request could not be finished: the client or a server connection failed.
#[derive(Debug)]
pub(super) enum Broken {
    /// The client's socket failed or closed.
    Client,
    /// A server connection failed; the client is told this and the session ends.
    Server(ClientNotice),
}

impl Broken {
    pub(super) fn server(shard: usize, e: impl std::fmt::Display) -> Broken {
        Broken::Server(ClientNotice::fatal(
            SqlState::CONNECTION_FAILURE,
            format!("connection to shard {shard} failed: {e}"),
        ))
    }
}

/// One shard's checked-out connection.
#[derive(Debug)]
pub(super) struct ShardConn {
    co: Checkout,
    buf: BytesMut,
    /// The shard's number.
    pub(super) shard: usize,
    /// The transaction status of the last ReadyForQuery.
    pub(super) status: TxStatus,
    /// Messages sent since the last ReadyForQuery was read (a Sync or Query pending).
    pub(super) busy: bool,
    /// It ran a statement that changes the session (SET...): closed, not given back.
    pub(super) dirty: bool,
}

impl ShardConn {
    /// Checks a connection out of shard `shard`'s pool and brings its tracked
    /// parameters in line with the client's.
    pub(super) async fn checkout(
        set: &ShardSet,
        shard: usize,
        info: &Arc<ClientInfo>,
        params: &mut ParamSet,
    ) -> Result<ShardConn, Broken> {
        let pool = set.pools()[shard].clone();
        let mut co = pool
            .checkout(Some(info.clone()))
            .await
            .map_err(|e| Broken::Server(e.to_notice()))?;
        if let Some(sql) = params.sync_sql(&co.conn().params) {
            let conn = co.conn();
            conn.run_discarding(&sql)
                .await
                .map_err(|e| Broken::server(shard, e))?;
            conn.params.adopt_unreported(params);
        }
        Ok(ShardConn {
            co,
            buf: BytesMut::with_capacity(8192),
            shard,
            status: TxStatus::Idle,
            busy: false,
            dirty: false,
        })
    }

    /// Sends whole frontend messages.
    pub(super) async fn send(&mut self, bytes: &[u8]) -> Result<(), Broken> {
        self.busy = true;
        let shard = self.shard;
        self.co
            .conn()
            .stream
            .write_all(bytes)
            .await
            .map_err(|e| Broken::server(shard, e))
    }

    /// The next whole backend message; a ReadyForQuery updates the status.
    pub(super) async fn next(&mut self) -> Result<Message, Broken> {
        loop {
            match split_message(&mut self.buf, MAX_SERVER_MESSAGE) {
                Ok(Some(m)) => {
                    if m.tag == tag::READY_FOR_QUERY {
                        self.busy = false;
                        self.status = m
                            .body
                            .first()
                            .and_then(|&b| TxStatus::from_byte(b))
                            .unwrap_or(TxStatus::Failed);
                    } else if m.tag == tag::PARAMETER_STATUS {
                        if let Ok((k, v)) = backend::parse_parameter_status(&m.body) {
                            self.co.conn().params.set(k, v);
                        }
                    }
                    return Ok(m);
                }
                Ok(None) => {}
                Err(e) => return Err(Broken::server(self.shard, e)),
            }
            let shard = self.shard;
            match self.co.conn().stream.read_buf(&mut self.buf).await {
                Ok(0) => return Err(Broken::server(shard, "server closed the connection")),
                Ok(_) => {}
                Err(e) => return Err(Broken::server(shard, e)),
            }
        }
    }

    /// Reads up to and including ReadyForQuery, returning the messages before it and
    /// the first ErrorResponse's body, if any.
    pub(super) async fn collect(&mut self) -> Result<(Vec<Message>, Option<Message>), Broken> {
        let mut msgs = Vec::new();
        let mut error = None;
        loop {
            let m = self.next().await?;
            match m.tag {
                tag::READY_FOR_QUERY => return Ok((msgs, error)),
                tag::ERROR_RESPONSE if error.is_none() => error = Some(m),
                _ => msgs.push(m),
            }
        }
    }

    /// Runs one simple query whose answer only matters for its error (BEGIN sent
    /// ahead of a transaction's first statement).
    pub(super) async fn run_quiet(&mut self, sql: &str) -> Result<Option<Message>, Broken> {
        let mut out = BytesMut::new();
        pgsluice_protocol::frontend::query(&mut out, sql);
        self.send(&out).await?;
        Ok(self.collect().await?.1)
    }

    /// Gives the connection back: clean when it is idle with nothing pending, else
    /// closed (never dirty to the next client).
    pub(super) fn release(mut self) {
        if !self.busy && !self.dirty && self.status == TxStatus::Idle {
            self.co.return_as(ReturnAs::Clean);
        }
    }

    /// The connection, for the catalog lookup.
    /// Where a cancel for the query on this connection goes.
    pub(super) fn cancel_target(&mut self) -> crate::cancel::CancelTarget {
        let conn = self.co.conn();
        crate::cancel::CancelTarget {
            target: conn.target.clone(),
            key: conn.key.clone(),
        }
    }

    fn conn(&mut self) -> &mut crate::server::ServerConn {
        self.co.conn()
    }
}

/// Appends a whole message (tag, length, body) to `out`.
pub(super) fn put_message(out: &mut BytesMut, m: &Message) {
    out.put_u8(m.tag);
    out.put_u32(m.body.len() as u32 + 4);
    out.put_slice(&m.body);
}

/// Appends an ErrorResponse.
pub(super) fn put_error(out: &mut BytesMut, code: SqlState, message: &str) {
    backend::ErrorNotice::error(code, message).write(out);
}

/// Reads the sharded tables' keys and the text ordering in the first shard's catalog,
/// over `conn` (a connection of shard 0), and rebuilds the set's planner. A table
/// that does not exist yet leaves its key unknown (looked up again after DDL).
pub(super) async fn lookup_catalog(set: &ShardSet, conn: &mut ShardConn) -> Result<(), Broken> {
    let tables = set.configured().tables.clone();
    let mut keys = Vec::with_capacity(tables.len());
    let server = conn.conn();
    for t in &tables {
        let regclass = match &t.schema {
            Some(s) => format!("{}.{}", quote_ident(s), quote_ident(&t.name)),
            None => quote_ident(&t.name),
        };
        let sql = format!(
            "select (select count(*) from pg_attribute b where b.attrelid = a.attrelid \
             and b.attnum > 0 and not b.attisdropped and b.attnum < a.attnum), \
             format_type(a.atttypid, a.atttypmod) from pg_attribute a \
             where a.attrelid = to_regclass({}) and a.attname = {} and not a.attisdropped \
             union all select null, null order by 1 nulls last limit 1",
            quote_literal(&regclass),
            quote_literal(&t.column),
        );
        let row = server
            .run_for_row(&sql)
            .await
            .map_err(|e| Broken::server(0, e))?;
        let position = row
            .first()
            .cloned()
            .flatten()
            .and_then(|p| p.parse::<usize>().ok());
        let key_type = row
            .get(1)
            .cloned()
            .flatten()
            .and_then(|n| KeyType::from_sql_name(&n));
        keys.push(CatalogKey {
            key_type,
            key_position: position,
        });
    }
    let row = server
        .run_for_row(
            "select (datcollate in ('C', 'POSIX'))::text from pg_database \
             where datname = current_database()",
        )
        .await
        .map_err(|e| Broken::server(0, e))?;
    let bytes_order = row.first().cloned().flatten().as_deref() == Some("true");
    set.set_catalog(&keys, bytes_order);
    Ok(())
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}
