//! What a client task may use of the process: the router, cancel keys, the generation
//! in force, the shutdown signal, the statement registry, auth_query and the parking
//! lot. Built once by the process (`app`) and shared by every client; a client sees
//! nothing else of it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::cancel::CancelRegistry;
use crate::generation::{Live, RelayValues};
use crate::pool::listing::InfoList;
use crate::pool::ClientInfo;
use crate::router::Router;
use crate::shutdown::{ShutdownWatch, TaskTracker};
use crate::sync::LockExt;

use super::auth_query::AuthQuery;
use super::handover_image::HandoverSink;
use super::prepared::{StatementRegistry, DEFAULT_MAX_PREPARED};
use super::relay::RelayTimeouts;
use super::ParkingLot;

/// The client layer's view of the process.
#[derive(Debug)]
pub struct ClientContext {
    /// Where clients' work goes.
    pub router: Arc<Router>,
    /// The configuration generation in force.
    pub live: Live,
    /// Cancel keys issued to clients.
    pub cancel: Arc<CancelRegistry>,
    /// Shutdown: one atomic load to check, a watch to wait on.
    pub shutdown: ShutdownWatch,
    /// Named prepared statements of every client (transaction mode).
    pub statements: StatementRegistry,
    /// auth_query's secret cache and lookup connections.
    pub auth_query: AuthQuery,
    /// Idle clients without a task (`None` when the system gave no epoll set).
    pub parking: Option<ParkingLot>,
    /// Clients of the admin console (their entries, for SHOW CLIENTS and KILL_CLIENT).
    pub admin_clients: Arc<InfoList<ClientInfo>>,
    /// Short tasks a client starts that outlive its request (a cancel sent to a
    /// server); shutdown waits for them.
    pub background: TaskTracker,
    /// The upgrade's client handover (`client::handover`): where idle clients go once
    /// it has begun.
    pub handover: HandoverGate,
}

/// Whether clients are being handed over to a new process, and where they go.
#[derive(Debug, Default)]
pub struct HandoverGate {
    /// Set once, when the handover begins: read where a client is about to park
    /// (one atomic load, as for the shutdown).
    begun: AtomicBool,
    sink: Mutex<Option<HandoverSink>>,
}

impl HandoverGate {
    /// True once the handover has begun (one atomic load).
    pub fn begun(&self) -> bool {
        self.begun.load(Ordering::SeqCst)
    }

    /// Begins the handover: from now on idle clients go to `sink`.
    pub(super) fn begin(&self, sink: HandoverSink) {
        *self.sink.locked() = Some(sink);
        self.begun.store(true, Ordering::SeqCst);
    }

    /// Where a departing client goes; `None` before the handover, or once the
    /// receiving side is gone (clients then stay).
    pub(super) fn sink(&self) -> Option<HandoverSink> {
        self.sink
            .locked()
            .as_ref()
            .filter(|s| !s.is_closed())
            .cloned()
    }
}

impl ClientContext {
    /// True once a shutdown was requested (one atomic load, for hot paths).
    pub fn shutdown_requested(&self) -> bool {
        self.shutdown.is_requested()
    }
}

/// What a relay run reads of the generation in force.
#[derive(Debug, Clone, Copy)]
pub(super) struct RelaySettings {
    pub(super) max_message: u32,
    pub(super) max_prepared: usize,
    pub(super) timeouts: RelayTimeouts,
}

impl RelaySettings {
    /// The relay's settings from the generation's values.
    pub(super) fn of(hot: &RelayValues) -> RelaySettings {
        RelaySettings {
            max_message: hot.max_message,
            max_prepared: match hot.max_prepared_statements {
                0 => DEFAULT_MAX_PREPARED,
                n => n,
            },
            timeouts: RelayTimeouts {
                query: hot.query_timeout,
                idle_in_transaction: hot.idle_transaction_timeout,
                client_idle: hot.client_idle_timeout,
                transaction: hot.transaction_timeout,
            },
        }
    }
}

#[cfg(test)]
impl ClientContext {
    /// A context over `config` with no pool opened yet, its shutdown controlled by the
    /// returned handle (for unit tests of the client layer).
    pub(crate) fn for_tests(
        config: crate::config::Config,
    ) -> (Arc<ClientContext>, crate::shutdown::Shutdown) {
        use crate::generation::Generation;
        let live = Live::new(Generation::first(config));
        let shutdown = crate::shutdown::Shutdown::new();
        let background = TaskTracker::default();
        let ids = Arc::new(crate::pool::IdGen::default());
        let router = Arc::new(Router::new(
            live.clone(),
            ids.clone(),
            shutdown.watch(),
            background.clone(),
        ));
        let ctx = ClientContext {
            router,
            live,
            cancel: Arc::new(CancelRegistry::default()),
            shutdown: shutdown.watch(),
            statements: StatementRegistry::default(),
            auth_query: AuthQuery::new(ids),
            parking: None,
            admin_clients: Arc::default(),
            background,
            handover: HandoverGate::default(),
        };
        (Arc::new(ctx), shutdown)
    }
}
