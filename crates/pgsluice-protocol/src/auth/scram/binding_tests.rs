//! Tests of SCRAM-SHA-256-PLUS (channel binding `tls-server-end-point`), against our
//! own halves and against the independent client of `postgres-protocol`.

use super::*;
use postgres_protocol::authentication::sasl::{self, ScramSha256};

const PW: &str = "s3cret";

fn end_point(byte: u8) -> Vec<u8> {
    vec![byte; 32]
}

fn bound_server(data: Vec<u8>) -> ScramServer {
    ScramServer::new(ScramSecret::generate(PW)).with_channel_binding(data)
}

/// Runs a whole exchange; the server's result of the final step.
fn run(client: &mut ScramClient, server: &mut ScramServer) -> Result<(), AuthError> {
    let first = server.handle_client_first(client.mechanism(), &client.client_first())?;
    let fin = client.handle_server_first(&first)?;
    let last = server.handle_client_final(&fin)?;
    client.handle_server_final(&last)
}

#[test]
fn plus_round_trip() {
    let mut server = bound_server(end_point(7));
    assert_eq!(
        server.offered_mechanisms(),
        &[SCRAM_SHA_256_PLUS, SCRAM_SHA_256]
    );
    let binding = ChannelBinding::choose(server.offered_mechanisms(), Some(end_point(7)));
    let mut client = ScramClient::new(PW).with_channel_binding(binding);
    assert_eq!(client.mechanism(), SCRAM_SHA_256_PLUS);
    assert!(client
        .client_first()
        .starts_with(b"p=tls-server-end-point,,n=,r="));
    run(&mut client, &mut server).unwrap();
    assert!(server.uses_channel_binding());
    assert!(server.client_key().is_some());
}

#[test]
fn plus_with_other_binding_data_fails() {
    // A man in the middle: the client sees another certificate than the server has.
    let mut server = bound_server(end_point(7));
    let mut client =
        ScramClient::new(PW).with_channel_binding(ChannelBinding::TlsServerEndPoint(end_point(8)));
    assert_eq!(
        run(&mut client, &mut server),
        Err(AuthError::ChannelBindingMismatch)
    );
    assert!(server.client_key().is_none());
}

#[test]
fn downgrade_is_detected() {
    // "y": the client can bind but believes the server cannot.
    let mut server = bound_server(end_point(7));
    let mut client = ScramClient::new(PW).with_channel_binding(ChannelBinding::NotOffered);
    assert_eq!(client.mechanism(), SCRAM_SHA_256);
    assert_eq!(
        run(&mut client, &mut server),
        Err(AuthError::ChannelBindingMismatch)
    );
    // Against a server without TLS, "y" is fine.
    let mut server = ScramServer::new(ScramSecret::generate(PW));
    let mut client = ScramClient::new(PW).with_channel_binding(ChannelBinding::NotOffered);
    run(&mut client, &mut server).unwrap();
    assert!(!server.uses_channel_binding());
}

#[test]
fn plain_scram_still_works_over_tls() {
    let mut server = bound_server(end_point(7));
    let mut client = ScramClient::new(PW);
    run(&mut client, &mut server).unwrap();
    assert!(!server.uses_channel_binding());
}

#[test]
fn bad_plus_requests_are_refused() {
    // PLUS without binding data on the server side.
    let mut server = ScramServer::new(ScramSecret::generate(PW));
    assert_eq!(server.offered_mechanisms(), &[SCRAM_SHA_256]);
    assert_eq!(
        server.handle_client_first(SCRAM_SHA_256_PLUS, b"p=tls-server-end-point,,n=,r=abc"),
        Err(AuthError::UnsupportedMechanism(SCRAM_SHA_256_PLUS.into()))
    );
    let cases: [(&str, &[u8], AuthError); 4] = [
        (
            SCRAM_SHA_256_PLUS,
            b"n,,n=,r=abc",
            AuthError::Malformed("SCRAM-SHA-256-PLUS without channel binding"),
        ),
        (
            SCRAM_SHA_256_PLUS,
            b"p=tls-unique,,n=,r=abc",
            AuthError::ChannelBindingUnsupported,
        ),
        (
            SCRAM_SHA_256,
            b"p=tls-server-end-point,,n=,r=abc",
            AuthError::Malformed("channel binding requested with SCRAM-SHA-256"),
        ),
        (
            SCRAM_SHA_256_PLUS,
            b"q,,n=,r=abc",
            AuthError::Malformed("invalid channel binding flag"),
        ),
    ];
    for (mechanism, data, want) in cases {
        let mut server = bound_server(end_point(1));
        assert_eq!(server.handle_client_first(mechanism, data), Err(want));
        assert_eq!(
            server.handle_client_final(b"c=biws,r=abc,p=AAAA"),
            Err(AuthError::OutOfOrder)
        );
    }
    // A PLUS client that sends the GS2 header alone in c= (without binding data).
    let mut server = bound_server(end_point(1));
    let first = server
        .handle_client_first(SCRAM_SHA_256_PLUS, b"p=tls-server-end-point,,n=,r=abc")
        .unwrap();
    let nonce = std::str::from_utf8(&first).unwrap()[2..]
        .split(',')
        .next()
        .unwrap()
        .to_owned();
    let c = STANDARD.encode("p=tls-server-end-point,,");
    let msg = format!("c={c},r={nonce},p={}", STANDARD.encode([0u8; 32]));
    assert_eq!(
        server.handle_client_final(msg.as_bytes()),
        Err(AuthError::ChannelBindingMismatch)
    );
}

#[test]
fn choose_follows_rfc5802() {
    let both = [SCRAM_SHA_256_PLUS, SCRAM_SHA_256];
    let plain = [SCRAM_SHA_256];
    assert_eq!(
        ChannelBinding::choose(&both, Some(end_point(1))),
        ChannelBinding::TlsServerEndPoint(end_point(1))
    );
    assert_eq!(
        ChannelBinding::choose(&plain, Some(end_point(1))),
        ChannelBinding::NotOffered
    );
    assert_eq!(
        ChannelBinding::choose(&both, None),
        ChannelBinding::Unsupported
    );
    assert_eq!(
        ChannelBinding::choose(&plain, None),
        ChannelBinding::Unsupported
    );
}

#[test]
fn postgres_protocol_plus_client_against_our_server() {
    let data = end_point(42);
    let mut theirs = ScramSha256::new(
        PW.as_bytes(),
        sasl::ChannelBinding::tls_server_end_point(data.clone()),
    );
    let mut ours = bound_server(data);
    let first = ours
        .handle_client_first(SCRAM_SHA_256_PLUS, theirs.message())
        .unwrap();
    theirs.update(&first).unwrap();
    let fin = ours.handle_client_final(theirs.message()).unwrap();
    theirs.finish(&fin).unwrap();
    assert!(ours.uses_channel_binding());

    // Their client bound to another certificate.
    let mut theirs = ScramSha256::new(
        PW.as_bytes(),
        sasl::ChannelBinding::tls_server_end_point(end_point(43)),
    );
    let mut ours = bound_server(end_point(42));
    let first = ours
        .handle_client_first(SCRAM_SHA_256_PLUS, theirs.message())
        .unwrap();
    theirs.update(&first).unwrap();
    assert_eq!(
        ours.handle_client_final(theirs.message()),
        Err(AuthError::ChannelBindingMismatch)
    );
}

#[test]
fn our_plus_client_matches_postgres_protocol_client() {
    // Same nonce, password and binding data: both clients must produce the same
    // client-first and client-final messages.
    let data = end_point(9);
    let mut server = bound_server(data.clone());
    let mut theirs = ScramSha256::new(
        PW.as_bytes(),
        sasl::ChannelBinding::tls_server_end_point(data.clone()),
    );
    let their_first = std::str::from_utf8(theirs.message()).unwrap().to_owned();
    let nonce = their_first.rsplit_once("r=").unwrap().1.to_owned();
    let mut ours = ScramClient::with_nonce(PW, nonce)
        .with_channel_binding(ChannelBinding::TlsServerEndPoint(data));
    assert_eq!(ours.client_first(), their_first.as_bytes());
    let first = server
        .handle_client_first(SCRAM_SHA_256_PLUS, &ours.client_first())
        .unwrap();
    let fin = ours.handle_server_first(&first).unwrap();
    theirs.update(&first).unwrap();
    assert_eq!(fin, theirs.message());
    let last = server.handle_client_final(&fin).unwrap();
    ours.handle_server_final(&last).unwrap();
}
