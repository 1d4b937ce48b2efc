//! `pgrepl-proxy classify`: what it prints, and that the route it prints is
//! where the running proxy sends the same statement, as
//! `current_setting('cluster_name')` shows.

use pgrepl_tests::proxy_command;
use pgrepl_tests::suite::{
    bounded, client, last_first, replicated, run_with_timeout, PRIMARY, REPLICA,
};
use std::time::Duration;

/// Runs `pgrepl-proxy classify SQL`; returns its stdout, asserting success.
fn classify(sql: &str) -> String {
    let mut cmd = proxy_command();
    cmd.arg("classify").arg(sql);
    let run = run_with_timeout(cmd, b"", Duration::from_secs(20)).unwrap();
    assert!(run.success, "classify {sql:?} failed: {}", run.stderr);
    String::from_utf8(run.stdout).expect("classify printed non-UTF-8")
}

#[test]
fn classify_prints_route_and_reason() {
    for (sql, expected) in [
        ("SELECT 1", "replica: read\n"),
        ("SELECT * FROM t WHERE id = 1", "replica: read\n"),
        ("INSERT INTO t VALUES (1)", "primary: write (INSERT)\n"),
        ("SELEC 1", "primary: unparseable\n"),
        ("BEGIN READ ONLY", "replica: read_only_transaction\n"),
        (
            "START TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ ONLY",
            "replica: read_only_transaction\n",
        ),
        (
            "BEGIN READ WRITE",
            "primary: transaction (BEGIN READ WRITE)\n",
        ),
        ("/* pgrepl:primary */ SELECT 1", "primary: hint\n"),
        ("-- pgrepl:replica\nSELECT 1", "replica: hint\n"),
        (
            "/* pgrepl:replica */ DELETE FROM t",
            "primary: write (DELETE)\n",
        ),
        ("SELECT my_function(1)", "replica: read\n"),
    ] {
        assert_eq!(classify(sql), expected, "classify {sql:?}");
    }
}

#[test]
fn classify_names_the_route_first() {
    for (sql, route) in [
        ("UPDATE t SET a = 1", "primary"),
        ("DELETE FROM t", "primary"),
        ("CREATE TABLE x (a int)", "primary"),
        ("SELECT * FROM t FOR UPDATE", "primary"),
        ("SELECT nextval('s')", "primary"),
        ("VALUES (1)", "replica"),
        ("SHOW work_mem", "replica"),
        ("EXPLAIN SELECT 1", "replica"),
        ("EXPLAIN ANALYZE SELECT 1", "primary"),
        ("SELECT 1; SELECT 2", "replica"),
        ("SELECT 1; DELETE FROM t", "primary"),
    ] {
        let out = classify(sql);
        assert!(
            out.starts_with(&format!("{route}: "))
                && out.ends_with('\n')
                && out.lines().count() == 1,
            "classify {sql:?} printed {out:?}, expected one line starting with \"{route}: \""
        );
    }
}

/// For each statement, the route `classify` prints and the node the proxy
/// runs it on must agree, and both must be what the routing rules say.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classify_agrees_with_where_the_proxy_runs_statements() {
    bounded(async {
        let t = replicated("cli", |t| {
            format!(
                "CREATE TABLE {t} (id int PRIMARY KEY);\n\
                 INSERT INTO {t} VALUES (1);\n\
                 CREATE VIEW {t}_where AS SELECT current_setting('cluster_name') AS node;\n\
                 CREATE SEQUENCE {t}_seq;\n"
            )
        })
        .await;
        let key = 6_000_000 + std::process::id() as i64 % 1_000_000;
        let cases: Vec<(String, &str)> = vec![
            ("SELECT current_setting('cluster_name')".into(), "replica"),
            ("VALUES (current_setting('cluster_name'))".into(), "replica"),
            ("SHOW cluster_name".into(), "replica"),
            (format!("TABLE {t}_where"), "replica"),
            (
                format!("SELECT current_setting('cluster_name') FROM {t} WHERE id = 1"),
                "replica",
            ),
            (
                "SELECT 1; SELECT current_setting('cluster_name')".into(),
                "replica",
            ),
            (
                format!("INSERT INTO {t} VALUES (2) RETURNING current_setting('cluster_name')"),
                "primary",
            ),
            (
                format!(
                    "UPDATE {t} SET id = 3 WHERE id = 2 RETURNING current_setting('cluster_name')"
                ),
                "primary",
            ),
            (
                format!("DELETE FROM {t} WHERE id = 3 RETURNING current_setting('cluster_name')"),
                "primary",
            ),
            (
                format!("SELECT current_setting('cluster_name') FROM {t} WHERE id = 1 FOR UPDATE"),
                "primary",
            ),
            (
                format!("SELECT current_setting('cluster_name'), nextval('{t}_seq')"),
                "primary",
            ),
            (
                format!("SELECT current_setting('cluster_name'), pg_advisory_lock({key})"),
                "primary",
            ),
            (
                format!("SELECT current_setting('cluster_name'), pg_advisory_unlock({key})"),
                "primary",
            ),
            (
                "SELECT current_setting('cluster_name'), set_config('application_name', 'cli', true)"
                    .into(),
                "primary",
            ),
            (
                format!(
                    "WITH x AS (INSERT INTO {t} VALUES (4) RETURNING id) \
                     SELECT current_setting('cluster_name') FROM x"
                ),
                "primary",
            ),
            (
                "SELECT current_setting('cluster_name') FROM ROWS FROM (generate_series(1, 1))"
                    .into(),
                "primary",
            ),
            (
                format!("INSERT INTO {t} VALUES (5); SELECT current_setting('cluster_name')"),
                "primary",
            ),
            (
                "/* pgrepl:primary */ SELECT current_setting('cluster_name')".into(),
                "primary",
            ),
            (
                "/* pgrepl:replica */ SELECT current_setting('cluster_name')".into(),
                "replica",
            ),
            (
                "BEGIN READ ONLY; SELECT current_setting('cluster_name'); COMMIT".into(),
                "replica",
            ),
        ];
        let client = client().await;
        let mut wrong = Vec::new();
        for (sql, expected) in &cases {
            let printed = {
                let sql = sql.clone();
                tokio::task::spawn_blocking(move || classify(&sql))
                    .await
                    .unwrap()
            };
            let route = printed.split(':').next().unwrap_or_default().to_owned();
            let node = match client.simple_query(sql).await {
                Ok(messages) => last_first(&messages).unwrap_or_else(|| "no rows".into()),
                Err(e) => format!("error {:?}", e.code()),
            };
            let ran_on = match node.as_str() {
                PRIMARY => "primary",
                REPLICA => "replica",
                other => other,
            };
            if route != *expected || ran_on != *expected {
                wrong.push(format!(
                    "{sql}: classify printed {:?}, proxy ran it on {node}; expected {expected}",
                    printed.trim_end()
                ));
            }
        }
        assert!(wrong.is_empty(), "disagreements:\n{}", wrong.join("\n"));
    })
    .await
}
