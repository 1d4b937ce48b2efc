//! Backend health: a monitor task per backend samples it (reachable? in recovery? WAL
//! position?) and publishes what it found here; sessions read it with plain atomic loads.
//! The tables are indexed by backend id and sized for every id the registry may hand out
//! (`Backends::CAPACITY`), so a reload adds and retires replicas without moving them.
//!
//! A replica is readable when it is up, in recovery and at most `[routing] max_replica_lag`
//! stale, staleness being measured by WAL position (see `lag`): replay timestamps would call
//! an idle, fully caught-up replica stale.

// Wired in with the writer pointer (the next step).
#[allow(dead_code)]
mod elect;
mod gate;
mod lag;
mod lsn;
mod monitor;
mod nudge;
mod position;
mod probe;
mod replay;
mod state;

use std::fmt;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use lag::History;
use probe::Sample;
use state::{BackendState, CAUGHT_UP, NEVER};

pub use gate::LsnGate;
pub use lsn::format as format_lsn;
pub use monitor::Monitor;
pub use position::{PrimaryPositions, WalSample, POSITION_SQL};

use crate::backend::{BackendId, Backends};

const PRIMARY: BackendId = BackendId::PRIMARY;

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
}

impl fmt::Display for Unusable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Unusable::Down => "down",
            Unusable::Lagging => "lagging",
            Unusable::NotInRecovery => "not in recovery",
            Unusable::InRecovery => "in recovery",
            Unusable::Removed => "removed",
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
    /// Only the monitor's tasks take this lock; it orders their updates of `behind_since`.
    history: Mutex<History>,
    /// By backend index: replay positions that reads wait for (the primary's is unused).
    replay: Box<[LsnGate]>,
    /// The primary's position, looked up for waiting reads.
    pub positions: PrimaryPositions,
}

impl Health {
    /// Health for `backends` backends (the primary and the replicas) before any sample.
    pub fn new(backends: usize, max_replica_lag: Duration) -> Health {
        let max_lag = nanos(max_replica_lag);
        Health {
            clock: Instant::now(),
            max_lag: AtomicU64::new(max_lag),
            backends: BackendId::all(Backends::CAPACITY)
                .map(|id| BackendState::unsampled(id.is_primary()))
                .collect(),
            span: AtomicUsize::new(backends),
            history: Mutex::new(History::new(max_lag)),
            replay: BackendId::all(Backends::CAPACITY)
                .map(|_| LsnGate::default())
                .collect(),
            positions: PrimaryPositions::default(),
        }
    }

    /// A replica a reload added, under a new id: unusable until its first sample.
    pub fn admit(&self, backend: BackendId) {
        self.span.fetch_max(backend.index() + 1, Release);
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
        let mut history = locked(&self.history);
        history.set_horizon(max_lag);
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
            return Err(Unusable::NotInRecovery);
        }
        // Behind a primary that is down, a replica cannot catch up, and its data is the
        // newest there is: it serves reads rather than none being served.
        if self.staleness_nanos(backend) > self.max_lag.load(Relaxed)
            && self.backends[PRIMARY.index()].up.load(Relaxed)
        {
            return Err(Unusable::Lagging);
        }
        Ok(())
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
            staleness: (backend != PRIMARY)
                .then(|| Duration::from_nanos(self.staleness_nanos(backend))),
        }
    }

    /// Whether the primary looks able to take writes. Down only once a sample has failed:
    /// before the first one it gets the benefit of the doubt.
    pub fn primary_state(&self) -> Result<(), Unusable> {
        let state = &self.backends[PRIMARY.index()];
        if !state.up.load(Relaxed) {
            Err(Unusable::Down)
        } else if state.in_recovery.load(Relaxed) {
            Err(Unusable::InRecovery)
        } else {
            Ok(())
        }
    }

    /// Publishes a successful sample of `backend`, sent at `sent` and answered at `seen`.
    fn record(&self, backend: BackendId, sample: Sample, sent: u64, seen: u64) {
        let mut history = locked(&self.history);
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
        if backend == PRIMARY {
            history.record(sample.lsn, seen);
            let span = self.span.load(Acquire);
            for replica in &self.backends[PRIMARY.index() + 1..span] {
                // One that just fell behind is rechecked at once: usually it has already
                // replayed the write, and it need not look stale until its next tick.
                if update_behind(&history, replica) {
                    replica.nudge.request();
                }
            }
        } else {
            update_behind(&history, state);
            if went_back {
                self.replay[backend.index()].restart();
            }
            self.replay[backend.index()].advance(sample.lsn);
        }
        state.up.store(true, Relaxed);
    }

    fn record_failure(&self, backend: BackendId) {
        let state = &self.backends[backend.index()];
        state.up.store(false, Relaxed);
        state.streak.store(0, Relaxed);
        if backend != PRIMARY {
            self.replay[backend.index()].restart();
        }
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
        assert_eq!(h.primary_state(), Ok(()));
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
        assert_eq!(h.primary_state(), Err(Unusable::InRecovery));
        h.record_failure(PRIMARY);
        assert_eq!(h.primary_state(), Err(Unusable::Down));
    }
}
