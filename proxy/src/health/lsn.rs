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

#[cfg(test)]
mod tests {
    use super::parse;

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
