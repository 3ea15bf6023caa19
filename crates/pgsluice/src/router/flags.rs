//! The per-database switches the admin console and signals set: PAUSE, SUSPEND, KILL,
//! DISABLE. The router applies them when it creates a pool and refuses logins to a
//! disabled database.

use std::collections::BTreeSet;

/// Paused and disabled databases.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DbFlags {
    /// PAUSE without a database (or SIGUSR1): every pool is paused.
    pub paused_all: bool,
    /// SUSPEND: like `paused_all`, reported as suspended.
    pub suspended: bool,
    /// Databases paused by PAUSE db or KILL db.
    pub paused: BTreeSet<String>,
    /// Databases refusing new clients (DISABLE db).
    pub disabled: BTreeSet<String>,
}

impl DbFlags {
    /// Whether new work on `db` must wait.
    pub fn is_paused(&self, db: &str) -> bool {
        self.paused_all || self.suspended || self.paused.contains(db)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paused_by_any_switch() {
        let mut f = DbFlags::default();
        assert!(!f.is_paused("a"));
        f.paused.insert("a".into());
        assert!(f.is_paused("a") && !f.is_paused("b"));
        f.suspended = true;
        assert!(f.is_paused("b"));
    }
}
