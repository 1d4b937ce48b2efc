//! Session state beyond one statement: settings every backend must follow, and whether the
//! session holds state only the primary has (which pins its reads there).
//!
//! A setting counts once it took effect: at once outside a transaction, at COMMIT inside one
//! (a rollback, of the transaction or to a savepoint, undoes it). Pins are taken when the
//! statement is sent, before any answer (the safe side), and dropped only when the primary,
//! asked after a statement that may have released the state, says none is left.

use bytes::Bytes;

use super::settings::Settings;
use super::words::Words;
use crate::backend::{SavepointOp, StartupSettings, Watch};
use crate::protocol::tags::TxStatus;
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
    /// The open transaction's savepoints, with how many provisional settings each follows.
    savepoints: Vec<(Box<[u8]>, usize)>,
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
    /// Probes sent and not answered yet.
    probes: u32,
    /// The session's `default_transaction_read_only`, as the servers report it.
    pub default_read_only: bool,
}

impl SessionState {
    pub fn new(default_read_only: bool, startup: &StartupSettings) -> SessionState {
        SessionState {
            default_read_only,
            settings: Settings::new(startup),
            ..SessionState::default()
        }
    }

    /// Reads must stay on the primary: it holds state no replica has.
    pub fn pinned(&self) -> bool {
        self.holds_state || self.settings_unknown
    }

    /// The settings the proxy follows are all the session has (none it could not replay, no
    /// rollback to a savepoint it could not follow).
    pub fn settings_known(&self) -> bool {
        !self.settings_unknown && !self.provisional_uncertain
    }

    /// Every unit is watched while a transaction holds settings not yet committed.
    pub fn watching(&self) -> bool {
        !self.provisional.is_empty()
    }

    pub fn pin_epoch(&self) -> u64 {
        self.pin_epoch
    }

    /// A unit with `effects` is being sent: `sets` are the SQL texts of its settings (for a
    /// simple query that is only settings and transaction control: its text), `text` its SQL
    /// when it is a simple query, `in_tx` whether a transaction is open. Returns what to watch
    /// in its answers, if anything; pins at once if it may create primary-only state.
    pub fn sending(
        &mut self,
        effects: Effects,
        sets: Vec<Bytes>,
        text: Option<&[u8]>,
        in_tx: bool,
    ) -> Option<Box<Watch>> {
        if effects.contains(Effects::PINS) {
            self.holds_state = true;
            self.pin_epoch += 1;
        }
        let changes_settings = effects.intersects(Effects::SESSION_SET | Effects::DISCARD_ALL);
        if !changes_settings && self.provisional.is_empty() {
            return None;
        }
        let mut watch = Watch {
            discard_all: effects.contains(Effects::DISCARD_ALL),
            partial_rollback: effects.contains(Effects::PARTIAL_ROLLBACK),
            savepoint: text.and_then(savepoint_op),
            ..Watch::default()
        };
        if effects.contains(Effects::SESSION_SET) {
            let replayable = effects.contains(Effects::ONLY_SETS) && !sets.is_empty();
            match (replayable, effects.contains(Effects::TX_CONTROL)) {
                // Self-contained: replaying the same text reproduces what it left.
                (true, true) if !in_tx => watch.whole = sets.into_iter().next(),
                (true, false) => watch.sets = sets,
                _ => watch.unknown_sets = true,
            }
        }
        Some(Box::new(watch))
    }

    /// ParameterStatus values the client must be told after a reset brought startup
    /// settings back (the session follows its own `default_transaction_read_only` too).
    pub fn take_corrections(&mut self) -> Vec<(String, String)> {
        let corrections = self.settings.take_corrections();
        for (name, value) in &corrections {
            if name == "default_transaction_read_only" {
                self.default_read_only = value == "on";
            }
        }
        corrections
    }

    /// Whether to ask the primary, after a unit with `effects`, if state is left.
    /// Never after a `COPY`: a question sent while the server waits for copy data would
    /// break the copy.
    pub fn wants_probe(&self, effects: Effects) -> bool {
        !effects.contains(Effects::COPY)
            && (effects.contains(Effects::OPAQUE)
                || (self.holds_state && effects.intersects(Effects::MAY_UNPIN)))
    }

    /// Takes in how a watched client unit ended: the values its server reported, then the
    /// settings it made.
    pub fn settle(&mut self, watch: &Watch, status: TxStatus) {
        for (name, value) in &watch.reported {
            self.settings.report(name, value);
        }
        self.settle_settings(watch, status);
        self.settings.unit_settled();
    }

    fn settle_settings(&mut self, watch: &Watch, status: TxStatus) {
        if let Some(sql) = &watch.whole {
            match (&watch.error, status) {
                (None, TxStatus::Idle) => self.settings.record_whole(sql.clone()),
                (None, _) => self.provisional.push(Provisional::Unknown),
                _ => {}
            }
            return;
        }
        if watch.error.is_none() {
            if let Some((op, name)) = &watch.savepoint {
                self.savepoint(*op, name);
            }
            self.provisional
                .extend(watch.sets.iter().cloned().map(Provisional::Replayable));
            if watch.unknown_sets {
                self.provisional.push(Provisional::Unknown);
            }
        }
        match status {
            TxStatus::Idle => {
                let provisional = std::mem::take(&mut self.provisional);
                let rolled_back =
                    watch.error.is_some() || (watch.rolled_back && !watch.partial_rollback);
                // A ROLLBACK tag from a string with ROLLBACK TO SAVEPOINT in it that ended
                // the transaction: the transaction may have committed or not.
                let ambiguous = watch.rolled_back && watch.partial_rollback;
                if !rolled_back {
                    if watch.discard_all {
                        self.settings.discard_all();
                        self.settings_unknown = false;
                    }
                    if self.provisional_uncertain || (ambiguous && !provisional.is_empty()) {
                        self.settings_unknown = true;
                    } else {
                        self.commit(provisional);
                    }
                }
                self.provisional_uncertain = false;
                self.savepoints.clear();
            }
            // Still in a transaction after a rollback to a savepoint the proxy did not follow.
            _ if watch.rolled_back && watch.savepoint.is_none() => {
                self.provisional_uncertain = true
            }
            _ => {}
        }
    }

    /// Follows a savepoint statement that succeeded inside the transaction.
    fn savepoint(&mut self, op: SavepointOp, name: &[u8]) {
        let latest = self.savepoints.iter().rposition(|(n, _)| **n == *name);
        match (op, latest) {
            (SavepointOp::Define, _) => self.savepoints.push((name.into(), self.provisional.len())),
            (SavepointOp::RollbackTo, Some(i)) => {
                self.provisional.truncate(self.savepoints[i].1);
                self.savepoints.truncate(i + 1);
            }
            (SavepointOp::Release, Some(i)) => self.savepoints.truncate(i),
            // Defined before the proxy watched the transaction.
            (SavepointOp::RollbackTo, None) => self.provisional_uncertain = true,
            (SavepointOp::Release, None) => {}
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

    /// A probe was sent: until it is answered, a pinned read waits for it.
    pub fn probing(&mut self) {
        self.probes += 1;
    }

    /// A pinned session waits for the answer to a probe already sent: it may unpin.
    pub fn awaits_probe(&self) -> bool {
        self.probes > 0 && self.pinned()
    }

    /// The primary's answer to a probe sent at `epoch` (None: it failed).
    pub fn probed(&mut self, holds_state: Option<bool>, epoch: u64) {
        self.probes = self.probes.saturating_sub(1);
        let Some(holds_state) = holds_state else {
            return;
        };
        if holds_state {
            self.holds_state = true;
        } else if epoch == self.pin_epoch {
            self.holds_state = false;
        }
    }
}

/// `SAVEPOINT name`, `ROLLBACK [WORK | TRANSACTION] TO [SAVEPOINT] name` or
/// `RELEASE [SAVEPOINT] name` as the whole statement, with the name as PostgreSQL folds it.
fn savepoint_op(sql: &[u8]) -> Option<(SavepointOp, Box<[u8]>)> {
    let mut words = Words(sql);
    let is = |w: Option<&[u8]>, word: &[u8]| w.is_some_and(|w| w.eq_ignore_ascii_case(word));
    let verb = words.next()?;
    let mut next = words.next();
    let op = if verb.eq_ignore_ascii_case(b"SAVEPOINT") {
        SavepointOp::Define
    } else if verb.eq_ignore_ascii_case(b"RELEASE") {
        if is(next, b"SAVEPOINT") {
            next = words.next();
        }
        SavepointOp::Release
    } else if verb.eq_ignore_ascii_case(b"ROLLBACK") {
        if is(next, b"WORK") || is(next, b"TRANSACTION") {
            next = words.next();
        }
        if !is(next, b"TO") {
            return None;
        }
        next = words.next();
        if is(next, b"SAVEPOINT") {
            next = words.next();
        }
        SavepointOp::RollbackTo
    } else {
        return None;
    };
    let name = next?;
    if !words.rest_is_empty() {
        return None;
    }
    let name = match name.strip_prefix(b"\"").and_then(|n| n.strip_suffix(b"\"")) {
        Some(quoted) => quoted.into(),
        None => name.to_ascii_lowercase().into(),
    };
    Some((op, name))
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

    fn ok(state: &mut SessionState, effects: Effects, sets: Vec<Bytes>, status: TxStatus) {
        let watch = state.sending(effects, sets, None, status != TxStatus::Idle);
        if let Some(watch) = watch {
            state.settle(&watch, status);
        }
    }

    /// A simple query's text, run with `status` before and after.
    fn query(
        state: &mut SessionState,
        effects: Effects,
        sql: &'static str,
        before: TxStatus,
        after: TxStatus,
    ) {
        let sets = if effects.contains(Effects::ONLY_SETS) {
            set(sql)
        } else {
            Vec::new()
        };
        let watch = state.sending(
            effects,
            sets,
            Some(sql.as_bytes()),
            before != TxStatus::Idle,
        );
        if let Some(mut watch) = watch {
            watch.rolled_back = sql.contains("ROLLBACK");
            state.settle(&watch, after);
        }
    }

    fn rolled_back(state: &mut SessionState, status: TxStatus) {
        let mut watch = state
            .sending(Effects::MAY_UNPIN, Vec::new(), None, true)
            .unwrap();
        watch.rolled_back = true;
        state.settle(&watch, status);
    }

    #[test]
    fn settings_outside_a_transaction_count_at_once() {
        let mut state = SessionState::default();
        ok(&mut state, only_sets(), set("SET a.b = 1"), TxStatus::Idle);
        assert_eq!(state.settings.seq(), 1);
        let mut watch = state
            .sending(only_sets(), set("SET a.b = 2"), None, false)
            .unwrap();
        watch.error = Some("22023: bad".into());
        state.settle(&watch, TxStatus::Idle);
        assert_eq!(state.settings.seq(), 1, "a failed SET changes nothing");
        assert!(!state.pinned());
    }

    #[test]
    fn settings_in_a_transaction_count_at_commit_only() {
        let mut state = SessionState::default();
        ok(
            &mut state,
            only_sets(),
            set("SET a.b = 1"),
            TxStatus::InTransaction,
        );
        assert_eq!(state.settings.seq(), 0);
        // Every unit is watched now, to see how the transaction ends.
        ok(
            &mut state,
            Effects::NONE,
            Vec::new(),
            TxStatus::InTransaction,
        );
        ok(&mut state, Effects::MAY_UNPIN, Vec::new(), TxStatus::Idle);
        assert_eq!(state.settings.seq(), 1);

        ok(
            &mut state,
            only_sets(),
            set("SET a.b = 2"),
            TxStatus::InTransaction,
        );
        rolled_back(&mut state, TxStatus::Idle);
        assert_eq!(state.settings.seq(), 1, "rolled back");
        assert!(state
            .sending(Effects::NONE, Vec::new(), None, false)
            .is_none());
    }

    #[test]
    fn a_savepoint_rollback_or_a_mixed_string_makes_settings_unknown() {
        let mut state = SessionState::default();
        ok(
            &mut state,
            only_sets(),
            set("SET a.b = 1"),
            TxStatus::InTransaction,
        );
        rolled_back(&mut state, TxStatus::InTransaction);
        ok(&mut state, Effects::MAY_UNPIN, Vec::new(), TxStatus::Idle);
        assert!(state.pinned());
        assert_eq!(state.settings.seq(), 0);
        ok(&mut state, Effects::DISCARD_ALL, Vec::new(), TxStatus::Idle);
        assert!(!state.pinned());

        ok(&mut state, SET, Vec::new(), TxStatus::Idle);
        assert!(state.pinned(), "SET mixed with other statements");
    }

    #[test]
    fn pins_hold_until_a_probe_newer_than_them_says_the_state_is_gone() {
        let mut state = SessionState::default();
        assert!(state
            .sending(Effects::PINS, Vec::new(), None, false)
            .is_none());
        assert!(state.pinned());
        assert!(state.wants_probe(Effects::MAY_UNPIN));
        let epoch = state.pin_epoch();
        state.sending(Effects::PINS, Vec::new(), None, false);
        state.probing();
        assert!(state.awaits_probe());
        state.probed(Some(false), epoch);
        assert!(!state.awaits_probe());
        assert!(
            state.pinned(),
            "a newer pin is not undone by an older answer"
        );
        state.probed(None, state.pin_epoch());
        assert!(state.pinned(), "a failed probe changes nothing");
        state.probed(Some(false), state.pin_epoch());
        assert!(!state.pinned());
        assert!(!state.wants_probe(Effects::MAY_UNPIN));
        assert!(state.wants_probe(Effects::OPAQUE));
        assert!(!state.wants_probe(Effects::OPAQUE | Effects::COPY));
        state.probed(Some(true), 0);
        assert!(state.pinned());
    }

    #[test]
    fn a_self_contained_string_is_replayed_whole() {
        let mut state = SessionState::default();
        let tx_sets = only_sets() | Effects::TX_CONTROL;
        query(
            &mut state,
            tx_sets,
            "BEGIN; SET a.b = 1; COMMIT",
            TxStatus::Idle,
            TxStatus::Idle,
        );
        assert_eq!(state.settings.seq(), 1);
        // Rolled back to a savepoint inside: replaying the same text does the same.
        let partial = tx_sets | Effects::PARTIAL_ROLLBACK;
        let sql = "BEGIN; SET a.b = 2; SAVEPOINT p; SET a.c = 3; ROLLBACK TO SAVEPOINT p; COMMIT";
        query(&mut state, partial, sql, TxStatus::Idle, TxStatus::Idle);
        assert_eq!(state.settings.seq(), 2);
        assert!(state.settings.replay_since(1, &[])[0].starts_with(sql));
        assert!(!state.pinned());
    }

    #[test]
    fn savepoints_are_followed_statement_by_statement() {
        let mut state = SessionState::default();
        let tx = Effects::TX_CONTROL;
        query(
            &mut state,
            only_sets(),
            "SET a.b = 1",
            TxStatus::InTransaction,
            TxStatus::InTransaction,
        );
        query(
            &mut state,
            tx,
            "SAVEPOINT p",
            TxStatus::InTransaction,
            TxStatus::InTransaction,
        );
        query(
            &mut state,
            only_sets(),
            "SET a.c = 2",
            TxStatus::InTransaction,
            TxStatus::InTransaction,
        );
        query(
            &mut state,
            tx | Effects::PARTIAL_ROLLBACK,
            "ROLLBACK TO SAVEPOINT P",
            TxStatus::InTransaction,
            TxStatus::InTransaction,
        );
        query(
            &mut state,
            tx,
            "RELEASE p",
            TxStatus::InTransaction,
            TxStatus::InTransaction,
        );
        query(
            &mut state,
            tx,
            "COMMIT",
            TxStatus::InTransaction,
            TxStatus::Idle,
        );
        assert!(!state.pinned());
        assert_eq!(state.settings.replay_since(0, &[]), ["SET a.b = 1\n;\n"]);
    }

    #[test]
    fn recognises_savepoint_statements() {
        let op = |sql: &str| savepoint_op(sql.as_bytes());
        assert_eq!(
            op("SAVEPOINT s1"),
            Some((SavepointOp::Define, b"s1"[..].into()))
        );
        assert_eq!(
            op("rollback work to savepoint S1;"),
            Some((SavepointOp::RollbackTo, b"s1"[..].into()))
        );
        assert_eq!(
            op("ROLLBACK TO \"Mixed\""),
            Some((SavepointOp::RollbackTo, b"Mixed"[..].into()))
        );
        assert_eq!(
            op("RELEASE s1"),
            Some((SavepointOp::Release, b"s1"[..].into()))
        );
        assert_eq!(op("ROLLBACK"), None);
        assert_eq!(op("SAVEPOINT a; SELECT 1"), None);
    }
}
