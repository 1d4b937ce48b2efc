//! Session state beyond one statement: settings every backend must follow, and whether the
//! session holds state only the primary has (which pins its reads there).
//!
//! A setting counts once it took effect: at once outside a transaction, at COMMIT inside one
//! (a rollback, of the transaction or to a savepoint, undoes it). Pins are taken when the
//! statement is sent, before any answer (the safe side), and dropped only when the primary,
//! asked after a statement that may have released the state, says none is left.

use bytes::Bytes;

use super::settings::Settings;
use crate::backend::Watch;
use crate::route::Effects;

/// A setting made inside the open transaction.
enum Provisional {
    Replayable(Bytes),
    Unknown,
}

#[derive(Default)]
pub struct SessionState {
    pub settings: Settings,
    /// Settings made inside the open transaction, in order.
    provisional: Vec<Provisional>,
    /// A rollback to a savepoint may have undone some of `provisional`.
    provisional_uncertain: bool,
    /// Settings changed in a way the proxy cannot replay: reads stay on the primary until
    /// DISCARD ALL.
    settings_unknown: bool,
    /// The session holds temporary tables, LISTENs, advisory locks, SQL prepared statements
    /// or cursors WITH HOLD.
    holds_state: bool,
    /// Counts the statements sent that may create such state: a probe answer older than the
    /// latest one must not unpin.
    pin_epoch: u64,
    /// The session's `default_transaction_read_only`, as the servers report it.
    pub default_read_only: bool,
}

impl SessionState {
    pub fn new(default_read_only: bool) -> SessionState {
        SessionState {
            default_read_only,
            ..SessionState::default()
        }
    }

    /// Reads must stay on the primary: it holds state no replica has.
    pub fn pinned(&self) -> bool {
        self.holds_state || self.settings_unknown
    }

    pub fn pin_epoch(&self) -> u64 {
        self.pin_epoch
    }

    /// A unit with `effects` and (for settings) these SQL texts is being sent. Returns what
    /// to watch in its answers, if anything; pins at once if it may create primary-only
    /// state.
    pub fn sending(&mut self, effects: Effects, sets: Vec<Bytes>) -> Option<Box<Watch>> {
        if effects.contains(Effects::PINS) {
            self.holds_state = true;
            self.pin_epoch += 1;
        }
        let changes_settings = effects.intersects(Effects::SESSION_SET | Effects::DISCARD_ALL);
        if !changes_settings && self.provisional.is_empty() {
            return None;
        }
        let replayable = effects.contains(Effects::ONLY_SETS) && !sets.is_empty();
        Some(Box::new(Watch {
            unknown_sets: effects.contains(Effects::SESSION_SET) && !replayable,
            sets: if replayable { sets } else { Vec::new() },
            discard_all: effects.contains(Effects::DISCARD_ALL),
            ..Watch::default()
        }))
    }

    /// Whether to ask the primary, after a unit with `effects`, if state is left.
    pub fn wants_probe(&self, effects: Effects) -> bool {
        effects.contains(Effects::OPAQUE)
            || (self.holds_state && effects.intersects(Effects::MAY_UNPIN))
    }

    /// Takes in how a watched client unit ended.
    pub fn settle(&mut self, watch: &Watch, status: u8) {
        if watch.error.is_none() {
            self.provisional
                .extend(watch.sets.iter().cloned().map(Provisional::Replayable));
            if watch.unknown_sets {
                self.provisional.push(Provisional::Unknown);
            }
        }
        match status {
            b'I' => {
                let committed = watch.error.is_none() && !watch.rolled_back;
                let provisional = std::mem::take(&mut self.provisional);
                if committed {
                    if watch.discard_all {
                        self.settings.discard_all();
                        self.settings_unknown = false;
                    }
                    if self.provisional_uncertain {
                        self.settings_unknown = true;
                    } else {
                        self.commit(provisional);
                    }
                }
                self.provisional_uncertain = false;
            }
            // Still in a transaction after a rollback: to a savepoint.
            _ if watch.rolled_back => self.provisional_uncertain = true,
            _ => {}
        }
    }

    fn commit(&mut self, provisional: Vec<Provisional>) {
        for setting in provisional {
            match setting {
                Provisional::Replayable(sql) => self.settings.record(sql),
                Provisional::Unknown => self.settings_unknown = true,
            }
        }
    }

    /// The primary's answer to a probe sent at `epoch`.
    pub fn probed(&mut self, holds_state: bool, epoch: u64) {
        if holds_state {
            self.holds_state = true;
        } else if epoch == self.pin_epoch {
            self.holds_state = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(sql: &'static str) -> Vec<Bytes> {
        vec![Bytes::from_static(sql.as_bytes())]
    }

    const SET: Effects = Effects::SESSION_SET;

    fn only_sets() -> Effects {
        Effects::SESSION_SET | Effects::ONLY_SETS
    }

    fn ok(state: &mut SessionState, effects: Effects, sets: Vec<Bytes>, status: u8) {
        let watch = state.sending(effects, sets);
        if let Some(watch) = watch {
            state.settle(&watch, status);
        }
    }

    fn rolled_back(state: &mut SessionState, status: u8) {
        let mut watch = state.sending(Effects::MAY_UNPIN, Vec::new()).unwrap();
        watch.rolled_back = true;
        state.settle(&watch, status);
    }

    #[test]
    fn settings_outside_a_transaction_count_at_once() {
        let mut state = SessionState::default();
        ok(&mut state, only_sets(), set("SET a.b = 1"), b'I');
        assert_eq!(state.settings.seq(), 1);
        let mut watch = state.sending(only_sets(), set("SET a.b = 2")).unwrap();
        watch.error = Some("22023: bad".into());
        state.settle(&watch, b'I');
        assert_eq!(state.settings.seq(), 1, "a failed SET changes nothing");
        assert!(!state.pinned());
    }

    #[test]
    fn settings_in_a_transaction_count_at_commit_only() {
        let mut state = SessionState::default();
        ok(&mut state, only_sets(), set("SET a.b = 1"), b'T');
        assert_eq!(state.settings.seq(), 0);
        // Every unit is watched now, to see how the transaction ends.
        ok(&mut state, Effects::NONE, Vec::new(), b'T');
        ok(&mut state, Effects::MAY_UNPIN, Vec::new(), b'I');
        assert_eq!(state.settings.seq(), 1);

        ok(&mut state, only_sets(), set("SET a.b = 2"), b'T');
        rolled_back(&mut state, b'I');
        assert_eq!(state.settings.seq(), 1, "rolled back");
        assert!(state.sending(Effects::NONE, Vec::new()).is_none());
    }

    #[test]
    fn a_savepoint_rollback_or_a_mixed_string_makes_settings_unknown() {
        let mut state = SessionState::default();
        ok(&mut state, only_sets(), set("SET a.b = 1"), b'T');
        rolled_back(&mut state, b'T');
        ok(&mut state, Effects::MAY_UNPIN, Vec::new(), b'I');
        assert!(state.pinned());
        assert_eq!(state.settings.seq(), 0);
        ok(&mut state, Effects::DISCARD_ALL, Vec::new(), b'I');
        assert!(!state.pinned());

        ok(&mut state, SET, Vec::new(), b'I');
        assert!(state.pinned(), "SET mixed with other statements");
    }

    #[test]
    fn pins_hold_until_a_probe_newer_than_them_says_the_state_is_gone() {
        let mut state = SessionState::default();
        assert!(state.sending(Effects::PINS, Vec::new()).is_none());
        assert!(state.pinned());
        assert!(state.wants_probe(Effects::MAY_UNPIN));
        let epoch = state.pin_epoch();
        state.sending(Effects::PINS, Vec::new());
        state.probed(false, epoch);
        assert!(
            state.pinned(),
            "a newer pin is not undone by an older answer"
        );
        state.probed(false, state.pin_epoch());
        assert!(!state.pinned());
        assert!(!state.wants_probe(Effects::MAY_UNPIN));
        assert!(state.wants_probe(Effects::OPAQUE));
        state.probed(true, 0);
        assert!(state.pinned());
    }
}
