//! Authentication exchanges (placeholder until the auth module lands).
