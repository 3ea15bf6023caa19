//! The rewriting framer: pieces reassemble to exactly the input, for any chunking.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pgsluice_protocol::framer::{Framer, Mode, Piece};
use pgsluice_protocol::ProtocolError;

fn run(data: &[u8], cut: usize) -> Option<Vec<u8>> {
    let mut f = Framer::new(1 << 16);
    let mut out = Vec::new();
    for part in [&data[..cut], &data[cut..]] {
        f.feed::<ProtocolError>(
            part,
            |tag, _| match tag % 3 {
                0 => Mode::Whole,
                1 => Mode::Prefix { limit: 16 },
                _ => Mode::Stream,
            },
            |_, p| p.contains(&0),
            |p| {
                match p {
                    Piece::Whole { tag, body } => {
                        out.push(tag);
                        out.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
                        out.extend_from_slice(body);
                    }
                    Piece::Prefix { tag, len, prefix } => {
                        out.push(tag);
                        out.extend_from_slice(&len.to_be_bytes());
                        out.extend_from_slice(prefix);
                    }
                    Piece::Start { tag, len } => {
                        out.push(tag);
                        out.extend_from_slice(&len.to_be_bytes());
                    }
                    Piece::Body(b) => out.extend_from_slice(b),
                }
                Ok(())
            },
        )
        .ok()?;
    }
    Some(out)
}

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    let body = &data[1..];
    let cut = data[0] as usize % (body.len() + 1);
    if let Some(out) = run(body, cut) {
        // Everything delivered is a prefix of the input (a partial message is held back).
        assert_eq!(&body[..out.len()], &out[..]);
    }
});
