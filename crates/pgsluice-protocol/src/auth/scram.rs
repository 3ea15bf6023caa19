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
    /// Parses "SCRAM-SHA-256$<iterations>:<base64 salt>$<base64 StoredKey>:<base64 ServerKey>"; None if malformed.
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

/// Where a [`ScramServer`] is in the exchange.
enum ServerState {
    /// Waiting for the client-first-message.
    Initial,
    /// Server-first-message sent; waiting for the client-final-message.
    FirstSent {
        /// The GS2 header the client used, e.g. `n,,`.
        gs2_header: String,
        client_first_bare: String,
        server_first: String,
        /// Client nonce followed by server nonce.
        nonce: String,
    },
    /// The client proved it knows the password.
    Success {
        client_key: [u8; KEY_LEN],
        /// Whether channel binding was used.
        bound: bool,
    },
    /// The exchange failed; every further step is out of order.
    Failed,
}

/// Server side of SCRAM-SHA-256 (pgsluice authenticating a client). Enum-based state machine inside.
pub struct ScramServer {
    secret: ScramSecret,
    server_nonce: String,
    /// `tls-server-end-point` data of the connection, when it is TLS.
    binding: Option<Vec<u8>>,
    state: ServerState,
}

impl fmt::Debug for ScramServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            ServerState::Initial => "Initial",
            ServerState::FirstSent { .. } => "FirstSent",
            ServerState::Success { .. } => "Success",
            ServerState::Failed => "Failed",
        };
        f.debug_struct("ScramServer")
            .field("secret", &self.secret)
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

impl ScramServer {
    /// A server for one exchange against `secret`, with a random server nonce
    /// (18 random bytes, base64).
    pub fn new(secret: ScramSecret) -> ScramServer {
        ScramServer::with_nonce(secret, random_nonce())
    }

    /// Like [`ScramServer::new`] with a fixed server nonce, for tests. The
    /// nonce must be printable ASCII without commas.
    pub fn with_nonce(secret: ScramSecret, server_nonce: String) -> ScramServer {
        ScramServer {
            secret,
            server_nonce,
            binding: None,
            state: ServerState::Initial,
        }
    }

    /// Enables SCRAM-SHA-256-PLUS on a TLS connection: `tls_server_end_point` is the
    /// channel binding data of the certificate this side presented (see
    /// [`super::cert::tls_server_end_point`]).
    pub fn with_channel_binding(mut self, tls_server_end_point: Vec<u8>) -> ScramServer {
        self.binding = Some(tls_server_end_point);
        self
    }

    /// Mechanism names to advertise in AuthenticationSASL without channel binding.
    pub fn mechanisms() -> &'static [&'static str] {
        &[SCRAM_SHA_256]
    }

    /// Mechanism names to advertise in AuthenticationSASL for this exchange:
    /// SCRAM-SHA-256-PLUS first when channel binding is available.
    pub fn offered_mechanisms(&self) -> &'static [&'static str] {
        if self.binding.is_some() {
            &[SCRAM_SHA_256_PLUS, SCRAM_SHA_256]
        } else {
            &[SCRAM_SHA_256]
        }
    }

    /// Whether the client used channel binding (SCRAM-SHA-256-PLUS); meaningful once
    /// the client-first-message was accepted.
    pub fn uses_channel_binding(&self) -> bool {
        matches!(&self.state, ServerState::FirstSent { gs2_header, .. } if gs2_header.starts_with("p="))
            || matches!(self.state, ServerState::Success { bound: true, .. })
    }

    /// SASLInitialResponse: mechanism name + client-first-message bytes. Returns server-first-message.
    ///
    /// Without channel binding data, accepts SCRAM-SHA-256 with the GS2 headers
    /// `n,,` and `y,,`; `p=...` is [`AuthError::ChannelBindingUnsupported`].
    /// With it, also accepts SCRAM-SHA-256-PLUS with `p=tls-server-end-point,,`,
    /// and refuses `y,,` (the client believes the server cannot bind: a downgrade)
    /// with [`AuthError::ChannelBindingMismatch`]. The username in `n=` is
    /// ignored, as PostgreSQL does (the startup user is authoritative).
    pub fn handle_client_first(
        &mut self,
        mechanism: &str,
        data: &[u8],
    ) -> Result<Vec<u8>, AuthError> {
        if !matches!(self.state, ServerState::Initial) {
            return Err(AuthError::OutOfOrder);
        }
        self.state = ServerState::Failed;
        let plus = match mechanism {
            SCRAM_SHA_256 => false,
            SCRAM_SHA_256_PLUS if self.binding.is_some() => true,
            _ => return Err(AuthError::UnsupportedMechanism(mechanism.to_string())),
        };
        let message = utf8(data)?;

        // gs2-header = gs2-cbind-flag "," [ authzid ] ","
        let (cbind_flag, rest) = message
            .split_once(',')
            .ok_or(AuthError::Malformed("missing GS2 header"))?;
        match (cbind_flag, plus) {
            ("n", false) => {}
            ("y", false) if self.binding.is_none() => {}
            ("y", false) => return Err(AuthError::ChannelBindingMismatch),
            (flag, true) if flag.strip_prefix("p=") == Some(TLS_SERVER_END_POINT) => {}
            (flag, true) if flag.starts_with("p=") => {
                return Err(AuthError::ChannelBindingUnsupported)
            }
            ("n" | "y", true) => {
                return Err(AuthError::Malformed(
                    "SCRAM-SHA-256-PLUS without channel binding",
                ))
            }
            (flag, false) if flag.starts_with("p=") => {
                if self.binding.is_some() {
                    return Err(AuthError::Malformed(
                        "channel binding requested with SCRAM-SHA-256",
                    ));
                }
                return Err(AuthError::ChannelBindingUnsupported);
            }
            _ => return Err(AuthError::Malformed("invalid channel binding flag")),
        }
        let (authzid, client_first_bare) = rest
            .split_once(',')
            .ok_or(AuthError::Malformed("missing GS2 header"))?;
        if authzid.starts_with("a=") {
            return Err(AuthError::Malformed(
                "authorization identity is not supported",
            ));
        }
        if !authzid.is_empty() {
            return Err(AuthError::Malformed("invalid GS2 header"));
        }

        // client-first-message-bare = [reserved-mext ","] username "," nonce ["," extensions]
        let mut parts = client_first_bare.split(',');
        let first = parts.next();
        if first.is_some_and(|p| p.starts_with("m=")) {
            return Err(AuthError::Malformed("unsupported mandatory extension"));
        }
        let _username = attribute(first, 'n', "missing username")?;
        let client_nonce = attribute(parts.next(), 'r', "missing nonce")?;
        if !is_printable_nonce(client_nonce) {
            return Err(AuthError::Malformed("invalid nonce"));
        }
        ignore_extensions(parts)?;

        let nonce = format!("{client_nonce}{}", self.server_nonce);
        let server_first = format!(
            "r={nonce},s={},i={}",
            STANDARD.encode(&self.secret.salt),
            self.secret.iterations
        );
        let reply = server_first.clone().into_bytes();
        self.state = ServerState::FirstSent {
            gs2_header: format!("{cbind_flag},,"),
            client_first_bare: client_first_bare.to_string(),
            server_first,
            nonce,
        };
        Ok(reply)
    }

    /// SASLResponse with client-final-message. Verifies channel binding attr c= (must be base64 of the gs2 header used), nonce, and proof in constant time (subtle). Returns server-final-message ("v=...") for AuthenticationSASLFinal.
    pub fn handle_client_final(&mut self, data: &[u8]) -> Result<Vec<u8>, AuthError> {
        let ServerState::FirstSent {
            gs2_header,
            client_first_bare,
            server_first,
            nonce,
        } = std::mem::replace(&mut self.state, ServerState::Failed)
        else {
            return Err(AuthError::OutOfOrder);
        };
        let message = utf8(data)?;

        // client-final-message = channel-binding "," nonce ["," extensions] "," proof
        let (without_proof, proof) = message
            .rsplit_once(',')
            .ok_or(AuthError::Malformed("missing proof"))?;
        let proof = attribute(Some(proof), 'p', "missing proof")?;
        let mut parts = without_proof.split(',');
        let cbind = attribute(parts.next(), 'c', "missing channel binding")?;
        let client_nonce = attribute(parts.next(), 'r', "missing nonce")?;
        ignore_extensions(parts)?;

        let cbind = decode_b64(cbind, "invalid channel binding data")?;
        let bound = gs2_header.starts_with("p=");
        let mut expected = gs2_header.into_bytes();
        if bound {
            expected.extend_from_slice(self.binding.as_deref().unwrap_or_default());
        }
        if !bool::from(cbind.as_slice().ct_eq(&expected)) {
            if bound {
                return Err(AuthError::ChannelBindingMismatch);
            }
            if cbind.starts_with(b"p=") {
                return Err(AuthError::ChannelBindingUnsupported);
            }
            return Err(AuthError::Malformed(
                "channel binding data does not match GS2 header",
            ));
        }
        if client_nonce != nonce {
            return Err(AuthError::NonceMismatch);
        }
        let proof = decode_key(proof, "invalid proof")?;

        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let client_signature = hmac_sha256(&self.secret.stored_key, auth_message.as_bytes());
        let client_key = xor(&proof, &client_signature);
        if !bool::from(sha256(&client_key).ct_eq(&self.secret.stored_key)) {
            return Err(AuthError::InvalidProof);
        }
        let server_signature = hmac_sha256(&self.secret.server_key, auth_message.as_bytes());
        self.state = ServerState::Success { client_key, bound };
        Ok(format!("v={}", STANDARD.encode(server_signature)).into_bytes())
    }

    /// After a successful exchange: the ClientKey recovered from the proof (ClientProof XOR ClientSignature). Useful later for SCRAM pass-through.
    pub fn client_key(&self) -> Option<[u8; 32]> {
        match self.state {
            ServerState::Success { client_key, .. } => Some(client_key),
            _ => None,
        }
    }
}

/// What a [`ScramClient`] proves its identity with.
#[derive(Clone)]
enum ClientCredentials {
    /// The SASLprepped password.
    Password(Vec<u8>),
    /// A recovered ClientKey plus the verifier it belongs to.
    ClientKey {
        client_key: [u8; KEY_LEN],
        secret: ScramSecret,
    },
}

/// Where a [`ScramClient`] is in the exchange.
enum ClientState {
    /// Client-first-message available; waiting for the server-first-message.
    Initial,
    /// Client-final-message sent; waiting for the server-final-message.
    FinalSent {
        expected_server_signature: [u8; KEY_LEN],
    },
    /// The server proved it knows the verifier.
    Done,
    /// The exchange failed; every further step is out of order.
    Failed,
}

/// What the client half does about channel binding, as RFC 5802 section 6 lays out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelBinding {
    /// No binding data on this connection (not TLS): GS2 flag `n`.
    Unsupported,
    /// Binding data available, but the server did not offer SCRAM-SHA-256-PLUS:
    /// GS2 flag `y`, which lets a server that could bind detect a downgrade.
    NotOffered,
    /// SCRAM-SHA-256-PLUS with `tls-server-end-point` data (the hash of the
    /// server's certificate): GS2 header `p=tls-server-end-point`.
    TlsServerEndPoint(Vec<u8>),
}

impl ChannelBinding {
    /// The choice a client makes given the mechanisms the server offered and the
    /// server certificate's binding data (`None` when not on TLS or when the
    /// certificate has none).
    pub fn choose(offered: &[&str], tls_server_end_point: Option<Vec<u8>>) -> ChannelBinding {
        match tls_server_end_point {
            Some(data) if offered.contains(&SCRAM_SHA_256_PLUS) => {
                ChannelBinding::TlsServerEndPoint(data)
            }
            Some(_) => ChannelBinding::NotOffered,
            None => ChannelBinding::Unsupported,
        }
    }

    /// The GS2 header (flag, empty authzid).
    fn gs2_header(&self) -> &'static str {
        match self {
            ChannelBinding::Unsupported => "n,,",
            ChannelBinding::NotOffered => "y,,",
            ChannelBinding::TlsServerEndPoint(_) => "p=tls-server-end-point,,",
        }
    }

    /// The value of `c=` before base64: the GS2 header plus any binding data.
    fn cbind_input(&self) -> Vec<u8> {
        let mut v = self.gs2_header().as_bytes().to_vec();
        if let ChannelBinding::TlsServerEndPoint(data) = self {
            v.extend_from_slice(data);
        }
        v
    }
}

/// Client side of SCRAM-SHA-256 (pgsluice authenticating to PostgreSQL); without
/// [`ScramClient::with_channel_binding`] it sends the GS2 header `n,,`.
pub struct ScramClient {
    credentials: ClientCredentials,
    nonce: String,
    binding: ChannelBinding,
    state: ClientState,
    /// Keys derived from the password: given by the caller (a cache) or computed in
    /// [`ScramClient::handle_server_first`].
    derived: Option<DerivedKeys>,
}

/// The keys a password yields for one salt and iteration count: the result of the
/// PBKDF2 rounds, which cost as much CPU as thousands of pooled transactions. A caller
/// that logs in again with the same password keeps them (see
/// [`ScramClient::with_derived_keys`]) and skips the derivation while the server's
/// verifier stays the same. As secret as the password itself.
#[derive(Clone, PartialEq, Eq)]
pub struct DerivedKeys {
    /// The salt the server sent.
    pub salt: Vec<u8>,
    /// The iteration count the server sent.
    pub iterations: u32,
    /// HMAC(SaltedPassword, "Client Key").
    pub client_key: [u8; 32],
    /// HMAC(SaltedPassword, "Server Key").
    pub server_key: [u8; 32],
}

impl fmt::Debug for DerivedKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DerivedKeys")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for ScramClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            ClientState::Initial => "Initial",
            ClientState::FinalSent { .. } => "FinalSent",
            ClientState::Done => "Done",
            ClientState::Failed => "Failed",
        };
        let credentials = match self.credentials {
            ClientCredentials::Password(_) => "password",
            ClientCredentials::ClientKey { .. } => "client key",
        };
        f.debug_struct("ScramClient")
            .field("credentials", &credentials)
            .field("channel_binding", &self.mechanism())
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

impl ScramClient {
    /// A client proving knowledge of `password`, with a random nonce.
    pub fn new(password: &str) -> ScramClient {
        ScramClient::with_nonce(password, random_nonce())
    }

    /// Like [`ScramClient::new`] with a fixed nonce, for tests. The nonce
    /// must be printable ASCII without commas.
    pub fn with_nonce(password: &str, nonce: String) -> ScramClient {
        ScramClient {
            credentials: ClientCredentials::Password(prepare_password(password)),
            nonce,
            binding: ChannelBinding::Unsupported,
            state: ClientState::Initial,
            derived: None,
        }
    }

    /// Reuses keys derived from the same password by an earlier login: when the
    /// server sends the same salt and iteration count, no PBKDF2 runs.
    pub fn with_derived_keys(mut self, keys: Option<DerivedKeys>) -> ScramClient {
        self.derived = keys;
        self
    }

    /// The keys this password yielded for the server's salt (after
    /// [`ScramClient::handle_server_first`]; `None` with a ClientKey), for the
    /// caller to keep once the server has accepted the login.
    pub fn derived_keys(&self) -> Option<&DerivedKeys> {
        match self.credentials {
            ClientCredentials::Password(_) => self.derived.as_ref(),
            ClientCredentials::ClientKey { .. } => None,
        }
    }

    /// Build from a recovered ClientKey plus the verifier instead of the password (pass-through): the proof is computed from ClientKey; server signature verified with server_key from the secret. (salt/iterations from the server-first message must match the secret's; else Err(Malformed("salt mismatch"))).
    pub fn with_client_key(client_key: [u8; 32], secret: ScramSecret) -> ScramClient {
        ScramClient {
            credentials: ClientCredentials::ClientKey { client_key, secret },
            nonce: random_nonce(),
            binding: ChannelBinding::Unsupported,
            state: ClientState::Initial,
            derived: None,
        }
    }

    /// Sets the channel binding choice (see [`ChannelBinding::choose`]); call before
    /// [`ScramClient::client_first`].
    pub fn with_channel_binding(mut self, binding: ChannelBinding) -> ScramClient {
        self.binding = binding;
        self
    }

    /// The SASL mechanism to name in SASLInitialResponse: SCRAM-SHA-256-PLUS when
    /// binding to the channel, SCRAM-SHA-256 otherwise.
    pub fn mechanism(&self) -> &'static str {
        match self.binding {
            ChannelBinding::TlsServerEndPoint(_) => SCRAM_SHA_256_PLUS,
            _ => SCRAM_SHA_256,
        }
    }

    /// The client-first-message-bare (`n=,r=<nonce>`).
    fn client_first_bare(&self) -> String {
        format!("n=,r={}", self.nonce)
    }

    /// The client-first-message (`n,,n=,r=<nonce>` without channel binding).
    pub fn client_first(&self) -> Vec<u8> {
        format!("{}{}", self.binding.gs2_header(), self.client_first_bare()).into_bytes()
    }

    /// Takes server-first-message, returns client-final-message.
    pub fn handle_server_first(&mut self, data: &[u8]) -> Result<Vec<u8>, AuthError> {
        if !matches!(self.state, ClientState::Initial) {
            return Err(AuthError::OutOfOrder);
        }
        self.state = ClientState::Failed;
        let message = utf8(data)?;

        // server-first-message = [reserved-mext ","] nonce "," salt "," iteration-count ["," extensions]
        let mut parts = message.split(',');
        let first = parts.next();
        if first.is_some_and(|p| p.starts_with("m=")) {
            return Err(AuthError::Malformed("unsupported mandatory extension"));
        }
        let nonce = attribute(first, 'r', "missing nonce")?;
        let salt = attribute(parts.next(), 's', "missing salt")?;
        let iterations = attribute(parts.next(), 'i', "missing iteration count")?;
        ignore_extensions(parts)?;

        if !is_printable_nonce(nonce) {
            return Err(AuthError::Malformed("invalid nonce"));
        }
        match nonce.strip_prefix(self.nonce.as_str()) {
            Some(server_part) if !server_part.is_empty() => {}
            _ => return Err(AuthError::NonceMismatch),
        }
        let salt = decode_b64(salt, "invalid salt")?;
        let iterations =
            parse_iterations(iterations).ok_or(AuthError::Malformed("invalid iteration count"))?;

        let (client_key, server_key) = match &self.credentials {
            ClientCredentials::Password(password) => match &self.derived {
                Some(k) if k.salt == salt && k.iterations == iterations => {
                    (k.client_key, k.server_key)
                }
                _ => {
                    if iterations > MAX_ITERATIONS {
                        return Err(AuthError::Malformed("iteration count too large"));
                    }
                    let salted = salted_password(password, &salt, iterations);
                    let keys = (client_key_of(&salted), server_key_of(&salted));
                    self.derived = Some(DerivedKeys {
                        salt: salt.clone(),
                        iterations,
                        client_key: keys.0,
                        server_key: keys.1,
                    });
                    keys
                }
            },
            ClientCredentials::ClientKey { client_key, secret } => {
                if salt != secret.salt || iterations != secret.iterations {
                    return Err(AuthError::Malformed("salt mismatch"));
                }
                (*client_key, secret.server_key)
            }
        };
        let stored_key = sha256(&client_key);

        let without_proof = format!(
            "c={},r={nonce}",
            STANDARD.encode(self.binding.cbind_input())
        );
        let auth_message = format!("{},{message},{without_proof}", self.client_first_bare());
        let client_signature = hmac_sha256(&stored_key, auth_message.as_bytes());
        let proof = xor(&client_key, &client_signature);
        self.state = ClientState::FinalSent {
            expected_server_signature: hmac_sha256(&server_key, auth_message.as_bytes()),
        };
        Ok(format!("{without_proof},p={}", STANDARD.encode(proof)).into_bytes())
    }

    /// Takes server-final-message ("v=..." or "e=..."), checks the server signature.
    pub fn handle_server_final(&mut self, data: &[u8]) -> Result<(), AuthError> {
        let ClientState::FinalSent {
            expected_server_signature,
        } = std::mem::replace(&mut self.state, ClientState::Failed)
        else {
            return Err(AuthError::OutOfOrder);
        };
        let message = utf8(data)?;

        // server-final-message = (server-error / verifier) ["," extensions]
        let mut parts = message.split(',');
        let first = parts.next();
        if let Some(error) = first.and_then(|p| p.strip_prefix("e=")) {
            return Err(match error {
                "invalid-proof" | "unknown-user" => AuthError::InvalidProof,
                "channel-bindings-dont-match" | "server-does-support-channel-binding" => {
                    AuthError::ChannelBindingMismatch
                }
                "channel-binding-not-supported" | "unsupported-channel-binding-type" => {
                    AuthError::ChannelBindingUnsupported
                }
                _ => AuthError::Malformed("server reported an error"),
            });
        }
        let verifier = attribute(first, 'v', "missing verifier")?;
        ignore_extensions(parts)?;
        let signature = decode_b64(verifier, "invalid verifier")?;
        if !bool::from(signature.as_slice().ct_eq(&expected_server_signature)) {
            return Err(AuthError::InvalidServerSignature);
        }
        self.state = ClientState::Done;
        Ok(())
    }
}

#[cfg(test)]
#[path = "scram_binding_tests.rs"]
mod binding_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Verifier for password "pencil", salt and iterations of RFC 7677,
    /// computed independently with Python's hashlib/hmac.
    const PENCIL_SECRET: &str = "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=";
    const RFC_CLIENT_NONCE: &str = "rOprNGfwEbeRWgbNEkqO";
    const RFC_SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
    const RFC_SERVER_FIRST: &str =
        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";

    fn pencil() -> ScramSecret {
        ScramSecret::parse(PENCIL_SECRET).expect("valid secret")
    }

    /// One exchange against the pencil verifier with fixed nonces: the client-final
    /// message, whether the server accepted it, and the keys the client ends with.
    fn pencil_login(keys: Option<DerivedKeys>) -> (Vec<u8>, bool, Option<DerivedKeys>) {
        let mut c =
            ScramClient::with_nonce("pencil", RFC_CLIENT_NONCE.into()).with_derived_keys(keys);
        let mut srv = ScramServer::with_nonce(pencil(), RFC_SERVER_NONCE.into());
        let first = srv
            .handle_client_first(SCRAM_SHA_256, &c.client_first())
            .unwrap();
        let fin = c.handle_server_first(&first).unwrap();
        let accepted = match srv.handle_client_final(&fin) {
            Ok(last) => c.handle_server_final(&last).is_ok(),
            Err(_) => false,
        };
        (fin, accepted, c.derived_keys().cloned())
    }

    #[test]
    fn derived_keys_are_reused_for_the_same_salt_only() {
        let (fin, ok, keys) = pencil_login(None);
        assert!(ok);
        let keys = keys.expect("keys derived");
        assert_eq!(keys.iterations, 4096);
        // The same keys again: same proof, no derivation needed.
        let (fin2, ok2, keys2) = pencil_login(Some(keys.clone()));
        assert!(ok2);
        assert_eq!(fin, fin2);
        assert_eq!(keys2.as_ref(), Some(&keys));
        // Keys kept for another salt (the password or verifier changed) are not used.
        let stale = DerivedKeys {
            salt: b"another salt".to_vec(),
            client_key: [7; 32],
            ..keys.clone()
        };
        let (fin3, ok3, keys3) = pencil_login(Some(stale));
        assert!(ok3);
        assert_eq!(fin, fin3);
        assert_eq!(keys3, Some(keys.clone()));
        // Wrong keys for the right salt make a proof the server refuses.
        let wrong = DerivedKeys {
            client_key: [7; 32],
            ..keys
        };
        assert!(!pencil_login(Some(wrong)).1);
    }

    /// Runs a full exchange between our client and our server.
    fn exchange(client: &mut ScramClient, server: &mut ScramServer) -> Result<(), AuthError> {
        let server_first = server.handle_client_first(SCRAM_SHA_256, &client.client_first())?;
        let client_final = client.handle_server_first(&server_first)?;
        let server_final = server.handle_client_final(&client_final)?;
        client.handle_server_final(&server_final)
    }

    /// A server that has already answered a valid client-first-message.
    fn server_after_first(gs2: &str) -> ScramServer {
        let mut server = ScramServer::with_nonce(pencil(), "SERVERNONCE".into());
        let first = format!("{gs2}n=,r=CLIENTNONCE");
        server
            .handle_client_first(SCRAM_SHA_256, first.as_bytes())
            .expect("valid client-first");
        server
    }

    #[test]
    fn secret_round_trip_and_known_derivation() {
        let secret = pencil();
        assert_eq!(secret.iterations, 4096);
        assert_eq!(secret.encode(), PENCIL_SECRET);
        let salt = STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        assert_eq!(ScramSecret::from_password("pencil", &salt, 4096), secret);

        let generated = ScramSecret::generate("hunter2");
        assert_eq!(generated.iterations, DEFAULT_ITERATIONS);
        assert_eq!(generated.salt.len(), SALT_LEN);
        assert_eq!(ScramSecret::parse(&generated.encode()), Some(generated));
    }

    #[test]
    fn secret_parse_rejects_malformed() {
        let good = PENCIL_SECRET;
        let bad = [
            "",
            "md53175bce1d3201d16594cebf9d7eb3f9d",
            &good.replace("SCRAM-SHA-256$", "SCRAM-SHA-1$"),
            &good.replace("4096", "0"),
            &good.replace("4096", "+4096"),
            &good.replace("4096", "99999999999"),
            &good.replace("4096:", "4096"),
            &good.replace("==$", "=$"),
            &good.replace("qY=:", "qY="),
            &good.replace("qY=:", "qY=:AAAA"),
            &good[..good.len() - 4],
            &format!("{good}$"),
            &format!("{good}:"),
            "SCRAM-SHA-256$$:",
        ];
        for s in bad {
            assert_eq!(ScramSecret::parse(s), None, "{s:?}");
        }
    }

    #[test]
    fn secret_debug_hides_keys() {
        let secret = pencil();
        let debug = format!("{secret:?}");
        assert!(debug.contains("4096"));
        assert!(!debug.contains("WG5d8oPm"));
        assert!(!debug.contains("wfPLwcE6"));
        assert!(!debug.contains(&format!("{:?}", secret.stored_key)));
        let server = format!("{:?}", ScramServer::new(secret));
        assert!(!server.contains("WG5d8oPm"));
        let client = format!("{:?}", ScramClient::new("pencil"));
        assert!(!client.contains("pencil"));
    }

    #[test]
    fn server_matches_rfc7677_vector() {
        let mut server = ScramServer::with_nonce(pencil(), RFC_SERVER_NONCE.into());
        let first = server
            .handle_client_first(SCRAM_SHA_256, b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO")
            .unwrap();
        assert_eq!(first, RFC_SERVER_FIRST.as_bytes());
        let fin = server
            .handle_client_final(
                b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                  p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
            )
            .unwrap();
        assert_eq!(fin, b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
        assert!(server.client_key().is_some());
    }

    #[test]
    fn client_matches_known_vector() {
        // Expected messages computed independently with Python's hashlib/hmac
        // (RFC 7677 parameters, empty username as PostgreSQL clients send).
        let mut client = ScramClient::with_nonce("pencil", RFC_CLIENT_NONCE.into());
        assert_eq!(client.client_first(), b"n,,n=,r=rOprNGfwEbeRWgbNEkqO");
        let fin = client
            .handle_server_first(RFC_SERVER_FIRST.as_bytes())
            .unwrap();
        assert_eq!(
            String::from_utf8(fin).unwrap(),
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
             p=qvT2SWdEH5Q06albL+hjSYuUhCG7VndFyzIb7CK4n9k="
        );
        client
            .handle_server_final(b"v=3HO6Qt1M4MKJrmlKaoOqLAI0/0TV0HZe7J9H3MBtSOg=")
            .unwrap();
    }

    #[test]
    fn round_trip_right_and_wrong_password() {
        let secret = ScramSecret::generate("correct horse");
        let mut client = ScramClient::new("correct horse");
        let mut server = ScramServer::new(secret.clone());
        assert_eq!(server.client_key(), None);
        exchange(&mut client, &mut server).unwrap();
        assert!(server.client_key().is_some());

        let mut client = ScramClient::new("battery staple");
        let mut server = ScramServer::new(secret);
        assert_eq!(
            exchange(&mut client, &mut server),
            Err(AuthError::InvalidProof)
        );
        assert_eq!(server.client_key(), None);
        // A failed server cannot be retried.
        assert_eq!(server.handle_client_final(b""), Err(AuthError::OutOfOrder));
    }

    #[test]
    fn saslprep_applied_like_postgres() {
        // U+2168 ROMAN NUMERAL NINE and "I<soft hyphen>X" both prep to "IX".
        let secret = ScramSecret::from_password("IX", b"salt", 16);
        assert_eq!(ScramSecret::from_password("\u{2168}", b"salt", 16), secret);
        assert_eq!(
            ScramSecret::from_password("I\u{00AD}X", b"salt", 16),
            secret
        );
        let mut client = ScramClient::new("\u{2168}");
        exchange(&mut client, &mut ScramServer::new(secret)).unwrap();
        // A prohibited character makes SASLprep fail: raw bytes are used.
        let raw = ScramSecret::from_password("a\u{0007}b", b"salt", 16);
        let salted = salted_password(b"a\x07b", b"salt", 16);
        assert_eq!(raw.server_key, server_key_of(&salted));
    }

    #[test]
    fn interop_postgres_protocol_client_against_our_server() {
        use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
        for password in ["s3cr3t", "p\u{00E4}ss w\u{00F6}rd", "\u{2168}"] {
            let secret = ScramSecret::generate(password);
            // Right password.
            let mut theirs = ScramSha256::new(password.as_bytes(), ChannelBinding::unrequested());
            let mut ours = ScramServer::new(secret.clone());
            let first = ours
                .handle_client_first(SCRAM_SHA_256, theirs.message())
                .unwrap();
            theirs.update(&first).unwrap();
            let fin = ours.handle_client_final(theirs.message()).unwrap();
            theirs.finish(&fin).unwrap();
            assert!(ours.client_key().is_some());

            // Wrong password.
            let mut theirs = ScramSha256::new(b"wrong", ChannelBinding::unsupported());
            let mut ours = ScramServer::new(secret);
            let first = ours
                .handle_client_first(SCRAM_SHA_256, theirs.message())
                .unwrap();
            theirs.update(&first).unwrap();
            assert_eq!(
                ours.handle_client_final(theirs.message()),
                Err(AuthError::InvalidProof)
            );
        }
        // Both GS2 headers they send ("y,," and "n,,") are accepted.
        for (binding, header) in [
            (ChannelBinding::unrequested(), b"y,,"),
            (ChannelBinding::unsupported(), b"n,,"),
        ] {
            let mut theirs = ScramSha256::new(b"pw", binding);
            assert!(theirs.message().starts_with(header));
            let mut ours = ScramServer::new(ScramSecret::generate("pw"));
            let first = ours
                .handle_client_first(SCRAM_SHA_256, theirs.message())
                .unwrap();
            theirs.update(&first).unwrap();
            let fin = ours.handle_client_final(theirs.message()).unwrap();
            theirs.finish(&fin).unwrap();
        }
        // Channel binding proper is refused.
        let theirs = ScramSha256::new(b"pw", ChannelBinding::tls_server_end_point(vec![1; 32]));
        let mut ours = ScramServer::new(ScramSecret::generate("pw"));
        assert_eq!(
            ours.handle_client_first(SCRAM_SHA_256, theirs.message()),
            Err(AuthError::ChannelBindingUnsupported)
        );
    }

    #[test]
    fn our_client_against_postgres_protocol_verifier() {
        // A verifier produced by an independent implementation.
        let encoded = postgres_protocol::password::scram_sha_256(b"tr0ub4dor");
        let secret = ScramSecret::parse(&encoded).expect("postgres-protocol verifier parses");
        assert_eq!(secret.encode(), encoded);

        // Check our client's proof by hand against the verifier: the
        // recovered ClientKey must hash to StoredKey.
        let mut client = ScramClient::with_nonce("tr0ub4dor", "cnonce".into());
        let server_first = format!(
            "r=cnonceSNONCE,s={},i={}",
            STANDARD.encode(&secret.salt),
            secret.iterations
        );
        let client_final = client.handle_server_first(server_first.as_bytes()).unwrap();
        let client_final = String::from_utf8(client_final).unwrap();
        let (without_proof, proof) = client_final.rsplit_once(",p=").unwrap();
        assert_eq!(without_proof, "c=biws,r=cnonceSNONCE");
        let auth_message = format!("n=,r=cnonce,{server_first},{without_proof}");
        let mut mac = HmacSha256::new_from_slice(&secret.stored_key).unwrap();
        mac.update(auth_message.as_bytes());
        let signature = mac.finalize().into_bytes();
        let proof = STANDARD.decode(proof).unwrap();
        let client_key: Vec<u8> = proof.iter().zip(signature).map(|(p, s)| p ^ s).collect();
        assert_eq!(Sha256::digest(&client_key).as_slice(), secret.stored_key);
        let mut mac = HmacSha256::new_from_slice(&secret.server_key).unwrap();
        mac.update(auth_message.as_bytes());
        let v = format!("v={}", STANDARD.encode(mac.finalize().into_bytes()));
        client.handle_server_final(v.as_bytes()).unwrap();

        // And the full exchange with our server on that verifier.
        exchange(
            &mut ScramClient::new("tr0ub4dor"),
            &mut ScramServer::new(secret.clone()),
        )
        .unwrap();
        assert_eq!(
            exchange(
                &mut ScramClient::new("tr0ub4dor!"),
                &mut ScramServer::new(secret)
            ),
            Err(AuthError::InvalidProof)
        );
    }

    #[test]
    fn client_key_pass_through() {
        let secret = ScramSecret::generate("passthrough");
        let mut front = ScramServer::new(secret.clone());
        exchange(&mut ScramClient::new("passthrough"), &mut front).unwrap();
        let client_key = front.client_key().expect("recovered client key");
        assert_eq!(sha256(&client_key), secret.stored_key);

        let mut client = ScramClient::with_client_key(client_key, secret.clone());
        let mut backend = ScramServer::new(secret.clone());
        exchange(&mut client, &mut backend).unwrap();
        assert_eq!(backend.client_key(), Some(client_key));

        // A backend with a different salt is refused before any proof is sent.
        let other = ScramSecret::generate("passthrough");
        let mut client = ScramClient::with_client_key(client_key, secret.clone());
        let mut backend = ScramServer::new(other);
        let first = backend
            .handle_client_first(SCRAM_SHA_256, &client.client_first())
            .unwrap();
        assert_eq!(
            client.handle_server_first(&first),
            Err(AuthError::Malformed("salt mismatch"))
        );

        // A backend that does not know the verifier fails the signature check.
        let mut client = ScramClient::with_client_key(client_key, secret.clone());
        let first = client.client_first();
        let cnonce = std::str::from_utf8(&first).unwrap()["n,,n=,r=".len()..].to_string();
        let server_first = format!(
            "r={cnonce}x,s={},i={}",
            STANDARD.encode(&secret.salt),
            secret.iterations
        );
        client.handle_server_first(server_first.as_bytes()).unwrap();
        assert_eq!(
            client.handle_server_final(b"v=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="),
            Err(AuthError::InvalidServerSignature)
        );
    }

    #[test]
    fn server_rejects_bad_client_first() {
        let cases: [(&str, &[u8], AuthError); 9] = [
            (
                "SCRAM-SHA-256-PLUS",
                b"p=tls-server-end-point,,n=,r=abc",
                AuthError::UnsupportedMechanism("SCRAM-SHA-256-PLUS".into()),
            ),
            (
                SCRAM_SHA_256,
                b"p=tls-server-end-point,,n=,r=abc",
                AuthError::ChannelBindingUnsupported,
            ),
            (
                SCRAM_SHA_256,
                b"n,a=admin,n=,r=abc",
                AuthError::Malformed("authorization identity is not supported"),
            ),
            (
                SCRAM_SHA_256,
                b"x,,n=,r=abc",
                AuthError::Malformed("invalid channel binding flag"),
            ),
            (
                SCRAM_SHA_256,
                b"n,,m=ext,n=,r=abc",
                AuthError::Malformed("unsupported mandatory extension"),
            ),
            (
                SCRAM_SHA_256,
                b"n,,n=,r=",
                AuthError::Malformed("invalid nonce"),
            ),
            (
                SCRAM_SHA_256,
                b"n,,n=,r=a\x7fb",
                AuthError::Malformed("invalid nonce"),
            ),
            (
                SCRAM_SHA_256,
                b"n,,r=abc",
                AuthError::Malformed("missing username"),
            ),
            (
                SCRAM_SHA_256,
                b"n,,n=\xff,r=abc",
                AuthError::Malformed("message is not valid UTF-8"),
            ),
        ];
        for (mechanism, data, want) in cases {
            let mut server = ScramServer::new(pencil());
            assert_eq!(server.handle_client_first(mechanism, data), Err(want));
            assert_eq!(
                server.handle_client_first(SCRAM_SHA_256, b"n,,n=,r=abc"),
                Err(AuthError::OutOfOrder)
            );
        }
        // Username is ignored, extensions are allowed.
        let mut server = ScramServer::with_nonce(pencil(), "S".into());
        let first = server
            .handle_client_first(SCRAM_SHA_256, b"y,,n=whoever,r=abc,x=ext")
            .unwrap();
        assert!(first.starts_with(b"r=abcS,s="));
    }

    #[test]
    fn server_rejects_bad_client_final() {
        let good_cbind_wrong_proof =
            "c=biws,r=CLIENTNONCESERVERNONCE,p=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
        let cases: [(&str, &str, AuthError); 7] = [
            ("n,,", good_cbind_wrong_proof, AuthError::InvalidProof),
            (
                "y,,",
                good_cbind_wrong_proof,
                AuthError::Malformed("channel binding data does not match GS2 header"),
            ),
            (
                "n,,",
                "c=cD10bHMtc2VydmVyLWVuZC1wb2ludCws,r=CLIENTNONCESERVERNONCE,p=AAAA",
                AuthError::ChannelBindingUnsupported,
            ),
            (
                "n,,",
                "c=biws,r=CLIENTNONCEOTHER,p=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
                AuthError::NonceMismatch,
            ),
            (
                "n,,",
                "c=biws,r=CLIENTNONCESERVERNONCE,p=AAAA",
                AuthError::Malformed("invalid proof"),
            ),
            (
                "n,,",
                "c=biws,r=CLIENTNONCESERVERNONCE",
                AuthError::Malformed("missing proof"),
            ),
            (
                "n,,",
                "r=CLIENTNONCESERVERNONCE,c=biws,p=AAAA",
                AuthError::Malformed("missing channel binding"),
            ),
        ];
        for (gs2, data, want) in cases {
            let mut server = server_after_first(gs2);
            assert_eq!(server.handle_client_final(data.as_bytes()), Err(want));
            assert_eq!(server.client_key(), None);
            assert_eq!(
                server.handle_client_final(data.as_bytes()),
                Err(AuthError::OutOfOrder)
            );
        }
        let mut fresh = ScramServer::new(pencil());
        assert_eq!(
            fresh.handle_client_final(b"c=biws"),
            Err(AuthError::OutOfOrder)
        );
        assert_eq!(ScramServer::mechanisms(), &[SCRAM_SHA_256]);
    }

    #[test]
    fn client_rejects_bad_server_messages() {
        let first_cases: [(&str, AuthError); 7] = [
            ("r=other,s=c2FsdA==,i=4096", AuthError::NonceMismatch),
            ("r=cn,s=c2FsdA==,i=4096", AuthError::NonceMismatch),
            ("r=cnX,s=!!!,i=4096", AuthError::Malformed("invalid salt")),
            (
                "r=cnX,s=c2FsdA==,i=0",
                AuthError::Malformed("invalid iteration count"),
            ),
            (
                "r=cnX,s=c2FsdA==,i=4294967295",
                AuthError::Malformed("iteration count too large"),
            ),
            (
                "m=x,r=cnX,s=c2FsdA==,i=1",
                AuthError::Malformed("unsupported mandatory extension"),
            ),
            ("r=cnX,i=1,s=c2FsdA==", AuthError::Malformed("missing salt")),
        ];
        for (data, want) in first_cases {
            let mut client = ScramClient::with_nonce("pw", "cn".into());
            assert_eq!(client.handle_server_first(data.as_bytes()), Err(want));
            assert_eq!(
                client.handle_server_first(b"r=cnX,s=c2FsdA==,i=1"),
                Err(AuthError::OutOfOrder)
            );
        }

        let final_cases: [(&[u8], AuthError); 5] = [
            (b"e=invalid-proof", AuthError::InvalidProof),
            (
                b"e=channel-bindings-dont-match",
                AuthError::ChannelBindingMismatch,
            ),
            (b"v=AAAA", AuthError::InvalidServerSignature),
            (b"v=@@@", AuthError::Malformed("invalid verifier")),
            (b"x=1", AuthError::Malformed("missing verifier")),
        ];
        for (data, want) in final_cases {
            let mut client = ScramClient::with_nonce("pw", "cn".into());
            assert_eq!(
                client.handle_server_final(data),
                Err(AuthError::OutOfOrder),
                "final before first"
            );
            let mut client = ScramClient::with_nonce("pw", "cn".into());
            client.handle_server_first(b"r=cnX,s=c2FsdA==,i=1").unwrap();
            assert_eq!(client.handle_server_final(data), Err(want));
            assert_eq!(client.handle_server_final(data), Err(AuthError::OutOfOrder));
        }
    }

    proptest! {
        #[test]
        fn server_never_panics(
            mechanism in any::<String>(),
            first in proptest::collection::vec(any::<u8>(), 0..128),
            fin in proptest::collection::vec(any::<u8>(), 0..128),
            tail in any::<String>(),
        ) {
            let secret = ScramSecret::from_password("pw", b"salt", 1);
            let mut server = ScramServer::with_nonce(secret.clone(), "S".into());
            let _ = server.handle_client_first(&mechanism, &first);
            let _ = server.handle_client_final(&fin);
            let _ = server.client_key();

            // Reach the second step for sure, then feed garbage.
            let mut server = ScramServer::with_nonce(secret.clone(), "S".into());
            server.handle_client_first(SCRAM_SHA_256, b"n,,n=,r=c").unwrap();
            let _ = server.handle_client_final(&fin);

            // Structured prefixes exercise the deeper parsing paths.
            let mut server = ScramServer::with_nonce(secret.clone(), "S".into());
            let _ = server.handle_client_first(SCRAM_SHA_256, format!("n,,n=,r={tail}").as_bytes());
            let _ = server.handle_client_final(format!("c=biws,r=cS,{tail}").as_bytes());
            let mut server = ScramServer::with_nonce(secret, "S".into());
            server.handle_client_first(SCRAM_SHA_256, b"n,,n=,r=c").unwrap();
            let _ = server.handle_client_final(format!("c=biws,r=cS,p={tail}").as_bytes());
        }

        #[test]
        fn client_never_panics(
            first in proptest::collection::vec(any::<u8>(), 0..128),
            fin in proptest::collection::vec(any::<u8>(), 0..128),
            tail in any::<String>(),
        ) {
            let mut client = ScramClient::with_nonce("pw", "c".into());
            let _ = client.handle_server_first(&first);
            let _ = client.handle_server_final(&fin);

            let mut client = ScramClient::with_nonce("pw", "c".into());
            client.handle_server_first(b"r=cS,s=c2FsdA==,i=1").unwrap();
            let _ = client.handle_server_final(&fin);

            let mut client = ScramClient::with_nonce("pw", "c".into());
            let _ = client.handle_server_first(format!("r=cS,s=c2FsdA==,{tail}").as_bytes());
            let _ = client.handle_server_final(format!("v={tail}").as_bytes());

            let secret = ScramSecret::from_password("pw", b"salt", 1);
            let mut client = ScramClient::with_client_key([7; 32], secret);
            let _ = client.handle_server_first(&first);
            let _ = client.handle_server_final(format!("e={tail}").as_bytes());
        }

        #[test]
        fn secret_parse_never_panics(s in any::<String>()) {
            let _ = ScramSecret::parse(&s);
            let _ = ScramSecret::parse(&format!("SCRAM-SHA-256${s}"));
        }
    }
}
