//! Result formats of a merged SELECT run through the extended protocol: the shards
//! are asked for text (the merge compares and adds text values), and the merged
//! result is turned into the formats the client's Bind asked for: RowDescription's
//! format codes rewritten, DataRow values of binary columns converted from their text
//! form. Only types whose binary form is simple are converted (integers, floats,
//! bool, text-like types, bytea, uuid); others are refused rather than sent wrong.

use bytes::{BufMut, BytesMut};
use pgsluice_protocol::backend::tag as btag;
use pgsluice_protocol::frame::{split_message, Reader};

/// The format the client asked for column `i` (Bind result format codes).
fn format_of(formats: &[i16], i: usize) -> i16 {
    match formats.len() {
        0 => 0,
        1 => formats[0],
        _ => formats.get(i).copied().unwrap_or(0),
    }
}

/// Rewrites `merged` (whole backend messages with text columns) for the client's
/// result `formats`; drops the RowDescription when `describe` is false (the client
/// did not ask for it). Err: a column type whose binary form pgsluice cannot make.
pub(super) fn client_formats(
    merged: &[u8],
    formats: &[i16],
    describe: bool,
) -> Result<BytesMut, String> {
    let mut input = BytesMut::from(merged);
    let mut out = BytesMut::with_capacity(merged.len());
    let mut types: Vec<u32> = Vec::new();
    let bad = |e: pgsluice_protocol::ProtocolError| e.to_string();
    while let Some(m) = split_message(&mut input, u32::MAX >> 1).map_err(bad)? {
        match m.tag {
            btag::ROW_DESCRIPTION => {
                let mut r = Reader::new(&m.body);
                let n = r.i16().map_err(bad)?;
                let mut body = BytesMut::with_capacity(m.body.len());
                body.put_i16(n);
                types.clear();
                for i in 0..n.max(0) as usize {
                    let name = r.cstr_bytes().map_err(bad)?;
                    body.put_slice(name);
                    body.put_u8(0);
                    body.put_slice(r.bytes(6).map_err(bad)?);
                    let ty = r.i32().map_err(bad)? as u32;
                    types.push(ty);
                    body.put_u32(ty);
                    body.put_slice(r.bytes(6).map_err(bad)?);
                    let _ = r.i16().map_err(bad)?;
                    let f = format_of(formats, i);
                    if f == 1 && !convertible(ty) {
                        return Err(format!(
                            "binary result format for type oid {ty} in a SELECT over several shards"
                        ));
                    }
                    body.put_i16(f);
                }
                if describe {
                    put(&mut out, m.tag, &body);
                }
            }
            btag::DATA_ROW => {
                let mut r = Reader::new(&m.body);
                let n = r.i16().map_err(bad)?;
                let mut body = BytesMut::with_capacity(m.body.len());
                body.put_i16(n);
                for i in 0..n.max(0) as usize {
                    let len = r.i32().map_err(bad)?;
                    if len < 0 {
                        body.put_i32(-1);
                        continue;
                    }
                    let v = r.bytes(len as usize).map_err(bad)?;
                    if format_of(formats, i) == 1 {
                        let ty = types.get(i).copied().unwrap_or(0);
                        let bin = to_binary(ty, v)?;
                        body.put_i32(bin.len() as i32);
                        body.put_slice(&bin);
                    } else {
                        body.put_i32(len);
                        body.put_slice(v);
                    }
                }
                put(&mut out, m.tag, &body);
            }
            _ => put(&mut out, m.tag, &m.body),
        }
    }
    Ok(out)
}

fn put(out: &mut BytesMut, tag: u8, body: &[u8]) {
    out.put_u8(tag);
    out.put_u32(body.len() as u32 + 4);
    out.put_slice(body);
}

/// Whether [`to_binary`] handles type `oid`.
fn convertible(oid: u32) -> bool {
    matches!(
        oid,
        16 | 17 | 18 | 19 | 20 | 21 | 23 | 25 | 26 | 700 | 701 | 1042 | 1043 | 2950
    )
}

/// The binary form of a text value of type `oid`.
fn to_binary(oid: u32, text: &[u8]) -> Result<Vec<u8>, String> {
    let s = std::str::from_utf8(text).map_err(|e| e.to_string())?;
    let wrong = || format!("cannot convert \"{s}\" (type oid {oid}) to binary");
    Ok(match oid {
        16 => vec![u8::from(s == "t")],
        20 => s
            .parse::<i64>()
            .map_err(|_| wrong())?
            .to_be_bytes()
            .to_vec(),
        21 => s
            .parse::<i16>()
            .map_err(|_| wrong())?
            .to_be_bytes()
            .to_vec(),
        23 => s
            .parse::<i32>()
            .map_err(|_| wrong())?
            .to_be_bytes()
            .to_vec(),
        26 => s
            .parse::<u32>()
            .map_err(|_| wrong())?
            .to_be_bytes()
            .to_vec(),
        700 => parse_float(s).map_err(|_| wrong())?.to_bits().to_be_bytes()[4..].to_vec(),
        701 => parse_float(s)
            .map_err(|_| wrong())?
            .to_bits()
            .to_be_bytes()
            .to_vec(),
        17 => {
            let hex = s.strip_prefix("\\x").ok_or_else(wrong)?;
            (0..hex.len() / 2)
                .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| wrong()))
                .collect::<Result<_, _>>()?
        }
        2950 => {
            let hex: String = s.chars().filter(|c| *c != '-').collect();
            if hex.len() != 32 {
                return Err(wrong());
            }
            (0..16)
                .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| wrong()))
                .collect::<Result<_, _>>()?
        }
        18 | 19 | 25 | 1042 | 1043 => text.to_vec(),
        _ => return Err(wrong()),
    })
}

fn parse_float(s: &str) -> Result<f64, std::num::ParseFloatError> {
    match s {
        "NaN" => Ok(f64::NAN),
        "Infinity" => Ok(f64::INFINITY),
        "-Infinity" => Ok(f64::NEG_INFINITY),
        _ => s.parse(),
    }
}

/// The result format codes at the end of a Bind body (after the names).
pub(super) fn bind_result_formats(rest: &[u8]) -> Option<(usize, Vec<i16>)> {
    let mut r = Reader::new(rest);
    let nf = r.i16().ok()?;
    for _ in 0..nf {
        r.i16().ok()?;
    }
    let np = r.i16().ok()?;
    for _ in 0..np {
        let len = r.i32().ok()?;
        if len > 0 {
            r.bytes(len as usize).ok()?;
        }
    }
    let at = rest.len() - r.remaining().len();
    let n = r.i16().ok()?;
    let mut formats = Vec::with_capacity(n.max(0) as usize);
    for _ in 0..n {
        formats.push(r.i16().ok()?);
    }
    Some((at, formats))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgsluice_protocol::backend;

    #[test]
    fn text_results_become_the_binary_the_client_asked_for() {
        let mut merged = BytesMut::new();
        backend::row_description(&mut merged, &[("n", 20), ("note", 25)]);
        backend::data_row(&mut merged, &[Some("900"), Some("x")]);
        backend::data_row(&mut merged, &[None, Some("y")]);
        backend::command_complete(&mut merged, "SELECT 2");
        let out = client_formats(&merged, &[1], false).unwrap();
        let mut out = out;
        let first = split_message(&mut out, 1 << 20).unwrap().unwrap();
        assert_eq!(first.tag, btag::DATA_ROW);
        assert_eq!(
            &first.body[..],
            &[0, 2, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 3, 0x84, 0, 0, 0, 1, b'x']
        );
        let second = split_message(&mut out, 1 << 20).unwrap().unwrap();
        assert_eq!(&second.body[..6], &[0, 2, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(
            split_message(&mut out, 1 << 20).unwrap().unwrap().tag,
            btag::COMMAND_COMPLETE
        );
    }

    #[test]
    fn types_without_a_simple_binary_form_are_refused() {
        let mut merged = BytesMut::new();
        backend::row_description(&mut merged, &[("t", 1184)]);
        assert!(client_formats(&merged, &[1], true).is_err());
        assert!(client_formats(&merged, &[0], true).is_ok());
    }

    #[test]
    fn result_formats_are_found_after_the_parameters() {
        // 1 format (binary), 1 parameter of 2 bytes, 1 result format (binary).
        let rest = [0, 1, 0, 1, 0, 1, 0, 0, 0, 2, 7, 7, 0, 1, 0, 1];
        assert_eq!(bind_result_formats(&rest), Some((12, vec![1])));
    }
}
