//! SCRAM-SHA-256 as PostgreSQL speaks it (RFC 5802, RFC 7677), and
//! SCRAM-SHA-256-PLUS with the `tls-server-end-point` channel binding (RFC 5929).
//!
//! This module owns:
//!
//! * [`ScramSecret`], the verifier PostgreSQL keeps in
//!   `pg_authid.rolpassword` (`SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>`):
//!   parsing, encoding and derivation from a password (with SASLprep);
//! * [`ScramServer`], the server half used when pgsluice authenticates a
//!   client;
//! * [`ScramClient`], the client half used when pgsluice authenticates to
//!   PostgreSQL, either with a password or with a `ClientKey` recovered from
//!   a client's proof (SCRAM pass-through).
//!
//! Both halves are sans-IO state machines over the SASL payload bytes; they
//! never panic on malformed input and refuse to be driven out of order.
//!
//! Channel binding: over TLS, the server half is given the binding data of its
//! own certificate ([`ScramServer::with_channel_binding`]) and then offers
//! SCRAM-SHA-256-PLUS; the client half is told what the server offered and the
//! binding data of the server's certificate ([`ScramClient::with_channel_binding`]).
//! The binding data comes from [`super::cert::tls_server_end_point`].

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::AuthError;

/// The SASL mechanism name for SCRAM-SHA-256.
pub const SCRAM_SHA_256: &str = "SCRAM-SHA-256";

/// The SASL mechanism name for SCRAM-SHA-256 with channel binding.
pub const SCRAM_SHA_256_PLUS: &str = "SCRAM-SHA-256-PLUS";

/// The channel binding type supported (RFC 5929), as named in the GS2 header.
pub const TLS_SERVER_END_POINT: &str = "tls-server-end-point";

/// Iteration count PostgreSQL uses by default when hashing a password.
pub const DEFAULT_ITERATIONS: u32 = 4096;

/// Highest iteration count [`ScramClient`] accepts from a server before
/// running PBKDF2, so a hostile server cannot make it spin indefinitely.
pub const MAX_ITERATIONS: u32 = 1_000_000;

/// Length of the salt [`ScramSecret::generate`] picks.
const SALT_LEN: usize = 16;

/// Raw length of the random nonces we generate (before base64), as PostgreSQL.
const RAW_NONCE_LEN: usize = 18;

/// Length of SCRAM-SHA-256 keys, proofs and signatures.
const KEY_LEN: usize = 32;

/// Prefix of an encoded [`ScramSecret`].
const SECRET_PREFIX: &str = "SCRAM-SHA-256$";

type HmacSha256 = Hmac<Sha256>;

/// HMAC-SHA-256 of `msg` under `key`.
fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; KEY_LEN] {
    // HMAC accepts keys of any length, so construction cannot fail.
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(msg);
    mac.finalize().into_bytes().into()
}

/// SHA-256 of `data`.
fn sha256(data: &[u8]) -> [u8; KEY_LEN] {
    Sha256::digest(data).into()
}

/// Element-wise XOR of two keys.
fn xor(a: &[u8; KEY_LEN], b: &[u8; KEY_LEN]) -> [u8; KEY_LEN] {
    let mut out = [0u8; KEY_LEN];
    for ((o, x), y) in out.iter_mut().zip(a).zip(b) {
        *o = x ^ y;
    }
    out
}

/// SASLprep as PostgreSQL applies it: use the prepared form if the
/// preparation succeeds, the raw bytes otherwise.
fn prepare_password(password: &str) -> Vec<u8> {
    match stringprep::saslprep(password) {
        Ok(prepared) => prepared.into_owned().into_bytes(),
        Err(_) => password.as_bytes().to_vec(),
    }
}

/// `SaltedPassword := Hi(Normalize(password), salt, i)`.
fn salted_password(prepared: &[u8], salt: &[u8], iterations: u32) -> [u8; KEY_LEN] {
    pbkdf2::pbkdf2_hmac_array::<Sha256, KEY_LEN>(prepared, salt, iterations)
}

/// `ClientKey := HMAC(SaltedPassword, "Client Key")`.
fn client_key_of(salted: &[u8; KEY_LEN]) -> [u8; KEY_LEN] {
    hmac_sha256(salted, b"Client Key")
}

/// `ServerKey := HMAC(SaltedPassword, "Server Key")`.
fn server_key_of(salted: &[u8; KEY_LEN]) -> [u8; KEY_LEN] {
    hmac_sha256(salted, b"Server Key")
}

/// A fresh random nonce: base64 of 18 random bytes (printable, no commas).
fn random_nonce() -> String {
    STANDARD.encode(rand::random::<[u8; RAW_NONCE_LEN]>())
}

/// True for a non-empty nonce of printable ASCII other than `,` (RFC 5802).
fn is_printable_nonce(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

/// True if `part` has the shape `<letter>=...` of a SCRAM attribute.
fn is_attribute(part: &str) -> bool {
    let mut bytes = part.bytes();
    matches!(
        (bytes.next(), bytes.next()),
        (Some(name), Some(b'=')) if name.is_ascii_alphabetic()
    )
}

/// The value of attribute `name` in `part`, if `part` is `name=value`.
fn attribute<'a>(
    part: Option<&'a str>,
    name: char,
    missing: &'static str,
) -> Result<&'a str, AuthError> {
    part.and_then(|p| p.strip_prefix(name))
        .and_then(|p| p.strip_prefix('='))
        .ok_or(AuthError::Malformed(missing))
}

/// Checks that every remaining part is a well-formed (ignored) extension.
fn ignore_extensions<'a>(parts: impl Iterator<Item = &'a str>) -> Result<(), AuthError> {
    for part in parts {
        if !is_attribute(part) {
            return Err(AuthError::Malformed("invalid attribute"));
        }
    }
    Ok(())
}

/// Decodes standard padded base64, mapping failure to `Malformed(what)`.
fn decode_b64(value: &str, what: &'static str) -> Result<Vec<u8>, AuthError> {
    STANDARD
        .decode(value)
        .map_err(|_| AuthError::Malformed(what))
}

/// Decodes a base64 value that must hold exactly one 32-byte key.
fn decode_key(value: &str, what: &'static str) -> Result<[u8; KEY_LEN], AuthError> {
    decode_b64(value, what)?
        .try_into()
        .map_err(|_| AuthError::Malformed(what))
}

/// Interprets a SASL payload as UTF-8 text.
fn utf8(data: &[u8]) -> Result<&str, AuthError> {
    std::str::from_utf8(data).map_err(|_| AuthError::Malformed("message is not valid UTF-8"))
}

/// Parses a positive decimal iteration count (digits only).
fn parse_iterations(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<u32>().ok().filter(|&i| i > 0)
}

/// A stored SCRAM-SHA-256 verifier as PostgreSQL keeps it in pg_authid.rolpassword.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramSecret {
    /// PBKDF2 iteration count.
    pub iterations: u32,
    /// PBKDF2 salt (raw bytes, not base64).
    pub salt: Vec<u8>,
    /// `StoredKey := H(ClientKey)`.
    pub stored_key: [u8; 32],
    /// `ServerKey := HMAC(SaltedPassword, "Server Key")`.
    pub server_key: [u8; 32],
}

impl fmt::Debug for ScramSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramSecret")
            .field("iterations", &self.iterations)
            .field("salt", &STANDARD.encode(&self.salt))
            .field("stored_key", &"<redacted>")
            .field("server_key", &"<redacted>")
            .finish()
    }
}

impl ScramSecret {
    /// Parses `SCRAM-SHA-256$<iterations>:<base64 salt>$<base64 StoredKey>:<base64 ServerKey>`; None if malformed.
    pub fn parse(s: &str) -> Option<ScramSecret> {
        let rest = s.strip_prefix(SECRET_PREFIX)?;
        let (iterations_salt, keys) = rest.split_once('$')?;
        let (iterations, salt) = iterations_salt.split_once(':')?;
        let (stored_key, server_key) = keys.split_once(':')?;
        Some(ScramSecret {
            iterations: parse_iterations(iterations)?,
            salt: STANDARD.decode(salt).ok()?,
            stored_key: decode_key(stored_key, "stored key").ok()?,
            server_key: decode_key(server_key, "server key").ok()?,
        })
    }

    /// Derives a verifier from a plaintext password (SASLprep applied as PostgreSQL does: if the prep fails, use the raw bytes).
    ///
    /// An iteration count of 0 is treated as 1.
    pub fn from_password(password: &str, salt: &[u8], iterations: u32) -> ScramSecret {
        let iterations = iterations.max(1);
        let salted = salted_password(&prepare_password(password), salt, iterations);
        ScramSecret {
            iterations,
            salt: salt.to_vec(),
            stored_key: sha256(&client_key_of(&salted)),
            server_key: server_key_of(&salted),
        }
    }

    /// The ClientKey of `password` under this verifier's salt and iteration count, when
    /// the password matches the verifier (constant-time comparison). A cleartext
    /// password check that also yields what a SCRAM login to a server holding the same
    /// verifier needs.
    ///
    /// ```
    /// use pgsluice_protocol::auth::scram::ScramSecret;
    /// let s = ScramSecret::from_password("pw", b"salt", 4);
    /// assert!(s.client_key_for("pw").is_some());
    /// assert!(s.client_key_for("other").is_none());
    /// ```
    pub fn client_key_for(&self, password: &str) -> Option<[u8; KEY_LEN]> {
        let salted = salted_password(
            &prepare_password(password),
            &self.salt,
            self.iterations.max(1),
        );
        let client_key = client_key_of(&salted);
        bool::from(sha256(&client_key).ct_eq(&self.stored_key)).then_some(client_key)
    }

    /// Random 16-byte salt, DEFAULT_ITERATIONS.
    pub fn generate(password: &str) -> ScramSecret {
        let salt: [u8; SALT_LEN] = rand::random();
        ScramSecret::from_password(password, &salt, DEFAULT_ITERATIONS)
    }

    /// Inverse of parse.
    pub fn encode(&self) -> String {
        format!(
            "{SECRET_PREFIX}{}:{}${}:{}",
            self.iterations,
            STANDARD.encode(&self.salt),
            STANDARD.encode(self.stored_key),
            STANDARD.encode(self.server_key)
        )
    }
}

mod client;
mod server;

pub use client::{ChannelBinding, DerivedKeys, ScramClient};
pub use server::ScramServer;

#[cfg(test)]
mod binding_tests;

#[cfg(test)]
mod tests;
