//! Failover of reads: a replica stopped and started under load from many clients costs no
//! autocommit read an error, and writes meanwhile all land on the primary (a cluster of its
//! own, since it stops the replica); a read whose replica backend ends after its first rows
//! is answered whole by the primary (the shared cluster: only that backend ends).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pgrepl_tests::endpoint::Metrics;
use pgrepl_tests::roles::{APP, DATABASE};
use pgrepl_tests::suite::{
    bounded, free_addr, proxy_config_with, start_proxy, terminate_running, unique, PRIMARY, REPLICA,
};
use pgrepl_tests::{connect, Cluster, OwnCluster, ProxyProcess};

/// Clients reading in a loop while the replica goes away and comes back.
const READERS: usize = 16;

#[derive(Default)]
struct Tally {
    errors: AtomicUsize,
    on_primary: AtomicUsize,
    on_replica: AtomicUsize,
    first_error: std::sync::Mutex<Option<String>>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autocommit_reads_survive_a_replica_restart() {
    let cluster = OwnCluster::start("read-failover").unwrap();
    let cluster = &*cluster;
    let addr = free_addr();
    let proxy = ProxyProcess::start(&proxy_config_with(cluster, addr, ""), addr).unwrap();
    cluster
        .primary
        .psql(
            APP.name,
            DATABASE,
            "CREATE TABLE acked (id int PRIMARY KEY);",
        )
        .unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let mut tasks = Vec::new();
    for _ in 0..READERS {
        let (stop, tally) = (stop.clone(), tally.clone());
        tasks.push(tokio::spawn(async move {
            let client = connect(addr, APP.name, DATABASE).await.unwrap();
            while !stop.load(Ordering::Relaxed) {
                match client
                    .query_one("SELECT current_setting('cluster_name')", &[])
                    .await
                {
                    Ok(row) if row.get::<_, &str>(0) == REPLICA => {
                        tally.on_replica.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {
                        tally.on_primary.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        tally.errors.fetch_add(1, Ordering::Relaxed);
                        tally
                            .first_error
                            .lock()
                            .unwrap()
                            .get_or_insert(format!("{e:?}"));
                        if client.is_closed() {
                            break; // no spinning on a dead connection
                        }
                    }
                }
            }
        }));
    }
    let writer = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let client = connect(addr, APP.name, DATABASE).await.unwrap();
            let mut acked = Vec::new();
            for id in 0.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                if client
                    .execute("INSERT INTO acked VALUES ($1)", &[&id])
                    .await
                    .is_ok()
                {
                    acked.push(id);
                } else if client.is_closed() {
                    break;
                }
            }
            acked
        })
    };

    // Every reader is connected and reading before the replica goes.
    let started = std::time::Instant::now();
    while tally.on_replica.load(Ordering::Relaxed) < READERS * 10 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the readers did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let replica = cluster.replica.clone();
    tokio::task::spawn_blocking(move || {
        replica.stop().unwrap();
        std::thread::sleep(Duration::from_millis(1500));
        replica.start().unwrap();
    })
    .await
    .unwrap();
    let before_return = tally.on_replica.load(Ordering::Relaxed);
    let back = std::time::Instant::now();
    while tally.on_replica.load(Ordering::Relaxed) < before_return + READERS {
        assert!(
            back.elapsed() < Duration::from_secs(20),
            "reads did not return to {REPLICA} after it came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }
    let acked = writer.await.unwrap();

    let errors = tally.errors.load(Ordering::Relaxed);
    assert_eq!(
        errors,
        0,
        "autocommit reads failed while the replica restarted; first: {:?}\nproxy log:\n{}",
        tally.first_error.lock().unwrap(),
        proxy.log()
    );
    assert!(
        tally.on_primary.load(Ordering::Relaxed) > 0,
        "no read was served by {PRIMARY} while the replica was down"
    );
    assert!(!acked.is_empty(), "the writer got no write acknowledged");
    let count = cluster
        .primary
        .psql(APP.name, DATABASE, "SELECT count(*) FROM acked;")
        .unwrap();
    assert_eq!(
        count.trim().parse::<usize>().unwrap(),
        acked.len(),
        "every acknowledged write is on the primary"
    );
    // Every re-run the proxy logged is counted in pgrepl_read_retries_total.
    let log = proxy.log();
    let rerun: f64 = log
        .lines()
        .filter(|l| l.contains("replica lost before answering reads"))
        .filter_map(|l| l.split(" units=").nth(1))
        .filter_map(|rest| rest.split_whitespace().next()?.parse::<f64>().ok())
        .sum();
    let counted = Metrics::scrape(proxy.endpoint()).value(
        "pgrepl_read_retries_total",
        &[("from", "db02"), ("to", "db01")],
    );
    assert_eq!(counted, rerun, "retries counted vs logged:\n{log}");
}

/// A standby that ends a backend while a read's first rows wait in its send buffer sends
/// them with its FATAL, without the rest of the answer (so does one shutting down between a
/// unit's Execute and its Sync): the proxy holds a small answer to its end, so the read runs
/// again on the primary and the client gets the primary's answer whole, not rows and an
/// error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_ended_after_its_first_rows_is_answered_whole_by_the_primary() {
    bounded(async {
        let proxy = start_proxy("");
        let client = connect(proxy.addr, APP.name, DATABASE).await.unwrap();
        let marker = unique("rows_then_fatal");
        // Only on the standby (every transaction read-only there) does the second row sleep.
        let sql = format!(
            "SELECT x, current_setting('cluster_name') AS node, \
             CASE WHEN x = 2 AND current_setting('transaction_read_only') = 'on' \
             THEN pg_sleep(30) END IS NULL AS woke \
             FROM generate_series(1, 2) x /* {marker} */"
        );
        let statement = client.prepare(&sql).await.unwrap();
        let reading = client.query(&statement, &[]);
        let replica = &Cluster::shared().replica;
        let terminate = terminate_running(replica, &marker, Duration::from_secs(20));
        let (rows, ()) = tokio::join!(reading, terminate);
        let rows = rows.unwrap_or_else(|e| {
            panic!(
                "the read was not re-run: {e:?}\nproxy log:\n{}",
                proxy.log()
            )
        });
        let answer: Vec<(i32, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        assert_eq!(
            answer,
            [(1, PRIMARY.to_owned()), (2, PRIMARY.to_owned())],
            "the primary's answer, whole"
        );
    })
    .await
}
