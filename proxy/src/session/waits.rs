//! The session's side of causal reads (`causal` has the state and the pure steps): what a
//! read on a replica must see, waiting for it there, and what the primary's answers and
//! commit positions add to it.

use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context, Poll};

use pgrepl_config::ReadYourWrites;

use super::causal::{
    self, causal_step, Awaited, CausalStep, CausalView, CausalWait, WaitOn, WaitState,
};
use super::*;
use crate::backend::BackendId;
use crate::health::WalSample;

/// How many waits back a replica's stuck replay is remembered.
const HOPELESS_MEMORY: u64 = 10;
/// For how many waits the oldest position wanted of a replica must have gone unreplayed for
/// it to be taken for stuck: a standby's replay pauses for longer than one wait now and then
/// on a busy machine (measured: at 16 clients on 2 cores, a threshold of one wait sent two
/// thirds of the reads to the primary).
const HOPELESS_AFTER: u64 = 2;

impl<R, W> Session<R, W>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    /// What a read on `replica` must do first to see what the session must see.
    #[inline]
    pub(super) fn causal_step(&mut self, replica: BackendId) -> CausalStep {
        let mode = self.unit_hint.mode_in(self.causal.mode);
        if mode == ReadYourWrites::Off {
            return CausalStep::Ready;
        }
        let health = &self.shared.health;
        let positions = &health.positions;
        let c = &mut self.causal;
        if c.wait.is_none() {
            // What this read must see besides the session's own, fixed when it arrives.
            match mode {
                // Every commit acknowledged before it arrived: a look-up sent after now.
                ReadYourWrites::Linearizable => c.after_round = positions.next_round(),
                // Every commit acknowledged through this proxy before it arrived.
                ReadYourWrites::Global => {
                    c.after_round = c.after_round.max(self.shared.commit_round.load(Relaxed))
                }
                _ => {}
            }
            // A statement asks for its session's own commits, which the session's mode does
            // not track ("off", "linearizable"): they are bounded by a look-up from now on.
            if causal::keeps_floor(mode) && !causal::keeps_floor(c.mode) {
                c.after_round = c.after_round.max(positions.next_round());
            }
        }
        let needed = c.after_round;
        if c.floor == 0 && needed <= c.folded {
            return CausalStep::Ready;
        }
        let mut pending_round = needed > c.folded;
        if pending_round && positions.rounds().reached() >= needed {
            c.floor = c.floor.max(positions.visible());
            c.folded = needed;
            c.after_round = 0;
            pending_round = false;
        }
        let gate = health.replay_gate(replica);
        let replayed = gate.reached();
        let budget = crate::health::nanos(self.routing.causal_wait);
        if budget == 0 && pending_round {
            // Nothing waits for it, but a later read finds it done.
            positions.kick();
        }
        // Replay seen stuck for longer than a few waits, lately: waiting is hopeless, and
        // reads go straight to the primary until the replica moves again.
        let hopeless = replayed < c.floor && {
            let stalled =
                gate.stalled_for(health.now_nanos(), budget.saturating_mul(HOPELESS_MEMORY));
            stalled > budget.saturating_mul(HOPELESS_AFTER)
        };
        causal_step(CausalView {
            floor: c.floor,
            pending_round,
            replayed,
            hopeless,
            expired: budget == 0 || c.expired(),
            primary_down: health.writer().state == WriterState::Down,
        })
    }

    /// The read waits (it stays in `cin`) for `awaited`, within the unit's deadline; false
    /// when it cannot (no replica to wait for).
    pub(super) fn await_position(&mut self, awaited: Awaited) -> bool {
        let health = &self.shared.health;
        let (on, target) = match awaited {
            Awaited::Round => (WaitOn::Round, self.causal.after_round),
            Awaited::Replay(target) => {
                let Some(replica) = self.client.replica.as_ref().map(ReplicaLease::backend) else {
                    return false;
                };
                // An asynchronous commit a standby cannot have before the primary flushes it.
                if target > health.positions.flushed() {
                    health.positions.want_flushed(target);
                }
                health.replay_gate(replica).want(target, health.now_nanos());
                (WaitOn::Replay(replica), target)
            }
        };
        match &mut self.causal.wait {
            Some(wait) => {
                if wait.on != on {
                    gate_of(health, wait.on).forget(self.causal.id);
                }
                wait.on = on;
                wait.target = target;
                wait.state = WaitState::Waiting;
            }
            None => {
                self.causal.wait = Some(Box::new(CausalWait {
                    on,
                    target,
                    state: WaitState::Waiting,
                    started: crate::telemetry::clock::now_nanos(),
                    deadline: Box::pin(tokio::time::sleep(self.routing.causal_wait)),
                }))
            }
        }
        true
    }

    /// Ready when the awaited position is reached or the wait's deadline passed.
    #[inline]
    pub(super) fn poll_causal(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(wait) = self.causal.wait.as_deref_mut() else {
            return Poll::Pending;
        };
        let (health, id) = (&self.shared.health, self.causal.id);
        wait.poll(cx, |on, target, cx| {
            gate_of(health, on).poll_reach(target, id, cx)
        })
    }

    /// The read that waited is placed: its wait ends, and is counted.
    #[cold]
    pub(super) fn waited(&mut self, decision: Decision) {
        let Some(wait) = self.stop_waiting() else {
            return;
        };
        let waited = crate::telemetry::clock::now_nanos().saturating_sub(wait.started);
        if let (Some(tally), Some(replica)) = (&self.counts.tally, &self.client.replica) {
            tally.causal_wait(replica.backend(), waited, decision.slot == Slot::Replica);
        }
    }

    /// Nobody waits for the session's read any more (placed, or the session ends): the
    /// wait that ended, if there was one.
    pub(super) fn stop_waiting(&mut self) -> Option<Box<CausalWait>> {
        let wait = self.causal.wait.take()?;
        gate_of(&self.shared.health, wait.on).forget(self.causal.id);
        Some(wait)
    }

    /// The primary answered units of the client's: a commit among them is noted, and
    /// whatever they saw that no commit position covers must be seen by later reads.
    #[inline]
    pub(super) fn primary_answered(&mut self, seen: &relay::Relayed) {
        let positions = &self.shared.health.positions;
        if seen.ended_tx && self.pending_write {
            // A write pipelined after the commit seen may still be on its way.
            self.pending_write = self
                .leases
                .peek(Slot::Primary)
                .is_some_and(|conn| conn.proto.owes_write());
            // Published, whatever this session's mode, before the client hears of the
            // commit: every "global" read that starts after that sees a position looked up
            // after it.
            self.shared
                .commit_round
                .fetch_max(positions.next_round(), Relaxed);
        }
        let c = &mut self.causal;
        if seen.ended_tx && c.commits_asked == 0 {
            c.tx_async = false;
        }
        if !causal::keeps_floor(c.mode) {
            return;
        }
        let answered = seen.units_done;
        if causal::answers_uncovered(answered, seen.units_before_commit_position, c.commits_asked) {
            c.after_round = positions.next_round();
        }
    }

    /// A unit with `effects` goes to the primary: one that may make commits asynchronous
    /// makes this transaction's position cover the insert position, and tells the position
    /// service when the session does not ask for its commits' positions itself.
    #[cold]
    pub(super) fn may_commit_asynchronously(&mut self, effects: Effects) {
        self.causal.tx_async = true;
        if effects.contains(Effects::SYNC_COMMIT) && !causal::keeps_floor(self.causal.mode) {
            self.shared.health.positions.note_async_commits();
        }
    }

    /// The primary's position right after a unit that may have committed (None: unknown).
    pub(super) fn commit_sampled(&mut self, sample: Option<WalSample>) {
        let c = &mut self.causal;
        c.commits_asked = c.commits_asked.saturating_sub(1);
        let tx_async = std::mem::take(&mut c.tx_async);
        match sample {
            Some(mut sample) => {
                sample.async_commit |= tx_async;
                let position = self.shared.health.positions.commit_sample(sample);
                // It covers everything the session saw before it.
                c.floor = c.floor.max(position);
                c.after_round = 0;
            }
            None => self.position_unknown(),
        }
    }

    /// What the session saw is bounded only by a position looked up from now on.
    pub(super) fn position_unknown(&mut self) {
        if self.causal.mode != ReadYourWrites::Off {
            self.causal.after_round = self.shared.health.positions.next_round();
        }
    }
}

fn gate_of(health: &crate::health::Health, on: WaitOn) -> &crate::health::LsnGate {
    match on {
        WaitOn::Round => health.positions.rounds(),
        WaitOn::Replay(replica) => health.replay_gate(replica),
    }
}
