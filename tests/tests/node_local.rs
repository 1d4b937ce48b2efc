//! Reads that a server answers for itself rather than for the database (its sessions, WAL,
//! replication state, a sequence's current state) run on the primary `db01`, the database the
//! client thinks it talks to; index maintenance functions, which a standby refuses, too; and a
//! function the proxy has not seen (created directly on the primary) counts as volatile.
//!
//! Each check compares an answer with what the primary and the replica say directly, so it
//! shows where the statement ran even where it cannot return `cluster_name`.

use pgrepl_tests::suite::{
    self, bounded, caught_up, client, last_first, on_primary, replicated, simple_first, PRIMARY,
};
use pgrepl_tests::{roles, Cluster};
use tokio_postgres::Client;

/// Runs `sql` directly on the replica as `app` and returns its trimmed output.
fn on_replica(sql: &str) -> String {
    Cluster::shared()
        .replica
        .psql(roles::APP.name, roles::DATABASE, sql)
        .unwrap_or_else(|e| panic!("psql on the replica failed: {e:#}"))
        .trim()
        .to_owned()
}

/// Runs each statement through the proxy and fails listing every one whose first column
/// differs from the expected answer (or that failed).
async fn expect_answers(client: &Client, cases: &[(String, &str)]) {
    let cases = cases.iter().map(|(sql, want)| (sql.as_str(), *want, ()));
    suite::expect_nodes(cases, |sql, ()| async move {
        client.simple_query(sql).await.map(|m| last_first(&m))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_local_reads_answer_for_the_primary() {
    bounded(async {
        // One nextval: the primary shows last_value 1, a standby what the WAL logged ahead.
        let t = replicated("nl_views", |t| {
            format!(
                "CREATE SEQUENCE {t}_seq;\n\
                 SELECT nextval('{t}_seq');\n\
                 CREATE TABLE {t} (id int, doc int[]);\n\
                 INSERT INTO {t} SELECT g, ARRAY[g] FROM generate_series(1, 100) g;\n\
                 CREATE INDEX {t}_brin ON {t} USING brin (id);\n\
                 CREATE INDEX {t}_gin ON {t} USING gin (doc);\n"
            )
        })
        .await;
        let client = client().await;
        // Single-column reads whose answer differs between the nodes, each asked directly
        // first: through the proxy, the primary's answer.
        let mut cases = Vec::new();
        for sql in [
            format!("SELECT last_value FROM {t}_seq"),
            format!("SELECT last_value FROM public.{t}_seq"),
            format!("SELECT last_value FROM pg_sequences WHERE sequencename = '{t}_seq'"),
            format!("SELECT pg_sequence_last_value('{t}_seq')"),
            "SELECT pg_is_in_recovery()".into(),
            "SELECT count(*) FROM pg_stat_wal_receiver".into(),
            "SELECT count(*) FROM pg_stat_replication".into(),
            "SELECT count(*) FROM pg_replication_slots WHERE active".into(),
            "SELECT pg_last_wal_replay_lsn() IS NULL".into(),
            "SHOW transaction_read_only".into(),
        ] {
            let (primary, replica) = (on_primary(&sql), on_replica(&sql));
            assert_ne!(primary, replica, "{sql}: the nodes answer alike");
            cases.push((sql, primary));
        }
        assert_eq!(cases[0].1, "1", "the primary's sequence after one nextval");
        let mut cases: Vec<(String, &str)> = cases
            .iter()
            .map(|(sql, want)| (sql.clone(), want.as_str()))
            .collect();
        cases.extend([
            (format!("TABLE {t}_seq"), "1"),
            // Fails on a standby ("recovery is in progress").
            ("SELECT pg_current_wal_lsn() IS NOT NULL".into(), "t"),
            // What every node answers alike still reads on the replica...
            (
                format!("SELECT current_setting('cluster_name') FROM {t} LIMIT 1"),
                "db02",
            ),
            // ...and a hint still chooses the replica's own view.
            (
                "/* pgrepl:replica */ SELECT count(*) FROM pg_stat_wal_receiver".into(),
                "1",
            ),
        ]);
        expect_answers(&client, &cases).await;
        // Index maintenance writes the index: a standby refuses it with "recovery is in
        // progress".
        for sql in [
            format!("SELECT brin_summarize_new_values('{t}_brin')"),
            format!("SELECT brin_summarize_range('{t}_brin', 0)"),
            format!("SELECT brin_desummarize_range('{t}_brin', 0)"),
            format!("SELECT gin_clean_pending_list('{t}_gin')"),
        ] {
            client
                .simple_query(&sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequences_made_through_the_proxy_are_read_on_the_primary_at_once() {
    bounded(async {
        let client = client().await;
        let t = suite::unique("nl_seq");
        // Read right after their creation: the replica may not even have them yet.
        client
            .batch_execute(&format!(
                "CREATE SEQUENCE {t}_made; SELECT nextval('{t}_made');\n\
                 CREATE TABLE {t} (id serial, n bigint GENERATED ALWAYS AS IDENTITY, v int);\n\
                 INSERT INTO {t} (v) VALUES (1);"
            ))
            .await
            .expect("creating sequences through the proxy");
        expect_answers(
            &client,
            &[
                (format!("SELECT last_value FROM {t}_made"), "1"),
                (format!("SELECT last_value FROM {t}_id_seq"), "1"),
                (format!("SELECT last_value FROM {t}_n_seq"), "1"),
            ],
        )
        .await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_created_without_the_proxy_is_volatile() {
    bounded(async {
        let f = replicated("nl_fn", |f| format!("CREATE TABLE {f}_log (node text);\n")).await;
        let client = client().await;
        // The session's database has been looked up before the function exists (a session
        // waits for that before its first statement).
        assert_eq!(simple_first(&client, "SELECT 1").await, "1");
        on_primary(&format!(
            "CREATE FUNCTION {f}_writer() RETURNS text LANGUAGE plpgsql AS $$\n\
             BEGIN INSERT INTO {f}_log VALUES (current_setting('cluster_name'));\n\
             RETURN current_setting('cluster_name'); END $$;"
        ));
        // The replica has it too: on the replica the call would fail with 25006.
        caught_up().await;
        let sql = format!("SELECT {f}_writer()");
        let rows = client
            .simple_query(&sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        assert_eq!(last_first(&rows).as_deref(), Some(PRIMARY));
        assert_eq!(on_primary(&format!("SELECT node FROM {f}_log")), PRIMARY);
    })
    .await
}
