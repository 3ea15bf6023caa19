//! How a run of statements moves the transaction state, reduced to what routing needs.
//!
//! Each statement is one [`Stmt`]. A text's whole run of statements is folded once,
//! from each of the three states a run can start in, into a [`Summary`]: a tiny `Copy`
//! value that the cache keeps and that composes, so the statements of several messages
//! (Parse after Parse in a pipeline) chain exactly as if they were one text.

/// What one statement means for routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stmt {
    /// Only reads.
    Read,
    /// Writes, or may write, or cannot be judged: the primary.
    Write,
    /// BEGIN / START TRANSACTION; `read_only` when it says READ ONLY (and nothing
    /// the standby would refuse).
    Begin { read_only: bool },
    /// SET TRANSACTION READ ONLY (and nothing the standby would refuse).
    SetTransactionReadOnly,
    /// COMMIT / ROLLBACK / END / ABORT without AND CHAIN.
    End,
}

/// Where a run of statements leaves the transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Tx {
    /// No transaction block is open.
    Idle,
    /// A transaction block opened without READ ONLY, and nothing run in it yet: a
    /// SET TRANSACTION READ ONLY may still make it read-only.
    Begun,
    /// A read-only transaction block is open.
    ReadOnly,
}

/// The state after a run: where the transaction is, and whether the run opened a
/// read-only transaction on the way. `None` (in an `Option<After>`) is Write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct After {
    pub(super) tx: Tx,
    pub(super) opened_read_only: bool,
}

impl After {
    /// Where every request starts: no transaction, nothing opened.
    pub(super) const START: After = After {
        tx: Tx::Idle,
        opened_read_only: false,
    };

    /// One statement on from here; `None` when the run must go to the primary.
    pub(super) fn step(self, stmt: Stmt) -> Option<After> {
        let tx = match (self.tx, stmt) {
            (Tx::Idle, Stmt::Read) => Tx::Idle,
            (Tx::Idle, Stmt::Begin { read_only: false }) => Tx::Begun,
            (Tx::Idle, Stmt::Begin { read_only: true })
            | (Tx::Begun | Tx::ReadOnly, Stmt::SetTransactionReadOnly)
            | (Tx::ReadOnly, Stmt::Read) => Tx::ReadOnly,
            (Tx::ReadOnly, Stmt::End) => Tx::Idle,
            // A plain transaction going on, a BEGIN inside a block, COMMIT outside
            // one, and every write.
            _ => return None,
        };
        Some(After {
            tx,
            opened_read_only: self.opened_read_only || tx == Tx::ReadOnly,
        })
    }

    /// Where a whole request goes, once all its statements have been stepped through.
    pub(super) fn class(this: Option<After>) -> super::Class {
        match this {
            // A BEGIN whose transaction could still write.
            None | Some(After { tx: Tx::Begun, .. }) => super::Class::Write,
            Some(After {
                opened_read_only: true,
                ..
            }) => super::Class::ReadOnlyTransaction,
            Some(_) => super::Class::Read,
        }
    }
}

/// A text's statements folded from each starting state: what the cache keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Summary {
    /// Indexed by the starting [`Tx`] (`Idle`, `Begun`, `ReadOnly`); each entry is the
    /// end state with `opened_read_only` meaning "opened by this text", or `None`.
    from: [Option<After>; 3],
}

impl Summary {
    /// A text that goes to the primary whatever came before it.
    pub(super) const WRITE: Summary = Summary { from: [None; 3] };

    /// Folds one text's statements. No statement at all (an empty text) is Write.
    pub(super) fn of(stmts: &[Stmt]) -> Summary {
        if stmts.is_empty() {
            return Summary::WRITE;
        }
        let run = |tx| {
            stmts.iter().try_fold(
                After {
                    tx,
                    opened_read_only: false,
                },
                |after, &stmt| after.step(stmt),
            )
        };
        Summary {
            from: [run(Tx::Idle), run(Tx::Begun), run(Tx::ReadOnly)],
        }
    }

    /// The state after this text, run from `before` (`None` stays `None`).
    pub(super) fn apply(self, before: Option<After>) -> Option<After> {
        let before = before?;
        let index = match before.tx {
            Tx::Idle => 0,
            Tx::Begun => 1,
            Tx::ReadOnly => 2,
        };
        let after = self.from[index]?;
        Some(After {
            tx: after.tx,
            opened_read_only: before.opened_read_only || after.opened_read_only,
        })
    }

    /// The class of this text sent on its own.
    pub(super) fn class(self) -> super::Class {
        After::class(self.apply(Some(After::START)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::Class;

    const BEGIN: Stmt = Stmt::Begin { read_only: false };
    const BEGIN_RO: Stmt = Stmt::Begin { read_only: true };

    #[test]
    fn runs_of_statements_classify_like_a_transaction_would() {
        let cases: &[(&[Stmt], Class)] = &[
            (&[], Class::Write),
            (&[Stmt::Read], Class::Read),
            (&[Stmt::Read, Stmt::Read], Class::Read),
            (&[Stmt::Read, Stmt::Write], Class::Write),
            (&[BEGIN], Class::Write),
            (&[BEGIN, Stmt::Read], Class::Write),
            (
                &[BEGIN, Stmt::SetTransactionReadOnly],
                Class::ReadOnlyTransaction,
            ),
            (
                &[BEGIN, Stmt::SetTransactionReadOnly, Stmt::Read],
                Class::ReadOnlyTransaction,
            ),
            (&[BEGIN_RO], Class::ReadOnlyTransaction),
            (
                &[BEGIN_RO, Stmt::Read, Stmt::End],
                Class::ReadOnlyTransaction,
            ),
            (
                &[BEGIN_RO, Stmt::Read, Stmt::End, Stmt::Read],
                Class::ReadOnlyTransaction,
            ),
            (&[BEGIN_RO, Stmt::End, Stmt::Write], Class::Write),
            (&[BEGIN_RO, Stmt::Write], Class::Write),
            (&[BEGIN_RO, BEGIN_RO], Class::Write),
            (&[Stmt::End], Class::Write),
            (&[Stmt::SetTransactionReadOnly], Class::Write),
            (
                &[BEGIN, Stmt::Read, Stmt::SetTransactionReadOnly],
                Class::Write,
            ),
        ];
        for (stmts, want) in cases {
            assert_eq!(Summary::of(stmts).class(), *want, "{stmts:?}");
        }
    }

    #[test]
    fn summaries_compose_like_the_concatenated_run() {
        let all = [
            Stmt::Read,
            Stmt::Write,
            BEGIN,
            BEGIN_RO,
            Stmt::SetTransactionReadOnly,
            Stmt::End,
        ];
        // Every split of every run of up to four statements.
        let mut runs: Vec<Vec<Stmt>> = vec![vec![]];
        for _ in 0..4 {
            let longer: Vec<Vec<Stmt>> = runs
                .iter()
                .flat_map(|r| all.iter().map(move |s| [r.clone(), vec![*s]].concat()))
                .collect();
            runs.extend(longer);
        }
        for run in runs.iter().filter(|r| !r.is_empty()) {
            let whole = Summary::of(run).class();
            for cut in 1..run.len() {
                let (a, b) = run.split_at(cut);
                let composed = Summary::of(b).apply(Summary::of(a).apply(Some(After::START)));
                assert_eq!(After::class(composed), whole, "{a:?} | {b:?}");
            }
        }
    }
}
