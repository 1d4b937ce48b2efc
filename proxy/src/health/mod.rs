//! Backend health: a monitor task per backend samples it (reachable? in recovery? WAL
//! position?) and publishes what it found here; sessions read it with plain atomic loads.
//! The tables are indexed by backend id and sized for every id the registry may hand out
//! (`Backends::CAPACITY`), so a reload adds and retires replicas without moving them.
//!
//! A replica is readable when it is up, in recovery and at most `[routing] max_replica_lag`
//! stale, staleness being measured by WAL position (see `lag`): replay timestamps would call
//! an idle, fully caught-up replica stale.
//!
//! The writer is the first node, or with `[routing] follow_primary` whichever node `elect`
//! chooses after each sample; sessions read it from one word (see `writer`).

mod elect;
mod gate;
mod lag;
mod lsn;
mod monitor;
mod nudge;
mod position;
mod probe;
mod replay;
mod report;
mod state;
mod writer;

use std::fmt;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use elect::{elect, Election, NodeView};
use lag::History;
use probe::Sample;
use state::{BackendState, CAUGHT_UP, NEVER};

pub use elect::WriterState;
pub use gate::LsnGate;
pub use lsn::format as format_lsn;
pub use monitor::Monitor;
pub use position::{PrimaryPositions, WalSample, POSITION_SQL};
pub use probe::{column, Probe, ProbeError};
pub use writer::Writer;

use crate::backend::{BackendId, Backends};

/// Why a backend may not serve what a session wants from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unusable {
    /// The monitor's last sample failed (for a replica also: not sampled yet).
    Down,
    /// A replica staler than `[routing] max_replica_lag`.
    Lagging,
    /// A replica that is not a standby (promoted?).
    NotInRecovery,
    /// A primary that is a standby.
    InRecovery,
    /// A replica a reload removed from the configuration.
    Removed,
    /// Out of recovery on a timeline older than another node's (an old primary back).
    Fenced,
    /// The writer, in a state that takes no writes (conflict, confirming another...).
    Writer(WriterState),
}

impl fmt::Display for Unusable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Unusable::Down => "down",
            Unusable::Lagging => "lagging",
            Unusable::NotInRecovery => "not in recovery",
            Unusable::InRecovery => "in recovery",
            Unusable::Removed => "removed",
            Unusable::Fenced => "fenced",
            Unusable::Writer(state) => state.as_str(),
        })
    }
}

/// A backend's health as last sampled.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackendView {
    /// The last check succeeded (before the first: assumed for the primary, not a replica).
    pub up: bool,
    /// At least one check has succeeded since the proxy started.
    pub sampled: bool,
    pub in_recovery: bool,
    /// Write position (primary) or replay position (replica) at the last successful check.
    pub lsn: Option<u64>,
    /// Replicas: see [`Health::staleness`].
    pub staleness: Option<Duration>,
    /// Its timeline at the last successful check, if known.
    pub timeline: Option<u32>,
    /// Out of recovery on an older timeline than another node's: no reads, no writes.
    pub fenced: bool,
}

pub struct Health {
    /// Times are nanoseconds since this instant (the proxy's start).
    clock: Instant,
    /// `[routing] max_replica_lag` in nanoseconds; a reload may change it.
    max_lag: AtomicU64,
    /// By backend index: the primary, then the replicas.
    backends: Box<[BackendState]>,
    /// Backend ids handed out so far: the states in use are `..span`.
    span: AtomicUsize,
    /// Only the monitor's tasks take this lock; it orders their updates of `behind_since`
    /// and the elections.
    monitored: Mutex<Monitored>,
    /// The writer (`Writer::pack`); stored under `monitored`'s lock.
    writer: AtomicU64,
    /// `[routing] writer_confirmations` when following the primary; None: the first node is
    /// the writer.
    follow: Option<u32>,
    /// `[routing] writer_wait`.
    writer_wait: Duration,
    /// Told each time the writer word changes (following the primary, or a hold lifted).
    moved: Notify,
    /// The admin console session holding writes (`HOLD WRITES`); 0: none. Changed under
    /// `monitored`'s lock, with the word's `HELD` bit.
    hold: AtomicU64,
    /// By backend index: replay positions that reads wait for (the primary's is unused).
    replay: Box<[LsnGate]>,
    /// The primary's position, looked up for waiting reads.
    pub positions: PrimaryPositions,
}

/// What the monitor's tasks update together.
struct Monitored {
    /// The writer's positions: the replicas' staleness is measured against them.
    history: History,
    election: Election,
}

impl Health {
    /// Health for `backends` backends before any sample, the first node the writer.
    pub fn new(backends: usize, max_replica_lag: Duration) -> Health {
        let max_lag = nanos(max_replica_lag);
        Health {
            clock: Instant::now(),
            max_lag: AtomicU64::new(max_lag),
            backends: BackendId::all(Backends::CAPACITY)
                .map(|id| BackendState::unsampled(id.is_first()))
                .collect(),
            span: AtomicUsize::new(backends),
            monitored: Mutex::new(Monitored {
                history: History::new(max_lag),
                election: Election::assumed(),
            }),
            writer: AtomicU64::new(Writer::FIRST.pack()),
            follow: None,
            writer_wait: Duration::ZERO,
            moved: Notify::new(),
            hold: AtomicU64::new(0),
            replay: BackendId::all(Backends::CAPACITY)
                .map(|_| LsnGate::default())
                .collect(),
            positions: PrimaryPositions::default(),
        }
    }

    /// The writer is chosen among the nodes by what they say (`[routing] follow_primary`),
    /// a new one after `confirmations` samples in a row agree.
    pub fn following(mut self, confirmations: u32) -> Health {
        self.follow = Some(confirmations);
        // Until every node has answered once, writes wait (see `Election::assumed`).
        let assumed = Writer::of(&Election::assumed());
        self.writer = AtomicU64::new(assumed.pack());
        self
    }

    /// Writes wait up to `writer_wait` while a new writer is confirmed or writes are held.
    pub fn waiting_up_to(mut self, writer_wait: Duration) -> Health {
        self.writer_wait = writer_wait;
        self
    }

    /// `[routing] writer_wait`.
    pub fn writer_wait(&self) -> Duration {
        self.writer_wait
    }

    /// Completes at the next change of the writer word after this call.
    pub fn writer_moved(&self) -> tokio::sync::futures::Notified<'_> {
        self.moved.notified()
    }

    /// Why no node takes writes in `state` (Conflict, NoCandidate, Fenced), for the error
    /// a write gets; `name` gives a node's name by index.
    pub fn why_no_writer(&self, state: WriterState, name: &dyn Fn(usize) -> String) -> String {
        let e = self.election();
        match (state, &e.candidates[..], e.writer) {
            (WriterState::Conflict, [a, b, ..], _) => format!(
                "{} and {} are both out of recovery on timeline {}; no writes until one is gone",
                name(*a),
                name(*b),
                e.high_water
            ),
            (WriterState::Fenced, _, Some(w)) => format!(
                "{0} is fenced: out of recovery on timeline {1} but timeline {2} exists; \
                 run `pgrepl-proxy rejoin {0}`",
                name(w),
                self.backends[w].timeline.load(Relaxed),
                e.high_water
            ),
            _ => format!(
                "a node that may not be the writer (not promotable, or of another cluster) is \
                 out of recovery on timeline {}; no writes until it is gone",
                e.high_water
            ),
        }
    }

    /// Whether the writer follows the servers (`[routing] follow_primary`).
    pub fn follows(&self) -> bool {
        self.follow.is_some()
    }

    /// Node `backend`'s name and whether it may be chosen as the writer: for every node
    /// before the monitor starts, and for a replica a reload adds.
    pub fn describe(&self, backend: BackendId, name: &str, promotable: bool) {
        let state = &self.backends[backend.index()];
        state.promotable.store(promotable, Relaxed);
        let _ = state.name.set(name.into());
    }

    /// A replica a reload added, under a new id: unusable until its first sample.
    pub fn admit(&self, backend: BackendId, name: &str, promotable: bool) {
        self.describe(backend, name, promotable);
        self.span.fetch_max(backend.index() + 1, Release);
    }

    /// The writer word (`Writer::pack`): a session compares it with the one it saw last.
    #[inline]
    pub fn writer_word(&self) -> u64 {
        self.writer.load(Acquire)
    }

    /// The writer now.
    pub fn writer(&self) -> Writer {
        Writer::unpack(self.writer_word())
    }

    /// Whether the writer takes writes now, as a backend's usability.
    pub fn write_state(&self) -> Result<(), Unusable> {
        match self.writer().state {
            WriterState::Serving => Ok(()),
            WriterState::Down => Err(Unusable::Down),
            WriterState::ReadOnly => Err(Unusable::InRecovery),
            state => Err(Unusable::Writer(state)),
        }
    }

    /// The election in force (for the status page and the console).
    pub fn election(&self) -> Election {
        locked(&self.monitored).election.clone()
    }

    /// A replica a reload removed, once its monitor has stopped: unusable from now on
    /// ([`Unusable::Removed`]), and reads waiting for it decide anew.
    pub fn retire(&self, backend: BackendId) {
        let state = &self.backends[backend.index()];
        state.retired.store(true, Release);
        state.up.store(false, Release);
        self.replay[backend.index()].restart();
    }

    /// `[routing] max_replica_lag` reloaded.
    pub fn set_max_replica_lag(&self, max_replica_lag: Duration) {
        let max_lag = nanos(max_replica_lag);
        let mut monitored = locked(&self.monitored);
        monitored.history.set_horizon(max_lag);
        self.max_lag.store(max_lag, Relaxed);
    }

    /// `[routing] max_replica_lag` in nanoseconds.
    pub fn max_lag(&self) -> u64 {
        self.max_lag.load(Relaxed)
    }

    /// What replica `backend` has replayed, as closely as known, and the sessions waiting
    /// for more.
    #[inline]
    pub fn replay_gate(&self, backend: BackendId) -> &LsnGate {
        &self.replay[backend.index()]
    }

    /// Now, in nanoseconds on the monitor's clock.
    pub fn now_nanos(&self) -> u64 {
        self.nanos_at(Instant::now())
    }

    fn nanos_at(&self, at: Instant) -> u64 {
        nanos(at.saturating_duration_since(self.clock))
    }

    /// Whether replica `backend` may serve reads now.
    #[inline]
    pub fn readable(&self, backend: BackendId) -> Result<(), Unusable> {
        let state = &self.backends[backend.index()];
        if !state.up.load(Relaxed) {
            return Err(state.down_or_removed());
        }
        if !state.in_recovery.load(Relaxed) {
            return Err(if state.fenced.load(Relaxed) {
                Unusable::Fenced
            } else {
                Unusable::NotInRecovery
            });
        }
        // Behind a writer that is down, a replica cannot catch up, and its data is the
        // newest there is: it serves reads rather than none being served.
        if self.staleness_nanos(backend) > self.max_lag.load(Relaxed) && self.writer_up() {
            return Err(Unusable::Lagging);
        }
        Ok(())
    }

    /// The writer's last sample succeeded.
    fn writer_up(&self) -> bool {
        self.writer()
            .backend
            .is_some_and(|w| self.backends[w.index()].up.load(Relaxed))
    }

    /// How far behind the primary replica `backend` is, in nanoseconds: the time since the
    /// proxy first saw a primary position it has not replayed; zero when caught up (one atomic
    /// load then).
    #[inline]
    pub fn staleness_nanos(&self, backend: BackendId) -> u64 {
        match self.backends[backend.index()].behind_since.load(Relaxed) {
            CAUGHT_UP => 0,
            since => self.now_nanos().saturating_sub(since),
        }
    }

    /// What the monitor last found about `backend`, for the status page and gauges.
    pub fn view(&self, backend: BackendId) -> BackendView {
        let state = &self.backends[backend.index()];
        let sampled = state.sent.load(Acquire) != NEVER;
        BackendView {
            up: state.up.load(Relaxed),
            sampled,
            in_recovery: state.in_recovery.load(Relaxed),
            lsn: sampled.then(|| state.lsn.load(Acquire)),
            staleness: (Some(backend) != self.writer().backend)
                .then(|| Duration::from_nanos(self.staleness_nanos(backend))),
            timeline: match state.timeline.load(Relaxed) {
                0 => None,
                timeline => Some(timeline),
            },
            fenced: state.fenced.load(Relaxed),
        }
    }

    /// Publishes a successful sample of `backend`, sent at `sent` and answered at `seen`.
    fn record(&self, backend: BackendId, sample: Sample, sent: u64, seen: u64) {
        let mut monitored = locked(&self.monitored);
        let state = &self.backends[backend.index()];
        // A standby that replayed less than at its last sample restarted from an older
        // point: what its gate says it had replayed no longer holds.
        let went_back = sample.lsn < state.lsn.load(Acquire);
        state.in_recovery.store(sample.in_recovery, Relaxed);
        // Unknown when the login may not read it (a standby's timeline, the system
        // identifier): the last one known is kept.
        if let Some(timeline) = sample.timeline {
            state.timeline.store(timeline, Relaxed);
        }
        if let Some(sysid) = sample.sysid {
            state.sysid.store(sysid, Relaxed);
        }
        if sample.in_recovery {
            state.streak.store(0, Relaxed);
        } else {
            state.streak.fetch_add(1, Relaxed);
        }
        state.lsn.store(sample.lsn, Release);
        state.sent.store(sent, Release);
        if Some(backend) == self.writer().backend {
            let history = &mut monitored.history;
            history.record(sample.lsn, seen);
            let span = self.span.load(Acquire);
            for (i, replica) in self.backends[..span].iter().enumerate() {
                // One that just fell behind is rechecked at once: usually it has already
                // replayed the write, and it need not look stale until its next tick.
                if i != backend.index() && update_behind(history, replica) {
                    replica.nudge.request();
                }
            }
        } else {
            update_behind(&monitored.history, state);
            if went_back {
                self.replay[backend.index()].restart();
            }
            self.replay[backend.index()].advance(sample.lsn);
        }
        state.up.store(true, Relaxed);
        state.tried.store(true, Relaxed);
        self.decide(&mut monitored);
    }

    fn record_failure(&self, backend: BackendId) {
        let mut monitored = locked(&self.monitored);
        let state = &self.backends[backend.index()];
        state.up.store(false, Relaxed);
        state.tried.store(true, Relaxed);
        state.streak.store(0, Relaxed);
        if Some(backend) != self.writer().backend {
            self.replay[backend.index()].restart();
        }
        self.decide(&mut monitored);
    }

    /// Publishes the writer after a sample: the first node's state without
    /// `follow_primary`, else the next election's outcome.
    fn decide(&self, monitored: &mut Monitored) {
        let Some(confirmations) = self.follow else {
            let first = &self.backends[BackendId::FIRST.index()];
            let state = if !first.up.load(Relaxed) {
                WriterState::Down
            } else if first.in_recovery.load(Relaxed) {
                WriterState::ReadOnly
            } else {
                WriterState::Serving
            };
            let writer = Writer {
                state,
                ..Writer::FIRST
            };
            self.publish(writer);
            return;
        };
        let span = self.span.load(Acquire);
        let nodes: Vec<NodeView> = self.backends[..span]
            .iter()
            .map(BackendState::view)
            .collect();
        let next = elect(&monitored.election, &nodes, confirmations);
        if next.state == WriterState::Conflict {
            // Samples that showed two primaries confirm neither: the one left when the
            // other goes needs `writer_confirmations` samples of its own, and the other's
            // failed sample alone never makes it the writer.
            for node in &self.backends[..span] {
                node.streak.store(0, Relaxed);
            }
        }
        if next == monitored.election {
            return;
        }
        if next.epoch != monitored.election.epoch {
            // Positions of the old writer's timeline past the fork would leave every
            // replica behind the new one: staleness is measured afresh.
            monitored.history = History::new(self.max_lag());
            self.positions.restart();
            for (i, node) in self.backends[..span].iter().enumerate() {
                node.behind_since.store(CAUGHT_UP, Relaxed);
                self.replay[i].restart();
            }
        }
        for (i, node) in self.backends[..span].iter().enumerate() {
            node.fenced.store(next.fenced.contains(&i), Relaxed);
        }
        report::transition(&monitored.election, &next, &|i| self.backends[i].name(i));
        monitored.election = next;
        self.publish(Writer::of(&monitored.election));
        self.moved.notify_waiters();
    }

    /// Stores `writer` as the word, held as it is now; under `monitored`'s lock.
    fn publish(&self, writer: Writer) {
        let held = self.writer.load(Relaxed) & writer::HELD;
        self.writer.store(writer.pack() | held, Release);
    }

    /// `HOLD WRITES` by console session `owner`: units on the write lease outside a
    /// transaction wait from now on. Err: another session holds them (its id).
    pub fn hold_writes(&self, owner: u64) -> Result<(), u64> {
        let _monitored = locked(&self.monitored);
        match self.hold.load(Relaxed) {
            0 => {}
            holder if holder == owner => return Ok(()),
            holder => return Err(holder),
        }
        self.hold.store(owner, Relaxed);
        self.writer.fetch_or(writer::HELD, Release);
        Ok(())
    }

    /// `RELEASE WRITES` by `owner` (or its session ended): waiting units go on. False if
    /// `owner` held nothing.
    pub fn release_writes(&self, owner: u64) -> bool {
        let _monitored = locked(&self.monitored);
        if self.hold.load(Relaxed) != owner {
            return false;
        }
        self.hold.store(0, Relaxed);
        self.writer.fetch_and(!writer::HELD, Release);
        self.moved.notify_waiters();
        true
    }

    /// The console session holding writes, if any.
    pub fn writes_held_by(&self) -> Option<u64> {
        match self.hold.load(Relaxed) {
            0 => None,
            holder => Some(holder),
        }
    }

    /// Brings `backend`'s next sample forward: a session found something amiss there.
    pub fn recheck(&self, backend: BackendId) {
        self.nudge(backend).request();
    }

    /// Samples `backend` again at once and waits (at most `limit`) until that sample is
    /// in and the writer decided from it.
    pub async fn next_sample(&self, backend: BackendId, limit: Duration) {
        let state = &self.backends[backend.index()];
        let since = self.now_nanos();
        self.recheck(backend);
        let deadline = tokio::time::Instant::now() + limit;
        while state.sent.load(Acquire) < since && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // A sample's record decides the writer under this lock: once it is free, the word
        // says what that sample showed.
        drop(locked(&self.monitored));
    }

    /// An up replica that lacks a primary position seen: worth sampling more often.
    fn is_behind(&self, backend: BackendId) -> bool {
        let state = &self.backends[backend.index()];
        state.up.load(Relaxed) && state.behind_since.load(Relaxed) != CAUGHT_UP
    }

    fn nudge(&self, backend: BackendId) -> &nudge::Nudge {
        &self.backends[backend.index()].nudge
    }
}

/// Sets `replica`'s `behind_since` from its replay position; true if it was caught up before
/// and is not now.
fn update_behind(history: &History, replica: &BackendState) -> bool {
    let since = history
        .behind_since(replica.lsn.load(Relaxed))
        .unwrap_or(CAUGHT_UP);
    let before = replica.behind_since.swap(since, Relaxed);
    before == CAUGHT_UP && since != CAUGHT_UP
}

/// `d` in nanoseconds, saturating.
pub fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The history is plain data; a panic while holding it leaves nothing half-done that matters.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRIMARY: BackendId = BackendId::FIRST;
    const REPLICA: BackendId = BackendId::nth(1);

    fn sample(in_recovery: bool, lsn: u64) -> Sample {
        Sample {
            in_recovery,
            lsn,
            timeline: Some(1),
            sysid: Some(7),
        }
    }

    /// A primary and a replica, both sampled once at position 100.
    fn pair(max_lag: Duration) -> Health {
        let h = Health::new(2, max_lag);
        h.record(PRIMARY, sample(false, 100), 1, 1);
        h.record(REPLICA, sample(true, 100), 1, 1);
        h
    }

    #[test]
    fn before_any_sample_the_primary_is_usable_and_a_replica_is_not() {
        let h = Health::new(2, Duration::from_secs(1));
        assert_eq!(h.writer(), Writer::FIRST);
        assert_eq!(h.readable(REPLICA), Err(Unusable::Down));
    }

    #[test]
    fn a_caught_up_replica_is_readable_and_stays_so_while_the_primary_is_idle() {
        let h = pair(Duration::ZERO);
        assert_eq!(h.readable(REPLICA), Ok(()));
        h.record(PRIMARY, sample(false, 100), 2, 2);
        assert_eq!(h.readable(REPLICA), Ok(()));
        assert!(!h.is_behind(REPLICA));
    }

    #[test]
    fn a_replica_lacking_a_primary_position_is_lagging_once_that_is_older_than_the_limit() {
        let h = pair(Duration::from_secs(3600));
        h.record(PRIMARY, sample(false, 200), 2, h.now_nanos());
        assert!(h.is_behind(REPLICA));
        assert_eq!(h.readable(REPLICA), Ok(()), "within the limit");

        let h = pair(Duration::from_millis(1));
        h.record(PRIMARY, sample(false, 200), 2, 2);
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(h.readable(REPLICA), Err(Unusable::Lagging));
        h.record(REPLICA, sample(true, 200), 3, 3);
        assert_eq!(h.readable(REPLICA), Ok(()), "replayed it");
    }

    #[test]
    fn failures_and_wrong_roles_make_backends_unusable() {
        let h = pair(Duration::from_secs(1));
        h.record_failure(REPLICA);
        assert_eq!(h.readable(REPLICA), Err(Unusable::Down));
        h.record(REPLICA, sample(false, 100), 2, 2);
        assert_eq!(h.readable(REPLICA), Err(Unusable::NotInRecovery));
        h.record(PRIMARY, sample(true, 100), 2, 2);
        assert_eq!(h.writer().state, WriterState::ReadOnly);
        h.record_failure(PRIMARY);
        assert_eq!(h.writer().state, WriterState::Down);
        assert_eq!(
            h.writer().backend,
            Some(PRIMARY),
            "without follow_primary, fixed"
        );
    }

    #[test]
    fn following_the_primary_the_writer_moves_and_lag_is_measured_afresh() {
        let h = Health::new(2, Duration::from_millis(1)).following(2);
        h.describe(PRIMARY, "db01", true);
        h.describe(REPLICA, "db02", true);
        h.record(PRIMARY, sample(false, 100), 1, 1);
        h.record(REPLICA, sample(true, 100), 1, 1);
        assert_eq!(h.writer(), Writer::FIRST, "the first node, as assumed");
        h.record(PRIMARY, sample(false, 200), 2, 2);
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(h.readable(REPLICA), Err(Unusable::Lagging));
        let promoted = Sample {
            timeline: Some(2),
            ..sample(false, 150)
        };
        h.record(REPLICA, promoted, 3, 3);
        let writer = h.writer();
        assert_eq!(
            (writer.state, writer.backend, writer.epoch),
            (WriterState::Confirming, Some(PRIMARY), 0)
        );
        h.record(REPLICA, promoted, 4, 4);
        let writer = h.writer();
        assert_eq!(
            (writer.state, writer.backend, writer.epoch),
            (WriterState::Serving, Some(REPLICA), 1)
        );
        assert_eq!(h.election().fenced, [0].into());
        assert_eq!(h.readable(PRIMARY), Err(Unusable::Fenced));
        assert!(h.view(PRIMARY).fenced);
        assert_eq!(h.view(REPLICA).timeline, Some(2));
        assert_eq!(
            h.staleness_nanos(PRIMARY),
            0,
            "measured against the new writer"
        );
        assert_eq!(h.view(REPLICA).staleness, None, "the writer has none");
    }

    #[test]
    fn writes_refused_for_want_of_a_writer_name_why() {
        let h = Health::new(3, Duration::from_secs(1)).following(3);
        for (i, name) in ["db01", "db02", "db03"].into_iter().enumerate() {
            h.describe(BackendId::nth(i), name, true);
        }
        let name = |i: usize| format!("db0{}", i + 1);
        let on = |timeline| Sample {
            timeline: Some(timeline),
            ..sample(false, 100)
        };
        h.record(PRIMARY, on(1), 1, 1);
        h.record(REPLICA, sample(true, 100), 1, 1);
        h.record(BackendId::nth(2), sample(true, 100), 1, 1);
        // db02 promoted, seen once, then unreachable: db01 is out of recovery on an older
        // timeline.
        h.record(REPLICA, on(2), 2, 2);
        h.record_failure(REPLICA);
        assert_eq!(h.writer().state, WriterState::Fenced);
        assert_eq!(
            h.why_no_writer(WriterState::Fenced, &name),
            "db01 is fenced: out of recovery on timeline 1 but timeline 2 exists; \
             run `pgrepl-proxy rejoin db01`"
        );
        // Two promoted onto the same timeline.
        h.record(REPLICA, on(2), 3, 3);
        h.record(BackendId::nth(2), on(2), 3, 3);
        assert_eq!(h.writer().state, WriterState::Conflict);
        assert_eq!(
            h.why_no_writer(WriterState::Conflict, &name),
            "db02 and db03 are both out of recovery on timeline 2; no writes until one is gone"
        );
    }

    #[test]
    fn a_hold_belongs_to_one_console_session_and_outlives_elections() {
        let h = pair(Duration::from_secs(1));
        assert_eq!(h.hold_writes(7), Ok(()));
        assert_eq!(h.hold_writes(8), Err(7));
        assert!(h.writer().held);
        h.record(PRIMARY, sample(false, 300), 2, 2);
        assert!(h.writer().held, "a sample keeps the hold");
        assert!(!h.release_writes(8));
        assert!(h.release_writes(7));
        assert_eq!(h.writer(), Writer::FIRST);
        assert_eq!(h.writes_held_by(), None);
    }
}
