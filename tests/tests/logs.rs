//! The proxy's logs, read from a real proxy's stderr: JSON lines on request, one line per
//! client connect and disconnect with its counts, the slow-statement log with and without the
//! statement text, and never a password or a bind parameter value.

use std::time::Duration;

use pgrepl_tests::roles::{APP, DATABASE};
use pgrepl_tests::suite::{bounded, eventually, free_addr, proxy_config_with};
use pgrepl_tests::{connect, Cluster, ProxyProcess};
use serde_json::Value;

const SECRET_PARAM: &str = "secret-param-value-4711";
const SLOW: &str = "SELECT pg_sleep(0.08), $1::text AS label";

/// A proxy on the shared cluster logging statements slower than 50 ms, `statement_text` as
/// given, and `env` set.
fn proxy(statement_text: bool, env: &[(&str, &str)]) -> ProxyProcess {
    let addr = free_addr();
    let config = proxy_config_with(Cluster::shared(), addr, "")
        + &format!("\n[log]\nslow_statement = \"50ms\"\nstatement_text = {statement_text}\n");
    ProxyProcess::start_with_env(&config, addr, env).unwrap()
}

/// One client: a slow extended-protocol read with a bind parameter, then a fast simple read.
async fn one_client(proxy: &ProxyProcess) {
    let client = connect(proxy.addr, APP.name, DATABASE).await.unwrap();
    let row = client.query_one(SLOW, &[&SECRET_PARAM]).await.unwrap();
    assert_eq!(row.get::<_, String>(1), SECRET_PARAM);
    // Its statement is closed (Close + Sync): that batch runs no statement.
    drop(row);
    client.simple_query("SELECT 1").await.unwrap();
    drop(client);
    eventually(
        "the disconnect to be logged",
        Duration::from_secs(10),
        || async { proxy.log().contains("client disconnected") },
    )
    .await
    .unwrap();
}

fn assert_nothing_secret(log: &str) {
    assert!(
        !log.contains(SECRET_PARAM),
        "a bind parameter was logged:\n{log}"
    );
    for password in ["app-pass", "md5-pass", "plain-pass"] {
        assert!(!log.contains(password), "a password was logged:\n{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_lines_carry_connections_and_slow_statements_with_their_text() {
    bounded(async {
        let proxy = proxy(true, &[("PGREPL_LOG__FORMAT", "json")]);
        one_client(&proxy).await;
        let log = proxy.log();
        let lines: Vec<Value> = log
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect();
        let with_message = |message: &str| -> Vec<&Value> {
            lines
                .iter()
                .filter(|l| l["fields"]["message"] == message)
                .collect()
        };
        let slow = with_message("slow statement");
        assert_eq!(slow.len(), 1, "one slow statement:\n{log}");
        let fields = &slow[0]["fields"];
        assert_eq!(slow[0]["level"], "WARN");
        assert_eq!(fields["backend"], "db02");
        assert_eq!(fields["reason"], "read");
        assert_eq!(fields["user"], APP.name);
        assert_eq!(fields["database"], DATABASE);
        assert_eq!(fields["statement"], SLOW);
        assert!(fields["duration_ms"].as_f64().unwrap() >= 80.0, "{fields}");

        assert_eq!(with_message("client connected").len(), 1, "{log}");
        let closed = with_message("client disconnected");
        assert_eq!(closed.len(), 1, "{log}");
        let fields = &closed[0]["fields"];
        // Prepare, execute, then the simple query: all reads.
        assert_eq!(fields["to_replica"], 3, "{fields}");
        assert_eq!(fields["to_primary"], 0, "{fields}");
        assert!(fields["bytes_in"].as_u64().unwrap() > SLOW.len() as u64);
        assert!(fields["bytes_out"].as_u64().unwrap() > 0);
        assert!(fields["duration_ms"].as_u64().is_some());
        assert_nothing_secret(&log);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_lines_leave_the_statement_out_unless_asked() {
    bounded(async {
        let proxy = proxy(false, &[]);
        one_client(&proxy).await;
        let log = proxy.log();
        let slow: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("slow statement"))
            .collect();
        assert_eq!(slow.len(), 1, "{log}");
        assert!(slow[0].contains("WARN"), "{}", slow[0]);
        assert!(slow[0].contains("reason=\"read\""), "{}", slow[0]);
        assert!(
            !log.contains("pg_sleep"),
            "statement text logged unasked:\n{log}"
        );
        assert!(
            serde_json::from_str::<Value>(slow[0]).is_err(),
            "text, not JSON"
        );
        assert_nothing_secret(&log);
    })
    .await
}
