//! The proxy's own session settings, answered by the proxy itself (no backend has them):
//! `SET pgrepl.route = 'primary' | 'replica' | 'auto'`, where reads go;
//! `SET pgrepl.read_your_writes = 'off' | 'session' | 'global' | 'linearizable' | 'default'`;
//! `SET pgrepl.max_staleness = '200ms'`, how stale a replica this session's reads accept.
//! Checked on every simple query, so it looks at the first bytes only.

use std::time::Duration;

use pgrepl_config::ReadYourWrites;

use crate::route::{mode_named, staleness_bound};

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

/// A setting of the proxy's own, as a statement sets it (None: back to the default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxySetting {
    Route(ReadPreference),
    ReadYourWrites(Option<ReadYourWrites>),
    MaxStaleness(Option<Duration>),
}

/// The settings' names, lower-case.
const ROUTE: &[u8] = b"pgrepl.route";
const READ_YOUR_WRITES: &[u8] = b"pgrepl.read_your_writes";
const MAX_STALENESS: &[u8] = b"pgrepl.max_staleness";

/// The setting a statement makes, if it is `SET [SESSION] pgrepl.<name> {=|TO} value` or
/// `RESET pgrepl.<name>`; `Err` with a message for a value the setting does not take.
#[inline(always)]
pub fn proxy_setting(sql: &[u8]) -> Option<Result<ProxySetting, String>> {
    if !may_start_with(sql, &[b"SET", b"RESET"]) {
        return None;
    }
    parse_proxy_setting(sql)
}

#[inline(never)]
fn parse_proxy_setting(sql: &[u8]) -> Option<Result<ProxySetting, String>> {
    let mut words = Words(sql);
    let first = words.next()?;
    if first.eq_ignore_ascii_case(b"RESET") {
        let name = words.next()?;
        return words.rest_is_empty().then(|| value_of(name, b"default"))?;
    }
    if !first.eq_ignore_ascii_case(b"SET") {
        return None;
    }
    let mut name = words.next()?;
    if name.eq_ignore_ascii_case(b"SESSION") {
        name = words.next()?;
    }
    if ![ROUTE, READ_YOUR_WRITES, MAX_STALENESS]
        .iter()
        .any(|n| name.eq_ignore_ascii_case(n))
    {
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
    value_of(name, value)
}

/// Setting `name` (one of the proxy's) to `value`; None for another name.
fn value_of(name: &[u8], value: &[u8]) -> Option<Result<ProxySetting, String>> {
    let value = value.to_ascii_lowercase();
    let name = name.to_ascii_lowercase();
    let invalid = |expected: &str| {
        Err(format!(
            "invalid value for parameter \"{}\": \"{}\" ({expected})",
            String::from_utf8_lossy(&name),
            String::from_utf8_lossy(&value)
        ))
    };
    let default = value == b"default";
    Some(match name.as_slice() {
        ROUTE => match value.as_slice() {
            b"auto" | b"default" => Ok(ProxySetting::Route(ReadPreference::Auto)),
            b"primary" => Ok(ProxySetting::Route(ReadPreference::Primary)),
            b"replica" => Ok(ProxySetting::Route(ReadPreference::Replica)),
            _ => invalid("expected primary, replica or auto"),
        },
        READ_YOUR_WRITES if default => Ok(ProxySetting::ReadYourWrites(None)),
        READ_YOUR_WRITES => match std::str::from_utf8(&value).ok().and_then(mode_named) {
            Some(mode) => Ok(ProxySetting::ReadYourWrites(Some(mode))),
            None => invalid("expected off, session, global, linearizable or default"),
        },
        MAX_STALENESS if default => Ok(ProxySetting::MaxStaleness(None)),
        MAX_STALENESS => match std::str::from_utf8(&value).ok().and_then(staleness_bound) {
            Some(bound) => Ok(ProxySetting::MaxStaleness(Some(bound))),
            None => invalid("expected a duration like \"200ms\", or default"),
        },
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_the_settings_in_their_forms() {
        use ProxySetting::*;
        for (sql, want) in [
            (
                "SET pgrepl.route = 'primary'",
                Route(ReadPreference::Primary),
            ),
            (
                "set session PGREPL.ROUTE to replica;",
                Route(ReadPreference::Replica),
            ),
            ("SET pgrepl.route='auto'", Route(ReadPreference::Auto)),
            ("  RESET pgrepl.route", Route(ReadPreference::Auto)),
            (
                "SET pgrepl.read_your_writes = 'linearizable'",
                ReadYourWrites(Some(pgrepl_config::ReadYourWrites::Linearizable)),
            ),
            (
                "set pgrepl.read_your_writes to OFF",
                ReadYourWrites(Some(pgrepl_config::ReadYourWrites::Off)),
            ),
            ("RESET pgrepl.read_your_writes", ReadYourWrites(None)),
            (
                "SET pgrepl.max_staleness = '200ms'",
                MaxStaleness(Some(Duration::from_millis(200))),
            ),
            (
                "SET pgrepl.max_staleness = 0",
                MaxStaleness(Some(Duration::ZERO)),
            ),
            ("SET pgrepl.max_staleness TO default", MaxStaleness(None)),
        ] {
            assert_eq!(proxy_setting(sql.as_bytes()), Some(Ok(want)), "{sql}");
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
            "RESET pgrepl.other",
            "SET pgrepl.other = 1",
            "",
        ] {
            assert_eq!(proxy_setting(sql.as_bytes()), None, "{sql}");
        }
    }

    #[test]
    fn a_bad_value_is_an_error() {
        for (sql, shown) in [
            ("SET pgrepl.route = 'fast'", "\"fast\""),
            ("SET pgrepl.read_your_writes = 'always'", "\"always\""),
            ("SET pgrepl.max_staleness = 'soon'", "\"soon\""),
        ] {
            let err = proxy_setting(sql.as_bytes()).unwrap().unwrap_err();
            assert!(err.contains(shown), "{err}");
        }
    }
}
