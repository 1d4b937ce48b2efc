//! The client's prepared statements a server connection holds.

use std::collections::HashMap;

use bytes::Bytes;
use foldhash::fast::RandomState;

/// Name -> generation (every definition has a proxy-wide number, `StatementIds`) of the
/// statements this connection holds. The last one found current is remembered, so that the
/// Bind of the statement bound just before (a prepared statement run again and again) needs
/// no hash look-up; every change forgets it.
///
/// Pooled connections serve many sessions: past `bound` named statements, the least
/// recently used one is given up (the caller closes it on the server).
#[derive(Default)]
pub struct Prepared {
    /// The named ones, with when each was last found current.
    held: HashMap<Bytes, Held, RandomState>,
    /// The unnamed one, apart: drivers define it anew for nearly every query.
    unnamed: Option<u64>,
    /// The named one found current last.
    last: Option<(Bytes, u64)>,
    /// Named statements held at most (0: no bound).
    bound: usize,
    /// Counts look-ups and insertions: the "when" of `Held::used`.
    clock: u64,
}

#[derive(Clone, Copy)]
struct Held {
    generation: u64,
    used: u64,
}

impl Prepared {
    /// A connection's statements, at most `bound` named ones (0: no bound).
    pub fn bounded(bound: usize) -> Prepared {
        Prepared {
            bound,
            ..Prepared::default()
        }
    }

    /// Whether statement `name` is held here at `generation`.
    #[inline(always)]
    pub fn holds(&mut self, name: &[u8], generation: u64) -> bool {
        if name.is_empty() {
            return self.unnamed == Some(generation);
        }
        if let Some((last, at)) = &self.last {
            if *at == generation && same_name(last, name) {
                return true;
            }
        }
        self.clock += 1;
        match self.held.get_key_value(name) {
            Some((key, held)) if held.generation == generation => {
                self.last = Some((key.clone(), generation));
                let clock = self.clock;
                if let Some(held) = self.held.get_mut(name) {
                    held.used = clock;
                }
                true
            }
            _ => false,
        }
    }

    /// The generation of statement `name` held here.
    pub fn get(&self, name: &[u8]) -> Option<u64> {
        if name.is_empty() {
            self.unnamed
        } else {
            self.held.get(name).map(|held| held.generation)
        }
    }

    pub fn contains_key(&self, name: &[u8]) -> bool {
        self.get(name).is_some()
    }

    pub fn is_empty(&self) -> bool {
        self.unnamed.is_none() && self.held.is_empty()
    }

    /// Records `name` at `generation`. Returns the statement given up to stay within the
    /// bound, which the caller must close on the server.
    #[must_use = "a statement given up must be closed on the server"]
    pub fn insert(&mut self, name: Bytes, generation: u64) -> Option<Bytes> {
        if name.is_empty() {
            self.unnamed = Some(generation);
            return None;
        }
        self.last = None;
        self.clock += 1;
        let used = self.clock;
        let victim = match self.held.insert(name, Held { generation, used }) {
            None if self.bound > 0 && self.held.len() > self.bound => self.least_recently_used(),
            _ => None,
        };
        victim.inspect(|name| {
            self.held.remove(name);
        })
    }

    fn least_recently_used(&self) -> Option<Bytes> {
        self.held
            .iter()
            .min_by_key(|(_, held)| held.used)
            .map(|(name, _)| name.clone())
    }

    pub fn remove(&mut self, name: &[u8]) -> Option<u64> {
        if name.is_empty() {
            self.unnamed.take()
        } else {
            self.last = None;
            self.held.remove(name).map(|held| held.generation)
        }
    }

    /// A Parse of `name` at `generation` (or a Close before it) may not have reached the
    /// server: an error earlier in its batch made the server skip it. What the server holds
    /// under `name` is unknown then; the generation 0, never current, makes the next use
    /// close it and prepare it again (closing what does not exist is no error).
    pub fn not_sure_of(&mut self, name: &[u8], generation: u64) {
        if self.get(name) == Some(generation) {
            self.mark_unsure(name);
        }
    }

    /// What the server holds under `name`, if anything, is not known: closed before reuse.
    pub fn mark_unsure(&mut self, name: &[u8]) {
        if name.is_empty() {
            self.unnamed = Some(0);
            return;
        }
        self.last = None;
        let used = self.held.get(name).map_or(0, |held| held.used);
        let held = Held {
            generation: 0,
            used,
        };
        self.held.insert(Bytes::copy_from_slice(name), held);
    }

    pub fn clear(&mut self) {
        self.last = None;
        self.unnamed = None;
        self.held.clear();
    }
}

/// Whether two statement names are the same: short as they are, compared in line rather than
/// by a call to `memcmp`.
#[inline(always)]
pub fn same_name(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_remembered_statement_is_forgotten_by_every_change() {
        let mut prepared = Prepared::default();
        let _ = prepared.insert(Bytes::from_static(b"s1"), 3);
        assert!(prepared.holds(b"s1", 3), "found, and remembered");
        assert!(prepared.holds(b"s1", 3), "remembered");
        assert!(!prepared.holds(b"s1", 4) && !prepared.holds(b"s2", 3));
        prepared.remove(b"s1");
        assert!(!prepared.holds(b"s1", 3), "removed");
        let _ = prepared.insert(Bytes::from_static(b""), 5);
        assert!(prepared.holds(b"", 5));
        prepared.clear();
        assert!(!prepared.holds(b"", 5), "cleared");
        let _ = prepared.insert(Bytes::from_static(b""), 5);
        assert!(prepared.holds(b"", 5));
        let _ = prepared.insert(Bytes::from_static(b""), 6);
        assert!(!prepared.holds(b"", 5), "redefined");
        assert!(prepared.holds(b"", 6));
    }

    #[test]
    fn a_statement_not_sure_of_is_held_at_no_generation() {
        let mut prepared = Prepared::default();
        let _ = prepared.insert(Bytes::from_static(b"s1"), 3);
        prepared.not_sure_of(b"s1", 2);
        assert!(prepared.holds(b"s1", 3), "another generation: unchanged");
        prepared.not_sure_of(b"s1", 3);
        assert!(!prepared.holds(b"s1", 3));
        assert!(
            prepared.contains_key(b"s1"),
            "still there, to be closed first"
        );
        prepared.not_sure_of(b"s9", 1);
        assert!(!prepared.contains_key(b"s9"), "nothing made up");
    }

    #[test]
    fn past_its_bound_the_least_recently_used_statement_is_given_up() {
        let mut prepared = Prepared::bounded(2);
        let name = |n: &'static [u8]| Bytes::from_static(n);
        assert_eq!(prepared.insert(name(b"a"), 1), None);
        assert_eq!(prepared.insert(name(b"b"), 2), None);
        assert!(prepared.holds(b"a", 1), "a used after b");
        assert_eq!(prepared.insert(name(b"c"), 3), Some(name(b"b")));
        assert!(!prepared.contains_key(b"b"), "given up");
        assert!(prepared.holds(b"a", 1) && prepared.holds(b"c", 3));
        assert_eq!(
            prepared.insert(name(b"c"), 4),
            None,
            "a redefinition adds none"
        );
        assert_eq!(
            prepared.insert(name(b""), 5),
            None,
            "the unnamed one is not counted"
        );
        let mut unbounded = Prepared::default();
        for n in 0..100u64 {
            assert_eq!(unbounded.insert(Bytes::from(n.to_string()), n), None);
        }
    }

    #[test]
    fn names_are_the_same_only_byte_for_byte() {
        assert!(same_name(b"", b"") && same_name(b"S_12", b"S_12"));
        assert!(!same_name(b"S_1", b"S_12") && !same_name(b"S_12", b"S_13"));
    }
}
