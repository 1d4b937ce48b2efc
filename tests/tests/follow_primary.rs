//! Following the primary (`[routing] follow_primary`, both nodes promotable in `[[nodes]]`):
//! db02 promoted by hand while db01 stays up. Writes move to db02 within a few samples,
//! db01 (out of recovery on timeline 1, timeline 2 existing) is fenced and gets nothing, a
//! transaction open across the promotion fails with 40001 and the session goes on, and a
//! session's prepared statements and settings work on the new writer. Uses a cluster of its
//! own; run in both pool modes by scripts/test.sh.

use std::net::SocketAddr;
use std::time::Duration;

use pgrepl_tests::endpoint::{get_json, Metrics};
use pgrepl_tests::roles::{APP, DATABASE, SUPERUSER};
use pgrepl_tests::suite::{
    bounded_for, eventually, free_addr, node_of_read, sqlstate, terminate_running,
};
use pgrepl_tests::{connect, OwnCluster, ProxyProcess};
use serde_json::json;
use tokio_postgres::Client;

/// Samples every 100 ms, a new writer confirmed by 3 of them.
const FOLLOW: &str = "\n[health]\ninterval = \"100ms\"\n\n[routing]\nwriter_confirmations = 3\n";

/// Starting a cluster takes a few seconds; the rest of the test well under a minute.
const LIMIT: Duration = Duration::from_secs(120);
/// How long writes may take to reach db02 after its promotion: 3 samples 100 ms apart,
/// with room for a slow machine.
const MOVE: Duration = Duration::from_secs(5);

/// Where a write of `client` runs, and the row it wrote there.
async fn write_on(client: &Client, n: i32) -> Result<String, tokio_postgres::Error> {
    let row = client
        .query_one(
            "INSERT INTO t VALUES ($1, current_setting('cluster_name')) RETURNING node",
            &[&n],
        )
        .await?;
    Ok(row.get(0))
}

/// A cluster of the test's own with a table `t`, and a proxy in front of it with both
/// nodes in `[[nodes]]`: promotable, so it follows the primary.
fn following(name: &str) -> (OwnCluster, ProxyProcess) {
    let cluster = OwnCluster::start(name).unwrap();
    cluster
        .primary
        .psql(APP.name, DATABASE, "CREATE TABLE t (n int, node text);")
        .unwrap();
    cluster.wait_replica_caught_up().unwrap();
    let addr = free_addr();
    let proxy = ProxyProcess::start(&nodes_config(&cluster, addr), addr).unwrap();
    (cluster, proxy)
}

/// The proxy configuration of [`following`].
fn nodes_config(cluster: &OwnCluster, addr: SocketAddr) -> String {
    pgrepl_tests::nodes_config(cluster, addr) + FOLLOW
}

/// The proxy's metrics now.
async fn scrape(proxy: &ProxyProcess) -> Metrics {
    let endpoint = proxy.endpoint();
    tokio::task::spawn_blocking(move || Metrics::scrape(endpoint))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_follow_a_promoted_replica_and_the_old_primary_is_fenced() {
    bounded_for(LIMIT, async {
        let (cluster, mut proxy) = following("follow-primary");

        let open = connect(proxy.addr, APP.name, DATABASE).await.unwrap();
        let prepared = connect(proxy.addr, APP.name, DATABASE).await.unwrap();
        prepared
            .batch_execute("SET statement_timeout = '17s'")
            .await
            .unwrap();
        let insert = prepared
            .prepare("INSERT INTO t VALUES ($1, current_setting('cluster_name')) RETURNING node")
            .await
            .unwrap();
        let row = prepared.query_one(&insert, &[&1i32]).await.unwrap();
        assert_eq!(row.get::<_, String>(0), "db01");
        open.batch_execute("BEGIN; INSERT INTO t VALUES (2, 'open')")
            .await
            .unwrap();
        let rolling = connect(proxy.addr, APP.name, DATABASE).await.unwrap();
        rolling
            .batch_execute("BEGIN; INSERT INTO t VALUES (2, 'rolled')")
            .await
            .unwrap();
        let pinned = connect(proxy.addr, APP.name, DATABASE).await.unwrap();
        pinned
            .batch_execute("CREATE TEMP TABLE mine (x int)")
            .await
            .unwrap();

        let before = scrape(&proxy).await;
        for node in ["db01", "db02"] {
            let labels = [("backend", node)];
            assert_eq!(
                before.value("pgrepl_backend_timeline", &labels),
                1.0,
                "{node}"
            );
            assert_eq!(
                before.value("pgrepl_backend_fenced", &labels),
                0.0,
                "{node}"
            );
        }
        assert_eq!(
            before.value("pgrepl_backend_writer", &[("backend", "db01")]),
            1.0
        );

        let promoted = cluster
            .replica
            .psql(SUPERUSER, "postgres", "SELECT pg_promote()")
            .unwrap();
        assert_eq!(promoted.trim(), "t", "pg_promote answered {promoted:?}");

        // Until the proxy has sampled db02 promoted, db01 still serves: a write then would
        // stay on db01, which the end of the test checks got none after the promotion.
        eventually("the proxy to see db02 promoted", MOVE, || async {
            let endpoint = proxy.endpoint();
            let status = tokio::task::spawn_blocking(move || get_json(endpoint, "/status"))
                .await
                .unwrap();
            let writer = &status["writer"];
            writer["name"] != "db01" || writer["state"] != "serving"
        })
        .await
        .unwrap();
        let writer = connect(proxy.addr, APP.name, DATABASE).await.unwrap();
        eventually("writes to go to db02", MOVE, || async {
            write_on(&writer, 3).await.is_ok_and(|node| node == "db02")
        })
        .await
        .unwrap();

        // The transaction open on db01 is lost: 40001, then the session goes on.
        let lost = open
            .batch_execute("INSERT INTO t VALUES (4, 'open')")
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&lost).as_deref(), Some("40001"), "{lost}");
        let message = lost.as_db_error().map(|e| e.message().to_owned());
        assert!(
            message
                .as_deref()
                .is_some_and(|m| m.contains("from db01 to db02")),
            "names both: {message:?}"
        );
        let aborted = open.batch_execute("SELECT 1").await.unwrap_err();
        assert_eq!(
            sqlstate(&aborted).as_deref(),
            Some("25P02"),
            "still in the aborted transaction: {aborted}"
        );
        open.batch_execute("ROLLBACK").await.unwrap();
        assert_eq!(write_on(&open, 5).await.unwrap(), "db02");
        // A ROLLBACK never fails, also as the first statement after its writer was left.
        rolling.batch_execute("ROLLBACK").await.unwrap();
        assert_eq!(write_on(&rolling, 5).await.unwrap(), "db02");

        // A session whose temporary table was on db01 cannot go on without it.
        let gone = pinned
            .batch_execute("SELECT * FROM mine")
            .await
            .unwrap_err();
        let fatal = gone.as_db_error().expect("an error from the proxy");
        assert_eq!(
            (fatal.code().code(), fatal.severity()),
            ("08006", "FATAL"),
            "{gone:?}"
        );
        assert!(fatal.message().contains("temporary tables"), "{gone:?}");

        // The prepared statement and the setting, brought to db02.
        let row = prepared.query_one(&insert, &[&6i32]).await.unwrap();
        assert_eq!(row.get::<_, String>(0), "db02");
        let row = prepared
            .query_one(
                "SELECT current_setting('statement_timeout'), current_setting('cluster_name')",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(
            (row.get::<_, String>(0), row.get::<_, String>(1)),
            ("17s".to_owned(), "db02".to_owned())
        );

        // db01 is fenced: it gets neither reads nor writes, though it is up.
        for _ in 0..5 {
            let session = connect(proxy.addr, APP.name, DATABASE).await.unwrap();
            assert_eq!(node_of_read(&session).await, "db02");
            assert_eq!(write_on(&session, 7).await.unwrap(), "db02");
        }
        // Reported: gauges, the status page, one log line each.
        let after = scrape(&proxy).await;
        let value = |name, node| after.value(name, &[("backend", node)]);
        assert_eq!(value("pgrepl_backend_fenced", "db01"), 1.0);
        assert_eq!(value("pgrepl_backend_writer", "db01"), 0.0);
        assert_eq!(value("pgrepl_backend_writer", "db02"), 1.0);
        assert_eq!(value("pgrepl_backend_timeline", "db02"), 2.0);
        assert_eq!(value("pgrepl_backend_timeline", "db01"), 1.0);
        assert_eq!(after.value("pgrepl_writer_changes_total", &[]), 1.0);
        let lost = [("outcome", "not_committed")];
        assert_eq!(
            after.value("pgrepl_writer_lost_transactions_total", &lost),
            2.0,
            "open's and rolling's"
        );
        let endpoint = proxy.endpoint();
        let status = tokio::task::spawn_blocking(move || get_json(endpoint, "/status"))
            .await
            .unwrap();
        let writer = &status["writer"];
        assert_eq!(
            (
                &writer["name"],
                &writer["timeline"],
                &writer["epoch"],
                &writer["state"]
            ),
            (&json!("db02"), &json!(2), &json!(1), &json!("serving")),
            "{status}"
        );
        let db01 = &status["backends"][0];
        assert_eq!(
            (&db01["fenced"], &db01["state"]),
            (&json!(true), &json!("fenced"))
        );
        let log = proxy.log();
        for line in ["writer changed", "backend fenced"] {
            assert_eq!(log.matches(line).count(), 1, "{line:?} once in:\n{log}");
        }

        // A reload may not take the writer away (db02 moved elsewhere is a new node).
        let moved = nodes_config(&cluster, proxy.addr)
            .replace(&format!("port = {}", cluster.replica.port), "port = 1");
        proxy.reload_with(&moved).unwrap();
        eventually("the reload to be rejected", MOVE, || {
            let log = proxy.log();
            async move { log.contains("db02 is the writer now") }
        })
        .await
        .unwrap();

        let on_db01 = cluster
            .primary
            .psql(
                SUPERUSER,
                DATABASE,
                "SELECT string_agg(n::text, ',' ORDER BY n) FROM t",
            )
            .unwrap();
        assert_eq!(on_db01.trim(), "1", "db01 got writes after the promotion");
        let on_db02 = cluster
            .replica
            .psql(
                SUPERUSER,
                DATABASE,
                "SELECT count(*) FROM t WHERE n = 4 OR node = 'open'",
            )
            .unwrap();
        assert_eq!(on_db02.trim(), "0", "the lost transaction was resent");
    })
    .await;
}

/// The pid of the db01 backend running a statement that starts with `start`, once it runs.
async fn backend_running(cluster: &OwnCluster, start: &str) -> i32 {
    let sql = format!(
        "SELECT pid FROM pg_stat_activity WHERE query LIKE '{start}%' AND state = 'active'"
    );
    let mut pid = 0;
    eventually(&format!("{start:?} to run on db01"), MOVE, || {
        let found = cluster.primary.psql(SUPERUSER, "postgres", &sql).unwrap();
        pid = found.trim().parse().unwrap_or(0);
        async move { pid > 0 }
    })
    .await
    .unwrap();
    pid
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_connection_says_what_became_of_the_unit_and_the_session_goes_on() {
    bounded_for(LIMIT, async {
        let (cluster, proxy) = following("follow-lost");

        let in_tx = connect(proxy.addr, APP.name, DATABASE).await.unwrap();
        in_tx
            .batch_execute("BEGIN; INSERT INTO t VALUES (1, 'tx')")
            .await
            .unwrap();
        let autocommit = connect(proxy.addr, APP.name, DATABASE).await.unwrap();
        let idle_in_tx = connect(proxy.addr, APP.name, DATABASE).await.unwrap();
        idle_in_tx
            .batch_execute("BEGIN; INSERT INTO t VALUES (4, 'idle')")
            .await
            .unwrap();
        let kill = async {
            backend_running(&cluster, "SELECT pg_sleep(60)").await;
            let pid = backend_running(&cluster, "INSERT INTO t SELECT 2").await;
            // A backend killed: the server resets every connection and recovers.
            // SAFETY: a pid of db01's, read from pg_stat_activity just now.
            assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
        };
        let (tx_unit, write_unit, ()) = tokio::join!(
            in_tx.batch_execute("SELECT pg_sleep(60)"),
            autocommit.batch_execute("INSERT INTO t SELECT 2, pg_sleep(60)::text"),
            kill
        );
        let lost = tx_unit.unwrap_err();
        assert_eq!(sqlstate(&lost).as_deref(), Some("40001"), "{lost:?}");
        let unknown = write_unit.unwrap_err();
        assert_eq!(sqlstate(&unknown).as_deref(), Some("08007"), "{unknown:?}");

        // The transaction lost while idle is told at its next statement.
        let idle_lost = idle_in_tx
            .batch_execute("INSERT INTO t VALUES (5, 'idle')")
            .await
            .unwrap_err();
        assert_eq!(
            sqlstate(&idle_lost).as_deref(),
            Some("40001"),
            "{idle_lost:?}"
        );

        // The sessions go on: the transactions are ended by the client, and writes work once
        // db01 has recovered.
        in_tx.batch_execute("ROLLBACK").await.unwrap();
        idle_in_tx.batch_execute("ROLLBACK").await.unwrap();
        for session in [&in_tx, &autocommit, &idle_in_tx] {
            eventually("writes to work again", Duration::from_secs(20), || async {
                write_on(session, 3).await.is_ok_and(|node| node == "db01")
            })
            .await
            .unwrap();
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_refusing_a_write_is_sampled_again_and_its_own_refusal_reaches_the_client() {
    bounded_for(LIMIT, async {
        let (cluster, proxy) = following("follow-read-only");
        let client = connect(proxy.addr, APP.name, DATABASE).await.unwrap();
        assert_eq!(write_on(&client, 1).await.unwrap(), "db01");
        // db01 stays the primary, but its transactions are read-only now: the monitor
        // still sees it out of recovery on the highest timeline, so it stays the writer,
        // and its refusal is the client's, once the write was tried again.
        let read_only =
            "ALTER SYSTEM SET default_transaction_read_only = on; SELECT pg_reload_conf()";
        cluster
            .primary
            .psql(SUPERUSER, "postgres", read_only)
            .unwrap();
        let deadline = tokio::time::Instant::now() + MOVE;
        let refused = loop {
            match write_on(&client, 2).await {
                Err(refused) => break refused,
                Ok(_) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Ok(node) => panic!("{node} still takes writes"),
            }
        };
        let error = refused.as_db_error().expect("a server error");
        assert_eq!(error.code().code(), "25006", "{refused:?}");
        assert!(
            error
                .message()
                .starts_with("cannot execute INSERT in a read-only transaction"),
            "the server's own words: {refused:?}"
        );
        let log = proxy.log();
        assert!(
            log.contains("the writer refused a write as a standby"),
            "sampled again before its refusal was passed on:\n{log}"
        );
        let writable = "ALTER SYSTEM RESET default_transaction_read_only; SELECT pg_reload_conf()";
        cluster
            .primary
            .psql(SUPERUSER, "postgres", writable)
            .unwrap();
        eventually("writes to work again", MOVE, || async {
            write_on(&client, 3).await.is_ok_and(|node| node == "db01")
        })
        .await
        .unwrap();
    })
    .await;
}

/// The rows of `t` with these keys, on db01.
fn rows_with(cluster: &OwnCluster, keys: &str) -> String {
    let count = format!("SELECT count(*) FROM t WHERE n IN ({keys})");
    cluster.primary.psql(APP.name, DATABASE, &count).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_connection_ended_under_pipelined_units_answers_each_and_the_session_goes_on() {
    bounded_for(LIMIT, async {
        let (cluster, proxy) = following("follow-terminated");
        let client = connect(proxy.addr, APP.name, DATABASE).await.unwrap();

        // Two autocommit writes pipelined; db01 ends the session during the first (FATAL
        // 57P01). Either may have run as far as the proxy knows: 08007 each, never the
        // server's FATAL, never a connection closed without an answer.
        let slow = "INSERT INTO t SELECT 10, pg_sleep(30)::text /* terminated-1 */";
        let (first, second, ()) = tokio::join!(
            client.simple_query(slow),
            client.simple_query("INSERT INTO t VALUES (11, 'pipelined')"),
            terminate_running(&cluster.primary, "terminated-1", MOVE),
        );
        for (unit, got) in [
            ("the terminated write", first),
            ("the write behind it", second),
        ] {
            let e = got.expect_err(unit);
            assert_eq!(sqlstate(&e).as_deref(), Some("08007"), "{unit}: {e:?}");
            let message = e.as_db_error().map(|db| db.message()).unwrap_or_default();
            assert!(
                message.contains("lost the connection to backend db01")
                    && message.contains("57P01"),
                "{unit}: {e:?}"
            );
        }
        assert_eq!(
            write_on(&client, 12).await.unwrap(),
            "db01",
            "the session goes on"
        );
        // Neither was sent again: the server had not read the second.
        assert_eq!(rows_with(&cluster, "10, 11").trim(), "0");

        // In a transaction nothing was ending: 40001 for the unit the server ended, 25P02
        // for the one behind it, and the transaction is aborted until the client's ROLLBACK.
        client.batch_execute("BEGIN").await.unwrap();
        assert_eq!(write_on(&client, 20).await.unwrap(), "db01");
        let slow = "INSERT INTO t SELECT 21, pg_sleep(30)::text /* terminated-2 */";
        let (first, second, ()) = tokio::join!(
            client.simple_query(slow),
            client.simple_query("SELECT count(*) FROM t"),
            terminate_running(&cluster.primary, "terminated-2", MOVE),
        );
        let code = |got: Result<_, tokio_postgres::Error>| sqlstate(&got.unwrap_err());
        assert_eq!(code(first).as_deref(), Some("40001"));
        assert_eq!(code(second).as_deref(), Some("25P02"));
        let aborted = client.simple_query("SELECT 1").await;
        assert_eq!(code(aborted).as_deref(), Some("25P02"));
        client.batch_execute("ROLLBACK").await.unwrap();
        assert_eq!(write_on(&client, 22).await.unwrap(), "db01");
        assert_eq!(rows_with(&cluster, "20, 21").trim(), "0");

        // A COMMIT answered, then a new transaction pipelined behind it: the COMMIT ended
        // the first transaction, nothing ends the second, so it is lost (40001), not unknown.
        client.batch_execute("BEGIN").await.unwrap();
        assert_eq!(write_on(&client, 30).await.unwrap(), "db01");
        let slow = "INSERT INTO t SELECT 31, pg_sleep(30)::text /* terminated-3 */";
        let (commit, begin, lost, ()) = tokio::join!(
            client.simple_query("COMMIT"),
            client.simple_query("BEGIN"),
            client.simple_query(slow),
            terminate_running(&cluster.primary, "terminated-3", MOVE),
        );
        commit.unwrap();
        begin.unwrap();
        assert_eq!(code(lost).as_deref(), Some("40001"));
        let aborted = client.simple_query("SELECT 1").await;
        assert_eq!(
            code(aborted).as_deref(),
            Some("25P02"),
            "still in the lost transaction"
        );
        client.batch_execute("ROLLBACK").await.unwrap();
        assert_eq!(write_on(&client, 32).await.unwrap(), "db01");
        assert_eq!(rows_with(&cluster, "12, 22, 30, 32").trim(), "4");
        assert_eq!(rows_with(&cluster, "31").trim(), "0");
    })
    .await;
}
