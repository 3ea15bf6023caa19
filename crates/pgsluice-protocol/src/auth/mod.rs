//! Authentication exchanges, sans IO.
//!
//! This module owns the cryptographic side of PostgreSQL authentication:
//!
//! * [`scram`]: SCRAM-SHA-256 and SCRAM-SHA-256-PLUS (RFC 5802 / RFC 7677 as
//!   PostgreSQL speaks them, channel binding `tls-server-end-point`) for both directions: [`scram::ScramServer`]
//!   when pgsluice authenticates a client, [`scram::ScramClient`] when
//!   pgsluice authenticates to a PostgreSQL server, plus the stored verifier
//!   format [`scram::ScramSecret`].
//! * [`md5`]: the legacy `md5` password scheme.
//! * [`cert`]: the channel binding data and the subject common name of an X.509
//!   certificate.
//!
//! Nothing here touches sockets or clocks: callers feed in the SASL payloads
//! carried by the wire messages (`SASLInitialResponse`, `SASLResponse`,
//! `AuthenticationSASLContinue`, `AuthenticationSASLFinal`) and send back
//! what the state machines return. No function panics on untrusted input;
//! every failure is an [`AuthError`].

pub mod cert;
pub mod md5;
pub mod scram;

/// Why an authentication exchange failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    /// A SASL message did not follow the SCRAM grammar.
    #[error("malformed SASL message: {0}")]
    Malformed(&'static str),
    /// The client picked a SASL mechanism we do not implement.
    #[error("unsupported SASL mechanism {0}")]
    UnsupportedMechanism(String),
    /// The peer asked for channel binding that this side cannot do (no TLS, or a
    /// binding type other than `tls-server-end-point`).
    #[error("channel binding is not supported")]
    ChannelBindingUnsupported,
    /// Channel binding failed: the binding data differs from this connection's (a
    /// man in the middle), or the client claimed the server cannot bind when it can.
    #[error("SCRAM channel binding check failed")]
    ChannelBindingMismatch,
    /// The nonce in a message does not match the one negotiated so far.
    #[error("nonce mismatch")]
    NonceMismatch,
    /// The client's proof is wrong: the password does not match.
    #[error("password authentication failed")]
    InvalidProof,
    /// The server's signature is wrong: it does not know the verifier.
    #[error("server signature does not match")]
    InvalidServerSignature,
    /// A step of the exchange was called in the wrong state.
    #[error("SASL exchange used out of order")]
    OutOfOrder,
}
