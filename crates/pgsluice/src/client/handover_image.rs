//! What crosses to the new process with a client: its [`ClientImage`] (and the wire
//! format of it) and the [`Departing`] pair the upgrade channel carries.
//!
//! Plain data and a sans-IO codec: nothing here knows sessions, sockets or the
//! runtime. The format is a header (magic, version) and then tagged records (tag, u32
//! length, value); a reader skips the tags it does not know, and every length is
//! checked against the bytes left before anything is allocated, so no input makes
//! decoding panic or allocate more than the input's size.

use std::os::fd::OwnedFd;

use pgsluice_protocol::auth::scram::ScramSecret;

use crate::server::PassThrough;

/// The format's first bytes.
const MAGIC: &[u8; 4] = b"PSCI";
/// The version written; a reader takes this one and older ones.
pub const IMAGE_VERSION: u16 = 1;
/// The largest image a reader takes (the upgrade channel may bound frames by it).
pub const MAX_IMAGE_LEN: usize = 64 << 20;

/// Record tags (never reused: a newer writer adds tags, an older reader skips them).
mod tag {
    /// The last record (empty): an image cut at a record boundary is not taken whole.
    pub(super) const END: u8 = 0;
    pub(super) const DATABASE: u8 = 1;
    pub(super) const USER: u8 = 2;
    pub(super) const APPLICATION_NAME: u8 = 3;
    pub(super) const CANCEL_KEY: u8 = 4;
    pub(super) const PARAM: u8 = 5;
    pub(super) const EXTRA: u8 = 6;
    pub(super) const STATEMENT: u8 = 7;
    pub(super) const SQL_STATEMENT: u8 = 8;
    pub(super) const PENDING: u8 = 9;
    pub(super) const TRAFFIC: u8 = 10;
    pub(super) const SETTING_UP: u8 = 11;
    pub(super) const CONNECT_TIME: u8 = 12;
    pub(super) const PASSTHROUGH_SCRAM: u8 = 13;
    pub(super) const PASSTHROUGH_MD5: u8 = 14;
}

/// A logged-in pool client's state as it crosses to another process: everything its
/// session needs to go on (database and user, parameters, cancel key, prepared
/// statements, bytes already read, counters). Encoded by the old process, decoded by
/// the new one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientImage {
    /// The database the client logged into (its route is resolved again from it).
    pub database: String,
    /// The user it logged in as.
    pub user: String,
    /// `application_name` of its startup packet, as the admin views show it ("" when
    /// none).
    pub application_name: String,
    /// Its cancel key (pid, secret), registered again as is: a CancelRequest with it
    /// reaches the new process.
    pub cancel_key: (i32, i32),
    /// Its tracked parameters (startup ones and what it SET since), name and value.
    pub params: Vec<(String, String)>,
    /// Its extra parameters (`track_extra_parameters`).
    pub extras: Vec<ExtraParam>,
    /// Its protocol-level named statements (Parse), prepared again where needed.
    pub statements: Vec<PreparedImage>,
    /// Its SQL-level statements (`PREPARE`), prepared again where needed.
    pub sql_statements: Vec<SqlPreparedImage>,
    /// Bytes it sent that were read but not served yet.
    pub pending: Vec<u8>,
    /// What its session moved so far (for its logout line).
    pub traffic: TrafficImage,
    /// Every request so far was a parameter request (nothing reached a server).
    pub setting_up: bool,
    /// Its login time, µs since the epoch (SHOW CLIENTS' connect_time).
    pub connect_time_us: u64,
    /// The credential its pool's server connections log in with when the stored
    /// secret is not a password (an md5 hash or SCRAM verifier: PgBouncer's pass-
    /// through): the new process's pool has none until a client logs in there.
    pub passthrough: Option<PassThrough>,
}

/// An extra (unreported) parameter of the client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExtraParam {
    /// Lower-case name.
    pub name: String,
    /// Its value as SQL text (or as read back, when `learned`).
    pub value: Option<String>,
    /// Read back from the server (replayed with `set_config()`).
    pub learned: bool,
}

/// A protocol-level named statement.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PreparedImage {
    /// The client's name for it.
    pub name: String,
    /// Its text, in the client's encoding.
    pub query: Vec<u8>,
    /// Its parameter type OIDs.
    pub types: Vec<u32>,
}

/// A SQL-level statement (`PREPARE name ...`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SqlPreparedImage {
    /// The client's name for it.
    pub name: String,
    /// The text after the name (parameter types and `AS` query).
    pub definition: Vec<u8>,
}

/// A session's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrafficImage {
    /// Bytes from the client.
    pub bytes_in: u64,
    /// Bytes to the client.
    pub bytes_out: u64,
    /// Server connection checkouts.
    pub transactions: u64,
}

/// Why an image could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The bytes end before the image does, or hold something else.
    #[error("malformed client image: {0}")]
    Malformed(&'static str),
    /// Written by a newer pgsluice than this one.
    #[error("client image version {found} is newer than this pgsluice reads ({supported})")]
    Version {
        /// The image's version.
        found: u16,
        /// The newest this build reads.
        supported: u16,
    },
}

/// A client leaving the old process: its socket and its state.
#[derive(Debug)]
pub struct Departing {
    /// The client's socket (TCP or Unix), non-blocking.
    pub fd: OwnedFd,
    /// Everything else.
    pub image: ClientImage,
}

/// Where departing clients go (the upgrade channel's sender side drains it).
pub type HandoverSink = tokio::sync::mpsc::UnboundedSender<Departing>;

impl ClientImage {
    /// The image as bytes (the upgrade channel frames them).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer(Vec::with_capacity(256 + self.pending.len()));
        w.0.extend_from_slice(MAGIC);
        w.0.extend_from_slice(&IMAGE_VERSION.to_be_bytes());
        w.record(tag::DATABASE, |r| r.bytes(self.database.as_bytes()));
        w.record(tag::USER, |r| r.bytes(self.user.as_bytes()));
        w.record(tag::APPLICATION_NAME, |r| {
            r.bytes(self.application_name.as_bytes())
        });
        w.record(tag::CANCEL_KEY, |r| {
            r.0.extend_from_slice(&self.cancel_key.0.to_be_bytes());
            r.0.extend_from_slice(&self.cancel_key.1.to_be_bytes());
        });
        for (name, value) in &self.params {
            w.record(tag::PARAM, |r| {
                r.bytes(name.as_bytes());
                r.bytes(value.as_bytes());
            });
        }
        for e in &self.extras {
            w.record(tag::EXTRA, |r| {
                r.bytes(e.name.as_bytes());
                r.0.push(u8::from(e.learned));
                if let Some(v) = &e.value {
                    r.bytes(v.as_bytes());
                }
            });
        }
        for s in &self.statements {
            w.record(tag::STATEMENT, |r| {
                r.bytes(s.name.as_bytes());
                r.bytes(&s.query);
                r.u32(len32(s.types.len()));
                for t in &s.types {
                    r.u32(*t);
                }
            });
        }
        for s in &self.sql_statements {
            w.record(tag::SQL_STATEMENT, |r| {
                r.bytes(s.name.as_bytes());
                r.bytes(&s.definition);
            });
        }
        if !self.pending.is_empty() {
            w.record(tag::PENDING, |r| r.0.extend_from_slice(&self.pending));
        }
        w.record(tag::TRAFFIC, |r| {
            let t = &self.traffic;
            for v in [t.bytes_in, t.bytes_out, t.transactions] {
                r.0.extend_from_slice(&v.to_be_bytes());
            }
        });
        w.record(tag::SETTING_UP, |r| r.0.push(u8::from(self.setting_up)));
        w.record(tag::CONNECT_TIME, |r| {
            r.0.extend_from_slice(&self.connect_time_us.to_be_bytes());
        });
        match &self.passthrough {
            Some(PassThrough::Scram { client_key, secret }) => {
                w.record(tag::PASSTHROUGH_SCRAM, |r| {
                    r.0.extend_from_slice(client_key);
                    r.u32(secret.iterations);
                    r.bytes(&secret.salt);
                    r.0.extend_from_slice(&secret.stored_key);
                    r.0.extend_from_slice(&secret.server_key);
                });
            }
            Some(PassThrough::Md5(hash)) => {
                w.record(tag::PASSTHROUGH_MD5, |r| r.bytes(hash.as_bytes()));
            }
            None => {}
        }
        w.record(tag::END, |_| {});
        w.0
    }

    /// The image from bytes made by [`ClientImage::encode`] (of this or an older
    /// version of pgsluice).
    pub fn decode(bytes: &[u8]) -> Result<ClientImage, ImageError> {
        if bytes.len() > MAX_IMAGE_LEN {
            return Err(ImageError::Malformed("image too large"));
        }
        let mut r = Reader(bytes);
        if r.take(MAGIC.len())? != MAGIC {
            return Err(ImageError::Malformed("not a client image"));
        }
        let version = u16::from_be_bytes(r.array()?);
        if version == 0 {
            return Err(ImageError::Malformed("version 0"));
        }
        if version > IMAGE_VERSION {
            return Err(ImageError::Version {
                found: version,
                supported: IMAGE_VERSION,
            });
        }
        let mut image = ClientImage::default();
        let (mut database, mut user, mut key) = (false, false, false);
        loop {
            let t = r.array::<1>()?[0];
            let len = r.u32()? as usize;
            let mut v = Reader(r.take(len)?);
            match t {
                tag::END if r.0.is_empty() && v.0.is_empty() => break,
                tag::END => return Err(ImageError::Malformed("bytes after the end")),
                tag::DATABASE => {
                    image.database = v.string()?;
                    database = true;
                }
                tag::USER => {
                    image.user = v.string()?;
                    user = true;
                }
                tag::APPLICATION_NAME => image.application_name = v.string()?,
                tag::CANCEL_KEY => {
                    let pid = i32::from_be_bytes(v.array()?);
                    let secret = i32::from_be_bytes(v.array()?);
                    image.cancel_key = (pid, secret);
                    key = true;
                }
                tag::PARAM => image.params.push((v.string()?, v.string()?)),
                tag::EXTRA => {
                    let name = v.string()?;
                    let learned = v.flag()?;
                    let value = (!v.0.is_empty()).then(|| v.string()).transpose()?;
                    image.extras.push(ExtraParam {
                        name,
                        value,
                        learned,
                    });
                }
                tag::STATEMENT => {
                    let name = v.string()?;
                    let query = v.bytes()?.to_vec();
                    let n = v.u32()? as usize;
                    // Four bytes each, checked before allocating.
                    if v.0.len() != n.saturating_mul(4) {
                        return Err(ImageError::Malformed("statement parameter types"));
                    }
                    let types = v.take(v.0.len())?.chunks_exact(4);
                    let types = types
                        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                        .collect();
                    image.statements.push(PreparedImage { name, query, types });
                }
                tag::SQL_STATEMENT => {
                    let name = v.string()?;
                    let definition = v.bytes()?.to_vec();
                    image
                        .sql_statements
                        .push(SqlPreparedImage { name, definition });
                }
                tag::PENDING => image.pending = v.take(v.0.len())?.to_vec(),
                tag::TRAFFIC => {
                    image.traffic = TrafficImage {
                        bytes_in: v.u64()?,
                        bytes_out: v.u64()?,
                        transactions: v.u64()?,
                    };
                }
                tag::SETTING_UP => image.setting_up = v.flag()?,
                tag::CONNECT_TIME => image.connect_time_us = v.u64()?,
                tag::PASSTHROUGH_SCRAM => {
                    let client_key = v.array()?;
                    let iterations = v.u32()?;
                    let salt = v.bytes()?.to_vec();
                    image.passthrough = Some(PassThrough::Scram {
                        client_key,
                        secret: ScramSecret {
                            iterations,
                            salt,
                            stored_key: v.array()?,
                            server_key: v.array()?,
                        },
                    });
                }
                tag::PASSTHROUGH_MD5 => image.passthrough = Some(PassThrough::Md5(v.string()?)),
                // A newer writer's record: skipped whole.
                _ => continue,
            }
            if !v.0.is_empty() {
                return Err(ImageError::Malformed("bytes left in a record"));
            }
        }
        match (database, user, key) {
            (true, true, true) => Ok(image),
            _ => Err(ImageError::Malformed(
                "database, user or cancel key missing",
            )),
        }
    }
}

/// A length as the format writes it (every length the writer sees is far below 4 GiB:
/// client messages are bounded well below it).
fn len32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

struct Writer(Vec<u8>);

impl Writer {
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }

    fn bytes(&mut self, b: &[u8]) {
        self.u32(len32(b.len()));
        self.0.extend_from_slice(b);
    }

    /// A record: its tag, its length (filled in after `f` wrote the value) and value.
    fn record(&mut self, tag: u8, f: impl FnOnce(&mut Writer)) {
        self.0.push(tag);
        let at = self.0.len();
        self.0.extend_from_slice(&[0; 4]);
        f(self);
        let len = len32(self.0.len() - at - 4);
        self.0[at..at + 4].copy_from_slice(&len.to_be_bytes());
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ImageError> {
        if n > self.0.len() {
            return Err(ImageError::Malformed("truncated"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], ImageError> {
        let b = self.take(N)?;
        let mut a = [0; N];
        a.copy_from_slice(b);
        Ok(a)
    }

    fn u32(&mut self) -> Result<u32, ImageError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, ImageError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    fn flag(&mut self) -> Result<bool, ImageError> {
        match self.array::<1>()?[0] {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(ImageError::Malformed("flag neither 0 nor 1")),
        }
    }

    fn bytes(&mut self) -> Result<&'a [u8], ImageError> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    fn string(&mut self) -> Result<String, ImageError> {
        let b = self.bytes()?;
        std::str::from_utf8(b)
            .map(str::to_owned)
            .map_err(|_| ImageError::Malformed("text not UTF-8"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> ClientImage {
        ClientImage {
            database: "appdb".into(),
            user: "app".into(),
            application_name: "psql".into(),
            cancel_key: (42, -7),
            params: vec![
                ("search_path".into(), "app, public".into()),
                ("TimeZone".into(), "UTC".into()),
            ],
            extras: vec![
                ExtraParam {
                    name: "statement_timeout".into(),
                    value: Some("'5s'".into()),
                    learned: false,
                },
                ExtraParam {
                    name: "app.unset".into(),
                    value: None,
                    learned: true,
                },
            ],
            statements: vec![PreparedImage {
                name: "s1".into(),
                query: b"select $1::int".to_vec(),
                types: vec![23, 0],
            }],
            sql_statements: vec![SqlPreparedImage {
                name: "p".into(),
                definition: b" AS SELECT 1".to_vec(),
            }],
            pending: b"Q\0\0\0\x0dselect 1\0".to_vec(),
            traffic: TrafficImage {
                bytes_in: 1,
                bytes_out: u64::MAX,
                transactions: 3,
            },
            setting_up: true,
            connect_time_us: 1_765_000_000_000_000,
            passthrough: Some(PassThrough::Scram {
                client_key: [7; 32],
                secret: ScramSecret {
                    iterations: 4096,
                    salt: b"salt".to_vec(),
                    stored_key: [1; 32],
                    server_key: [2; 32],
                },
            }),
        }
    }

    #[test]
    fn an_image_comes_back_as_it_went() {
        let image = sample();
        assert_eq!(ClientImage::decode(&image.encode()).unwrap(), image);
        let bare = ClientImage {
            database: "d".into(),
            user: "u".into(),
            ..ClientImage::default()
        };
        assert_eq!(ClientImage::decode(&bare.encode()).unwrap(), bare);
        let md5 = ClientImage {
            passthrough: Some(PassThrough::Md5("md5abc".into())),
            ..bare
        };
        assert_eq!(ClientImage::decode(&md5.encode()).unwrap(), md5);
    }

    #[test]
    fn every_truncation_is_an_error() {
        let bytes = sample().encode();
        for n in 0..bytes.len() {
            assert!(
                ClientImage::decode(&bytes[..n]).is_err(),
                "{n} bytes decoded"
            );
        }
    }

    #[test]
    fn unknown_records_are_skipped_and_newer_versions_refused() {
        let mut bytes = sample().encode();
        let end = bytes.split_off(bytes.len() - 5);
        bytes.extend_from_slice(&[200, 0, 0, 0, 2, 9, 9]);
        bytes.extend_from_slice(&end);
        assert_eq!(ClientImage::decode(&bytes).unwrap(), sample());
        bytes[4..6].copy_from_slice(&(IMAGE_VERSION + 1).to_be_bytes());
        assert!(matches!(
            ClientImage::decode(&bytes),
            Err(ImageError::Version { .. })
        ));
        assert!(ClientImage::decode(b"garbage!").is_err());
    }

    #[test]
    fn a_record_must_be_read_whole() {
        // A SETTING_UP record two bytes long.
        let mut bytes = ClientImage {
            database: "d".into(),
            user: "u".into(),
            ..ClientImage::default()
        }
        .encode();
        let end = bytes.split_off(bytes.len() - 5);
        bytes.extend_from_slice(&[tag::SETTING_UP, 0, 0, 0, 2, 1, 1]);
        bytes.extend_from_slice(&end);
        assert!(matches!(
            ClientImage::decode(&bytes),
            Err(ImageError::Malformed(_))
        ));
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = ClientImage::decode(&bytes);
            let mut framed = MAGIC.to_vec();
            framed.extend_from_slice(&IMAGE_VERSION.to_be_bytes());
            framed.extend_from_slice(&bytes);
            let _ = ClientImage::decode(&framed);
        }

        #[test]
        fn flipped_bytes_never_panic(at in 0usize..4096, with in any::<u8>()) {
            let mut bytes = sample().encode();
            let i = at % bytes.len();
            bytes[i] = with;
            let _ = ClientImage::decode(&bytes);
        }
    }
}
