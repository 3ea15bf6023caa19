//! Sans-IO pieces of the PostgreSQL wire protocol (version 3.0) used by pgsluice.
//!
//! This crate owns framing, the startup handshake, typed encoders and decoders for the
//! messages a pooler must understand, a streaming scanner that finds message boundaries
//! in forwarded bytes without copying them, SQLSTATE codes, and the SCRAM-SHA-256 / md5
//! exchanges for both sides. It knows nothing of sockets, tasks or clocks: bytes go in,
//! values and bytes come out, and every decoder returns an error rather than panicking
//! on malformed input.
#![warn(missing_docs)]

pub mod auth;
pub mod backend;
mod error;
pub mod frame;
pub mod framer;
pub mod frontend;
pub mod scan;
pub mod sqlstate;
pub mod startup;

pub use error::ProtocolError;
pub use frame::{Header, Message, HEADER_LEN};
pub use scan::{ScanEvent, Scanner};
pub use sqlstate::SqlState;
