//! Unit and property tests of SCRAM-SHA-256 (both halves, secrets).

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
    let mut c = ScramClient::with_nonce("pencil", RFC_CLIENT_NONCE.into()).with_derived_keys(keys);
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
