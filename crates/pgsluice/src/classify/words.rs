//! Byte scans of a SQL text eight bytes at a time (a `u64` per step, no SIMD
//! intrinsics, no `unsafe`): the first word of a text, and where a byte occurs. They
//! decide the path of every request (a parameter request? session state?), so they run
//! once or twice per transaction and are kept to a few dozen instructions for a short
//! query.

/// Every byte 0x01.
const ONES: u64 = 0x0101_0101_0101_0101;
/// Every byte 0x80.
const HIGH: u64 = 0x8080_8080_8080_8080;
/// Every byte 0x20, the bit that makes an ASCII letter lower-case.
const CASE: u64 = ONES * 0x20;

/// The eight bytes of `t` from `at` as a little-endian `u64`, padded with spaces
/// past the end (a space is no letter, no `;`, no `(`).
#[inline]
pub(super) fn load(t: &[u8], at: usize) -> u64 {
    if let Some(c) = t.get(at..).and_then(|r| r.first_chunk::<8>()) {
        return u64::from_le_bytes(*c);
    }
    let mut b = [b' '; 8];
    let rest = t.get(at..).unwrap_or_default();
    b[..rest.len()].copy_from_slice(rest);
    u64::from_le_bytes(b)
}

/// The high bit of each byte of `x` that equals `b`, and no other bit (exact: no
/// carry crosses a byte).
#[inline]
pub(super) fn equal_bytes(x: u64, b: u8) -> u64 {
    let y = x ^ (ONES * u64::from(b));
    // A byte of `y` is zero exactly where `x` has `b`.
    !(((y & !HIGH) + !HIGH) | y) & HIGH
}

/// [`equal_bytes`] for an ASCII lower-case letter `b`, either case.
#[inline]
pub(super) fn equal_letters(x: u64, b: u8) -> u64 {
    equal_bytes(x | CASE, b)
}

/// The first word of `t` (its leading ASCII letters): how many letters it has, and the
/// first eight of them lower-cased, packed little-endian into a `u64` (as [`packed`]
/// packs a constant), so that a word is recognised with one comparison.
pub fn lead_word(t: &[u8]) -> (usize, u64) {
    let lower = load(t, 0) | CASE;
    // A letter, once lower-cased, is a byte from 0x61 to 0x7a without the high bit.
    let low7 = lower & !HIGH;
    let from_a = (low7 + ONES * 0x1f) & HIGH;
    let past_z = (low7 + ONES * 0x05) & HIGH;
    let letters = from_a & !past_z & !lower;
    let mut n = (!letters & HIGH).trailing_zeros() as usize / 8;
    if n < 8 {
        return (n, lower & ((1u64 << (8 * n)) - 1));
    }
    while t.get(n).is_some_and(u8::is_ascii_alphabetic) {
        n += 1;
    }
    (n, lower)
}

/// `word` (at most eight lower-case ASCII letters) packed as [`lead_word`] packs.
pub const fn packed(word: &[u8]) -> u64 {
    let mut w = 0u64;
    let mut i = 0;
    while i < word.len() && i < 8 {
        w |= (word[i] as u64) << (8 * i);
        i += 1;
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_bytes_marks_exactly_the_equal_bytes() {
        for b in [0u8, b';', b'(', 0x7f, 0x80, 0xff] {
            let mut bytes = [0u8; 8];
            for (i, v) in bytes.iter_mut().enumerate() {
                *v = if i % 3 == 0 {
                    b
                } else {
                    b.wrapping_add(i as u8)
                };
            }
            let m = equal_bytes(u64::from_le_bytes(bytes), b);
            for (i, v) in bytes.iter().enumerate() {
                assert_eq!(m >> (8 * i) & 0x80 != 0, *v == b, "{b:#x} at {i}");
            }
        }
        assert_eq!(
            equal_letters(load(b"sElEcT tT", 0), b't'),
            0x8000_8000_0000_0000
        );
    }

    #[test]
    fn the_first_word_is_its_letters_lower_cased() {
        assert_eq!(lead_word(b"SeLeCt 1"), (6, packed(b"select")));
        assert_eq!(lead_word(b"x1"), (1, packed(b"x")));
        assert_eq!(lead_word(b"1"), (0, 0));
        assert_eq!(lead_word(b""), (0, 0));
        assert_eq!(lead_word(b"set"), (3, packed(b"set")));
        assert_eq!(lead_word(b"unlisten"), (8, packed(b"unlisten")));
        assert_eq!(lead_word(b"DEALLOCATE all"), (10, packed(b"dealloca")));
        // Neither the bytes around the letters nor non-ASCII bytes are letters.
        for b in [b'@', b'[', b'`', b'{', b'_', 0xc1, 0xe1, 0xfa] {
            assert_eq!(lead_word(&[b'a', b]).0, 1, "{b:#x}");
        }
    }
}
