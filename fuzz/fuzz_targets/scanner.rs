//! The forwarding scanner over any bytes fed in any chunking: the same events whether
//! fed whole or in pieces, and never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pgsluice_protocol::scan::{ScanEvent, Scanner, TagSet};
use pgsluice_protocol::ProtocolError;

fn run(data: &[u8], cut: usize) -> (Vec<(u8, u32, usize)>, bool) {
    let mut s = Scanner::new(1 << 20, TagSet::of(b"ZSE"), 256);
    let mut events = Vec::new();
    let mut ok = true;
    for part in [&data[..cut], &data[cut..]] {
        let r = s.feed::<ProtocolError>(part, |e| {
            match e {
                ScanEvent::Start { tag, len, .. } => events.push((tag, len, 0)),
                ScanEvent::Captured { tag, body } => events.push((tag, 0, body.len() + 1)),
                ScanEvent::Oversized { tag } => events.push((tag, 0, 0)),
            }
            Ok(())
        });
        if r.is_err() {
            ok = false;
            break;
        }
    }
    (events, ok)
}

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    let cut = data[0] as usize % data.len();
    let whole = run(&data[1..], 0);
    let split = run(&data[1..], cut.min(data.len() - 1));
    if whole.1 && split.1 {
        assert_eq!(whole.0, split.0);
    }
});
