//! The health monitor through the proxy: a replica that lags past `max_replica_lag` or is
//! stopped gets no new session's reads, which go to the primary without an error, and gets them
//! back once it has caught up or runs again, with no proxy restart. Each test pauses or stops
//! the replica, so each has a cluster of its own.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Result;
use pgrepl_tests::roles::{APP, DATABASE};
use pgrepl_tests::suite::{
    bounded_for, eventually, node_of_read, on_replica, own_cluster_and_proxy, PRIMARY, REPLICA,
};
use pgrepl_tests::{connect, OwnCluster, ProxyProcess};

/// A lag limit the tests can exceed quickly, and a monitor that notices within a fraction of it.
const MAX_LAG: Duration = Duration::from_millis(300);
const HEALTH: &str = "\n[routing]\nmax_replica_lag = \"300ms\"\n\n[health]\ninterval = \"100ms\"\n";

/// Starting a cluster takes a few seconds; the rest of a test well under a minute.
const LIMIT: Duration = Duration::from_secs(120);
/// How long the monitor may take to notice a change: a few intervals, with room for a slow
/// machine.
const NOTICE: Duration = Duration::from_secs(5);

/// A cluster of the test's own with a table `ticks`, and a proxy in front of it.
fn cluster_and_proxy(name: &str) -> (OwnCluster, ProxyProcess) {
    own_cluster_and_proxy(name, "CREATE TABLE ticks (n int);", HEALTH)
}

/// Where a read of a new session runs.
async fn new_session_read(addr: SocketAddr) -> Result<String> {
    let client = connect(addr, APP.name, DATABASE).await?;
    Ok(node_of_read(&client).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_replica_gets_reads_again_once_it_has_caught_up() {
    bounded_for(LIMIT, async {
        let (cluster, proxy) = cluster_and_proxy("health-lag");
        assert_eq!(new_session_read(proxy.addr).await.unwrap(), REPLICA);

        on_replica(&cluster, "SELECT pg_wal_replay_pause()").await;
        let writer = connect(cluster.primary.addr(), APP.name, DATABASE)
            .await
            .unwrap();
        let first_write = Instant::now();
        eventually("a new session's read to go to db01", NOTICE, || async {
            writer
                .batch_execute("INSERT INTO ticks VALUES (1)")
                .await
                .unwrap();
            new_session_read(proxy.addr).await.unwrap() == PRIMARY
        })
        .await
        .unwrap();
        assert!(
            first_write.elapsed() > MAX_LAG,
            "the replica was given up before it lagged by max_replica_lag"
        );
        // Each new session reads what was written, from the primary.
        let written = writer
            .query_one("SELECT count(*) FROM ticks", &[])
            .await
            .unwrap()
            .get::<_, i64>(0);
        let client = connect(proxy.addr, APP.name, DATABASE).await.unwrap();
        let row = client
            .query_one(
                "SELECT current_setting('cluster_name'), count(*) FROM ticks",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(
            (row.get::<_, &str>(0), row.get::<_, i64>(1)),
            (PRIMARY, written)
        );

        on_replica(&cluster, "SELECT pg_wal_replay_resume()").await;
        eventually("reads to return to db02", NOTICE, || async {
            new_session_read(proxy.addr).await.unwrap() == REPLICA
        })
        .await
        .unwrap();
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_replica_gets_reads_again_once_it_runs() {
    bounded_for(LIMIT, async {
        let (cluster, proxy) = cluster_and_proxy("health-down");
        assert_eq!(new_session_read(proxy.addr).await.unwrap(), REPLICA);

        let replica = cluster.replica.clone();
        tokio::task::spawn_blocking(move || replica.stop())
            .await
            .unwrap()
            .unwrap();
        // Until the monitor notices, a session may still have picked db02.
        eventually("a new session's read to go to db01", NOTICE, || async {
            new_session_read(proxy.addr).await.ok().as_deref() == Some(PRIMARY)
        })
        .await
        .unwrap();
        for _ in 0..5 {
            assert_eq!(new_session_read(proxy.addr).await.unwrap(), PRIMARY);
        }
        let down = format!(
            "backend down backend=db02 (127.0.0.1:{})",
            cluster.replica.port
        );
        assert!(
            proxy.log().contains(&down),
            "no `{down}` in the proxy's log"
        );

        let replica = cluster.replica.clone();
        tokio::task::spawn_blocking(move || replica.start())
            .await
            .unwrap()
            .unwrap();
        eventually("reads to return to db02", NOTICE, || async {
            new_session_read(proxy.addr).await.unwrap() == REPLICA
        })
        .await
        .unwrap();
    })
    .await
}
