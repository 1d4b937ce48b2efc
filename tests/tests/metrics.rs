//! `/metrics` scraped during real traffic and parsed with a Prometheus exposition parser: the
//! counters move by what a known mix of statements sends, clients and rejections are counted,
//! every documented metric is exported with its type and help, and the README's table names
//! exactly the metrics the proxy exports.

use std::net::SocketAddr;
use std::time::Duration;

use pgrepl_tests::endpoint::{get, Metrics};
use pgrepl_tests::roles::{APP, DATABASE};
use pgrepl_tests::suite::raw::RawClient;
use pgrepl_tests::suite::{bounded, code_of, eventually, free_addr, proxy_config_with, unique};
use pgrepl_tests::{connect, conninfo, Cluster, ProxyProcess};
use tokio_postgres::NoTls;

const QUERIES: &str = "pgrepl_queries_total";
const DURATION: &str = "pgrepl_query_duration_seconds";
const STALENESS: &str = "pgrepl_read_staleness_seconds";

/// A proxy of the test's own on the shared cluster (so nothing else moves its counters), with
/// `proxy_keys` in `[proxy]` and read-your-writes off (each statement's route is then its own).
/// In session mode: a test counts the connections clients hold while idle.
fn own_proxy(proxy_keys: &str) -> ProxyProcess {
    let addr = free_addr();
    let config = proxy_config_with(Cluster::shared(), addr, proxy_keys)
        + "\n[routing]\nread_your_writes = \"off\"\n\n[pool]\nmode = \"session\"\n";
    ProxyProcess::start(&config, addr).unwrap()
}

/// A scrape once the proxy has taken the harness's own start-up probe (a TCP connection
/// accepted and closed), which would otherwise land between two scrapes of a test.
async fn settled(endpoint: SocketAddr) -> Metrics {
    let probe_taken = |m: &Metrics| {
        m.value("pgrepl_client_connections_total", &[]) >= 1.0
            && m.value("pgrepl_client_connections", &[]) == 0.0
            && m.value("pgrepl_client_logins_pending", &[]) == 0.0
    };
    eventually(
        "the start-up probe to be taken",
        Duration::from_secs(10),
        || async { probe_taken(&Metrics::scrape(endpoint)) },
    )
    .await
    .unwrap();
    Metrics::scrape(endpoint)
}

/// How much each series of interest moved between two scrapes.
struct Delta<'a> {
    before: &'a Metrics,
    after: &'a Metrics,
}

impl Delta<'_> {
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.after.value(name, labels) - self.before.value(name, labels)
    }

    fn observations(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.after.observations(name, labels) - self.before.observations(name, labels)
    }
}

fn queries(route: &str, backend: &str, reason: &str) -> [(&'static str, String); 3] {
    [
        ("route", route.to_owned()),
        ("backend", backend.to_owned()),
        ("reason", reason.to_owned()),
    ]
}

fn labels<'a>(owned: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    owned.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_move_by_what_a_known_mix_of_statements_sends() {
    bounded(async {
        let proxy = own_proxy("");
        let endpoint = proxy.endpoint();
        let before = settled(endpoint).await;
        let reader = connect(proxy.addr, APP.name, DATABASE).await.unwrap();
        let writer = connect(proxy.addr, APP.name, DATABASE).await.unwrap();
        let table = unique("metrics_mix");
        let mut sql_bytes = 0;
        let mut run = |sql: String| {
            sql_bytes += sql.len();
            sql
        };
        // 7 simple reads on the replica.
        for i in 0..7 {
            reader
                .simple_query(&run(format!("SELECT {i}")))
                .await
                .unwrap();
        }
        // 2 DDL and 3 writes on the primary.
        writer
            .batch_execute(&run(format!("CREATE TABLE {table} (id int)")))
            .await
            .unwrap();
        for i in 0..3 {
            writer
                .simple_query(&run(format!("INSERT INTO {table} VALUES ({i})")))
                .await
                .unwrap();
        }
        // A transaction: 3 statements on the primary, for reason "transaction".
        for sql in ["BEGIN", "SELECT 1", "COMMIT"] {
            writer.simple_query(&run(sql.to_owned())).await.unwrap();
        }
        // Extended protocol: a Parse/Describe/Sync batch, then 5 Bind/Execute/Sync batches.
        let statement = reader.prepare(&run("SELECT $1::int".into())).await.unwrap();
        for i in 0..5 {
            reader.query(&statement, &[&i]).await.unwrap();
        }
        // Dropping it sends Close + Sync: a batch that runs no statement, not counted; then
        // one more read.
        drop(statement);
        reader.simple_query(&run("SELECT 99".into())).await.unwrap();
        // sqlparser cannot parse it: the primary, which answers 42601.
        let err = writer
            .simple_query(&run("SELEC 1".into()))
            .await
            .unwrap_err();
        assert_eq!(code_of(&err), "42601");
        writer
            .batch_execute(&run(format!("DROP TABLE {table}")))
            .await
            .unwrap();

        let during = Metrics::scrape(endpoint);
        let delta = Delta {
            before: &before,
            after: &during,
        };
        let expected = [
            (queries("replica", "db02", "read"), 14.0),
            (queries("primary", "db01", "ddl"), 2.0),
            (queries("primary", "db01", "write"), 3.0),
            (queries("primary", "db01", "transaction"), 3.0),
            (queries("primary", "db01", "unparseable"), 1.0),
        ];
        for (series, count) in &expected {
            assert_eq!(delta.value(QUERIES, &labels(series)), *count, "{series:?}");
        }
        assert_eq!(
            delta.value(QUERIES, &[]),
            23.0,
            "no other statement counted"
        );
        assert_eq!(delta.observations(DURATION, &[("route", "replica")]), 14.0);
        assert_eq!(delta.observations(DURATION, &[("route", "primary")]), 9.0);
        assert_eq!(delta.observations(STALENESS, &[("backend", "db02")]), 14.0);
        assert_eq!(delta.value("pgrepl_parse_failures_total", &[]), 1.0);
        let sent = delta.value("pgrepl_bytes_total", &[("direction", "client_to_backend")]);
        assert!(
            sent >= sql_bytes as f64,
            "{sent} bytes counted, {sql_bytes} of SQL sent"
        );
        let received = delta.value("pgrepl_bytes_total", &[("direction", "backend_to_client")]);
        assert!(received > 0.0);

        // Two clients, each holding the lease its statements used.
        assert_eq!(during.value("pgrepl_client_connections", &[]), 2.0);
        assert_eq!(delta.value("pgrepl_client_connections_total", &[]), 2.0);
        for backend in ["db01", "db02"] {
            let active = [("backend", backend), ("state", "active")];
            assert_eq!(
                during.value("pgrepl_backend_connections", &active),
                1.0,
                "{backend}"
            );
        }

        drop((reader, writer));
        eventually(
            "the clients' leases to be pooled",
            Duration::from_secs(10),
            || async {
                let now = Metrics::scrape(endpoint);
                now.value("pgrepl_client_connections", &[]) == 0.0
                    && now.value("pgrepl_backend_connections", &[("state", "active")]) == 0.0
                    && now.value("pgrepl_backend_connections", &[("state", "idle")]) >= 2.0
            },
        )
        .await
        .unwrap();
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_classification_cache_counts_one_miss_then_hits() {
    bounded(async {
        let proxy = own_proxy("");
        let before = settled(proxy.endpoint()).await;
        let client = connect(proxy.addr, APP.name, DATABASE).await.unwrap();
        // The same text up to its literals: one parse.
        for i in 0..3 {
            let sql = format!("SELECT {i} AS cache_probe");
            client.simple_query(&sql).await.unwrap();
        }
        let after = Metrics::scrape(proxy.endpoint());
        let delta = Delta {
            before: &before,
            after: &after,
        };
        assert_eq!(delta.value("pgrepl_classify_cache_misses_total", &[]), 1.0);
        assert_eq!(delta.value("pgrepl_classify_cache_hits_total", &[]), 2.0);
    })
    .await
}

/// Connects with `password` to `database`; the SQLSTATE of the refusal.
async fn refused(addr: SocketAddr, password: &str, database: &str) -> String {
    let info = conninfo(addr, APP.name, database).replace(APP.password.unwrap(), password);
    match tokio_postgres::connect(&info, NoTls).await {
        Ok(_) => panic!("connecting with {info:?} succeeded"),
        Err(e) => code_of(&e),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_clients_are_counted_by_reason() {
    bounded(async {
        let proxy = own_proxy("max_client_connections = 2");
        let endpoint = proxy.endpoint();
        let before = settled(endpoint).await;
        let password = APP.password.unwrap();

        assert_eq!(
            refused(proxy.addr, "not-the-password", DATABASE).await,
            "28P01"
        );
        assert_eq!(
            refused(proxy.addr, password, "no_such_database").await,
            "3D000"
        );
        let mut garbage = RawClient::connect(proxy.addr).await.unwrap();
        garbage.send(&[0, 0, 0, 3]).await.unwrap();
        let answer = garbage.recv_to_end().await.unwrap();
        assert_eq!(
            answer.last().and_then(|m| m.code()).as_deref(),
            Some("08P01")
        );
        let held = (
            connect(proxy.addr, APP.name, DATABASE).await.unwrap(),
            connect(proxy.addr, APP.name, DATABASE).await.unwrap(),
        );
        assert_eq!(refused(proxy.addr, password, DATABASE).await, "53300");

        let after = Metrics::scrape(endpoint);
        let delta = Delta {
            before: &before,
            after: &after,
        };
        let rejected = "pgrepl_client_rejected_total";
        for reason in ["auth", "backend", "protocol", "limit"] {
            assert_eq!(
                delta.value(rejected, &[("reason", reason)]),
                1.0,
                "{reason}"
            );
        }
        assert_eq!(delta.value("pgrepl_client_connections_total", &[]), 6.0);
        assert_eq!(after.value("pgrepl_client_connections", &[]), 2.0);
        assert_eq!(after.value("pgrepl_client_connections_max", &[]), 2.0);
        drop(held);
    })
    .await
}

/// Every metric the README documents, with its type.
const DOCUMENTED: [(&str, &str); 32] = [
    ("pgrepl_queries_total", "counter"),
    ("pgrepl_query_duration_seconds", "histogram"),
    ("pgrepl_read_staleness_seconds", "histogram"),
    ("pgrepl_client_connections", "gauge"),
    ("pgrepl_client_connections_max", "gauge"),
    ("pgrepl_client_logins_pending", "gauge"),
    ("pgrepl_client_connections_total", "counter"),
    ("pgrepl_client_rejected_total", "counter"),
    ("pgrepl_backend_connections", "gauge"),
    ("pgrepl_backend_up", "gauge"),
    ("pgrepl_backend_role_mismatch", "gauge"),
    ("pgrepl_replica_lag_bytes", "gauge"),
    ("pgrepl_replica_staleness_seconds", "gauge"),
    ("pgrepl_read_retries_total", "counter"),
    ("pgrepl_parse_failures_total", "counter"),
    ("pgrepl_classify_cache_hits_total", "counter"),
    ("pgrepl_classify_cache_misses_total", "counter"),
    ("pgrepl_bytes_total", "counter"),
    ("pgrepl_causal_wait_seconds", "histogram"),
    ("pgrepl_causal_waits_total", "counter"),
    ("pgrepl_primary_position_queries_total", "counter"),
    ("pgrepl_pool_wait_seconds", "histogram"),
    ("pgrepl_clients_waiting", "gauge"),
    ("pgrepl_pinned_sessions", "gauge"),
    ("pgrepl_config_reloads_total", "counter"),
    ("pgrepl_backend_writer", "gauge"),
    ("pgrepl_backend_timeline", "gauge"),
    ("pgrepl_backend_fenced", "gauge"),
    ("pgrepl_writer_changes_total", "counter"),
    ("pgrepl_writes_refused_total", "counter"),
    ("pgrepl_writer_lost_transactions_total", "counter"),
    (
        "pgrepl_config_last_reload_success_timestamp_seconds",
        "gauge",
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_metric_is_exported_with_its_type_and_help() {
    bounded(async {
        let proxy = own_proxy("");
        let client = connect(proxy.addr, APP.name, DATABASE).await.unwrap();
        client.simple_query("SELECT 1").await.unwrap();
        client.simple_query("SELECT now()").await.unwrap();
        let scraped = Metrics::scrape(proxy.endpoint());
        for (name, kind) in DOCUMENTED {
            assert_eq!(scraped.kind(name), Some(kind), "{name}");
            assert!(
                scraped.help(name).is_some_and(|h| !h.is_empty()),
                "{name} has no HELP"
            );
        }
        // The replica's retries are exported before any happens, from it to the primary
        // (and none from the primary).
        let retries = "pgrepl_read_retries_total";
        assert!(scraped.has(retries, &[("from", "db02"), ("to", "db01")]));
        assert!(!scraped.has(retries, &[("from", "db01")]));
        assert_eq!(scraped.value(retries, &[]), 0.0);
        // One series per backend and reason, so rates exist before the first statement.
        for backend in ["db01", "db02"] {
            for reason in ["read", "write", "lag", "session_pinned", "no_replica"] {
                let series = [("backend", backend), ("reason", reason)];
                assert!(scraped.has(QUERIES, &series), "{series:?}");
            }
        }
        assert!(scraped.has(QUERIES, &[("route", "replica"), ("backend", "db02")]));
        assert!(!scraped.has(QUERIES, &[("route", "primary"), ("backend", "db02")]));
        let mut exported: Vec<String> = scraped
            .names()
            .into_iter()
            .filter(|n| !n.ends_with("_sum") && !n.ends_with("_count"))
            .collect();
        exported.sort();
        let mut documented: Vec<String> = DOCUMENTED.iter().map(|(n, _)| n.to_string()).collect();
        documented.sort();
        assert_eq!(
            exported, documented,
            "exported and documented metrics differ"
        );
        assert_eq!(readme_metrics(), documented, "the README's metrics table");
    })
    .await
}

/// The metric names in the README's metrics table (rows starting with "| `pgrepl_").
fn readme_metrics() -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let mut names: Vec<String> = readme
        .lines()
        .filter_map(|l| l.strip_prefix("| `pgrepl_"))
        .filter_map(|rest| rest.split('`').next())
        .map(|name| format!("pgrepl_{name}"))
        .collect();
    names.sort();
    names.dedup();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_endpoint_answers_health_and_refuses_what_it_does_not_serve() {
    bounded(async {
        let proxy = own_proxy("");
        let endpoint = proxy.endpoint();
        let health = get(endpoint, "/healthz");
        assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
        assert_eq!(get(endpoint, "/nothing-here").status, 404);
        assert_eq!(get(endpoint, "/status?format=json").status, 200);
        let mut raw = std::net::TcpStream::connect(endpoint).unwrap();
        use std::io::{Read, Write};
        raw.write_all(b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
            .unwrap();
        let mut answer = String::new();
        raw.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 405 "), "{answer}");

        // With metrics off, the health and status pages stay.
        let addr = free_addr();
        let config = proxy_config_with(Cluster::shared(), addr, "") + "";
        let config = config.replacen("[metrics]\n", "[metrics]\nenabled = false\n", 1);
        let quiet = ProxyProcess::start(&config, addr).unwrap();
        let client = connect(quiet.addr, APP.name, DATABASE).await.unwrap();
        client.simple_query("SELECT 1").await.unwrap();
        let endpoint = quiet.endpoint();
        assert_eq!(get(endpoint, "/metrics").status, 404);
        assert_eq!(get(endpoint, "/healthz").status, 200);
        assert_eq!(get(endpoint, "/status").status, 200);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_the_replica_loses_is_counted_once_and_as_a_retry() {
    bounded(async {
        let proxy = own_proxy("");
        let endpoint = proxy.endpoint();
        let client = connect(proxy.addr, APP.name, DATABASE).await.unwrap();
        assert_eq!(
            pgrepl_tests::suite::node_of_read(&client).await,
            pgrepl_tests::suite::REPLICA
        );
        let before = Metrics::scrape(endpoint);
        let marker = unique("retry_marker");
        let sql = format!("SELECT pg_sleep(1), current_setting('cluster_name') /* {marker} */");
        let reading = client.simple_query(&sql);
        // Its server process on the replica is terminated while it sleeps: FATAL before any
        // answer, so the proxy runs it again on the primary.
        let replica = &Cluster::shared().replica;
        let terminate =
            pgrepl_tests::suite::terminate_running(replica, &marker, Duration::from_secs(10));
        let (answer, ()) = tokio::join!(reading, terminate);
        let rows = pgrepl_tests::suite::text_rows(&answer.expect("the read was re-run"));
        assert_eq!(rows[0][1].as_deref(), Some(pgrepl_tests::suite::PRIMARY));
        let after = Metrics::scrape(endpoint);
        let delta = Delta {
            before: &before,
            after: &after,
        };
        let retries = [("from", "db02"), ("to", "db01")];
        assert_eq!(delta.value("pgrepl_read_retries_total", &retries), 1.0);
        assert_eq!(
            delta.value(QUERIES, &[]),
            1.0,
            "one statement, counted once"
        );
        assert_eq!(
            delta.value(QUERIES, &labels(&queries("replica", "db02", "read"))),
            1.0
        );
        assert_eq!(delta.observations(DURATION, &[("route", "primary")]), 1.0);
    })
    .await
}
