//! Session state in transaction pooling: what pgsluice carries from connection to
//! connection, and what it refuses before it leaks.
//!
//! In transaction mode a client's next transaction may run on another server
//! connection, and its current one goes to another client. [`crate::classify::session`]
//! reads each statement with PostgreSQL's parser and reports what it does to the
//! session; this module decides:
//!
//! - **carried**: a session `SET` / `RESET` of a parameter pgsluice tracks (those
//!   PostgreSQL reports, `search_path`, and the names `track_extra_parameters` adds),
//!   `RESET ALL`, `DISCARD ALL`. The relay run records which ones ran
//!   ([`Carry`]); at its end the session reads their values back from the server and
//!   replays them on the client's later connections (`crate::params`).
//! - **passed**: `SET LOCAL`, `SET TRANSACTION`, `pg_advisory_xact_lock()`, `CREATE
//!   TEMP TABLE ... ON COMMIT DROP`, `NOTIFY`: they end with the transaction.
//! - **refused** with SQLSTATE 0A000 and a hint: `SET` of an untracked parameter,
//!   `SET ROLE`, session advisory locks, `WITH HOLD` cursors, temporary objects that
//!   outlive the transaction, `LISTEN` inside a transaction or beside other statements
//!   (on its own it is answered by pgsluice's notification hub). The refusal is raised
//!   by PostgreSQL itself (the text is replaced by a `DO` block that raises), so
//!   transaction semantics (an aborted transaction block, skip-to-Sync) stay exactly
//!   PostgreSQL's.
//!
//! SETs a client sends while it sets up never reach this guard: `client::param_request`
//! runs and carries them.

use crate::classify::session::{Analysis, Effect, Unsafe};
use crate::params;

/// Why a statement is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// What the client tried, for the message.
    pub what: String,
    /// What to do instead.
    pub hint: &'static str,
}

/// The session settings one relay run changed, to read back at its end.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Carry {
    /// Lower-case names of parameters a session SET / RESET touched.
    pub settings: Vec<String>,
    /// RESET ALL or DISCARD ALL ran.
    pub reset_all: bool,
    /// DISCARD ALL ran (it also unlistens everything).
    pub discard_all: bool,
}

impl Carry {
    /// Nothing to read back.
    pub fn is_empty(&self) -> bool {
        self.settings.is_empty() && !self.reset_all && !self.discard_all
    }

    /// Adds what another statement changed.
    pub fn merge(&mut self, other: Carry) {
        for s in other.settings {
            if !self.settings.contains(&s) {
                self.settings.push(s);
            }
        }
        self.reset_all |= other.reset_all;
        self.discard_all |= other.discard_all;
    }
}

const HINT_SET: &str = "add the parameter to track_extra_parameters so that pgsluice carries it, use SET LOCAL inside a transaction, ALTER ROLE/DATABASE ... SET, or pool_mode = session";
const HINT_SESSION: &str =
    "this needs a dedicated server connection: use pool_mode = session for this database or user";
const HINT_LISTEN: &str =
    "send LISTEN / UNLISTEN on its own, outside a transaction block: pgsluice then carries it";
const HINT_PREPARE: &str = "use the extended protocol's named statements (driver-side prepare), which pgsluice carries across connections";

/// Decides on the effects of one text: what to read back, or the refusal. `extra`
/// holds the lower-case names `track_extra_parameters` adds; `sql_prepare` tells
/// whether SQL-level PREPARE / EXECUTE / DEALLOCATE are carried (else refused).
pub fn judge(analysis: &Analysis, extra: &[String], sql_prepare: bool) -> Result<Carry, Refusal> {
    let mut carry = Carry::default();
    for effect in &analysis.effects {
        match effect {
            Effect::Set(name) => {
                if !params::is_carried(name, extra) {
                    return Err(Refusal {
                        what: format!("SET {name}"),
                        hint: HINT_SET,
                    });
                }
                if !carry.settings.contains(name) {
                    carry.settings.push(name.clone());
                }
            }
            Effect::ResetAll => carry.reset_all = true,
            Effect::DiscardAll => carry.discard_all = true,
            // Without SQL PREPARE, EXECUTE and DEALLOCATE can only name statements
            // that do not exist: PostgreSQL says so itself (26000).
            Effect::Execute { .. } | Effect::Deallocate { .. } => {}
            Effect::Prepare { .. } => {
                if !sql_prepare {
                    return Err(Refusal {
                        what: "SQL-level PREPARE".into(),
                        hint: HINT_PREPARE,
                    });
                }
            }
            Effect::Listen(_) => {
                return Err(Refusal {
                    what: "LISTEN inside a transaction or beside other statements".into(),
                    hint: HINT_LISTEN,
                })
            }
            Effect::Unlisten(_) => {
                return Err(Refusal {
                    what: "UNLISTEN inside a transaction or beside other statements".into(),
                    hint: HINT_LISTEN,
                })
            }
            Effect::Unsafe(u) => {
                return Err(Refusal {
                    what: u.what().into(),
                    hint: hint_for(*u),
                })
            }
        }
    }
    Ok(carry)
}

fn hint_for(u: Unsafe) -> &'static str {
    match u {
        Unsafe::Role => HINT_SESSION,
        Unsafe::HoldCursor => {
            "use a cursor without WITH HOLD inside a transaction, or pool_mode = session"
        }
        Unsafe::TempObject => {
            "add ON COMMIT DROP and use the table inside one transaction, or pool_mode = session"
        }
        Unsafe::SessionAdvisoryLock => {
            "use pg_advisory_xact_lock(), which is released at the end of the transaction"
        }
        Unsafe::DynamicSetConfig => {
            "name the parameter with a constant, so that pgsluice can carry it, or use set_config(..., true)"
        }
    }
}

/// A statement that makes PostgreSQL itself raise the refusal.
pub fn refusal_sql(r: &Refusal) -> String {
    let msg = format!(
        "pgsluice: {} would leave session state on a shared server connection (pool_mode = transaction)",
        r.what
    );
    format!(
        "DO $pgsluice$ BEGIN RAISE EXCEPTION USING ERRCODE = 'feature_not_supported', MESSAGE = {}, HINT = {}; END $pgsluice$",
        literal(&msg),
        literal(r.hint)
    )
}

fn literal(s: &str) -> String {
    let clean: String = s.chars().filter(|c| *c != '$' && *c != '\0').collect();
    format!("'{}'", clean.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::session::analyze;

    fn check(sql: &[u8]) -> Result<Carry, Refusal> {
        judge(&analyze(sql), &["work_mem".to_owned()], false)
    }

    #[test]
    fn allows_what_pooling_carries_or_what_ends_with_the_transaction() {
        for ok in [
            "select 1",
            "SET LOCAL statement_timeout = 5",
            "set transaction isolation level serializable",
            "create temp table t(x int) on commit drop",
            "select 'listen; prepare x as select 1'",
            "select pg_advisory_xact_lock(1)",
            "do $$ begin perform 1; end $$",
            "-- set foo = 1\nselect 1",
            "declare c cursor for select 1",
            "NOTIFY chan, 'x'",
        ] {
            assert_eq!(check(ok.as_bytes()), Ok(Carry::default()), "{ok}");
        }
    }

    #[test]
    fn tracked_settings_are_carried() {
        let carried = |sql: &str| check(sql.as_bytes()).unwrap();
        assert_eq!(
            carried("set timezone to 'UTC'").settings,
            vec!["timezone".to_owned()]
        );
        assert_eq!(
            carried("SET application_name = 'x'; SET search_path = a, b; select 1").settings,
            vec!["application_name".to_owned(), "search_path".to_owned()]
        );
        // track_extra_parameters.
        assert_eq!(
            carried("set work_mem = '64MB'").settings,
            vec!["work_mem".to_owned()]
        );
        assert!(carried("RESET ALL").reset_all);
        assert!(carried("discard all").reset_all && carried("discard all").discard_all);
        let mut a = carried("set search_path = a");
        a.merge(carried("reset search_path; reset all"));
        assert_eq!(a.settings, vec!["search_path".to_owned()]);
        assert!(a.reset_all && !a.is_empty());
    }

    #[test]
    fn text_in_another_encoding_is_checked_too() {
        // LATIN1 bytes (client_encoding = LATIN1): not UTF-8, and no business of ours.
        assert_eq!(check(b"select 'caf\xe9'"), Ok(Carry::default()));
        assert_eq!(
            check(b"SET statement_timeout = 'caf\xe9'").map_err(|r| r.what),
            Err("SET statement_timeout".to_owned())
        );
        assert_eq!(
            check(b"select '\xe9'; LISTEN chan").map_err(|r| r.what),
            Err("LISTEN inside a transaction or beside other statements".to_owned())
        );
    }

    #[test]
    fn refuses_what_would_leak() {
        for (bad, what) in [
            ("SET statement_timeout = '1s'", "SET statement_timeout"),
            (
                "select 1; SET maintenance_work_mem = '64MB'",
                "SET maintenance_work_mem",
            ),
            (
                "LISTEN chan",
                "LISTEN inside a transaction or beside other statements",
            ),
            ("prepare p as select 1", "SQL-level PREPARE"),
            (
                "create temporary table t(x int)",
                "CREATE TEMPORARY TABLE (without ON COMMIT DROP)",
            ),
            (
                "declare c cursor with hold for select 1",
                "DECLARE ... WITH HOLD",
            ),
            (
                "select pg_advisory_lock(42)",
                "pg_advisory_lock() (a session-level advisory lock)",
            ),
            ("set role admin", "SET ROLE / SET SESSION AUTHORIZATION"),
        ] {
            assert_eq!(
                check(bad.as_bytes()).map_err(|r| r.what),
                Err(what.to_owned()),
                "{bad}"
            );
        }
        assert!(judge(&analyze(b"prepare p as select 1"), &[], true).is_ok());
    }

    #[test]
    fn refusal_sql_quotes_safely() {
        let sql = refusal_sql(&Refusal {
            what: "SET a'b$x".into(),
            hint: "h",
        });
        assert!(sql.contains("'pgsluice: SET a''bx would"));
        assert!(sql.starts_with("DO $pgsluice$") && sql.ends_with("END $pgsluice$"));
    }
}
