//! What the monitor last found about one backend, kept in atomics so sessions read it without
//! taking a lock.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64};
use std::sync::{Arc, OnceLock};

use super::elect::NodeView;
use super::nudge::Nudge;
use super::Unusable;

/// `behind_since` of a replica that has replayed every primary position seen.
pub const CAUGHT_UP: u64 = u64::MAX;
/// A timeline or system identifier not known (0 is neither: timelines start at 1, and a
/// system identifier is made of the initdb time).
pub const UNKNOWN: u64 = 0;
/// `sent` before the first successful sample.
pub const NEVER: u64 = 0;

pub struct BackendState {
    /// The last sample succeeded (before the first: the primary counts as up, a replica not).
    pub up: AtomicBool,
    pub in_recovery: AtomicBool,
    /// The WAL position of the last successful sample: the primary's write position, a
    /// standby's replay position.
    pub lsn: AtomicU64,
    /// Its timeline at the last successful sample; `UNKNOWN` if never known.
    pub timeline: AtomicU32,
    /// Its system identifier at the last successful sample; `UNKNOWN` if never known.
    pub sysid: AtomicU64,
    /// Successful samples in a row that found it out of recovery.
    pub streak: AtomicU32,
    /// When the last successful sample's query was sent (monitor clock), stored after `lsn`.
    pub sent: AtomicU64,
    /// Replicas: when the proxy first saw a primary position this one has not replayed.
    pub behind_since: AtomicU64,
    pub nudge: Nudge,
    /// A replica a reload removed (its `up` stays false).
    pub retired: AtomicBool,
    /// May be chosen as the writer (`promotable`).
    pub promotable: AtomicBool,
    /// Out of recovery on a timeline older than another node's: no reads, no writes.
    pub fenced: AtomicBool,
    /// Sampled at least once, successfully or not.
    pub tried: AtomicBool,
    /// Its configured name, for the election's log lines.
    pub name: OnceLock<Arc<str>>,
}

impl BackendState {
    /// The state assumed before the first sample: usable if a primary, unusable if a replica.
    pub fn unsampled(primary: bool) -> BackendState {
        BackendState {
            up: AtomicBool::new(primary),
            in_recovery: AtomicBool::new(!primary),
            lsn: AtomicU64::new(0),
            timeline: AtomicU32::new(UNKNOWN as u32),
            sysid: AtomicU64::new(UNKNOWN),
            streak: AtomicU32::new(0),
            sent: AtomicU64::new(NEVER),
            behind_since: AtomicU64::new(CAUGHT_UP),
            nudge: Nudge::default(),
            retired: AtomicBool::new(false),
            promotable: AtomicBool::new(false),
            fenced: AtomicBool::new(false),
            tried: AtomicBool::new(false),
            name: OnceLock::new(),
        }
    }

    /// What the election reads of it.
    pub fn view(&self) -> NodeView {
        NodeView {
            // Before its first sample a node is assumed up (the first node), but nothing is
            // known of its role.
            up: self.up.load(Relaxed) && self.sent.load(Relaxed) != NEVER,
            in_recovery: self.in_recovery.load(Relaxed),
            timeline: self.timeline.load(Relaxed),
            sysid: self.sysid.load(Relaxed),
            streak: self.streak.load(Relaxed),
            promotable: self.promotable.load(Relaxed),
            known: self.tried.load(Relaxed),
        }
    }

    /// Its name (its index before it was told one).
    pub fn name(&self, index: usize) -> Arc<str> {
        self.name
            .get()
            .cloned()
            .unwrap_or_else(|| index.to_string().into())
    }

    /// Why a backend that is not up is unusable: off the path of a usable one.
    #[cold]
    pub fn down_or_removed(&self) -> Unusable {
        if self.retired.load(Relaxed) {
            Unusable::Removed
        } else {
            Unusable::Down
        }
    }
}
