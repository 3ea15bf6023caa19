//! Sans-IO PostgreSQL protocol pieces for pgsluice.
pub mod auth;
