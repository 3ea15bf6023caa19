//! Everything a statement names, found anywhere in its tree: every table reference
//! (`RangeVar`), the names of its WITH queries, and whether it holds a data-modifying
//! statement, a locking clause, an INTO clause or a parameter.
//!
//! As in `classify::scan`, the search is a [`crate::pgtree`] walk over every node, so
//! no table can hide in a node type a hand-written walk forgot. The
//! planner's own analysis (`plan_query`) reads the places it understands and compares
//! its count of sharded table references with this one: a reference it did not
//! analyse makes it refuse rather than guess.

use pg_query::NodeEnum;

use crate::pgtree::{self, Field, Stopped, Visitor};

/// What [`walk`] found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Found {
    /// Every table reference, in tree order: (schema as written or "", name).
    pub rels: Vec<(String, String)>,
    /// Names of WITH queries.
    pub ctes: Vec<String>,
    /// INSERT / UPDATE / DELETE / MERGE statements (the top-level one included).
    pub writes: usize,
    /// A FOR UPDATE / SHARE clause.
    pub locking: bool,
    /// An INTO clause (SELECT INTO, CREATE TABLE AS).
    pub into: bool,
    /// A parameter `$n`.
    pub params: bool,
}

/// Walks `node` (see the module doc).
pub(super) fn walk(node: &NodeEnum) -> Found {
    let mut w = Walk {
        found: Found::default(),
    };
    // The visitor never stops the walk; an error would only come from serde internals.
    let _ = pgtree::walk(node, &mut w);
    w.found
}

struct Walk {
    found: Found,
}

/// What a struct node is, for the fields the walk collects.
enum Kind {
    Other,
    /// FOR UPDATE OF t: `t` names a table of the FROM list, it is no reference.
    Locking,
    RangeVar {
        schema: String,
        name: String,
    },
    Cte,
}

impl Visitor for Walk {
    type Node = Kind;

    /// Notes a node type, and starts the collection of its fields.
    fn enter(&mut self, struct_name: &'static str) -> Result<Kind, Stopped> {
        Ok(match struct_name {
            "RangeVar" => Kind::RangeVar {
                schema: String::new(),
                name: String::new(),
            },
            "CommonTableExpr" => Kind::Cte,
            "InsertStmt" | "UpdateStmt" | "DeleteStmt" | "MergeStmt" => {
                self.found.writes += 1;
                Kind::Other
            }
            "LockingClause" => {
                self.found.locking = true;
                Kind::Locking
            }
            "IntoClause" => {
                self.found.into = true;
                Kind::Other
            }
            "ParamRef" => {
                self.found.params = true;
                Kind::Other
            }
            _ => Kind::Other,
        })
    }

    fn field(&self, kind: &Kind, key: &str) -> Field {
        let wanted = match kind {
            Kind::RangeVar { .. } => key == "schemaname" || key == "relname",
            Kind::Cte => key == "ctename",
            Kind::Locking if key == "locked_rels" => return Field::Skip,
            Kind::Locking | Kind::Other => false,
        };
        if wanted {
            Field::Collect
        } else {
            Field::Walk
        }
    }

    fn collected(&mut self, kind: &mut Kind, key: &str, text: Vec<String>) -> Result<(), Stopped> {
        let text = text.concat();
        match (kind, key) {
            (Kind::RangeVar { schema, .. }, "schemaname") => *schema = text,
            (Kind::RangeVar { name, .. }, _) => *name = text,
            (Kind::Cte, _) => self.found.ctes.push(text),
            (Kind::Locking | Kind::Other, _) => {}
        }
        Ok(())
    }

    fn leave(&mut self, kind: Kind) -> Result<(), Stopped> {
        if let Kind::RangeVar { schema, name } = kind {
            self.found.rels.push((schema, name));
        }
        Ok(())
    }
}
