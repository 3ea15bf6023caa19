//! The legacy PostgreSQL `md5` password scheme.
//!
//! PostgreSQL stores `"md5" + hex(md5(password || user))`; on the wire the
//! server sends a 4-byte salt in `AuthenticationMD5Password` and the client
//! answers with `"md5" + hex(md5(hex(md5(password || user)) || salt))`.
//! This module owns computing both forms and checking a client's answer in
//! constant time. It knows nothing about the wire framing.

use ::md5::{Digest, Md5};
use subtle::ConstantTimeEq;

/// Length of a stored md5 hash: `"md5"` plus 32 hex digits.
const MD5_HASH_LEN: usize = 35;

/// Lowercase hex encoding of `bytes`.
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// `"md5" + hex(md5(a || b))`.
fn md5_hex(a: &[u8], b: &[u8]) -> String {
    let mut hasher = Md5::new();
    hasher.update(a);
    hasher.update(b);
    let digest = hasher.finalize();
    let mut out = String::with_capacity(MD5_HASH_LEN);
    out.push_str("md5");
    out.push_str(&hex(&digest));
    out
}

/// "md5" + hex(md5(password || user)): the form PostgreSQL stores and userlist.txt uses.
pub fn hash_password(user: &str, password: &str) -> String {
    md5_hex(password.as_bytes(), user.as_bytes())
}

/// The response a client sends to AuthenticationMD5Password: "md5" + hex(md5(hex_part_of_stored || salt)). `stored` is either a "md5<32 hex>" string or a plaintext password (then hash_password(user, stored) is used first).
pub fn client_response(user: &str, stored: &str, salt: [u8; 4]) -> String {
    let hashed;
    let hex_part = match stored.strip_prefix("md5") {
        Some(hex_part) if is_md5_hash(stored) => hex_part,
        _ => {
            hashed = hash_password(user, stored);
            hashed.strip_prefix("md5").unwrap_or(&hashed)
        }
    };
    md5_hex(hex_part.as_bytes(), &salt)
}

/// Constant-time check of a client's md5 response against a stored secret (plaintext or "md5..." form).
///
/// A single trailing NUL (the C-string terminator of `PasswordMessage`) in
/// `response` is tolerated. Returns `false` when `stored` is empty or is a
/// SCRAM verifier, which cannot answer an md5 challenge (as PostgreSQL does).
pub fn verify(user: &str, stored: &str, salt: [u8; 4], response: &[u8]) -> bool {
    if stored.is_empty() || super::scram::ScramSecret::parse(stored).is_some() {
        return false;
    }
    let response = response.strip_suffix(b"\0").unwrap_or(response);
    let expected = client_response(user, stored, salt);
    expected.as_bytes().ct_eq(response).into()
}

/// True if s looks like "md5" followed by 32 lowercase hex digits.
pub fn is_md5_hash(s: &str) -> bool {
    s.len() == MD5_HASH_LEN
        && s.starts_with("md5")
        && s.bytes()
            .skip(3)
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Independent computation with the md5 crate directly.
    fn reference(user: &str, password: &str, salt: [u8; 4]) -> String {
        let inner = format!("{:x}", ::md5::Md5::digest(format!("{password}{user}")));
        let mut outer_input = inner.into_bytes();
        outer_input.extend_from_slice(&salt);
        format!("md5{:x}", ::md5::Md5::digest(&outer_input))
    }

    #[test]
    fn known_hash_password() {
        assert_eq!(
            hash_password("postgres", "postgres"),
            "md53175bce1d3201d16594cebf9d7eb3f9d"
        );
    }

    #[test]
    fn known_client_response() {
        // md5(md5("secret" || "alice") hex || 01 02 03 04), computed with Python's hashlib.
        let expected = "md598a0412b9c31436fc53776e863350083";
        assert_eq!(client_response("alice", "secret", [1, 2, 3, 4]), expected);
        assert_eq!(reference("alice", "secret", [1, 2, 3, 4]), expected);
    }

    #[test]
    fn response_matches_reference_for_both_stored_forms() {
        for (user, password, salt) in [
            ("postgres", "postgres", [0, 0, 0, 0]),
            ("bob", "", [0xff, 0x00, 0x7f, 0x80]),
            ("ünï", "pässwörd", [9, 8, 7, 6]),
        ] {
            let want = reference(user, password, salt);
            assert_eq!(client_response(user, password, salt), want);
            let hashed = hash_password(user, password);
            assert_eq!(client_response(user, &hashed, salt), want);
        }
    }

    #[test]
    fn verify_accepts_right_and_rejects_wrong() {
        let salt = [0xde, 0xad, 0xbe, 0xef];
        let resp = client_response("alice", "secret", salt);
        let hashed = hash_password("alice", "secret");
        assert!(verify("alice", "secret", salt, resp.as_bytes()));
        assert!(verify("alice", &hashed, salt, resp.as_bytes()));
        let mut with_nul = resp.clone().into_bytes();
        with_nul.push(0);
        assert!(verify("alice", &hashed, salt, &with_nul));

        assert!(!verify("alice", "wrong", salt, resp.as_bytes()));
        assert!(!verify("mallory", "secret", salt, resp.as_bytes()));
        assert!(!verify("alice", "secret", [0, 0, 0, 0], resp.as_bytes()));
        assert!(!verify("alice", "secret", salt, b""));
        assert!(!verify("alice", "secret", salt, &resp.as_bytes()[..10]));
        // The stored hash itself is not a valid response.
        assert!(!verify("alice", &hashed, salt, hashed.as_bytes()));
        // Empty stored passwords and SCRAM verifiers never verify.
        let empty = client_response("alice", "", salt);
        assert!(!verify("alice", "", salt, empty.as_bytes()));
        let scram = crate::auth::scram::ScramSecret::from_password("x", b"saltsalt", 4096).encode();
        let resp = client_response("alice", &scram, salt);
        assert!(!verify("alice", &scram, salt, resp.as_bytes()));
    }

    #[test]
    fn md5_hash_detection() {
        assert!(is_md5_hash("md53175bce1d3201d16594cebf9d7eb3f9d"));
        assert!(!is_md5_hash("md53175BCE1D3201D16594CEBF9D7EB3F9D"));
        assert!(!is_md5_hash("md53175bce1d3201d16594cebf9d7eb3f9"));
        assert!(!is_md5_hash("md53175bce1d3201d16594cebf9d7eb3f9d0"));
        assert!(!is_md5_hash("md63175bce1d3201d16594cebf9d7eb3f9d"));
        assert!(!is_md5_hash("md53175bce1d3201d16594cebf9d7eb3f9g"));
        assert!(!is_md5_hash("md5éééééééééééééééé"));
        assert!(!is_md5_hash(""));
        assert!(!is_md5_hash("postgres"));
    }
}
