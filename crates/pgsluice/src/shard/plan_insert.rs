//! INSERT ... VALUES into a sharded table: the shard of each row's key, and the
//! per-shard statements of a multi-row INSERT whose rows go to several shards.

use std::collections::BTreeMap;

use pg_query::protobuf::{InsertStmt, OnConflictAction};
use pg_query::NodeEnum;

use super::key::{self, inner, Target, Use};
use super::{Plan, ShardedTable, Sharding, Unsupported};

/// The plan of an INSERT into sharded table `table` (the caller checked that it
/// reads no other table). `params`: the statement has `$n` parameters.
pub(super) fn insert(sharding: &Sharding, table: usize, ins: &InsertStmt, params: bool) -> Plan {
    match rows(sharding, &sharding.tables[table], ins, params) {
        Ok(plan) => plan,
        Err(u) => Plan::Refuse(u),
    }
}

fn rows(
    sharding: &Sharding,
    t: &ShardedTable,
    ins: &InsertStmt,
    params: bool,
) -> Result<Plan, Unsupported> {
    if let Some(c) = &ins.on_conflict_clause {
        if c.action == OnConflictAction::OnconflictUpdate as i32 && sets_key(t, &c.target_list) {
            return Err(Unsupported::feature(format!(
                "INSERT ... ON CONFLICT DO UPDATE of the key column {} of sharded table {}: \
                 the row would move to another shard",
                t.column, t.name
            )));
        }
    }
    let Some(select) = ins.select_stmt.as_deref().and_then(inner) else {
        // DEFAULT VALUES: no key given.
        return Err(no_key(t));
    };
    let values = match select {
        NodeEnum::SelectStmt(s) if is_values(ins) => &s.values_lists,
        _ => {
            return Err(Unsupported::feature(format!(
                "INSERT ... SELECT into sharded table {}: insert the rows with VALUES or COPY",
                t.name
            )))
        }
    };
    let position = key_position(t, ins)?;
    let mut targets = Vec::with_capacity(values.len());
    for row in values {
        let Some(NodeEnum::List(row)) = inner(row) else {
            return Err(expression(t));
        };
        let e = match position.and_then(|p| row.items.get(p)).and_then(inner) {
            None => return Err(no_key(t)),
            Some(NodeEnum::SetToDefault(_)) => {
                return Err(Unsupported::feature(format!(
                    "DEFAULT for the key column {} of sharded table {}: give the key's value",
                    t.column, t.name
                )))
            }
            Some(n) => key::key_expr(n).ok_or_else(|| expression(t))?,
        };
        targets.push(key::target(sharding, t, &e, Use::Insert)?.ok_or_else(|| expression(t))?);
    }
    if targets.contains(&Target::Rejected) {
        // The server rejects the whole statement: shard 0 says why, no row is
        // inserted anywhere.
        return Ok(Plan::Shard(0));
    }
    let first = targets[0];
    if targets.iter().all(|x| x.same(first)) {
        return Ok(first.into());
    }
    if targets.iter().any(|x| matches!(x, Target::Param { .. })) || params {
        return Err(Unsupported::feature(format!(
            "multi-row INSERT into sharded table {} whose rows may go to different shards \
             and that has parameters: send one row per statement, or literal values",
            t.name
        )));
    }
    split(ins, &targets)
}

/// True for INSERT ... VALUES and INSERT ... DEFAULT VALUES (not INSERT ... SELECT).
pub(super) fn is_values(ins: &InsertStmt) -> bool {
    match ins.select_stmt.as_deref().and_then(inner) {
        None => true,
        Some(NodeEnum::SelectStmt(s)) => {
            !s.values_lists.is_empty()
                && s.from_clause.is_empty()
                && s.larg.is_none()
                && s.with_clause.is_none()
                && s.sort_clause.is_empty()
                && s.limit_count.is_none()
                && s.limit_offset.is_none()
        }
        Some(_) => false,
    }
}

/// The key's index in each VALUES row; `None`: the column list leaves it out.
fn key_position(t: &ShardedTable, ins: &InsertStmt) -> Result<Option<usize>, Unsupported> {
    if ins.cols.is_empty() {
        return t.key_position.map(Some).ok_or_else(|| {
            Unsupported::feature(format!(
                "INSERT into sharded table {} without a column list: the key column's \
                 position is not known yet; name the columns",
                t.name
            ))
        });
    }
    for (i, c) in ins.cols.iter().enumerate() {
        if let Some(NodeEnum::ResTarget(r)) = inner(c) {
            if r.name == t.column {
                if !r.indirection.is_empty() {
                    return Err(expression(t));
                }
                return Ok(Some(i));
            }
        }
    }
    Ok(None)
}

/// An INSERT that leaves the key column out. The column would get its default
/// (a serial, an identity, a function) on the server, which pgsluice cannot know
/// before choosing the shard: placing the row as NULL (shard 0) would misplace it.
fn no_key(t: &ShardedTable) -> Unsupported {
    Unsupported::feature(format!(
        "INSERT into sharded table {} without its key column {}: its default (serial, \
         identity) is computed on the server after the shard is chosen; give the key's \
         value (NULL explicitly for a NULL key)",
        t.name, t.column
    ))
}

/// True when a SET list assigns the key column.
pub(super) fn sets_key(t: &ShardedTable, targets: &[pg_query::Node]) -> bool {
    targets.iter().any(|n| match inner(n) {
        Some(NodeEnum::ResTarget(r)) => r.name == t.column,
        _ => false,
    })
}

fn expression(t: &ShardedTable) -> Unsupported {
    Unsupported::feature(format!(
        "the key {} of a row inserted into sharded table {} is an expression: give a \
         literal or a parameter",
        t.column, t.name
    ))
}

/// One INSERT per shard, with that shard's rows in their order.
fn split(ins: &InsertStmt, targets: &[Target]) -> Result<Plan, Unsupported> {
    let mut by_shard: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (row, t) in targets.iter().enumerate() {
        if let Target::Shard(n) = t {
            by_shard.entry(*n).or_default().push(row);
        }
    }
    let mut out = Vec::with_capacity(by_shard.len());
    for (shard, rows) in by_shard {
        let mut part = ins.clone();
        if let Some(NodeEnum::SelectStmt(s)) = part
            .select_stmt
            .as_deref_mut()
            .and_then(|n| n.node.as_mut())
        {
            let all = std::mem::take(&mut s.values_lists);
            s.values_lists = rows.iter().map(|&r| all[r].clone()).collect();
        }
        let sql = NodeEnum::InsertStmt(Box::new(part))
            .deparse(pg_query::DeparseOptions::default())
            .map_err(|e| Unsupported::feature(format!("splitting a multi-row INSERT: {e}")))?;
        out.push((shard, sql));
    }
    Ok(Plan::SplitInsert(out))
}
