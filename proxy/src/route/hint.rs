//! Route hints: a leading `/* pgrepl:primary */` or `/* pgrepl:replica */` comment (or the
//! `-- pgrepl:...` line form) lets the application choose where a read runs, for example a
//! read that must see a write made a moment ago on another connection. A write ignores it.
//!
//! A read may also carry its own causal-reads mode and staleness bound:
//! `/* pgrepl:read_your_writes=linearizable */`, `/* pgrepl:max_staleness=200ms */` (one
//! directive a comment; several comments may lead the statement).
//!
//! Only comments before the first statement count, so the scan stops at the first token
//! that is not a comment; most statements start with a keyword and cost one comparison.

use std::time::Duration;

use pgrepl_config::{Named, ReadYourWrites};

use super::reason::Route;

/// The route the leading comments of `sql` ask for, if one of them is a hint.
pub fn route_hint(sql: &str) -> Option<Route> {
    leading_comments(sql).find_map(parse)
}

/// The mode and staleness bound the leading comments of `sql` ask for.
pub fn causal_hint(sql: &str) -> CausalHint {
    let mut mode = None;
    let mut max_staleness = None;
    for body in leading_comments(sql) {
        match directive(body) {
            Some(("read_your_writes", value)) => mode = mode.or(mode_named(value)),
            Some(("max_staleness", value)) => {
                max_staleness = max_staleness.or(staleness_bound(value))
            }
            _ => {}
        }
    }
    CausalHint::new(mode, max_staleness)
}

/// A `read_your_writes` mode by its name, in any case.
pub fn mode_named(name: &str) -> Option<ReadYourWrites> {
    ReadYourWrites::ALL
        .iter()
        .copied()
        .find(|m| m.as_str().eq_ignore_ascii_case(name))
}

/// A staleness bound: a duration like `200ms`, or `0` (caught up).
pub fn staleness_bound(text: &str) -> Option<Duration> {
    match text {
        "0" => Some(Duration::ZERO),
        _ => humantime::parse_duration(text).ok(),
    }
}

/// The trimmed bodies of the comments before the first statement, in order.
fn leading_comments(sql: &str) -> impl Iterator<Item = &str> {
    let mut rest = sql.trim_start();
    std::iter::from_fn(move || {
        let (body, after) = if let Some(comment) = rest.strip_prefix("/*") {
            let end = comment.find("*/")?;
            (&comment[..end], &comment[end + 2..])
        } else if let Some(comment) = rest.strip_prefix("--") {
            let end = comment.find('\n').unwrap_or(comment.len());
            comment.split_at(end)
        } else {
            return None;
        };
        rest = after.trim_start();
        Some(body.trim())
    })
}

/// `pgrepl:<key>=<value>`, the key lower-case.
fn directive(body: &str) -> Option<(&'static str, &str)> {
    let rest = strip_prefix_ignore_case(body, "pgrepl:")?;
    let (key, value) = rest.split_once('=')?;
    let key = key.trim();
    let key = ["read_your_writes", "max_staleness"]
        .into_iter()
        .find(|k| k.eq_ignore_ascii_case(key))?;
    Some((key, value.trim()))
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

/// A read's own causal-reads mode and staleness bound, packed into four bytes (the verdict
/// that carries it is copied for every statement): the mode in the low three bits (0: none),
/// then a bit saying the unit also runs statements without this hint (a batch of several:
/// the session's own mode and bound count too), then the bound in milliseconds plus one (0:
/// none).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CausalHint(u32);

impl CausalHint {
    pub const NONE: CausalHint = CausalHint(0);
    const MODE_BITS: u32 = 3;
    const MIXED: u32 = 1 << Self::MODE_BITS;
    const BOUND_SHIFT: u32 = Self::MODE_BITS + 1;

    pub fn new(mode: Option<ReadYourWrites>, max_staleness: Option<Duration>) -> CausalHint {
        let mode = mode.map_or(0, |m| {
            1 + ReadYourWrites::ALL
                .iter()
                .position(|&x| x == m)
                .unwrap_or(0) as u32
        });
        let limit = u32::MAX >> Self::BOUND_SHIFT;
        let bound = max_staleness.map_or(0, |d| {
            u32::try_from(d.as_millis())
                .unwrap_or(u32::MAX)
                .min(limit - 1)
                + 1
        });
        CausalHint(mode | (bound << Self::BOUND_SHIFT))
    }

    pub fn is_none(self) -> bool {
        self.0 == 0
    }

    pub fn mode(self) -> Option<ReadYourWrites> {
        let index = (self.0 & (Self::MIXED - 1)).checked_sub(1)?;
        ReadYourWrites::ALL.get(index as usize).copied()
    }

    pub fn max_staleness(self) -> Option<Duration> {
        let bound = (self.0 >> Self::BOUND_SHIFT).checked_sub(1)?;
        Some(Duration::from_millis(u64::from(bound)))
    }

    /// The hint of a unit running statements with hints `self` and `other`: whatever each
    /// asks for, so the strongest mode and the tightest bound, and the session's own for a
    /// statement that asks for nothing.
    pub fn combine(self, other: CausalHint) -> CausalHint {
        if self == other {
            return self;
        }
        let mode = match (self.mode(), other.mode()) {
            (Some(a), Some(b)) => Some(stronger(a, b)),
            (a, b) => a.or(b),
        };
        let bound = match (self.max_staleness(), other.max_staleness()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let mixed = (self.0 | other.0) & Self::MIXED != 0
            || self.mode().is_none() != other.mode().is_none()
            || self.max_staleness().is_none() != other.max_staleness().is_none();
        let combined = CausalHint::new(mode, bound);
        CausalHint(combined.0 | if mixed { Self::MIXED } else { 0 })
    }

    /// The mode a read runs under, in a session whose own is `session`.
    pub fn mode_in(self, session: ReadYourWrites) -> ReadYourWrites {
        match self.mode() {
            Some(mode) if self.0 & Self::MIXED != 0 => stronger(mode, session),
            Some(mode) => mode,
            None => session,
        }
    }

    /// The staleness bound a read runs under, in a session whose own is `session`.
    pub fn bound_in(self, session: Option<Duration>) -> Option<Duration> {
        match (self.max_staleness(), session) {
            (Some(bound), Some(own)) if self.0 & Self::MIXED != 0 => Some(bound.min(own)),
            (Some(bound), _) => Some(bound),
            (None, own) => own,
        }
    }
}

/// The mode that promises more.
fn stronger(a: ReadYourWrites, b: ReadYourWrites) -> ReadYourWrites {
    let strength = |m| match m {
        ReadYourWrites::Off => 0,
        ReadYourWrites::Session => 1,
        ReadYourWrites::Global => 2,
        ReadYourWrites::Linearizable => 3,
    };
    if strength(a) >= strength(b) {
        a
    } else {
        b
    }
}

/// `pgrepl:primary` or `pgrepl:replica`, in any case.
fn parse(body: &str) -> Option<Route> {
    let value = strip_prefix_ignore_case(body, "pgrepl:")?.trim();
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
    fn a_read_may_carry_its_own_mode_and_staleness_bound() {
        use ReadYourWrites::*;
        let ms = Duration::from_millis;
        for (sql, mode, bound) in [
            ("SELECT 1", None, None),
            ("/* pgrepl:read_your_writes=linearizable */ SELECT 1", Some(Linearizable), None),
            ("/* PGREPL:Read_Your_Writes = OFF */SELECT 1", Some(Off), None),
            ("/* pgrepl:max_staleness=200ms */ SELECT 1", None, Some(ms(200))),
            ("-- pgrepl:max_staleness=0\nSELECT 1", None, Some(ms(0))),
            (
                "/* pgrepl:replica */ /* pgrepl:max_staleness=2s */ /* pgrepl:read_your_writes=global */ SELECT 1",
                Some(Global),
                Some(ms(2000)),
            ),
            ("/* pgrepl:read_your_writes=sometimes */ SELECT 1", None, None),
            ("/* pgrepl:max_staleness=soon */ SELECT 1", None, None),
            ("SELECT 1 /* pgrepl:max_staleness=200ms */", None, None),
        ] {
            let hint = causal_hint(sql);
            assert_eq!((hint.mode(), hint.max_staleness()), (mode, bound), "{sql:?}");
            assert_eq!(hint.is_none(), mode.is_none() && bound.is_none(), "{sql:?}");
        }
    }

    #[test]
    fn a_hint_packs_every_mode_and_clamps_huge_bounds() {
        for mode in ReadYourWrites::ALL {
            let hint = CausalHint::new(Some(*mode), Some(Duration::from_millis(5)));
            assert_eq!(hint.mode(), Some(*mode));
            assert_eq!(hint.max_staleness(), Some(Duration::from_millis(5)));
        }
        let huge = CausalHint::new(None, Some(Duration::from_secs(1 << 40)));
        assert!(huge.max_staleness().unwrap() > Duration::from_secs(86_400 * 3));
        assert_eq!(CausalHint::NONE.mode(), None);
    }

    #[test]
    fn a_unit_of_several_statements_asks_what_each_asks() {
        use ReadYourWrites::*;
        let ms = Duration::from_millis;
        let off = CausalHint::new(Some(Off), None);
        let lin = CausalHint::new(Some(Linearizable), None);
        let tight = CausalHint::new(None, Some(ms(50)));
        let loose = CausalHint::new(None, Some(ms(500)));
        let none = CausalHint::NONE;
        // (first, second, session mode, session bound, mode, bound)
        for (a, b, session, own, mode, bound) in [
            (off, off, Session, None, Off, None),
            (off, none, Session, None, Session, None),
            (none, off, Global, None, Global, None),
            (off, none, Off, None, Off, None),
            (lin, none, Session, None, Linearizable, None),
            (off, lin, Session, None, Linearizable, None),
            (tight, loose, Session, Some(ms(100)), Session, Some(ms(50))),
            (loose, none, Session, Some(ms(100)), Session, Some(ms(100))),
            (loose, none, Session, None, Session, Some(ms(500))),
            (loose, loose, Session, Some(ms(100)), Session, Some(ms(500))),
        ] {
            for hint in [a.combine(b), b.combine(a)] {
                assert_eq!(hint.mode_in(session), mode, "{a:?} {b:?}");
                assert_eq!(hint.bound_in(own), bound, "{a:?} {b:?}");
            }
        }
        assert_eq!(off.combine(none).combine(none), off.combine(none));
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
