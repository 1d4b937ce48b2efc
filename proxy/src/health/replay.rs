//! A replica's replay position, watched closely only while a read waits for it: one task per
//! replica, on a connection of its own, asks `pg_last_wal_replay_lsn()` back to back while
//! its gate has waiters (a loopback round trip is tens of microseconds: well under a
//! millisecond, where a timer could not do better than one), and parks otherwise. One answer
//! serves every waiting session.

use std::sync::Arc;
use std::time::Duration;

use super::probe::{lsn_column, Probe};
use super::Health;
use crate::backend::BackendId;

const REPLAY_SQL: &str = "SELECT pg_catalog.pg_last_wal_replay_lsn()";

/// After a failed query: the replica is not hammered while it cannot answer.
const RETRY_AFTER: Duration = Duration::from_millis(10);

/// Watches replica `backend` for the sessions waiting on its gate, until the proxy stops.
pub async fn watch(health: Arc<Health>, backend: BackendId, probe: Probe) {
    let gate = health.replay_gate(backend);
    // Connected before the first read waits: a connection's set-up is no round trip.
    if let Ok(replayed) = probe.ask(REPLAY_SQL, |row| lsn_column(row, 0)).await {
        gate.advance(replayed);
    }
    loop {
        gate.demanded().await;
        while gate.has_waiters() {
            match probe.ask(REPLAY_SQL, |row| lsn_column(row, 0)).await {
                Ok(replayed) => {
                    gate.advance(replayed);
                    gate.asked(health.now_nanos());
                }
                Err(error) => {
                    // Restarted, perhaps at an older point: nothing it had replayed counts.
                    tracing::debug!(%backend, %error, "replay position look-up failed");
                    gate.restart();
                    tokio::time::sleep(RETRY_AFTER).await;
                }
            }
        }
    }
}
