//! User functions: the proxy looks up their volatility in the primary's catalog, so a read
//! calling a volatile one (which may write) runs on the primary `db01`, one calling only
//! stable or immutable functions on the replica `db02`; `[routing] write_functions` and
//! `read_only_functions` override the catalog. Each function returns
//! `current_setting('cluster_name')`, so its result shows where it ran.
//!
//! Each test starts a proxy of its own once its functions exist: a proxy loads a
//! database's functions on its first session and then only every 30 s, or soon after a
//! function is defined through it.

use std::time::Duration;

use pgrepl_tests::suite::{
    self, bounded, eventually, free_addr, last_first, on_primary, replicated, PRIMARY, REPLICA,
};
use pgrepl_tests::{connect, proxy_config, roles, Cluster, ProxyProcess};
use tokio_postgres::Client;

/// A proxy with `[routing]` keys, and a client of `app` on `appdb` through it. Reads need
/// not see the session's writes: a read right after a call of a writing function shows
/// where the read's own classification sends it.
async fn proxy_with_routing(routing: &str) -> (ProxyProcess, Client) {
    let addr = free_addr();
    let toml = format!(
        "{}\n[routing]\nread_your_writes = \"off\"\n{routing}\n",
        proxy_config(Cluster::shared(), addr)
    );
    let proxy =
        ProxyProcess::start(&toml, addr).unwrap_or_else(|e| panic!("cannot start a proxy: {e:#}"));
    let client = connect(proxy.addr, roles::APP.name, roles::DATABASE)
        .await
        .unwrap();
    (proxy, client)
}

/// Runs each statement as a simple query and fails listing every one that did not run
/// where expected (or failed).
async fn expect_nodes(client: &Client, cases: &[(String, &str)]) {
    let cases = cases.iter().map(|(sql, node)| (sql.as_str(), *node, ()));
    suite::expect_nodes(cases, |sql, ()| async move {
        client.simple_query(sql).await.map(|m| last_first(&m))
    })
    .await
}

/// `CREATE FUNCTION name() RETURNS text` with `body` (plpgsql) and `volatility`.
fn function(name: &str, volatility: &str, body: &str) -> String {
    format!(
        "CREATE FUNCTION {name}() RETURNS text {volatility} LANGUAGE plpgsql AS $$\n\
         BEGIN {body} RETURN current_setting('cluster_name'); END $$;\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volatile_user_functions_run_on_the_primary() {
    bounded(async {
        let f = replicated("fn_cat", |f| {
            let log = format!("INSERT INTO {f}_log VALUES (current_setting('cluster_name'));");
            [
                format!("CREATE TABLE {f}_log (node text);\nCREATE SCHEMA {f}_s;\n"),
                function(&format!("{f}_writer"), "VOLATILE", &log),
                function(&format!("{f}_stable"), "STABLE", ""),
                function(&format!("{f}_immutable"), "IMMUTABLE", ""),
                function(&format!("{f}_listed_read"), "VOLATILE", ""),
                function(&format!("{f}_listed_write"), "STABLE", ""),
                function(&format!("{f}_twin"), "STABLE", ""),
                function(&format!("{f}_s.{f}_twin"), "VOLATILE", &log),
            ]
            .concat()
        })
        .await;
        let (proxy, client) = proxy_with_routing(&format!(
            "read_only_functions = [\"{f}_listed_read\"]\n\
             write_functions = [\"public.{f}_listed_write\"]"
        ))
        .await;
        expect_nodes(
            &client,
            &[
                (format!("SELECT {f}_writer()"), PRIMARY),
                (format!("SELECT {f}_writer(), 1 AS one"), PRIMARY),
                (format!("SELECT * FROM {f}_writer()"), PRIMARY),
                (format!("SELECT public.{f}_writer()"), PRIMARY),
                (format!("SELECT {f}_stable()"), REPLICA),
                (
                    format!("SELECT current_setting('cluster_name'), {f}_immutable()"),
                    REPLICA,
                ),
                (format!("SELECT {f}_listed_read()"), REPLICA),
                (format!("SELECT {f}_listed_write()"), PRIMARY),
                (format!("SELECT public.{f}_twin()"), REPLICA),
                (format!("SELECT {f}_s.{f}_twin()"), PRIMARY),
                // Unqualified, the search path decides which one runs: the primary is safe.
                (format!("SELECT {f}_twin()"), PRIMARY),
            ],
        )
        .await;
        // The extended protocol too.
        let row = client
            .query_one(&format!("SELECT {f}_writer()"), &[])
            .await
            .expect("a writing function through the extended protocol");
        assert_eq!(row.get::<_, String>(0), PRIMARY);
        assert_eq!(
            on_primary(&format!(
                "SELECT count(*) FROM {f}_log WHERE node = '{PRIMARY}'"
            )),
            "6",
            "every call of a writing function ran and wrote on the primary"
        );
        let log = proxy.log();
        assert!(
            !log.contains("cannot look up user functions"),
            "the look-up failed:\n{log}"
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn functions_defined_through_the_proxy_are_known_at_once() {
    bounded(async {
        let f = replicated("fn_ddl", |f| format!("CREATE TABLE {f}_log (node text);\n")).await;
        let (_proxy, client) = proxy_with_routing("").await;
        let log = format!("INSERT INTO {f}_log VALUES (current_setting('cluster_name'));");
        client
            .batch_execute(&function(&format!("{f}_new_writer"), "VOLATILE", &log))
            .await
            .expect("CREATE FUNCTION through the proxy");
        client
            .batch_execute(&function(&format!("{f}_new_reader"), "STABLE", ""))
            .await
            .expect("CREATE FUNCTION through the proxy");
        let writer = format!("SELECT {f}_new_writer()");
        let reader = format!("SELECT {f}_new_reader()");
        expect_nodes(&client, &[(writer.clone(), PRIMARY)]).await;
        // Once the look-up has seen the new functions and db02 has replayed them, the
        // stable one reads on the replica, and the volatile one still writes on the primary.
        let node = |sql: String| {
            let client = &client;
            async move {
                let rows = client.simple_query(&sql).await.ok()?;
                last_first(&rows)
            }
        };
        eventually(
            "the stable function to run on db02",
            Duration::from_secs(20),
            || async { node(reader.clone()).await.as_deref() == Some(REPLICA) },
        )
        .await
        .unwrap();
        expect_nodes(&client, &[(writer.clone(), PRIMARY)]).await;
        // Made volatile through the proxy: on the primary from the next statement on.
        client
            .batch_execute(&format!("ALTER FUNCTION {f}_new_reader() VOLATILE"))
            .await
            .expect("ALTER FUNCTION through the proxy");
        expect_nodes(&client, &[(reader.clone(), PRIMARY)]).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        expect_nodes(&client, &[(reader, PRIMARY), (writer, PRIMARY)]).await;
        assert_eq!(on_primary(&format!("SELECT count(*) FROM {f}_log")), "3");
    })
    .await
}
