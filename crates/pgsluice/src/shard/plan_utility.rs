//! Utility statements: the override comment and `SET pgsluice.shard`, DDL and
//! maintenance (every shard), transaction control, COPY.

use pg_query::protobuf::{
    a_const, CopyStmt, Token, TransactionStmt, TransactionStmtKind, VariableSetKind,
    VariableSetStmt,
};
use pg_query::NodeEnum;
use pgsluice_protocol::SqlState;

use super::super::copy::CopyOptions;
use super::key::inner;
use super::stmt::home_unless_sharded;
use super::{Plan, Sharding, TxnCommand, Unsupported};

/// The setting `SET pgsluice.shard` changes.
pub(super) const SHARD_SETTING: &str = "pgsluice.shard";

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

/// DDL and maintenance: every shard.
pub(super) fn every_shard(n: &NodeEnum) -> bool {
    use NodeEnum as N;
    matches!(
        n,
        N::CreateSchemaStmt(_)
            | N::AlterTableStmt(_)
            | N::ReplicaIdentityStmt(_)
            | N::AlterCollationStmt(_)
            | N::AlterDomainStmt(_)
            | N::GrantStmt(_)
            | N::GrantRoleStmt(_)
            | N::AlterDefaultPrivilegesStmt(_)
            | N::CreateStmt(_)
            | N::CreateTableSpaceStmt(_)
            | N::DropTableSpaceStmt(_)
            | N::AlterTableSpaceOptionsStmt(_)
            | N::AlterTableMoveAllStmt(_)
            | N::CreateExtensionStmt(_)
            | N::AlterExtensionStmt(_)
            | N::AlterExtensionContentsStmt(_)
            | N::CreateFdwStmt(_)
            | N::AlterFdwStmt(_)
            | N::CreateForeignServerStmt(_)
            | N::AlterForeignServerStmt(_)
            | N::CreateForeignTableStmt(_)
            | N::CreateUserMappingStmt(_)
            | N::AlterUserMappingStmt(_)
            | N::DropUserMappingStmt(_)
            | N::ImportForeignSchemaStmt(_)
            | N::CreatePolicyStmt(_)
            | N::AlterPolicyStmt(_)
            | N::CreateAmStmt(_)
            | N::CreateTrigStmt(_)
            | N::CreateEventTrigStmt(_)
            | N::AlterEventTrigStmt(_)
            | N::CreatePlangStmt(_)
            | N::CreateRoleStmt(_)
            | N::AlterRoleStmt(_)
            | N::AlterRoleSetStmt(_)
            | N::DropRoleStmt(_)
            | N::CreateSeqStmt(_)
            | N::AlterSeqStmt(_)
            | N::DefineStmt(_)
            | N::CreateDomainStmt(_)
            | N::CreateOpClassStmt(_)
            | N::CreateOpFamilyStmt(_)
            | N::AlterOpFamilyStmt(_)
            | N::DropStmt(_)
            | N::TruncateStmt(_)
            | N::CommentStmt(_)
            | N::SecLabelStmt(_)
            | N::IndexStmt(_)
            | N::CreateStatsStmt(_)
            | N::AlterStatsStmt(_)
            | N::CreateFunctionStmt(_)
            | N::AlterFunctionStmt(_)
            | N::RenameStmt(_)
            | N::AlterObjectDependsStmt(_)
            | N::AlterObjectSchemaStmt(_)
            | N::AlterOwnerStmt(_)
            | N::AlterOperatorStmt(_)
            | N::AlterTypeStmt(_)
            | N::RuleStmt(_)
            | N::CompositeTypeStmt(_)
            | N::CreateEnumStmt(_)
            | N::CreateRangeStmt(_)
            | N::AlterEnumStmt(_)
            | N::ViewStmt(_)
            | N::CreatedbStmt(_)
            | N::AlterDatabaseStmt(_)
            | N::AlterDatabaseRefreshCollStmt(_)
            | N::AlterDatabaseSetStmt(_)
            | N::DropdbStmt(_)
            | N::CreateConversionStmt(_)
            | N::CreateCastStmt(_)
            | N::CreateTransformStmt(_)
            | N::DropOwnedStmt(_)
            | N::ReassignOwnedStmt(_)
            | N::AlterTsdictionaryStmt(_)
            | N::AlterTsconfigurationStmt(_)
            | N::CreatePublicationStmt(_)
            | N::AlterPublicationStmt(_)
            | N::CreateSubscriptionStmt(_)
            | N::AlterSubscriptionStmt(_)
            | N::DropSubscriptionStmt(_)
            | N::VacuumStmt(_)
            | N::ClusterStmt(_)
            | N::ReindexStmt(_)
            | N::CheckPointStmt(_)
            | N::LoadStmt(_)
            | N::AlterSystemStmt(_)
            | N::DiscardStmt(_)
            | N::ConstraintsSetStmt(_)
    )
}

/// Transaction control.
pub(super) fn transaction(t: &TransactionStmt, text: &str) -> Plan {
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
pub(super) fn set(sh: &Sharding, v: &VariableSetStmt) -> Plan {
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
pub(super) fn copy(sh: &Sharding, node: &NodeEnum, c: &CopyStmt) -> Plan {
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
        let position = c
            .attlist
            .iter()
            .position(|n| matches!(inner(n), Some(NodeEnum::String(s)) if s.sval == t.column));
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
