//! The primary stopped: reads keep working on the replica, writes fail at once with a clear
//! error naming db01, and writes work again once it is back. Uses a cluster of its own.

use std::time::{Duration, Instant};

use pgrepl_tests::connect;
use pgrepl_tests::roles::{APP, DATABASE};
use pgrepl_tests::suite::{
    bounded_for, eventually, node_of_read, on_replica, own_cluster_and_proxy, sqlstate, REPLICA,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_go_on_and_writes_fail_fast_while_the_primary_is_down() {
    bounded_for(Duration::from_secs(120), async {
        let (cluster, proxy) = own_cluster_and_proxy(
            "primary-down",
            "CREATE TABLE w (id int);",
            "\n[health]\ninterval = \"100ms\"\n",
        );
        let reader = connect(proxy.addr, APP.name, DATABASE).await.unwrap();
        let writer = connect(proxy.addr, APP.name, DATABASE).await.unwrap();
        writer
            .execute("INSERT INTO w VALUES (1)", &[])
            .await
            .unwrap();

        // The replica stops replaying, so it never sees the writer's last write and soon
        // lags past max_replica_lag.
        on_replica(&cluster, "SELECT pg_wal_replay_pause()").await;
        writer
            .execute("INSERT INTO w VALUES (10)", &[])
            .await
            .unwrap();

        let primary = cluster.primary.clone();
        tokio::task::spawn_blocking(move || primary.stop())
            .await
            .unwrap()
            .unwrap();

        assert_eq!(
            node_of_read(&reader).await,
            REPLICA,
            "an open session reads on"
        );
        // Neither the writer's own write nor the replica's lag can be checked against a
        // primary that is down: once the monitor sees it down, the writer reads on the
        // replica too (waiting longer than max_replica_lag for it).
        tokio::time::sleep(Duration::from_millis(1500)).await;
        eventually(
            "the writer to read on the replica",
            Duration::from_secs(5),
            || async {
                let row = writer
                    .query_one("SELECT current_setting('cluster_name')", &[])
                    .await;
                row.is_ok_and(|row| row.get::<_, String>(0) == REPLICA)
            },
        )
        .await
        .unwrap();
        let fresh = connect(proxy.addr, APP.name, DATABASE).await.unwrap();
        assert_eq!(
            node_of_read(&fresh).await,
            REPLICA,
            "a new session reads too"
        );

        let started = Instant::now();
        let err = writer
            .execute("INSERT INTO w VALUES (2)", &[])
            .await
            .unwrap_err();
        let elapsed = started.elapsed();
        let code = sqlstate(&err).unwrap_or_default();
        assert!(
            code.starts_with("08") || code.starts_with("57"),
            "a write with the primary down fails with class 08 or 57, got {code}: {err:?}"
        );
        let message = err
            .as_db_error()
            .map(|e| e.message().to_owned())
            .unwrap_or_default();
        assert!(message.contains("db01"), "the error names db01: {message}");
        assert!(
            elapsed < Duration::from_secs(2),
            "the write failed fast: {elapsed:?}"
        );

        on_replica(&cluster, "SELECT pg_wal_replay_resume()").await;
        let primary = cluster.primary.clone();
        tokio::task::spawn_blocking(move || primary.start())
            .await
            .unwrap()
            .unwrap();
        eventually("writes to work again", Duration::from_secs(10), || async {
            writer
                .execute("INSERT INTO w VALUES (3)", &[])
                .await
                .is_ok()
        })
        .await
        .unwrap();
    })
    .await
}
