//! Route hints: a leading `/* pgrepl:primary */` or `/* pgrepl:replica */` comment (or the
//! `-- pgrepl:...` line form) lets the application choose where a read runs, for example a
//! read that must see a write made a moment ago on another connection. A write ignores it.
//!
//! Only comments before the first statement count, so the scan stops at the first token
//! that is not a comment; most statements start with a keyword and cost one comparison.

use super::reason::Route;

/// The route the leading comments of `sql` ask for, if one of them is a hint.
pub fn route_hint(sql: &str) -> Option<Route> {
    let mut rest = sql.trim_start();
    loop {
        let (body, after) = if let Some(comment) = rest.strip_prefix("/*") {
            let end = comment.find("*/")?;
            (&comment[..end], &comment[end + 2..])
        } else if let Some(comment) = rest.strip_prefix("--") {
            let end = comment.find('\n').unwrap_or(comment.len());
            comment.split_at(end)
        } else {
            return None;
        };
        if let Some(route) = parse(body.trim()) {
            return Some(route);
        }
        rest = after.trim_start();
    }
}

/// `pgrepl:primary` or `pgrepl:replica`, in any case.
fn parse(body: &str) -> Option<Route> {
    const PREFIX: &str = "pgrepl:";
    let prefix = body.get(..PREFIX.len())?;
    if !prefix.eq_ignore_ascii_case(PREFIX) {
        return None;
    }
    let value = body[PREFIX.len()..].trim();
    if value.eq_ignore_ascii_case("primary") {
        Some(Route::Primary)
    } else if value.eq_ignore_ascii_case("replica") {
        Some(Route::Replica)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Route::{Primary as P, Replica as R};

    #[test]
    fn finds_a_hint_among_the_leading_comments() {
        for (sql, want) in [
            ("/* pgrepl:primary */ SELECT 1", Some(P)),
            ("/*pgrepl:replica*/SELECT 1", Some(R)),
            ("  \n/* PGREPL:Primary */\nSELECT 1", Some(P)),
            ("/* pgrepl: replica */ SELECT 1", Some(R)),
            ("-- pgrepl:replica\nSELECT 1", Some(R)),
            ("-- pgrepl:primary", Some(P)),
            ("/* app:checkout */ -- pgrepl:primary\nSELECT 1", Some(P)),
            (
                "/* pgrepl:replica */ /* pgrepl:primary */ SELECT 1",
                Some(R),
            ),
        ] {
            assert_eq!(route_hint(sql), want, "{sql:?}");
        }
    }

    #[test]
    fn anything_else_is_no_hint() {
        for sql in [
            "SELECT 1",
            "SELECT 1 /* pgrepl:primary */",
            "SELECT /* pgrepl:primary */ 1",
            "/* pgrepl:nearest */ SELECT 1",
            "/* pgrepl:primary, please */ SELECT 1",
            "/* pgrepl:primary SELECT 1",
            "/* xpgrepl:primary */ SELECT 1",
            "-- pgrepl\n:primary",
            "/* pgrepl: */",
            "/* é */ SELECT 1",
            "",
        ] {
            assert_eq!(route_hint(sql), None, "{sql:?}");
        }
    }
}
