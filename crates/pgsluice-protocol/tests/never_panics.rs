//! Property tests: any byte sequence gives a message, "need more", or an error; never a
//! panic, and never a message (or allocation for one) beyond the declared limits.

use bytes::BytesMut;
use pgsluice_protocol::frame::split_message;
use pgsluice_protocol::framer::{Framer, Mode, Piece};
use pgsluice_protocol::scan::{ScanEvent, Scanner, TagSet};
use pgsluice_protocol::startup::{parse_startup, MAX_STARTUP_PACKET};
use pgsluice_protocol::{backend, frontend, ProtocolError};
use proptest::prelude::*;

const MAX: u32 = 4096;

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn split_message_respects_limits(data in proptest::collection::vec(any::<u8>(), 0..8192)) {
        let mut buf = BytesMut::from(&data[..]);
        loop {
            let cap_before = buf.capacity();
            match split_message(&mut buf, MAX) {
                Ok(Some(m)) => prop_assert!(m.body.len() + 4 <= MAX as usize),
                Ok(None) => {
                    // Waiting for more never reserves past the limit.
                    prop_assert!(buf.capacity() <= cap_before.max(MAX as usize + 1));
                    break;
                }
                Err(_) => break,
            }
        }
    }

    #[test]
    fn startup_packets_respect_the_cap(data in proptest::collection::vec(any::<u8>(), 0..12000)) {
        let mut buf = BytesMut::from(&data[..]);
        let before = buf.len();
        if let Ok(Some(_)) = parse_startup(&mut buf) {
            prop_assert!(before - buf.len() <= MAX_STARTUP_PACKET as usize);
        }
    }

    #[test]
    fn decoders_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = backend::parse_auth(&data);
        let _ = backend::parse_error_fields(&data);
        let _ = backend::parse_notification(&data);
        let _ = backend::parse_parameter_status(&data);
        let _ = backend::parse_backend_key_data(&data);
        let _ = frontend::parse_parse(&data);
        let _ = frontend::parse_target(&data);
        let _ = frontend::parse_password(&data);
        let _ = frontend::parse_sasl_initial_response(&data);
        let _ = frontend::bind_names(&data);
    }

    #[test]
    fn scanner_is_split_invariant(data in proptest::collection::vec(any::<u8>(), 1..2048), cut in any::<usize>()) {
        let cut = cut % data.len();
        let run = |parts: &[&[u8]]| {
            let mut s = Scanner::new(MAX, TagSet::of(b"ZS"), 64);
            let mut ev = Vec::new();
            for p in parts {
                let r = s.feed::<ProtocolError>(p, |e| {
                    ev.push(match e {
                        ScanEvent::Start { tag, len, .. } => (tag, len, Vec::new()),
                        ScanEvent::Captured { tag, body } => (tag, 0, body.to_vec()),
                        ScanEvent::Oversized { tag } => (tag, 1, Vec::new()),
                    });
                    Ok(())
                });
                if r.is_err() {
                    return None;
                }
            }
            Some(ev)
        };
        if let (Some(a), Some(b)) = (run(&[&data]), run(&[&data[..cut], &data[cut..]])) {
            prop_assert_eq!(a, b);
        }
    }

    #[test]
    fn framer_output_is_a_prefix_of_input(data in proptest::collection::vec(any::<u8>(), 1..2048), cut in any::<usize>()) {
        let cut = cut % data.len();
        let mut f = Framer::new(MAX);
        let mut out = Vec::new();
        for p in [&data[..cut], &data[cut..]] {
            let r = f.feed::<ProtocolError>(
                p,
                |tag, _| if tag % 2 == 0 { Mode::Whole } else { Mode::Stream },
                |_, _| true,
                |piece| {
                    match piece {
                        Piece::Whole { tag, body } => {
                            out.push(tag);
                            out.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
                            out.extend_from_slice(body);
                        }
                        Piece::Start { tag, len } | Piece::Prefix { tag, len, .. } => {
                            out.push(tag);
                            out.extend_from_slice(&len.to_be_bytes());
                        }
                        Piece::Body(b) => out.extend_from_slice(b),
                    }
                    Ok(())
                },
            );
            if r.is_err() {
                return Ok(());
            }
        }
        prop_assert_eq!(&data[..out.len()], &out[..]);
    }
}
