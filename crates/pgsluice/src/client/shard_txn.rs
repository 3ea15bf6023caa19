//! Transaction blocks on a sharded database: BEGIN answered by pgsluice and sent to
//! the first shard the block touches, every later statement held to that shard (another
//! one fails the block), COMMIT / ROLLBACK / savepoints on it, in both protocols.

use pgsluice_protocol::backend;
use pgsluice_protocol::frame::Message;
use pgsluice_protocol::SqlState;

use super::shard_conn::{put_message, Broken};
use super::shard_session::{Driver, Txn};
use crate::shard::plan::{Plan, TxnCommand};

impl Driver<'_> {
    /// A statement inside a transaction block: on the block's shard, which the first
    /// statement chooses.
    pub(super) async fn in_txn(&mut self, plan: &Plan, m: &Message) -> Result<(), Broken> {
        let target = match plan {
            Plan::Home => Some(0),
            Plan::Shard(i) => Some(*i),
            Plan::SplitInsert(parts) if parts.iter().all(|(s, _)| *s == parts[0].0) => {
                parts.first().map(|(s, _)| *s)
            }
            _ => None,
        };
        match self.join_txn(target).await? {
            Some(shard) => self.single(shard, m).await,
            None => {
                self.ready();
                Ok(())
            }
        }
    }

    /// Whether the open transaction block may run a statement on `target` (None:
    /// several shards): the shard to run it on, with the block's BEGIN sent there
    /// first if it is the block's first shard; or None with the refusal appended.
    pub(super) async fn join_txn(
        &mut self,
        target: Option<usize>,
    ) -> Result<Option<usize>, Broken> {
        let Some(txn) = &self.txn else {
            return Ok(target);
        };
        let message = match (target, txn.shard) {
            (Some(j), Some(s)) if j == s => return Ok(Some(j)),
            (Some(j), Some(s)) => format!(
                "this transaction already runs on shard {s}; this statement would touch shard {j} (transactions over several shards are not supported)"
            ),
            (None, Some(s)) => format!(
                "this transaction already runs on shard {s}; this statement would touch every shard (transactions over several shards are not supported)"
            ),
            (None, None) => "a statement over several shards cannot run inside a transaction block (transactions over several shards are not supported)".to_owned(),
            (Some(j), None) => {
                let begin = txn.begin.clone();
                if !begin.is_empty() {
                    if let Some(e) = self.conn(j).await?.run_quiet(&begin).await? {
                        put_message(&mut self.out, &e);
                        if let Some(t) = &mut self.txn {
                            t.failed = true;
                        }
                        return Ok(None);
                    }
                }
                if let Some(t) = &mut self.txn {
                    t.shard = Some(j);
                }
                return Ok(Some(j));
            }
        };
        self.refuse(SqlState::FEATURE_NOT_SUPPORTED, &message);
        Ok(None)
    }

    /// BEGIN, COMMIT, ROLLBACK, savepoints.
    pub(super) async fn txn_command(
        &mut self,
        cmd: &TxnCommand,
        m: &Message,
    ) -> Result<(), Broken> {
        match cmd {
            TxnCommand::Begin(text) => {
                self.begin(text);
                self.ready();
            }
            TxnCommand::Commit | TxnCommand::Rollback => {
                let rollback = matches!(cmd, TxnCommand::Rollback);
                match self.txn.as_ref().map(|t| (t.shard, t.failed)) {
                    None => {
                        self.no_txn_warning();
                        let tag = if rollback { "ROLLBACK" } else { "COMMIT" };
                        backend::command_complete(&mut self.out, tag);
                        self.ready();
                    }
                    Some((Some(s), failed)) if failed && !rollback => {
                        self.end_quiet(s, "ROLLBACK").await?;
                        backend::command_complete(&mut self.out, "ROLLBACK");
                        self.ready();
                    }
                    Some((Some(s), _)) => {
                        self.single(s, m).await?;
                        self.txn = None;
                    }
                    Some((None, failed)) => {
                        self.txn = None;
                        let tag = if rollback || failed {
                            "ROLLBACK"
                        } else {
                            "COMMIT"
                        };
                        backend::command_complete(&mut self.out, tag);
                        self.ready();
                    }
                }
            }
            TxnCommand::Savepoint => {
                let target = self.txn.as_ref().map(|t| t.shard.unwrap_or(0));
                match target {
                    None => self.single(0, m).await?,
                    Some(t) => self.in_txn(&Plan::Shard(t), m).await?,
                }
            }
            TxnCommand::TwoPhase => {
                self.refuse(
                    SqlState::FEATURE_NOT_SUPPORTED,
                    "PREPARE TRANSACTION, COMMIT PREPARED and ROLLBACK PREPARED are not supported on a sharded database",
                );
                self.ready();
            }
        }
        Ok(())
    }

    /// Opens a transaction block (BEGIN answered here).
    pub(super) fn begin(&mut self, text: &str) {
        if self.txn.is_some() {
            backend::ErrorNotice {
                severity: pgsluice_protocol::backend::Severity::Warning,
                code: SqlState::ACTIVE_SQL_TRANSACTION,
                message: "there is already a transaction in progress",
                detail: None,
                hint: None,
            }
            .write(&mut self.out);
        } else {
            self.txn = Some(Txn {
                shard: None,
                begin: text.to_owned(),
                failed: false,
            });
        }
        backend::command_complete(&mut self.out, "BEGIN");
    }

    /// The WARNING of COMMIT or ROLLBACK outside a transaction block.
    pub(super) fn no_txn_warning(&mut self) {
        backend::ErrorNotice {
            severity: pgsluice_protocol::backend::Severity::Warning,
            code: SqlState::NO_ACTIVE_SQL_TRANSACTION,
            message: "there is no transaction in progress",
            detail: None,
            hint: None,
        }
        .write(&mut self.out);
    }

    /// Ends the block on shard `s` with `sql` (ROLLBACK of a block failed here).
    pub(super) async fn end_quiet(&mut self, s: usize, sql: &str) -> Result<(), Broken> {
        let err = self.conn(s).await?.run_quiet(sql).await?;
        self.txn = None;
        if let Some(e) = err {
            put_message(&mut self.out, &e);
        }
        Ok(())
    }

    /// Executes a portal answered here (transaction control, `SET pgsluice.shard`).
    pub(super) async fn run_local(
        &mut self,
        plan: &Plan,
        sql: &str,
    ) -> Result<Result<(), (SqlState, String)>, Broken> {
        match plan {
            Plan::SetShard(n) => self.set_shard(*n),
            Plan::Transaction(TxnCommand::Begin(text)) => self.begin(text),
            Plan::Transaction(cmd @ (TxnCommand::Commit | TxnCommand::Rollback)) => {
                let rollback = matches!(cmd, TxnCommand::Rollback);
                match self.txn.as_ref().map(|t| (t.shard, t.failed)) {
                    None => {
                        self.no_txn_warning();
                        let tag = if rollback { "ROLLBACK" } else { "COMMIT" };
                        backend::command_complete(&mut self.out, tag);
                    }
                    Some((shard, failed)) => {
                        let tag = if rollback || failed { "ROLLBACK" } else { "COMMIT" };
                        let before = self.out.len();
                        match shard {
                            Some(s) => self.end_quiet(s, tag).await?,
                            None => self.txn = None,
                        }
                        if self.out.len() > before {
                            // The shard's error (a deferred constraint...).
                            self.skip = true;
                        } else {
                            backend::command_complete(&mut self.out, tag);
                        }
                    }
                }
            }
            Plan::Transaction(TxnCommand::Savepoint) => {
                let target = self.txn.as_ref().map(|t| t.shard.unwrap_or(0)).unwrap_or(0);
                if self.txn.is_some() && self.join_txn(Some(target)).await?.is_none() {
                    self.skip = true;
                    return Ok(Ok(()));
                }
                match self.conn(target).await?.run_quiet(sql).await? {
                    Some(e) => {
                        put_message(&mut self.out, &e);
                        self.skip = true;
                    }
                    None => {
                        let word = sql
                            .split_whitespace()
                            .next()
                            .unwrap_or("SAVEPOINT")
                            .to_uppercase();
                        backend::command_complete(&mut self.out, &word);
                    }
                }
                self.after_single(target);
            }
            _ => {
                return Ok(Err((
                    SqlState::FEATURE_NOT_SUPPORTED,
                    "PREPARE TRANSACTION, COMMIT PREPARED and ROLLBACK PREPARED are not supported on a sharded database".into(),
                )))
            }
        }
        Ok(Ok(()))
    }
}
