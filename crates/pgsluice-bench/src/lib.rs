//! Benchmark support for pgsluice. The orchestrator lives in `main.rs` (binary
//! `pgsluice-bench`); this library holds what both binaries share: the
//! instant-answer fake backend ([`fakepg`]), also available as the
//! `pgsluice-fakepg` binary, and the I/O-model lab behind the `relay-lab` binary
//! ([`relaylab`]).

pub mod fakepg;
pub mod relaylab;
