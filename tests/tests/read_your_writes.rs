//! Read-your-writes and bounded staleness through the proxy, with the replica made to lag on
//! purpose (`pg_wal_replay_pause()`): a session always reads its own committed writes; a
//! session that never wrote keeps reading the replica until it lags past `max_replica_lag`;
//! reads come back to the replica once it has replayed; "global" extends the guarantee to
//! every session. Each test pauses the replica, so each has a cluster of its own.

use std::net::SocketAddr;
use std::time::Duration;

use pgrepl_tests::roles::{APP, DATABASE};
use pgrepl_tests::suite::{
    bounded_for, eventually, node_of_read, on_replica, own_cluster_and_proxy, PRIMARY, REPLICA,
};
use pgrepl_tests::{connect, OwnCluster, ProxyProcess};
use tokio_postgres::Client;

const LIMIT: Duration = Duration::from_secs(120);
/// A few monitor intervals, with room for a slow machine.
const NOTICE: Duration = Duration::from_secs(5);

/// A cluster of the test's own with a table `t`, and a proxy with `routing` keys in front.
fn cluster_and_proxy(name: &str, routing: &str) -> (OwnCluster, ProxyProcess) {
    let extra = format!("\n[routing]\n{routing}\n\n[health]\ninterval = \"100ms\"\n");
    own_cluster_and_proxy(name, "CREATE TABLE t (id int);", &extra)
}

async fn session(addr: SocketAddr) -> Client {
    connect(addr, APP.name, DATABASE).await.unwrap()
}

/// Where `SELECT count(*) FROM t WHERE id = ...` ran, and what it counted.
async fn count_row(client: &Client, id: i32) -> (String, i64) {
    let row = client
        .query_one(
            "SELECT current_setting('cluster_name'), count(*) FROM t WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_reads_its_own_writes_then_returns_to_the_replica() {
    bounded_for(LIMIT, async {
        let (cluster, proxy) = cluster_and_proxy("ryw-session", "max_replica_lag = \"60s\"");
        let writer = session(proxy.addr).await;
        let bystander = session(proxy.addr).await;
        assert_eq!(node_of_read(&writer).await, REPLICA);

        on_replica(&cluster, "SELECT pg_wal_replay_pause()").await;
        writer
            .execute("INSERT INTO t VALUES (1)", &[])
            .await
            .unwrap();
        assert_eq!(
            count_row(&writer, 1).await,
            (PRIMARY.to_owned(), 1),
            "the writer's read right after its commit sees it (on the primary)"
        );
        let (node, seen) = count_row(&bystander, 1).await;
        assert_eq!(
            (node.as_str(), seen),
            (REPLICA, 0),
            "a session that never wrote pays nothing and keeps reading the (stale) replica"
        );
        assert_eq!(
            count_row(&writer, 1).await.0,
            PRIMARY,
            "the writer stays on the primary while the replica has not replayed its write"
        );

        on_replica(&cluster, "SELECT pg_wal_replay_resume()").await;
        eventually(
            "the writer's reads to return to the replica",
            NOTICE,
            || async { count_row(&writer, 1).await == (REPLICA.to_owned(), 1) },
        )
        .await
        .unwrap();
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_lagging_past_the_limit_serves_no_session() {
    bounded_for(LIMIT, async {
        let (cluster, proxy) = cluster_and_proxy("ryw-lag", "max_replica_lag = \"300ms\"");
        let writer = session(proxy.addr).await;
        let reader = session(proxy.addr).await;
        assert_eq!(node_of_read(&reader).await, REPLICA);

        on_replica(&cluster, "SELECT pg_wal_replay_pause()").await;
        writer
            .execute("INSERT INTO t VALUES (2)", &[])
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert_eq!(
            count_row(&reader, 2).await,
            (PRIMARY.to_owned(), 1),
            "a replica more than max_replica_lag behind serves no read"
        );

        on_replica(&cluster, "SELECT pg_wal_replay_resume()").await;
        eventually("reads to return to the replica", NOTICE, || async {
            count_row(&reader, 2).await == (REPLICA.to_owned(), 1)
        })
        .await
        .unwrap();
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_mode_shows_every_sessions_writes_to_every_session() {
    bounded_for(LIMIT, async {
        let (cluster, proxy) = cluster_and_proxy(
            "ryw-global",
            "read_your_writes = \"global\"\nmax_replica_lag = \"60s\"",
        );
        let writer = session(proxy.addr).await;
        let other = session(proxy.addr).await;
        on_replica(&cluster, "SELECT pg_wal_replay_pause()").await;
        writer
            .execute("INSERT INTO t VALUES (3)", &[])
            .await
            .unwrap();
        assert_eq!(
            count_row(&other, 3).await,
            (PRIMARY.to_owned(), 1),
            "another session sees the write at once"
        );
        on_replica(&cluster, "SELECT pg_wal_replay_resume()").await;
        eventually("reads to return to the replica", NOTICE, || async {
            count_row(&other, 3).await == (REPLICA.to_owned(), 1)
        })
        .await
        .unwrap();
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_read_your_writes_off_a_writer_may_read_the_replica() {
    bounded_for(LIMIT, async {
        let (cluster, proxy) = cluster_and_proxy(
            "ryw-off",
            "read_your_writes = \"off\"\nmax_replica_lag = \"60s\"",
        );
        let writer = session(proxy.addr).await;
        on_replica(&cluster, "SELECT pg_wal_replay_pause()").await;
        writer
            .execute("INSERT INTO t VALUES (4)", &[])
            .await
            .unwrap();
        assert_eq!(count_row(&writer, 4).await, (REPLICA.to_owned(), 0));
        on_replica(&cluster, "SELECT pg_wal_replay_resume()").await;
    })
    .await
}
