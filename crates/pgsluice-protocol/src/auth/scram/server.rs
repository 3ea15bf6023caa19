//! The server half of SCRAM-SHA-256(-PLUS): pgsluice authenticating a client.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use subtle::ConstantTimeEq;

use super::*;

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
    /// [`crate::auth::cert::tls_server_end_point`]).
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
