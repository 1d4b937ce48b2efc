//! Causal reads: what a session's next replica read must see, and the pure steps that decide
//! whether it may run there now, must wait on the replica first, or goes to the primary.
//!
//! - The **floor** is a WAL position: the session's own commits raise it (the position the
//!   primary reports on the same connection right after the committing unit, asked in the
//!   same flight so the client's answer is not delayed), and so does whatever it read on the
//!   primary (monotonic reads).
//! - A primary answer the floor does not cover yet sets **after_round**: the primary's
//!   position from a look-up round sent after that answer (`health::PrimaryPositions`,
//!   shared by every session), folded into the floor when the session next wants a replica.
//! - A read whose replica has not replayed the floor **waits on the replica** for up to
//!   `[routing] causal_wait`, then goes to the primary.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};

use pgrepl_config::ReadYourWrites;
use tokio::time::Sleep;

use crate::backend::BackendId;
use crate::route::Effects;

/// What the decision needs to know about the session and its replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CausalView {
    /// The position the read must see (0: none).
    pub floor: u64,
    /// A primary position from a look-up not answered yet must be seen too.
    pub pending_round: bool,
    /// What the replica has replayed, as closely as known.
    pub replayed: u64,
    /// The replica's replay has made no progress for longer than the wait allows: waiting
    /// is hopeless (replay paused, delayed, or far behind).
    pub hopeless: bool,
    /// This read has already waited as long as it may.
    pub expired: bool,
    /// The primary is down: what the replica has is the newest data there is.
    pub primary_down: bool,
}

/// What a read planned for a replica does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CausalStep {
    /// Runs on the replica now.
    Ready,
    /// Waits, then decides anew.
    Wait(Awaited),
    /// Goes to the primary (reason `read_your_writes`).
    Primary,
}

/// What a read waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Awaited {
    /// A primary look-up round.
    Round,
    /// The replica's replay of this position.
    Replay(u64),
}

/// See [`CausalStep`]; rows in priority order.
pub fn causal_step(v: CausalView) -> CausalStep {
    if v.floor == 0 && !v.pending_round {
        return CausalStep::Ready;
    }
    if v.primary_down {
        return CausalStep::Ready;
    }
    let behind = v.replayed < v.floor;
    // A later look-up can only raise the floor: if this one is out of reach, so is that.
    if behind && (v.hopeless || v.expired) {
        return CausalStep::Primary;
    }
    if v.pending_round {
        return if v.expired {
            CausalStep::Primary
        } else {
            CausalStep::Wait(Awaited::Round)
        };
    }
    if behind {
        CausalStep::Wait(Awaited::Replay(v.floor))
    } else {
        CausalStep::Ready
    }
}

/// Whether `mode` keeps a floor of the session's own commits and primary reads (the others
/// ask nothing, or look the position up for every read).
pub fn keeps_floor(mode: ReadYourWrites) -> bool {
    matches!(mode, ReadYourWrites::Session | ReadYourWrites::Global)
}

/// Whether the position of a commit is asked for right behind a unit on the primary: in the
/// modes that keep per-session floors, after a unit that ran on the primary and may have
/// written (or ends a transaction that did), with a ReadyForQuery to answer it and no
/// transaction left open. Not inside a transaction: a client's cancel meant for its own
/// statement could hit the question and abort the transaction. Not after a COPY, which may
/// leave the connection in copy mode.
#[inline]
pub fn asks_commit_position(
    mode: ReadYourWrites,
    synced: bool,
    on_primary: bool,
    wrote: bool,
    in_tx: bool,
    effects: Effects,
) -> bool {
    if !(on_primary && wrote) {
        return false;
    }
    let leaves_no_tx = if in_tx || effects.contains(Effects::TX_CONTROL) {
        effects.contains(Effects::ENDS_TX)
    } else {
        true
    };
    keeps_floor(mode) && synced && leaves_no_tx && !effects.contains(Effects::COPY)
}

/// Whether client units the primary just answered saw something no commit position covers:
/// `done` of them ended in this pass, a position question was answered after `before` of
/// them (it covers those), and `asked` questions are still on their way (each covers the
/// units before it).
pub fn answers_uncovered(done: usize, before: Option<usize>, asked: u32) -> bool {
    match before {
        Some(before) => done > before,
        None => asked == 0 && done > 0,
    }
}

/// What a waiting read waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitOn {
    Round,
    Replay(BackendId),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitState {
    Waiting,
    Reached,
    Expired,
}

/// A read waiting for a position; one deadline covers the whole wait.
pub struct CausalWait {
    pub on: WaitOn,
    pub target: u64,
    pub state: WaitState,
    /// When it began (`telemetry::clock::now_nanos`).
    pub started: u64,
    pub deadline: Pin<Box<Sleep>>,
}

impl CausalWait {
    /// Ready once when the target is reached or the deadline passes; the session then
    /// decides anew. `reach` polls the gate.
    pub fn poll(
        &mut self,
        cx: &mut Context<'_>,
        reach: impl FnOnce(WaitOn, u64, &mut Context<'_>) -> Poll<()>,
    ) -> Poll<()> {
        if self.state != WaitState::Waiting {
            return Poll::Pending;
        }
        if reach(self.on, self.target, cx).is_ready() {
            self.state = WaitState::Reached;
            return Poll::Ready(());
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            self.state = WaitState::Expired;
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

/// A session's causal state.
pub struct Causal {
    /// `[routing] read_your_writes`, or the session's own.
    pub mode: ReadYourWrites,
    /// The session chose its mode (`SET pgrepl.read_your_writes`): a reloaded default does
    /// not replace it.
    pub chosen: bool,
    pub floor: u64,
    /// 0, or the first look-up round whose position the next replica read must also see.
    pub after_round: u64,
    /// The highest round whose position is in `floor`.
    pub folded: u64,
    /// Commit position questions on their way behind units on the primary: those units'
    /// answer needs no look-up round.
    pub commits_asked: u32,
    /// The open transaction (or unit) may have made its commit asynchronous where the
    /// session's setting does not say so (`SET LOCAL synchronous_commit`, a `set_config`
    /// of it, `DO`, `CALL`): its position must cover the insert position.
    pub tx_async: bool,
    pub wait: Option<Box<CausalWait>>,
    /// This session's id among a gate's waiters.
    pub id: u64,
}

impl Causal {
    pub fn new(mode: ReadYourWrites) -> Causal {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        Causal {
            mode,
            chosen: false,
            floor: 0,
            after_round: 0,
            folded: 0,
            commits_asked: 0,
            tx_async: false,
            wait: None,
            id: NEXT_ID.fetch_add(1, Relaxed),
        }
    }

    /// Whether this read may wait no longer.
    pub fn expired(&self) -> bool {
        self.wait
            .as_ref()
            .is_some_and(|w| w.state == WaitState::Expired)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use CausalStep::*;

    const WAIT_ROUND: CausalStep = Wait(Awaited::Round);
    const fn wait_replay(at: u64) -> CausalStep {
        Wait(Awaited::Replay(at))
    }

    fn view(floor: u64, pending_round: bool, replayed: u64) -> CausalView {
        CausalView {
            floor,
            pending_round,
            replayed,
            hopeless: false,
            expired: false,
            primary_down: false,
        }
    }

    #[test]
    fn causal_steps() {
        let hopeless = |v: CausalView| CausalView {
            hopeless: true,
            ..v
        };
        let expired = |v: CausalView| CausalView { expired: true, ..v };
        let down = |v: CausalView| CausalView {
            primary_down: true,
            ..v
        };
        let table = [
            (
                view(0, false, 0),
                Ready,
                "never wrote, never read the primary",
            ),
            (hopeless(view(0, false, 0)), Ready, "nothing to see"),
            (view(100, false, 100), Ready, "replayed"),
            (view(100, false, 150), Ready, "replayed past"),
            (view(100, false, 50), wait_replay(100), "behind"),
            (hopeless(view(100, false, 50)), Primary, "replay stalled"),
            (expired(view(100, false, 50)), Primary, "waited enough"),
            (view(0, true, 0), WAIT_ROUND, "a primary read to cover"),
            (
                view(100, true, 150),
                WAIT_ROUND,
                "replayed the floor, not the round",
            ),
            (expired(view(0, true, 0)), Primary, "no round in time"),
            (
                hopeless(view(100, true, 50)),
                Primary,
                "out of reach already",
            ),
            (
                hopeless(view(0, true, 0)),
                WAIT_ROUND,
                "no floor to judge yet",
            ),
            (
                down(view(100, true, 50)),
                Ready,
                "the replica has the newest",
            ),
            (
                down(expired(view(100, false, 50))),
                Ready,
                "even after a wait",
            ),
        ];
        for (v, step, why) in table {
            assert_eq!(causal_step(v), step, "{why}: {v:?}");
        }
    }

    #[test]
    fn which_primary_answers_a_commit_position_covers() {
        for (done, before, asked, uncovered, why) in [
            (0, None, 0, false, "nothing answered"),
            (1, None, 0, true, "a read, no question"),
            (1, None, 1, false, "the question behind it is on its way"),
            (1, Some(1), 0, false, "answered right after it"),
            (2, Some(1), 0, true, "a unit after the question"),
            (0, Some(0), 0, false, "only the question"),
        ] {
            assert_eq!(answers_uncovered(done, before, asked), uncovered, "{why}");
        }
    }

    #[test]
    fn when_a_commit_position_is_asked() {
        use ReadYourWrites::*;
        let tx = Effects::TX_CONTROL;
        let ends = Effects::TX_CONTROL | Effects::ENDS_TX;
        let none = Effects::NONE;
        let table = [
            // (mode, synced, on primary, wrote, in tx, effects, asked, why)
            (
                Session,
                true,
                true,
                true,
                false,
                none,
                true,
                "autocommit write",
            ),
            (
                Global,
                true,
                true,
                true,
                false,
                none,
                true,
                "global keeps floors too",
            ),
            (Off, true, true, true, false, none, false, "off"),
            (
                Linearizable,
                true,
                true,
                true,
                false,
                none,
                false,
                "reads look up anyway",
            ),
            (
                Session,
                false,
                true,
                true,
                false,
                none,
                false,
                "up to a Flush",
            ),
            (Session, true, false, true, false, none, false, "a replica"),
            (Session, true, true, false, false, none, false, "a read"),
            (
                Session,
                true,
                true,
                true,
                true,
                none,
                false,
                "inside a transaction",
            ),
            (Session, true, true, true, true, ends, true, "COMMIT"),
            (Session, true, true, true, false, tx, false, "BEGIN; INSERT"),
            (
                Session,
                true,
                true,
                true,
                false,
                ends,
                true,
                "BEGIN; INSERT; COMMIT",
            ),
            (
                Session,
                true,
                true,
                true,
                false,
                Effects::COPY,
                false,
                "COPY",
            ),
        ];
        for (mode, synced, primary, wrote, in_tx, effects, asked, why) in table {
            assert_eq!(
                asks_commit_position(mode, synced, primary, wrote, in_tx, effects),
                asked,
                "{why}"
            );
        }
    }
}
