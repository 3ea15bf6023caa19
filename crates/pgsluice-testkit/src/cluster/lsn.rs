//! WAL positions ([`Lsn`]) as PostgreSQL prints them (`16/B374D848`), so
//! replication helpers and tests can compare them as numbers.

use std::fmt;
use std::io;
use std::str::FromStr;

/// A WAL position (log sequence number), ordered like PostgreSQL's `pg_lsn`.
/// Parses from and prints as `HI/LO` in hex, e.g. `0/3000148`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl FromStr for Lsn {
    type Err = io::Error;

    fn from_str(s: &str) -> Result<Lsn, io::Error> {
        let bad = || {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("not an LSN (HI/LO in hex): {s:?}"),
            )
        };
        let (hi, lo) = s.trim().split_once('/').ok_or_else(bad)?;
        let hi = u32::from_str_radix(hi, 16).map_err(|_| bad())?;
        let lo = u32::from_str_radix(lo, 16).map_err(|_| bad())?;
        Ok(Lsn((u64::from(hi) << 32) | u64::from(lo)))
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xffff_ffff)
    }
}

/// Size of the header starting every WAL page (`SizeOfXLogShortPHD`).
const SHORT_PAGE_HEADER: u64 = 24;
/// Size of the header starting the first page of a WAL segment (`SizeOfXLogLongPHD`).
const LONG_PAGE_HEADER: u64 = 40;

impl Lsn {
    /// The end of the last WAL record, given `pg_current_wal_insert_lsn()`.
    ///
    /// The insert position is where the next record will start: when the
    /// last record ended exactly at a page boundary, that is past the next
    /// page's header. A standby's `pg_last_wal_replay_lsn()` is the end of the
    /// last replayed record, the boundary itself, so comparing it with the raw
    /// insert position would wait for a record that may never come.
    pub(crate) fn record_end_from_insert(self, block_size: u64, segment_size: u64) -> Lsn {
        if segment_size > 0 && self.0 % segment_size == LONG_PAGE_HEADER {
            Lsn(self.0 - LONG_PAGE_HEADER)
        } else if block_size > 0 && self.0 % block_size == SHORT_PAGE_HEADER {
            Lsn(self.0 - SHORT_PAGE_HEADER)
        } else {
            self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prints_and_orders() {
        let a: Lsn = "16/B374D848".parse().unwrap();
        assert_eq!(a.0, 0x16_B374_D848);
        assert_eq!(a.to_string(), "16/B374D848");
        assert_eq!("0/0".parse::<Lsn>().unwrap(), Lsn(0));
        assert!("0/3000148".parse::<Lsn>().unwrap() < "1/0".parse::<Lsn>().unwrap());
        for bad in ["", "0", "x/1", "1/", "1/2/3", "100000000/0"] {
            assert!(bad.parse::<Lsn>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn insert_position_past_a_page_header_maps_to_the_boundary() {
        let (block, segment) = (8192, 16 * 1024 * 1024);
        let mid = Lsn(0x0300_0148);
        assert_eq!(mid.record_end_from_insert(block, segment), mid);
        let page = Lsn(0x0300_2000 + 24);
        assert_eq!(
            page.record_end_from_insert(block, segment),
            Lsn(0x0300_2000)
        );
        let seg = Lsn(0x0400_0000 + 40);
        assert_eq!(seg.record_end_from_insert(block, segment), Lsn(0x0400_0000));
    }
}
