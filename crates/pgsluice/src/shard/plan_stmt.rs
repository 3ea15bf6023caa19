//! The plan of a text: each statement by its kind, the override comment, and the
//! combination of several statements (rules in the `plan` module doc).

use pg_query::protobuf::{
    a_const, CopyStmt, DeleteStmt, SelectStmt, Token, TransactionStmt, TransactionStmtKind,
    UpdateStmt, VariableSetKind, VariableSetStmt,
};
use pg_query::NodeEnum;
use pgsluice_protocol::SqlState;

use super::super::copy::CopyOptions;
use super::super::merge;
use super::insert;
use super::key::{inner, Target};
use super::query::{Analysis, Outcome};
use super::walk::{walk, Found};
use super::{Plan, Sharding, TxnCommand, Unsupported};

/// The setting `SET pgsluice.shard` changes.
pub(super) const SHARD_SETTING: &str = "pgsluice.shard";

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

/// A shard number from the user, or SQLSTATE 22023.
fn shard_number(sh: &Sharding, text: &str, what: &str) -> Result<usize, Unsupported> {
    match text.trim().parse::<usize>() {
        Ok(n) if n < sh.shards => Ok(n),
        _ => Err(Unsupported {
            sqlstate: SqlState::INVALID_PARAMETER_VALUE,
            message: format!(
                "invalid shard \"{}\" in {what}: the database has {} shards, 0 to {}",
                text.trim(),
                sh.shards,
                sh.shards.saturating_sub(1)
            ),
        }),
    }
}

/// The shard a `/* pgsluice: shard=n */` (or `-- pgsluice: shard=n`) comment names.
/// Comments are found by PostgreSQL's scanner, so the same text inside a string
/// literal is no override.
pub(super) fn override_comment(sh: &Sharding, sql: &str) -> Result<Option<usize>, Unsupported> {
    if !sql.to_ascii_lowercase().contains("pgsluice") {
        return Ok(None);
    }
    let Ok(scan) = pg_query::scan(sql) else {
        return Ok(None);
    };
    let mut forced: Option<usize> = None;
    for tok in &scan.tokens {
        if tok.token != Token::CComment as i32 && tok.token != Token::SqlComment as i32 {
            continue;
        }
        let (Ok(start), Ok(end)) = (usize::try_from(tok.start), usize::try_from(tok.end)) else {
            continue;
        };
        let Some(comment) = sql.get(start..end) else {
            continue;
        };
        let body = comment
            .strip_prefix("/*")
            .map(|b| b.strip_suffix("*/").unwrap_or(b))
            .or_else(|| comment.strip_prefix("--"))
            .unwrap_or(comment);
        let Some(value) = shard_directive(body) else {
            continue;
        };
        let n = shard_number(sh, value, "the comment /* pgsluice: shard=n */")?;
        if forced.is_some_and(|f| f != n) {
            return Err(Unsupported {
                sqlstate: SqlState::INVALID_PARAMETER_VALUE,
                message: "two /* pgsluice: shard=n */ comments name different shards".into(),
            });
        }
        forced = Some(n);
    }
    Ok(forced)
}

/// `pgsluice: shard = n` (any case, spaces allowed): the text of n.
fn shard_directive(body: &str) -> Option<&str> {
    let rest = strip_word(body.trim_start(), "pgsluice")?.trim_start();
    let rest = rest.strip_prefix(':')?.trim_start();
    let rest = strip_word(rest, "shard")?.trim_start();
    Some(rest.strip_prefix('=')?.trim())
}

fn strip_word<'a>(s: &'a str, word: &str) -> Option<&'a str> {
    let head = s.get(..word.len())?;
    head.eq_ignore_ascii_case(word).then(|| &s[word.len()..])
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
    match node {
        NodeEnum::SelectStmt(s) => query(sh, node, Query::Select(s)),
        NodeEnum::UpdateStmt(u) => query(sh, node, Query::Update(u)),
        NodeEnum::DeleteStmt(d) => query(sh, node, Query::Delete(d)),
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
                Some(t) if insert::is_values(i) && (tables.sharded.len() > 1 || !tables.plain.is_empty() || found.writes > 1) => {
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
            match statement(sh, q, text) {
                p @ (Plan::Home | Plan::All | Plan::Shard(_) | Plan::ByParam { .. }) => p,
                Plan::Refuse(u) => Plan::Refuse(u),
                _ => Plan::Refuse(Unsupported::feature(
                    "EXPLAIN of a statement that runs on several shards: its plan would show \
                     one shard's part only; add the key, or /* pgsluice: shard=n */",
                )),
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
        NodeEnum::CreateTableAsStmt(_) => home_unless_sharded(sh, node, "CREATE TABLE AS or SELECT INTO over"),
        NodeEnum::DeclareCursorStmt(_) => home_unless_sharded(sh, node, "a cursor over"),
        NodeEnum::LockStmt(_) => home_unless_sharded(sh, node, "LOCK of"),
        NodeEnum::MergeStmt(_) => home_unless_sharded(sh, node, "MERGE on"),
        n if every_shard(n) => Plan::All,
        _ => home_unless_sharded(sh, node, "this statement on"),
    }
}

fn sql_prepared() -> Unsupported {
    Unsupported::feature(
        "SQL-level PREPARE / EXECUTE / DEALLOCATE on a sharded database: use protocol-level \
         prepared statements",
    )
}

/// Home, or refused when the statement names a sharded table.
fn home_unless_sharded(sh: &Sharding, node: &NodeEnum, what: &str) -> Plan {
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

/// DDL and maintenance: every shard.
fn every_shard(n: &NodeEnum) -> bool {
    use NodeEnum as N;
    matches!(
        n,
        N::CreateSchemaStmt(_) | N::AlterTableStmt(_) | N::ReplicaIdentityStmt(_)
            | N::AlterCollationStmt(_) | N::AlterDomainStmt(_) | N::GrantStmt(_)
            | N::GrantRoleStmt(_) | N::AlterDefaultPrivilegesStmt(_) | N::CreateStmt(_)
            | N::CreateTableSpaceStmt(_) | N::DropTableSpaceStmt(_)
            | N::AlterTableSpaceOptionsStmt(_) | N::AlterTableMoveAllStmt(_)
            | N::CreateExtensionStmt(_) | N::AlterExtensionStmt(_)
            | N::AlterExtensionContentsStmt(_) | N::CreateFdwStmt(_) | N::AlterFdwStmt(_)
            | N::CreateForeignServerStmt(_) | N::AlterForeignServerStmt(_)
            | N::CreateForeignTableStmt(_) | N::CreateUserMappingStmt(_)
            | N::AlterUserMappingStmt(_) | N::DropUserMappingStmt(_)
            | N::ImportForeignSchemaStmt(_) | N::CreatePolicyStmt(_) | N::AlterPolicyStmt(_)
            | N::CreateAmStmt(_) | N::CreateTrigStmt(_) | N::CreateEventTrigStmt(_)
            | N::AlterEventTrigStmt(_) | N::CreatePlangStmt(_) | N::CreateRoleStmt(_)
            | N::AlterRoleStmt(_) | N::AlterRoleSetStmt(_) | N::DropRoleStmt(_)
            | N::CreateSeqStmt(_) | N::AlterSeqStmt(_) | N::DefineStmt(_)
            | N::CreateDomainStmt(_) | N::CreateOpClassStmt(_) | N::CreateOpFamilyStmt(_)
            | N::AlterOpFamilyStmt(_) | N::DropStmt(_) | N::TruncateStmt(_)
            | N::CommentStmt(_) | N::SecLabelStmt(_) | N::IndexStmt(_)
            | N::CreateStatsStmt(_) | N::AlterStatsStmt(_) | N::CreateFunctionStmt(_)
            | N::AlterFunctionStmt(_) | N::RenameStmt(_) | N::AlterObjectDependsStmt(_)
            | N::AlterObjectSchemaStmt(_) | N::AlterOwnerStmt(_) | N::AlterOperatorStmt(_)
            | N::AlterTypeStmt(_) | N::RuleStmt(_) | N::CompositeTypeStmt(_)
            | N::CreateEnumStmt(_) | N::CreateRangeStmt(_) | N::AlterEnumStmt(_)
            | N::ViewStmt(_) | N::CreatedbStmt(_) | N::AlterDatabaseStmt(_)
            | N::AlterDatabaseRefreshCollStmt(_) | N::AlterDatabaseSetStmt(_)
            | N::DropdbStmt(_) | N::CreateConversionStmt(_) | N::CreateCastStmt(_)
            | N::CreateTransformStmt(_) | N::DropOwnedStmt(_) | N::ReassignOwnedStmt(_)
            | N::AlterTsdictionaryStmt(_) | N::AlterTsconfigurationStmt(_)
            | N::CreatePublicationStmt(_) | N::AlterPublicationStmt(_)
            | N::CreateSubscriptionStmt(_) | N::AlterSubscriptionStmt(_)
            | N::DropSubscriptionStmt(_) | N::VacuumStmt(_) | N::ClusterStmt(_)
            | N::ReindexStmt(_) | N::CheckPointStmt(_) | N::LoadStmt(_)
            | N::AlterSystemStmt(_) | N::DiscardStmt(_) | N::ConstraintsSetStmt(_)
    )
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
fn query(sh: &Sharding, node: &NodeEnum, q: Query<'_>) -> Plan {
    match query_plan(sh, node, q) {
        Ok(p) => p,
        Err(u) => Plan::Refuse(u),
    }
}

fn query_plan(sh: &Sharding, node: &NodeEnum, q: Query<'_>) -> Result<Plan, Unsupported> {
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
            a.select(s, None);
            None
        }
        Query::Update(u) => {
            let target = u.relation.as_ref().and_then(|r| sh.table_index(&r.schemaname, &r.relname));
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
            Some(("DELETE", d.relation.as_ref().and_then(|r| sh.table_index(&r.schemaname, &r.relname))))
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
        (Outcome::One(Target::Shard(n)), _) => Ok(Plan::Shard(n)),
        (Outcome::One(Target::Param { index, key_type }), _) => Ok(Plan::ByParam { index, key_type }),
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
        (Outcome::Linked, None) => {
            let Query::Select(s) = q else {
                unreachable!("writes handled above")
            };
            Ok(Plan::FanOut(std::sync::Arc::new(merge::plan_select(s)?)))
        }
        (Outcome::Unlinked { a, b, same_scope }, None) => Err(Unsupported::feature(if same_scope {
            format!("join of sharded tables {a} and {b} on non-key columns")
        } else {
            format!(
                "a query combining sharded tables {a} and {b} (a subquery or set operation) \
                 without equality of their key columns"
            )
        })),
    }
}

/// Transaction control.
fn transaction(t: &TransactionStmt, text: &str) -> Plan {
    use TransactionStmtKind as K;
    let chain = || {
        Plan::Refuse(Unsupported::feature(
            "COMMIT / ROLLBACK AND CHAIN on a sharded database: end the transaction and BEGIN again",
        ))
    };
    Plan::Transaction(match K::try_from(t.kind) {
        Ok(K::TransStmtBegin | K::TransStmtStart) => TxnCommand::Begin(text.to_owned()),
        Ok(K::TransStmtCommit) if t.chain => return chain(),
        Ok(K::TransStmtRollback) if t.chain => return chain(),
        Ok(K::TransStmtCommit) => TxnCommand::Commit,
        Ok(K::TransStmtRollback) => TxnCommand::Rollback,
        Ok(K::TransStmtSavepoint | K::TransStmtRelease | K::TransStmtRollbackTo) => {
            TxnCommand::Savepoint
        }
        Ok(K::TransStmtPrepare | K::TransStmtCommitPrepared | K::TransStmtRollbackPrepared) => {
            TxnCommand::TwoPhase
        }
        Ok(K::Undefined) | Err(_) => return Plan::Home,
    })
}

/// SET / RESET: every shard, except `pgsluice.shard`.
fn set(sh: &Sharding, v: &VariableSetStmt) -> Plan {
    if v.name != SHARD_SETTING {
        return Plan::All;
    }
    if v.is_local {
        return Plan::Refuse(Unsupported::feature(
            "SET LOCAL pgsluice.shard: use SET pgsluice.shard (until RESET)",
        ));
    }
    match VariableSetKind::try_from(v.kind) {
        Ok(VariableSetKind::VarSetDefault | VariableSetKind::VarReset) => Plan::SetShard(None),
        Ok(VariableSetKind::VarSetValue) => {
            let value = match v.args.as_slice() {
                [arg] => match inner(arg) {
                    Some(NodeEnum::AConst(c)) => match &c.val {
                        Some(a_const::Val::Ival(i)) => i.ival.to_string(),
                        Some(a_const::Val::Sval(s)) => s.sval.clone(),
                        Some(a_const::Val::Fval(f)) => f.fval.clone(),
                        _ => String::new(),
                    },
                    _ => String::new(),
                },
                _ => String::new(),
            };
            match shard_number(sh, &value, "SET pgsluice.shard") {
                Ok(n) => Plan::SetShard(Some(n)),
                Err(u) => Plan::Refuse(u),
            }
        }
        _ => Plan::Refuse(Unsupported {
            sqlstate: SqlState::INVALID_PARAMETER_VALUE,
            message: "SET pgsluice.shard takes a shard number".into(),
        }),
    }
}

/// COPY.
fn copy(sh: &Sharding, node: &NodeEnum, c: &CopyStmt) -> Plan {
    let Some(rv) = &c.relation else {
        // COPY (query) TO.
        return home_unless_sharded(sh, node, "COPY (query) TO over");
    };
    let Some(index) = sh.table_index(&rv.schemaname, &rv.relname) else {
        return home_unless_sharded(sh, node, "COPY reading");
    };
    let t = &sh.tables[index];
    let refuse = |m: String| Plan::Refuse(Unsupported::feature(m));
    if !c.is_from {
        return refuse(format!(
            "COPY {} TO: copying a sharded table out is not supported yet; use SELECT",
            t.name
        ));
    }
    if c.is_program || !c.filename.is_empty() {
        return refuse(format!(
            "COPY {} FROM a server file or program: every row would land on one shard; use \
             COPY FROM STDIN (psql's \\copy)",
            t.name
        ));
    }
    if t.key_type.is_none() {
        return Plan::Refuse(super::key::unknown_type(t));
    }
    let key_column = if c.attlist.is_empty() {
        match t.key_position {
            Some(p) => p,
            None => {
                return refuse(format!(
                    "COPY into sharded table {} without a column list: the key column's \
                     position is not known yet; name the columns",
                    t.name
                ))
            }
        }
    } else {
        let position = c.attlist.iter().position(|n| {
            matches!(inner(n), Some(NodeEnum::String(s)) if s.sval == t.column)
        });
        match position {
            Some(p) => p,
            None => {
                return refuse(format!(
                    "COPY into sharded table {} without its key column {}",
                    t.name, t.column
                ))
            }
        }
    };
    match CopyOptions::from_stmt(c) {
        Ok(options) => Plan::CopyIn {
            table: index,
            key_column,
            options,
        },
        Err(u) => Plan::Refuse(u),
    }
}
