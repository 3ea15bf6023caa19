//! The per-statement rules: what each top-level statement of a parsed text means for
//! routing ([`Stmt`]), following PostgreSQL's semantics on a hot standby.

use pg_query::protobuf::{
    a_const, CopyStmt, TransactionStmt, TransactionStmtKind, VariableSetKind, VariableSetStmt,
};
use pg_query::{Node, NodeEnum};

use super::scan::{only_reads, Writers};
use super::txn::{Stmt, Summary};

/// Parses `sql` with PostgreSQL's grammar and folds its statements; anything the
/// parser refuses is Write.
pub(super) fn summarize(sql: &str, writers: &Writers) -> Summary {
    let Ok(parsed) = pg_query::parse(sql, pg_query::ParserOptions::DEFAULT) else {
        return Summary::WRITE;
    };
    let stmts: Vec<Stmt> = parsed
        .protobuf
        .stmts
        .iter()
        .map(|raw| node(raw.stmt.as_deref()).map_or(Stmt::Write, |n| statement(n, writers)))
        .collect();
    Summary::of(&stmts)
}

/// The statement inside a node, if any.
fn node(n: Option<&Node>) -> Option<&NodeEnum> {
    n.and_then(|n| n.node.as_ref())
}

/// One top-level statement.
fn statement(stmt: &NodeEnum, writers: &Writers) -> Stmt {
    let read = match stmt {
        // SELECT, VALUES and TABLE.
        NodeEnum::SelectStmt(_) => only_reads(stmt, writers),
        // EXPLAIN (ANALYZE or not) of a read; of anything else, the primary.
        NodeEnum::ExplainStmt(e) => {
            node(e.query.as_deref()).is_some_and(|q| statement(q, writers) == Stmt::Read)
        }
        NodeEnum::VariableShowStmt(_) => true,
        NodeEnum::VariableSetStmt(s) => return set(s),
        NodeEnum::TransactionStmt(t) => return transaction(t),
        NodeEnum::CopyStmt(c) => copy_out(c, writers),
        _ => false,
    };
    if read {
        Stmt::Read
    } else {
        Stmt::Write
    }
}

/// SET / RESET of a session parameter reads; the transaction's own characteristics
/// are another matter.
fn set(s: &VariableSetStmt) -> Stmt {
    match VariableSetKind::try_from(s.kind) {
        // SET TRANSACTION ..., SET SESSION CHARACTERISTICS AS TRANSACTION ..., SET
        // TRANSACTION SNAPSHOT: only the first, when it asks for READ ONLY.
        Ok(VariableSetKind::VarSetMulti) => {
            if s.name == "TRANSACTION" && read_only_modes(&s.args) {
                Stmt::SetTransactionReadOnly
            } else {
                Stmt::Write
            }
        }
        // `SET transaction_read_only = off` is SET TRANSACTION READ WRITE in another
        // spelling, and the isolation level may be one a standby refuses.
        Ok(
            VariableSetKind::VarSetValue
            | VariableSetKind::VarSetDefault
            | VariableSetKind::VarSetCurrent
            | VariableSetKind::VarReset,
        ) if !s.name.starts_with("transaction_") => Stmt::Read,
        Ok(VariableSetKind::VarResetAll) => Stmt::Read,
        _ => Stmt::Write,
    }
}

/// BEGIN / START TRANSACTION and COMMIT / ROLLBACK; the rest (savepoints, two-phase
/// commit) go to the primary.
fn transaction(t: &TransactionStmt) -> Stmt {
    match TransactionStmtKind::try_from(t.kind) {
        Ok(TransactionStmtKind::TransStmtBegin | TransactionStmtKind::TransStmtStart) => {
            Stmt::Begin {
                read_only: read_only_modes(&t.options),
            }
        }
        Ok(TransactionStmtKind::TransStmtCommit | TransactionStmtKind::TransStmtRollback)
            if !t.chain =>
        {
            Stmt::End
        }
        _ => Stmt::Write,
    }
}

/// True when a list of transaction modes says READ ONLY, never READ WRITE, and no
/// SERIALIZABLE isolation (a hot standby refuses it: "cannot use serializable mode in a
/// hot standby").
fn read_only_modes(modes: &[Node]) -> bool {
    let mut read_only = false;
    for mode in modes {
        let Some(NodeEnum::DefElem(d)) = node(Some(mode)) else {
            return false;
        };
        let value = match node(d.arg.as_deref()) {
            Some(NodeEnum::AConst(c)) => c.val.as_ref(),
            _ => return false,
        };
        match (d.defname.as_str(), value) {
            ("transaction_read_only", Some(a_const::Val::Ival(i))) => {
                if i.ival == 0 {
                    return false;
                }
                read_only = true;
            }
            ("transaction_isolation", Some(a_const::Val::Sval(s))) => {
                if s.sval.eq_ignore_ascii_case("serializable") {
                    return false;
                }
            }
            ("transaction_deferrable", _) => {}
            _ => return false,
        }
    }
    read_only
}

/// COPY ... TO STDOUT of a table or of a query that reads. COPY FROM, COPY TO a server
/// file or a program, go to the primary.
fn copy_out(c: &CopyStmt, writers: &Writers) -> bool {
    if c.is_from || c.is_program || !c.filename.is_empty() {
        return false;
    }
    match node(c.query.as_deref()) {
        Some(q) => statement(q, writers) == Stmt::Read,
        None => c.relation.is_some(),
    }
}
