//! SELECT / UPDATE / DELETE: which rows of each sharded table reference a statement
//! needs, from its WHERE and JOIN conditions.
//!
//! Each SELECT (the statement, a subquery, a WITH query, a branch of a set operation)
//! is a scope with its FROM items. Every reference to a sharded table in a FROM list is
//! an *occurrence*. Top-level AND conjuncts of a WHERE clause, and of a join's ON
//! condition, give:
//!
//! - *pins*: `key = literal / $n`, `key IN (one value)`, `key IS NULL`: the rows of the
//!   occurrence that matter have that key. A condition pins only the occurrences it
//!   filters: those of its own scope for WHERE; both sides of an inner join, the
//!   nullable side of an outer join, neither side of a full join for ON.
//! - *links*: `a.key = b.key` (also `JOIN ... USING (key)`, `NATURAL JOIN` when both
//!   keys have one name, `key IN (SELECT key ...)`, and a correlated `inner.key =
//!   outer.key`): the rows of one that matter have the key of a row of the other, so
//!   a pin of the other flows into it, and the two are co-located on every shard. A
//!   pin flows only into an occurrence the condition filters: out of a subquery or an
//!   outer join's nullable side it does not.
//!
//! The statement runs on one shard when that shard holds the rows every occurrence
//! needs; on every shard when all occurrences are linked and *tied* to the top-level
//! SELECT's rows (in its FROM list, or in a subquery of an expression whose rows
//! that matter follow a tied occurrence's key: each shard then computes its part of
//! the answer); otherwise it is refused. `key IS NULL` does not pin an occurrence on
//! the nullable side of an outer join below the condition. Column references resolve as
//! PostgreSQL would: a qualified one by the nearest scope with that FROM name, an
//! unqualified one only in its own scope. Whatever is not understood pins and links
//! nothing, which can only make the plan wider (or refused), never wrong.

use pg_query::protobuf::{
    AExprKind, BoolExprType, DeleteStmt, JoinExpr, JoinType, NullTestType, RangeVar, SelectStmt,
    SubLinkType, UpdateStmt, WithClause,
};
use pg_query::{Node, NodeEnum};

use super::key::{self, inner, KeyExpr, Target};

#[path = "plan_query_expr.rs"]
mod expr;
#[path = "plan_query_outcome.rs"]
mod outcome;
use super::Sharding;

/// What the analysis of a statement concluded.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Outcome {
    /// Every occurrence's rows are on this shard.
    One(Target),
    /// All occurrences are linked by their keys: every shard computes its part.
    Linked,
    /// These two occurrences (tables) are not linked.
    Unlinked {
        a: String,
        b: String,
        same_scope: bool,
    },
    /// All linked, but this table is in a subquery, WITH query or set operation
    /// whose rows are not tied by key to the top-level SELECT's sharded rows.
    Untied { table: String },
}

/// The analysis of one statement (see the module doc).
pub(super) struct Analysis<'s> {
    sharding: &'s Sharding,
    ctes: &'s [String],
    occs: Vec<Occ>,
    scopes: Vec<Scope>,
    edges: Vec<Edge>,
    pins: Vec<(usize, KeyExpr)>,
}

struct Occ {
    table: usize,
    scope: usize,
    /// On the nullable side of an outer join (seen so far): `key IS NULL` above that
    /// join is also true of the rows the join adds, so it pins nothing.
    nullable: bool,
}

struct Scope {
    parent: Option<usize>,
    kind: ScopeKind,
    items: Vec<Item>,
}

/// Where a scope sits, for a fan-out: each shard computes its part of the rows of
/// the top-level SELECT; a subquery's rows only fit that when tied to them by key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ScopeKind {
    /// The statement itself.
    Top,
    /// A subquery in an expression (EXISTS, IN, scalar, ARRAY).
    Sublink,
    /// A FROM subquery, a WITH query, a set operation's branch.
    Other,
}

/// A FROM item's name, as column references qualify it.
struct Item {
    name: String,
    schema: String,
    aliased: bool,
    occ: Option<usize>,
}

/// A link between occurrences `a` and `b`; `a_to_b`: a pin of `a` flows into `b`.
struct Edge {
    a: usize,
    b: usize,
    a_to_b: bool,
    b_to_a: bool,
}

impl<'s> Analysis<'s> {
    /// An empty analysis; `ctes`: the statement's WITH query names (not tables).
    pub(super) fn new(sharding: &'s Sharding, ctes: &'s [String]) -> Self {
        Analysis {
            sharding,
            ctes,
            occs: Vec::new(),
            scopes: Vec::new(),
            edges: Vec::new(),
            pins: Vec::new(),
        }
    }

    /// Sharded table references analysed.
    pub(super) fn occurrences(&self) -> usize {
        self.occs.len()
    }

    /// Analyses a top-level SELECT (or VALUES, or set operation).
    pub(super) fn select(&mut self, s: &SelectStmt) {
        self.scope_select(s, None, ScopeKind::Top);
    }

    /// Analyses a SELECT as a scope of `kind` in scope `parent`.
    fn scope_select(&mut self, s: &SelectStmt, parent: Option<usize>, kind: ScopeKind) -> usize {
        if let Some(w) = &s.with_clause {
            self.with(w, parent);
        }
        let scope = self.new_scope(parent, kind);
        if s.larg.is_some() || s.rarg.is_some() {
            for branch in [&s.larg, &s.rarg].into_iter().flatten() {
                self.scope_select(branch, parent, ScopeKind::Other);
            }
        }
        let mut visible = Vec::new();
        for item in &s.from_clause {
            visible.extend(self.item_of_from(item, scope));
        }
        self.filter(s.where_clause.as_deref(), scope, &visible, None);
        for list in [
            &s.target_list,
            &s.group_clause,
            &s.window_clause,
            &s.sort_clause,
            &s.distinct_clause,
            &s.values_lists,
        ] {
            self.exprs(list, scope);
        }
        for e in [&s.having_clause, &s.limit_offset, &s.limit_count]
            .into_iter()
            .flatten()
        {
            self.expr(e, scope);
        }
        scope
    }

    /// Analyses an UPDATE (its target, FROM list, WHERE, SET values, RETURNING).
    pub(super) fn update(&mut self, u: &UpdateStmt) {
        if let Some(w) = &u.with_clause {
            self.with(w, None);
        }
        let scope = self.new_scope(None, ScopeKind::Top);
        let mut visible = Vec::new();
        if let Some(rv) = &u.relation {
            visible.extend(self.range_var(rv, scope));
        }
        for item in &u.from_clause {
            visible.extend(self.item_of_from(item, scope));
        }
        self.filter(u.where_clause.as_deref(), scope, &visible, None);
        self.exprs(&u.target_list, scope);
        if let Some(r) = &u.returning_clause {
            self.exprs(&r.exprs, scope);
        }
    }

    /// Analyses a DELETE (its target, USING list, WHERE, RETURNING).
    pub(super) fn delete(&mut self, d: &DeleteStmt) {
        if let Some(w) = &d.with_clause {
            self.with(w, None);
        }
        let scope = self.new_scope(None, ScopeKind::Top);
        let mut visible = Vec::new();
        if let Some(rv) = &d.relation {
            visible.extend(self.range_var(rv, scope));
        }
        for item in &d.using_clause {
            visible.extend(self.item_of_from(item, scope));
        }
        self.filter(d.where_clause.as_deref(), scope, &visible, None);
        if let Some(r) = &d.returning_clause {
            self.exprs(&r.exprs, scope);
        }
    }

    fn new_scope(&mut self, parent: Option<usize>, kind: ScopeKind) -> usize {
        self.scopes.push(Scope {
            parent,
            kind,
            items: Vec::new(),
        });
        self.scopes.len() - 1
    }

    fn with(&mut self, w: &WithClause, parent: Option<usize>) {
        for cte in &w.ctes {
            if let Some(NodeEnum::CommonTableExpr(c)) = inner(cte) {
                if let Some(NodeEnum::SelectStmt(s)) = c.ctequery.as_deref().and_then(inner) {
                    self.scope_select(s, parent, ScopeKind::Other);
                }
            }
        }
    }

    /// A table reference in a FROM list: an occurrence when sharded.
    fn range_var(&mut self, rv: &RangeVar, scope: usize) -> Vec<usize> {
        let (name, aliased) = match &rv.alias {
            Some(a) => (a.aliasname.clone(), true),
            None => (rv.relname.clone(), false),
        };
        let cte = rv.schemaname.is_empty() && self.ctes.contains(&rv.relname);
        let table = match cte {
            true => None,
            false => self.sharding.table_index(&rv.schemaname, &rv.relname),
        };
        let occ = table.map(|table| {
            self.occs.push(Occ {
                table,
                scope,
                nullable: false,
            });
            self.occs.len() - 1
        });
        self.scopes[scope].items.push(Item {
            name,
            schema: rv.schemaname.clone(),
            aliased,
            occ,
        });
        occ.into_iter().collect()
    }

    fn named_item(&mut self, scope: usize, name: Option<&str>) {
        if let Some(name) = name {
            self.scopes[scope].items.push(Item {
                name: name.to_owned(),
                schema: String::new(),
                aliased: true,
                occ: None,
            });
        }
    }

    /// One FROM item; returns the occurrences it joins directly.
    fn item_of_from(&mut self, n: &Node, scope: usize) -> Vec<usize> {
        match inner(n) {
            Some(NodeEnum::RangeVar(rv)) => self.range_var(rv, scope),
            Some(NodeEnum::JoinExpr(j)) => self.join(j, scope),
            Some(NodeEnum::RangeSubselect(r)) => {
                if let Some(NodeEnum::SelectStmt(s)) = r.subquery.as_deref().and_then(inner) {
                    self.scope_select(s, Some(scope), ScopeKind::Other);
                }
                self.named_item(scope, r.alias.as_ref().map(|a| a.aliasname.as_str()));
                Vec::new()
            }
            Some(NodeEnum::RangeFunction(f)) => {
                self.exprs(&f.functions, scope);
                self.named_item(scope, f.alias.as_ref().map(|a| a.aliasname.as_str()));
                Vec::new()
            }
            Some(NodeEnum::RangeTableSample(t)) => {
                self.exprs(&t.args, scope);
                match t.relation.as_deref() {
                    Some(r) => self.item_of_from(r, scope),
                    None => Vec::new(),
                }
            }
            _ => Vec::new(),
        }
    }

    fn join(&mut self, j: &JoinExpr, scope: usize) -> Vec<usize> {
        let left = match j.larg.as_deref() {
            Some(n) => self.item_of_from(n, scope),
            None => Vec::new(),
        };
        let right = match j.rarg.as_deref() {
            Some(n) => self.item_of_from(n, scope),
            None => Vec::new(),
        };
        // The occurrences the join's condition filters.
        let restrict: Vec<usize> = match JoinType::try_from(j.jointype) {
            Ok(JoinType::JoinInner) => left.iter().chain(&right).copied().collect(),
            Ok(JoinType::JoinLeft) => right.clone(),
            Ok(JoinType::JoinRight) => left.clone(),
            _ => Vec::new(),
        };
        let using: Vec<String> = j
            .using_clause
            .iter()
            .filter_map(|n| match inner(n) {
                Some(NodeEnum::String(s)) => Some(s.sval.clone()),
                _ => None,
            })
            .collect();
        for &l in &left {
            for &r in &right {
                let (lk, rk) = (self.key_column(l), self.key_column(r));
                if lk == rk && (j.is_natural || using.iter().any(|u| u == lk)) {
                    self.edge(l, r, &restrict);
                }
            }
        }
        let both: Vec<usize> = left.iter().chain(&right).copied().collect();
        self.filter(j.quals.as_deref(), scope, &restrict, Some(&both));
        let nullable: &[usize] = match JoinType::try_from(j.jointype) {
            Ok(JoinType::JoinLeft) => &right,
            Ok(JoinType::JoinRight) => &left,
            Ok(JoinType::JoinFull) => &both,
            _ => &[],
        };
        for &o in nullable {
            self.occs[o].nullable = true;
        }
        let alias = j.alias.as_ref().or(j.join_using_alias.as_ref());
        self.named_item(scope, alias.map(|a| a.aliasname.as_str()));
        both
    }

    fn key_column(&self, occ: usize) -> &str {
        &self.sharding.tables[self.occs[occ].table].column
    }

    fn edge(&mut self, a: usize, b: usize, restrict: &[usize]) {
        if a != b {
            self.edges.push(Edge {
                a,
                b,
                a_to_b: restrict.contains(&b),
                b_to_a: restrict.contains(&a),
            });
        }
    }

    /// A WHERE or ON condition: its conjuncts pin and link; `restrict`: the
    /// occurrences it filters; `visible`: for ON, the occurrences of the join
    /// (unqualified names resolve among them only).
    fn filter(
        &mut self,
        cond: Option<&Node>,
        scope: usize,
        restrict: &[usize],
        visible: Option<&[usize]>,
    ) {
        let Some(cond) = cond else {
            return;
        };
        let mut conjuncts = Vec::new();
        and_terms(cond, &mut conjuncts);
        for c in conjuncts {
            self.conjunct(c, scope, restrict, visible);
        }
    }

    fn conjunct(&mut self, c: &Node, scope: usize, restrict: &[usize], visible: Option<&[usize]>) {
        match inner(c) {
            Some(NodeEnum::AExpr(a)) if is_equality(a) => {
                let (Some(l), Some(r)) = (a.lexpr.as_deref(), a.rexpr.as_deref()) else {
                    return;
                };
                // `key IN (x)`: the list of one.
                let r = match inner(r) {
                    Some(NodeEnum::List(list)) if list.items.len() == 1 => &list.items[0],
                    Some(NodeEnum::List(_)) => {
                        self.expr(c, scope);
                        return;
                    }
                    _ => r,
                };
                let lk = self.key_refs(l, scope, visible);
                let rk = self.key_refs(r, scope, visible);
                for &x in &lk {
                    for &y in &rk {
                        self.edge(x, y, restrict);
                    }
                }
                for (refs, other) in [(&lk, r), (&rk, l)] {
                    if refs.is_empty() || !(lk.is_empty() || rk.is_empty()) {
                        continue;
                    }
                    if let Some(e) = inner(other).and_then(key::key_expr) {
                        self.pin(refs, &e, restrict);
                    }
                }
                self.expr(l, scope);
                self.expr(r, scope);
            }
            Some(NodeEnum::NullTest(t))
                if t.nulltesttype == NullTestType::IsNull as i32 && !t.argisrow =>
            {
                if let Some(arg) = t.arg.as_deref() {
                    let mut refs = self.key_refs(arg, scope, visible);
                    refs.retain(|&o| !self.occs[o].nullable);
                    let null = KeyExpr::Literal {
                        lit: key::Lit::Null,
                        cast: None,
                    };
                    self.pin(&refs, &null, restrict);
                }
            }
            Some(NodeEnum::SubLink(s))
                if s.sub_link_type == SubLinkType::AnySublink as i32
                    && s.oper_name.iter().all(
                        |n| matches!(inner(n), Some(NodeEnum::String(s)) if s.sval == "="),
                    ) =>
            {
                // `key IN (SELECT key FROM ...)`: the subquery's rows that matter have
                // the key of an outer row.
                let outer = match s.testexpr.as_deref() {
                    Some(t) => {
                        self.expr(t, scope);
                        self.key_refs(t, scope, visible)
                    }
                    None => Vec::new(),
                };
                let Some(NodeEnum::SelectStmt(sub)) = s.subselect.as_deref().and_then(inner) else {
                    return;
                };
                let sub_scope = self.scope_select(sub, Some(scope), ScopeKind::Sublink);
                // Both filter each other: the outer row passes only with a matching
                // inner key, and only inner rows matching an outer key matter.
                let filtered: Vec<usize> = self.scopes[sub_scope]
                    .items
                    .iter()
                    .filter_map(|i| i.occ)
                    .chain(restrict.iter().copied())
                    .collect();
                if let [target] = sub.target_list.as_slice() {
                    if let Some(NodeEnum::ResTarget(t)) = inner(target) {
                        if let Some(v) = t.val.as_deref() {
                            for y in self.key_refs(v, sub_scope, None) {
                                for &x in &outer {
                                    self.edge(x, y, &filtered);
                                }
                            }
                        }
                    }
                }
            }
            _ => self.expr(c, scope),
        }
    }

    fn pin(&mut self, refs: &[usize], e: &KeyExpr, restrict: &[usize]) {
        for &occ in refs {
            if restrict.contains(&occ) {
                self.pins.push((occ, e.clone()));
            }
        }
    }

    /// The occurrences whose key column `n` names (a plain column reference).
    fn key_refs(&self, n: &Node, scope: usize, visible: Option<&[usize]>) -> Vec<usize> {
        let Some(NodeEnum::ColumnRef(c)) = inner(n) else {
            return Vec::new();
        };
        let mut names = Vec::new();
        for f in &c.fields {
            match inner(f) {
                Some(NodeEnum::String(s)) => names.push(s.sval.as_str()),
                _ => return Vec::new(),
            }
        }
        let Some((&column, qualifier)) = names.split_last() else {
            return Vec::new();
        };
        let is_key = |occ: &usize| self.key_column(*occ) == column;
        match qualifier {
            [] => match visible {
                Some(v) => v.iter().copied().filter(is_key).collect(),
                None => self.scopes[scope]
                    .items
                    .iter()
                    .filter_map(|i| i.occ)
                    .filter(is_key)
                    .collect(),
            },
            _ => self.qualified(scope, qualifier, column),
        }
    }

    /// `[schema.]table.column`: the nearest scope with a FROM item of that name.
    fn qualified(&self, scope: usize, qualifier: &[&str], column: &str) -> Vec<usize> {
        let (schema, name) = match qualifier {
            [name] => (None, *name),
            [.., schema, name] => (Some(*schema), *name),
            [] => return Vec::new(),
        };
        let mut at = Some(scope);
        while let Some(s) = at {
            let found = self.scopes[s].items.iter().find(|i| {
                i.name == name
                    && schema
                        .is_none_or(|sch| !i.aliased && (i.schema.is_empty() || i.schema == sch))
            });
            if let Some(item) = found {
                return item
                    .occ
                    .filter(|&o| self.key_column(o) == column)
                    .into_iter()
                    .collect();
            }
            at = self.scopes[s].parent;
        }
        Vec::new()
    }
}

/// The top-level AND terms of a condition.
fn and_terms<'n>(n: &'n Node, out: &mut Vec<&'n Node>) {
    match inner(n) {
        Some(NodeEnum::BoolExpr(b)) if b.boolop == BoolExprType::AndExpr as i32 => {
            for a in &b.args {
                and_terms(a, out);
            }
        }
        _ => out.push(n),
    }
}

/// `a = b` or `a IN (...)`.
fn is_equality(a: &pg_query::protobuf::AExpr) -> bool {
    let op = a.name.last().and_then(inner);
    let eq = matches!(op, Some(NodeEnum::String(s)) if s.sval == "=");
    eq && (a.kind == AExprKind::AexprOp as i32 || a.kind == AExprKind::AexprIn as i32)
}
