//! The metric handles the data path records into. Each is registered once, at start-up, so
//! recording a statement is an atomic add on a handle, never a look-up by name and labels.
//! Without a recorder (`[metrics] enabled = false`) every handle is a no-op.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::Bytes;
use metrics::{counter, histogram, Counter, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use super::names::{self, Rejection};
use crate::backend::PoolKey;
use crate::route::Reason;

/// Upper bounds of `pgrepl_query_duration_seconds`: 50 µs to 10 s.
const DURATION_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
];
/// Upper bounds of `pgrepl_read_staleness_seconds`: a caught-up replica's reads land in the
/// first; `[routing] max_replica_lag` (1 s by default) caps the rest unless the primary is down.
const STALENESS_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Installs the process's Prometheus recorder (once; later calls return the same handle).
/// Must run before any handle is registered: handles taken earlier stay no-ops.
pub fn install_recorder() -> anyhow::Result<PrometheusHandle> {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    if let Some(handle) = HANDLE.get() {
        return Ok(handle.clone());
    }
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(names::QUERY_DURATION.to_owned()),
            DURATION_BUCKETS,
        )?
        .set_buckets_for_metric(
            Matcher::Full(names::READ_STALENESS.to_owned()),
            STALENESS_BUCKETS,
        )?
        .install_recorder()?;
    names::describe_all();
    Ok(HANDLE.get_or_init(|| handle).clone())
}

/// Handles for what is counted per client connection.
pub struct ClientMeters {
    pub accepted: Counter,
    rejected: [Counter; Rejection::ALL.len()],
    pub bytes_in: Counter,
    pub bytes_out: Counter,
}

impl ClientMeters {
    pub fn register() -> ClientMeters {
        ClientMeters {
            accepted: counter!(names::CLIENT_CONNECTIONS_TOTAL),
            rejected: Rejection::ALL
                .map(|r| counter!(names::CLIENT_REJECTED, "reason" => r.as_str())),
            bytes_in: counter!(names::BYTES, "direction" => "client_to_backend"),
            bytes_out: counter!(names::BYTES, "direction" => "backend_to_client"),
        }
    }

    pub fn rejected(&self, why: Rejection) {
        self.rejected[why as usize].increment(1);
    }
}

/// Per-statement timing: for the duration histogram and the slow-statement log.
#[derive(Debug, Clone)]
pub struct Timing {
    /// Record durations in the histogram (metrics enabled).
    pub record: bool,
    /// Log statements at least this slow.
    pub slow: Option<Duration>,
    /// Slow-statement lines carry the SQL text.
    pub text: bool,
}

/// Handles for the statements one backend runs.
#[derive(Debug)]
pub struct BackendMeters {
    /// By [`Reason::index`].
    queries: Box<[Counter]>,
    duration: Histogram,
    read_staleness: Histogram,
    /// Reads re-run on the primary after this replica failed them.
    pub read_retries: Counter,
    /// None when neither the histogram nor the slow log wants durations: no clock is read.
    pub timing: Option<Timing>,
}

impl BackendMeters {
    /// For backend `name`, which is the primary when `primary` (whose name is `primary_name`).
    pub fn register(
        name: &str,
        primary: bool,
        primary_name: &str,
        timing: Option<Timing>,
    ) -> BackendMeters {
        let route = if primary { "primary" } else { "replica" };
        let queries = Reason::ALL
            .iter()
            .map(|reason| {
                counter!(names::QUERIES,
                    "route" => route, "backend" => name.to_owned(), "reason" => reason.as_str())
            })
            .collect();
        BackendMeters {
            queries,
            duration: histogram!(names::QUERY_DURATION, "route" => route),
            read_staleness: histogram!(names::READ_STALENESS, "backend" => name.to_owned()),
            read_retries: counter!(names::READ_RETRIES,
                "from" => name.to_owned(), "to" => primary_name.to_owned()),
            timing,
        }
    }

    /// One statement (or extended-protocol batch) sent here for `reason`.
    #[inline]
    pub fn routed(&self, reason: Reason) {
        self.queries[reason.index()].increment(1);
    }

    /// A read sent to this replica while it was `staleness` behind the primary.
    #[inline]
    pub fn read_with_staleness(&self, staleness: Duration) {
        self.read_staleness.record(staleness.as_secs_f64());
    }

    /// The clock reading a unit starts with, when anything wants its duration.
    #[inline]
    pub fn start(&self) -> Option<Instant> {
        self.timing.as_ref().map(|_| Instant::now())
    }

    /// A unit started at `started` was answered (its ReadyForQuery came).
    pub fn finished(&self, started: Instant, finished: &Finished<'_>) {
        let Some(timing) = &self.timing else { return };
        let took = started.elapsed();
        if timing.record {
            self.duration.record(took.as_secs_f64());
        }
        if timing.slow.is_some_and(|slow| took >= slow) {
            log_slow(took, finished, timing.text);
        }
    }
}

/// What the slow-statement log says about a unit besides its duration.
pub struct Finished<'a> {
    pub backend: &'a str,
    pub key: &'a PoolKey,
    pub reason: Option<Reason>,
    /// Kept only when `[log] statement_text` asks for it.
    pub sql: Option<&'a Bytes>,
}

#[cold]
#[inline(never)]
fn log_slow(took: Duration, unit: &Finished<'_>, text: bool) {
    let reason = unit.reason.map_or("", Reason::as_str);
    let duration_ms = took.as_secs_f64() * 1000.0;
    let (user, database) = (&unit.key.startup.user, &unit.key.startup.database);
    match unit.sql.filter(|_| text) {
        Some(sql) => tracing::warn!(
            backend = unit.backend, %user, %database, reason, duration_ms,
            statement = %String::from_utf8_lossy(sql),
            "slow statement"
        ),
        None => tracing::warn!(
            backend = unit.backend, %user, %database, reason, duration_ms,
            "slow statement"
        ),
    }
}
