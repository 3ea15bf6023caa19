//! The two facts pgsluice needs from an X.509 certificate, read from its DER bytes
//! without a full X.509 parser:
//!
//! * [`tls_server_end_point`]: the channel binding data of type `tls-server-end-point`
//!   (RFC 5929 section 4.1): a hash of the server certificate, with the hash function
//!   of the certificate's signature algorithm, except that MD5 and SHA-1 are replaced
//!   by SHA-256;
//! * [`subject_common_name`]: the first `commonName` of the subject, which the `cert`
//!   authentication method maps to a user name.
//!
//! Only the few DER structures on the way are decoded; anything unexpected gives
//! `None`, never a panic.

use sha2::{Digest, Sha224, Sha256, Sha384, Sha512};

/// DER tag of a SEQUENCE.
const SEQUENCE: u8 = 0x30;
/// DER tag of a SET.
const SET: u8 = 0x31;
/// DER tag of an OBJECT IDENTIFIER.
const OID: u8 = 0x06;
/// DER tag of the explicit `[0]` version field of a TBSCertificate and of the
/// hash algorithm in RSASSA-PSS parameters.
const CONTEXT_0: u8 = 0xa0;

/// Content bytes of the object identifier 2.5.4.3 (`commonName`).
const OID_COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
/// Content bytes of 1.2.840.113549.1.1.10 (RSASSA-PSS), whose hash is in its parameters.
const OID_RSASSA_PSS: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a];

/// A hash function a certificate may be signed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hash {
    Md5OrSha1,
    Sha224,
    Sha256,
    Sha384,
    Sha512,
}

/// Signature algorithms (and the plain hash algorithms of RSASSA-PSS parameters) by
/// the content bytes of their object identifiers.
const HASH_OF_OID: &[(&[u8], Hash)] = &[
    // md5WithRSAEncryption, sha1WithRSAEncryption, sha224/256/384/512WithRSAEncryption
    (
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x04],
        Hash::Md5OrSha1,
    ),
    (
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x05],
        Hash::Md5OrSha1,
    ),
    (
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0e],
        Hash::Sha224,
    ),
    (
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b],
        Hash::Sha256,
    ),
    (
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c],
        Hash::Sha384,
    ),
    (
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d],
        Hash::Sha512,
    ),
    // ecdsa-with-SHA1, ecdsa-with-SHA224/256/384/512
    (&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x01], Hash::Md5OrSha1),
    (
        &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x01],
        Hash::Sha224,
    ),
    (
        &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02],
        Hash::Sha256,
    ),
    (
        &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03],
        Hash::Sha384,
    ),
    (
        &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04],
        Hash::Sha512,
    ),
    // dsa-with-sha1, dsa-with-sha224, dsa-with-sha256
    (&[0x2a, 0x86, 0x48, 0xce, 0x38, 0x04, 0x03], Hash::Md5OrSha1),
    (
        &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x03, 0x01],
        Hash::Sha224,
    ),
    (
        &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x03, 0x02],
        Hash::Sha256,
    ),
    // Plain hash algorithms (RSASSA-PSS parameters): sha1, sha256, sha384, sha512, sha224
    (&[0x2b, 0x0e, 0x03, 0x02, 0x1a], Hash::Md5OrSha1),
    (
        &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01],
        Hash::Sha256,
    ),
    (
        &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02],
        Hash::Sha384,
    ),
    (
        &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03],
        Hash::Sha512,
    ),
    (
        &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x04],
        Hash::Sha224,
    ),
];

/// One DER element: its tag, its content, and what follows it.
fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    if tag & 0x1f == 0x1f {
        return None; // multi-byte tags do not occur on our paths
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// The content of an element that must carry `tag`, and what follows it.
fn expect(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (t, content, rest) = element(input)?;
    (t == tag).then_some((content, rest))
}

/// The TBSCertificate and signatureAlgorithm contents of a Certificate.
fn certificate_parts(der: &[u8]) -> Option<(&[u8], &[u8])> {
    let (cert, _) = expect(der, SEQUENCE)?;
    let (tbs, rest) = expect(cert, SEQUENCE)?;
    let (sig_alg, _) = expect(rest, SEQUENCE)?;
    Some((tbs, sig_alg))
}

/// The hash of an AlgorithmIdentifier, looking into RSASSA-PSS parameters.
fn hash_of_algorithm(alg: &[u8]) -> Option<Hash> {
    let (oid, params) = expect(alg, OID)?;
    if oid == OID_RSASSA_PSS {
        // RSASSA-PSS-params ::= SEQUENCE { hashAlgorithm [0] AlgorithmIdentifier DEFAULT sha1, ... }
        let (pss, _) = expect(params, SEQUENCE)?;
        return match element(pss) {
            Some((CONTEXT_0, explicit, _)) => {
                let (hash_alg, _) = expect(explicit, SEQUENCE)?;
                let (hash_oid, _) = expect(hash_alg, OID)?;
                lookup(hash_oid)
            }
            _ => Some(Hash::Md5OrSha1),
        };
    }
    lookup(oid)
}

fn lookup(oid: &[u8]) -> Option<Hash> {
    HASH_OF_OID.iter().find(|(o, _)| *o == oid).map(|&(_, h)| h)
}

/// The `tls-server-end-point` channel binding data of the certificate `der` (RFC 5929):
/// its hash with the hash function of its signature algorithm, SHA-256 for MD5 and
/// SHA-1. `None` for a malformed certificate or a signature algorithm without a single
/// hash function (such as Ed25519), for which no binding data is defined.
pub fn tls_server_end_point(der: &[u8]) -> Option<Vec<u8>> {
    let (_, sig_alg) = certificate_parts(der)?;
    Some(match hash_of_algorithm(sig_alg)? {
        Hash::Md5OrSha1 | Hash::Sha256 => Sha256::digest(der).to_vec(),
        Hash::Sha224 => Sha224::digest(der).to_vec(),
        Hash::Sha384 => Sha384::digest(der).to_vec(),
        Hash::Sha512 => Sha512::digest(der).to_vec(),
    })
}

/// The first `commonName` of the subject of the certificate `der`, if it has one that
/// is a text string.
pub fn subject_common_name(der: &[u8]) -> Option<String> {
    let (tbs, _) = certificate_parts(der)?;
    let mut rest = tbs;
    // [0] EXPLICIT version, optional.
    if let Some((CONTEXT_0, _, after)) = element(rest) {
        rest = after;
    }
    // serialNumber, signature, issuer, validity, then subject.
    for _ in 0..4 {
        rest = element(rest)?.2;
    }
    let (mut rdns, _) = expect(rest, SEQUENCE)?;
    while !rdns.is_empty() {
        let (set, after) = expect(rdns, SET)?;
        rdns = after;
        let mut attrs = set;
        while !attrs.is_empty() {
            let (attr, after) = expect(attrs, SEQUENCE)?;
            attrs = after;
            let (oid, value) = expect(attr, OID)?;
            if oid == OID_COMMON_NAME {
                let (tag, text, _) = element(value)?;
                return decode_string(tag, text);
            }
        }
    }
    None
}

/// Decodes a DirectoryString value.
fn decode_string(tag: u8, bytes: &[u8]) -> Option<String> {
    match tag {
        // UTF8String, PrintableString, IA5String
        0x0c | 0x13 | 0x16 => String::from_utf8(bytes.to_vec()).ok(),
        // TeletexString: accepted when plain ASCII.
        0x14 if bytes.is_ascii() => String::from_utf8(bytes.to_vec()).ok(),
        // BMPString: UTF-16BE.
        0x1e => {
            let chunks = bytes.chunks_exact(2);
            if !chunks.remainder().is_empty() {
                return None;
            }
            let units: Vec<u16> = chunks.map(|c| u16::from_be_bytes([c[0], c[1]])).collect();
            String::from_utf16(&units).ok()
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal DER element.
    fn der(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        if content.len() < 0x80 {
            out.push(content.len() as u8);
        } else {
            out.push(0x82);
            out.extend_from_slice(&(content.len() as u16).to_be_bytes());
        }
        out.extend_from_slice(content);
        out
    }

    fn cat(parts: &[Vec<u8>]) -> Vec<u8> {
        parts.concat()
    }

    /// A structurally valid certificate with the given subject CN and signature algorithm.
    fn fake_cert(cn: &[u8], cn_tag: u8, sig_alg: Vec<u8>) -> Vec<u8> {
        let version = der(CONTEXT_0, &der(0x02, &[2]));
        let serial = der(0x02, &[1]);
        let name = |t: &[u8]| {
            der(
                SEQUENCE,
                &cat(&[
                    der(
                        SET,
                        &der(
                            SEQUENCE,
                            &cat(&[der(OID, &[0x55, 0x04, 0x0a]), der(0x0c, b"Org")]),
                        ),
                    ),
                    der(
                        SET,
                        &der(SEQUENCE, &cat(&[der(OID, OID_COMMON_NAME), der(cn_tag, t)])),
                    ),
                ]),
            )
        };
        let validity = der(
            SEQUENCE,
            &cat(&[der(0x17, b"250101000000Z"), der(0x17, b"350101000000Z")]),
        );
        let spki = der(SEQUENCE, &der(0x03, &[0, 1, 2, 3]));
        let tbs = der(
            SEQUENCE,
            &cat(&[
                version,
                serial,
                sig_alg.clone(),
                name(b"Issuer"),
                validity,
                name(cn),
                spki,
            ]),
        );
        der(SEQUENCE, &cat(&[tbs, sig_alg, der(0x03, &[0, 9, 9])]))
    }

    fn alg(oid: &[u8]) -> Vec<u8> {
        der(SEQUENCE, &der(OID, oid))
    }

    #[test]
    fn end_point_hash_follows_the_signature_algorithm() {
        let sha256_rsa = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b];
        let sha1_rsa = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x05];
        let ecdsa384 = [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03];
        let ecdsa512 = [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04];
        for (oid, len) in [
            (&sha256_rsa[..], 32),
            (&sha1_rsa[..], 32),
            (&ecdsa384[..], 48),
            (&ecdsa512[..], 64),
        ] {
            let cert = fake_cert(b"x", 0x0c, alg(oid));
            let h = tls_server_end_point(&cert).unwrap();
            assert_eq!(h.len(), len);
            if len == 32 {
                assert_eq!(h, Sha256::digest(&cert).to_vec());
            }
        }
        // Ed25519: no hash function, no binding data.
        let cert = fake_cert(b"x", 0x0c, alg(&[0x2b, 0x65, 0x70]));
        assert_eq!(tls_server_end_point(&cert), None);
    }

    #[test]
    fn end_point_hash_of_rsassa_pss_uses_its_parameters() {
        let sha384 = [0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02];
        let params = der(SEQUENCE, &der(CONTEXT_0, &alg(&sha384)));
        let pss = der(SEQUENCE, &cat(&[der(OID, OID_RSASSA_PSS), params]));
        let cert = fake_cert(b"x", 0x0c, pss);
        assert_eq!(
            tls_server_end_point(&cert).unwrap(),
            Sha384::digest(&cert).to_vec()
        );
        // Without a hash algorithm: the default, SHA-1, hence SHA-256.
        let pss = der(
            SEQUENCE,
            &cat(&[der(OID, OID_RSASSA_PSS), der(SEQUENCE, &[])]),
        );
        let cert = fake_cert(b"x", 0x0c, pss);
        assert_eq!(
            tls_server_end_point(&cert).unwrap(),
            Sha256::digest(&cert).to_vec()
        );
    }

    #[test]
    fn common_name_of_the_subject() {
        let sha256_rsa = alg(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b]);
        let cert = fake_cert(b"alice", 0x0c, sha256_rsa.clone());
        assert_eq!(subject_common_name(&cert).as_deref(), Some("alice"));
        let cert = fake_cert(b"bob", 0x13, sha256_rsa.clone());
        assert_eq!(subject_common_name(&cert).as_deref(), Some("bob"));
        let cert = fake_cert(&[0, b'c', 0, b'y'], 0x1e, sha256_rsa.clone());
        assert_eq!(subject_common_name(&cert).as_deref(), Some("cy"));
        let cert = fake_cert(&[0xff, 0xfe], 0x0c, sha256_rsa);
        assert_eq!(subject_common_name(&cert), None);
    }

    #[test]
    fn garbage_gives_none() {
        let sha256_rsa = alg(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b]);
        let cert = fake_cert(b"alice", 0x0c, sha256_rsa);
        for cut in 0..cert.len() {
            assert_eq!(tls_server_end_point(&cert[..cut]), None);
            assert_eq!(subject_common_name(&cert[..cut]), None);
        }
        assert_eq!(
            tls_server_end_point(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]),
            None
        );
        assert_eq!(subject_common_name(b""), None);
    }
}
