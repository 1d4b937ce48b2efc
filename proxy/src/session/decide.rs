//! Where a unit runs: one decision for the simple and the extended protocol alike, made of
//! pure steps tested as tables. The session gathers what the steps need (the classifier's
//! verdict, its transaction and in-flight work, the replica's health) and does what they say.
//!
//! 1. [`wanted`]: where the unit would go on its own, from the verdict.
//! 2. [`plan_read`] and [`place_read`]: for a read, the primary or a replica, from the
//!    session's read preference, its pins and the replica it can have.
//! 3. [`join`] and [`joined`]: the open transaction, or an open batch, keeps the unit on its
//!    backend; work in flight on another backend makes it wait.

use super::causal::Awaited;
use super::hint::ReadPreference;
use crate::route::{Effects, Reason, Route, Verdict};

/// Which of the session's two leases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    Primary,
    Replica,
}

/// Where a unit would go on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wanted {
    /// The primary; `writes` when the unit may change data (its commit is what later reads
    /// must see, and it is never sent to a server in recovery).
    Primary { reason: Reason, writes: bool },
    /// A read: a replica if the session may read there. `hinted` when the statement's own
    /// `/* pgrepl:replica */` comment chose it.
    Read { reason: Reason, hinted: bool },
    /// Runs no statement and names nothing that lives on one server: whichever backend the
    /// session already has.
    Any,
}

/// The decision: where the unit goes, why, and whether it may write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub slot: Slot,
    pub reason: Reason,
    pub writes: bool,
}

impl Decision {
    /// A read (or a unit that changes nothing) on `slot`.
    pub fn read(slot: Slot, reason: Reason) -> Decision {
        Decision {
            slot,
            reason,
            writes: false,
        }
    }
}

/// Where a unit with this verdict would go on its own. In a `default_transaction_read_only`
/// session a plain BEGIN starts a read-only transaction, which a replica can run. A hint is
/// not a write either way; neither are settings (they write no data), nor transaction
/// control by itself (what a transaction wrote is counted by its own statements).
pub fn wanted(verdict: Verdict, default_read_only: bool) -> Wanted {
    let Verdict {
        route,
        reason,
        effects,
        ..
    } = verdict;
    match (reason, route) {
        (Reason::Transaction, _)
            if default_read_only && effects.contains(Effects::DEFAULT_MODE_BEGIN) =>
        {
            Wanted::Read {
                reason: Reason::ReadOnlyTransaction,
                hinted: false,
            }
        }
        (_, Route::Primary) => Wanted::Primary {
            reason,
            writes: verdict.may_write(),
        },
        (_, Route::Replica) => Wanted::Read {
            reason,
            hinted: reason == Reason::Hint,
        },
    }
}

/// Where an extended-protocol batch would go on its own: that of its statements, if it runs
/// any. What it names must be found there too: a portal outside a transaction can only be a
/// cursor WITH HOLD, and a statement the proxy does not track was prepared in SQL; both live
/// on the primary, as does everything of a pinned session.
pub fn wanted_by_batch(
    verdict: Option<Verdict>,
    names_primary_object: bool,
    pinned: bool,
    default_read_only: bool,
) -> Wanted {
    match verdict {
        Some(verdict) if names_primary_object => Wanted::Primary {
            reason: verdict.reason,
            writes: verdict.may_write(),
        },
        Some(verdict) => wanted(verdict, default_read_only),
        None if names_primary_object || pinned => Wanted::Primary {
            reason: Reason::SessionPinned,
            writes: false,
        },
        None => Wanted::Any,
    }
}

/// The first step of placing a read: the primary at once, or a replica to find.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadPlan {
    Primary(Reason),
    /// A replica; `forced` takes one that lags or has not replayed the session's writes
    /// (never one that is down).
    Replica {
        forced: bool,
    },
}

/// A read's plan from the session's `SET pgrepl.route` and pins. A hinted read ignores both:
/// the statement says where it runs.
pub fn plan_read(hinted: bool, preference: ReadPreference, pinned: bool) -> ReadPlan {
    if hinted {
        return ReadPlan::Replica { forced: true };
    }
    match preference {
        ReadPreference::Primary => ReadPlan::Primary(Reason::Hint),
        _ if pinned => ReadPlan::Primary(Reason::SessionPinned),
        ReadPreference::Replica => ReadPlan::Replica { forced: true },
        ReadPreference::Auto => ReadPlan::Replica { forced: false },
    }
}

/// What the session found when it looked for a replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaView {
    /// One that may serve the read.
    Ready,
    /// One that the read may wait for: it has not replayed what the session must see yet.
    Waits(Awaited),
    /// One that has not replayed what the session must see, and will not in time.
    NotReplayed,
    /// None: why.
    Unavailable(Reason),
}

/// Where a read planned for a replica goes, and why.
pub fn place_read(view: ReplicaView, reason: Reason) -> (Slot, Reason) {
    match view {
        ReplicaView::Ready | ReplicaView::Waits(_) => (Slot::Replica, reason),
        ReplicaView::NotReplayed => (Slot::Primary, Reason::ReadYourWrites),
        ReplicaView::Unavailable(why) => (Slot::Primary, why),
    }
}

/// Where a unit goes given where it would go on its own; None when it must first wait for
/// work in flight: on another backend (replies must not interleave), or work that may end
/// the open transaction (then the unit's place is not known yet).
pub fn join(
    standalone: Slot,
    open_batch: Option<Slot>,
    tx: Option<Slot>,
    inflight: Option<Slot>,
) -> Option<Slot> {
    if let Some(slot) = open_batch {
        return Some(slot);
    }
    match (tx, inflight) {
        (Some(tx), _) if tx == standalone => Some(tx),
        (Some(_), Some(_)) => None,
        (Some(tx), None) => Some(tx),
        (None, Some(busy)) if busy != standalone => None,
        (None, _) => Some(standalone),
    }
}

/// The decision once joined: a unit that goes where the open transaction (or batch) is, not
/// where it would go on its own, goes there because of it; so does a read inside a
/// transaction.
pub fn joined(standalone: Decision, slot: Slot, tx: Option<Slot>) -> Decision {
    let reason = if standalone.slot != slot || (tx == Some(slot) && !standalone.writes) {
        Reason::Transaction
    } else {
        standalone.reason
    };
    Decision {
        slot,
        reason,
        writes: standalone.writes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Reason::*;
    use Slot::{Primary as P, Replica as R};

    fn verdict(route: Route, reason: Reason, effects: Effects) -> Verdict {
        Verdict {
            route,
            reason,
            effects,
            hint: crate::route::CausalHint::NONE,
        }
    }

    #[test]
    fn what_a_unit_wants_on_its_own() {
        let none = Effects::NONE;
        let begin = Effects::DEFAULT_MODE_BEGIN | Effects::TX_CONTROL;
        let primary = |reason, writes| Wanted::Primary { reason, writes };
        let read = |reason, hinted| Wanted::Read { reason, hinted };
        // (route, reason, effects, default_read_only, wanted)
        let cases = [
            (Route::Replica, Read, none, false, read(Read, false)),
            (Route::Replica, Show, none, true, read(Show, false)),
            (Route::Primary, Write, none, false, primary(Write, true)),
            (
                Route::Primary,
                Function,
                none,
                false,
                primary(Function, true),
            ),
            (Route::Primary, Utility, none, false, primary(Utility, true)),
            (
                Route::Primary,
                Unparseable,
                none,
                false,
                primary(Unparseable, true),
            ),
            // Transaction control writes nothing by itself.
            (
                Route::Primary,
                Transaction,
                begin,
                false,
                primary(Transaction, false),
            ),
            (
                Route::Primary,
                Transaction,
                none,
                true,
                primary(Transaction, false),
            ),
            (
                Route::Primary,
                Transaction,
                begin,
                true,
                read(ReadOnlyTransaction, false),
            ),
            (
                Route::Replica,
                ReadOnlyTransaction,
                none,
                false,
                read(ReadOnlyTransaction, false),
            ),
            // A hint chooses, the same in both protocols, and is no write.
            (Route::Primary, Hint, none, false, primary(Hint, false)),
            // What the primary answers for itself is read there, not written.
            (
                Route::Primary,
                NodeLocal,
                none,
                false,
                primary(NodeLocal, false),
            ),
            (Route::Replica, Hint, none, false, read(Hint, true)),
            (
                Route::Primary,
                Utility,
                Effects::ONLY_SETS | Effects::SESSION_SET,
                false,
                primary(Utility, false),
            ),
        ];
        for (route, reason, effects, read_only, want) in cases {
            let got = wanted(verdict(route, reason, effects), read_only);
            assert_eq!(
                got, want,
                "{route:?} {reason:?} {effects:?} read_only={read_only}"
            );
        }
    }

    #[test]
    fn a_batch_that_runs_nothing_follows_what_it_names() {
        let pinned = Wanted::Primary {
            reason: SessionPinned,
            writes: false,
        };
        // (verdict, names a primary object, pinned, wanted)
        let cases = [
            (None, false, false, Wanted::Any),
            (None, true, false, pinned),
            (None, false, true, pinned),
            (
                Some(verdict(Route::Replica, Read, Effects::NONE)),
                true,
                false,
                Wanted::Primary {
                    reason: Read,
                    writes: false,
                },
            ),
            (
                Some(verdict(Route::Replica, Read, Effects::NONE)),
                false,
                true,
                Wanted::Read {
                    reason: Read,
                    hinted: false,
                },
            ),
        ];
        for (v, names, pin, want) in cases {
            assert_eq!(
                wanted_by_batch(v, names, pin, false),
                want,
                "{v:?} {names} {pin}"
            );
        }
    }

    #[test]
    fn reads_planned_by_preference_pins_and_hints() {
        use ReadPreference::{Auto, Primary as Pref, Replica as Rep};
        // (hinted, preference, pinned, plan)
        let cases = [
            (false, Auto, false, ReadPlan::Replica { forced: false }),
            (false, Rep, false, ReadPlan::Replica { forced: true }),
            (false, Pref, false, ReadPlan::Primary(Hint)),
            (false, Auto, true, ReadPlan::Primary(SessionPinned)),
            (false, Rep, true, ReadPlan::Primary(SessionPinned)),
            (false, Pref, true, ReadPlan::Primary(Hint)),
            (true, Pref, true, ReadPlan::Replica { forced: true }),
            (true, Auto, false, ReadPlan::Replica { forced: true }),
        ];
        for (hinted, pref, pinned, want) in cases {
            assert_eq!(
                plan_read(hinted, pref, pinned),
                want,
                "{hinted} {pref:?} {pinned}"
            );
        }
        assert_eq!(place_read(ReplicaView::Ready, Show), (R, Show));
        assert_eq!(
            place_read(ReplicaView::NotReplayed, Read),
            (P, ReadYourWrites)
        );
        assert_eq!(place_read(ReplicaView::Unavailable(Lag), Read), (P, Lag));
    }

    #[test]
    fn transactions_batches_and_work_in_flight() {
        // (standalone, open batch, transaction, in flight, joined)
        let cases = [
            (R, None, None, None, Some(R)),
            (R, None, None, Some(R), Some(R)),
            (R, None, None, Some(P), None),
            (P, None, None, Some(R), None),
            (R, Some(P), None, Some(P), Some(P)),
            (R, None, Some(P), None, Some(P)),
            (R, None, Some(P), Some(P), None),
            (P, None, Some(P), Some(P), Some(P)),
            (R, None, Some(R), Some(R), Some(R)),
        ];
        for (standalone, batch, tx, inflight, want) in cases {
            assert_eq!(
                join(standalone, batch, tx, inflight),
                want,
                "{standalone:?} batch={batch:?} tx={tx:?} inflight={inflight:?}"
            );
        }
        let read = Decision {
            slot: R,
            reason: Read,
            writes: false,
        };
        let write = Decision {
            slot: P,
            reason: Write,
            writes: true,
        };
        assert_eq!(joined(read, R, None), read);
        assert_eq!(joined(read, P, Some(P)).reason, Transaction);
        assert_eq!(joined(read, R, Some(R)).reason, Transaction);
        assert_eq!(joined(write, P, Some(P)), write);
    }
}
