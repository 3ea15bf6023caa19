//! The frontend messages of one request, walked for [`super::Classifier::classify_request`].
//!
//! Only headers and the names and texts at the front of Query, Parse and Bind bodies are
//! read; nothing is copied or allocated here.

use std::sync::Arc;

use pgsluice_protocol::frame::{parse_header, Reader};
use pgsluice_protocol::frontend::tag;

use super::txn::{After, Summary};
use super::Class;

/// Any length a message header can state: a request is judged, not bounded, here.
const ANY_LEN: u32 = i32::MAX as u32;

/// One whole message of the request.
struct Message<'a> {
    tag: u8,
    body: &'a [u8],
}

/// The complete messages at the front of `bytes`, then `Err(())` if a message is cut
/// off or its header is malformed.
fn messages(bytes: &[u8]) -> impl Iterator<Item = Result<Message<'_>, ()>> {
    let mut rest = bytes;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let message = match parse_header(rest, ANY_LEN) {
            Ok(Some(h)) if h.total_len() <= rest.len() => {
                let (whole, after) = rest.split_at(h.total_len());
                rest = after;
                Ok(Message {
                    tag: h.tag,
                    body: &whole[pgsluice_protocol::HEADER_LEN..],
                })
            }
            _ => {
                rest = &[];
                Err(())
            }
        };
        Some(message)
    })
}

/// Classifies a request: `summary_of` judges an SQL text (as sent: bytes in the
/// client's encoding), `statement_text` finds the text of a statement prepared earlier.
pub(super) fn classify(
    request: &[u8],
    summary_of: impl Fn(&[u8]) -> Summary,
    statement_text: &dyn Fn(&[u8]) -> Option<Arc<str>>,
) -> Class {
    let mut state = Some(After::START);
    let mut judged = false;
    let mut before = 0;
    // The usual pipeline binds what it just parsed: no need to look further back.
    let mut last_parsed: Option<&[u8]> = None;
    for message in messages(request) {
        let Ok(m) = message else {
            return Class::Write;
        };
        let prefix = &request[..before];
        before += pgsluice_protocol::HEADER_LEN + m.body.len();
        let mut body = Reader::new(m.body);
        let summary = match m.tag {
            tag::QUERY => match body.cstr_bytes() {
                Ok(sql) => summary_of(sql),
                Err(_) => return Class::Write,
            },
            tag::PARSE => match (body.cstr_bytes(), body.cstr_bytes()) {
                (Ok(name), Ok(sql)) => {
                    last_parsed = Some(name);
                    summary_of(sql)
                }
                _ => return Class::Write,
            },
            tag::BIND => {
                let (Ok(_portal), Ok(name)) = (body.cstr_bytes(), body.cstr_bytes()) else {
                    return Class::Write;
                };
                if last_parsed == Some(name) || parsed_in(prefix, name) {
                    // Judged at its Parse.
                    continue;
                }
                match statement_text(name) {
                    Some(sql) => summary_of(sql.as_bytes()),
                    None => return Class::Write,
                }
            }
            tag::DESCRIBE | tag::EXECUTE | tag::SYNC | tag::FLUSH | tag::CLOSE => continue,
            // FunctionCall, CopyData / CopyDone / CopyFail, Terminate, anything else.
            _ => return Class::Write,
        };
        judged = true;
        state = summary.apply(state);
        if state.is_none() {
            return Class::Write;
        }
    }
    if judged {
        After::class(state)
    } else {
        Class::Write
    }
}

/// True when `prefix` (whole messages) holds a Parse of the statement `name`.
fn parsed_in(prefix: &[u8], name: &[u8]) -> bool {
    messages(prefix).any(|m| {
        m.is_ok_and(|m| m.tag == tag::PARSE && Reader::new(m.body).cstr_bytes() == Ok(name))
    })
}
