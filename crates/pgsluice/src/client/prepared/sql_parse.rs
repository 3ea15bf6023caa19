//! SQL-level `EXECUTE` in a Parse (extended protocol: pgjdbc, psycopg past its
//! `prepare_threshold`, asyncpg `fetch`): the text is renamed like a simple query's
//! ([`super::sql`]), and the protocol-level statement it becomes remembers the SQL-level
//! statement it runs ([`Need`]), which is made present on a connection before the
//! statement is parsed, bound or described there, by a simple query of pgsluice's own
//! put in where no extended-protocol message awaits a Sync. `PREPARE` and `DEALLOCATE`
//! in a Parse are refused.
//!
//! The name is resolved when the Parse is sent, not when it runs as in PostgreSQL: a
//! Bind of the statement after its name was deallocated or prepared again fails (26000)
//! rather than run what the name stood for.

use std::sync::Arc;

use crate::classify::session::{Analysis, Effect};
use crate::client::state_guard::Refusal;

use super::book::Book;
use super::server::Presence;
use super::sql::ABSENT_NAME;
use super::sql_query::{Action, SqlQuery};
use super::{ClientStatements, Need, Stmt};

/// Why the extended protocol's SQL-level PREPARE / DEALLOCATE is refused.
pub(super) fn extended_refusal() -> Refusal {
    Refusal {
        what: "SQL-level PREPARE / DEALLOCATE sent with the extended protocol".into(),
        hint: "send PREPARE and DEALLOCATE as simple queries (pgsluice carries those; EXECUTE may use either protocol), or use the protocol's named statements (driver-side prepare)",
    }
}

/// A query of pgsluice's own that prepares `stmt` (a SQL-level statement a Parse's
/// text runs) on a connection where it is `presence`.
pub(super) fn put_in(stmt: &Arc<Stmt>, presence: Presence) -> (Vec<u8>, SqlQuery) {
    let mut q = SqlQuery::new();
    q.injected = true;
    if presence == Presence::Uncertain {
        q.clears.push(stmt.clone());
    }
    q.actions.push_back(Action::Prepare {
        stmt: stmt.clone(),
        client: None,
    });
    let mut text = format!("PREPARE {}", stmt.server_name).into_bytes();
    text.extend_from_slice(&stmt.query);
    text.push(b'\n');
    (text, q)
}

/// A Parse's text as sent, and the SQL-level statement it runs.
pub(super) type ParseText = (Vec<u8>, Option<Need>);

/// A Parse's text with SQL-level prepared-statement effects: `EXECUTE` of a statement
/// the client has is renamed, and the statement returned (it must be present where the
/// Parse, and the Bind or Describe of it, run). Ok(None): nothing to change (a name the
/// client does not have: the server answers 26000 when it runs). PREPARE and
/// DEALLOCATE are refused.
pub(super) fn plan_parse(
    sql: &[u8],
    analysis: &Analysis,
    book: &Book,
    client: &ClientStatements,
) -> Result<Option<ParseText>, Refusal> {
    let mut found = None;
    for e in &analysis.effects {
        match e {
            Effect::Execute { name, at } if found.is_none() => found = Some((name, at)),
            Effect::Prepare { .. } | Effect::Execute { .. } | Effect::Deallocate { .. } => {
                return Err(extended_refusal())
            }
            _ => {}
        }
    }
    let Some((name, at)) = found else {
        return Ok(None);
    };
    if at.is_empty() || (!analysis.utf8 && !sql[at.clone()].is_ascii()) {
        return Err(extended_refusal());
    }
    let known = current(book, client, name);
    let (with, needs): (&[u8], _) = match &known {
        Some((_, stmt)) => (stmt.server_name.as_bytes(), known.clone()),
        None if name.to_ascii_lowercase().starts_with("pgsluice_") => {
            (ABSENT_NAME.as_bytes(), None)
        }
        None => return Ok(None),
    };
    let mut text = Vec::with_capacity(sql.len() + with.len());
    text.extend_from_slice(&sql[..at.start]);
    text.extend_from_slice(with);
    text.extend_from_slice(&sql[at.end..]);
    Ok(Some((text, needs)))
}

/// Why a Parse that EXECUTEs a SQL-level statement is refused in a pipeline on a
/// connection that lacks the statement.
pub(super) fn pipelined_refusal() -> Refusal {
    Refusal {
        what: "SQL-level EXECUTE in a pipeline, on a server connection that lacks the statement"
            .into(),
        hint: "send it after a Sync (not pipelined), or as a simple query",
    }
}

/// What the SQL-level `name` stands for for the next message.
pub(super) fn current(book: &Book, client: &ClientStatements, name: &str) -> Option<Need> {
    match book.sql_name_plan(name) {
        Some(planned) => planned,
        None => client.sql_get(name).map(|(n, s)| (n.clone(), s.clone())),
    }
}

/// A statement no server has: what a Bind or Describe of a Parse that EXECUTEs a name
/// the client has deallocated (or prepared again) goes to, so that it fails (26000)
/// rather than run what the name no longer stands for.
pub(super) fn absent() -> Arc<Stmt> {
    Arc::new(Stmt {
        id: u64::MAX,
        query: Box::new([]),
        types: Box::new([]),
        server_name: ABSENT_NAME.into(),
        verified: Default::default(),
        needs: None,
    })
}
