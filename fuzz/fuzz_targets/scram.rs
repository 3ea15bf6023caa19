//! SCRAM state machines fed hostile messages on both sides.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pgsluice_protocol::auth::scram::{ScramClient, ScramSecret, ScramServer};

fuzz_target!(|data: &[u8]| {
    let split = data.first().map(|b| *b as usize % (data.len().max(1))).unwrap_or(0);
    let (a, b) = data.split_at(split.min(data.len()));
    let secret = ScramSecret::from_password("pw", b"0123456789abcdef", 1);
    let mut server = ScramServer::with_nonce(secret, "servernonce".into());
    if server.handle_client_first("SCRAM-SHA-256", a).is_ok() {
        let _ = server.handle_client_final(b);
    }
    let mut client = ScramClient::with_nonce("pw", "clientnonce".into());
    if client.handle_server_first(a).is_ok() {
        let _ = client.handle_server_final(b);
    }
    let _ = ScramSecret::parse(&String::from_utf8_lossy(data));
});
