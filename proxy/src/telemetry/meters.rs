//! The metric handles of the facade: counters the scrape sets from the workers' tallies, and
//! the few counted where they happen (rare events: connections, rejections, retries). Also
//! the per-statement timing of the duration histogram and the slow-statement log. Without a
//! recorder (`[metrics] enabled = false`) every handle is a no-op.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use metrics::{counter, Counter};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use metrics_util::MetricKindMask;

use super::clock::now_nanos;
use super::names::{self, Rejection};
use super::tally::Tally;
use crate::backend::PoolKey;
use crate::route::Reason;

/// A gauge not set for this long is dropped from the page. Every scrape sets the gauges of
/// what exists before rendering them, so only those of a replica a reload removed go.
const GAUGE_IDLE: Duration = Duration::from_secs(1);

/// Installs the process's Prometheus recorder (once; later calls return the same handle).
/// Must run before any handle is registered: handles taken earlier stay no-ops.
/// Bounds of `pgrepl_pool_wait_seconds`, from a short wait to `[pool] query_wait_timeout`'s
/// default.
const POOL_WAIT_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 120.0,
];

pub fn install_recorder() -> anyhow::Result<PrometheusHandle> {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    if let Some(handle) = HANDLE.get() {
        return Ok(handle.clone());
    }
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(names::POOL_WAIT_SECONDS.to_owned()),
            POOL_WAIT_BUCKETS,
        )?
        .idle_timeout(MetricKindMask::GAUGE, Some(GAUGE_IDLE))
        .install_recorder()?;
    names::describe_all();
    Ok(HANDLE.get_or_init(|| handle).clone())
}

/// Handles for what is counted per client connection.
pub struct ClientMeters {
    pub accepted: Counter,
    rejected: [Counter; Rejection::ALL.len()],
    /// Set from the tallies at each scrape.
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

/// Configuration reloads: counted as they end; the time of the last one that applied is
/// published at each scrape.
pub struct ReloadMeters {
    ok: Counter,
    rejected: Counter,
    /// Unix time in milliseconds: the start, then each reload that applied.
    last_success: AtomicU64,
}

impl ReloadMeters {
    pub fn register() -> ReloadMeters {
        ReloadMeters {
            ok: counter!(names::CONFIG_RELOADS, "result" => "ok"),
            rejected: counter!(names::CONFIG_RELOADS, "result" => "rejected"),
            last_success: AtomicU64::new(unix_millis()),
        }
    }

    pub fn applied(&self) {
        self.ok.increment(1);
        self.last_success.store(unix_millis(), Ordering::Relaxed);
    }

    pub fn rejected(&self) {
        self.rejected.increment(1);
    }

    /// Unix time of the last successful load, in seconds.
    pub fn last_success(&self) -> f64 {
        self.last_success.load(Ordering::Relaxed) as f64 / 1000.0
    }
}

fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Per-statement timing: for the duration histogram and the slow-statement log.
#[derive(Debug, Clone)]
pub struct Timing {
    /// Log statements at least this slow, in nanoseconds.
    pub slow: Option<u64>,
    /// Slow-statement lines carry the SQL text.
    pub text: bool,
}

/// Handles for the statements one backend runs.
#[derive(Debug)]
pub struct BackendMeters {
    primary: bool,
    /// By [`Reason::index`]; set from the tallies at each scrape.
    pub queries: Box<[Counter]>,
    /// Reads re-run on the primary after this replica failed them (a no-op for the primary):
    /// it was lost before answering them,
    pub read_retries: Counter,
    /// or it refused them as a standby (they write after all).
    pub refused_retries: Counter,
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
        let retries = |reason: &'static str| {
            if primary {
                Counter::noop()
            } else {
                counter!(names::READ_RETRIES,
                    "from" => name.to_owned(), "to" => primary_name.to_owned(), "reason" => reason)
            }
        };
        BackendMeters {
            primary,
            queries,
            read_retries: retries("replica_lost"),
            refused_retries: retries("misrouted"),
            timing,
        }
    }

    /// A unit sent at `started` (`clock::now_nanos`) was answered (its ReadyForQuery came).
    /// Its duration goes into `tally`, the session's worker's (None with metrics off).
    pub fn finished(&self, tally: Option<&Tally>, started: u64, finished: &Finished<'_>) {
        let Some(timing) = &self.timing else { return };
        let took = now_nanos().saturating_sub(started);
        if let Some(tally) = tally {
            tally.answered(self.primary, took);
        }
        if timing.slow.is_some_and(|slow| took >= slow) {
            log_slow(Duration::from_nanos(took), finished, timing.text);
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
