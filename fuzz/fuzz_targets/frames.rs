//! Any bytes split into messages: every message respects the length limit and the
//! bytes consumed add up.
#![no_main]
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use pgsluice_protocol::frame::split_message;

const MAX: u32 = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    let mut consumed = 0;
    loop {
        let before = buf.len();
        match split_message(&mut buf, MAX) {
            Ok(Some(m)) => {
                assert!(m.body.len() + 4 <= MAX as usize);
                consumed += before - buf.len();
            }
            Ok(None) | Err(_) => break,
        }
    }
    assert!(consumed <= data.len());
});
