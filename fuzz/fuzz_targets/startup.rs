//! Any bytes as the first packets of a connection: a packet, "need more", or an error;
//! never a panic, never more than MAX_STARTUP_PACKET consumed per packet.
#![no_main]
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use pgsluice_protocol::startup::{parse_startup, MAX_STARTUP_PACKET};

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    while !buf.is_empty() {
        let before = buf.len();
        match parse_startup(&mut buf) {
            Ok(Some(_)) => assert!(before - buf.len() <= MAX_STARTUP_PACKET as usize),
            Ok(None) | Err(_) => break,
        }
    }
});
