//! The plan of a text: each statement by its kind, and the combination of several
//! statements (rules in the `plan` module doc).

use pg_query::protobuf::{DeleteStmt, SelectStmt, UpdateStmt};
use pg_query::NodeEnum;

use super::super::merge;
use super::insert;
use super::key::inner;
use super::query::{Analysis, Outcome};
use super::utility::{copy, every_shard, override_comment, set, transaction, SHARD_SETTING};
use super::walk::{walk, Found};
use super::{Plan, Sharding, Unsupported};

/// The plan of a whole text (one or more statements).
pub(super) fn plan_text(sh: &Sharding, sql: &str) -> Plan {
    let forced = match override_comment(sh, sql) {
        Ok(forced) => forced,
        Err(u) => return Plan::Refuse(u),
    };
    let Ok(parsed) = pg_query::parse(sql, pg_query::ParserOptions::DEFAULT) else {
        // The server reports the syntax error (the same on every shard).
        return forced.map_or(Plan::Home, Plan::Shard);
    };
    let mut plans = Vec::with_capacity(parsed.protobuf.stmts.len());
    for raw in &parsed.protobuf.stmts {
        let Some(node) = raw.stmt.as_deref().and_then(inner) else {
            continue;
        };
        let text = statement_text(sql, raw.stmt_location, raw.stmt_len);
        let plan = match forced {
            Some(n) if overridable(node) => Plan::Shard(n),
            _ => statement(sh, node, text),
        };
        plans.push(plan);
    }
    combine(plans)
}

/// A statement's own text (for BEGIN's options), from the parser's byte offsets.
fn statement_text(sql: &str, location: i32, len: i32) -> &str {
    let start = usize::try_from(location).unwrap_or(0);
    let end = match usize::try_from(len) {
        Ok(0) | Err(_) => sql.len(),
        Ok(len) => start.saturating_add(len).min(sql.len()),
    };
    sql.get(start..end).unwrap_or(sql).trim()
}

/// True for statements the override comment routes (not transaction control, not
/// `SET pgsluice.shard`, not SQL-level prepared statements).
fn overridable(node: &NodeEnum) -> bool {
    match node {
        NodeEnum::TransactionStmt(_)
        | NodeEnum::PrepareStmt(_)
        | NodeEnum::ExecuteStmt(_)
        | NodeEnum::DeallocateStmt(_) => false,
        NodeEnum::VariableSetStmt(v) => v.name != SHARD_SETTING,
        _ => true,
    }
}

/// Combines the plans of several statements of one text.
fn combine(mut plans: Vec<Plan>) -> Plan {
    if plans.len() <= 1 {
        return plans.pop().unwrap_or(Plan::Home);
    }
    if let Some(i) = plans.iter().position(|p| matches!(p, Plan::Refuse(_))) {
        return plans.swap_remove(i);
    }
    let different = || {
        Plan::Refuse(Unsupported::feature(
            "statements of one query string go to different shards; send them separately",
        ))
    };
    let mut routed = plans
        .into_iter()
        .filter(|p| !matches!(p, Plan::Transaction(_)));
    let Some(mut acc) = routed.next() else {
        return Plan::Refuse(Unsupported::feature(
            "several transaction-control statements in one query string; send them separately",
        ));
    };
    for p in routed {
        acc = match (acc, p) {
            (Plan::Home, Plan::Home) => Plan::Home,
            (Plan::All, Plan::All) => Plan::All,
            (Plan::Shard(a), Plan::Shard(b)) if a == b => Plan::Shard(a),
            (Plan::Home, Plan::Shard(0)) | (Plan::Shard(0), Plan::Home) => Plan::Shard(0),
            (Plan::ByParam { index, key_type }, Plan::ByParam { index: b, .. }) if index == b => {
                Plan::ByParam { index, key_type }
            }
            _ => return different(),
        };
    }
    match acc {
        Plan::Home | Plan::All | Plan::Shard(_) | Plan::ByParam { .. } => acc,
        _ => different(),
    }
}

/// The plan of one statement.
pub(super) fn statement(sh: &Sharding, node: &NodeEnum, text: &str) -> Plan {
    statement_in(sh, node, text, false)
}

/// The plan of one statement; `explain`: it is EXPLAIN's (a fan-out is refused
/// before its merge is planned).
fn statement_in(sh: &Sharding, node: &NodeEnum, text: &str, explain: bool) -> Plan {
    match node {
        NodeEnum::SelectStmt(s) => query(sh, node, Query::Select(s), explain),
        NodeEnum::UpdateStmt(u) => query(sh, node, Query::Update(u), explain),
        NodeEnum::DeleteStmt(d) => query(sh, node, Query::Delete(d), explain),
        NodeEnum::InsertStmt(i) => {
            let found = walk(node);
            let tables = match Tables::of(sh, &found) {
                Ok(t) => t,
                Err(u) => return Plan::Refuse(u),
            };
            let target = i
                .relation
                .as_ref()
                .and_then(|r| sh.table_index(&r.schemaname, &r.relname));
            match target {
                None => tables.mixed(sh).map_or(Plan::Home, Plan::Refuse),
                Some(t)
                    if insert::is_values(i)
                        && (tables.sharded.len() > 1
                            || !tables.plain.is_empty()
                            || found.writes > 1) =>
                {
                    Plan::Refuse(Unsupported::feature(format!(
                        "INSERT into sharded table {} with a subquery or WITH query reading \
                         tables: give the values as literals or parameters",
                        sh.tables[t].name
                    )))
                }
                Some(t) => insert::insert(sh, t, i, found.params),
            }
        }
        NodeEnum::TransactionStmt(t) => transaction(t, text),
        NodeEnum::VariableSetStmt(v) => set(sh, v),
        NodeEnum::CopyStmt(c) => copy(sh, node, c),
        NodeEnum::ExplainStmt(e) => {
            let Some(q) = e.query.as_deref().and_then(inner) else {
                return Plan::Home;
            };
            match statement_in(sh, q, text, true) {
                p @ (Plan::Home | Plan::All | Plan::Shard(_) | Plan::ByParam { .. }) => p,
                Plan::Refuse(u) => Plan::Refuse(u),
                _ => Plan::Refuse(explain_refusal()),
            }
        }
        NodeEnum::PrepareStmt(_) | NodeEnum::ExecuteStmt(_) => Plan::Refuse(sql_prepared()),
        NodeEnum::DeallocateStmt(d) if d.isall => Plan::All,
        NodeEnum::DeallocateStmt(_) => Plan::Refuse(sql_prepared()),
        NodeEnum::DoStmt(_) => Plan::Refuse(Unsupported::feature(
            "DO blocks on a sharded database (they may write anywhere): run one on a shard \
             with /* pgsluice: shard=n */",
        )),
        NodeEnum::VariableShowStmt(_)
        | NodeEnum::ListenStmt(_)
        | NodeEnum::NotifyStmt(_)
        | NodeEnum::UnlistenStmt(_)
        | NodeEnum::CallStmt(_)
        | NodeEnum::FetchStmt(_)
        | NodeEnum::ClosePortalStmt(_)
        | NodeEnum::RefreshMatViewStmt(_) => Plan::Home,
        NodeEnum::CreateTableAsStmt(_) => {
            home_unless_sharded(sh, node, "CREATE TABLE AS or SELECT INTO over")
        }
        NodeEnum::DeclareCursorStmt(_) => home_unless_sharded(sh, node, "a cursor over"),
        NodeEnum::LockStmt(_) => home_unless_sharded(sh, node, "LOCK of"),
        NodeEnum::MergeStmt(_) => home_unless_sharded(sh, node, "MERGE on"),
        n if every_shard(n) => Plan::All,
        _ => home_unless_sharded(sh, node, "this statement on"),
    }
}

fn explain_refusal() -> Unsupported {
    Unsupported::feature(
        "EXPLAIN of a statement that runs on several shards: its plan would show one \
         shard's part only; add the key, or /* pgsluice: shard=n */",
    )
}

fn sql_prepared() -> Unsupported {
    Unsupported::feature(
        "SQL-level PREPARE / EXECUTE / DEALLOCATE on a sharded database: use protocol-level \
         prepared statements",
    )
}

/// Home, or refused when the statement names a sharded table.
pub(super) fn home_unless_sharded(sh: &Sharding, node: &NodeEnum, what: &str) -> Plan {
    let found = walk(node);
    match Tables::of(sh, &found) {
        Err(u) => Plan::Refuse(u),
        Ok(t) => match t.sharded.first() {
            None => Plan::Home,
            Some(&i) => Plan::Refuse(Unsupported::feature(format!(
                "{what} sharded table {} is not supported",
                sh.tables[i].name
            ))),
        },
    }
}

/// The table references of a statement, sorted out.
pub(super) struct Tables {
    /// Sharded table references (indexes into [`Sharding::tables`]), one per reference.
    pub sharded: Vec<usize>,
    /// Unsharded tables (not WITH queries, not system catalogs).
    pub plain: Vec<String>,
}

impl Tables {
    pub(super) fn of(sh: &Sharding, found: &Found) -> Result<Tables, Unsupported> {
        if let Some(c) = found.ctes.iter().find(|c| sh.table_index("", c).is_some()) {
            return Err(Unsupported::feature(format!(
                "a WITH query named {c}, like a sharded table: rename the WITH query"
            )));
        }
        let mut t = Tables {
            sharded: Vec::new(),
            plain: Vec::new(),
        };
        for (schema, name) in &found.rels {
            if schema.is_empty() && found.ctes.contains(name) {
                continue;
            }
            if let Some(i) = sh.table_index(schema, name) {
                t.sharded.push(i);
            } else if !(matches!(schema.as_str(), "pg_catalog" | "information_schema")
                || (schema.is_empty() && name.starts_with("pg_")))
            {
                t.plain.push(name.clone());
            }
        }
        Ok(t)
    }

    /// The refusal of a statement mixing sharded and unsharded tables.
    pub(super) fn mixed(&self, sh: &Sharding) -> Option<Unsupported> {
        let (&s, p) = (self.sharded.first()?, self.plain.first()?);
        Some(Unsupported::feature(format!(
            "a statement on sharded table {} and table {p}, which is not sharded \
             (unsharded tables live on shard 0 only): add /* pgsluice: shard=n */ to run \
             it on one shard",
            sh.tables[s].name
        )))
    }
}

enum Query<'a> {
    Select(&'a SelectStmt),
    Update(&'a UpdateStmt),
    Delete(&'a DeleteStmt),
}

/// SELECT / UPDATE / DELETE.
fn query(sh: &Sharding, node: &NodeEnum, q: Query<'_>, explain: bool) -> Plan {
    match query_plan(sh, node, q, explain) {
        Ok(p) => p,
        Err(u) => Plan::Refuse(u),
    }
}

fn query_plan(
    sh: &Sharding,
    node: &NodeEnum,
    q: Query<'_>,
    explain: bool,
) -> Result<Plan, Unsupported> {
    let found = walk(node);
    let tables = Tables::of(sh, &found)?;
    let Some(&first) = tables.sharded.first() else {
        return Ok(Plan::Home);
    };
    let first = &sh.tables[first];
    if found.into {
        return Err(Unsupported::feature(format!(
            "SELECT INTO over sharded table {}",
            first.name
        )));
    }
    let own_writes = usize::from(!matches!(q, Query::Select(_)));
    if found.writes > own_writes {
        return Err(Unsupported::feature(format!(
            "a data-modifying WITH query in a statement on sharded table {}",
            first.name
        )));
    }
    if let Some(u) = tables.mixed(sh) {
        return Err(u);
    }
    let mut a = Analysis::new(sh, &found.ctes);
    let write = match q {
        Query::Select(s) => {
            a.select(s);
            None
        }
        Query::Update(u) => {
            let target = u
                .relation
                .as_ref()
                .and_then(|r| sh.table_index(&r.schemaname, &r.relname));
            if let Some(t) = target.map(|t| &sh.tables[t]) {
                if insert::sets_key(t, &u.target_list) {
                    return Err(Unsupported::feature(format!(
                        "UPDATE of the key column {} of sharded table {}: the row would move \
                         to another shard; delete it and insert it again",
                        t.column, t.name
                    )));
                }
            }
            a.update(u);
            Some(("UPDATE", target))
        }
        Query::Delete(d) => {
            a.delete(d);
            Some((
                "DELETE",
                d.relation
                    .as_ref()
                    .and_then(|r| sh.table_index(&r.schemaname, &r.relname)),
            ))
        }
    };
    if a.occurrences() != tables.sharded.len() {
        return Err(Unsupported::feature(format!(
            "sharded table {} appears where pgsluice cannot tell its rows' shard (e.g. inside \
             an unusual expression): add the key, or /* pgsluice: shard=n */",
            first.name
        )));
    }
    let outcome = a.outcome()?.expect("sharded tables were analysed");
    match (outcome, write) {
        (Outcome::One(t), _) => Ok(t.into()),
        (_, Some((verb, target))) => {
            let t = &sh.tables[target.unwrap_or(tables.sharded[0])];
            Err(Unsupported::feature(format!(
                "{verb} on sharded table {} without its key: a write on several shards; add \
                 `{} = value` to the WHERE clause, or /* pgsluice: shard=n */",
                t.name, t.column
            )))
        }
        (Outcome::Linked, None) if found.locking => Err(Unsupported::feature(format!(
            "SELECT ... FOR UPDATE/SHARE on sharded table {} without its key: add `{} = value`",
            first.name, first.column
        ))),
        (Outcome::Linked, None) if explain => Err(explain_refusal()),
        (Outcome::Linked, None) => {
            let Query::Select(s) = q else {
                unreachable!("writes handled above")
            };
            Ok(Plan::FanOut(std::sync::Arc::new(merge::plan_select(s)?)))
        }
        (Outcome::Untied { table }, None) => Err(Unsupported::feature(format!(
            "sharded table {table} in a subquery, WITH query or set operation that is not \
             tied by its key to the outer query's sharded rows: pgsluice cannot split it \
             over the shards; give its key (`= value`) to run it on one shard"
        ))),
        (Outcome::Unlinked { a, b, same_scope }, None) => {
            Err(Unsupported::feature(if same_scope {
                format!("join of sharded tables {a} and {b} on non-key columns")
            } else {
                format!(
                    "a query combining sharded tables {a} and {b} (a subquery or set operation) \
                 without equality of their key columns"
                )
            }))
        }
    }
}
