//! Session parameters that pgsluice keeps consistent across server connections.
//!
//! In transaction mode a client meets many server connections. PostgreSQL reports these
//! parameters (GUC_REPORT) with ParameterStatus whenever they change, so pgsluice knows
//! both what each client believes and what each server connection has, and makes them
//! match with one `SET` round trip before forwarding a transaction.

use std::sync::Arc;

/// The parameters tracked per client and per server connection.
pub const TRACKED: [&str; 6] = [
    "client_encoding",
    "DateStyle",
    "TimeZone",
    "IntervalStyle",
    "standard_conforming_strings",
    "application_name",
];

/// Values of the tracked parameters (None = unknown / not set).
///
/// Values are shared (`Arc<str>`): clients that set nothing hold the pool's defaults
/// without a copy each, and equal values shared between a client and a server
/// connection compare by pointer on the per-transaction check.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParamSet([Option<Arc<str>>; TRACKED.len()]);

impl ParamSet {
    /// Index of a tracked parameter (case-insensitive, as PostgreSQL treats GUC names).
    pub fn index(name: &str) -> Option<usize> {
        TRACKED.iter().position(|t| t.eq_ignore_ascii_case(name))
    }

    /// Records a value; returns false if the parameter is not tracked.
    pub fn set(&mut self, name: &str, value: &str) -> bool {
        match Self::index(name) {
            Some(i) => {
                if self.0[i].as_deref() != Some(value) {
                    self.0[i] = Some(value.into());
                }
                true
            }
            None => false,
        }
    }

    /// The value of a tracked parameter.
    pub fn get(&self, name: &str) -> Option<&str> {
        Self::index(name).and_then(|i| self.0[i].as_deref())
    }

    /// Fills parameters this set does not know from `defaults`.
    pub fn fill_from(&mut self, defaults: &ParamSet) {
        for (mine, theirs) in self.0.iter_mut().zip(defaults.0.iter()) {
            if mine.is_none() {
                mine.clone_from(theirs);
            }
        }
    }

    /// The SQL that makes a server connection holding `server` match this set, or None
    /// when they already match.
    pub fn sync_sql(&self, server: &ParamSet) -> Option<String> {
        let mut sql = String::new();
        for (i, name) in TRACKED.iter().enumerate() {
            if let Some(want) = self.0[i].as_ref() {
                let same = server.0[i]
                    .as_ref()
                    .is_some_and(|have| Arc::ptr_eq(have, want) || have == want);
                if !same {
                    sql.push_str("SET ");
                    sql.push_str(name);
                    sql.push_str(" TO ");
                    push_literal(&mut sql, want);
                    sql.push(';');
                }
            }
        }
        (!sql.is_empty()).then_some(sql)
    }

    /// Iterates over known (name, value) pairs.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &str)> {
        TRACKED
            .iter()
            .zip(self.0.iter())
            .filter_map(|(n, v)| v.as_deref().map(|v| (*n, v)))
    }
}

/// Appends `value` as a SQL string literal (E'' form when it has a backslash).
fn push_literal(sql: &mut String, value: &str) {
    if value.contains('\\') {
        sql.push('E');
    }
    sql.push('\'');
    for c in value.chars() {
        match c {
            '\'' => sql.push_str("''"),
            '\\' => sql.push_str("\\\\"),
            c => sql.push(c),
        }
    }
    sql.push('\'');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_sql_only_for_differences() {
        let mut client = ParamSet::default();
        client.set("timezone", "Europe/Paris");
        client.set("application_name", "it's");
        let mut server = ParamSet::default();
        server.set("TimeZone", "UTC");
        server.set("application_name", "it's");
        assert_eq!(
            client.sync_sql(&server).unwrap(),
            "SET TimeZone TO 'Europe/Paris';"
        );
        server.set("TimeZone", "Europe/Paris");
        assert_eq!(client.sync_sql(&server), None);
        client.set("application_name", "a'b\\c");
        assert_eq!(
            client.sync_sql(&server).unwrap(),
            "SET application_name TO E'a''b\\\\c';"
        );
        assert!(!client.set("search_path", "x"));
    }
}
