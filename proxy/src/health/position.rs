//! The primary's WAL position, looked up for many reads at once (a Raft leader's read
//! index): a session that needs "the primary's position from after now" takes the number of
//! the next look-up round and waits for it; one task, on a connection of its own, runs a
//! round while anyone waits, and every read that arrived before a round was numbered is
//! served by it. The primary sees at most one small query per round trip, however many
//! reads wait.
//!
//! It also flushes the primary's WAL on demand (a round that commits a logical message
//! synchronously), for reads waiting for an asynchronous commit that a standby cannot
//! replay before it is flushed.

use std::sync::atomic::Ordering::{Acquire, Relaxed, Release, SeqCst};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_postgres::SimpleQueryRow;

use super::gate::LsnGate;
use super::lsn::{self, Geometry};
use super::monitor::WriterProbes;
use super::probe::{column, Probe, ProbeError};
use super::Health;

/// The primary's positions after whatever ran before it on the same connection: flushed,
/// inserted, and whether that session's commits are asynchronous. Schema-qualified, so
/// that no `search_path` redirects it.
pub const POSITION_SQL: &str = "SELECT pg_catalog.pg_current_wal_flush_lsn(), \
     pg_catalog.pg_current_wal_insert_lsn(), \
     pg_catalog.current_setting('synchronous_commit') = 'off'";

/// A synchronous commit of a transaction that writes WAL (a logical message) flushes every
/// record before it; then the positions. Costs a transaction id.
const FLUSH_SQL: &str = "BEGIN; SET LOCAL synchronous_commit = on; \
     SELECT pg_catalog.pg_logical_emit_message(true, 'pgrepl-proxy', ''); COMMIT; \
     SELECT pg_catalog.pg_current_wal_flush_lsn(), pg_catalog.pg_current_wal_insert_lsn(), false";

const GEOMETRY_SQL: &str = "SELECT pg_catalog.current_setting('wal_block_size'), \
     pg_catalog.pg_size_bytes(pg_catalog.current_setting('wal_segment_size'))";

/// After a failed round, the next one waits this long: the primary is not hammered while it
/// cannot answer (waiting reads go there when their wait ends, or to the replica if it is down).
const RETRY_AFTER: Duration = Duration::from_millis(10);

/// What the position query answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalSample {
    pub flush: u64,
    pub insert: u64,
    /// `synchronous_commit = off` where it ran.
    pub async_commit: bool,
}

impl WalSample {
    /// Reads a row of [`POSITION_SQL`].
    pub fn read(row: &SimpleQueryRow) -> Result<WalSample, ProbeError> {
        let text = |i| column(row, i)?.ok_or(ProbeError::Answer);
        WalSample::from_text(text(0)?, text(1)?, text(2)?).ok_or(ProbeError::Answer)
    }

    /// From the texts of the three columns of [`POSITION_SQL`].
    pub fn from_text(flush: &str, insert: &str, async_commit: &str) -> Option<WalSample> {
        Some(WalSample {
            flush: lsn::parse(flush)?,
            insert: lsn::parse(insert)?,
            async_commit: async_commit == "t",
        })
    }
}

/// A WAL position at or after every commit a query that ran before `sample` may have seen,
/// and which a standby can replay without waiting for unrelated WAL to be flushed when it
/// can: synchronous commits are flushed before they are acknowledged or visible, so the
/// flush position covers them; an asynchronous one may not be flushed yet, and only the
/// insert position (at the end of its record) covers it.
pub fn covering(sample: WalSample, async_commits: bool, geometry: Geometry) -> u64 {
    if sample.async_commit || async_commits {
        lsn::record_end(sample.insert, geometry).max(sample.flush)
    } else {
        sample.flush
    }
}

/// See the module documentation.
#[derive(Default)]
pub struct PrimaryPositions {
    /// Rounds numbered so far; a round's number is taken before its query is sent.
    numbered: AtomicU64,
    /// Rounds answered (their numbers), and the sessions waiting for one.
    rounds: LsnGate,
    /// The position the last round found (see [`covering`]).
    visible: AtomicU64,
    /// The highest flush position seen, by the rounds or by sessions' commit samples.
    flushed: AtomicU64,
    /// A session's commit was asynchronous: from now on positions cover such commits too.
    async_commits: AtomicBool,
    /// The highest position a waiting read needs flushed.
    flush_wanted: AtomicU64,
    /// Wakes the service for a flush, or for a round nobody waits for (`kick`).
    demand: Notify,
    kicked: AtomicBool,
    /// Flushing was refused (`42501`: the function's EXECUTE revoked): no more attempts.
    flush_refused: AtomicBool,
    block: AtomicU64,
    segment: AtomicU64,
    /// Rounds run, and those that flushed: what the proxy adds on the primary.
    pub rounds_run: AtomicU64,
    pub flushes_run: AtomicU64,
}

impl PrimaryPositions {
    /// The number of the last round numbered: a round numbered later (above it) was sent
    /// after this call.
    #[inline]
    fn round_now(&self) -> u64 {
        self.numbered.load(SeqCst)
    }

    /// The first round numbered after this call: its position covers everything committed
    /// (or seen) before it.
    #[inline]
    pub fn next_round(&self) -> u64 {
        self.round_now() + 1
    }

    pub fn rounds(&self) -> &LsnGate {
        &self.rounds
    }

    /// The position the latest answered round found.
    pub fn visible(&self) -> u64 {
        self.visible.load(Acquire)
    }

    /// A new writer: the positions seen on the old one's timeline no longer bound anything.
    pub fn restart(&self) {
        self.visible.store(0, Release);
        self.flushed.store(0, Release);
    }

    pub fn flushed(&self) -> u64 {
        self.flushed.load(Acquire)
    }

    pub fn async_commits(&self) -> bool {
        self.async_commits.load(Relaxed)
    }

    pub fn geometry(&self) -> Geometry {
        match (self.block.load(Relaxed), self.segment.load(Relaxed)) {
            (0, _) | (_, 0) => Geometry::default(),
            (block, segment) => Geometry { block, segment },
        }
    }

    /// Takes in a session's commit sample; returns the position its reads must see.
    pub fn commit_sample(&self, sample: WalSample) -> u64 {
        if sample.async_commit {
            self.note_async_commits();
        }
        self.flushed.fetch_max(sample.flush, Release);
        covering(sample, self.async_commits(), self.geometry())
    }

    /// Commits may be acknowledged before they are flushed: from now on positions cover
    /// insert positions.
    pub fn note_async_commits(&self) {
        if !self.async_commits.swap(true, Relaxed) {
            tracing::info!(
                "commits may be asynchronous (synchronous_commit = off): positions now cover them"
            );
        }
    }

    /// A waiting read needs `target` flushed on the primary before a standby can replay it.
    pub fn want_flushed(&self, target: u64) {
        if self.flush_wanted.fetch_max(target, Relaxed) < target {
            self.demand.notify_one();
        }
    }

    /// Asks for a round that nobody waits for: a later read finds its position.
    pub fn kick(&self) {
        if !self.kicked.swap(true, Relaxed) {
            self.demand.notify_one();
        }
    }

    fn flush_due(&self) -> bool {
        self.flush_wanted.load(Relaxed) > self.flushed() && !self.flush_refused.load(Relaxed)
    }

    /// Whether a round is wanted now (taking a kick).
    fn round_due(&self) -> bool {
        self.rounds.has_waiters() || self.flush_due() || self.kicked.swap(false, Relaxed)
    }

    /// Round `number` found `sample`.
    fn answered(&self, number: u64, sample: WalSample) {
        if sample.async_commit {
            self.note_async_commits();
        }
        self.flushed.fetch_max(sample.flush, Release);
        let position = covering(sample, self.async_commits(), self.geometry());
        self.visible.fetch_max(position, Release);
        self.rounds.advance(number);
    }
}

/// Runs rounds while anyone waits for one or needs a flush, until the proxy stops, on the
/// writer's connection (`probes`), whichever node that is at each round.
pub async fn serve(health: Arc<Health>, probes: Arc<WriterProbes>) {
    let positions = &health.positions;
    // Connected before the first read waits: a connection's set-up is no round trip.
    let mut geometry_known = match probes.writer(&health) {
        Some(probe) => learn_geometry(positions, &probe).await,
        None => false,
    };
    loop {
        tokio::select! {
            _ = positions.rounds.demanded() => {}
            _ = positions.demand.notified() => {}
        }
        while positions.round_due() {
            let Some(probe) = probes.writer(&health) else {
                // No writer: waiting reads decide anew.
                positions.flush_wanted.store(0, Relaxed);
                positions.rounds.wake_all();
                tokio::time::sleep(RETRY_AFTER).await;
                continue;
            };
            if !geometry_known {
                geometry_known = learn_geometry(positions, &probe).await;
            }
            let number = positions.numbered.fetch_add(1, SeqCst) + 1;
            let flush = positions.flush_due();
            let sql = if flush { FLUSH_SQL } else { POSITION_SQL };
            positions.rounds_run.fetch_add(1, Relaxed);
            if flush {
                positions.flushes_run.fetch_add(1, Relaxed);
            }
            match probe.ask(sql, WalSample::read).await {
                Ok(sample) => positions.answered(number, sample),
                Err(error) => {
                    tracing::debug!(%error, flush, "primary position look-up failed");
                    if flush && error.is_refused() {
                        positions.flush_refused.store(true, Relaxed);
                        tracing::warn!(%error, "the primary refused the flush for reads waiting for asynchronous commits: they will wait for its WAL writer, or go to the primary");
                    }
                    // Waiting reads decide anew; nobody waits for a flush that failed.
                    positions.flush_wanted.store(0, Relaxed);
                    positions.rounds.wake_all();
                    tokio::time::sleep(RETRY_AFTER).await;
                }
            }
        }
    }
}

/// Learns the primary's WAL page and segment sizes; false if it could not.
async fn learn_geometry(positions: &PrimaryPositions, probe: &Probe) -> bool {
    let sizes = probe
        .ask(GEOMETRY_SQL, |row| {
            let size = |i| {
                column(row, i)?
                    .and_then(|text| text.parse::<u64>().ok())
                    .filter(|&n| n > 0)
                    .ok_or(ProbeError::Answer)
            };
            Ok((size(0)?, size(1)?))
        })
        .await;
    match sizes {
        Ok((block, segment)) => {
            positions.block.store(block, Relaxed);
            positions.segment.store(segment, Relaxed);
            true
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const G: Geometry = Geometry {
        block: 8192,
        segment: 16 << 20,
    };

    fn sample(flush: u64, insert: u64, async_commit: bool) -> WalSample {
        WalSample {
            flush,
            insert,
            async_commit,
        }
    }

    #[test]
    fn the_covering_position_is_the_flush_one_unless_commits_may_be_asynchronous() {
        let table = [
            // (sample, async commits seen before, position)
            (sample(100, 180, false), false, 100),
            (sample(100, 180, true), false, 180),
            (sample(100, 180, false), true, 180),
            (sample(0x2000, 0x2018, true), false, 0x2000),
            (sample(0x2010, 0x2018, false), true, 0x2010),
        ];
        for (s, seen, expected) in table {
            assert_eq!(covering(s, seen, G), expected, "{s:?} {seen}");
        }
    }

    #[test]
    fn an_asynchronous_commit_sample_makes_later_positions_cover_such_commits() {
        let p = PrimaryPositions::default();
        assert_eq!(p.commit_sample(sample(100, 180, false)), 100);
        assert_eq!(p.commit_sample(sample(100, 200, true)), 200);
        assert_eq!(p.commit_sample(sample(300, 400, false)), 400);
        assert_eq!(p.flushed(), 300);
    }

    #[test]
    fn a_round_publishes_its_position_before_it_counts_as_answered() {
        let p = PrimaryPositions::default();
        let before = p.round_now();
        p.numbered.fetch_add(1, SeqCst);
        p.answered(1, sample(500, 600, false));
        assert!(p.rounds().reached() > before);
        assert_eq!(p.visible(), 500);
        p.answered(2, sample(400, 450, false));
        assert_eq!(p.visible(), 500, "never goes back");
    }
}
