//! Transaction pooling (`[pool] mode = "transaction"`): many clients over a few server
//! connections, with nothing a session relies on broken. A client holds a server connection
//! only while a transaction, a batch or a COPY is open, or while it holds state only that
//! connection has (then it is pinned: counted in `pgrepl_pinned_sessions`); its settings and
//! prepared statements follow it to whichever connection runs its next statement; nothing it
//! leaves on a connection reaches the next client; clients past the pool's size wait in line,
//! then get 53300 naming the pool.
//!
//! Every other suite also runs in transaction mode (`TEST_POOL_MODE=transaction`, see
//! scripts/test.sh); these tests are about what only this mode does.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgrepl_tests::endpoint::Metrics;
use pgrepl_tests::roles::{APP, DATABASE, MD5USER, SUPERUSER};
use pgrepl_tests::suite::{
    bounded_for, code_of, eventually, pgbench_on, simple_first, start_proxy, text_rows, unique,
};
use pgrepl_tests::{connect, Cluster, Node, ProxyProcess};
use tokio_postgres::Client;

const LIMIT: Duration = Duration::from_secs(240);

/// The server process running a statement on the primary.
const PRIMARY_PID: &str = "/* pgrepl:primary */ SELECT pg_backend_pid()";

/// A transaction-mode proxy for the shared cluster with `size` connections per (backend,
/// user, database) and `extra` lines in `[pool]`.
fn pooled_proxy(size: usize, extra: &str) -> ProxyProcess {
    start_proxy(&format!(
        "\n[pool]\nmode = \"transaction\"\ndefault_pool_size = {size}\n{extra}\n"
    ))
}

/// A database of the calling test's own, owned by `app`: the pools for it are the test's
/// alone, so the connections to it are too (tests run side by side on the shared cluster).
fn own_database(prefix: &str) -> String {
    let db = unique(prefix);
    let primary = &Cluster::shared().primary;
    primary
        .psql(
            SUPERUSER,
            "postgres",
            &format!("CREATE DATABASE {db} OWNER {}", APP.name),
        )
        .unwrap();
    Cluster::shared().wait_replica_caught_up().unwrap();
    db
}

/// Connections to `db` on `node` now.
fn connections_to(node: &Node, db: &str) -> usize {
    let sql = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = '{db}' \
         AND backend_type = 'client backend' AND application_name NOT LIKE 'pgrepl-proxy %'"
    );
    node.psql(SUPERUSER, "postgres", &sql)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// The most connections to `db` on the primary and on the replica while `body` ran.
async fn most_connections_during<F: std::future::Future>(
    db: &str,
    body: F,
) -> (F::Output, [usize; 2]) {
    let running = Arc::new(AtomicBool::new(true));
    let most = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
    let sampler = {
        let (running, most, db) = (running.clone(), most.clone(), db.to_owned());
        tokio::task::spawn_blocking(move || {
            let cluster = Cluster::shared();
            while running.load(Ordering::Relaxed) {
                for (i, node) in [&cluster.primary, &cluster.replica].iter().enumerate() {
                    most[i].fetch_max(connections_to(node, &db), Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let out = body.await;
    running.store(false, Ordering::Relaxed);
    sampler.await.unwrap();
    (out, [0, 1].map(|i| most[i].load(Ordering::Relaxed)))
}

fn metric(proxy: &ProxyProcess, name: &str) -> f64 {
    Metrics::scrape(proxy.endpoint()).value(name, &[])
}

/// Runs `sql` on the primary as `app` in `db` (setup outside any proxy).
fn on_primary(db: &str, sql: &str) {
    Cluster::shared().primary.psql(APP.name, db, sql).unwrap();
}

/// What one of the many clients does, checking every answer: settings of its own, a
/// prepared statement every client names alike but defines differently, writes in and out
/// of transactions, and reads of them (a read after a write sees it).
async fn one_client(mut client: Client, table: &str, n: i32) {
    let work_mem = format!("{}kB", 64 + n);
    client
        .batch_execute(&format!(
            "SET work_mem = '{work_mem}'; SET application_name = 'client {n}'"
        ))
        .await
        .unwrap();
    // tokio-postgres names its statements s0, s1...: the same names in every client, each
    // defined with its own text here.
    let own = client
        .prepare(&format!("SELECT v + {n} FROM {table} WHERE id = $1"))
        .await
        .unwrap();
    let insert = format!("INSERT INTO {table} VALUES ($1, $2)");
    for round in 0..4 {
        let id = n * 100 + round;
        client.execute(&insert, &[&id, &round]).await.unwrap();
        let row = client.query_one(&own, &[&id]).await.unwrap();
        assert_eq!(
            row.get::<_, i32>(0),
            round + n,
            "client {n} reads its write"
        );
        let tx = client.transaction().await.unwrap();
        let update = format!("UPDATE {table} SET v = v + 1 WHERE id = $1");
        tx.execute(&update, &[&id]).await.unwrap();
        let select = format!("SELECT v FROM {table} WHERE id = $1");
        let row = tx.query_one(&select, &[&id]).await.unwrap();
        assert_eq!(
            row.get::<_, i32>(0),
            round + 1,
            "client {n} in its transaction"
        );
        tx.commit().await.unwrap();
        assert_eq!(simple_first(&client, "SHOW work_mem").await, work_mem);
        let name = simple_first(&client, "SELECT current_setting('application_name')").await;
        assert_eq!(
            name,
            format!("client {n}"),
            "client {n}'s settings follow it"
        );
    }
    let row = client.query_one(&own, &[&(n * 100)]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 1 + n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_clients_share_ten_connections_and_every_answer_is_right() {
    const CLIENTS: i32 = 200;
    const POOL: usize = 10;
    let proxy = pooled_proxy(POOL, "query_wait_timeout = \"60s\"");
    let db = own_database("tx_many");
    let table = "many";
    on_primary(
        &db,
        &format!("CREATE TABLE {table} (id int PRIMARY KEY, v int)"),
    );
    bounded_for(LIMIT, async {
        // Logins a few at a time (SCRAM costs CPU in a debug build); then all at once.
        let logins = Arc::new(tokio::sync::Semaphore::new(20));
        let clients = async {
            let clients: Vec<_> = (1..=CLIENTS)
                .map(|n| {
                    let (db, logins, addr) = (db.clone(), logins.clone(), proxy.addr);
                    tokio::spawn(async move {
                        let login = logins.acquire_owned().await.unwrap();
                        let client = connect(addr, APP.name, &db).await.unwrap();
                        drop(login);
                        one_client(client, table, n).await
                    })
                })
                .collect();
            for client in clients {
                client.await.expect("a client's answers were right");
            }
        };
        let ((), [primary, replica]) = most_connections_during(&db, clients).await;
        assert!(
            primary > 0 && replica > 0,
            "sampled {primary} and {replica}"
        );
        assert!(
            primary <= POOL && replica <= POOL,
            "{CLIENTS} clients over a pool of {POOL}: up to {primary} connections on the \
             primary and {replica} on the replica"
        );
        let rows = Cluster::shared()
            .primary
            .psql(
                APP.name,
                &db,
                &format!("SELECT count(*), sum(v) FROM {table}"),
            )
            .unwrap();
        // Each client wrote rounds 0..4, each bumped once.
        let per_client: i32 = (0..4).map(|r| r + 1).sum();
        assert_eq!(
            rows.trim(),
            format!("{}|{}", CLIENTS * 4, CLIENTS * per_client)
        );
    })
    .await;
}

/// Statements that leave state on the connection, and what gives it up.
const PINS: &[(&str, &str, &str)] = &[
    ("LISTEN", "LISTEN pinned_channel", "UNLISTEN pinned_channel"),
    (
        "session advisory lock",
        "SELECT pg_advisory_lock(4242)",
        "SELECT pg_advisory_unlock(4242)",
    ),
    (
        "SQL PREPARE",
        "PREPARE pinned_q AS SELECT 1",
        "DEALLOCATE pinned_q",
    ),
    (
        "cursor WITH HOLD",
        "BEGIN; DECLARE pinned_c CURSOR WITH HOLD FOR SELECT 1; COMMIT",
        "CLOSE pinned_c",
    ),
];

/// The proxy counts `count` pinned sessions, within a few seconds (it learns that state is
/// gone from the answer to its own question after the client's statement).
async fn pinned_sessions_become(proxy: &ProxyProcess, count: f64) {
    let endpoint = proxy.endpoint();
    eventually(
        "pgrepl_pinned_sessions",
        Duration::from_secs(5),
        || async move { Metrics::scrape(endpoint).value("pgrepl_pinned_sessions", &[]) == count },
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_kind_of_session_state_keeps_its_connection_until_it_is_gone() {
    let proxy = pooled_proxy(1, "query_wait_timeout = \"1s\"");
    bounded_for(LIMIT, async {
        let holder = connect(proxy.addr, APP.name, DATABASE).await.unwrap();
        let other = connect(proxy.addr, APP.name, DATABASE).await.unwrap();
        for (kind, take, give_up) in PINS {
            let first = simple_first(&holder, PRIMARY_PID).await;
            holder.batch_execute(take).await.unwrap();
            pinned_sessions_become(&proxy, 1.0).await;
            // The pool's only primary connection stays with the holder, however long.
            let err = other.simple_query(PRIMARY_PID).await.unwrap_err();
            assert_eq!(code_of(&err), "53300", "{kind}: {err:?}");
            assert_eq!(simple_first(&holder, PRIMARY_PID).await, first, "{kind}");
            holder.batch_execute(give_up).await.unwrap();
            pinned_sessions_become(&proxy, 0.0).await;
            simple_first(&other, PRIMARY_PID).await;
        }
        // A temporary schema holds more than tables (statistics, functions, types...): the
        // connection stays with the session that made one until it ends.
        let first = simple_first(&holder, PRIMARY_PID).await;
        for sql in [
            "CREATE TEMP TABLE pinned_tmp (a int)",
            "DROP TABLE pinned_tmp",
        ] {
            holder.batch_execute(sql).await.unwrap();
        }
        pinned_sessions_become(&proxy, 1.0).await;
        let err = other.simple_query(PRIMARY_PID).await.unwrap_err();
        assert_eq!(code_of(&err), "53300", "temporary schema: {err:?}");
        assert_eq!(simple_first(&holder, PRIMARY_PID).await, first);
        drop(holder);
        pinned_sessions_become(&proxy, 0.0).await;
        simple_first(&other, PRIMARY_PID).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_waits_its_turn_then_gets_53300_naming_the_pool() {
    let proxy = pooled_proxy(1, "query_wait_timeout = \"1500ms\"");
    bounded_for(LIMIT, async {
        let holder = connect(proxy.addr, APP.name, DATABASE).await.unwrap();
        let waiter = connect(proxy.addr, APP.name, DATABASE).await.unwrap();
        holder.batch_execute("BEGIN").await.unwrap();
        simple_first(&holder, PRIMARY_PID).await;

        // In line for the whole wait: refused, the pool named; the session goes on.
        let started = Instant::now();
        let (refused, seen_waiting) = tokio::join!(waiter.simple_query(PRIMARY_PID), async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            metric(&proxy, "pgrepl_clients_waiting")
        });
        let err = refused.unwrap_err();
        assert_eq!(code_of(&err), "53300", "{err:?}");
        let message = err.as_db_error().unwrap().message().to_owned();
        assert!(
            message.contains("db01/app/appdb") && message.contains("query_wait_timeout"),
            "{message}"
        );
        assert!(started.elapsed() >= Duration::from_millis(1400));
        assert_eq!(seen_waiting, 1.0, "pgrepl_clients_waiting while it waited");

        // A connection given back while it waits is its, at once.
        let (served, ()) = tokio::join!(waiter.simple_query(PRIMARY_PID), async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            holder.batch_execute("COMMIT").await.unwrap();
        });
        assert_eq!(text_rows(&served.expect("handed the connection")).len(), 1);
        let waits = Metrics::scrape(proxy.endpoint());
        assert!(waits.has("pgrepl_pool_wait_seconds_count", &[]));
        assert!(waits.value("pgrepl_pool_wait_seconds_count", &[]) >= 2.0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_a_client_leaves_on_a_connection_reaches_the_next() {
    let proxy = pooled_proxy(1, "");
    let table = unique("tx_leak");
    on_primary(
        DATABASE,
        &format!("CREATE TABLE {table} (a int); INSERT INTO {table} VALUES (1)"),
    );
    bounded_for(LIMIT, async {
        let first = connect(proxy.addr, APP.name, DATABASE).await.unwrap();
        // One statement per query: settings mixed with other statements in one query pin.
        for sql in [
            "SET work_mem = '77kB'",
            "SET search_path = pg_catalog, public",
            "SET application_name = 'first'",
            "PREPARE sql_q AS SELECT 41",
            "DEALLOCATE sql_q",
            &format!("SELECT count(*) FROM public.{table}"),
        ] {
            first.batch_execute(sql).await.unwrap();
        }
        let statement = first
            .prepare("/* pgrepl:primary */ SELECT 'first'::text")
            .await
            .unwrap();
        let first_pid = simple_first(&first, PRIMARY_PID).await;

        let next = connect(proxy.addr, APP.name, DATABASE).await.unwrap();
        assert_eq!(
            simple_first(&next, PRIMARY_PID).await,
            first_pid,
            "the same server connection, or this test proves nothing"
        );
        let defaults = "/* pgrepl:primary */ SELECT current_setting('work_mem'), \
                        current_setting('search_path'), current_setting('application_name'), \
                        (SELECT count(*) FROM pg_catalog.pg_class \
                        WHERE relnamespace = pg_catalog.pg_my_temp_schema()), \
                        (SELECT count(*) FROM pg_catalog.pg_prepared_statements WHERE from_sql)";
        let seen = text_rows(&next.simple_query(defaults).await.unwrap());
        let want = ["4MB", "\"$user\", public", "", "0", "0"];
        assert_eq!(
            seen[0],
            want.iter().map(|v| Some(v.to_string())).collect::<Vec<_>>()
        );
        // Another client's statement is not this one's, by any name it goes by.
        // (The server lists it, as PgBouncer's connections list theirs: see the README.)
        let held = "/* pgrepl:primary */ SELECT name FROM pg_catalog.pg_prepared_statements \
                    WHERE statement LIKE '%SELECT ''first''::text'";
        let execute = format!("EXECUTE {}", simple_first(&next, held).await);
        let err = next.simple_query(&execute).await.unwrap_err();
        assert_eq!(code_of(&err), "26000", "{err:?}");
        let own = next.prepare("SELECT 'next'::text").await.unwrap();
        let row = next.query_one(&own, &[]).await.unwrap();
        assert_eq!(row.get::<_, String>(0), "next");

        // And the first client finds its own again.
        let row = first.query_one(&statement, &[]).await.unwrap();
        assert_eq!(row.get::<_, String>(0), "first");
        let seen = text_rows(&first.simple_query(defaults).await.unwrap());
        assert_eq!(seen[0][0].as_deref(), Some("77kB"));
        assert_eq!(seen[0][2].as_deref(), Some("first"));

        // A temporary table outlives no session: its connection is not pooled again.
        first
            .batch_execute("CREATE TEMP TABLE first_tmp (a int)")
            .await
            .unwrap();
        drop((first, next));
        let last = connect(proxy.addr, APP.name, DATABASE).await.unwrap();
        let seen = text_rows(&last.simple_query(defaults).await.unwrap());
        assert_eq!(seen[0][3].as_deref(), Some("0"), "no temporary relation");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_in_each_protocol_over_a_small_pool() {
    let proxy = pooled_proxy(4, "");
    let (addr, db) = (proxy.addr, own_database("tx_pgbench"));
    bounded_for(LIMIT, async move {
        let init = db.clone();
        tokio::task::spawn_blocking(move || pgbench_on(addr, &init, &["-i", "-s", "1", "-q"]))
            .await
            .unwrap();
        for mode in ["simple", "extended", "prepared"] {
            // One thread per client: pgbench prepares with a blocking call, which would hold
            // up a thread's other clients while they hold connections.
            let args = ["-n", "-c", "12", "-j", "12", "-T", "2", "-M", mode];
            let on = db.clone();
            let run = tokio::task::spawn_blocking(move || pgbench_on(addr, &on, &args));
            let (out, most) = most_connections_during(&db, async { run.await.unwrap() }).await;
            assert!(
                out.contains("number of failed transactions: 0 (0.000%)"),
                "{mode}:\n{out}"
            );
            assert!(most[0] <= 4 && most[1] <= 4, "{mode}: {most:?} connections");
        }
    })
    .await;
}

/// A client of `app` through `proxy` with `options` at startup, and the DateStyle it was
/// told.
async fn client_with_options(proxy: &ProxyProcess, options: &str) -> (Client, String) {
    let conninfo = pgrepl_tests::conninfo(proxy.addr, APP.name, DATABASE);
    let mut config: tokio_postgres::Config = conninfo.parse().unwrap();
    config.options(options);
    let (client, connection) = config.connect(tokio_postgres::NoTls).await.unwrap();
    let told = connection
        .parameter("DateStyle")
        .unwrap_or_default()
        .to_owned();
    tokio::spawn(connection);
    (client, told)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_settings_are_told_and_applied_whatever_the_last_client_left() {
    let proxy = pooled_proxy(1, "");
    bounded_for(LIMIT, async {
        let date = "SELECT '2020-01-02'::date::text";
        // The first leaves both connections with its settings...
        let (first, told) =
            client_with_options(&proxy, "-c DateStyle=Postgres,MDY -c TimeZone=PST8PDT").await;
        assert_eq!(told, "Postgres, MDY");
        assert_eq!(simple_first(&first, date).await, "01-02-2020");
        let on_primary = format!("/* pgrepl:primary */ {date}");
        assert_eq!(simple_first(&first, &on_primary).await, "01-02-2020");
        // ...and the next, with some of them, is told and gets its own, not the startup
        // values the server would have reported on a fresh connection.
        let (next, told) = client_with_options(&proxy, "-c DateStyle=Postgres,MDY").await;
        assert_eq!(told, "Postgres, MDY");
        assert_eq!(simple_first(&next, date).await, "01-02-2020");
        assert_eq!(simple_first(&next, &on_primary).await, "01-02-2020");
        let zone = simple_first(&next, "SHOW TimeZone").await;
        assert_ne!(
            zone, "PST8PDT",
            "the first client's time zone stayed with it"
        );
    })
    .await;
}

/// The primary's server process ids of two clients of `user` in `db` that take turns, both
/// connected: one process in transaction mode (the first gave its connection back), two in
/// session mode (the first keeps its own).
async fn pids_of_two_clients(proxy: &ProxyProcess, user: &str, db: &str) -> [String; 2] {
    let first = connect(proxy.addr, user, db).await.unwrap();
    let second = connect(proxy.addr, user, db).await.unwrap();
    let pid = simple_first(&first, PRIMARY_PID).await;
    [pid, simple_first(&second, PRIMARY_PID).await]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overrides_choose_the_mode_per_database_and_user() {
    let pooled = own_database("tx_override");
    // Session mode, but transaction pooling over one connection for one database, except
    // for one user there (with room for both its clients). A client that found the pooled
    // connection kept would fail soon.
    let proxy = start_proxy(&format!(
        "\n[pool]\nmode = \"session\"\nquery_wait_timeout = \"5s\"\n\n\
         [pool.databases.{pooled}]\nmode = \"transaction\"\ndefault_pool_size = 1\n\n\
         [pool.users.{}]\nmode = \"session\"\ndefault_pool_size = 2\n",
        MD5USER.name
    ));
    bounded_for(LIMIT, async {
        let [first, second] = pids_of_two_clients(&proxy, APP.name, &pooled).await;
        assert_eq!(first, second, "{pooled} is pooled by transaction");
        let [first, second] = pids_of_two_clients(&proxy, APP.name, DATABASE).await;
        assert_ne!(first, second, "{DATABASE} keeps session mode");
        let [first, second] = pids_of_two_clients(&proxy, MD5USER.name, &pooled).await;
        assert_ne!(
            first, second,
            "{} keeps session mode in {pooled}",
            MD5USER.name
        );
    })
    .await;
}

/// A statement the proxy gives up to stay within `max_prepared_statements` is closed on the
/// server in the client's batch; when an error earlier in that batch makes the server skip
/// the Close, the statement is still there, and preparing it again must not fail with
/// 42P05 (`prepared statement already exists`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_an_error_skipped_does_not_break_the_statement_later() {
    let proxy = pooled_proxy(1, "max_prepared_statements = 2");
    bounded_for(LIMIT, async {
        let client = connect(proxy.addr, APP.name, DATABASE).await.unwrap();
        let one = client.prepare("SELECT 1::int").await.unwrap();
        let two = client.prepare("SELECT 2::int").await.unwrap();
        // A read like the others (same server connection), whose Parse fails; the Close of
        // `one`, given up for it, comes after it in its batch.
        let bad = client
            .prepare("SELECT 3 FROM no_such_table")
            .await
            .unwrap_err();
        assert_eq!(bad.code().map(|c| c.code()), Some("42P01"), "{bad}");
        for _ in 0..2 {
            for (statement, want) in [(&one, 1), (&two, 2)] {
                let row = client.query_one(statement, &[]).await.unwrap();
                assert_eq!(row.get::<_, i32>(0), want);
            }
        }
    })
    .await
}

/// A reload that makes a pool larger gives the new room to the clients already waiting in
/// its line, not only to later ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_a_reload_makes_larger_serves_those_already_waiting() {
    let mut proxy = pooled_proxy(1, "query_wait_timeout = \"120s\"");
    let config = std::fs::read_to_string(&proxy.config_path).unwrap();
    bounded_for(LIMIT, async {
        let holder = connect(proxy.addr, APP.name, DATABASE).await.unwrap();
        holder.batch_execute("BEGIN").await.unwrap();
        holder.query_one(PRIMARY_PID, &[]).await.unwrap();
        let waiter = connect(proxy.addr, APP.name, DATABASE).await.unwrap();
        let waiting = tokio::spawn(async move { waiter.query_one(PRIMARY_PID, &[]).await });
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!waiting.is_finished(), "the only connection is held");

        let larger = config.replace("default_pool_size = 1\n", "default_pool_size = 2\n");
        assert_ne!(larger, config);
        proxy.reload_with(&larger).unwrap();
        let served = tokio::time::timeout(Duration::from_secs(30), waiting).await;
        let row = served.expect("served after the reload").unwrap().unwrap();
        assert!(row.get::<_, i32>(0) > 0);
        holder.batch_execute("COMMIT").await.unwrap();
    })
    .await
}

/// A pooled connection its server ended while it sat idle (a restart, an idle timeout, an
/// administrator's `pg_terminate_backend`) is not handed to the next statement: the
/// statement runs on a new connection and the client notices nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_connection_its_server_ended_is_not_reused() {
    let proxy = pooled_proxy(1, "");
    let db = own_database("ended_idle");
    bounded_for(LIMIT, async {
        let client = connect(proxy.addr, APP.name, &db).await.unwrap();
        let first = simple_first(&client, PRIMARY_PID).await;
        let primary = &Cluster::shared().primary;
        primary
            .psql(
                SUPERUSER,
                "postgres",
                &format!("SELECT pg_terminate_backend({first})"),
            )
            .unwrap();
        eventually(
            "the ended connection is gone",
            Duration::from_secs(30),
            || async { connections_to(primary, &db) == 0 },
        )
        .await
        .unwrap();
        // Longer than the pool's own look at the socket waits for (ASK_IF_IDLE_FOR).
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let second = client
            .simple_query(PRIMARY_PID)
            .await
            .expect("the next statement runs, on a new connection");
        let second = text_rows(&second)[0][0].clone();
        assert_ne!(
            second.as_deref(),
            Some(first.as_str()),
            "a new server process"
        );
    })
    .await;
}
