//! Session state through the proxy.
//!
//! Rule 2, session state follows the session: `SET`, `RESET`, `RESET ALL`, `SET ROLE`,
//! `SET SESSION AUTHORIZATION`, `SET TIME ZONE` run on the primary and, once they took effect
//! (outside a transaction, or in one that committed), are replayed in order on the session's
//! replica connection, so reads there see them; `SET LOCAL` and `SET`s rolled back are not;
//! startup parameters apply on every backend; a pooled connection never carries one client's
//! settings to the next; simple and extended protocol alike.
//!
//! Rule 3, pinning: while the session holds state only the primary has (temporary tables,
//! `LISTEN`, session advisory locks, SQL `PREPARE`, `WITH HOLD` cursors), its reads run on the
//! primary; once that state is gone (allowing the proxy a round trip to notice), on the replica.
//!
//! Rule 4: in a session whose `default_transaction_read_only` is on, a plain `BEGIN` opens its
//! transaction on the replica; `BEGIN READ WRITE`, or the setting off, on the primary.
//!
//! Every read that checks a setting returns `current_setting('cluster_name')` in the same
//! statement, so the value is known to come from the server it names.

use pgrepl_tests::roles::{APP, DATABASE, SUPERUSER};
use pgrepl_tests::suite::{
    bounded, caught_up, code_of, eventually, node_of_read, on_primary, replicated, shared_proxy,
    simple_first, text_rows, unique, PRIMARY, REPLICA,
};
use pgrepl_tests::{conninfo, Cluster};
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};
use tokio_postgres::{Client, Config, NoTls};

/// How long the proxy may take to notice that the state pinning a session is gone.
const RELEASE_WAIT: Duration = Duration::from_secs(2);

/// The columns of the last row `sql` returns as a simple query (NULL as ""); panics on an
/// error or no rows.
async fn row(client: &Client, sql: &str) -> Vec<String> {
    let messages = client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {}", failure(&e)));
    let rows = text_rows(&messages);
    let last = rows
        .last()
        .unwrap_or_else(|| panic!("{sql}: returned no rows"));
    last.iter().map(|c| c.clone().unwrap_or_default()).collect()
}

/// Where a plain read runs, and the value of the setting `name` on that server.
async fn setting(client: &Client, name: &str) -> (String, String) {
    let r = row(
        client,
        &format!("SELECT current_setting('cluster_name'), current_setting('{name}')"),
    )
    .await;
    (r[0].clone(), r[1].clone())
}

/// `(node, value)`, to compare with [`setting`].
fn on(node: &str, value: impl Into<String>) -> (String, String) {
    (node.to_owned(), value.into())
}

/// Runs `sql` (one or more statements) through the simple protocol; panics on an error.
async fn run(client: &Client, sql: &str) {
    client
        .batch_execute(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {}", failure(&e)));
}

/// An error and its SQLSTATE, for failure messages.
fn failure(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} {}: {}", db.severity(), db.code().code(), db.message()),
        None => format!("{e:?}"),
    }
}

/// Two schemas `S_a` and `S_b`, each with a table `t (v text)` holding 'a' and 'b', created
/// on the primary and replayed on the replica; returns `S`.
async fn two_schemas(prefix: &str) -> String {
    replicated(prefix, |s| {
        format!(
            "CREATE SCHEMA {s}_a; CREATE TABLE {s}_a.t (v text); INSERT INTO {s}_a.t VALUES ('a');\n\
             CREATE SCHEMA {s}_b; CREATE TABLE {s}_b.t (v text); INSERT INTO {s}_b.t VALUES ('b');\n"
        )
    })
    .await
}

/// Where `SELECT v FROM t` runs, and which schema's `t` it read ('a' or 'b').
async fn which_t(client: &Client) -> (String, String) {
    let r = row(client, "SELECT current_setting('cluster_name'), v FROM t").await;
    (r[0].clone(), r[1].clone())
}

/// A fresh NOLOGIN role granted to `app` (so `app` may `SET ROLE` to it), created by the
/// superuser on the primary and replayed on the replica.
async fn role_for_app(prefix: &str) -> String {
    let role = unique(prefix);
    let sql = format!(
        "CREATE ROLE {role} NOLOGIN;\nGRANT {role} TO {};\n",
        APP.name
    );
    tokio::task::spawn_blocking(move || {
        Cluster::shared()
            .primary
            .psql(SUPERUSER, DATABASE, &sql)
            .unwrap_or_else(|e| panic!("cannot create a role on the primary: {e:#}"))
    })
    .await
    .unwrap();
    caught_up().await;
    role
}

/// A table `T (id int)`, on the primary and replayed on the replica.
async fn table(prefix: &str) -> String {
    replicated(prefix, |t| format!("CREATE TABLE {t} (id int);\n")).await
}

/// The ParameterStatus values a client was told at startup that these tests look at.
const STARTUP_PARAMS: [&str; 2] = ["application_name", "default_transaction_read_only"];

/// A client of `app` through the shared proxy with `configure` applied to its connection
/// settings, and the [`STARTUP_PARAMS`] it was told at startup.
async fn client_with(
    configure: impl FnOnce(&mut Config),
) -> (Client, HashMap<&'static str, Option<String>>) {
    let mut config: Config = conninfo(shared_proxy(), APP.name, DATABASE)
        .parse()
        .unwrap();
    configure(&mut config);
    let (client, connection) = config
        .connect(NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect through the proxy: {e:?}"));
    let params = STARTUP_PARAMS
        .iter()
        .map(|&name| (name, connection.parameter(name).map(str::to_owned)))
        .collect();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    (client, params)
}

/// A plain client of `app` through the shared proxy.
async fn client() -> Client {
    client_with(|_| {}).await.0
}

/// An advisory lock key no other test of this process uses.
fn lock_key() -> i64 {
    static NEXT: AtomicI64 = AtomicI64::new(0);
    0x5e55_0000_0000 + i64::from(std::process::id()) * 1000 + NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Fails unless plain reads run on `node` now, and on the next two reads too (so a proxy that
/// learns of a change one round trip late is held to its final answer).
async fn reads_stay_on(client: &Client, node: &str, why: &str) {
    for i in 0..3 {
        assert_eq!(node_of_read(client).await, node, "read #{i} {why}");
    }
}

/// Fails unless plain reads run on the replica within [`RELEASE_WAIT`] (the proxy may learn
/// that the session's primary-only state is gone a round trip late), and then stay there.
async fn reads_return_to_the_replica(client: &Client, why: &str) {
    eventually(
        &format!("reads to return to {REPLICA} {why}"),
        RELEASE_WAIT,
        || async move { node_of_read(client).await == REPLICA },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    reads_stay_on(client, REPLICA, why).await;
}

// ---------------------------------------------------------------------------------------
// Rule 2: session state follows the session.
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_search_path_is_seen_by_reads_on_the_replica_until_reset() {
    bounded(async {
        let s = two_schemas("ss_path").await;
        let client = client().await;
        // A read first, so the replica connection exists before the SET.
        let (node, default_path) = setting(&client, "search_path").await;
        assert_eq!(node, REPLICA);

        run(&client, &format!("SET search_path = {s}_b, public")).await;
        assert_eq!(which_t(&client).await, on(REPLICA, "b"));
        assert_eq!(
            setting(&client, "search_path").await,
            on(REPLICA, format!("{s}_b, public"))
        );

        run(&client, &format!("SET search_path TO {s}_a, public")).await;
        assert_eq!(which_t(&client).await, on(REPLICA, "a"));

        run(&client, "RESET search_path").await;
        assert_eq!(
            setting(&client, "search_path").await,
            on(REPLICA, default_path)
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_before_any_read_reaches_the_replica_connection_opened_later() {
    bounded(async {
        let s = two_schemas("ss_first").await;
        let client = client().await;
        run(&client, &format!("SET search_path = {s}_b, public")).await;
        assert_eq!(which_t(&client).await, on(REPLICA, "b"));
        assert_eq!(
            setting(&client, "search_path").await,
            on(REPLICA, format!("{s}_b, public"))
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_role_and_session_authorization_apply_to_reads_on_the_replica() {
    bounded(async {
        let role = role_for_app("ss_role").await;
        let client = client().await;
        let who = "SELECT current_setting('cluster_name'), current_user";
        assert_eq!(row(&client, who).await, [REPLICA, APP.name]);

        run(&client, &format!("SET ROLE {role}")).await;
        assert_eq!(row(&client, who).await, [REPLICA, role.as_str()]);

        run(&client, "RESET ROLE").await;
        assert_eq!(row(&client, who).await, [REPLICA, APP.name]);

        // RESET ALL leaves the role alone (in PostgreSQL `role` is not reset by RESET ALL).
        run(&client, &format!("SET ROLE {role}")).await;
        run(&client, "RESET ALL").await;
        assert_eq!(
            row(&client, who).await,
            [REPLICA, role.as_str()],
            "RESET ALL does not reset the role"
        );

        // SET SESSION AUTHORIZATION DEFAULT resets the role too.
        run(&client, "SET SESSION AUTHORIZATION DEFAULT").await;
        assert_eq!(row(&client, who).await, [REPLICA, APP.name]);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_time_zone_applies_to_reads_on_the_replica() {
    bounded(async {
        let client = client().await;
        let (node, default_zone) = setting(&client, "TimeZone").await;
        assert_eq!(node, REPLICA);
        assert_ne!(default_zone, "Asia/Tokyo", "the test needs another default");

        run(&client, "SET TIME ZONE 'Asia/Tokyo'").await;
        assert_eq!(
            setting(&client, "TimeZone").await,
            on(REPLICA, "Asia/Tokyo")
        );
        // Not just the setting: timestamps are rendered in it.
        assert_eq!(
            row(
                &client,
                "SELECT current_setting('cluster_name'), \
                 to_char(timestamptz '2020-01-01 00:00:00+00', 'HH24')"
            )
            .await,
            [REPLICA, "09"]
        );

        run(&client, "SET TIME ZONE LOCAL").await;
        assert_eq!(
            setting(&client, "TimeZone").await,
            on(REPLICA, default_zone)
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sets_in_transactions_are_replayed_only_when_committed_and_set_local_never() {
    bounded(async {
        let s = two_schemas("ss_tx").await;
        let client = client().await;
        let (_, default_path) = setting(&client, "search_path").await;
        let a = format!("{s}_a, public");
        let b = format!("{s}_b, public");

        // Rolled back.
        run(&client, "BEGIN").await;
        run(&client, &format!("SET search_path = {a}")).await;
        assert_eq!(
            setting(&client, "search_path").await,
            on(PRIMARY, a.clone()),
            "in the transaction"
        );
        run(&client, "ROLLBACK").await;
        assert_eq!(
            setting(&client, "search_path").await,
            on(REPLICA, default_path.clone()),
            "after BEGIN; SET; ROLLBACK"
        );

        // SET LOCAL, committed.
        run(&client, "BEGIN").await;
        run(&client, &format!("SET LOCAL search_path = {a}")).await;
        run(&client, "COMMIT").await;
        assert_eq!(
            setting(&client, "search_path").await,
            on(REPLICA, default_path.clone()),
            "after BEGIN; SET LOCAL; COMMIT"
        );

        // Committed.
        run(&client, "BEGIN").await;
        run(&client, &format!("SET search_path = {b}")).await;
        run(&client, "COMMIT").await;
        assert_eq!(
            setting(&client, "search_path").await,
            on(REPLICA, b.clone()),
            "after BEGIN; SET; COMMIT"
        );
        assert_eq!(which_t(&client).await, on(REPLICA, "b"));

        // SET LOCAL over a committed SET leaves the committed value.
        run(&client, "BEGIN").await;
        run(&client, &format!("SET LOCAL search_path = {a}")).await;
        run(&client, "COMMIT").await;
        assert_eq!(
            setting(&client, "search_path").await,
            on(REPLICA, b.clone()),
            "after a SET LOCAL over a committed SET"
        );

        // A COMMIT of a failed transaction is a rollback (the server answers ROLLBACK).
        run(&client, "BEGIN").await;
        run(&client, &format!("SET search_path = {a}")).await;
        let err = client.simple_query("SELECT 1/0").await.unwrap_err();
        assert_eq!(code_of(&err), "22012");
        run(&client, "COMMIT").await;
        assert_eq!(
            setting(&client, "search_path").await,
            on(REPLICA, b.clone()),
            "after BEGIN; SET; error; COMMIT (which rolls back)"
        );
    })
    .await
}

/// A multi-statement simple query is one implicit transaction: an error in it undoes the SETs
/// before it, although each of them answered `SET`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_in_a_failed_multi_statement_query_is_not_replayed() {
    bounded(async {
        let app = unique("ss_implicit");
        let (client, _) = client_with(|c| {
            c.application_name(&app);
        })
        .await;
        let err = client
            .simple_query("SET application_name = 'undone'; SELECT 1/0")
            .await
            .unwrap_err();
        assert_eq!(code_of(&err), "22012");
        assert_eq!(
            setting(&client, "application_name").await,
            on(REPLICA, app.clone())
        );
    })
    .await
}

/// `BEGIN; SET ...; COMMIT` sent as one simple query counts like the same statements sent one
/// by one; a rolled-back one does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_with_a_set_in_one_query_string_is_replayed_when_committed() {
    bounded(async {
        let s = two_schemas("ss_tx_string").await;
        let client = client().await;
        let (_, default_path) = setting(&client, "search_path").await;
        let b = format!("{s}_b, public");

        run(&client, &format!("BEGIN; SET search_path = {b}; ROLLBACK")).await;
        assert_eq!(
            setting(&client, "search_path").await,
            on(REPLICA, default_path),
            "after `BEGIN; SET; ROLLBACK` in one string"
        );

        let sql = format!("BEGIN; SET search_path = {b}; COMMIT");
        run(&client, &sql).await;
        let (node, value) = setting(&client, "search_path").await;
        assert_eq!(value, b, "read on {node} after `{sql}`");
        assert_eq!(
            node, REPLICA,
            "after `{sql}`: reads should run on the replica, with the SET replayed"
        );
    })
    .await
}

/// Savepoints, statement by statement: a SET undone by ROLLBACK TO SAVEPOINT is undone in
/// PostgreSQL, so it is not replayed; one under a released savepoint commits with the
/// transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sets_under_savepoints_are_replayed_as_postgresql_keeps_them() {
    bounded(async {
        let s = two_schemas("ss_savepoint").await;
        let client = client().await;
        let a = format!("{s}_a, public");
        let b = format!("{s}_b, public");
        for sql in [
            "BEGIN".to_owned(),
            format!("SET search_path = {a}"),
            "SAVEPOINT p".to_owned(),
            format!("SET search_path = {b}"),
            "ROLLBACK TO SAVEPOINT p".to_owned(),
            "COMMIT".to_owned(),
        ] {
            run(&client, &sql).await;
        }
        let (node, value) = setting(&client, "search_path").await;
        assert_eq!(
            value, a,
            "read on {node} after ROLLBACK TO SAVEPOINT and COMMIT"
        );
        assert_eq!(
            node, REPLICA,
            "after ROLLBACK TO SAVEPOINT and COMMIT: reads should run on the replica, with the \
             SET before the savepoint replayed"
        );

        for sql in [
            "BEGIN".to_owned(),
            "SAVEPOINT p".to_owned(),
            format!("SET search_path = {b}"),
            "RELEASE SAVEPOINT p".to_owned(),
            "COMMIT".to_owned(),
        ] {
            run(&client, &sql).await;
        }
        assert_eq!(
            setting(&client, "search_path").await,
            on(REPLICA, b),
            "after RELEASE SAVEPOINT and COMMIT"
        );
    })
    .await
}

/// The same in one simple query. Wherever the next read runs, it must see what PostgreSQL
/// kept: the SET before the savepoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_savepoint_rollback_in_one_query_string_keeps_the_set_before_it() {
    bounded(async {
        let s = two_schemas("ss_savepoint_string").await;
        let client = client().await;
        let a = format!("{s}_a, public");
        let b = format!("{s}_b, public");
        let sql = format!(
            "BEGIN; SET search_path = {a}; SAVEPOINT p; SET search_path = {b}; \
             ROLLBACK TO SAVEPOINT p; COMMIT"
        );
        run(&client, &sql).await;
        let (node, value) = setting(&client, "search_path").await;
        assert_eq!(value, a, "read on {node} after `{sql}`");

        let sql = format!("BEGIN; SAVEPOINT p; SET search_path = {b}; RELEASE SAVEPOINT p; COMMIT");
        run(&client, &sql).await;
        let (node, value) = setting(&client, "search_path").await;
        assert_eq!(value, b, "read on {node} after `{sql}`");
    })
    .await
}

/// `set_config(name, value, false)` changes the session's setting as SET does (its own rule
/// sends it to the primary); wherever the session's later reads run, they must see it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_setting_changed_with_set_config_is_seen_by_later_reads() {
    bounded(async {
        let s = two_schemas("ss_set_config").await;
        let client = client().await;
        let b = format!("{s}_b, public");
        assert_eq!(
            row(
                &client,
                &format!(
                    "SELECT current_setting('cluster_name'), \
                     set_config('search_path', '{b}', false)"
                )
            )
            .await,
            [PRIMARY, b.as_str()]
        );
        let (node, value) = setting(&client, "search_path").await;
        assert_eq!(value, b, "read on {node} after set_config");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_the_primary_refuses_is_not_replayed() {
    bounded(async {
        let client = client().await;
        let (_, default_work_mem) = setting(&client, "work_mem").await;
        let err = client
            .simple_query("SET work_mem = 'lots'")
            .await
            .unwrap_err();
        assert_eq!(code_of(&err), "22023");
        // Replaying it would make this read fail on the replica.
        assert_eq!(
            setting(&client, "work_mem").await,
            on(REPLICA, default_work_mem)
        );
        run(&client, "SET work_mem = '7MB'").await;
        assert_eq!(setting(&client, "work_mem").await, on(REPLICA, "7MB"));
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sets_are_replayed_in_order_and_reset_all_returns_to_the_startup_values() {
    bounded(async {
        let s = two_schemas("ss_order").await;
        let app = unique("ss_start");
        let (client, _) = client_with(|c| {
            c.application_name(&app);
        })
        .await;
        let (node, default_path) = setting(&client, "search_path").await;
        assert_eq!(node, REPLICA);
        assert_eq!(
            setting(&client, "application_name").await,
            on(REPLICA, app.clone())
        );

        run(&client, "SET application_name = 'a'").await;
        run(&client, "SET application_name = 'b'").await;
        assert_eq!(setting(&client, "application_name").await, on(REPLICA, "b"));

        // Several in one simple query.
        run(
            &client,
            &format!(
                "SET application_name = 'c'; SET search_path = {s}_b, public; \
                 SET application_name = 'd'"
            ),
        )
        .await;
        assert_eq!(setting(&client, "application_name").await, on(REPLICA, "d"));
        assert_eq!(which_t(&client).await, on(REPLICA, "b"));

        run(&client, "RESET ALL").await;
        assert_eq!(
            setting(&client, "application_name").await,
            on(REPLICA, app.clone()),
            "RESET ALL returns to the startup application_name"
        );
        assert_eq!(
            setting(&client, "search_path").await,
            on(REPLICA, default_path)
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_protocol_sets_are_replayed_like_simple_ones() {
    bounded(async {
        let s = two_schemas("ss_ext").await;
        let mut client = client().await;
        let read = "SELECT current_setting('cluster_name'), current_setting('search_path')";
        // Prepared before the SET, executed after it.
        let early = client.prepare(read).await.unwrap();
        let r = client.query_one(&early, &[]).await.unwrap();
        assert_eq!(r.get::<_, String>(0), REPLICA);
        let default_path: String = r.get(1);

        client
            .execute(&format!("SET search_path = {s}_b, public"), &[])
            .await
            .unwrap();
        let expected = (REPLICA.to_owned(), format!("{s}_b, public"));
        for (what, r) in [
            ("a new prepared read", client.query_one(read, &[]).await),
            (
                "a read prepared before the SET",
                client.query_one(&early, &[]).await,
            ),
        ] {
            let r = r.unwrap();
            assert_eq!(
                (r.get::<_, String>(0), r.get::<_, String>(1)),
                expected,
                "{what}"
            );
        }
        let r = client
            .query_one("SELECT current_setting('cluster_name'), v FROM t", &[])
            .await
            .unwrap();
        assert_eq!(
            (r.get::<_, String>(0), r.get::<_, String>(1)),
            on(REPLICA, "b")
        );

        client.execute("RESET search_path", &[]).await.unwrap();
        let r = client.query_one(read, &[]).await.unwrap();
        assert_eq!(
            (r.get::<_, String>(0), r.get::<_, String>(1)),
            on(REPLICA, default_path.clone())
        );

        // Pipelined: the read is sent before the SET is answered.
        let set = client
            .prepare(&format!("SET search_path = {s}_b, public"))
            .await
            .unwrap();
        let (done, r) = tokio::join!(client.execute(&set, &[]), client.query_one(read, &[]));
        done.unwrap();
        let r = r.unwrap();
        assert_eq!(
            (r.get::<_, String>(0), r.get::<_, String>(1)),
            expected,
            "a read pipelined behind the SET"
        );
        let (done, r) = tokio::join!(
            client.simple_query("RESET search_path"),
            client.simple_query(read)
        );
        done.unwrap();
        assert_eq!(
            text_rows(&r.unwrap()),
            [[Some(REPLICA.to_owned()), Some(default_path.clone())]],
            "a simple query pipelined behind a simple RESET"
        );

        // In a transaction of the transaction API: committed, then dropped (rolled back).
        let tx = client.transaction().await.unwrap();
        tx.execute(&format!("SET search_path = {s}_a, public"), &[])
            .await
            .unwrap();
        tx.commit().await.unwrap();
        assert_eq!(which_t(&client).await, on(REPLICA, "a"));
        {
            let tx = client.transaction().await.unwrap();
            tx.execute(&format!("SET search_path = {s}_b, public"), &[])
                .await
                .unwrap();
        }
        assert_eq!(which_t(&client).await, on(REPLICA, "a"));
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_options_and_application_name_apply_on_the_replica() {
    bounded(async {
        let s = two_schemas("ss_startup").await;
        let startup_path = format!("{s}_b,public");
        let (client, params) = client_with(|c| {
            c.options(format!("-c search_path={startup_path}"))
                .application_name("start_app");
        })
        .await;
        assert_eq!(
            params["application_name"].as_deref(),
            Some("start_app"),
            "ParameterStatus application_name at startup"
        );
        assert_eq!(
            row(
                &client,
                "SELECT current_setting('cluster_name'), current_setting('search_path'), \
                 current_setting('application_name')"
            )
            .await,
            [REPLICA, startup_path.as_str(), "start_app"]
        );
        assert_eq!(which_t(&client).await, on(REPLICA, "b"));

        // RESET returns to the startup value, on the replica as on the primary.
        run(&client, &format!("SET search_path = {s}_a, public")).await;
        assert_eq!(which_t(&client).await, on(REPLICA, "a"));
        run(&client, "RESET search_path").await;
        assert_eq!(
            setting(&client, "search_path").await,
            on(REPLICA, startup_path)
        );
        assert_eq!(which_t(&client).await, on(REPLICA, "b"));
    })
    .await
}

/// A client that changed its settings leaves; the clients after it, which may get its backend
/// connections from the pool, see none of them, on the replica or on the primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooled_connections_never_carry_a_clients_settings_to_the_next() {
    bounded(async {
        let s = two_schemas("ss_pool").await;
        let role = role_for_app("ss_pool_role").await;
        let leak = unique("ss_leak");
        let leaked_path = format!("{s}_b, public");
        let state = "SELECT current_setting('cluster_name'), current_setting('search_path'), \
                     current_setting('application_name'), current_user::text, \
                     pg_backend_pid()::text";
        let leaked_pid = {
            let a = client().await;
            run(
                &a,
                &format!(
                    "SET search_path = {leaked_path}; SET application_name = '{leak}'; \
                     SET ROLE {role}"
                ),
            )
            .await;
            let r = row(&a, state).await;
            assert_eq!(
                r[..4],
                [REPLICA, leaked_path.as_str(), leak.as_str(), role.as_str()],
                "client A's own read on the replica"
            );
            r[4].clone()
        };

        // New clients until one gets A's replica connection back (most likely the first: the
        // pool hands out the connection returned last), at least four, for at most 2 s.
        let start = Instant::now();
        let mut reused = false;
        let mut checked = 0;
        while checked < 4 || (!reused && start.elapsed() < RELEASE_WAIT) {
            let (b, params) = client_with(|_| {}).await;
            assert_ne!(
                params["application_name"].as_deref(),
                Some(leak.as_str()),
                "client #{checked} was told A's application_name at startup"
            );
            let r = row(&b, state).await;
            assert_eq!(r[0], REPLICA, "client #{checked}: {r:?}");
            assert!(
                r[1] != leaked_path && r[2] != leak && r[3] == APP.name,
                "client #{checked} sees client A's settings on the replica: {r:?}"
            );
            reused |= r[4] == leaked_pid;
            let r = row(&b, &format!("/* pgrepl:primary */ {state}")).await;
            assert_eq!(r[0], PRIMARY, "client #{checked}: {r:?}");
            assert!(
                r[1] != leaked_path && r[2] != leak && r[3] == APP.name,
                "client #{checked} sees client A's settings on the primary: {r:?}"
            );
            checked += 1;
        }
        eprintln!("{checked} clients checked; A's replica connection reused: {reused}");
    })
    .await
}

// ---------------------------------------------------------------------------------------
// Rule 3: pinned to the primary while the session holds state only the primary has.
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temporary_tables_pin_reads_to_the_primary_until_dropped_or_discarded() {
    bounded(async {
        let client = client().await;
        let tt = unique("ss_tt");
        assert_eq!(node_of_read(&client).await, REPLICA);

        run(&client, &format!("CREATE TEMP TABLE {tt} (a int)")).await;
        reads_stay_on(&client, PRIMARY, "with a temporary table").await;
        run(&client, &format!("INSERT INTO {tt} VALUES (1)")).await;
        assert_eq!(
            row(
                &client,
                &format!("SELECT current_setting('cluster_name'), a FROM {tt}")
            )
            .await,
            [PRIMARY, "1"]
        );
        run(&client, "DISCARD TEMP").await;
        reads_return_to_the_replica(&client, "after DISCARD TEMP").await;

        // Two tables: dropping one keeps the pin, dropping the last releases it.
        run(
            &client,
            &format!("CREATE TEMP TABLE {tt}_1 (a int); CREATE TEMP TABLE {tt}_2 (a int)"),
        )
        .await;
        reads_stay_on(&client, PRIMARY, "with two temporary tables").await;
        run(&client, &format!("DROP TABLE {tt}_1")).await;
        reads_stay_on(&client, PRIMARY, "with one of two temporary tables left").await;
        assert_eq!(
            row(
                &client,
                &format!("SELECT current_setting('cluster_name'), count(*) FROM {tt}_2")
            )
            .await,
            [PRIMARY, "0"]
        );
        run(&client, &format!("DROP TABLE {tt}_2")).await;
        reads_return_to_the_replica(&client, "after dropping the only temporary table").await;

        // Through the extended protocol.
        client
            .execute(&format!("CREATE TEMP TABLE {tt}_x (a int)"), &[])
            .await
            .unwrap();
        reads_stay_on(
            &client,
            PRIMARY,
            "with a temporary table made by a prepared statement",
        )
        .await;
        let rows = client
            .query(&format!("SELECT a FROM {tt}_x"), &[])
            .await
            .unwrap();
        assert!(rows.is_empty());
        client
            .execute(&format!("DROP TABLE {tt}_x"), &[])
            .await
            .unwrap();
        reads_return_to_the_replica(&client, "after a prepared DROP TABLE").await;

        // Made where the statement's text does not say so.
        run(
            &client,
            &format!("DO $$BEGIN CREATE TEMP TABLE {tt}_do (a int); END$$"),
        )
        .await;
        assert_eq!(
            row(
                &client,
                &format!("SELECT current_setting('cluster_name'), count(*) FROM {tt}_do")
            )
            .await,
            [PRIMARY, "0"],
            "a temporary table made in a DO block"
        );
        run(&client, "DISCARD TEMP").await;
        reads_return_to_the_replica(&client, "after DISCARD TEMP").await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_pins_reads_to_the_primary_until_unlisten() {
    bounded(async {
        let client = client().await;
        let ch = unique("ss_ch");
        assert_eq!(node_of_read(&client).await, REPLICA);

        run(&client, &format!("LISTEN {ch}")).await;
        reads_stay_on(&client, PRIMARY, "while listening").await;
        run(&client, "UNLISTEN *").await;
        reads_return_to_the_replica(&client, "after UNLISTEN *").await;

        run(&client, &format!("LISTEN {ch}_1; LISTEN {ch}_2")).await;
        reads_stay_on(&client, PRIMARY, "listening on two channels").await;
        run(&client, &format!("UNLISTEN {ch}_1")).await;
        reads_stay_on(&client, PRIMARY, "still listening on one channel").await;
        run(&client, &format!("UNLISTEN {ch}_2")).await;
        reads_return_to_the_replica(&client, "after UNLISTEN of the only channel").await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_advisory_locks_pin_reads_to_the_primary_until_released() {
    bounded(async {
        let client = client().await;
        let (k1, k2, k3, k4) = (lock_key(), lock_key(), lock_key(), lock_key());
        assert_eq!(node_of_read(&client).await, REPLICA);

        // Taken twice, it is held until unlocked twice.
        run(&client, &format!("SELECT pg_advisory_lock({k1})")).await;
        reads_stay_on(&client, PRIMARY, "holding an advisory lock").await;
        run(&client, &format!("SELECT pg_advisory_lock({k1})")).await;
        let unlock = format!("SELECT current_setting('cluster_name'), pg_advisory_unlock({k1})");
        assert_eq!(row(&client, &unlock).await, [PRIMARY, "t"]);
        reads_stay_on(&client, PRIMARY, "holding the lock once more").await;
        assert_eq!(row(&client, &unlock).await, [PRIMARY, "t"]);
        reads_return_to_the_replica(&client, "after pg_advisory_unlock").await;

        // Shared and try locks, released all at once.
        run(&client, &format!("SELECT pg_advisory_lock_shared({k2})")).await;
        reads_stay_on(&client, PRIMARY, "holding a shared advisory lock").await;
        assert_eq!(
            simple_first(&client, &format!("SELECT pg_try_advisory_lock({k3})")).await,
            "t"
        );
        run(&client, "SELECT pg_advisory_unlock_all()").await;
        reads_return_to_the_replica(&client, "after pg_advisory_unlock_all()").await;

        // Through the extended protocol, with the key as a parameter.
        let k5 = lock_key();
        client
            .query_one("SELECT pg_advisory_lock($1)", &[&k5])
            .await
            .unwrap();
        reads_stay_on(&client, PRIMARY, "holding a lock taken by a prepared statement").await;
        let unlocked: bool = client
            .query_one("SELECT pg_advisory_unlock($1)", &[&k5])
            .await
            .unwrap()
            .get(0);
        assert!(unlocked, "the prepared unlock ran where the lock is");
        reads_return_to_the_replica(&client, "after a prepared pg_advisory_unlock").await;

        // A transaction-level lock ends with its transaction.
        run(&client, "BEGIN").await;
        run(&client, &format!("SELECT pg_advisory_xact_lock({k4})")).await;
        run(&client, "COMMIT").await;
        reads_return_to_the_replica(&client, "after COMMIT of a pg_advisory_xact_lock").await;
        assert_eq!(
            on_primary(&format!(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' \
                 AND objsubid = 1 AND (classid::int8 << 32 | objid::int8) IN ({k1}, {k2}, {k3}, {k4}, {k5})"
            )),
            "0",
            "locks left on the primary"
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_prepared_statements_pin_reads_to_the_primary_until_deallocated() {
    bounded(async {
        let client = client().await;
        let p = unique("ss_p");
        assert_eq!(node_of_read(&client).await, REPLICA);

        run(
            &client,
            &format!("PREPARE {p} AS SELECT current_setting('cluster_name')"),
        )
        .await;
        reads_stay_on(&client, PRIMARY, "with a prepared statement").await;
        assert_eq!(
            simple_first(&client, &format!("EXECUTE {p}")).await,
            PRIMARY
        );
        run(&client, &format!("DEALLOCATE {p}")).await;
        reads_return_to_the_replica(&client, "after DEALLOCATE").await;

        run(
            &client,
            &format!("PREPARE {p}_1 AS SELECT 1; PREPARE {p}_2 AS SELECT 2"),
        )
        .await;
        run(&client, &format!("DEALLOCATE {p}_1")).await;
        reads_stay_on(&client, PRIMARY, "with one of two prepared statements left").await;
        run(&client, "DEALLOCATE ALL").await;
        reads_return_to_the_replica(&client, "after DEALLOCATE ALL").await;

        // Protocol-level prepared statements are the proxy's to replay: they do not pin.
        let stmt = client
            .prepare("SELECT current_setting('cluster_name')")
            .await
            .unwrap();
        let node: String = client.query_one(&stmt, &[]).await.unwrap().get(0);
        assert_eq!(node, REPLICA);
        reads_stay_on(&client, REPLICA, "with a protocol-level prepared statement").await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_hold_cursors_pin_reads_to_the_primary_until_closed() {
    bounded(async {
        let client = client().await;
        let c = unique("ss_cur");
        assert_eq!(node_of_read(&client).await, REPLICA);

        run(
            &client,
            &format!(
                "BEGIN; DECLARE {c} CURSOR WITH HOLD FOR SELECT generate_series(1, 3); COMMIT"
            ),
        )
        .await;
        reads_stay_on(&client, PRIMARY, "with a WITH HOLD cursor").await;
        assert_eq!(
            simple_first(&client, &format!("FETCH 1 FROM {c}")).await,
            "1"
        );
        assert_eq!(
            simple_first(&client, &format!("FETCH 1 FROM {c}")).await,
            "2"
        );
        run(&client, &format!("CLOSE {c}")).await;
        reads_return_to_the_replica(&client, "after CLOSE").await;

        run(&client, "BEGIN").await;
        run(
            &client,
            &format!("DECLARE {c}_1 CURSOR WITH HOLD FOR SELECT 1"),
        )
        .await;
        run(
            &client,
            &format!("DECLARE {c}_2 CURSOR WITH HOLD FOR SELECT 2"),
        )
        .await;
        run(&client, "COMMIT").await;
        reads_stay_on(&client, PRIMARY, "with two WITH HOLD cursors").await;
        run(&client, "CLOSE ALL").await;
        reads_return_to_the_replica(&client, "after CLOSE ALL").await;
    })
    .await
}

/// State that ends with its transaction, or never took effect because the transaction rolled
/// back, leaves nothing behind on the primary, so it does not keep reads there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_that_ends_with_its_transaction_does_not_pin() {
    bounded(async {
        let client = client().await;
        let name = unique("ss_txstate");
        for (what, sql) in [
            (
                "a temporary table created in a rolled-back transaction",
                format!("BEGIN; CREATE TEMP TABLE {name}_r (a int); ROLLBACK"),
            ),
            (
                "a temporary table ON COMMIT DROP",
                format!("BEGIN; CREATE TEMP TABLE {name}_d (a int) ON COMMIT DROP; COMMIT"),
            ),
            (
                "a LISTEN in a rolled-back transaction",
                format!("BEGIN; LISTEN {name}_ch; ROLLBACK"),
            ),
            (
                "a cursor without hold",
                format!("BEGIN; DECLARE {name}_c CURSOR FOR SELECT 1; COMMIT"),
            ),
        ] {
            run(&client, &sql).await;
            reads_return_to_the_replica(&client, &format!("after {what}")).await;
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discard_all_unpins_everything_and_resets_settings_on_the_replica() {
    bounded(async {
        let s = two_schemas("ss_discard").await;
        let client = client().await;
        let (node, default_path) = setting(&client, "search_path").await;
        assert_eq!(node, REPLICA);
        let name = unique("ss_all");
        let key = lock_key();
        run(&client, &format!("SET search_path = {s}_b, public")).await;
        run(
            &client,
            &format!(
                "CREATE TEMP TABLE {name}_t (a int); LISTEN {name}_ch; \
                 SELECT pg_advisory_lock({key}); PREPARE {name}_p AS SELECT 1"
            ),
        )
        .await;
        run(
            &client,
            &format!("BEGIN; DECLARE {name}_c CURSOR WITH HOLD FOR SELECT 1; COMMIT"),
        )
        .await;
        reads_stay_on(&client, PRIMARY, "with every kind of primary-only state").await;

        run(&client, "DISCARD ALL").await;
        reads_return_to_the_replica(&client, "after DISCARD ALL").await;
        assert_eq!(
            setting(&client, "search_path").await,
            on(REPLICA, default_path),
            "DISCARD ALL resets the session's settings on the replica too"
        );
    })
    .await
}

// ---------------------------------------------------------------------------------------
// Rule 4: default_transaction_read_only sessions open plain transactions on the replica.
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_default_transaction_read_only_sends_plain_begin_to_the_replica() {
    bounded(async {
        let t = table("ss_ro").await;
        let client = client().await;
        let insert =
            format!("INSERT INTO {t} VALUES (1) RETURNING current_setting('cluster_name')");

        // Rolled back, it changes nothing.
        run(
            &client,
            "BEGIN; SET default_transaction_read_only = on; ROLLBACK",
        )
        .await;
        run(&client, "BEGIN").await;
        reads_stay_on(&client, PRIMARY, "in a BEGIN after the SET rolled back").await;
        run(&client, "COMMIT").await;

        run(&client, "SET default_transaction_read_only = on").await;
        assert_eq!(
            simple_first(
                &client,
                "BEGIN; SELECT current_setting('cluster_name'); COMMIT"
            )
            .await,
            REPLICA
        );
        run(&client, "BEGIN").await;
        reads_stay_on(&client, REPLICA, "in a plain BEGIN of a read-only session").await;
        let err = client.simple_query(&insert).await.unwrap_err();
        assert_eq!(code_of(&err), "25006", "INSERT in the transaction: {err}");
        run(&client, "ROLLBACK").await;

        // The transaction API's BEGIN too.
        {
            let mut client = client;
            let tx = client.transaction().await.unwrap();
            let node: String = tx
                .query_one("SELECT current_setting('cluster_name')", &[])
                .await
                .unwrap()
                .get(0);
            assert_eq!(node, REPLICA, "transaction API in a read-only session");
            tx.commit().await.unwrap();

            // Outside a transaction, a write fails as PostgreSQL itself fails it.
            let err = client.simple_query(&insert).await.unwrap_err();
            assert_eq!(code_of(&err), "25006", "autocommit INSERT: {err}");

            // BEGIN READ WRITE always opens on the primary, and may write.
            run(&client, "BEGIN READ WRITE").await;
            reads_stay_on(&client, PRIMARY, "in BEGIN READ WRITE").await;
            assert_eq!(simple_first(&client, &insert).await, PRIMARY);
            run(&client, "COMMIT").await;

            run(&client, "SET default_transaction_read_only = off").await;
            run(&client, "BEGIN").await;
            reads_stay_on(&client, PRIMARY, "in a BEGIN after the setting is off").await;
            run(&client, "COMMIT").await;
        }
        assert_eq!(on_primary(&format!("SELECT count(*) FROM {t}")), "1");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_started_read_only_opens_plain_transactions_on_the_replica() {
    bounded(async {
        let t = table("ss_ro_start").await;
        let (client, params) = client_with(|c| {
            c.options("-c default_transaction_read_only=on");
        })
        .await;
        assert_eq!(
            params["default_transaction_read_only"].as_deref(),
            Some("on"),
            "ParameterStatus default_transaction_read_only at startup"
        );
        let insert =
            format!("INSERT INTO {t} VALUES (1) RETURNING current_setting('cluster_name')");

        run(&client, "BEGIN").await;
        reads_stay_on(
            &client,
            REPLICA,
            "in a plain BEGIN of a session started read-only",
        )
        .await;
        let err = client.simple_query(&insert).await.unwrap_err();
        assert_eq!(code_of(&err), "25006", "INSERT in the transaction: {err}");
        run(&client, "ROLLBACK").await;
        let err = client.simple_query(&insert).await.unwrap_err();
        assert_eq!(code_of(&err), "25006", "autocommit INSERT: {err}");

        run(&client, "BEGIN READ WRITE").await;
        reads_stay_on(&client, PRIMARY, "in BEGIN READ WRITE").await;
        run(&client, "COMMIT").await;

        run(&client, "SET default_transaction_read_only = off").await;
        run(&client, "BEGIN").await;
        reads_stay_on(&client, PRIMARY, "in a BEGIN after the setting is off").await;
        assert_eq!(simple_first(&client, &insert).await, PRIMARY);
        run(&client, "COMMIT").await;

        // RESET returns to the startup value: read-only again.
        run(&client, "RESET default_transaction_read_only").await;
        run(&client, "BEGIN").await;
        reads_stay_on(
            &client,
            REPLICA,
            "in a BEGIN after RESET to the startup value",
        )
        .await;
        run(&client, "COMMIT").await;
    })
    .await
}

/// `SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY` is another spelling of
/// `SET default_transaction_read_only = on` (the server reports the same parameter).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_characteristics_read_only_counts_as_default_transaction_read_only() {
    bounded(async {
        let client = client().await;
        run(
            &client,
            "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
        )
        .await;
        run(&client, "BEGIN").await;
        reads_stay_on(&client, REPLICA, "in a plain BEGIN").await;
        run(&client, "COMMIT").await;
        run(
            &client,
            "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
        )
        .await;
        run(&client, "BEGIN").await;
        reads_stay_on(&client, PRIMARY, "in a plain BEGIN after READ WRITE").await;
        run(&client, "COMMIT").await;
    })
    .await
}

/// A rolled-back transaction sent as one string is replayed as a query of its own: in one
/// multi-statement query with the settings before it, its BEGIN would take them into its
/// transaction and its ROLLBACK undo them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolled_back_transaction_string_does_not_undo_earlier_settings_on_the_replica() {
    bounded(async {
        let s = two_schemas("ss_rbstr").await;
        let client = client().await;
        run(&client, &format!("SET search_path = {s}_a, public")).await;
        run(
            &client,
            &format!("BEGIN; SET search_path = {s}_b, public; ROLLBACK"),
        )
        .await;
        // A new replica connection gets the whole log replayed.
        assert_eq!(which_t(&client).await, on(REPLICA, "a"));
    })
    .await
}

/// Rolling back a DROP of the session's temporary table brings the table back: the session
/// stays pinned (the probe's "no" from inside the transaction does not count).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolled_back_drop_of_a_temporary_table_keeps_the_pin() {
    bounded(async {
        let client = client().await;
        let tt = unique("ss_rbdrop");
        run(&client, &format!("CREATE TEMP TABLE {tt} (a int)")).await;
        reads_stay_on(&client, PRIMARY, "with a temporary table").await;
        run(&client, "BEGIN").await;
        run(&client, &format!("DROP TABLE {tt}")).await;
        run(&client, "ROLLBACK").await;
        let rows = row(
            &client,
            &format!("SELECT current_setting('cluster_name'), count(*) FROM {tt}"),
        )
        .await;
        assert_eq!(rows, [PRIMARY.to_string(), "0".to_string()]);
    })
    .await
}

/// Notifications the server delivers while it answers the proxy's own question after a
/// releasing statement reach the client: none is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_during_the_proxys_own_queries_reach_the_client() {
    bounded(async {
        let (listener, mut rx) =
            pgrepl_tests::suite::connect_with_messages(shared_proxy(), APP.name, DATABASE)
                .await
                .unwrap();
        let notifier = client().await;
        let channel = unique("ss_notify");
        run(&listener, &format!("LISTEN {channel}")).await;
        let sent = 200;
        let sender = {
            let channel = channel.clone();
            tokio::spawn(async move {
                for i in 0..sent {
                    notifier
                        .batch_execute(&format!("NOTIFY {channel}, '{i}'"))
                        .await
                        .unwrap();
                }
            })
        };
        // Each DEALLOCATE ALL is a releasing statement: a probe follows it.
        while !sender.is_finished() {
            run(&listener, "DEALLOCATE ALL").await;
        }
        sender.await.unwrap();
        run(&listener, "SELECT 1").await;
        let mut got = 0;
        while let Ok(Some(event)) =
            tokio::time::timeout(Duration::from_millis(500), rx.recv()).await
        {
            if let Ok(tokio_postgres::AsyncMessage::Notification(_)) = event {
                got += 1;
            }
        }
        assert_eq!(got, sent, "notifications delivered to the listener");
    })
    .await
}
