//! Routing through the simple query protocol (tokio-postgres `simple_query`
//! and psql): reads on the replica `db02`, writes and everything that must
//! not run on a standby on the primary `db01`, transactions pinned to the
//! primary until they end. Each statement shows where it ran by returning
//! `current_setting('cluster_name')` as its first column where possible.

use pgrepl_tests::suite::{
    self, bounded, caught_up, client, code_of, last_first, node_of_read, on_primary, psql_script,
    replicated, simple_first, text_rows, PRIMARY, REPLICA,
};
use pgrepl_tests::Cluster;
use tokio_postgres::Client;

/// A table `T (id int primary key, note text)` holding (1, 'one'), a view
/// `T_where` showing where it is read, and a sequence `T_seq`, created on
/// the primary and already replayed on the replica.
async fn fixture(prefix: &str) -> String {
    replicated(prefix, |t| {
        format!(
            "CREATE TABLE {t} (id int PRIMARY KEY, note text);\n\
             INSERT INTO {t} VALUES (1, 'one');\n\
             CREATE VIEW {t}_where AS SELECT current_setting('cluster_name') AS node;\n\
             CREATE SEQUENCE {t}_seq;\n"
        )
    })
    .await
}

/// Runs each statement as a simple query and fails listing every one that
/// did not run where expected (or failed).
async fn expect_nodes(client: &Client, cases: &[(String, &str)]) {
    let cases = cases.iter().map(|(sql, node)| (sql.as_str(), *node, ()));
    suite::expect_nodes(cases, |sql, ()| async move {
        client.simple_query(sql).await.map(|m| last_first(&m))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_run_on_the_replica() {
    bounded(async {
        let t = fixture("rt_reads").await;
        let client = client().await;
        expect_nodes(
            &client,
            &[
                ("SELECT current_setting('cluster_name')".into(), REPLICA),
                (
                    format!("SELECT current_setting('cluster_name'), note FROM {t} WHERE id = 1"),
                    REPLICA,
                ),
                ("VALUES (current_setting('cluster_name'))".into(), REPLICA),
                (format!("TABLE {t}_where"), REPLICA),
                ("SHOW cluster_name".into(), REPLICA),
                (
                    "SELECT 1; SELECT current_setting('cluster_name')".into(),
                    REPLICA,
                ),
            ],
        )
        .await;
        let rows = text_rows(
            &client
                .simple_query(&format!("SELECT id, note FROM {t}"))
                .await
                .unwrap(),
        );
        assert_eq!(rows, vec![vec![Some("1".into()), Some("one".into())]]);
    })
    .await
}

/// EXPLAIN shows no server name, but the planner estimates
/// `generate_series(1, N)` at N rows, and N = the port of the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_runs_on_the_replica_and_explain_analyze_on_the_primary() {
    bounded(async {
        let cluster = Cluster::shared();
        let client = client().await;
        let plan = |messages: Vec<tokio_postgres::SimpleQueryMessage>| {
            text_rows(&messages)
                .into_iter()
                .map(|r| r[0].clone().unwrap_or_default())
                .collect::<Vec<_>>()
                .join("\n")
        };
        let explain = plan(
            client
                .simple_query("EXPLAIN SELECT * FROM generate_series(1, current_setting('port')::int)")
                .await
                .unwrap(),
        );
        assert!(
            explain.contains(&format!("rows={} ", cluster.replica.port)),
            "EXPLAIN did not run on the replica (port {}): {explain}",
            cluster.replica.port
        );
        let analyze = plan(
            client
                .simple_query(
                    "EXPLAIN ANALYZE SELECT * FROM generate_series(1, current_setting('port')::int)",
                )
                .await
                .unwrap(),
        );
        assert!(
            analyze.contains("actual") && analyze.contains(&format!("rows={} ", cluster.primary.port)),
            "EXPLAIN ANALYZE did not run on the primary (port {}): {analyze}",
            cluster.primary.port
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_changes_run_on_the_primary() {
    bounded(async {
        let t = fixture("rt_dml").await;
        let client = client().await;
        expect_nodes(
            &client,
            &[
                (
                    format!("INSERT INTO {t} VALUES (2, 'two') RETURNING current_setting('cluster_name')"),
                    PRIMARY,
                ),
                (
                    format!(
                        "UPDATE {t} SET note = 'uno' WHERE id = 1 RETURNING current_setting('cluster_name')"
                    ),
                    PRIMARY,
                ),
                (
                    format!("DELETE FROM {t} WHERE id = 2 RETURNING current_setting('cluster_name')"),
                    PRIMARY,
                ),
                (
                    format!(
                        "WITH x AS (INSERT INTO {t} VALUES (3, 'three') RETURNING *) \
                         SELECT current_setting('cluster_name') FROM x"
                    ),
                    PRIMARY,
                ),
            ],
        )
        .await;
        assert_eq!(
            on_primary(&format!("SELECT id, note FROM {t} ORDER BY id")),
            "1|uno\n3|three"
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ddl_and_select_into_run_on_the_primary() {
    bounded(async {
        let t = fixture("rt_ddl").await;
        let client = client().await;
        client
            .simple_query(&format!("CREATE TABLE {t}_new (v int)"))
            .await
            .expect("CREATE TABLE through the proxy");
        client
            .simple_query(&format!("ALTER TABLE {t}_new ADD COLUMN w text"))
            .await
            .expect("ALTER TABLE through the proxy");
        client
            .simple_query(&format!(
                "CREATE TABLE {t}_ctas AS SELECT current_setting('cluster_name') AS node"
            ))
            .await
            .expect("CREATE TABLE AS through the proxy");
        client
            .simple_query(&format!(
                "SELECT current_setting('cluster_name') AS node INTO {t}_into"
            ))
            .await
            .expect("SELECT INTO through the proxy");
        assert_eq!(
            on_primary(&format!(
                "SELECT string_agg(attname, ',' ORDER BY attnum) FROM pg_attribute \
                 WHERE attrelid = '{t}_new'::regclass AND attnum > 0"
            )),
            "v,w"
        );
        assert_eq!(on_primary(&format!("TABLE {t}_ctas")), PRIMARY);
        assert_eq!(on_primary(&format!("TABLE {t}_into")), PRIMARY);
        client
            .simple_query(&format!("DROP TABLE {t}_new"))
            .await
            .expect("DROP TABLE through the proxy");
        assert_eq!(
            on_primary(&format!("SELECT to_regclass('{t}_new') IS NULL")),
            "t"
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locking_and_state_changing_selects_run_on_the_primary() {
    bounded(async {
        let t = fixture("rt_funcs").await;
        let client = client().await;
        let key = 7_000_000 + std::process::id() as i64 % 1_000_000;
        expect_nodes(
            &client,
            &[
                (
                    format!(
                        "SELECT current_setting('cluster_name') FROM {t} WHERE id = 1 FOR UPDATE"
                    ),
                    PRIMARY,
                ),
                (
                    format!(
                        "SELECT current_setting('cluster_name') FROM {t} WHERE id = 1 FOR SHARE"
                    ),
                    PRIMARY,
                ),
                (
                    format!("SELECT current_setting('cluster_name'), nextval('{t}_seq')"),
                    PRIMARY,
                ),
                (
                    format!("SELECT current_setting('cluster_name'), pg_advisory_lock({key})"),
                    PRIMARY,
                ),
                (
                    "SELECT current_setting('cluster_name'), \
                     set_config('application_name', 'routing_test', false)"
                        .into(),
                    PRIMARY,
                ),
            ],
        )
        .await;
        // The unlock finds the lock, so it ran in the same primary session.
        let rows = text_rows(
            &client
                .simple_query(&format!(
                    "SELECT current_setting('cluster_name'), pg_advisory_unlock({key})"
                ))
                .await
                .unwrap(),
        );
        assert_eq!(
            rows,
            vec![vec![Some(PRIMARY.into()), Some("t".into())]],
            "pg_advisory_unlock did not find the lock on the primary"
        );
        assert_eq!(on_primary(&format!("SELECT last_value FROM {t}_seq")), "1");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unparseable_statements_run_on_the_primary() {
    bounded(async {
        let client = client().await;
        // PostgreSQL accepts ROWS FROM (...); sqlparser does not.
        expect_nodes(
            &client,
            &[(
                "SELECT current_setting('cluster_name') FROM ROWS FROM (generate_series(1, 1))"
                    .into(),
                PRIMARY,
            )],
        )
        .await;
        let err = client.simple_query("SELEC 1").await.unwrap_err();
        assert_eq!(code_of(&err), "42601");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_statement_strings_with_a_write_run_on_the_primary() {
    bounded(async {
        let t = fixture("rt_multi").await;
        let client = client().await;
        expect_nodes(
            &client,
            &[
                (
                    format!(
                        "INSERT INTO {t} VALUES (4, 'four'); SELECT current_setting('cluster_name')"
                    ),
                    PRIMARY,
                ),
                (
                    format!(
                        "SELECT current_setting('cluster_name'); UPDATE {t} SET note = 'FOUR' WHERE id = 4; \
                         SELECT current_setting('cluster_name')"
                    ),
                    PRIMARY,
                ),
                (
                    "SELECT 1; SELECT 2; SELECT current_setting('cluster_name')".into(),
                    REPLICA,
                ),
            ],
        )
        .await;
        assert_eq!(
            on_primary(&format!("SELECT note FROM {t} WHERE id = 4")),
            "FOUR"
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_stays_on_the_primary_until_commit() {
    bounded(async {
        let t = fixture("rt_tx").await;
        let client = client().await;
        assert_eq!(node_of_read(&client).await, REPLICA);
        client.simple_query("BEGIN").await.unwrap();
        for _ in 0..3 {
            assert_eq!(node_of_read(&client).await, PRIMARY);
        }
        assert_eq!(simple_first(&client, "SHOW cluster_name").await, PRIMARY);
        client
            .simple_query(&format!("INSERT INTO {t} VALUES (10, 'ten')"))
            .await
            .unwrap();
        // The transaction sees its own write: it reads on the primary.
        assert_eq!(
            simple_first(&client, &format!("SELECT note FROM {t} WHERE id = 10")).await,
            "ten"
        );
        client.simple_query("COMMIT").await.unwrap();
        assert_eq!(node_of_read(&client).await, REPLICA);
        caught_up().await;
        assert_eq!(
            simple_first(&client, &format!("SELECT note FROM {t} WHERE id = 10")).await,
            "ten"
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_returns_reads_to_the_replica() {
    bounded(async {
        let t = fixture("rt_rollback").await;
        let client = client().await;
        client.simple_query("BEGIN").await.unwrap();
        assert_eq!(node_of_read(&client).await, PRIMARY);
        client
            .simple_query(&format!("INSERT INTO {t} VALUES (11, 'eleven')"))
            .await
            .unwrap();
        client.simple_query("ROLLBACK").await.unwrap();
        assert_eq!(node_of_read(&client).await, REPLICA);
        assert_eq!(
            on_primary(&format!("SELECT count(*) FROM {t} WHERE id = 11")),
            "0"
        );
        // START TRANSACTION opens one too.
        client.simple_query("START TRANSACTION").await.unwrap();
        assert_eq!(node_of_read(&client).await, PRIMARY);
        client.simple_query("COMMIT").await.unwrap();
        assert_eq!(node_of_read(&client).await, REPLICA);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_api_runs_on_the_primary() {
    bounded(async {
        let t = fixture("rt_txapi").await;
        let mut client = client().await;
        let tx = client.transaction().await.unwrap();
        let node: String = tx
            .query_one("SELECT current_setting('cluster_name')", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(node, PRIMARY);
        tx.execute(&format!("INSERT INTO {t} VALUES ($1, 'twelve')"), &[&12i32])
            .await
            .unwrap();
        tx.commit().await.unwrap();
        assert_eq!(node_of_read(&client).await, REPLICA);
        assert_eq!(
            on_primary(&format!("SELECT note FROM {t} WHERE id = 12")),
            "twelve"
        );
    })
    .await
}

/// tokio-postgres sends ROLLBACK for a dropped transaction without waiting,
/// so the next read is pipelined behind it; it still runs after the
/// transaction ended and belongs on the replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_transaction_rolls_back_and_reads_return_to_the_replica() {
    bounded(async {
        let t = fixture("rt_txdrop").await;
        let mut client = client().await;
        {
            let tx = client.transaction().await.unwrap();
            tx.execute(&format!("INSERT INTO {t} VALUES (13, 'x')"), &[])
                .await
                .unwrap();
        }
        assert_eq!(node_of_read(&client).await, REPLICA);
        assert_eq!(
            on_primary(&format!("SELECT count(*) FROM {t} WHERE id = 13")),
            "0"
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborted_transaction_fails_until_rollback() {
    bounded(async {
        let t = fixture("rt_abort").await;
        let client = client().await;
        client.simple_query("BEGIN").await.unwrap();
        client
            .simple_query(&format!("INSERT INTO {t} VALUES (20, 'x')"))
            .await
            .unwrap();
        let err = client.simple_query("SELECT 1/0").await.unwrap_err();
        assert_eq!(code_of(&err), "22012");
        for sql in [
            "SELECT 1",
            "SELECT current_setting('cluster_name')",
            "SHOW cluster_name",
        ] {
            let err = client.simple_query(sql).await.unwrap_err();
            assert_eq!(code_of(&err), "25P02", "{sql} in an aborted transaction");
        }
        let err = client.query("SELECT $1::int", &[&1i32]).await.unwrap_err();
        assert_eq!(
            code_of(&err),
            "25P02",
            "extended query in an aborted transaction"
        );
        client.simple_query("ROLLBACK").await.unwrap();
        assert_eq!(node_of_read(&client).await, REPLICA);
        assert_eq!(
            simple_first(
                &client,
                &format!(
                    "INSERT INTO {t} VALUES (21, 'y') RETURNING current_setting('cluster_name')"
                )
            )
            .await,
            PRIMARY
        );
        assert_eq!(
            on_primary(&format!(
                "SELECT string_agg(id::text, ',') FROM {t} WHERE id >= 20"
            )),
            "21"
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_routes_statement_by_statement() {
    bounded(async {
        let t = fixture("rt_psql").await;
        let script = format!(
            "SELECT current_setting('cluster_name');\n\
             INSERT INTO {t} VALUES (30, 'thirty') RETURNING current_setting('cluster_name');\n\
             BEGIN;\n\
             SELECT current_setting('cluster_name');\n\
             SHOW cluster_name;\n\
             COMMIT;\n\
             SELECT current_setting('cluster_name');\n"
        );
        let run = psql_script(script).await;
        assert!(run.success, "psql failed: {}", run.stderr);
        let lines: Vec<&str> = run.stdout.lines().filter(|l| !l.is_empty()).collect();
        assert_eq!(lines, [REPLICA, PRIMARY, PRIMARY, PRIMARY, REPLICA]);
        assert_eq!(
            on_primary(&format!("SELECT note FROM {t} WHERE id = 30")),
            "thirty"
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_transactions_run_on_the_replica() {
    bounded(async {
        let t = fixture("rt_ro").await;
        let client = client().await;
        for begin in [
            "BEGIN READ ONLY",
            "START TRANSACTION READ ONLY",
            "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY",
        ] {
            client.simple_query(begin).await.unwrap();
            for _ in 0..2 {
                assert_eq!(node_of_read(&client).await, REPLICA, "{begin}");
            }
            let err = client
                .simple_query(&format!("INSERT INTO {t} VALUES (40, 'x')"))
                .await
                .expect_err("a write in a read-only transaction");
            assert_eq!(code_of(&err), "25006", "{begin}: {err}");
            client.simple_query("ROLLBACK").await.unwrap();
        }
        // Within one string, up to its end.
        assert_eq!(
            simple_first(
                &client,
                &format!(
                    "BEGIN READ ONLY; SELECT current_setting('cluster_name') FROM {t}; COMMIT"
                )
            )
            .await,
            REPLICA
        );
        // Writes work once it ends; READ WRITE stays on the primary.
        assert_eq!(
            simple_first(
                &client,
                &format!(
                    "INSERT INTO {t} VALUES (41, 'y') RETURNING current_setting('cluster_name')"
                )
            )
            .await,
            PRIMARY
        );
        client.simple_query("BEGIN READ WRITE").await.unwrap();
        assert_eq!(node_of_read(&client).await, PRIMARY);
        client.simple_query("COMMIT").await.unwrap();
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hint_comments_choose_where_reads_run() {
    bounded(async {
        let t = fixture("rt_hint").await;
        let client = client().await;
        let read = "SELECT current_setting('cluster_name')";
        // Replica first: a session may keep reading from the primary after using it.
        expect_nodes(
            &client,
            &[
                (format!("/* pgrepl:replica */ {read}"), REPLICA),
                (format!("{read} /* pgrepl:primary */"), REPLICA),
                (format!("/* pgrepl:primary */ {read}"), PRIMARY),
                (format!("-- pgrepl:primary\n{read}"), PRIMARY),
                (
                    format!("/* app:report */ /* PGREPL:PRIMARY */ {read}"),
                    PRIMARY,
                ),
                (
                    format!(
                        "/* pgrepl:replica */ INSERT INTO {t} VALUES (50, 'h') \
                         RETURNING current_setting('cluster_name')"
                    ),
                    PRIMARY,
                ),
                (
                    format!("/* pgrepl:replica */ {read}, nextval('{t}_seq')"),
                    PRIMARY,
                ),
            ],
        )
        .await;
        // The extended protocol too, with literals masked in the cache key: the hint stays.
        // A new session, which has not used the primary yet.
        let client = suite::client().await;
        for (sql, node) in [
            (format!("{read}, 1"), REPLICA),
            (format!("/* pgrepl:primary */ {read}, 2"), PRIMARY),
            (format!("/* pgrepl:primary */ {read}, 3"), PRIMARY),
        ] {
            let row = client.query_one(&sql, &[]).await.unwrap();
            assert_eq!(row.get::<_, String>(0), node, "{sql}");
        }
    })
    .await
}
