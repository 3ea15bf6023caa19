//! The conclusion of an analysis: pins flowing along links, one shard, linked and
//! tied occurrences.

use super::super::key::{self, Target, Use};
use super::{Analysis, Outcome, ScopeKind};
use crate::shard::Unsupported;

impl Analysis<'_> {
    /// The conclusion; `None` when no sharded table was seen.
    pub(in crate::shard::plan) fn outcome(&self) -> Result<Option<Outcome>, Unsupported> {
        if self.occs.is_empty() {
            return Ok(None);
        }
        let mut sets: Vec<Vec<Target>> = vec![Vec::new(); self.occs.len()];
        for (occ, e) in &self.pins {
            let table = &self.sharding.tables[self.occs[*occ].table];
            if let Some(t) = key::target(self.sharding, table, e, Use::Filter)? {
                add(&mut sets[*occ], t);
            }
        }
        // Pins flow along links until nothing changes (sets only grow, and only with
        // targets of the pins).
        let mut changed = true;
        while changed {
            changed = false;
            for e in &self.edges {
                for (from, to, flows) in [(e.a, e.b, e.a_to_b), (e.b, e.a, e.b_to_a)] {
                    if !flows {
                        continue;
                    }
                    for t in sets[from].clone() {
                        changed |= add(&mut sets[to], t);
                    }
                }
            }
        }
        let common = sets[0]
            .iter()
            .copied()
            .find(|t| sets.iter().all(|s| s.iter().any(|u| u.same(*t))));
        if let Some(t) = common {
            return Ok(Some(Outcome::One(t)));
        }
        // Linked: one component over all links.
        let mut component: Vec<usize> = (0..self.occs.len()).collect();
        fn root(c: &mut [usize], mut i: usize) -> usize {
            while c[i] != i {
                c[i] = c[c[i]];
                i = c[i];
            }
            i
        }
        for e in &self.edges {
            let (a, b) = (root(&mut component, e.a), root(&mut component, e.b));
            component[a] = b;
        }
        let first = root(&mut component, 0);
        match (1..self.occs.len()).find(|&i| root(&mut component, i) != first) {
            None => Ok(Some(self.tied())),
            Some(other) => {
                let name = |i: usize| self.sharding.tables[self.occs[i].table].name.clone();
                Ok(Some(Outcome::Unlinked {
                    a: name(0),
                    b: name(other),
                    same_scope: self.occs[0].scope == self.occs[other].scope,
                }))
            }
        }
    }

    /// Linked occurrences: [`Outcome::Linked`] when every one is in the top-level
    /// SELECT or in a subquery (in an expression) whose rows that matter have the key
    /// of a row of one tied so already (`i.key = o.key`, `o.key IN (SELECT i.key
    /// ...)`); a FROM subquery, WITH query or set operation is not (its rows feed the
    /// top level whole, and a shard sees only its part of them).
    fn tied(&self) -> Outcome {
        let mut tied: Vec<bool> = self
            .occs
            .iter()
            .map(|o| self.scopes[o.scope].kind == ScopeKind::Top)
            .collect();
        let mut changed = true;
        while changed {
            changed = false;
            for e in &self.edges {
                for (from, to, flows) in [(e.a, e.b, e.a_to_b), (e.b, e.a, e.b_to_a)] {
                    let sublink = self.scopes[self.occs[to].scope].kind == ScopeKind::Sublink;
                    if flows && sublink && tied[from] && !tied[to] {
                        tied[to] = true;
                        changed = true;
                    }
                }
            }
        }
        match tied.iter().position(|t| !t) {
            None => Outcome::Linked,
            Some(i) => Outcome::Untied {
                table: self.sharding.tables[self.occs[i].table].name.clone(),
            },
        }
    }
}

/// Adds `t` to `set` unless it names a shard already there; true when added.
fn add(set: &mut Vec<Target>, t: Target) -> bool {
    if set.iter().any(|u| u.same(t)) {
        return false;
    }
    set.push(t);
    true
}
