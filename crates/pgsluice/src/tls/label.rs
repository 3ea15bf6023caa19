//! What SHOW CLIENTS and SHOW SERVERS print in their `tls` column: the protocol, the
//! cipher suite and the key exchange group of a connection, in PgBouncer's form
//! (`TLSv1.3/TLS_AES_256_GCM_SHA384/ECDH=X25519`, OpenSSL's names).
//!
//! Every connection's entry in the admin views would otherwise carry a string; a
//! process sees only a handful of distinct descriptions, so each is kept once here and
//! an entry holds its one-byte [`TlsLabel`] (it fits in padding the entry already has).

use std::sync::{Arc, Mutex};

use rustls::{CipherSuite, CommonState, NamedGroup, ProtocolVersion};

use crate::sync::LockExt;

/// The distinct descriptions seen so far; a label is an index + 1.
static LABELS: Mutex<Vec<Arc<str>>> = Mutex::new(Vec::new());

/// A connection's TLS description, by number (0: not TLS).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TlsLabel(u8);

impl TlsLabel {
    /// Not under TLS.
    pub const NONE: TlsLabel = TlsLabel(0);

    /// The label of a connection's negotiated parameters (after the handshake).
    pub fn of(tls: &CommonState) -> TlsLabel {
        TlsLabel::intern(&describe(tls))
    }

    /// The label of `text`, added to the list when new. Past 255 distinct
    /// descriptions (not seen in practice: a process negotiates a few suites), the
    /// last one stands for the rest.
    pub fn intern(text: &str) -> TlsLabel {
        let mut labels = LABELS.locked();
        if let Some(i) = labels.iter().position(|l| &**l == text) {
            return TlsLabel(u8::try_from(i + 1).unwrap_or(u8::MAX));
        }
        if labels.len() < usize::from(u8::MAX) {
            labels.push(text.into());
        }
        TlsLabel(u8::try_from(labels.len()).unwrap_or(u8::MAX))
    }

    /// The description ("" when not TLS).
    pub fn text(self) -> Arc<str> {
        match self.0 {
            0 => "".into(),
            n => LABELS
                .locked()
                .get(usize::from(n) - 1)
                .cloned()
                .unwrap_or_else(|| "".into()),
        }
    }

    /// The raw number (for an atomic field).
    pub fn to_u8(self) -> u8 {
        self.0
    }

    /// From [`TlsLabel::to_u8`].
    pub fn from_u8(n: u8) -> TlsLabel {
        TlsLabel(n)
    }
}

/// `protocol/cipher[/ECDH=group]` of a finished handshake, with OpenSSL's names where
/// PgBouncer would print them.
pub fn describe(tls: &CommonState) -> String {
    let version = match tls.protocol_version() {
        Some(ProtocolVersion::TLSv1_3) => "TLSv1.3".to_owned(),
        Some(ProtocolVersion::TLSv1_2) => "TLSv1.2".to_owned(),
        Some(v) => format!("{v:?}"),
        None => "-".to_owned(),
    };
    let cipher = tls
        .negotiated_cipher_suite()
        .map_or_else(|| "-".to_owned(), |s| cipher_name(s.suite()));
    match tls.negotiated_key_exchange_group() {
        Some(g) => format!("{version}/{cipher}/ECDH={}", group_name(g.name())),
        None => format!("{version}/{cipher}"),
    }
}

fn cipher_name(suite: CipherSuite) -> String {
    let name = match suite {
        CipherSuite::TLS13_AES_256_GCM_SHA384 => "TLS_AES_256_GCM_SHA384",
        CipherSuite::TLS13_AES_128_GCM_SHA256 => "TLS_AES_128_GCM_SHA256",
        CipherSuite::TLS13_CHACHA20_POLY1305_SHA256 => "TLS_CHACHA20_POLY1305_SHA256",
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 => "ECDHE-ECDSA-AES256-GCM-SHA384",
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 => "ECDHE-ECDSA-AES128-GCM-SHA256",
        CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256 => {
            "ECDHE-ECDSA-CHACHA20-POLY1305"
        }
        CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => "ECDHE-RSA-AES256-GCM-SHA384",
        CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => "ECDHE-RSA-AES128-GCM-SHA256",
        CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 => "ECDHE-RSA-CHACHA20-POLY1305",
        other => return format!("{other:?}"),
    };
    name.to_owned()
}

fn group_name(group: NamedGroup) -> String {
    let name = match group {
        NamedGroup::X25519 => "X25519",
        NamedGroup::secp256r1 => "prime256v1",
        NamedGroup::secp384r1 => "secp384r1",
        NamedGroup::secp521r1 => "secp521r1",
        other => return format!("{other:?}"),
    };
    name.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_interned_and_read_back() {
        let a = TlsLabel::intern("TLSv1.3/TLS_AES_256_GCM_SHA384/ECDH=X25519");
        let b = TlsLabel::intern("TLSv1.2/ECDHE-RSA-AES128-GCM-SHA256/ECDH=prime256v1");
        assert_ne!(a, TlsLabel::NONE);
        assert_ne!(a, b);
        assert_eq!(
            TlsLabel::intern("TLSv1.3/TLS_AES_256_GCM_SHA384/ECDH=X25519"),
            a
        );
        assert_eq!(&*a.text(), "TLSv1.3/TLS_AES_256_GCM_SHA384/ECDH=X25519");
        assert_eq!(&*TlsLabel::from_u8(b.to_u8()).text(), &*b.text());
        assert_eq!(&*TlsLabel::NONE.text(), "");
    }

    #[test]
    fn names_follow_openssl() {
        assert_eq!(
            cipher_name(CipherSuite::TLS13_AES_128_GCM_SHA256),
            "TLS_AES_128_GCM_SHA256"
        );
        assert_eq!(
            cipher_name(CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384),
            "ECDHE-RSA-AES256-GCM-SHA384"
        );
        assert_eq!(group_name(NamedGroup::secp256r1), "prime256v1");
        assert_eq!(group_name(NamedGroup::X25519), "X25519");
    }
}
