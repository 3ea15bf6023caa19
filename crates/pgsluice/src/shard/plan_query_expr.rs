//! The walk of expressions for the subqueries inside them (each a scope of its own).

use pg_query::{Node, NodeEnum};

use super::super::key::inner;
use super::{Analysis, ScopeKind};

impl Analysis<'_> {
    pub(super) fn exprs(&mut self, list: &[Node], scope: usize) {
        for n in list {
            self.expr(n, scope);
        }
    }

    /// Finds the subqueries inside an expression (each its own scope, child of
    /// `scope`). Node types not listed are not entered: a sharded table inside one is
    /// missing from the analysis, and the planner refuses the statement.
    pub(super) fn expr(&mut self, n: &Node, scope: usize) {
        let Some(e) = inner(n) else {
            return;
        };
        match e {
            NodeEnum::SubLink(s) => {
                if let Some(t) = s.testexpr.as_deref() {
                    self.expr(t, scope);
                }
                if let Some(NodeEnum::SelectStmt(sub)) = s.subselect.as_deref().and_then(inner) {
                    self.scope_select(sub, Some(scope), ScopeKind::Sublink);
                }
            }
            NodeEnum::AExpr(a) => {
                for x in [&a.lexpr, &a.rexpr].into_iter().flatten() {
                    self.expr(x, scope);
                }
            }
            NodeEnum::BoolExpr(b) => self.exprs(&b.args, scope),
            NodeEnum::FuncCall(f) => {
                self.exprs(&f.args, scope);
                self.exprs(&f.agg_order, scope);
                if let Some(x) = &f.agg_filter {
                    self.expr(x, scope);
                }
                if let Some(w) = &f.over {
                    self.exprs(&w.partition_clause, scope);
                    self.exprs(&w.order_clause, scope);
                }
            }
            NodeEnum::TypeCast(c) => {
                if let Some(x) = &c.arg {
                    self.expr(x, scope);
                }
            }
            NodeEnum::CaseExpr(c) => {
                for x in [&c.arg, &c.defresult].into_iter().flatten() {
                    self.expr(x, scope);
                }
                self.exprs(&c.args, scope);
            }
            NodeEnum::CaseWhen(w) => {
                for x in [&w.expr, &w.result].into_iter().flatten() {
                    self.expr(x, scope);
                }
            }
            NodeEnum::CoalesceExpr(c) => self.exprs(&c.args, scope),
            NodeEnum::MinMaxExpr(m) => self.exprs(&m.args, scope),
            NodeEnum::NullTest(t) => {
                if let Some(x) = &t.arg {
                    self.expr(x, scope);
                }
            }
            NodeEnum::BooleanTest(t) => {
                if let Some(x) = &t.arg {
                    self.expr(x, scope);
                }
            }
            NodeEnum::List(l) => self.exprs(&l.items, scope),
            NodeEnum::RowExpr(r) => self.exprs(&r.args, scope),
            NodeEnum::AArrayExpr(a) => self.exprs(&a.elements, scope),
            NodeEnum::ResTarget(t) => {
                if let Some(x) = &t.val {
                    self.expr(x, scope);
                }
            }
            NodeEnum::SortBy(s) => {
                if let Some(x) = &s.node {
                    self.expr(x, scope);
                }
            }
            NodeEnum::AIndirection(i) => {
                if let Some(x) = &i.arg {
                    self.expr(x, scope);
                }
            }
            NodeEnum::CollateClause(c) => {
                if let Some(x) = &c.arg {
                    self.expr(x, scope);
                }
            }
            NodeEnum::NamedArgExpr(a) => {
                if let Some(x) = &a.arg {
                    self.expr(x, scope);
                }
            }
            NodeEnum::GroupingSet(g) => self.exprs(&g.content, scope),
            _ => {}
        }
    }
}
