//! Replica staleness by WAL position: the primary positions the proxy has seen, each with the
//! time it first saw the primary at or past it. A replica that has not replayed a position is
//! stale since that position was first seen; one that has replayed every position is caught up
//! (an idle pair is, since the primary's position moves only when it writes).

use std::collections::VecDeque;

/// Within this many steps of the horizon, positions are kept apart; closer ones are merged.
const STEPS_PER_HORIZON: u64 = 1024;

/// Primary positions, increasing, with first-seen times (nanoseconds on the monitor's clock).
pub struct History {
    seen: VecDeque<Seen>,
    /// How far back first-seen times must be exact: a replica behind an older position counts
    /// as staler than the horizon, and by how much more changes no decision.
    horizon: u64,
    /// Positions seen closer together than this share the older time, which bounds the history
    /// while only ever making a replica look staler, never fresher.
    step: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    lsn: u64,
    at: u64,
}

impl History {
    /// `horizon` in nanoseconds.
    pub fn new(horizon: u64) -> History {
        History {
            seen: VecDeque::new(),
            horizon,
            step: horizon / STEPS_PER_HORIZON,
        }
    }

    /// A new horizon (`[routing] max_replica_lag` reloaded). Positions already merged under a
    /// shorter one stay merged: until the new horizon has passed, a replica behind them is
    /// charged from the newest of them, still staler than the old horizon.
    pub fn set_horizon(&mut self, horizon: u64) {
        self.horizon = horizon;
        self.step = horizon / STEPS_PER_HORIZON;
    }

    /// Notes that the primary was at `lsn` at time `at`. A position below the last one means
    /// another primary (rebuilt or replaced), and what was seen of the old one no longer counts.
    pub fn record(&mut self, lsn: u64, at: u64) {
        match self.seen.back_mut() {
            Some(last) if lsn == last.lsn => return,
            Some(last) if lsn < last.lsn => self.seen.clear(),
            Some(last) if at.saturating_sub(last.at) < self.step => {
                last.lsn = lsn;
                return;
            }
            _ => {}
        }
        self.seen.push_back(Seen { lsn, at });
        // The newest position older than the horizon stays, standing for all older ones.
        let cutoff = at.saturating_sub(self.horizon);
        while self.seen.len() > 1 && self.seen[1].at < cutoff {
            self.seen.pop_front();
        }
    }

    /// When the proxy first saw a primary position beyond `replayed`, the replica's replay
    /// position: the replica is stale since then. None when it has replayed all it has seen.
    pub fn behind_since(&self, replayed: u64) -> Option<u64> {
        let first_missing = self.seen.partition_point(|s| s.lsn <= replayed);
        self.seen.get(first_missing).map(|s| s.at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn history(samples: &[(u64, u64)]) -> History {
        let mut h = History::new(1000 * MS);
        for &(lsn, at_ms) in samples {
            h.record(lsn, at_ms * MS);
        }
        h
    }

    #[test]
    fn a_replica_is_stale_since_the_first_position_it_lacks_was_seen() {
        let h = history(&[(100, 0), (200, 10), (300, 20)]);
        assert_eq!(h.behind_since(50), Some(0));
        assert_eq!(h.behind_since(100), Some(10 * MS));
        assert_eq!(h.behind_since(250), Some(20 * MS));
        assert_eq!(h.behind_since(300), None);
        assert_eq!(h.behind_since(400), None);
    }

    #[test]
    fn nothing_seen_means_caught_up() {
        assert_eq!(history(&[]).behind_since(0), None);
    }

    #[test]
    fn an_idle_primary_keeps_the_first_time_its_position_was_seen() {
        let h = history(&[(100, 0), (100, 500), (100, 900)]);
        assert_eq!(h.behind_since(0), Some(0));
    }

    #[test]
    fn positions_older_than_the_horizon_collapse_into_the_newest_of_them() {
        let h = history(&[(100, 0), (200, 300), (300, 800), (400, 1500), (500, 2000)]);
        // Cutoff 1000 ms: 300 (seen at 800) stands for every older position.
        assert_eq!(h.seen.len(), 3);
        assert_eq!(h.behind_since(50), Some(800 * MS));
        assert_eq!(h.behind_since(300), Some(1500 * MS));
        // Whatever it is charged with, a replica that far behind is staler than the horizon.
        assert!(2000 * MS - h.behind_since(50).unwrap() > 1000 * MS);
    }

    #[test]
    fn positions_seen_within_one_step_share_the_older_time() {
        let mut h = History::new(1000 * MS);
        h.record(100, 0);
        h.record(200, 100);
        h.record(300, 2 * MS);
        assert_eq!(h.seen.len(), 2);
        assert_eq!(h.behind_since(150), Some(0));
        assert_eq!(h.behind_since(250), Some(2 * MS));
    }

    #[test]
    fn a_lower_position_starts_over() {
        let h = history(&[(100, 0), (200, 10), (50, 20)]);
        assert_eq!(h.behind_since(10), Some(20 * MS));
        assert_eq!(h.behind_since(50), None);
    }
}
