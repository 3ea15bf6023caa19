//! The analysis behind [`super::merge::plan_select`]: what a SELECT's result is made
//! of (row concatenation, an ORDER BY, aggregates with or without GROUP BY), what
//! LIMIT/OFFSET the shards run, and every construct that a merge would answer
//! wrongly, refused with its name.
//!
//! Expression trees are walked as JSON (every pg_query node derives `Serialize`), so
//! no node type is skipped by accident, and compared as JSON without their
//! `location` fields ("an expression identical to a target entry").

use pg_query::protobuf::{a_const, LimitOption, SelectStmt, SetOperation, SortByDir, SortByNulls};
use pg_query::{Node, NodeEnum};
use serde_json::Value;

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

fn refuse<T>(msg: impl Into<String>) -> Result<T, Unsupported> {
    Err(Unsupported::feature(msg))
}

const NESTED: &str = "a subquery, WITH query or UNION ALL branch with aggregates, DISTINCT, \
GROUP BY, HAVING, LIMIT/OFFSET or window functions runs on each shard separately \
and cannot be merged";

/// Built-in aggregates other than count/sum/min/max, refused by name.
const OTHER_AGGREGATES: &[&str] = &[
    "array_agg",
    "string_agg",
    "bit_and",
    "bit_or",
    "bit_xor",
    "bool_and",
    "bool_or",
    "every",
    "json_agg",
    "json_agg_strict",
    "jsonb_agg",
    "jsonb_agg_strict",
    "json_object_agg",
    "json_object_agg_strict",
    "json_object_agg_unique",
    "json_object_agg_unique_strict",
    "jsonb_object_agg",
    "jsonb_object_agg_strict",
    "jsonb_object_agg_unique",
    "jsonb_object_agg_unique_strict",
    "xmlagg",
    "stddev",
    "stddev_pop",
    "stddev_samp",
    "variance",
    "var_pop",
    "var_samp",
    "corr",
    "covar_pop",
    "covar_samp",
    "regr_avgx",
    "regr_avgy",
    "regr_count",
    "regr_intercept",
    "regr_r2",
    "regr_slope",
    "regr_sxx",
    "regr_sxy",
    "regr_syy",
    "percentile_cont",
    "percentile_disc",
    "mode",
    "rank",
    "dense_rank",
    "percent_rank",
    "cume_dist",
    "range_agg",
    "range_intersect_agg",
    "any_value",
];

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
    for n in &select.sort_clause {
        check_expr(&json(n), "ORDER BY")?;
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

/// A target entry: its expression (JSON, no locations) and output name when known.
struct Entry {
    expr: Value,
    name: Option<String>,
    node: Option<Node>,
}

struct Targets {
    entries: Vec<Entry>,
    star: Option<usize>,
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
    fn of(select: &SelectStmt) -> Result<Targets, Unsupported> {
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
    fn roles(&self) -> Result<Vec<Role>, Unsupported> {
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
    fn check_stars(&self, sort: &[SortKey]) -> Result<(), Unsupported> {
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

fn func_name(call: &pg_query::protobuf::FuncCall) -> String {
    match call.funcname.last().and_then(|n| n.node.as_ref()) {
        Some(NodeEnum::String(s)) => s.sval.to_ascii_lowercase(),
        _ => String::new(),
    }
}

/// count/sum/min/max as merged aggregates, other aggregates refused; `None`: not
/// an aggregate.
fn aggregate_kind(call: &pg_query::protobuf::FuncCall) -> Result<Option<AggKind>, Unsupported> {
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
fn group_roles(
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

fn direction(sort: &pg_query::protobuf::SortBy) -> Result<(bool, bool), Unsupported> {
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

fn sort_by(n: &Node) -> Result<(&pg_query::protobuf::SortBy, &Node), Unsupported> {
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

fn sort_key(n: &Node, targets: &Targets) -> Result<SortKey, Unsupported> {
    let (sort, inner) = sort_by(n)?;
    let (desc, nulls_first) = direction(sort)?;
    let col = if let Some(col) = ordinal(inner, targets)? {
        col
    } else {
        let expr = json(inner);
        let by_expr = targets.by_expr(&expr);
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
fn union_sort_key(n: &Node, targets: &Targets) -> Result<SortKey, Unsupported> {
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

/// A node as JSON without `location` fields.
pub(super) fn json<T: serde::Serialize>(node: &T) -> Value {
    let mut v = serde_json::to_value(node).unwrap_or(Value::Null);
    strip_locations(&mut v);
    v
}

fn strip_locations(v: &mut Value) {
    match v {
        Value::Object(map) => {
            map.remove("location");
            map.values_mut().for_each(strip_locations);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_locations),
        _ => {}
    }
}

fn json_func_name(call: &Value) -> String {
    call["funcname"]
        .as_array()
        .and_then(|parts| parts.last())
        .and_then(|p| p["node"]["String"]["sval"].as_str())
        .unwrap_or_default()
        .to_ascii_lowercase()
}

fn json_is_aggregate(call: &Value) -> bool {
    let name = json_func_name(call);
    matches!(name.as_str(), "count" | "sum" | "min" | "max" | "avg")
        || OTHER_AGGREGATES.contains(&name.as_str())
        || call["agg_star"].as_bool() == Some(true)
        || call["agg_distinct"].as_bool() == Some(true)
        || call["agg_within_group"].as_bool() == Some(true)
        || call["agg_order"].as_array().is_some_and(|a| !a.is_empty())
}

/// An expression of the top-level SELECT: no window functions, no aggregates (those
/// allowed are taken before), and nested SELECTs checked by [`check_nested`].
fn check_expr(v: &Value, place: &str) -> Result<(), Unsupported> {
    let mut stack = vec![v];
    while let Some(v) = stack.pop() {
        match v {
            Value::Object(map) => {
                if let Some(sub) = map.get("SelectStmt") {
                    check_nested(sub)?;
                    continue;
                }
                if let Some(call) = map.get("FuncCall") {
                    if !call["over"].is_null() {
                        return refuse("window functions over several shards");
                    }
                    if json_is_aggregate(call) {
                        let name = json_func_name(call);
                        if name == "avg" {
                            return refuse(
                                "avg() over several shards: select sum() and count() and divide",
                            );
                        }
                        return refuse(format!(
                            "an aggregate inside an expression in {place} ({name}() + 1...) over several shards: select the aggregate itself"
                        ));
                    }
                }
                if map.contains_key("GroupingFunc")
                    || map.contains_key("JsonArrayAgg")
                    || map.contains_key("JsonObjectAgg")
                {
                    return refuse(format!(
                        "an aggregate inside an expression in {place} over several shards"
                    ));
                }
                stack.extend(map.values());
            }
            Value::Array(items) => stack.extend(items),
            _ => {}
        }
    }
    Ok(())
}

/// Anything below the top-level SELECT: no aggregates, window functions, DISTINCT,
/// GROUP BY, HAVING, LIMIT/OFFSET or set operations other than UNION ALL.
fn check_nested(v: &Value) -> Result<(), Unsupported> {
    let mut stack = vec![v];
    while let Some(v) = stack.pop() {
        match v {
            Value::Object(map) => {
                if let Some(s) = map.get("SelectStmt") {
                    let nonempty = |k: &str| s[k].as_array().is_some_and(|a| !a.is_empty());
                    let present = |k: &str| !s[k].is_null();
                    let op = s["op"].as_i64().unwrap_or(1);
                    let set_ok = op <= 1
                        || (op == SetOperation::SetopUnion as i64
                            && s["all"].as_bool() == Some(true));
                    if nonempty("distinct_clause")
                        || nonempty("group_clause")
                        || nonempty("window_clause")
                        || present("having_clause")
                        || present("limit_count")
                        || present("limit_offset")
                        || !set_ok
                    {
                        return refuse(NESTED);
                    }
                }
                if let Some(call) = map.get("FuncCall") {
                    if !call["over"].is_null() || json_is_aggregate(call) {
                        return refuse(NESTED);
                    }
                }
                if map.contains_key("GroupingFunc")
                    || map.contains_key("JsonArrayAgg")
                    || map.contains_key("JsonObjectAgg")
                {
                    return refuse(NESTED);
                }
                stack.extend(map.values());
            }
            Value::Array(items) => stack.extend(items),
            _ => {}
        }
    }
    Ok(())
}
