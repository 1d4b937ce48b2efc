//! WAL positions as PostgreSQL prints them (`pg_lsn`, e.g. `16/B374D848`).

/// The byte position `X/Y` stands for (`X` the high 32 bits, `Y` the low, both hex), or None
/// when the text is not a `pg_lsn`.
pub fn parse(text: &str) -> Option<u64> {
    let (hi, lo) = text.split_once('/')?;
    let half = |s: &str| {
        let valid = (1..=8).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit());
        valid.then(|| u32::from_str_radix(s, 16).ok()).flatten()
    };
    Some((u64::from(half(hi)?) << 32) | u64::from(half(lo)?))
}

/// `position` as PostgreSQL prints a `pg_lsn`.
pub fn format(position: u64) -> String {
    format!("{:X}/{:X}", position >> 32, position & 0xFFFF_FFFF)
}

/// The sizes of WAL pages and segments (`wal_block_size`, `wal_segment_size`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub block: u64,
    pub segment: u64,
}

impl Default for Geometry {
    /// PostgreSQL's defaults.
    fn default() -> Geometry {
        Geometry {
            block: 8192,
            segment: 16 << 20,
        }
    }
}

/// A page's header: the short one, and the long one that starts a segment (both
/// MAXALIGNed).
const SHORT_PAGE_HEADER: u64 = 24;
const LONG_PAGE_HEADER: u64 = 40;

/// The end of the last record inserted, from the insert position. At a page boundary the
/// insert position points past the next page's header, where no record ends: a standby's
/// replay position (the end of the last record replayed) would never equal it until more
/// WAL comes.
pub fn record_end(insert: u64, geometry: Geometry) -> u64 {
    if insert % geometry.segment == LONG_PAGE_HEADER {
        insert - LONG_PAGE_HEADER
    } else if insert % geometry.block == SHORT_PAGE_HEADER {
        insert - SHORT_PAGE_HEADER
    } else {
        insert
    }
}

#[cfg(test)]
mod tests {
    use super::{parse, record_end, Geometry};

    #[test]
    fn an_insert_position_past_a_page_header_ends_before_it() {
        let g = Geometry::default();
        for (insert, end) in [
            (0x0300_0148, 0x0300_0148),
            (0x0300_2018, 0x0300_2000),
            (0x0400_0028, 0x0400_0000),
            (0x0300_2000, 0x0300_2000),
        ] {
            assert_eq!(record_end(insert, g), end, "{insert:X}");
        }
    }

    #[test]
    fn parses_what_postgresql_prints() {
        assert_eq!(parse("0/0"), Some(0));
        assert_eq!(parse("0/3000148"), Some(0x0300_0148));
        assert_eq!(parse("16/B374D848"), Some(0x16_B374_D848));
        assert_eq!(parse("ffffffff/FFFFFFFF"), Some(u64::MAX));
        for position in [0, 0x0300_0148, 0x16_B374_D848, u64::MAX] {
            assert_eq!(parse(&super::format(position)), Some(position));
        }
        assert_eq!(super::format(0x16_B374_D848), "16/B374D848");
    }

    #[test]
    fn rejects_anything_else() {
        for text in [
            "",
            "0",
            "/0",
            "0/",
            "0/0/0",
            "1/+1",
            "-1/0",
            "123456789/0",
            "g/0",
            " 0/0",
        ] {
            assert_eq!(parse(text), None, "{text:?}");
        }
    }
}
