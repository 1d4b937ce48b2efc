//! One scrape of `/metrics`: states (gauges) from the status snapshot, the counters the
//! workers' tallies and the classifier keep in their own atomics, the exporter's text, then
//! the histograms the proxy renders itself.

use std::sync::atomic::Ordering::Relaxed;

use metrics::{counter, gauge};
use metrics_exporter_prometheus::PrometheusHandle;

use super::names;
use super::render::histogram_family;
use super::status::{snapshot, Status};
use super::tally::{Totals, DURATION_BOUNDS, STALENESS_BOUNDS};
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
    gauge!(names::CLIENT_LOGINS_PENDING).set(status.clients.logging_in as f64);
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

fn publish_counts(totals: &Totals, shared: &Shared) {
    for info in shared.pool.backends() {
        for (reason, counter) in Reason::ALL.iter().zip(info.meters.queries.iter()) {
            counter.absolute(totals.queries(info.id, *reason));
        }
    }
    for info in shared.pool.backends().iter().filter(|b| !b.id.is_primary()) {
        let (ran, left) = totals
            .causal_waits
            .get(info.id.index())
            .copied()
            .unwrap_or_default();
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
    let replicas = shared.pool.backends().iter().filter(|b| !b.id.is_primary());
    let by_replica: Vec<_> = replicas
        .filter_map(|info| Some((info, totals.staleness.get(info.id.index())?)))
        .map(|(info, staleness)| (vec![("backend", info.name.as_str())], staleness))
        .collect();
    histogram_family(
        out,
        names::READ_STALENESS,
        names::READ_STALENESS_HELP,
        &STALENESS_BOUNDS,
        &by_replica,
    );
    let replicas = shared.pool.backends().iter().filter(|b| !b.id.is_primary());
    let waits: Vec<_> = replicas
        .filter_map(|info| Some((info, totals.causal_wait.get(info.id.index())?)))
        .map(|(info, waited)| (vec![("backend", info.name.as_str())], waited))
        .collect();
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
