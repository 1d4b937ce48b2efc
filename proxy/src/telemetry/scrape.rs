//! One scrape of `/metrics`: states (gauges) from the status snapshot, the counters the
//! workers' tallies and the classifier keep in their own atomics, the exporter's text, then
//! the histograms the proxy renders itself.
//!
//! Counts are published by backend name: a replica a reload moved to another address, or
//! removed and added again, has counted under more than one id. A removed replica's counts
//! stay on the page; its gauges go (see `meters::GAUGE_IDLE`).

use std::sync::atomic::Ordering::Relaxed;

use std::sync::Arc;

use metrics::{counter, gauge};
use metrics_exporter_prometheus::PrometheusHandle;

use super::names;
use super::render::histogram_family;
use super::status::{snapshot, Status};
use super::tally::{HistogramTotals, Totals, DURATION_BOUNDS, STALENESS_BOUNDS};
use crate::backend::{BackendId, BackendInfo, Backends};
use crate::route::Reason;
use crate::shared::Shared;

/// The whole `/metrics` page.
pub fn render(shared: &Shared, prometheus: &PrometheusHandle) -> String {
    publish_states(&snapshot(shared), shared);
    let totals = Totals::sum(shared.tallies.iter().map(|t| &**t));
    publish_counts(&totals, shared);
    let mut out = prometheus.render();
    if !out.ends_with("\n\n") {
        out.push('\n');
    }
    render_histograms(&mut out, &totals, shared);
    out
}

fn publish_states(status: &Status, shared: &Shared) {
    gauge!(names::CLIENT_CONNECTIONS).set(status.clients.connected as f64);
    gauge!(names::CLIENT_CONNECTIONS_MAX).set(status.clients.max as f64);
    gauge!(names::CLIENTS_WAITING).set(shared.pool.clients_waiting() as f64);
    gauge!(names::PINNED_SESSIONS).set(shared.pinned_sessions.load(Relaxed) as f64);
    gauge!(names::CLIENT_LOGINS_PENDING).set(status.clients.logging_in as f64);
    for backend in &status.backends {
        let name = backend.name.clone();
        gauge!(names::BACKEND_UP, "backend" => name.clone(), "role" => backend.role.clone())
            .set(flag(backend.up));
        gauge!(names::BACKEND_ROLE_MISMATCH, "backend" => name.clone())
            .set(flag(backend.role_mismatch));
        gauge!(names::BACKEND_FENCED, "backend" => name.clone()).set(flag(backend.fenced));
        gauge!(names::BACKEND_WRITER, "backend" => name.clone()).set(flag(backend.writer));
        if let Some(timeline) = backend.timeline {
            gauge!(names::BACKEND_TIMELINE, "backend" => name.clone()).set(f64::from(timeline));
        }
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
    gauge!(names::CONFIG_LAST_RELOAD).set(shared.reload_meters.last_success());
    // Listed from the start, at 0 until something happens.
    counter!(names::WRITER_CHANGES).increment(0);
    for reason in [
        "down",
        "read_only",
        "conflict",
        "fenced",
        "no_candidate",
        "wait_timeout",
    ] {
        counter!(names::WRITES_REFUSED, "reason" => reason).increment(0);
    }
    for outcome in ["not_committed", "unknown"] {
        counter!(names::WRITER_LOST_TRANSACTIONS, "outcome" => outcome).increment(0);
    }
    let classifier = shared.routing.get().classifier.clone();
    let (hits, misses) = classifier.cache_hits_misses();
    counter!(names::CACHE_HITS).absolute(hits);
    counter!(names::CACHE_MISSES).absolute(misses);
    counter!(names::PARSE_FAILURES).absolute(classifier.parse_failures());
}

/// Every backend name, once, with the ids it has had: the first of them stands for the name
/// (their meters are the same handles).
fn by_name(backends: &Backends) -> Vec<(&Arc<BackendInfo>, Vec<BackendId>)> {
    let mut names: Vec<(&Arc<BackendInfo>, Vec<BackendId>)> = Vec::new();
    for info in backends.iter() {
        match names.iter_mut().find(|(first, _)| first.name == info.name) {
            Some((_, ids)) => ids.push(info.id),
            None => names.push((info, vec![info.id])),
        }
    }
    names
}

/// The replicas' names, with the sum of `of` over each one's ids.
fn replica_histograms<'a>(
    backends: &'a Backends,
    of: &[HistogramTotals],
) -> Vec<(Vec<(&'static str, &'a str)>, HistogramTotals)> {
    by_name(backends)
        .into_iter()
        .filter(|(info, _)| !info.id.is_first())
        .map(|(info, ids)| {
            let mut sum = HistogramTotals::default();
            for id in ids {
                if let Some(histogram) = of.get(id.index()) {
                    sum.add(histogram);
                }
            }
            (vec![("backend", info.name.as_str())], sum)
        })
        .collect()
}

fn publish_counts(totals: &Totals, shared: &Shared) {
    let names = by_name(shared.pool.backends());
    for (info, ids) in &names {
        for (reason, counter) in Reason::ALL.iter().zip(info.meters.queries.iter()) {
            counter.absolute(ids.iter().map(|id| totals.queries(*id, *reason)).sum());
        }
    }
    for (info, ids) in names.iter().filter(|(b, _)| !b.id.is_first()) {
        let (ran, left) = ids
            .iter()
            .filter_map(|id| totals.causal_waits.get(id.index()))
            .fold((0, 0), |(ran, left), (r, l)| (ran + r, left + l));
        let name = info.name.clone();
        counter!(names::CAUSAL_WAITS, "backend" => name.clone(), "outcome" => "replica")
            .absolute(ran);
        counter!(names::CAUSAL_WAITS, "backend" => name, "outcome" => "primary").absolute(left);
    }
    let positions = &shared.health.positions;
    counter!(names::POSITION_QUERIES, "kind" => "commit").absolute(totals.commit_questions);
    counter!(names::POSITION_QUERIES, "kind" => "round")
        .absolute(positions.rounds_run.load(Relaxed));
    counter!(names::POSITION_QUERIES, "kind" => "flush")
        .absolute(positions.flushes_run.load(Relaxed));
    shared.client_meters.bytes_in.absolute(totals.bytes_in);
    shared.client_meters.bytes_out.absolute(totals.bytes_out);
}

fn render_histograms(out: &mut String, totals: &Totals, shared: &Shared) {
    let by_route = [
        (vec![("route", "primary")], &totals.duration[0]),
        (vec![("route", "replica")], &totals.duration[1]),
    ];
    histogram_family(
        out,
        names::QUERY_DURATION,
        names::QUERY_DURATION_HELP,
        &DURATION_BOUNDS,
        &by_route,
    );
    let backends = shared.pool.backends();
    let staleness = replica_histograms(backends, &totals.staleness);
    let by_replica: Vec<_> = staleness.iter().map(|(l, h)| (l.clone(), h)).collect();
    histogram_family(
        out,
        names::READ_STALENESS,
        names::READ_STALENESS_HELP,
        &STALENESS_BOUNDS,
        &by_replica,
    );
    let waited = replica_histograms(backends, &totals.causal_wait);
    let waits: Vec<_> = waited.iter().map(|(l, h)| (l.clone(), h)).collect();
    histogram_family(
        out,
        names::CAUSAL_WAIT,
        names::CAUSAL_WAIT_HELP,
        &DURATION_BOUNDS,
        &waits,
    );
}

fn flag(on: bool) -> f64 {
    if on {
        1.0
    } else {
        0.0
    }
}
