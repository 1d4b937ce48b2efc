//! The client's prepared statements a server connection holds.

use std::collections::HashMap;

use bytes::Bytes;
use foldhash::fast::RandomState;

/// Name -> generation (the session's statements number every definition) of the statements
/// this connection holds. The last one found current is remembered, so that the Bind of the
/// statement bound just before (a prepared statement run again and again) needs no hash
/// look-up; every change forgets it.
#[derive(Default)]
pub struct Prepared {
    /// The named ones.
    held: HashMap<Bytes, u64, RandomState>,
    /// The unnamed one, apart: drivers define it anew for nearly every query.
    unnamed: Option<u64>,
    /// The named one found current last.
    last: Option<(Bytes, u64)>,
}

impl Prepared {
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
        match self.held.get_key_value(name) {
            Some((key, at)) if *at == generation => {
                self.last = Some((key.clone(), generation));
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
            self.held.get(name).copied()
        }
    }

    pub fn contains_key(&self, name: &[u8]) -> bool {
        self.get(name).is_some()
    }

    pub fn is_empty(&self) -> bool {
        self.unnamed.is_none() && self.held.is_empty()
    }

    pub fn insert(&mut self, name: Bytes, generation: u64) {
        if name.is_empty() {
            self.unnamed = Some(generation);
        } else {
            self.last = None;
            self.held.insert(name, generation);
        }
    }

    pub fn remove(&mut self, name: &[u8]) -> Option<u64> {
        if name.is_empty() {
            self.unnamed.take()
        } else {
            self.last = None;
            self.held.remove(name)
        }
    }

    /// A Parse of `name` at `generation` (or a Close before it) may not have reached the
    /// server: an error earlier in its batch made the server skip it. What the server holds
    /// under `name` is unknown then; the generation 0, never current, makes the next use
    /// close it and prepare it again (closing what does not exist is no error).
    pub fn not_sure_of(&mut self, name: &[u8], generation: u64) {
        if self.get(name) == Some(generation) {
            self.insert(Bytes::copy_from_slice(name), 0);
        }
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
        prepared.insert(Bytes::from_static(b"s1"), 3);
        assert!(prepared.holds(b"s1", 3), "found, and remembered");
        assert!(prepared.holds(b"s1", 3), "remembered");
        assert!(!prepared.holds(b"s1", 4) && !prepared.holds(b"s2", 3));
        prepared.remove(b"s1");
        assert!(!prepared.holds(b"s1", 3), "removed");
        prepared.insert(Bytes::from_static(b""), 5);
        assert!(prepared.holds(b"", 5));
        prepared.clear();
        assert!(!prepared.holds(b"", 5), "cleared");
        prepared.insert(Bytes::from_static(b""), 5);
        assert!(prepared.holds(b"", 5));
        prepared.insert(Bytes::from_static(b""), 6);
        assert!(!prepared.holds(b"", 5), "redefined");
        assert!(prepared.holds(b"", 6));
    }

    #[test]
    fn a_statement_not_sure_of_is_held_at_no_generation() {
        let mut prepared = Prepared::default();
        prepared.insert(Bytes::from_static(b"s1"), 3);
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
    fn names_are_the_same_only_byte_for_byte() {
        assert!(same_name(b"", b"") && same_name(b"S_12", b"S_12"));
        assert!(!same_name(b"S_1", b"S_12") && !same_name(b"S_12", b"S_13"));
    }
}
