//! Session settings carried in transaction pooling: what a client's statements
//! changed is read back from the server connection before it goes back to the pool.
//!
//! PostgreSQL reports most tracked parameters itself (ParameterStatus), and the relay
//! records those as they come. search_path (before PostgreSQL 18) and the names of
//! `track_extra_parameters` go unreported: after a checkout whose statements set or
//! reset one of them (`client::state_guard::Carry`), one query reads their values back
//! with `current_setting()`, so pgsluice holds what PostgreSQL holds after the
//! transaction ended: a SET in a rolled-back transaction, a SET LOCAL, a function's
//! SET clause all come out exactly as PostgreSQL left them. That costs one round trip,
//! only after a transaction that changed such a setting.

use super::Session;
use crate::client::relay::RelayEnd;
use crate::client::state_guard::Carry;
use crate::error::ServerError;
use crate::params::{self, ParamSet};
use crate::pool::Checkout;

impl Session {
    /// After a relay run whose statements changed `carry`: at an idle release point
    /// the values are read back; on any other end the connection's unreported values
    /// become unknown, so that its next client's sync sets them again. A failed read
    /// leaves the connection to be closed.
    pub(super) async fn carry_after(
        &mut self,
        co: &mut Checkout,
        carry: &Carry,
        end: RelayEnd,
    ) -> RelayEnd {
        if !matches!(end, RelayEnd::Idle) {
            co.conn().params.forget_unreported();
            return end;
        }
        if carry.discard_all {
            self.unlisten_after_discard();
        }
        match self.read_back(co, carry).await {
            Ok(()) => end,
            Err(e) => {
                tracing::warn!(server = %co.conn().id, error = %e, "could not read back the client's session settings; closing the server connection");
                co.conn().params.forget_unreported();
                RelayEnd::ServerGone(None)
            }
        }
    }

    /// Reads back the settings `carry` names from `co`'s server (at an idle release
    /// point) into the client's and the connection's sets.
    pub(super) async fn read_back(
        &mut self,
        co: &mut Checkout,
        carry: &Carry,
    ) -> Result<(), ServerError> {
        let conn = co.conn();
        let names = names_to_read(carry, &self.params, &conn.params);
        if names.is_empty() {
            return Ok(());
        }
        let row = conn.run_for_row(&read_back_sql(&names)).await?;
        for (name, value) in names.iter().zip(row.iter()) {
            conn.params.set_learned(name, value.as_deref());
        }
        self.params.clone_from(&conn.params);
        Ok(())
    }
}

/// The parameters to read back after a checkout that changed `carry`.
pub(super) fn names_to_read(carry: &Carry, client: &ParamSet, server: &ParamSet) -> Vec<String> {
    let mut names: Vec<String> = carry
        .settings
        .iter()
        .filter(|n| params::needs_read_back(n))
        .cloned()
        .collect();
    if carry.reset_all {
        let all = ["default_transaction_read_only", "search_path"]
            .into_iter()
            .chain(client.extra_names())
            .chain(server.extra_names());
        for n in all {
            if !names.iter().any(|m| m == n) {
                names.push(n.to_owned());
            }
        }
    }
    names
}

/// `SELECT current_setting('a', true), ...` (NULL for a custom parameter that is gone).
pub(super) fn read_back_sql(names: &[String]) -> String {
    let mut sql = String::from("SELECT ");
    for (i, n) in names.iter().enumerate() {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str("pg_catalog.current_setting('");
        sql.push_str(&n.replace('\'', "''"));
        sql.push_str("', true)");
    }
    sql
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unreported_settings_are_read_back() {
        let carry = Carry {
            settings: vec!["timezone".into(), "search_path".into(), "work_mem".into()],
            ..Carry::default()
        };
        let none = ParamSet::default();
        let names = names_to_read(&carry, &none, &none);
        assert_eq!(names, ["search_path", "work_mem"]);
        let dtro = Carry {
            settings: vec!["default_transaction_read_only".into()],
            ..Carry::default()
        };
        assert_eq!(
            names_to_read(&dtro, &none, &none),
            ["default_transaction_read_only"]
        );
        assert_eq!(
            read_back_sql(&names),
            "SELECT pg_catalog.current_setting('search_path', true), pg_catalog.current_setting('work_mem', true)"
        );
        let mut client = ParamSet::default();
        client.set_extra("extra_float_digits", "3");
        let mut server = ParamSet::default();
        server.set_learned("my.x", Some("1"));
        let all = Carry {
            settings: vec![],
            reset_all: true,
            ..Carry::default()
        };
        assert_eq!(
            names_to_read(&all, &client, &server),
            [
                "default_transaction_read_only",
                "search_path",
                "extra_float_digits",
                "my.x"
            ]
        );
        assert!(names_to_read(&Carry::default(), &client, &server).is_empty());
    }
}
