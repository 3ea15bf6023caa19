//! Exact decimal numbers in PostgreSQL's `numeric` text form: compared by value and
//! added digit by digit (no floats), for merging `sum()` and `min()`/`max()` of
//! numeric columns over several shards.

use std::cmp::Ordering;

/// A `numeric` value. Finite values keep their digits and scale (digits after the
/// point) so a sum prints with the larger scale of its terms, as PostgreSQL's does.
#[derive(Debug, Clone)]
pub(super) enum Decimal {
    NegInf,
    Finite {
        neg: bool,
        /// All digits, most significant first, no leading zeros (zero: empty).
        digits: Vec<u8>,
        /// How many of `digits` (with implied leading zeros) follow the point.
        scale: usize,
    },
    PosInf,
    NaN,
}

impl Decimal {
    /// Parses `[-]digits[.digits]`, `NaN`, `Infinity`, `-Infinity`.
    pub(super) fn parse(text: &str) -> Option<Decimal> {
        match text {
            "NaN" => return Some(Decimal::NaN),
            "Infinity" => return Some(Decimal::PosInf),
            "-Infinity" => return Some(Decimal::NegInf),
            _ => {}
        }
        let (neg, body) = match text.strip_prefix('-') {
            Some(b) => (true, b),
            None => (false, text.strip_prefix('+').unwrap_or(text)),
        };
        let (int, frac) = body.split_once('.').unwrap_or((body, ""));
        if int.is_empty() && frac.is_empty() {
            return None;
        }
        let all = int.bytes().chain(frac.bytes());
        let mut digits = Vec::with_capacity(int.len() + frac.len());
        for b in all {
            if !b.is_ascii_digit() {
                return None;
            }
            if digits.is_empty() && b == b'0' {
                continue;
            }
            digits.push(b - b'0');
        }
        Some(Decimal::Finite {
            neg: neg && !digits.is_empty(),
            digits,
            scale: frac.len(),
        })
    }

    /// Digits of the magnitude scaled to `scale` fractional digits.
    fn scaled(digits: &[u8], from: usize, to: usize) -> Vec<u8> {
        let mut v = digits.to_vec();
        v.resize(digits.len() + (to - from), 0);
        v
    }

    /// The sum; `NaN` with anything, `Infinity + -Infinity`, are `NaN`.
    pub(super) fn add(&self, other: &Decimal) -> Decimal {
        use Decimal::*;
        match (self, other) {
            (NaN, _) | (_, NaN) | (PosInf, NegInf) | (NegInf, PosInf) => NaN,
            (PosInf, _) | (_, PosInf) => PosInf,
            (NegInf, _) | (_, NegInf) => NegInf,
            (
                Finite {
                    neg: an,
                    digits: ad,
                    scale: as_,
                },
                Finite {
                    neg: bn,
                    digits: bd,
                    scale: bs,
                },
            ) => {
                let scale = (*as_).max(*bs);
                let a = Self::scaled(ad, *as_, scale);
                let b = Self::scaled(bd, *bs, scale);
                let (neg, digits) = if an == bn {
                    (*an, add_mag(&a, &b))
                } else {
                    match cmp_mag(&a, &b) {
                        Ordering::Equal => (false, Vec::new()),
                        Ordering::Greater => (*an, sub_mag(&a, &b)),
                        Ordering::Less => (*bn, sub_mag(&b, &a)),
                    }
                };
                Finite { neg, digits, scale }
            }
        }
    }
}

const NUMERIC_NEG: u16 = 0x4000;
const NUMERIC_NAN: u16 = 0xC000;
const NUMERIC_PINF: u16 = 0xD000;
const NUMERIC_NINF: u16 = 0xF000;

impl Decimal {
    /// Decodes PostgreSQL's binary `numeric` (ndigits, weight, sign, dscale, then
    /// base-10000 digits).
    pub(super) fn from_binary(raw: &[u8]) -> Option<Decimal> {
        let word = |i: usize| {
            raw.get(2 * i..2 * i + 2)
                .map(|b| u16::from_be_bytes([b[0], b[1]]))
        };
        let (ndigits, weight, sign, dscale) = (word(0)?, word(1)? as i16, word(2)?, word(3)?);
        if raw.len() != 8 + 2 * usize::from(ndigits) {
            return None;
        }
        match sign {
            NUMERIC_NAN => return Some(Decimal::NaN),
            NUMERIC_PINF => return Some(Decimal::PosInf),
            NUMERIC_NINF => return Some(Decimal::NegInf),
            0 | NUMERIC_NEG => {}
            _ => return None,
        }
        let group = |i: i32| -> Option<u16> {
            let g = if i < 0 {
                0
            } else {
                word(4 + i as usize)
                    .filter(|_| i < i32::from(ndigits))
                    .unwrap_or(0)
            };
            (g < 10_000).then_some(g)
        };
        let weight = i32::from(weight);
        let mut text = String::new();
        if sign == NUMERIC_NEG {
            text.push('-');
        }
        if weight < 0 {
            text.push('0');
        }
        for p in 0..=weight {
            let g = group(p)?;
            if p == 0 {
                text.push_str(&g.to_string());
            } else {
                text.push_str(&format!("{g:04}"));
            }
        }
        if dscale > 0 {
            let mut frac = String::new();
            let mut j = 0;
            while frac.len() < usize::from(dscale) {
                frac.push_str(&format!("{:04}", group(weight + 1 + j)?));
                j += 1;
            }
            frac.truncate(usize::from(dscale));
            text.push('.');
            text.push_str(&frac);
        }
        Decimal::parse(&text)
    }

    /// Encodes as PostgreSQL's binary `numeric`.
    pub(super) fn to_binary(&self) -> Vec<u8> {
        let special = |sign: u16| {
            [0u16, 0, sign, 0]
                .iter()
                .flat_map(|w| w.to_be_bytes())
                .collect()
        };
        let (neg, digits, scale) = match self {
            Decimal::NaN => return special(NUMERIC_NAN),
            Decimal::PosInf => return special(NUMERIC_PINF),
            Decimal::NegInf => return special(NUMERIC_NINF),
            Decimal::Finite { neg, digits, scale } => (*neg, digits, *scale),
        };
        // Integer and fraction digits, padded to whole base-10000 groups.
        let mut all = vec![0u8; scale.saturating_sub(digits.len())];
        all.extend_from_slice(digits);
        let int_len = all.len() - scale;
        let lead = (4 - int_len % 4) % 4;
        let mut padded = vec![0u8; lead];
        padded.extend_from_slice(&all);
        padded.resize(padded.len() + (4 - scale % 4) % 4, 0);
        let mut groups: Vec<u16> = padded
            .chunks(4)
            .map(|c| c.iter().fold(0u16, |a, d| a * 10 + u16::from(*d)))
            .collect();
        let mut weight = ((int_len + lead) / 4) as i32 - 1;
        while groups.first() == Some(&0) {
            groups.remove(0);
            weight -= 1;
        }
        while groups.last() == Some(&0) {
            groups.pop();
        }
        if groups.is_empty() {
            weight = 0;
        }
        let mut out = Vec::with_capacity(8 + 2 * groups.len());
        out.extend_from_slice(&(groups.len() as u16).to_be_bytes());
        out.extend_from_slice(&(weight as i16).to_be_bytes());
        out.extend_from_slice(&(if neg { NUMERIC_NEG } else { 0 }).to_be_bytes());
        out.extend_from_slice(&(scale as u16).to_be_bytes());
        for g in groups {
            out.extend_from_slice(&g.to_be_bytes());
        }
        out
    }
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|d| *d != 0).unwrap_or(v.len());
    &v[start..]
}

fn cmp_mag(a: &[u8], b: &[u8]) -> Ordering {
    let (a, b) = (trim(a), trim(b));
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

fn add_mag(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(a.len().max(b.len()) + 1);
    let (mut i, mut j, mut carry) = (a.len(), b.len(), 0);
    while i > 0 || j > 0 || carry > 0 {
        let mut s = carry;
        if i > 0 {
            i -= 1;
            s += a[i];
        }
        if j > 0 {
            j -= 1;
            s += b[j];
        }
        out.push(s % 10);
        carry = s / 10;
    }
    out.reverse();
    trim(&out).to_vec()
}

/// `a - b` for `a >= b`.
fn sub_mag(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(a.len());
    let (mut j, mut borrow) = (b.len(), 0i8);
    for i in (0..a.len()).rev() {
        let mut d = a[i] as i8 - borrow;
        if j > 0 {
            j -= 1;
            d -= b[j] as i8;
        }
        borrow = i8::from(d < 0);
        out.push((d + 10 * borrow) as u8);
    }
    out.reverse();
    trim(&out).to_vec()
}

impl std::fmt::Display for Decimal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Decimal::NaN => f.write_str("NaN"),
            Decimal::PosInf => f.write_str("Infinity"),
            Decimal::NegInf => f.write_str("-Infinity"),
            Decimal::Finite { neg, digits, scale } => {
                let mut s: Vec<u8> = digits.iter().map(|d| d + b'0').collect();
                if s.len() <= *scale {
                    let mut padded = vec![b'0'; scale + 1 - s.len()];
                    padded.extend_from_slice(&s);
                    s = padded;
                }
                let point = s.len() - scale;
                if *neg {
                    f.write_str("-")?;
                }
                f.write_str(std::str::from_utf8(&s[..point]).unwrap_or("?"))?;
                if *scale > 0 {
                    f.write_str(".")?;
                    f.write_str(std::str::from_utf8(&s[point..]).unwrap_or("?"))?;
                }
                Ok(())
            }
        }
    }
}

impl Decimal {
    fn rank(&self) -> u8 {
        match self {
            Decimal::NegInf => 0,
            Decimal::Finite { .. } => 1,
            Decimal::PosInf => 2,
            Decimal::NaN => 3,
        }
    }
}

impl PartialEq for Decimal {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Decimal {}
impl PartialOrd for Decimal {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// By value, as PostgreSQL orders numeric: `1.0 = 1.00`, NaN greatest.
impl Ord for Decimal {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (
                Decimal::Finite {
                    neg: an,
                    digits: ad,
                    scale: as_,
                },
                Decimal::Finite {
                    neg: bn,
                    digits: bd,
                    scale: bs,
                },
            ) => {
                if an != bn {
                    return if *an {
                        Ordering::Less
                    } else {
                        Ordering::Greater
                    };
                }
                let scale = (*as_).max(*bs);
                let mag = cmp_mag(
                    &Self::scaled(ad, *as_, scale),
                    &Self::scaled(bd, *bs, scale),
                );
                if *an {
                    mag.reverse()
                } else {
                    mag
                }
            }
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        Decimal::parse(s).unwrap()
    }

    #[test]
    fn adds_exactly_with_the_larger_scale() {
        for (a, b, sum) in [
            ("1.5", "2.25", "3.75"),
            ("0.1", "0.2", "0.3"),
            ("99999999999999999999", "1", "100000000000000000000"),
            ("-5", "3.000", "-2.000"),
            ("5", "-5.0", "0.0"),
            ("-0.001", "-0.009", "-0.010"),
            ("0", "0.00", "0.00"),
            ("12.5", "-100", "-87.5"),
            ("NaN", "1", "NaN"),
            ("Infinity", "1", "Infinity"),
            ("Infinity", "-Infinity", "NaN"),
        ] {
            assert_eq!(d(a).add(&d(b)).to_string(), sum, "{a} + {b}");
            assert_eq!(d(b).add(&d(a)).to_string(), sum, "{b} + {a}");
        }
    }

    #[test]
    fn orders_by_value() {
        let mut v: Vec<Decimal> = [
            "NaN",
            "10",
            "-Infinity",
            "-2.5",
            "9.99",
            "0",
            "Infinity",
            "-10",
        ]
        .iter()
        .map(|s| d(s))
        .collect();
        v.sort();
        let got: Vec<String> = v.iter().map(ToString::to_string).collect();
        assert_eq!(
            got,
            [
                "-Infinity",
                "-10",
                "-2.5",
                "0",
                "9.99",
                "10",
                "Infinity",
                "NaN"
            ]
        );
        assert_eq!(d("1.0"), d("1.000"));
        assert_eq!(d("-0.0"), d("0"));
        assert!(Decimal::parse("1e5").is_none());
    }

    #[test]
    fn binary_round_trips() {
        // PostgreSQL's own bytes for 12345.678 and -0.0012: (ndigits, weight, sign, dscale, digits).
        let pg = |w: &[u16]| w.iter().flat_map(|x| x.to_be_bytes()).collect::<Vec<u8>>();
        assert_eq!(d("12345.678").to_binary(), pg(&[3, 1, 0, 3, 1, 2345, 6780]));
        assert_eq!(d("-0.0012").to_binary(), pg(&[1, 65535, 0x4000, 4, 12]));
        assert_eq!(d("0.00").to_binary(), pg(&[0, 0, 0, 2]));
        assert_eq!(d("10000").to_binary(), pg(&[1, 1, 0, 0, 1]));
        for s in [
            "0",
            "1",
            "-1",
            "12345.678",
            "-0.0012",
            "100000000.00000001",
            "0.00",
            "9999.9999",
            "123456789012345678901234567890.5",
            "NaN",
            "Infinity",
            "-Infinity",
            "0.1",
            "1000",
        ] {
            let back = Decimal::from_binary(&d(s).to_binary()).unwrap();
            assert_eq!(back.to_string(), s, "{s}");
        }
        assert!(Decimal::from_binary(&[0, 1]).is_none());
    }
}
