//! Network partitions, with each node on a "host" of its own (a network namespace of the
//! partition rig, `pgrepl_tests::netns`) and the proxy in this machine's namespace: the
//! network between the proxy and the primary, or between the primary and the replica, is cut
//! silently (packets dropped, as by a pulled cable) for a few seconds, then healed. Each cut is
//! a guard healed on drop, so a failing test leaves none, and every wait has a deadline.
//!
//! What a silent cut does: the monitor finds the primary down within about 1.1 s; a write is
//! failed when its connection attempt times out (`connect_timeout`), and one that went out on
//! a pooled connection to the primary when `[proxy] server_tcp_user_timeout` ends that
//! connection (never held until the heal). The bound is to shrink with design §4 (a write
//! fails at once once the monitor has found the primary down). Figures each test measured are
//! printed (`--nocapture` shows them).

use std::time::{Duration, Instant};

use pgrepl_tests::netns::Side;
use pgrepl_tests::rigged::Rigged;
use pgrepl_tests::roles::{APP, DATABASE, SUPERUSER};
use pgrepl_tests::suite::{bounded_for, eventually, sqlstate};
use pgrepl_tests::suite::{PRIMARY, REPLICA};
use pgrepl_tests::traffic::{Readers, Writer};
use pgrepl_tests::{connect, Node};

/// How long the monitor may take to find the primary down: the 1 s floor of its sample
/// timeout, one interval, and slack for a busy 2-core machine.
const DOWN_WITHIN: Duration = Duration::from_millis(1600);
/// How long a write to the cut-off primary may take to fail: `[proxy] connect_timeout` (the
/// default, 5 s) and 1 s of slack. Today the proxy fails it when its connection attempt times
/// out, whether or not the monitor has found the primary down; design §4 (the writer
/// pointer) is to fail it at once once the monitor has.
const WRITE_FAILS_WITHIN: Duration = Duration::from_secs(5 + 1);
/// How long a client waits for a write: past the whole cut, so that a write held until the
/// heal would be seen as such.
const WRITE_DEADLINE: Duration = Duration::from_secs(25);
/// `[routing] max_replica_lag`, the default, said explicitly.
const MAX_REPLICA_LAG: Duration = Duration::from_secs(1);
/// How long reads may still go to a replica once it is `MAX_REPLICA_LAG` stale: the
/// monitor notices within a quarter of the bound (or an interval), and a session leaves its
/// replica at its next read.
const LEAVE_WITHIN: Duration = Duration::from_millis(1000);
/// Readers reading in a loop through the proxy.
const READERS: usize = 4;

/// A rigged cluster and proxy ([`Rigged::start`]) with readers reading on the replica.
async fn reading(name: &str, toml: &str) -> (Rigged, Readers) {
    let rigged = Rigged::start(name, 1, toml);
    let readers = Readers::start(rigged.proxy.addr, READERS).await;
    let start = Instant::now();
    readers
        .first_on(REPLICA, start, Duration::from_secs(10))
        .await;
    (rigged, readers)
}

/// One write through the proxy on a session of its own (as a web request would), with
/// [`WRITE_DEADLINE`]: `Ok` when it committed, else the SQLSTATE and message.
async fn write_on_new_session(addr: std::net::SocketAddr, id: i64) -> Result<(), String> {
    let write = async {
        let client = connect(addr, APP.name, DATABASE)
            .await
            .map_err(|e| format!("login: {e:#}"))?;
        client
            .execute("INSERT INTO w VALUES ($1)", &[&id])
            .await
            .map(drop)
            .map_err(|e| {
                let message = e.as_db_error().map(|d| d.message().to_owned());
                format!(
                    "{} {}",
                    sqlstate(&e).unwrap_or_default(),
                    message.unwrap_or_default()
                )
            })
    };
    match tokio::time::timeout(WRITE_DEADLINE, write).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {WRITE_DEADLINE:?}")),
    }
}

/// `sql`'s one value on `node`, run by the superuser over its Unix socket, which no cut
/// reaches.
async fn on_socket(node: &Node, sql: &str) -> String {
    let (node, sql) = (node.clone(), sql.to_owned());
    tokio::task::spawn_blocking(move || node.psql(SUPERUSER, "postgres", &sql))
        .await
        .unwrap()
        .unwrap()
        .trim()
        .to_owned()
}

/// Bytes of WAL the replica has not replayed.
async fn replay_lag(rigged: &Rigged) -> u64 {
    // The replica first: the primary's position, read after, is at or past it.
    let replayed = on_socket(&rigged.cluster.replica, "SELECT pg_last_wal_replay_lsn()").await;
    let primary = on_socket(&rigged.cluster.primary, "SELECT pg_current_wal_lsn()").await;
    let sql = format!("SELECT pg_wal_lsn_diff('{primary}', '{replayed}')::bigint");
    on_socket(&rigged.cluster.primary, &sql)
        .await
        .parse()
        .unwrap()
}

/// One write of [`writes_through_a_cut`]: when it was sent, how long it took, what it got.
struct Write {
    sent: Instant,
    took: Duration,
    result: Result<(), String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_between_the_proxy_and_the_primary_fails_writes_and_keeps_reads() {
    bounded_for(Duration::from_secs(60), async {
        let (rigged, readers) = reading("cut-proxy-primary", "").await;
        let addr = rigged.proxy.addr;

        let cut = rigged.rig.cut(Side::Proxy, Side::Node(PRIMARY)).unwrap();
        let cut_at = Instant::now();
        // Writes on sessions of their own, one every 250 ms from the cut on, each with a
        // deadline that outlasts the cut.
        let writes = tokio::spawn(async move {
            let mut writes = Vec::new();
            for id in 0..8 {
                writes.push(tokio::spawn(async move {
                    let sent = Instant::now();
                    let result = write_on_new_session(addr, id).await;
                    Write {
                        sent,
                        took: sent.elapsed(),
                        result,
                    }
                }));
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            writes
        });
        eventually("the monitor to find db01 down", DOWN_WITHIN, || async {
            rigged.status(PRIMARY)["state"] == "down"
        })
        .await
        .unwrap();
        let down_after = cut_at.elapsed();
        // The writes sent once db01 was found down all fail while the cut lasts.
        tokio::time::sleep(WRITE_FAILS_WITHIN).await;
        // Every read ran on the replica: nothing the readers did needed db01.
        let during = readers.since(cut_at);
        assert!(
            during.iter().all(|r| r.as_deref() == Ok(REPLICA)),
            "reads during the cut: {during:?}"
        );

        cut.heal().unwrap();
        let healed_at = Instant::now();
        let mut id = 100;
        eventually("writes to work again", Duration::from_secs(15), || {
            id += 1;
            async move { write_on_new_session(addr, id).await.is_ok() }
        })
        .await
        .unwrap();
        let writes_back = healed_at.elapsed();
        let mut writes_ended = Vec::new();
        for write in writes.await.unwrap() {
            writes_ended.push(write.await.unwrap());
        }
        let first_error = check_writes(&writes_ended);
        let reads = readers.stop_without_errors().await;
        eprintln!(
            "cut proxy-db01: monitor found db01 down {down_after:?} after the cut; first 08006 \
             {:?} after the cut; all {} writes failed; writes back {writes_back:?} after \
             healing; {reads} reads, 0 errors, all on db02",
            first_error - cut_at,
            writes_ended.len()
        );
    })
    .await
}

/// Checks the writes sent while the proxy was cut off from the primary: each failed with
/// 08006 naming db01 within [`WRITE_FAILS_WITHIN`], a write that went out on a pooled
/// connection to db01 (whose packets the cut drops) once
/// [`pgrepl_tests::rigged::USER_TIMEOUT`] ended that connection, any other when its
/// connection attempt timed out. None is held until the heal.
/// Returns when the first 08006 came.
fn check_writes(writes: &[Write]) -> Instant {
    for write in writes {
        match &write.result {
            Err(err) if err.starts_with("08006 ") && err.contains("db01") => assert!(
                write.took < WRITE_FAILS_WITHIN,
                "a write failed only after {:?}: {err}",
                write.took
            ),
            other => panic!(
                "a write got {other:?} after {:?}, not 08006 naming db01",
                write.took
            ),
        }
    }
    writes
        .iter()
        .map(|w| w.sent + w.took)
        .min()
        .expect("no write was sent while the primary was cut off")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_between_the_primary_and_the_replica_moves_reads_until_it_streams_again() {
    bounded_for(Duration::from_secs(60), async {
        let lag = format!(
            "\n[routing]\nmax_replica_lag = \"{}ms\"\n",
            MAX_REPLICA_LAG.as_millis()
        );
        let (rigged, readers) = reading("cut-primary-replica", &lag).await;
        let addr = rigged.proxy.addr;
        // The primary's WAL moves all along: a write every 20 ms through the proxy.
        let writer = Writer::start(addr).await;

        let cut = rigged
            .rig
            .cut(Side::Node(PRIMARY), Side::Node(REPLICA))
            .unwrap();
        let cut_at = Instant::now();
        let moved = readers
            .first_on(
                PRIMARY,
                cut_at,
                MAX_REPLICA_LAG + LEAVE_WITHIN + Duration::from_secs(1),
            )
            .await;
        let lag_then = replay_lag(&rigged).await;
        // The replica stays cut off for 2 s more, lagging further, and gets no reads.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let lag_later = replay_lag(&rigged).await;
        assert!(
            lag_later > lag_then && lag_then > 0,
            "the replica's lag grows while it is cut off: {lag_then} then {lag_later} bytes"
        );
        assert_eq!(rigged.status(REPLICA)["state"], "lagging");
        let settled = cut_at + MAX_REPLICA_LAG + LEAVE_WITHIN;
        let late = readers.since(settled);
        assert!(
            !late.is_empty() && late.iter().all(|r| r.as_deref() == Ok(PRIMARY)),
            "reads sent once the replica was past max_replica_lag ran on db01: {late:?}"
        );

        cut.heal().unwrap();
        let healed_at = Instant::now();
        // The standby's connection survived the cut (well within wal_receiver_timeout): it
        // streams again, from its namespace address through its slot, and catches up.
        let streams = format!(
            "SELECT count(*) FROM pg_stat_replication r \
             JOIN pg_replication_slots s ON s.active_pid = r.pid \
             WHERE s.slot_name = 'rideshare_slot' AND r.state = 'streaming' \
             AND r.client_addr = '{}'",
            rigged.cluster.replica.ip
        );
        eventually(
            "db02 to stream through rideshare_slot and catch up",
            Duration::from_secs(20),
            || async {
                let streaming = on_socket(&rigged.cluster.primary, &streams).await;
                streaming == "1" && replay_lag(&rigged).await < 64 * 1024
            },
        )
        .await
        .unwrap();
        let streaming_after = healed_at.elapsed();
        let back = readers
            .first_on(REPLICA, healed_at, Duration::from_secs(15))
            .await;
        writer.stop_without_errors().await;
        let reads = readers.stop_without_errors().await;
        eprintln!(
            "cut db01-db02: reads left db02 {:?} after the cut (lag {lag_then} then \
             {lag_later} bytes); streaming again {streaming_after:?} after healing, reads back \
             on db02 {:?} after; {reads} reads, 0 errors",
            moved - cut_at,
            back - healed_at
        );
    })
    .await
}
