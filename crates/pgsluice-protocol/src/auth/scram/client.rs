//! The client half of SCRAM-SHA-256(-PLUS): pgsluice authenticating to PostgreSQL,
//! with a password or with a `ClientKey` recovered from a client's proof.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use subtle::ConstantTimeEq;

use super::*;

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
