//! pgsluice: a PostgreSQL connection pooler.
//!
//! The library holds everything; `main.rs` only parses the command line, sets up
//! logging and the runtime, and waits for signals. Tests start a [`app::Instance`]
//! in-process with a [`config::Config`].
//!
//! Layout (dependencies point down): [`cli`] and [`config`] produce a typed
//! configuration; [`app`] owns the shared state and accept loops; [`client`] runs a
//! task per client with work (login, session loop, relay) and parks idle ones; [`pool`] hands out server connections
//! behind RAII guards (and, in [`notify`], a listener connection per pool for LISTEN); [`server`] opens and logs in to PostgreSQL; [`cancel`],
//! [`shutdown`], [`params`] serve them; the wire format lives in `pgsluice-protocol`.

pub mod admin;
pub mod app;
pub mod cancel;
pub mod classify;
pub mod cli;
pub mod client;
pub mod clock;
pub mod config;
pub mod error;
pub mod generation;
pub mod lane;
pub mod logging;
pub mod metrics;
pub mod net;
pub mod notify;
pub mod params;
pub mod pgtree;
pub mod pool;
pub mod router;
pub mod secrets;
pub mod server;
pub mod shard;
pub mod shutdown;
pub mod stats;
mod sync;
pub mod tls;
pub mod upgrade;

pub use app::Instance;
