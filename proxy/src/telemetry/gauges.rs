//! Values Prometheus reads as they are at scrape time: states (gauges) from the status
//! snapshot, and counters the classifier keeps in its own atomics.

use metrics::{counter, gauge};

use super::names;
use super::status::Status;
use crate::shared::Shared;

/// Sets every scrape-time value from `status` and the classifier.
pub fn publish(status: &Status, shared: &Shared) {
    gauge!(names::CLIENT_CONNECTIONS).set(status.clients.connected as f64);
    gauge!(names::CLIENT_CONNECTIONS_MAX).set(status.clients.max as f64);
    for backend in &status.backends {
        let name = backend.name.clone();
        gauge!(names::BACKEND_UP, "backend" => name.clone(), "role" => backend.role.clone())
            .set(flag(backend.up));
        gauge!(names::BACKEND_ROLE_MISMATCH, "backend" => name.clone())
            .set(flag(backend.role_mismatch));
        for (state, count) in [
            ("active", backend.active_connections),
            ("idle", backend.idle_connections),
        ] {
            gauge!(names::BACKEND_CONNECTIONS, "backend" => name.clone(), "state" => state)
                .set(count as f64);
        }
        if let Some(lag) = backend.lag_bytes {
            gauge!(names::REPLICA_LAG_BYTES, "backend" => name.clone()).set(lag as f64);
        }
        if let Some(staleness) = backend.staleness_seconds {
            gauge!(names::REPLICA_STALENESS, "backend" => name).set(staleness);
        }
    }
    let (hits, misses) = shared.classifier.cache_hits_misses();
    counter!(names::CACHE_HITS).absolute(hits);
    counter!(names::CACHE_MISSES).absolute(misses);
    counter!(names::PARSE_FAILURES).absolute(shared.classifier.parse_failures());
}

fn flag(on: bool) -> f64 {
    if on {
        1.0
    } else {
        0.0
    }
}
