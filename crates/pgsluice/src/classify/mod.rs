//! Read/write classification of client requests, for routing reads to standbys.
//!
//! A [`Classifier`] tells whether a request (a simple Query's SQL, or the Parse and
//! Bind messages of an extended-protocol pipeline) only reads, opens a read-only
//! transaction, or must go to the primary. It parses SQL with PostgreSQL's own grammar
//! (`pg_query`, i.e. libpg_query) and walks the parse tree; it never matches text. What
//! it cannot judge goes to the primary: parse errors, unknown statements, messages it
//! does not know, a request cut off mid-message, and trees nested deeper than the
//! parser's protobuf decoder accepts (100 levels of nodes: some 50 nested operators or
//! 20 nested subqueries).
//!
//! Sans-IO: bytes and texts in, a [`Class`] out. It owns a bounded cache from exact
//! SQL text to its judgement, so a text is parsed once while it stays cached; it must
//! not do I/O, hold locks across calls or know about clients, pools or servers.
//!
//! Files: `rules` (what each statement means), `scan` (writes anywhere in a query's
//! tree), `txn` (how statements chain through a transaction), `wire` (frontend
//! messages), `cache` (the bounded sharded cache), `session` (session-state effects)
//! and `words` (eight-bytes-at-a-time scans of a text's first word and markers).
//!
//! ```
//! use pgsluice::classify::{Class, Classifier, ClassifierSettings};
//!
//! let c = Classifier::new(ClassifierSettings { cache_capacity: 100, extra_write_functions: vec![] });
//! assert_eq!(c.classify_sql("select count(*) from t"), Class::Read);
//! assert_eq!(c.classify_sql("select * from t for update"), Class::Write);
//! assert_eq!(c.classify_sql("begin read only; select 1"), Class::ReadOnlyTransaction);
//! ```

mod cache;
mod rules;
mod scan;
pub mod session;
mod txn;
mod wire;
pub mod words;

#[cfg(test)]
mod tests;

use std::sync::Arc;

pub use cache::MAX_CACHED_TEXT_LEN;

/// Where a unit of work may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Only reads: may run on a standby.
    Read,
    /// Opens a read-only transaction: `BEGIN READ ONLY`, `START TRANSACTION READ ONLY`, or
    /// BEGIN followed by `SET TRANSACTION READ ONLY` in the same request. The whole
    /// transaction may run on a standby.
    ReadOnlyTransaction,
    /// Anything else, parse failures and unknown statements included: the primary.
    Write,
}

/// How a [`Classifier`] is set up.
#[derive(Debug, Clone, Default)]
pub struct ClassifierSettings {
    /// Most SQL texts remembered with their class (0: none, every text is parsed).
    pub cache_capacity: usize,
    /// Functions, besides the built-in list (nextval, setval, advisory locks...), whose
    /// call makes a query a write: `name` (any schema) or `schema.name`, any case.
    pub extra_write_functions: Vec<String>,
}

/// Counters of a classifier's cache, for SHOW and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Texts found in the cache.
    pub hits: u64,
    /// Texts parsed because they were not (or could not be) cached.
    pub misses: u64,
    /// Texts cached now.
    pub entries: usize,
    /// Most texts the cache holds.
    pub capacity: usize,
}

/// Classifies SQL and client requests; one per database, shared by its clients
/// (`Send + Sync`, behind an `Arc`).
pub struct Classifier {
    writers: scan::Writers,
    cache: cache::Cache,
}

impl std::fmt::Debug for Classifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Classifier")
            .field("cache", &self.cache_stats())
            .finish_non_exhaustive()
    }
}

impl Classifier {
    /// A classifier with an empty cache.
    pub fn new(settings: ClassifierSettings) -> Classifier {
        Classifier {
            writers: scan::Writers::new(&settings.extra_write_functions),
            cache: cache::Cache::new(settings.cache_capacity),
        }
    }

    /// One SQL string (may hold several statements, as a simple Query does). Cached by
    /// text.
    pub fn classify_sql(&self, sql: &str) -> Class {
        self.summary(sql).class()
    }

    /// A client's request as it arrived on the wire: whole or partial frontend messages
    /// (tag byte + i32 length + body), starting at a message boundary.
    ///
    /// A simple Query ('Q') is classified by its SQL; the extended protocol by every
    /// Parse ('P') in the bytes, and a Bind ('B') of a statement not parsed in these
    /// bytes by the text `statement_text(name)` returns (`None`: Write).
    /// Describe/Execute/Sync/Flush/Close change nothing; any other message (FunctionCall,
    /// CopyData...) is Write, and so is a message cut off before its end (the caller may
    /// read more first) and a request without any SQL. Statements chain across messages
    /// as in one text: any Write is Write, a read-only transaction opened (and what
    /// follows only reading) is ReadOnlyTransaction, reads alone are Read. SQL that is
    /// not UTF-8 (another client_encoding) is Write.
    pub fn classify_request(
        &self,
        request: &[u8],
        statement_text: &dyn Fn(&[u8]) -> Option<Arc<str>>,
    ) -> Class {
        wire::classify(
            request,
            |sql| match std::str::from_utf8(sql) {
                Ok(sql) => self.summary(sql),
                Err(_) => txn::Summary::WRITE,
            },
            statement_text,
        )
    }

    /// Cache hits, misses and size.
    pub fn cache_stats(&self) -> CacheStats {
        self.cache.stats()
    }

    fn summary(&self, sql: &str) -> txn::Summary {
        self.cache
            .get_or(sql, |sql| rules::summarize(sql, &self.writers))
    }
}
