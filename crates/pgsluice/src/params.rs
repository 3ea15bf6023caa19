//! Session parameters that pgsluice keeps consistent across server connections.
//!
//! In transaction mode a client meets many server connections. PostgreSQL reports these
//! parameters (GUC_REPORT) with ParameterStatus whenever they change, so pgsluice knows
//! both what each client believes and what each server connection has, and makes them
//! match with one `SET` round trip before forwarding a transaction.
//!
//! A set also carries *extra* parameters: session settings PostgreSQL does not report
//! (`extra_float_digits`...) that a client set while setting up its connection (see
//! `client::param_request`). Nothing reports their values, so a client's set holds the
//! SQL text it asked for and a server connection's set holds what pgsluice applied to
//! it; the sync SETs what differs and RESETs what the client does not have.

use std::sync::Arc;

/// The parameters tracked per client and per server connection.
pub const TRACKED: [&str; 8] = [
    "client_encoding",
    "DateStyle",
    "TimeZone",
    "IntervalStyle",
    "standard_conforming_strings",
    "application_name",
    "default_transaction_read_only",
    // Reported by PostgreSQL 18 and later; on older servers pgsluice reads it back
    // after a statement that sets it (see `client::state_guard`).
    "search_path",
];

/// Index of `search_path` in [`TRACKED`]: a list, set with `set_config` (a quoted
/// `SET search_path TO '...'` would make the whole list one schema name), and reset
/// on a server connection when the client has no value of its own.
const SEARCH_PATH: usize = 7;

/// Tracked parameters some supported servers do not report: search_path (before
/// PostgreSQL 18) and default_transaction_read_only (before 14). Their values are read
/// back after a SET, copied to a server connection after a sync, and reset on a
/// connection where the client has none.
const MAYBE_UNREPORTED: [usize; 2] = [6, SEARCH_PATH];

/// A value no server reports (it has a NUL): stands for "unknown" in a server
/// connection's set, so that any client's value differs from it.
const UNKNOWN: &str = "\0unknown";

/// True when a parameter's value may go unreported (PostgreSQL before 18 does not
/// report search_path; extras are never reported): after a session SET of it, its
/// value is read back from the server.
pub fn needs_read_back(name: &str) -> bool {
    match ParamSet::index(name) {
        Some(i) => MAYBE_UNREPORTED.contains(&i),
        None => true,
    }
}

/// True when pgsluice carries a session `SET` of `name` (lower-case) in transaction
/// pooling: a tracked parameter, or one of `extra` (`track_extra_parameters`,
/// lower-case).
pub fn is_carried(name: &str, extra: &[String]) -> bool {
    ParamSet::index(name).is_some() || extra.iter().any(|e| e == name)
}

type Values = [Option<Arc<str>>; TRACKED.len()];

/// An extra (unreported) parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Extra {
    /// Lower-case name.
    name: Arc<str>,
    /// The value as SQL text (a literal or a list, as the client wrote it), or, when
    /// `learned`, as PostgreSQL's `current_setting()` gave it; `None` on a server
    /// connection whose value is unknown (a RESET or DISCARD ran): the next sync sets
    /// or resets it.
    value: Option<Arc<str>>,
    /// Read back from the server: replayed with `set_config()`.
    learned: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Inner {
    tracked: Values,
    extras: Vec<Extra>,
}

/// Values of the tracked parameters (None = unknown / not set).
///
/// The whole set is shared and copied on write (one pointer per holder): clients that
/// set nothing hold the pool's defaults, a client that just synced holds its server
/// connection's set, and the per-transaction check between two holders of the same
/// set is one pointer comparison. Values are shared `Arc<str>` inside a set, too.
#[derive(Debug, Clone, Default)]
pub struct ParamSet(Option<Arc<Inner>>);

const NONE: Inner = Inner {
    tracked: [None, None, None, None, None, None, None, None],
    extras: Vec::new(),
};

impl PartialEq for ParamSet {
    fn eq(&self, other: &Self) -> bool {
        self.inner() == other.inner()
    }
}

impl Eq for ParamSet {}

impl ParamSet {
    fn inner(&self) -> &Inner {
        static EMPTY: Inner = NONE;
        self.0.as_deref().unwrap_or(&EMPTY)
    }

    fn values(&self) -> &Values {
        &self.inner().tracked
    }

    fn inner_mut(&mut self) -> &mut Inner {
        Arc::make_mut(self.0.get_or_insert_with(|| Arc::new(NONE)))
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
                    self.inner_mut().tracked[i] = Some(value.into());
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
            let mine = &mut self.inner_mut().tracked;
            for (m, t) in mine.iter_mut().zip(theirs.iter()) {
                if m.is_none() {
                    m.clone_from(t);
                }
            }
        }
    }

    /// Makes two sets with the same values share one copy: after this the next
    /// [`Self::sync_sql`] between them is a pointer comparison. Both keep the copy at the
    /// lower address, so every holder of equal values (a pool's server connections and
    /// its clients) ends up on one copy, however they meet. Sets that differ are left
    /// alone.
    pub fn share_if_equal(&mut self, other: &mut ParamSet) {
        let (Some(a), Some(b)) = (&self.0, &other.0) else {
            return;
        };
        if Arc::ptr_eq(a, b) || a != b {
            return;
        }
        if Arc::as_ptr(a) < Arc::as_ptr(b) {
            other.0.clone_from(&self.0);
        } else {
            self.0.clone_from(&other.0);
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
                if !same && i == SEARCH_PATH {
                    push_set_config(&mut sql, name, want);
                } else if !same {
                    sql.push_str("SET ");
                    sql.push_str(name);
                    sql.push_str(" TO ");
                    push_literal(&mut sql, want);
                    sql.push(';');
                }
            } else if MAYBE_UNREPORTED.contains(&i) && theirs[i].is_some() {
                sql.push_str("RESET ");
                sql.push_str(name);
                sql.push(';');
            }
        }
        self.extras_sync_sql(server, &mut sql);
        (!sql.is_empty()).then_some(sql)
    }

    /// Appends the SETs and RESETs that make `server`'s extra parameters match this
    /// set's. The values are ASCII without backslashes (`client::param_request`
    /// carries no others), so neither client_encoding nor standard_conforming_strings
    /// changes how PostgreSQL reads them.
    fn extras_sync_sql(&self, server: &ParamSet, sql: &mut String) {
        let (mine, theirs) = (&self.inner().extras, &server.inner().extras);
        for e in theirs {
            if !mine.iter().any(|m| m.name == e.name) {
                sql.push_str("RESET ");
                push_ident(sql, &e.name);
                sql.push(';');
            }
        }
        for m in mine {
            let Some(want) = &m.value else { continue };
            let same = theirs
                .iter()
                .any(|e| e.name == m.name && e.value.as_ref() == Some(want));
            if !same && m.learned {
                push_set_config(sql, &m.name, want);
            } else if !same {
                sql.push_str("SET ");
                push_ident(sql, &m.name);
                sql.push_str(" TO ");
                sql.push_str(want);
                sql.push(';');
            }
        }
    }

    /// Records a value read back from the server (`current_setting()`), for a
    /// parameter PostgreSQL may not report; `None`: the parameter does not exist (a
    /// custom one that was reset), so nothing is kept.
    pub fn set_learned(&mut self, name: &str, value: Option<&str>) {
        if let Some(i) = Self::index(name) {
            if self.values()[i].as_deref() != value {
                self.inner_mut().tracked[i] = value.map(Into::into);
            }
            return;
        }
        let Some(value) = value else {
            self.remove_extra(name);
            return;
        };
        let current = self.inner().extras.iter().position(|e| &*e.name == name);
        match current {
            Some(i) => {
                let e = &self.inner().extras[i];
                if e.learned && e.value.as_deref() == Some(value) {
                    return;
                }
                let e = &mut self.inner_mut().extras[i];
                e.value = Some(value.into());
                e.learned = true;
            }
            None => self.inner_mut().extras.push(Extra {
                name: name.into(),
                value: Some(value.into()),
                learned: true,
            }),
        }
    }

    /// On a server connection after a successful sync: the values PostgreSQL may not
    /// have reported (search_path before version 18, the extras) are now the client's.
    pub fn adopt_unreported(&mut self, client: &ParamSet) {
        for i in MAYBE_UNREPORTED {
            let want = &client.values()[i];
            if self.values()[i] != *want {
                self.inner_mut().tracked[i].clone_from(want);
            }
        }
        self.adopt_extras(client);
    }

    /// On a server connection whose client changed settings that were not read back
    /// (it left mid-way): the values PostgreSQL may not report are unknown, so the
    /// next sync sets or resets each of them.
    pub fn forget_unreported(&mut self) {
        for i in MAYBE_UNREPORTED {
            if self.values()[i].as_deref() != Some(UNKNOWN) {
                self.inner_mut().tracked[i] = Some(UNKNOWN.into());
            }
        }
        self.forget_extra_values();
    }

    /// Names of the extra parameters this set holds.
    pub fn extra_names(&self) -> impl Iterator<Item = &str> {
        self.inner().extras.iter().map(|e| &*e.name)
    }

    /// Records an extra parameter's value (`name` lower-case, `value_sql` the value as
    /// the client's SET wrote it).
    pub fn set_extra(&mut self, name: &str, value_sql: &str) {
        let current = self.inner().extras.iter().position(|e| &*e.name == name);
        if let Some(i) = current {
            let e = &self.inner().extras[i];
            if !e.learned && e.value.as_deref() == Some(value_sql) {
                return;
            }
            let e = &mut self.inner_mut().extras[i];
            e.value = Some(value_sql.into());
            e.learned = false;
        } else {
            self.inner_mut().extras.push(Extra {
                name: name.into(),
                value: Some(value_sql.into()),
                learned: false,
            });
        }
    }

    /// Forgets an extra parameter (the client reset it).
    pub fn remove_extra(&mut self, name: &str) {
        if self.inner().extras.iter().any(|e| &*e.name == name) {
            self.inner_mut().extras.retain(|e| &*e.name != name);
        }
    }

    /// Forgets every extra parameter (the client ran RESET ALL or DISCARD ALL).
    pub fn clear_extras(&mut self) {
        if !self.inner().extras.is_empty() {
            self.inner_mut().extras.clear();
        }
    }

    /// On a server connection: something may have reset the extra parameters pgsluice
    /// applied (RESET, DISCARD ALL), so their values are unknown; the next sync sets
    /// or resets each of them again.
    pub fn forget_extra_values(&mut self) {
        if self.inner().extras.iter().any(|e| e.value.is_some()) {
            for e in &mut self.inner_mut().extras {
                e.value = None;
            }
        }
    }

    /// On a server connection after a successful sync: its extra parameters are now
    /// the client's.
    pub fn adopt_extras(&mut self, client: &ParamSet) {
        if self.inner().extras != client.inner().extras {
            self.inner_mut().extras.clone_from(&client.inner().extras);
        }
    }

    /// The value (SQL text) of an extra parameter, if set.
    pub fn extra(&self, name: &str) -> Option<&str> {
        self.inner()
            .extras
            .iter()
            .find(|e| &*e.name == name)
            .and_then(|e| e.value.as_deref())
    }

    /// Every extra parameter as held: name, value (SQL text, or as read back), and
    /// whether it was read back (an upgrade's handover carries them as they are).
    pub fn extras(&self) -> impl Iterator<Item = (&str, Option<&str>, bool)> {
        self.inner()
            .extras
            .iter()
            .map(|e| (&*e.name, e.value.as_deref(), e.learned))
    }

    /// Restores an extra parameter as [`ParamSet::extras`] gave it.
    pub fn restore_extra(&mut self, name: &str, value: Option<&str>, learned: bool) {
        self.remove_extra(name);
        self.inner_mut().extras.push(Extra {
            name: name.into(),
            value: value.map(Into::into),
            learned,
        });
    }

    /// Iterates over known (name, value) pairs.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &str)> {
        TRACKED
            .iter()
            .zip(self.values().iter())
            .filter_map(|(n, v)| v.as_deref().map(|v| (*n, v)))
    }
}

/// Appends `name` as a quoted SQL identifier (a dotted custom name stays one name).
fn push_ident(sql: &mut String, name: &str) {
    sql.push('"');
    sql.push_str(&name.replace('"', "\"\""));
    sql.push('"');
}

/// Appends `SELECT pg_catalog.set_config('name', 'value', false);`: the value is
/// parsed as a configuration file would (a list stays a list).
fn push_set_config(sql: &mut String, name: &str, value: &str) {
    sql.push_str("SELECT pg_catalog.set_config(");
    push_literal(sql, name);
    sql.push_str(", ");
    push_literal(sql, value);
    sql.push_str(", false);");
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
    fn equal_sets_come_to_share_one_copy() {
        let ptr = |p: &ParamSet| p.0.as_ref().map(Arc::as_ptr);
        let mut a = ParamSet::default();
        a.set("TimeZone", "UTC");
        a.set("search_path", "s1");
        let mut b = ParamSet::default();
        b.set("timezone", "UTC");
        b.set("search_path", "s1");
        assert_ne!(ptr(&a), ptr(&b));
        // The lower address is kept, whichever side holds it.
        let low = ptr(&a).min(ptr(&b));
        b.share_if_equal(&mut a);
        assert_eq!((ptr(&a), ptr(&b)), (low, low));
        assert_eq!(a.sync_sql(&b), None);
        // Different values stay apart.
        let mut c = b.clone();
        c.set("search_path", "s2");
        let (pa, pc) = (ptr(&a), ptr(&c));
        a.share_if_equal(&mut c);
        assert_eq!((ptr(&a), ptr(&c)), (pa, pc));
        // A write after sharing copies first: the other holder keeps its values.
        b.set("search_path", "s3");
        assert_eq!(a.get("search_path"), Some("s1"));
        assert_eq!(b.get("search_path"), Some("s3"));
    }

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
        assert!(!client.set("work_mem", "x"));
    }

    #[test]
    fn search_path_is_set_as_a_list_and_reset_where_the_client_has_none() {
        let mut client = ParamSet::default();
        client.set_learned("search_path", Some("\"My Schema\", public"));
        let mut server = ParamSet::default();
        assert_eq!(
            client.sync_sql(&server).unwrap(),
            "SELECT pg_catalog.set_config('search_path', '\"My Schema\", public', false);"
        );
        server.adopt_unreported(&client);
        assert_eq!(client.sync_sql(&server), None);
        // A client without a search_path of its own gets the server's default back.
        assert_eq!(
            ParamSet::default().sync_sql(&server).unwrap(),
            "RESET search_path;"
        );
        // Learned extras are replayed with set_config too, and dropped when gone.
        client.set_learned("work_mem", Some("64MB"));
        assert_eq!(
            client.sync_sql(&server).unwrap(),
            "SELECT pg_catalog.set_config('work_mem', '64MB', false);"
        );
        assert_eq!(client.extra_names().collect::<Vec<_>>(), ["work_mem"]);
        client.set_learned("work_mem", None);
        assert_eq!(client.extra("work_mem"), None);
        assert!(is_carried("search_path", &[]) && is_carried("timezone", &[]));
        assert!(!is_carried("work_mem", &[]) && is_carried("work_mem", &["work_mem".into()]));
    }

    #[test]
    fn extras_are_set_where_they_differ_and_reset_where_the_client_has_none() {
        let mut client = ParamSet::default();
        client.set_extra("extra_float_digits", "3");
        let mut server = ParamSet::default();
        assert_eq!(
            client.sync_sql(&server).unwrap(),
            "SET \"extra_float_digits\" TO 3;"
        );
        server.adopt_extras(&client);
        assert_eq!(client.sync_sql(&server), None);
        assert_eq!(server.extra("extra_float_digits"), Some("3"));
        // Another client without it gets the server's default back.
        let plain = ParamSet::default();
        assert_eq!(
            plain.sync_sql(&server).unwrap(),
            "RESET \"extra_float_digits\";"
        );
        // A RESET ALL or DISCARD ALL on the server: set again at the next sync.
        server.forget_extra_values();
        assert_eq!(
            client.sync_sql(&server).unwrap(),
            "SET \"extra_float_digits\" TO 3;"
        );
        assert_eq!(
            plain.sync_sql(&server).unwrap(),
            "RESET \"extra_float_digits\";"
        );
        // Tracked parameters first, then the extras.
        client.set("TimeZone", "UTC");
        client.set_extra("my.x", "'a\"b'");
        assert_eq!(
            client.sync_sql(&plain).unwrap(),
            "SET TimeZone TO 'UTC';SET \"extra_float_digits\" TO 3;SET \"my.x\" TO 'a\"b';"
        );
        client.remove_extra("extra_float_digits");
        client.clear_extras();
        assert_eq!(client.extra("my.x"), None);
        assert_ne!(client, server);
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
