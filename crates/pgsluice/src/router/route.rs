//! A client's route: which pool or pools serve its work. A client gets one at login,
//! for its (database, user), and asks it for a [`Target`] before each checkout.
//!
//! Today every route has one pool. Replicas (several pools of one database, chosen per
//! transaction) and shards (one pool per shard, or all of them) are new [`Backends`]
//! variants and new [`Target`] variants; the client's checkout loop and the pool stay
//! as they are.

use std::sync::Arc;

use crate::config::PoolMode;
use crate::pool::{Pool, PoolKey};

/// Which pool(s) serve a client, fixed at login.
#[derive(Debug, Clone)]
pub struct Route {
    backends: Backends,
}

/// The pools behind a route.
#[derive(Debug, Clone)]
enum Backends {
    /// One server (or one host list PgBouncer-style): every request goes to its pool.
    Single(Arc<Pool>),
}

/// What the client knows of the work it is about to start, for the routing decision.
#[derive(Debug, Clone, Copy)]
pub struct Work<'a> {
    /// The bytes of the request read so far (at least its first message's start).
    pub request: &'a [u8],
}

/// Where one unit of work (a transaction in transaction mode, a request in statement
/// mode, the whole session in session mode) goes.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum Target<'a> {
    /// One pool.
    One(&'a Arc<Pool>),
}

impl Route {
    /// A route to one pool.
    pub(super) fn single(pool: Arc<Pool>) -> Route {
        Route {
            backends: Backends::Single(pool),
        }
    }

    /// The pool the client belongs to: where it is listed (SHOW CLIENTS), whose
    /// server parameters it got at login, whose pool mode applies to it.
    pub fn home(&self) -> &Arc<Pool> {
        match &self.backends {
            Backends::Single(p) => p,
        }
    }

    /// The home pool's key.
    pub fn key(&self) -> &PoolKey {
        self.home().key()
    }

    /// The pool mode the client's work runs in.
    pub fn mode(&self) -> PoolMode {
        self.home().mode()
    }

    /// Where `work` goes.
    pub fn target(&self, work: Work<'_>) -> Target<'_> {
        let _ = work.request;
        match &self.backends {
            Backends::Single(p) => Target::One(p),
        }
    }
}
