//! What the admin console (and the metrics endpoint) may read and change of the
//! running process, as an interface: the process (`app`) implements it, the console
//! knows nothing else of it.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::pool::listing::InfoList;
use crate::pool::ClientInfo;
use crate::router::Router;
use crate::shutdown::ShutdownWatch;

/// How the admin console asked the process to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopRequest {
    /// SHUTDOWN: close everything now.
    Immediate,
    /// SHUTDOWN WAIT_FOR_SERVERS: the graceful shutdown (as SIGTERM/SIGINT).
    WaitForServers,
    /// SHUTDOWN WAIT_FOR_CLIENTS: stop accepting, wait until every client has left.
    WaitForClients,
}

/// What a successful reload did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadReport {
    /// Changes applied, for the log.
    pub changes: Vec<String>,
    /// Settings that need a restart and were left as they are.
    pub warnings: Vec<String>,
}

/// A reload in progress (it builds the new generation on a blocking thread).
pub type Reloading<'a> = Pin<Box<dyn Future<Output = Result<ReloadReport, String>> + Send + 'a>>;

/// Counts of the process's clients beyond the pools' own lists.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientCounts {
    /// Client tasks alive (logging in, or with a session that is not parked).
    pub tasks: usize,
    /// Clients parked without a task.
    pub parked: usize,
}

/// The running process, as the admin console and the metrics endpoint see it.
pub trait Console: Send + Sync {
    /// The pools and their switches.
    fn router(&self) -> &Router;
    /// The configuration in force.
    fn config(&self) -> Arc<Config>;
    /// The addresses the server listens on.
    fn listen_addrs(&self) -> Vec<SocketAddr>;
    /// Time since start.
    fn uptime(&self) -> Duration;
    /// Reloads that succeeded and failed so far.
    fn reload_counts(&self) -> (u64, u64);
    /// The admin console's own clients.
    fn admin_clients(&self) -> &InfoList<ClientInfo>;
    /// Client tasks and parked clients.
    fn client_counts(&self) -> ClientCounts;
    /// A shutdown handle, for sessions that end when the process stops.
    fn shutdown_watch(&self) -> ShutdownWatch;
    /// Asks the process to stop (SHUTDOWN).
    fn request_stop(&self, how: StopRequest);
    /// Reads the configuration again and applies it (RELOAD).
    fn reload(&self) -> Reloading<'_>;
    /// Validates `new` and applies it (SET).
    fn apply_config(&self, new: Config) -> Reloading<'_>;
}
