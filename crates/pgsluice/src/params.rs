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

type Values = [Option<Arc<str>>; TRACKED.len()];

/// Values of the tracked parameters (None = unknown / not set).
///
/// The whole set is shared and copied on write (one pointer per holder): clients that
/// set nothing hold the pool's defaults, a client that just synced holds its server
/// connection's set, and the per-transaction check between two holders of the same
/// set is one pointer comparison. Values are shared `Arc<str>` inside a set, too.
#[derive(Debug, Clone, Default)]
pub struct ParamSet(Option<Arc<Values>>);

const NONE: Values = [None, None, None, None, None, None];

impl PartialEq for ParamSet {
    fn eq(&self, other: &Self) -> bool {
        self.values() == other.values()
    }
}

impl Eq for ParamSet {}

impl ParamSet {
    fn values(&self) -> &Values {
        self.0.as_deref().unwrap_or(&NONE)
    }

    /// Index of a tracked parameter (case-insensitive, as PostgreSQL treats GUC names).
    pub fn index(name: &str) -> Option<usize> {
        TRACKED.iter().position(|t| t.eq_ignore_ascii_case(name))
    }

    /// Records a value; returns false if the parameter is not tracked. The set is
    /// copied first only when it is shared and the value changes.
    pub fn set(&mut self, name: &str, value: &str) -> bool {
        match Self::index(name) {
            Some(i) => {
                if self.values()[i].as_deref() != Some(value) {
                    let values = Arc::make_mut(self.0.get_or_insert_with(|| Arc::new(NONE)));
                    values[i] = Some(value.into());
                }
                true
            }
            None => false,
        }
    }

    /// The value of a tracked parameter.
    pub fn get(&self, name: &str) -> Option<&str> {
        Self::index(name).and_then(|i| self.values()[i].as_deref())
    }

    /// The value of a tracked parameter, shared.
    pub fn get_shared(&self, name: &str) -> Option<&Arc<str>> {
        Self::index(name).and_then(|i| self.values()[i].as_ref())
    }

    /// Fills parameters this set does not know from `defaults`.
    pub fn fill_from(&mut self, defaults: &ParamSet) {
        if self.0.is_none() {
            self.clone_from(defaults);
            return;
        }
        let missing = |(mine, theirs): (&Option<Arc<str>>, &Option<Arc<str>>)| {
            mine.is_none() && theirs.is_some()
        };
        if self.values().iter().zip(defaults.values()).any(missing) {
            let theirs = defaults.values();
            let mine = Arc::make_mut(self.0.get_or_insert_with(|| Arc::new(NONE)));
            for (m, t) in mine.iter_mut().zip(theirs.iter()) {
                if m.is_none() {
                    m.clone_from(t);
                }
            }
        }
    }

    /// The SQL that makes a server connection holding `server` match this set, or None
    /// when they already match.
    pub fn sync_sql(&self, server: &ParamSet) -> Option<String> {
        if let (Some(a), Some(b)) = (&self.0, &server.0) {
            if Arc::ptr_eq(a, b) {
                return None;
            }
        }
        let (mine, theirs) = (self.values(), server.values());
        let mut sql = String::new();
        for (i, name) in TRACKED.iter().enumerate() {
            if let Some(want) = mine[i].as_ref() {
                let same = theirs[i]
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
            .zip(self.values().iter())
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

    #[test]
    fn shared_sets_are_copied_on_write() {
        let mut pool_defaults = ParamSet::default();
        pool_defaults.set("TimeZone", "UTC");
        let mut client = ParamSet::default();
        client.fill_from(&pool_defaults);
        assert_eq!(client.sync_sql(&pool_defaults), None);
        client.set("TimeZone", "Europe/Paris");
        assert_eq!(pool_defaults.get("TimeZone"), Some("UTC"));
        assert_eq!(client.get("TimeZone"), Some("Europe/Paris"));
        assert!(client.sync_sql(&pool_defaults).is_some());
        // Setting the value a set already has copies nothing and changes nothing.
        let mut again = pool_defaults.clone();
        again.set("timezone", "UTC");
        assert_eq!(again, pool_defaults);
        // A partly known set takes only the missing values.
        let mut partial = ParamSet::default();
        partial.set("application_name", "app");
        partial.fill_from(&pool_defaults);
        assert_eq!(partial.get("TimeZone"), Some("UTC"));
        assert_eq!(partial.get("application_name"), Some("app"));
    }
}
