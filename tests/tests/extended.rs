//! Routing through the extended query protocol: parameterized queries,
//! prepared (named) statements used before, inside and after a transaction,
//! pgbench's named and unnamed statements, portals, and pipelines of reads
//! and writes on one connection.

use pgrepl_tests::roles::DATABASE;
use pgrepl_tests::suite::{
    self, bounded, client, code_of, node_of_read, on_primary, replicated, run_with_timeout,
    shared_proxy, PRIMARY, REPLICA,
};
use tokio_postgres::types::ToSql;
use tokio_postgres::Client;

/// A table `T (id int primary key, note text)` holding (1, 'one') and a
/// sequence `T_seq`, on the primary and already on the replica.
async fn fixture(prefix: &str) -> String {
    replicated(prefix, |t| {
        format!(
            "CREATE TABLE {t} (id int PRIMARY KEY, note text);\n\
             INSERT INTO {t} VALUES (1, 'one');\n\
             CREATE SEQUENCE {t}_seq;\n"
        )
    })
    .await
}

/// Runs each statement with its parameters through `client.query` and
/// fails listing every one whose first column (the cluster name) is not the
/// expected node.
async fn expect_nodes(client: &Client, cases: &[(String, &[&(dyn ToSql + Sync)], &str)]) {
    let cases = cases
        .iter()
        .map(|(sql, params, node)| (sql.as_str(), *node, *params));
    suite::expect_nodes(cases, |sql, params| async move {
        let rows = client.query(sql, params).await?;
        Ok::<_, tokio_postgres::Error>(rows.last().map(|r| r.get(0)))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameterized_reads_run_on_the_replica() {
    bounded(async {
        let t = fixture("ex_reads").await;
        let client = client().await;
        let row = client
            .query_one(
                "SELECT current_setting('cluster_name'), $1::int4 + 1",
                &[&41i32],
            )
            .await
            .unwrap();
        assert_eq!(
            (row.get::<_, String>(0), row.get::<_, i32>(1)),
            (REPLICA.to_owned(), 42)
        );
        expect_nodes(
            &client,
            &[
                (
                    format!("SELECT current_setting('cluster_name'), note FROM {t} WHERE id = $1"),
                    &[&1i32],
                    REPLICA,
                ),
                (
                    "VALUES (current_setting('cluster_name'), $1::text)".into(),
                    &[&"v"],
                    REPLICA,
                ),
            ],
        )
        .await;
        let note: String = client
            .query_one(&format!("SELECT note FROM {t} WHERE id = $1"), &[&1i32])
            .await
            .unwrap()
            .get(0);
        assert_eq!(note, "one");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameterized_writes_run_on_the_primary() {
    bounded(async {
        let t = fixture("ex_writes").await;
        let client = client().await;
        let key = 8_000_000 + std::process::id() as i64 % 1_000_000;
        expect_nodes(
            &client,
            &[
                (
                    format!(
                        "INSERT INTO {t} VALUES ($1, $2) RETURNING current_setting('cluster_name')"
                    ),
                    &[&2i32, &"two"],
                    PRIMARY,
                ),
                (
                    format!(
                        "UPDATE {t} SET note = $2 WHERE id = $1 RETURNING current_setting('cluster_name')"
                    ),
                    &[&1i32, &"uno"],
                    PRIMARY,
                ),
                (
                    format!("DELETE FROM {t} WHERE id = $1 RETURNING current_setting('cluster_name')"),
                    &[&2i32],
                    PRIMARY,
                ),
                (
                    format!(
                        "WITH x AS (INSERT INTO {t} VALUES ($1, 'three') RETURNING *) \
                         SELECT current_setting('cluster_name') FROM x"
                    ),
                    &[&3i32],
                    PRIMARY,
                ),
                (
                    format!(
                        "SELECT current_setting('cluster_name') FROM {t} WHERE id = $1 FOR UPDATE"
                    ),
                    &[&1i32],
                    PRIMARY,
                ),
                (
                    format!("SELECT current_setting('cluster_name'), nextval('{t}_seq') + $1"),
                    &[&0i64],
                    PRIMARY,
                ),
                (
                    "SELECT current_setting('cluster_name'), pg_advisory_lock($1)".into(),
                    &[&key],
                    PRIMARY,
                ),
                (
                    "SELECT current_setting('cluster_name'), pg_advisory_unlock($1)::text".into(),
                    &[&key],
                    PRIMARY,
                ),
                (
                    "SELECT current_setting('cluster_name'), set_config('application_name', $1, false)"
                        .into(),
                    &[&"extended_test"],
                    PRIMARY,
                ),
                (
                    "SELECT current_setting('cluster_name') FROM ROWS FROM (generate_series(1, $1))"
                        .into(),
                    &[&1i32],
                    PRIMARY,
                ),
            ],
        )
        .await;
        assert_eq!(
            on_primary(&format!("SELECT id, note FROM {t} ORDER BY id")),
            "1|uno\n3|three"
        );
        assert_eq!(on_primary(&format!("SELECT last_value FROM {t}_seq")), "1");
    })
    .await
}

/// A statement prepared while reads go to the replica is executed there,
/// then inside a transaction (the proxy must prepare it on the primary),
/// then on the replica again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_read_follows_the_transaction() {
    bounded(async {
        let client = client().await;
        let stmt = client
            .prepare("SELECT current_setting('cluster_name'), $1::int * 2")
            .await
            .unwrap();
        let run = |n: i32| {
            let (client, stmt) = (&client, &stmt);
            async move {
                let row = client.query_one(stmt, &[&n]).await.unwrap();
                assert_eq!(row.get::<_, i32>(1), n * 2);
                row.get::<_, String>(0)
            }
        };
        assert_eq!(run(1).await, REPLICA);
        client.batch_execute("BEGIN").await.unwrap();
        assert_eq!(run(2).await, PRIMARY);
        assert_eq!(run(3).await, PRIMARY);
        client.batch_execute("COMMIT").await.unwrap();
        assert_eq!(run(4).await, REPLICA);
        // Again, with the transaction API (BEGIN and COMMIT as simple queries).
        let mut client = client;
        {
            let tx = client.transaction().await.unwrap();
            let row = tx.query_one(&stmt, &[&5i32]).await.unwrap();
            assert_eq!(row.get::<_, String>(0), PRIMARY);
            tx.commit().await.unwrap();
        }
        let row = client.query_one(&stmt, &[&6i32]).await.unwrap();
        assert_eq!(row.get::<_, String>(0), REPLICA);
    })
    .await
}

/// Statements prepared inside a transaction exist only on the primary's
/// session; executed after COMMIT they run on the replica all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_prepared_in_a_transaction_runs_on_the_replica_after_it() {
    bounded(async {
        let t = fixture("ex_txprep").await;
        let client = client().await;
        client.batch_execute("BEGIN").await.unwrap();
        let read = client
            .prepare(&format!(
                "SELECT current_setting('cluster_name'), note FROM {t} WHERE id = $1"
            ))
            .await
            .unwrap();
        let insert = client
            .prepare(&format!(
                "INSERT INTO {t} VALUES ($1, $2) RETURNING current_setting('cluster_name')"
            ))
            .await
            .unwrap();
        let row = client.query_one(&read, &[&1i32]).await.unwrap();
        assert_eq!(row.get::<_, String>(0), PRIMARY);
        client.batch_execute("COMMIT").await.unwrap();
        for _ in 0..3 {
            let row = client.query_one(&read, &[&1i32]).await.unwrap();
            assert_eq!(
                (row.get::<_, String>(0), row.get::<_, String>(1)),
                (REPLICA.to_owned(), "one".to_owned())
            );
        }
        let row = client.query_one(&insert, &[&2i32, &"two"]).await.unwrap();
        assert_eq!(row.get::<_, String>(0), PRIMARY);
        assert_eq!(
            on_primary(&format!("SELECT note FROM {t} WHERE id = 2")),
            "two"
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_insert_runs_many_times_on_the_primary() {
    bounded(async {
        let t = fixture("ex_many").await;
        let client = client().await;
        let insert = client
            .prepare(&format!(
                "INSERT INTO {t} VALUES ($1, $2) RETURNING current_setting('cluster_name')"
            ))
            .await
            .unwrap();
        for id in 100..400i32 {
            let row = client
                .query_one(&insert, &[&id, &format!("n{id}")])
                .await
                .unwrap_or_else(|e| panic!("insert {id}: {e:?}"));
            assert_eq!(row.get::<_, String>(0), PRIMARY, "insert {id}");
            if id % 100 == 0 {
                // A read in between takes the session to the replica and back.
                assert_eq!(node_of_read(&client).await, REPLICA);
            }
        }
        assert_eq!(
            on_primary(&format!(
                "SELECT count(*), sum(id), count(DISTINCT note) FROM {t} WHERE id >= 100"
            )),
            format!("300|{}|300", (100..400).sum::<i32>())
        );
    })
    .await
}

/// pgbench's `-M prepared` runs every script line as a named statement,
/// prepared once per connection and executed again and again, while the
/// script moves the session between the replica and a transaction on the
/// primary; `-M extended` uses the unnamed statement. Each transaction
/// records on the primary where its statements ran.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_named_and_unnamed_statements_follow_route_changes() {
    bounded(async {
        let t = replicated("ex_pgbench", |t| {
            format!(
                "CREATE TABLE {t} (mode text, client int, replica_read int, tx_primary int, written_on text)"
            )
        })
        .await;
        for mode in ["prepared", "extended"] {
            let script = format!(
                "SELECT (current_setting('cluster_name') = 'db02')::int AS before_on_replica \\gset\n\
                 BEGIN;\n\
                 SELECT (current_setting('cluster_name') = 'db01')::int AS tx_on_primary \\gset\n\
                 INSERT INTO {t} VALUES ('{mode}', :client_id, :before_on_replica, :tx_on_primary, current_setting('cluster_name'));\n\
                 COMMIT;\n\
                 SELECT (current_setting('cluster_name') = 'db02')::int AS after_on_replica \\gset\n\
                 INSERT INTO {t} VALUES ('{mode}', :client_id, :after_on_replica, -1, current_setting('cluster_name'));\n"
            );
            let script_path = pgrepl_tests::run_dir().join(format!("{t}_{mode}.sql"));
            std::fs::write(&script_path, script).unwrap();
            let addr = shared_proxy();
            let bin = pgrepl_tests::pg_bin_dir().unwrap().join("pgbench");
            let mut cmd = std::process::Command::new(bin);
            cmd.args(["-n", "-c", "2", "-t", "25", "-M", mode, "-h", "127.0.0.1"])
                .args(["-p", &addr.port().to_string(), "-U", "app", "-f"])
                .arg(&script_path)
                .arg(DATABASE)
                .env("PGPASSWORD", "app-pass")
                .env("PGPASSFILE", "/dev/null");
            let run = tokio::task::spawn_blocking(move || {
                run_with_timeout(cmd, b"", std::time::Duration::from_secs(60)).unwrap()
            })
            .await
            .unwrap();
            let out = String::from_utf8_lossy(&run.stdout).into_owned();
            assert!(
                run.success && out.contains("actually processed: 50/50"),
                "pgbench -M {mode} failed:\n{out}\n{}",
                run.stderr
            );
        }
        // Per mode: rows, reads seen on the replica, transaction reads seen on
        // the primary, rows written on the primary.
        assert_eq!(
            on_primary(&format!(
                "SELECT mode, count(*), sum(replica_read), \
                 count(*) FILTER (WHERE tx_primary = 1), count(*) FILTER (WHERE written_on = 'db01') \
                 FROM {t} GROUP BY mode ORDER BY mode"
            )),
            "extended|100|100|50|100\nprepared|100|100|50|100"
        );
    })
    .await
}

/// Queries started together on one client are pipelined by tokio-postgres:
/// all their messages go out before the first answer comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_reads_and_writes_each_go_to_their_node() {
    bounded(async {
        let t = fixture("ex_pipe").await;
        let client = client().await;
        let read = client
            .prepare(&format!(
                "SELECT current_setting('cluster_name'), $1::int + 1000, \
                 (SELECT note FROM {t} WHERE id = 1)"
            ))
            .await
            .unwrap();
        let insert = client
            .prepare(&format!(
                "INSERT INTO {t} VALUES ($1::int, 'p' || $1::int) RETURNING current_setting('cluster_name'), id"
            ))
            .await
            .unwrap();
        for round in 0..5i32 {
            let base = 10 + round * 10;
            let n: Vec<i32> = (0..4).map(|i| base + i).collect();
            let p: Vec<[&(dyn ToSql + Sync); 1]> = n.iter().map(|v| [v as _]).collect();
            let (r1, w1, r2, w2, w3, r3, r4, w4) = tokio::join!(
                biased;
                client.query_one(&read, &p[0]),
                client.query_one(&insert, &p[0]),
                client.query_one(&read, &p[1]),
                client.query_one(&insert, &p[1]),
                client.query_one(&insert, &p[2]),
                client.query_one(&read, &p[2]),
                client.query_one(&read, &p[3]),
                client.query_one(&insert, &p[3]),
            );
            for (i, r) in [r1, r2, r3, r4].into_iter().enumerate() {
                let row = r.unwrap_or_else(|e| panic!("round {round} read {i}: {e:?}"));
                assert_eq!(
                    (
                        row.get::<_, String>(0),
                        row.get::<_, i32>(1),
                        row.get::<_, String>(2)
                    ),
                    (REPLICA.to_owned(), base + i as i32 + 1000, "one".to_owned()),
                    "round {round} read {i}"
                );
            }
            for (i, w) in [w1, w2, w3, w4].into_iter().enumerate() {
                let row = w.unwrap_or_else(|e| panic!("round {round} insert {i}: {e:?}"));
                assert_eq!(
                    (row.get::<_, String>(0), row.get::<_, i32>(1)),
                    (PRIMARY.to_owned(), base + i as i32),
                    "round {round} insert {i}"
                );
            }
        }
        assert_eq!(
            on_primary(&format!(
                "SELECT count(*), min(id), max(id) FROM {t} WHERE note LIKE 'p%'"
            )),
            "20|10|53"
        );
        // Unprepared queries pipeline too (their Parse goes out first).
        let insert_q = format!("INSERT INTO {t} VALUES ($1, 'q')");
        let (a, b, c) = tokio::join!(
            client.query_one("SELECT current_setting('cluster_name'), $1::text", &[&"a"]),
            client.execute(insert_q.as_str(), &[&99i32]),
            client.query_one("SELECT current_setting('cluster_name'), $1::text", &[&"c"]),
        );
        assert_eq!(a.unwrap().get::<_, String>(1), "a");
        assert_eq!(b.unwrap(), 1);
        assert_eq!(c.unwrap().get::<_, String>(1), "c");
        assert_eq!(
            on_primary(&format!("SELECT note FROM {t} WHERE id = 99")),
            "q"
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_inside_a_transaction_stays_on_the_primary() {
    bounded(async {
        let t = fixture("ex_txpipe").await;
        let mut client = client().await;
        let tx = client.transaction().await.unwrap();
        // Prepared first, so the pipeline runs in the order written.
        let read = tx
            .prepare(&format!(
                "SELECT current_setting('cluster_name'), count(*)::int FROM {t}"
            ))
            .await
            .unwrap();
        let insert = tx
            .prepare(&format!(
                "INSERT INTO {t} VALUES ($1, 'tx') RETURNING current_setting('cluster_name')"
            ))
            .await
            .unwrap();
        let (r1, w1, r2, w2) = tokio::join!(
            biased;
            tx.query_one(&read, &[]),
            tx.query_one(&insert, &[&2i32]),
            tx.query_one(&read, &[]),
            tx.query_one(&insert, &[&3i32]),
        );
        let (r1, r2) = (r1.unwrap(), r2.unwrap());
        assert_eq!(
            (r1.get::<_, String>(0), r1.get::<_, i32>(1)),
            (PRIMARY.to_owned(), 1)
        );
        // The second read sees the first insert: same transaction, same node.
        assert_eq!(
            (r2.get::<_, String>(0), r2.get::<_, i32>(1)),
            (PRIMARY.to_owned(), 2)
        );
        assert_eq!(w1.unwrap().get::<_, String>(0), PRIMARY);
        assert_eq!(w2.unwrap().get::<_, String>(0), PRIMARY);
        tx.commit().await.unwrap();
        assert_eq!(node_of_read(&client).await, REPLICA);
        assert_eq!(on_primary(&format!("SELECT count(*) FROM {t}")), "3");
    })
    .await
}

/// A portal read a few rows at a time (Execute with a row limit, answered
/// with PortalSuspended) inside a transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portal_is_fetched_in_batches() {
    bounded(async {
        let mut client = client().await;
        let tx = client.transaction().await.unwrap();
        let portal = tx
            .bind(
                "SELECT g, current_setting('cluster_name') FROM generate_series(1, $1) g",
                &[&25i32],
            )
            .await
            .unwrap();
        let mut seen = Vec::new();
        for _ in 0..10 {
            let rows = tx.query_portal(&portal, 10).await.unwrap();
            if rows.is_empty() {
                break;
            }
            for row in rows {
                assert_eq!(row.get::<_, String>(1), PRIMARY);
                seen.push(row.get::<_, i32>(0));
            }
        }
        assert_eq!(seen, (1..=25).collect::<Vec<_>>());
        tx.commit().await.unwrap();
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_errors_keep_the_session_usable() {
    bounded(async {
        let t = fixture("ex_errors").await;
        let client = client().await;
        let err = client
            .query("SELECT 1 / $1::int", &[&0i32])
            .await
            .unwrap_err();
        assert_eq!(code_of(&err), "22012");
        assert_eq!(node_of_read(&client).await, REPLICA);
        let err = client
            .execute(&format!("INSERT INTO {t} VALUES ($1, 'dup')"), &[&1i32])
            .await
            .unwrap_err();
        assert_eq!(code_of(&err), "23505");
        let n = client
            .execute(&format!("INSERT INTO {t} VALUES ($1, 'ok')"), &[&2i32])
            .await
            .unwrap();
        assert_eq!(n, 1);
        // A statement that fails to parse on the server.
        let err = client.prepare("SELEC $1").await.unwrap_err();
        assert_eq!(code_of(&err), "42601");
        assert_eq!(node_of_read(&client).await, REPLICA);
        assert_eq!(
            on_primary(&format!("SELECT note FROM {t} WHERE id = 2")),
            "ok"
        );
    })
    .await
}
