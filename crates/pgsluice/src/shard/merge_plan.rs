//! The analysis behind [`super::merge::plan_select`]: what a SELECT's result is made
//! of (row concatenation, an ORDER BY, aggregates with or without GROUP BY), what
//! LIMIT/OFFSET the shards run, and every construct that a merge would answer
//! wrongly, refused with its name.
//!
//! The target list and ORDER BY / GROUP BY resolution live in `merge_targets.rs`,
//! the walks over nested expressions in `merge_walk.rs`.

use pg_query::protobuf::{a_const, LimitOption, SelectStmt, SetOperation};
use pg_query::{Node, NodeEnum};

use super::targets::{group_roles, sort_key, union_sort_key, Targets};
use super::walk::{check_expr, check_nested, foreign_collation, json};
use super::Unsupported;

/// A merged aggregate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggKind {
    /// `count(*)` / `count(x)`: the shards' counts added.
    Count,
    /// `sum(x)`: the shards' non-NULL sums added.
    Sum,
    /// `min(x)`.
    Min,
    /// `max(x)`.
    Max,
}

/// What an output column of an aggregated SELECT is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A GROUP BY column: rows of equal keys combine.
    Group,
    /// An aggregate, combined over the shards.
    Agg(AggKind),
    /// Neither (a constant, or an expression of the group): the first shard's value.
    Carry,
}

/// An output column named by ORDER BY, resolved once the RowDescription is known.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum ColRef {
    /// A target entry by index (its output position depends on `*` expansion).
    Target(usize),
    /// An output position (`ORDER BY 2`).
    Position(usize),
    /// A bare or star-qualified name: the output column of that name (PostgreSQL's
    /// rule: output names first); `fallback` is the target whose expression is that
    /// column, used when no output column has the name.
    Name {
        name: String,
        fallback: Option<usize>,
    },
}

/// One ORDER BY key.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct SortKey {
    pub(super) col: ColRef,
    pub(super) desc: bool,
    pub(super) nulls_first: bool,
}

/// The shape of the merge, without the SQL text.
#[derive(Debug, Clone, PartialEq, Default)]
pub(super) struct Shape {
    /// Number of target entries (a `*` counts one).
    pub(super) targets: usize,
    /// Index of the only `*` target, if any (several `*` only without ORDER BY/aggregates
    /// that need positions after the first).
    pub(super) star: Option<usize>,
    pub(super) sort: Vec<SortKey>,
    pub(super) limit: Option<u64>,
    pub(super) offset: u64,
    /// Per output column, when the SELECT aggregates (no `*` then).
    pub(super) aggregate: Option<Vec<Role>>,
}

pub(super) fn refuse<T>(msg: impl Into<String>) -> Result<T, Unsupported> {
    Err(Unsupported::feature(msg))
}

/// Analyzes `select`; on success also returns the statement the shards run when
/// it differs (LIMIT/OFFSET rewritten).
pub(super) fn analyze(select: &SelectStmt) -> Result<(Shape, Option<SelectStmt>), Unsupported> {
    if select.into_clause.is_some() {
        return refuse("SELECT INTO over several shards");
    }
    if !select.locking_clause.is_empty() {
        return refuse("FOR UPDATE / FOR SHARE over several shards");
    }
    if !select.values_lists.is_empty() {
        return refuse("VALUES over several shards");
    }
    if let Some(with) = &select.with_clause {
        if with.recursive {
            return refuse("WITH RECURSIVE over several shards");
        }
        for cte in &with.ctes {
            let Some(NodeEnum::CommonTableExpr(cte)) = &cte.node else {
                continue;
            };
            match cte.ctequery.as_deref().and_then(|q| q.node.as_ref()) {
                Some(NodeEnum::SelectStmt(_)) => {}
                _ => return refuse("a data-modifying WITH query over several shards"),
            }
            check_nested(&json(cte.as_ref()))?;
        }
    }
    let set_op = SetOperation::try_from(select.op).unwrap_or(SetOperation::SetopNone);
    let union =
        match set_op {
            SetOperation::SetopNone | SetOperation::Undefined => false,
            SetOperation::SetopUnion if select.all => true,
            _ => return refuse(
                "UNION, INTERSECT and EXCEPT over several shards (only UNION ALL can be merged)",
            ),
        };
    let mut shape = Shape::default();
    let (limit, offset) = limits(select)?;
    shape.limit = limit;
    shape.offset = offset;
    if union {
        for branch in [&select.larg, &select.rarg].into_iter().flatten() {
            check_nested(&serde_json::json!({ "SelectStmt": json(branch.as_ref()) }))?;
        }
        let mut first = select;
        while let Some(l) = &first.larg {
            first = l;
        }
        let targets = Targets::of(first)?;
        shape.targets = targets.entries.len();
        shape.star = targets.star;
        for sort in &select.sort_clause {
            shape.sort.push(union_sort_key(sort, &targets)?);
        }
        targets.check_stars(&shape.sort)?;
    } else {
        check_clauses(select)?;
        let targets = Targets::of(select)?;
        shape.targets = targets.entries.len();
        shape.star = targets.star;
        let roles = targets.roles()?;
        let grouped =
            roles.iter().any(|r| matches!(r, Role::Agg(_))) || !select.group_clause.is_empty();
        if grouped {
            if targets.star.is_some() {
                return refuse("* together with aggregates or GROUP BY over several shards");
            }
            shape.aggregate = Some(group_roles(select, &targets, roles)?);
        }
        for sort in &select.sort_clause {
            shape.sort.push(sort_key(sort, &targets)?);
        }
        targets.check_stars(&shape.sort)?;
    }
    if !shape.sort.is_empty() || shape.aggregate.is_some() {
        let compared = [
            &select.target_list,
            &select.sort_clause,
            &select.group_clause,
        ];
        if let Some(c) = compared
            .iter()
            .find_map(|nodes| foreign_collation(&json(nodes)))
        {
            return refuse(format!(
                "ORDER BY, GROUP BY or min()/max() with COLLATE \"{c}\" over several shards (only C or POSIX)"
            ));
        }
    }
    let rewritten = rewrite_limits(select, &shape);
    Ok((shape, rewritten))
}

/// The clauses of a non-set-operation SELECT that no merge can answer.
fn check_clauses(select: &SelectStmt) -> Result<(), Unsupported> {
    if !select.distinct_clause.is_empty() {
        let on = select.distinct_clause.iter().any(|n| n.node.is_some());
        return refuse(if on {
            "DISTINCT ON over several shards"
        } else {
            "DISTINCT over several shards"
        });
    }
    if select.having_clause.is_some() {
        return refuse("HAVING over several shards");
    }
    if !select.window_clause.is_empty() {
        return refuse("window functions over several shards");
    }
    if select.group_distinct {
        return refuse("GROUP BY DISTINCT over several shards");
    }
    for n in &select.from_clause {
        check_nested(&json(n))?;
    }
    if let Some(w) = &select.where_clause {
        check_expr(&json(w.as_ref()), "WHERE")?;
    }
    for n in &select.group_clause {
        if matches!(n.node, Some(NodeEnum::GroupingSet(_))) {
            return refuse("GROUPING SETS, ROLLUP and CUBE over several shards");
        }
        check_expr(&json(n), "GROUP BY")?;
    }
    Ok(())
}

/// The constant LIMIT (None: none) and OFFSET (0: none).
fn limits(select: &SelectStmt) -> Result<(Option<u64>, u64), Unsupported> {
    if select.limit_option == LimitOption::WithTies as i32 {
        return refuse("FETCH FIRST ... WITH TIES over several shards");
    }
    let limit = match &select.limit_count {
        None => None,
        Some(n) => constant(n, "LIMIT")?,
    };
    let offset = match &select.limit_offset {
        None => 0,
        Some(n) => constant(n, "OFFSET")?.unwrap_or(0),
    };
    Ok((limit, offset))
}

/// A LIMIT/OFFSET value: an integer constant (`None`: NULL / ALL).
fn constant(node: &Node, what: &str) -> Result<Option<u64>, Unsupported> {
    let bad = || refuse(format!("a non-constant {what} over several shards"));
    match &node.node {
        Some(NodeEnum::AConst(c)) if c.isnull => Ok(None),
        Some(NodeEnum::AConst(c)) => {
            let v: i128 = match &c.val {
                Some(a_const::Val::Ival(i)) => i128::from(i.ival),
                Some(a_const::Val::Fval(pg_query::protobuf::Float { fval: s }))
                | Some(a_const::Val::Sval(pg_query::protobuf::String { sval: s })) => {
                    match s.trim().parse() {
                        Ok(v) => v,
                        Err(_) => return bad(),
                    }
                }
                _ => return bad(),
            };
            match u64::try_from(v) {
                Ok(v) => Ok(Some(v)),
                Err(_) => refuse(format!("a negative {what}")),
            }
        }
        Some(NodeEnum::TypeCast(tc)) => match tc.arg.as_deref() {
            Some(inner) => constant(inner, what),
            None => bad(),
        },
        _ => bad(),
    }
}

/// The statement the shards run, when LIMIT/OFFSET change: sorted or plain rows run
/// `LIMIT limit + offset` without OFFSET; aggregates run without either.
fn rewrite_limits(select: &SelectStmt, shape: &Shape) -> Option<SelectStmt> {
    let unchanged = if shape.aggregate.is_some() {
        select.limit_count.is_none() && select.limit_offset.is_none()
    } else {
        select.limit_offset.is_none()
    };
    if unchanged {
        return None;
    }
    let mut out = select.clone();
    out.limit_offset = None;
    if shape.aggregate.is_some() {
        out.limit_count = None;
        out.limit_option = LimitOption::Default as i32;
    } else if let Some(limit) = shape.limit {
        let total = limit.saturating_add(shape.offset);
        let val = match i32::try_from(total) {
            Ok(ival) => a_const::Val::Ival(pg_query::protobuf::Integer { ival }),
            Err(_) => a_const::Val::Fval(pg_query::protobuf::Float {
                fval: total.to_string(),
            }),
        };
        out.limit_count = Some(Box::new(Node {
            node: Some(NodeEnum::AConst(pg_query::protobuf::AConst {
                isnull: false,
                location: -1,
                val: Some(val),
            })),
        }));
    }
    Some(out)
}
