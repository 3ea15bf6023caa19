//! The target list of a merged SELECT: each entry's expression, output name and
//! role (GROUP BY key, merged aggregate, carried value), and the resolution of ORDER
//! BY and GROUP BY items to returned columns, as PostgreSQL resolves them (ORDER BY:
//! output names first, then identical expressions; GROUP BY: input columns first).

use pg_query::protobuf::{a_const, FuncCall, SelectStmt, SortBy, SortByDir, SortByNulls};
use pg_query::{Node, NodeEnum};
use serde_json::Value;

use super::planning::{refuse, AggKind, ColRef, Role, SortKey};
use super::walk::{check_expr, json, OTHER_AGGREGATES};
use super::Unsupported;

/// A target entry: its expression (JSON, no locations) and output name when known.
pub(super) struct Entry {
    expr: Value,
    name: Option<String>,
    node: Option<Node>,
}

pub(super) struct Targets {
    pub(super) entries: Vec<Entry>,
    pub(super) star: Option<usize>,
}

/// `*` or `t.*`.
fn is_star(val: &Node) -> bool {
    let Some(NodeEnum::ColumnRef(c)) = &val.node else {
        return false;
    };
    matches!(
        c.fields.last().and_then(|f| f.node.as_ref()),
        Some(NodeEnum::AStar(_))
    )
}

impl Targets {
    pub(super) fn of(select: &SelectStmt) -> Result<Targets, Unsupported> {
        let mut entries = Vec::new();
        let mut star = None;
        for (i, n) in select.target_list.iter().enumerate() {
            let Some(NodeEnum::ResTarget(rt)) = &n.node else {
                return refuse("an unexpected target list entry");
            };
            let val = rt.val.as_deref().cloned();
            if val.as_ref().is_some_and(is_star) {
                star.get_or_insert(i);
            }
            let name = if !rt.name.is_empty() {
                Some(rt.name.clone())
            } else {
                val.as_ref().and_then(figure_name)
            };
            entries.push(Entry {
                expr: val.as_ref().map(json).unwrap_or(Value::Null),
                name,
                node: val,
            });
        }
        Ok(Targets { entries, star })
    }

    /// Each entry's role, aggregates checked: only count/sum/min/max, at the top of
    /// the entry, and no window functions or aggregated subqueries anywhere.
    pub(super) fn roles(&self) -> Result<Vec<Role>, Unsupported> {
        let mut roles = Vec::with_capacity(self.entries.len());
        for e in &self.entries {
            let Some(node) = &e.node else {
                roles.push(Role::Carry);
                continue;
            };
            if let Some(NodeEnum::FuncCall(call)) = &node.node {
                if call.over.is_none() {
                    if let Some(kind) = aggregate_kind(call)? {
                        for arg in &call.args {
                            check_expr(&json(arg), "an aggregate's argument")?;
                        }
                        if let Some(f) = &call.agg_filter {
                            check_expr(&json(f.as_ref()), "FILTER")?;
                        }
                        roles.push(Role::Agg(kind));
                        continue;
                    }
                }
            }
            check_expr(&e.expr, "the select list")?;
            roles.push(Role::Carry);
        }
        Ok(roles)
    }

    /// Target entries after a second `*` have no known output position.
    pub(super) fn check_stars(&self, sort: &[SortKey]) -> Result<(), Unsupported> {
        let Some(first) = self.star else {
            return Ok(());
        };
        let stars = self
            .entries
            .iter()
            .filter(|e| e.node.as_ref().is_some_and(is_star))
            .count();
        let after = sort.iter().any(|k| matches!(k.col, ColRef::Target(i) | ColRef::Name { fallback: Some(i), .. } if i > first));
        if stars > 1 && after {
            return refuse("ORDER BY a column listed after several * over several shards");
        }
        Ok(())
    }

    fn by_expr(&self, expr: &Value) -> Option<usize> {
        self.entries.iter().position(|e| &e.expr == expr)
    }

    fn by_name(&self, name: &str) -> Option<usize> {
        self.entries
            .iter()
            .position(|e| e.name.as_deref() == Some(name))
    }
}

fn func_name(call: &FuncCall) -> String {
    match call.funcname.last().and_then(|n| n.node.as_ref()) {
        Some(NodeEnum::String(s)) => s.sval.to_ascii_lowercase(),
        _ => String::new(),
    }
}

/// count/sum/min/max as merged aggregates, other aggregates refused; `None`: not
/// an aggregate.
fn aggregate_kind(call: &FuncCall) -> Result<Option<AggKind>, Unsupported> {
    let name = func_name(call);
    let kind = match name.as_str() {
        "count" => AggKind::Count,
        "sum" => AggKind::Sum,
        "min" => AggKind::Min,
        "max" => AggKind::Max,
        "avg" => return refuse("avg() over several shards: select sum() and count() and divide"),
        n if OTHER_AGGREGATES.contains(&n) => {
            return refuse(format!("the aggregate {n}() over several shards"))
        }
        _ if call.agg_star
            || call.agg_distinct
            || !call.agg_order.is_empty()
            || call.agg_within_group =>
        {
            return refuse(format!("the aggregate {name}() over several shards"))
        }
        _ => return Ok(None),
    };
    if call.agg_within_group {
        return refuse(format!("{name}() WITHIN GROUP over several shards"));
    }
    if call.agg_distinct && matches!(kind, AggKind::Count | AggKind::Sum) {
        return refuse(format!("{name}(DISTINCT ...) over several shards"));
    }
    Ok(Some(kind))
}

/// PostgreSQL's column name for an unaliased target (FigureColname), where sure.
fn figure_name(node: &Node) -> Option<String> {
    match node.node.as_ref()? {
        NodeEnum::ColumnRef(c) => match c.fields.last()?.node.as_ref()? {
            NodeEnum::String(s) => Some(s.sval.clone()),
            _ => None,
        },
        NodeEnum::FuncCall(f) => Some(func_name(f)),
        NodeEnum::TypeCast(tc) => tc.arg.as_deref().and_then(figure_name),
        _ => None,
    }
}

/// The roles of an aggregated SELECT's columns: GROUP BY items must be returned.
pub(super) fn group_roles(
    select: &SelectStmt,
    targets: &Targets,
    mut roles: Vec<Role>,
) -> Result<Vec<Role>, Unsupported> {
    for g in &select.group_clause {
        let at = match &g.node {
            Some(NodeEnum::AConst(c)) => match &c.val {
                Some(a_const::Val::Ival(i)) if i.ival >= 1 && (i.ival as usize) <= roles.len() => {
                    Some(i.ival as usize - 1)
                }
                _ => None,
            },
            Some(NodeEnum::ColumnRef(c)) if c.fields.len() == 1 => {
                // PostgreSQL prefers a FROM column to an output name in GROUP BY.
                let name = figure_name(g);
                targets
                    .by_expr(&json(g))
                    .or_else(|| name.and_then(|n| targets.by_name(&n)))
            }
            _ => targets.by_expr(&json(g)),
        };
        let Some(at) = at else {
            return refuse(
                "GROUP BY on an expression that is not returned (select the grouped columns)",
            );
        };
        if matches!(roles[at], Role::Agg(_)) {
            return refuse("GROUP BY on an aggregate");
        }
        roles[at] = Role::Group;
    }
    Ok(roles)
}

fn direction(sort: &SortBy) -> Result<(bool, bool), Unsupported> {
    let desc = match SortByDir::try_from(sort.sortby_dir).unwrap_or(SortByDir::SortbyDefault) {
        SortByDir::SortbyUsing => return refuse("ORDER BY ... USING over several shards"),
        SortByDir::SortbyDesc => true,
        _ => false,
    };
    let nulls_first =
        match SortByNulls::try_from(sort.sortby_nulls).unwrap_or(SortByNulls::SortbyNullsDefault) {
            SortByNulls::SortbyNullsFirst => true,
            SortByNulls::SortbyNullsLast => false,
            _ => desc,
        };
    Ok((desc, nulls_first))
}

fn sort_by(n: &Node) -> Result<(&SortBy, &Node), Unsupported> {
    match &n.node {
        Some(NodeEnum::SortBy(s)) => match s.node.as_deref() {
            Some(inner) => Ok((s, inner)),
            None => refuse("an empty ORDER BY item"),
        },
        _ => refuse("an unexpected ORDER BY item"),
    }
}

fn ordinal(inner: &Node, targets: &Targets) -> Result<Option<ColRef>, Unsupported> {
    if let Some(NodeEnum::AConst(c)) = &inner.node {
        return match &c.val {
            Some(a_const::Val::Ival(i)) if i.ival >= 1 => {
                let pos = i.ival as usize - 1;
                if targets.star.is_none() && pos >= targets.entries.len() {
                    return refuse("ORDER BY position out of range");
                }
                Ok(Some(ColRef::Position(pos)))
            }
            _ => refuse("ORDER BY a constant over several shards"),
        };
    }
    Ok(None)
}

fn not_returned<T>() -> Result<T, Unsupported> {
    refuse("ORDER BY on something that is not returned (add it to the select list)")
}

pub(super) fn sort_key(n: &Node, targets: &Targets) -> Result<SortKey, Unsupported> {
    let (sort, inner) = sort_by(n)?;
    let (desc, nulls_first) = direction(sort)?;
    let col = if let Some(col) = ordinal(inner, targets)? {
        col
    } else {
        let expr = json(inner);
        let by_expr = targets.by_expr(&expr);
        if by_expr.is_none() {
            // Not a returned expression: say why if it is an aggregate or window.
            check_expr(&expr, "ORDER BY")?;
        }
        match &inner.node {
            Some(NodeEnum::ColumnRef(c)) if c.fields.len() == 1 => {
                let Some(name) = figure_name(inner) else {
                    return not_returned();
                };
                // Decided at RowDescription unless sure now: output names first.
                let named = targets
                    .entries
                    .iter()
                    .filter(|e| e.name.as_deref() == Some(name.as_str()));
                let unknown =
                    targets.entries.iter().any(|e| e.name.is_none()) || targets.star.is_some();
                match (named.count(), by_expr, unknown) {
                    (1, _, false) => ColRef::Target(targets.by_name(&name).unwrap_or_default()),
                    (0, Some(i), false) => ColRef::Target(i),
                    (0, None, false) => return not_returned(),
                    _ => ColRef::Name {
                        name,
                        fallback: by_expr,
                    },
                }
            }
            Some(NodeEnum::ColumnRef(c)) if by_expr.is_none() && targets.star.is_some() => {
                // t.x with an unqualified `*`: the one output column named x.
                let all_plain_stars = targets.entries.iter().all(|e| {
                    e.node.as_ref().is_none_or(|n| match &n.node {
                        Some(NodeEnum::ColumnRef(c)) => {
                            c.fields.len() == 1
                                || !matches!(
                                    c.fields.last().and_then(|f| f.node.as_ref()),
                                    Some(NodeEnum::AStar(_))
                                )
                        }
                        _ => true,
                    })
                });
                match (all_plain_stars, figure_name(inner)) {
                    (true, Some(name)) if c.fields.len() == 2 => ColRef::Name {
                        name,
                        fallback: None,
                    },
                    _ => return not_returned(),
                }
            }
            _ => match by_expr {
                Some(i) => ColRef::Target(i),
                None => return not_returned(),
            },
        }
    };
    Ok(SortKey {
        col,
        desc,
        nulls_first,
    })
}

/// ORDER BY of a UNION ALL: output names or positions only (as PostgreSQL requires).
pub(super) fn union_sort_key(n: &Node, targets: &Targets) -> Result<SortKey, Unsupported> {
    let (sort, inner) = sort_by(n)?;
    let (desc, nulls_first) = direction(sort)?;
    let col = match ordinal(inner, targets)? {
        Some(col) => col,
        None => match &inner.node {
            Some(NodeEnum::ColumnRef(c)) if c.fields.len() == 1 => match figure_name(inner) {
                Some(name) => ColRef::Name {
                    name,
                    fallback: None,
                },
                None => return not_returned(),
            },
            _ => return refuse("ORDER BY of a UNION ALL must name an output column"),
        },
    };
    Ok(SortKey {
        col,
        desc,
        nulls_first,
    })
}
