//! Proxy-wide numbers for prepared-statement definitions.
//!
//! A pooled connection serves many sessions, and records which definition it holds under
//! each name by number. The same Parse message (name, text, parameter types) parsed under the
//! same settings gets the same number in every session, so a connection that holds a
//! statement for one session holds it for every session that defines it alike (pgjdbc, pgx
//! and pgbench name their statements the same way in every connection): no Parse is replayed
//! for them. Settings count because the server folds constants as it parses (a date literal
//! under `DateStyle`, a time under `TimeZone`). Every other definition gets a number never
//! used before, so no session mistakes another's statement for its own.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use foldhash::fast::RandomState;

/// Definitions remembered at most; past that the table starts over (numbers are never
/// reused: connections holding a forgotten one just prepare it again).
const REMEMBERED: usize = 10_000;

pub struct StatementIds {
    /// The last number given; 0 is never given (it means "not sure" on a connection).
    last: AtomicU64,
    /// Numbers of named statements, by the settings they were parsed under (a session's
    /// `Settings::fingerprint`) and their whole Parse message.
    named: Mutex<HashMap<(Arc<str>, Bytes), u64, RandomState>>,
}

impl Default for StatementIds {
    fn default() -> Self {
        StatementIds {
            last: AtomicU64::new(0),
            named: Mutex::default(),
        }
    }
}

impl StatementIds {
    /// A number no definition has had.
    #[inline]
    pub fn fresh(&self) -> u64 {
        self.last.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// The number of the named statement `parse` defines under `settings`: the same for the
    /// same message and settings.
    pub fn of_named(&self, settings: &Arc<str>, parse: &Bytes) -> u64 {
        let mut named = self.named.lock().unwrap_or_else(|p| p.into_inner());
        let key = (settings.clone(), parse.clone());
        if let Some(&number) = named.get(&key) {
            return number;
        }
        if named.len() >= REMEMBERED {
            named.clear();
        }
        let number = self.fresh();
        named.insert(key, number);
        number
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_definition_has_the_same_number_and_no_other_has_it() {
        let ids = StatementIds::default();
        let iso: Arc<str> = "DateStyle=ISO".into();
        let a = Bytes::from_static(b"P\0\0\0\x10s1\0SELECT 1\0\0\0");
        let b = Bytes::from_static(b"P\0\0\0\x10s1\0SELECT 2\0\0\0");
        let first = ids.of_named(&iso, &a);
        assert_eq!(ids.of_named(&"DateStyle=ISO".into(), &a.clone()), first);
        let other = ids.of_named(&iso, &b);
        assert_ne!(other, first);
        let german = ids.of_named(&"DateStyle=German".into(), &a);
        assert!(
            german != first && german != other,
            "other settings, another number"
        );
        let fresh = ids.fresh();
        assert!(fresh != first && fresh != other && fresh != 0);
    }

    #[test]
    fn forgetting_never_reuses_a_number() {
        let ids = StatementIds::default();
        let none: Arc<str> = "".into();
        let first = ids.of_named(&none, &Bytes::from_static(b"first"));
        for n in 0..REMEMBERED {
            ids.of_named(&none, &Bytes::from(n.to_string()));
        }
        assert_ne!(ids.of_named(&none, &Bytes::from_static(b"first")), first);
    }
}
