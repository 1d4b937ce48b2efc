//! Causal reads against real servers: a session's reads right after its writes run on the
//! replica (which waits to have replayed them) and see them; a replica that cannot catch up
//! in time (replay paused) costs at most the wait, then the primary serves; a read never
//! shows older data than the session saw on the primary (monotonic reads); asynchronous
//! commits are flushed for waiting reads; "linearizable" sees commits made outside the
//! proxy; the mode can be set per session.

use std::net::SocketAddr;
use std::time::Duration;

use pgrepl_tests::endpoint::Metrics;
use pgrepl_tests::roles::{APP, DATABASE};
use pgrepl_tests::suite::pgbench;
use pgrepl_tests::suite::{bounded_for, code_of, eventually, on_replica, own_cluster_and_proxy};
use pgrepl_tests::suite::{PRIMARY, REPLICA};
use pgrepl_tests::{connect, OwnCluster, ProxyProcess};
use tokio_postgres::{Client, SimpleQueryMessage};

const LIMIT: Duration = Duration::from_secs(120);
const NOTICE: Duration = Duration::from_secs(5);

/// A cluster of the test's own with a table `t`, and a proxy with `routing` keys in front.
/// Reads wait up to 250 ms unless `routing` says otherwise: enough for a loaded machine,
/// where these tests must not fail for want of a few milliseconds.
fn cluster_and_proxy(name: &str, routing: &str) -> (OwnCluster, ProxyProcess) {
    let wait = if routing.contains("causal_wait") {
        ""
    } else {
        "causal_wait = \"250ms\"\n"
    };
    let extra = format!(
        "\n[routing]\nmax_replica_lag = \"60s\"\n{wait}{routing}\n\n[health]\ninterval = \"100ms\"\n"
    );
    own_cluster_and_proxy(name, "CREATE TABLE t (id int);", &extra)
}

async fn session(addr: SocketAddr) -> Client {
    connect(addr, APP.name, DATABASE).await.unwrap()
}

/// Where a count of `t`'s rows with `id` ran, and what it counted; by the extended protocol
/// or by a simple query.
async fn count_row(client: &Client, id: i32, extended: bool) -> (String, i64) {
    if extended {
        let row = client
            .query_one(
                "SELECT current_setting('cluster_name'), count(*) FROM t WHERE id = $1",
                &[&id],
            )
            .await
            .unwrap();
        return (row.get(0), row.get(1));
    }
    let sql = format!("SELECT current_setting('cluster_name'), count(*) FROM t WHERE id = {id}");
    let messages = client.simple_query(&sql).await.unwrap();
    let row = messages
        .iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(row),
            _ => None,
        })
        .expect("a row");
    let node = row.get(0).unwrap().to_owned();
    (node, row.get(1).unwrap().parse().unwrap())
}

/// [`count_row`] with a comment in front, by the extended protocol.
async fn hinted_count(client: &Client, comment: &str, id: i32) -> (String, i64) {
    let sql =
        format!("{comment} SELECT current_setting('cluster_name'), count(*) FROM t WHERE id = $1");
    let row = client.query_one(&sql, &[&id]).await.unwrap();
    (row.get(0), row.get(1))
}

async fn insert(client: &Client, id: i32, extended: bool) {
    if extended {
        client
            .execute("INSERT INTO t VALUES ($1)", &[&id])
            .await
            .unwrap();
    } else {
        client
            .batch_execute(&format!("INSERT INTO t VALUES ({id})"))
            .await
            .unwrap();
    }
}

/// `rounds` write-then-read pairs in each protocol mix; every read must see its write.
/// Returns how many reads ran on the replica.
async fn writes_then_reads(client: &Client, first_id: i32, rounds: i32) -> i32 {
    let mut on_replica = 0;
    for i in 0..rounds {
        let id = first_id + i;
        insert(client, id, i % 2 == 0).await;
        let (node, seen) = count_row(client, id, i % 3 == 0).await;
        assert_eq!(seen, 1, "read {i} (on {node}) must see the write just made");
        on_replica += i32::from(node == REPLICA);
    }
    on_replica
}

fn metric(proxy: &ProxyProcess, name: &str, labels: &[(&str, &str)]) -> f64 {
    Metrics::scrape(proxy.endpoint()).value(name, labels)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_right_after_writes_run_on_the_replica_and_see_them() {
    bounded_for(LIMIT, async {
        let (_cluster, proxy) = cluster_and_proxy("causal-replica", "");
        let client = session(proxy.addr).await;
        let rounds = 100;
        let on_replica = writes_then_reads(&client, 1, rounds).await;
        assert!(
            on_replica >= rounds * 9 / 10,
            "only {on_replica} of {rounds} reads after a write ran on the replica"
        );
        let commits = metric(
            &proxy,
            "pgrepl_primary_position_queries_total",
            &[("kind", "commit")],
        );
        assert!(
            commits >= f64::from(rounds),
            "a commit position asked per write: {commits}"
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_cannot_catch_up_costs_one_wait_then_the_primary_serves() {
    bounded_for(LIMIT, async {
        let (cluster, proxy) = cluster_and_proxy("causal-paused", "causal_wait = \"20ms\"");
        let client = session(proxy.addr).await;
        on_replica(&cluster, "SELECT pg_wal_replay_pause()").await;
        for i in 0..10 {
            insert(&client, 100 + i, i % 2 == 0).await;
            assert_eq!(
                count_row(&client, 100 + i, i % 2 == 1).await,
                (PRIMARY.to_owned(), 1),
                "the write is on the primary only"
            );
        }
        let waited = metric(
            &proxy,
            "pgrepl_causal_waits_total",
            &[("outcome", "primary")],
        );
        // Ten reads, each after a write the paused replica lacks: the first ones wait in
        // vain, then replay counts as stuck (its oldest wanted position unreplayed for two
        // waits) and the rest go straight to the primary.
        assert!(
            (1.0..=5.0).contains(&waited),
            "the first reads waited, then left; the rest did not wait: {waited} waited"
        );
        on_replica(&cluster, "SELECT pg_wal_replay_resume()").await;
        eventually("reads to return to the replica", NOTICE, || async {
            count_row(&client, 109, true).await == (REPLICA.to_owned(), 1)
        })
        .await
        .unwrap();
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_never_reads_older_data_than_it_read_on_the_primary() {
    bounded_for(LIMIT, async {
        let (cluster, proxy) = cluster_and_proxy("causal-monotonic", "");
        let reader = session(proxy.addr).await;
        assert_eq!(count_row(&reader, 7, true).await, (REPLICA.to_owned(), 0));
        on_replica(&cluster, "SELECT pg_wal_replay_pause()").await;
        // Written outside the proxy: only what the reader reads tells it of the row.
        let primary = connect(cluster.primary.addr(), APP.name, DATABASE)
            .await
            .unwrap();
        primary
            .execute("INSERT INTO t VALUES (7)", &[])
            .await
            .unwrap();
        let row = reader
            .query_one(
                "/* pgrepl:primary */ SELECT count(*) FROM t WHERE id = $1",
                &[&7],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, i64>(0), 1, "the primary has it");
        for extended in [true, false] {
            assert_eq!(
                count_row(&reader, 7, extended).await,
                (PRIMARY.to_owned(), 1),
                "a read after one on the primary sees at least as much"
            );
        }
        on_replica(&cluster, "SELECT pg_wal_replay_resume()").await;
        eventually("reads to return to the replica", NOTICE, || async {
            count_row(&reader, 7, true).await == (REPLICA.to_owned(), 1)
        })
        .await
        .unwrap();
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asynchronous_commits_are_flushed_for_the_reads_that_wait_for_them() {
    bounded_for(LIMIT, async {
        let (_cluster, proxy) = cluster_and_proxy("causal-async", "");
        let client = session(proxy.addr).await;
        client
            .batch_execute("SET synchronous_commit = off")
            .await
            .unwrap();
        let rounds = 60;
        let on_replica = writes_then_reads(&client, 200, rounds).await;
        assert!(
            on_replica >= rounds * 8 / 10,
            "only {on_replica} of {rounds} reads after an asynchronous commit ran on the replica"
        );
        let flushes = metric(
            &proxy,
            "pgrepl_primary_position_queries_total",
            &[("kind", "flush")],
        );
        assert!(flushes >= 1.0, "the proxy flushed for waiting reads");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_made_asynchronous_inside_its_transaction_is_covered_too() {
    bounded_for(LIMIT, async {
        // The session's setting says "on" when the commit's position is asked; only the
        // transaction made it asynchronous, and its position must still cover it. (A proxy
        // of its own: once any session commits asynchronously, every position covers such
        // commits, which would hide this.)
        let (_cluster, proxy) = cluster_and_proxy("causal-local-async", "");
        let local = session(proxy.addr).await;
        for i in 0..20 {
            let id = 500 + i;
            let sql = format!(
                "BEGIN; SET LOCAL synchronous_commit = off; INSERT INTO t VALUES ({id}); COMMIT"
            );
            if i % 2 == 0 {
                local.batch_execute(&sql).await.unwrap();
            } else {
                for statement in sql.split("; ") {
                    local.batch_execute(statement).await.unwrap();
                }
            }
            let (node, seen) = count_row(&local, id, i % 3 == 0).await;
            assert_eq!(
                seen, 1,
                "commit {i}, made asynchronous locally, read on {node}"
            );
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linearizable_reads_see_commits_made_outside_the_proxy() {
    bounded_for(LIMIT, async {
        let (cluster, proxy) =
            cluster_and_proxy("causal-linearizable", "read_your_writes = \"linearizable\"");
        let reader = session(proxy.addr).await;
        let primary = connect(cluster.primary.addr(), APP.name, DATABASE)
            .await
            .unwrap();
        let rounds = 40;
        let mut on_replica = 0;
        for i in 0..rounds {
            let id = 300 + i;
            primary
                .execute("INSERT INTO t VALUES ($1)", &[&id])
                .await
                .unwrap();
            let (node, seen) = count_row(&reader, id, i % 2 == 0).await;
            assert_eq!(
                seen, 1,
                "read {i} on {node} misses a commit acknowledged before it"
            );
            on_replica += i32::from(node == REPLICA);
        }
        assert!(
            on_replica >= rounds / 2,
            "only {on_replica} of {rounds} linearizable reads ran on the replica"
        );
        let rounds_run = metric(
            &proxy,
            "pgrepl_primary_position_queries_total",
            &[("kind", "round")],
        );
        assert!(rounds_run >= 1.0, "reads looked the position up");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mode_can_be_set_per_session() {
    bounded_for(LIMIT, async {
        let (cluster, proxy) = cluster_and_proxy("causal-set", "");
        let client = session(proxy.addr).await;
        let err = client
            .batch_execute("SET pgrepl.read_your_writes = 'always'")
            .await
            .unwrap_err();
        assert_eq!(code_of(&err), "22023");
        client
            .batch_execute("SET pgrepl.read_your_writes = 'off'")
            .await
            .unwrap();
        on_replica(&cluster, "SELECT pg_wal_replay_pause()").await;
        insert(&client, 400, true).await;
        assert_eq!(
            count_row(&client, 400, true).await,
            (REPLICA.to_owned(), 0),
            "off: the replica serves, stale"
        );
        assert_eq!(
            hinted_count(&client, "/* pgrepl:read_your_writes=session */", 400).await,
            (PRIMARY.to_owned(), 1),
            "a statement may ask for more than its session"
        );
        client
            .batch_execute("RESET pgrepl.read_your_writes")
            .await
            .unwrap();
        insert(&client, 401, false).await;
        assert_eq!(
            count_row(&client, 401, false).await,
            (PRIMARY.to_owned(), 1),
            "back to the default (session)"
        );
        // The replica has been stale since the first write; a bound tighter than that keeps
        // a session that never wrote off it, while one without keeps reading it.
        let strict = session(proxy.addr).await;
        strict
            .batch_execute("SET pgrepl.max_staleness = '50ms'")
            .await
            .unwrap();
        let relaxed = session(proxy.addr).await;
        relaxed
            .batch_execute("SET pgrepl.max_staleness = '50ms'")
            .await
            .unwrap();
        let lenient = session(proxy.addr).await;
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(count_row(&strict, 400, true).await, (PRIMARY.to_owned(), 1));
        assert_eq!(
            count_row(&lenient, 400, true).await,
            (REPLICA.to_owned(), 0)
        );
        // (Each session below reads the row once: having seen it, none may read the stale
        // replica again.)
        assert_eq!(
            hinted_count(&relaxed, "-- pgrepl:max_staleness=1h\n", 400).await,
            (REPLICA.to_owned(), 0),
            "a statement's bound replaces its session's"
        );
        assert_eq!(
            hinted_count(&lenient, "/* pgrepl:max_staleness=50ms */", 400).await,
            (PRIMARY.to_owned(), 1),
            "a statement's own bound"
        );
        assert_eq!(
            count_row(&lenient, 400, true).await,
            (PRIMARY.to_owned(), 1),
            "having seen the row on the primary, the session does not read the stale replica"
        );
        on_replica(&cluster, "SELECT pg_wal_replay_resume()").await;
    })
    .await
}

/// The transactions pgbench ran of the script named `name` (`SQL script N: <builtin: NAME>`).
fn script_transactions(out: &str, name: &str) -> f64 {
    let section = out
        .split("SQL script")
        .find(|s| s.contains(&format!("<builtin: {name}>")))
        .unwrap_or_else(|| panic!("no script {name} in:\n{out}"));
    let line = section
        .lines()
        .find(|l| l.trim_start().starts_with("- ") && l.contains("transactions"))
        .unwrap_or_else(|| panic!("no count for {name} in:\n{out}"));
    line.trim_start_matches([' ', '-'])
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("cannot read {line:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_mixed_script_reads_on_the_replica_between_its_writes() {
    bounded_for(LIMIT, async {
        let (_cluster, proxy) = cluster_and_proxy("causal-pgbench", "");
        let addr = proxy.addr;
        tokio::task::spawn_blocking(move || pgbench(addr, &["-i", "-s", "1", "-q"]))
            .await
            .unwrap();
        for mode in ["simple", "extended"] {
            let replica = || metric(&proxy, "pgrepl_queries_total", &[("route", "replica")]);
            let before = replica();
            let args = [
                "-n", "-c", "4", "-j", "2", "-T", "3", "-M", mode, "-b", "tpcb-like@1", "-b",
                "select-only@9",
            ];
            let out = tokio::task::spawn_blocking(move || pgbench(addr, &args))
                .await
                .unwrap();
            let reads = script_transactions(&out, "select only");
            let on_replica = replica() - before;
            eprintln!("pgbench -M {mode}: {reads} select-only transactions, {on_replica} statements on the replica");
            assert!(reads > 0.0, "{out}");
            assert!(
                on_replica >= 0.8 * reads,
                "-M {mode}: {on_replica} replica statements for {reads} select-only transactions"
            );
        }
    })
    .await
}
