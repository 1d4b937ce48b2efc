//! `SET pgrepl.route = 'primary' | 'replica' | 'auto'`: a session-wide hint for where reads
//! go, answered by the proxy itself (no backend has such a setting). Checked on every simple
//! query, so it looks at the first bytes only.

/// Where a session's reads go, as the hint says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ReadPreference {
    /// The routing rules decide (replica when safe).
    #[default]
    Auto,
    /// Every read to the primary.
    Primary,
    /// Reads to a replica even while it lags (never while it is down).
    Replica,
}

use super::words::{may_start_with, Words};

/// The setting's name, lower-case.
const NAME: &[u8] = b"pgrepl.route";

/// The hint a statement sets, if it is `SET [SESSION] pgrepl.route {=|TO} value` or
/// `RESET pgrepl.route`; `Err` with a message for a value that is not one of the three.
#[inline(always)]
pub fn route_setting(sql: &[u8]) -> Option<Result<ReadPreference, String>> {
    if !may_start_with(sql, &[b"SET", b"RESET"]) {
        return None;
    }
    parse_route_setting(sql)
}

#[inline(never)]
fn parse_route_setting(sql: &[u8]) -> Option<Result<ReadPreference, String>> {
    let mut words = Words(sql);
    let first = words.next()?;
    if first.eq_ignore_ascii_case(b"RESET") {
        let name = words.next()?;
        return (name.eq_ignore_ascii_case(NAME) && words.rest_is_empty())
            .then_some(Ok(ReadPreference::Auto));
    }
    if !first.eq_ignore_ascii_case(b"SET") {
        return None;
    }
    let mut name = words.next()?;
    if name.eq_ignore_ascii_case(b"SESSION") {
        name = words.next()?;
    }
    if !name.eq_ignore_ascii_case(NAME) {
        return None;
    }
    let op = words.next()?;
    if op != b"=" && !op.eq_ignore_ascii_case(b"TO") {
        return None;
    }
    let value = words.next()?;
    if !words.rest_is_empty() {
        return None;
    }
    let value = value
        .strip_prefix(b"'")
        .and_then(|v| v.strip_suffix(b"'"))
        .unwrap_or(value);
    Some(match value.to_ascii_lowercase().as_slice() {
        b"auto" | b"default" => Ok(ReadPreference::Auto),
        b"primary" => Ok(ReadPreference::Primary),
        b"replica" => Ok(ReadPreference::Replica),
        other => Err(format!(
            "invalid value for parameter \"pgrepl.route\": \"{}\" (expected primary, replica or auto)",
            String::from_utf8_lossy(other)
        )),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_the_hint_in_its_forms() {
        for (sql, want) in [
            ("SET pgrepl.route = 'primary'", ReadPreference::Primary),
            (
                "set session PGREPL.ROUTE to replica;",
                ReadPreference::Replica,
            ),
            ("SET pgrepl.route='auto'", ReadPreference::Auto),
            ("  RESET pgrepl.route", ReadPreference::Auto),
        ] {
            assert_eq!(route_setting(sql.as_bytes()), Some(Ok(want)), "{sql}");
        }
    }

    #[test]
    fn other_statements_are_not_hints() {
        for sql in [
            "SET search_path = x",
            "SET LOCAL pgrepl.route = 'primary'",
            "SELECT 1",
            "SET pgrepl.route = 'primary'; SELECT 1",
            "RESET ALL",
            "",
        ] {
            assert_eq!(route_setting(sql.as_bytes()), None, "{sql}");
        }
    }

    #[test]
    fn a_bad_value_is_an_error() {
        let err = route_setting(b"SET pgrepl.route = 'fast'")
            .unwrap()
            .unwrap_err();
        assert!(err.contains("\"fast\""), "{err}");
    }
}
