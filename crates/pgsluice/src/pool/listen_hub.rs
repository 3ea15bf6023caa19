//! The pool's notification hub ([`crate::notify`]): made at the first LISTEN of one
//! of its clients; its listener connection logs in as the pool's connections do, but
//! is not counted in the pool.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};

use super::Pool;
use crate::error::ServerError;
use crate::notify::{Connector, NotifyHub, QUEUE_BOUND};
use crate::server::{self, ServerConn};
use crate::shutdown::ShutdownWatch;

/// Opens listener connections to a pool's server (as long as the pool exists).
struct PoolConnector(Weak<Pool>);

impl Connector for PoolConnector {
    fn connect(
        &self,
    ) -> Pin<Box<dyn Future<Output = Result<ServerConn, ServerError>> + Send + '_>> {
        Box::pin(async move {
            let Some(pool) = self.0.upgrade() else {
                return Err(ServerError::Closed);
            };
            let target = pool.connect_target();
            let id = pool.ids.next();
            let timeout = pool.settings().connect_timeout;
            drop(pool);
            server::connect(target, id, timeout).await
        })
    }
}

impl Pool {
    /// The pool's notification hub, made now if it has none; its listener task runs in
    /// the pool's tracker and ends at `shutdown`.
    pub fn notify_hub(self: &Arc<Self>, shutdown: &ShutdownWatch) -> Arc<NotifyHub> {
        self.notify
            .get_or_init(|| {
                Arc::new(NotifyHub::new(
                    self.key.to_string(),
                    Box::new(PoolConnector(Arc::downgrade(self))),
                    self.background.clone(),
                    shutdown.clone(),
                    QUEUE_BOUND,
                ))
            })
            .clone()
    }

    /// The pool's notification hub, if one was made.
    pub fn notify_hub_if_any(&self) -> Option<&Arc<NotifyHub>> {
        self.notify.get()
    }
}
