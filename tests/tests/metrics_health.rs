//! What the endpoint says while the pair misbehaves: lag and staleness while replay is paused
//! (and the staleness reads actually got), `backend_up`, `/readyz`, `/status` and
//! `pgrepl-proxy status` with a stopped replica and a stopped primary. Each test breaks its
//! own cluster.

use std::net::SocketAddr;
use std::time::Duration;

use pgrepl_tests::endpoint::{get, get_json, Metrics};
use pgrepl_tests::roles::{APP, DATABASE};
use pgrepl_tests::suite::{
    bounded_for, eventually, node_of_read, on_replica, own_cluster_and_proxy, REPLICA,
};
use pgrepl_tests::{connect, proxy_command, Node};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(180);
/// A few monitor intervals, with room for a slow machine.
const NOTICE: Duration = Duration::from_secs(10);
/// Fast checks, so state changes show within a second.
const HEALTH: &str = "\n[health]\ninterval = \"100ms\"\n";

async fn wait_for_metric(
    endpoint: SocketAddr,
    what: &str,
    check: impl Fn(&Metrics) -> bool,
) -> Metrics {
    eventually(what, NOTICE, || async { check(&Metrics::scrape(endpoint)) })
        .await
        .unwrap();
    Metrics::scrape(endpoint)
}

fn replica(name: &str) -> [(&'static str, &str); 1] {
    [("backend", name)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_and_staleness_show_while_replay_is_paused_and_reads_record_what_they_got() {
    bounded_for(LIMIT, async {
        let extra = format!("{HEALTH}\n[routing]\nmax_replica_lag = \"60s\"\n");
        let (cluster, proxy) =
            own_cluster_and_proxy("metrics-lag", "CREATE TABLE t (id int);", &extra);
        let endpoint = proxy.endpoint();
        let lag = "pgrepl_replica_lag_bytes";
        let staleness = "pgrepl_replica_staleness_seconds";
        wait_for_metric(endpoint, "a caught-up replica", |m| {
            m.has(lag, &replica("db02"))
                && m.value(lag, &replica("db02")) == 0.0
                && m.value(staleness, &replica("db02")) == 0.0
        })
        .await;

        on_replica(&cluster, "SELECT pg_wal_replay_pause()").await;
        let writer = connect(proxy.addr, APP.name, DATABASE).await.unwrap();
        writer
            .batch_execute("INSERT INTO t SELECT generate_series(1, 1000)")
            .await
            .unwrap();
        let behind = wait_for_metric(endpoint, "lag and staleness to show", |m| {
            m.value(lag, &replica("db02")) > 0.0 && m.value(staleness, &replica("db02")) > 0.3
        })
        .await;
        let status = get_json(endpoint, "/status");
        let db02 = &status["backends"][1];
        assert_eq!(db02["name"], "db02");
        assert!(db02["lag_bytes"].as_u64().unwrap() > 0, "{db02}");
        assert!(db02["staleness_seconds"].as_f64().unwrap() > 0.3, "{db02}");
        assert_eq!(
            db02["state"], "ok",
            "within max_replica_lag: still read from"
        );

        // A session that never wrote reads the stale replica, and the read is recorded with
        // the staleness it had.
        let staleness_of_reads = "pgrepl_read_staleness_seconds";
        let fresh_before = behind.buckets(staleness_of_reads, &replica("db02"));
        let reader = connect(proxy.addr, APP.name, DATABASE).await.unwrap();
        // One simple query: one read.
        assert_eq!(node_of_read(&reader).await, REPLICA);
        let after = Metrics::scrape(endpoint);
        let fresh_after = after.buckets(staleness_of_reads, &replica("db02"));
        let at_most = |buckets: &[(f64, f64)], bound: f64| {
            buckets
                .iter()
                .find(|(le, _)| *le >= bound)
                .map_or(0.0, |(_, count)| *count)
        };
        assert_eq!(
            at_most(&fresh_after, 0.1) - at_most(&fresh_before, 0.1),
            0.0,
            "the read was not recorded as fresh"
        );
        assert_eq!(
            at_most(&fresh_after, f64::INFINITY) - at_most(&fresh_before, f64::INFINITY),
            1.0
        );

        on_replica(&cluster, "SELECT pg_wal_replay_resume()").await;
        wait_for_metric(endpoint, "the replica to catch up", |m| {
            m.value(lag, &replica("db02")) == 0.0 && m.value(staleness, &replica("db02")) == 0.0
        })
        .await;
    })
    .await
}

/// Runs `pgrepl-proxy status` against `endpoint` with `args`; its stdout.
fn status_command(endpoint: SocketAddr, args: &[&str]) -> String {
    let output = proxy_command()
        .args(["status", "--endpoint", &endpoint.to_string()])
        .args(args)
        .output()
        .expect("pgrepl-proxy status runs");
    assert!(
        output.status.success(),
        "status {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// The row of `backend` in the status table, split into columns.
fn table_row(table: &str, backend: &str) -> Vec<String> {
    table
        .lines()
        .find(|l| l.starts_with(&format!("{backend} ")))
        .unwrap_or_else(|| panic!("no row for {backend}:\n{table}"))
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// Runs `action` (`Node::stop`, `Node::start`) on `node`, off the async runtime's thread.
async fn blocking(node: &Node, action: fn(&Node) -> anyhow::Result<()>) {
    let node = node.clone();
    tokio::task::spawn_blocking(move || action(&node))
        .await
        .unwrap()
        .unwrap();
}

fn readiness(endpoint: SocketAddr) -> (u16, Value) {
    let response = get(endpoint, "/readyz");
    let body = serde_json::from_str(&response.body).expect("/readyz is JSON");
    (response.status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_backends_show_in_metrics_readyz_status_and_the_status_command() {
    bounded_for(LIMIT, async {
        let (cluster, proxy) = own_cluster_and_proxy("metrics-down", "SELECT 1;", HEALTH);
        let endpoint = proxy.endpoint();
        let up = "pgrepl_backend_up";
        let primary_up = [("backend", "db01"), ("role", "primary")];
        let replica_up = [("backend", "db02"), ("role", "replica")];
        // The endpoint answers while the monitor's first round runs: wait for it.
        wait_for_metric(endpoint, "both checked", |m| m.value(up, &[]) == 2.0).await;
        let (code, body) = readiness(endpoint);
        assert_eq!(code, 200, "{body}");
        assert_eq!(body["primary"]["reachable"], true);
        assert_eq!(body["replicas"][0]["reachable"], true);
        let table = status_command(endpoint, &[]);
        assert_eq!(
            table_row(&table, "db01")[..4],
            ["db01", "primary", &cluster.primary.addr().to_string(), "ok"]
        );
        assert_eq!(table_row(&table, "db02")[3], "ok", "{table}");

        blocking(&cluster.replica, Node::stop).await;
        let down =
            wait_for_metric(endpoint, "db02 down", |m| m.value(up, &replica_up) == 0.0).await;
        assert_eq!(down.value(up, &primary_up), 1.0);
        let (code, body) = readiness(endpoint);
        assert_eq!(code, 200, "the primary still serves: {body}");
        assert_eq!(body["ready"], true);
        assert_eq!(
            body["primary"],
            serde_json::json!({"name": "db01", "reachable": true})
        );
        assert_eq!(
            body["replicas"],
            serde_json::json!([{"name": "db02", "reachable": false}])
        );
        let status = get_json(endpoint, "/status");
        assert_eq!(status["backends"][1]["up"], false);
        assert_eq!(status["backends"][1]["state"], "down");
        let table = status_command(endpoint, &[]);
        assert_eq!(table_row(&table, "db02")[3], "down", "{table}");
        let json: Value = serde_json::from_str(&status_command(endpoint, &["--json"])).unwrap();
        assert_eq!(json["backends"][1]["state"], "down");

        blocking(&cluster.replica, Node::start).await;
        wait_for_metric(endpoint, "db02 up again", |m| {
            m.value(up, &replica_up) == 1.0
        })
        .await;

        blocking(&cluster.primary, Node::stop).await;
        let down =
            wait_for_metric(endpoint, "db01 down", |m| m.value(up, &primary_up) == 0.0).await;
        assert_eq!(down.value(up, &replica_up), 1.0);
        let (code, body) = readiness(endpoint);
        assert_eq!(code, 200, "the replica still serves reads: {body}");
        assert_eq!(body["primary"]["reachable"], false);
        assert_eq!(body["replicas"][0]["reachable"], true);
        let status = get_json(endpoint, "/status");
        assert_eq!(status["backends"][0]["state"], "down");
        assert_eq!(table_row(&status_command(endpoint, &[]), "db01")[3], "down");

        blocking(&cluster.replica, Node::stop).await;
        wait_for_metric(endpoint, "both down", |m| m.value(up, &[]) == 0.0).await;
        let (code, body) = readiness(endpoint);
        assert_eq!(code, 503, "{body}");
        assert_eq!(body["ready"], false);
        // Alive, though: the process still serves (clients get 08006 from it).
        assert_eq!(get(endpoint, "/healthz").status, 200);
    })
    .await
}
