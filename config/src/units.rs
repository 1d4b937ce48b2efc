//! Human-friendly sizes ("64MiB") so byte limits need not be written as long integers.

/// Parses a byte size: a plain integer or an integer with a unit.
///
/// Units follow their standard meaning: `kB`/`MB`/`GB` are powers of 1000, `KiB`/`MiB`/`GiB`
/// powers of 1024; `B` (or no unit) is bytes. Units are case-insensitive and may follow a space.
pub(crate) fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(digits_end);
    let count: u64 = digits.parse().ok()?;
    let multiplier: u64 = match unit.trim_start().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        _ => return None,
    };
    count.checked_mul(multiplier)
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn parses_plain_and_unit_sizes() {
        assert_eq!(parse_size("1024"), Some(1024));
        assert_eq!(parse_size("10B"), Some(10));
        assert_eq!(parse_size("512kB"), Some(512_000));
        assert_eq!(parse_size("512KiB"), Some(512 * 1024));
        assert_eq!(parse_size("64MiB"), Some(64 << 20));
        assert_eq!(parse_size("64 mb"), Some(64_000_000));
        assert_eq!(parse_size("1GiB"), Some(1 << 30));
        assert_eq!(parse_size("2GB"), Some(2_000_000_000));
    }

    #[test]
    fn rejects_garbage_fractions_and_overflow() {
        for bad in [
            "",
            "MiB",
            "lots",
            "1.5GiB",
            "-1",
            "10 TiB",
            "99999999999999999999GiB",
        ] {
            assert_eq!(parse_size(bad), None, "{bad:?}");
        }
        assert_eq!(parse_size("18446744073709551615GiB"), None);
    }
}
