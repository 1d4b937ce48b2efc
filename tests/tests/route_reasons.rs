//! Every routing decision is explained: with debug logging on, the proxy logs each unit's
//! route and its reason, in the names `classify` uses plus the session's own
//! (`session_pinned`, `read_your_writes`, `hint`, `transaction` ...).

use std::time::Duration;

use pgrepl_tests::roles::{APP, DATABASE};
use pgrepl_tests::suite::{bounded, eventually, free_addr, proxy_config_with};
use pgrepl_tests::{connect, Cluster, ProxyProcess};

/// The (route, reason) pairs of the `routed` lines in a proxy log, in order.
fn decisions(log: &str) -> Vec<(String, String)> {
    let field = |line: &str, name: &str| {
        let start = line.find(&format!("{name}="))? + name.len() + 1;
        let value = line[start..].split_whitespace().next()?;
        Some(value.trim_matches('"').to_owned())
    };
    log.lines()
        .filter(|line| line.contains("routed"))
        .filter_map(|line| Some((field(line, "to")?, field(line, "reason")?)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_unit_is_logged_with_where_it_went_and_why() {
    bounded(async {
        let addr = free_addr();
        // Read-your-writes on, as by default.
        let config = proxy_config_with(Cluster::shared(), addr, "");
        let proxy = ProxyProcess::start_with_env(
            &config,
            addr,
            &[("RUST_LOG", "info,pgrepl_proxy::session=debug")],
        )
        .unwrap();
        let client = connect(addr, APP.name, DATABASE).await.unwrap();
        // (statement, expected route, expected reason), in order.
        let steps: &[(&str, &str, &str)] = &[
            ("SELECT 1", "replica", "read"),
            ("SHOW search_path", "replica", "show"),
            ("CREATE TEMP TABLE reasons_t (a int)", "primary", "ddl"),
            ("SELECT 2", "primary", "session_pinned"),
            ("DISCARD ALL", "primary", "utility"),
            ("/* pgrepl:primary */ SELECT 3", "primary", "hint"),
            ("BEGIN", "primary", "transaction"),
            ("SELECT 4", "primary", "transaction"),
            ("COMMIT", "primary", "transaction"),
            (
                "SELECT nextval('reasons_seq_missing')",
                "primary",
                "function",
            ),
        ];
        let mut expected = Vec::new();
        for (sql, route, reason) in steps {
            // Some fail on purpose (no such sequence); where they went is what counts.
            let _ = client.simple_query(sql).await;
            expected.push((route.to_string(), reason.to_string()));
        }
        eventually(
            "every decision to be logged",
            Duration::from_secs(5),
            || {
                let logged = decisions(&proxy.log());
                async move { logged.len() >= steps.len() }
            },
        )
        .await
        .unwrap();
        let logged = decisions(&proxy.log());
        assert_eq!(logged[..steps.len()], expected[..], "log:\n{}", proxy.log());
    })
    .await
}
