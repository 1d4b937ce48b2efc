//! Bad input and limits, spoken in raw protocol bytes where no real client
//! would send it: garbage startup packets, unknown message types, messages
//! over `max_message_size`, `max_client_connections`, an unreachable
//! replica, SSLRequest without TLS, and graceful shutdown on SIGTERM.

use pgrepl_tests::roles::DATABASE;
use pgrepl_tests::suite::raw::{self, summary, RawClient, RawMessage};
use pgrepl_tests::suite::{
    bounded, code_of, connect_with_messages, eventually, free_addr, node_of_read, on_primary,
    proxy_config_with, psql_env, replicated, shared_proxy, simple_first, start_proxy, unique,
    PRIMARY, REPLICA,
};
use pgrepl_tests::{connect, free_port, Cluster, ProxyProcess};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio_postgres::AsyncMessage;

/// The proxy still takes clients and routes a read.
async fn still_serving(addr: SocketAddr) {
    let client = connect(addr, "app", DATABASE)
        .await
        .expect("the proxy stopped taking clients");
    assert_eq!(node_of_read(&client).await, REPLICA);
}

/// Fails unless `messages` is nothing at all (the proxy just closed) or a
/// single ErrorResponse with one of `codes`.
fn closed_or_error(what: &str, messages: &[RawMessage], codes: &[&str]) {
    let ok = match messages {
        [] => true,
        [only] => only.code().is_some_and(|c| codes.contains(&c.as_str())),
        _ => false,
    };
    assert!(
        ok,
        "{what}: expected an ErrorResponse {codes:?} or a closed connection, got {:?}",
        summary(messages)
    );
}

/// Fails unless the last of `messages`, all the proxy sent before closing,
/// is an ErrorResponse 08P01.
fn ends_with_08p01(messages: &[RawMessage]) {
    assert!(
        matches!(messages, [.., last] if last.code().as_deref() == Some("08P01")),
        "expected an ErrorResponse 08P01 and the end of the connection, got {:?}",
        summary(messages)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_startup_packets_are_refused() {
    bounded(async {
        let addr = shared_proxy();
        let cases: [(&str, Vec<u8>, &[&str]); 4] = [
            ("length 3", vec![0, 0, 0, 3], &["08P01"]),
            (
                "an HTTP request",
                b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
                &["08P01"],
            ),
            (
                "length over the startup limit",
                vec![0x00, 0x10, 0x00, 0x00, 0, 3, 0, 0],
                &["08P01"],
            ),
            (
                "protocol version 1234.5678",
                [8u32.to_be_bytes(), 0x04D2_162Eu32.to_be_bytes()].concat(),
                &["08P01", "0A000"],
            ),
        ];
        for (what, bytes, codes) in cases {
            let mut client = RawClient::connect(addr).await.unwrap();
            client.send(&bytes).await.unwrap();
            let messages = client
                .recv_to_end()
                .await
                .unwrap_or_else(|e| panic!("{what}: {e:#}"));
            closed_or_error(what, &messages, codes);
            still_serving(addr).await;
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_message_type_ends_the_session_with_08p01() {
    bounded(async {
        let addr = shared_proxy();
        let mut client = RawClient::login_trust(addr, "trustuser", DATABASE)
            .await
            .unwrap();
        // A working session first.
        client
            .send(&raw::query("SELECT current_setting('cluster_name')"))
            .await
            .unwrap();
        let answer = client.recv_until(b'Z').await.unwrap();
        assert!(
            answer.iter().any(|m| m.ty == b'D'),
            "{:?}",
            summary(&answer)
        );
        client.send(&raw::message(b'y', b"")).await.unwrap();
        let messages = client.recv_to_end().await.unwrap();
        ends_with_08p01(&messages);
        still_serving(addr).await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_over_max_message_size_is_refused() {
    bounded(async {
        let proxy = start_proxy("max_message_size = \"64kB\"");
        let addr = proxy.addr;
        // Under the limit is fine.
        let client = connect(addr, "app", DATABASE).await.unwrap();
        let under = "x".repeat(60_000);
        let len: i32 = client
            .query_one("SELECT length($1::text)", &[&under])
            .await
            .unwrap()
            .get(0);
        assert_eq!(len, 60_000);
        // Raw: only the header of a 100 kB Query; the proxy must refuse it
        // from the length alone.
        let mut raw_client = RawClient::login_trust(addr, "trustuser", DATABASE)
            .await
            .unwrap();
        let mut header = vec![b'Q'];
        header.extend_from_slice(&100_000u32.to_be_bytes());
        header.extend_from_slice(b"SELECT '");
        raw_client.send(&header).await.unwrap();
        let messages = raw_client.recv_to_end().await.unwrap();
        ends_with_08p01(&messages);
        // tokio-postgres with a 100 kB parameter: the statement fails and
        // the connection ends.
        let over = "y".repeat(100_000);
        let err = client
            .query_one("SELECT length($1::text)", &[&over])
            .await
            .unwrap_err();
        if err.code().is_some() {
            assert_eq!(code_of(&err), "08P01", "{err:?}");
        }
        eventually(
            "the oversized client to be closed",
            Duration::from_secs(5),
            || async { client.simple_query("SELECT 1").await.is_err() },
        )
        .await
        .unwrap();
        still_serving(addr).await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn third_client_over_max_client_connections_gets_53300() {
    bounded(async {
        let proxy = start_proxy("max_client_connections = 2");
        let addr = proxy.addr;
        // Only authenticated clients take a slot (the harness's readiness probe does not).
        let first = connect(addr, "app", DATABASE).await.unwrap();
        let second = connect(addr, "app", DATABASE).await.unwrap();
        assert_eq!(node_of_read(&first).await, REPLICA);
        assert_eq!(node_of_read(&second).await, REPLICA);
        let err = match connect(addr, "app", DATABASE).await {
            Ok(_) => panic!("a third client got in"),
            Err(e) => e,
        };
        let db = err
            .chain()
            .find_map(|e| e.downcast_ref::<tokio_postgres::Error>())
            .and_then(|e| e.as_db_error())
            .unwrap_or_else(|| panic!("no server error: {err:#}"))
            .clone();
        assert_eq!(
            (db.code().code(), db.message()),
            ("53300", "sorry, too many clients already")
        );
        // The first two keep working; once one leaves, another gets in.
        assert_eq!(node_of_read(&second).await, REPLICA);
        drop(first);
        eventually("a slot to free up", Duration::from_secs(5), || async {
            connect(addr, "app", DATABASE).await.is_ok()
        })
        .await
        .unwrap();
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_replica_gets_no_reads_and_writes_go_on() {
    bounded(async {
        let cluster = Cluster::shared();
        let t = unique("lim_down");
        on_primary(&format!("CREATE TABLE {t} (id int)"));
        let closed = free_port();
        let addr = free_addr();
        let standard = proxy_config_with(cluster, addr, "");
        let replica_port = format!("port = {}\n", cluster.replica.port);
        assert_eq!(standard.matches(&replica_port).count(), 1);
        let config = standard.replace(&replica_port, &format!("port = {closed}\n"));
        let proxy = ProxyProcess::start(&config, addr).unwrap();
        let client = connect(proxy.addr, "app", DATABASE).await.unwrap();
        // The health monitor found db02 down before the proxy took clients: reads go to db01.
        assert_eq!(node_of_read(&client).await, PRIMARY);
        let down = format!("backend down backend=db02 (127.0.0.1:{closed})");
        assert!(
            proxy.log().contains(&down),
            "no `{down}` in the proxy's log"
        );
        // Writes and transactions use the primary.
        assert_eq!(
            simple_first(
                &client,
                &format!("INSERT INTO {t} VALUES (1) RETURNING current_setting('cluster_name')")
            )
            .await,
            PRIMARY
        );
        client.batch_execute("BEGIN").await.unwrap();
        assert_eq!(node_of_read(&client).await, PRIMARY);
        client.batch_execute("COMMIT").await.unwrap();
        assert_eq!(on_primary(&format!("SELECT count(*) FROM {t}")), "1");
        // And the proxy takes new clients that can write.
        let other = connect(proxy.addr, "app", DATABASE).await.unwrap();
        other
            .batch_execute(&format!("INSERT INTO {t} VALUES (2)"))
            .await
            .unwrap();
        assert_eq!(on_primary(&format!("SELECT count(*) FROM {t}")), "2");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssl_request_is_answered_n_and_the_session_proceeds() {
    bounded(async {
        let addr = shared_proxy();
        let mut client = RawClient::connect(addr).await.unwrap();
        client.send(&raw::ssl_request()).await.unwrap();
        assert_eq!(client.recv_byte().await.unwrap(), Some(b'N'));
        client
            .send(&raw::startup_packet(&[
                ("user", "trustuser"),
                ("database", DATABASE),
            ]))
            .await
            .unwrap();
        let login = client.recv_until(b'Z').await.unwrap();
        assert!(login.iter().all(|m| m.ty != b'E'), "{:?}", summary(&login));
        client
            .send(&raw::query("SELECT current_setting('cluster_name')"))
            .await
            .unwrap();
        let answer = client.recv_until(b'Z').await.unwrap();
        let row = answer.iter().find(|m| m.ty == b'D').expect("a DataRow");
        assert!(row.body.ends_with(REPLICA.as_bytes()), "{:?}", row.body);

        let (prefer, require) = tokio::task::spawn_blocking(move || {
            let args = [
                "-X",
                "-A",
                "-t",
                "-c",
                "SELECT current_setting('cluster_name')",
            ];
            (
                psql_env(addr, "app", &args, "", &[("PGSSLMODE", "prefer")]).into_text(),
                psql_env(addr, "app", &args, "", &[("PGSSLMODE", "require")]).into_text(),
            )
        })
        .await
        .unwrap();
        assert!(prefer.success, "sslmode=prefer: {}", prefer.stderr);
        assert_eq!(prefer.stdout.trim(), REPLICA);
        assert!(!require.success, "sslmode=require connected without TLS");
        assert!(
            require.stderr.contains("does not support SSL"),
            "sslmode=require: {}",
            require.stderr
        );
        still_serving(addr).await;
    })
    .await
}

/// SIGTERM: the proxy stops accepting, tells idle clients 57P01, lets a
/// client finish its transaction, then exits 0 within shutdown_timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_open_transactions_finish_then_exits_0() {
    bounded(async {
        let t = replicated("lim_shutdown", |t| format!("CREATE TABLE {t} (id int)")).await;
        let mut proxy = start_proxy("shutdown_timeout = \"10s\"");
        let addr = proxy.addr;
        let in_tx = connect(addr, "app", DATABASE).await.unwrap();
        in_tx.batch_execute("BEGIN").await.unwrap();
        in_tx
            .batch_execute(&format!("INSERT INTO {t} VALUES (1)"))
            .await
            .unwrap();
        let (idle, mut idle_events) = connect_with_messages(addr, "app", DATABASE).await.unwrap();
        assert_eq!(node_of_read(&idle).await, REPLICA);

        let signalled = Instant::now();
        let exit = tokio::task::spawn_blocking(move || {
            let status = proxy.terminate();
            (status, proxy.log())
        });

        // New connections are refused soon.
        eventually(
            "the proxy to stop accepting",
            Duration::from_secs(5),
            || async { tokio::net::TcpStream::connect(addr).await.is_err() },
        )
        .await
        .unwrap();
        // The idle client is told 57P01 (or at least disconnected).
        let idle_end = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match idle_events.recv().await {
                    Some(Ok(AsyncMessage::Notice(_))) => continue,
                    Some(Ok(other)) => break format!("unexpected {other:?}"),
                    Some(Err(e)) => break code_of_or_text(&e),
                    None => break "closed".to_owned(),
                }
            }
        })
        .await
        .expect("the idle client was not disconnected within 5 s");
        assert!(
            idle_end == "57P01" || idle_end == "closed",
            "idle client: {idle_end}"
        );
        assert!(idle.simple_query("SELECT 1").await.is_err());

        // The transaction can still finish.
        in_tx
            .batch_execute(&format!("INSERT INTO {t} VALUES (2)"))
            .await
            .expect("a statement in the open transaction after SIGTERM");
        in_tx
            .batch_execute("COMMIT")
            .await
            .expect("COMMIT after SIGTERM");
        assert_eq!(on_primary(&format!("SELECT count(*) FROM {t}")), "2");

        let (status, log) = exit.await.unwrap();
        let status = status.unwrap_or_else(|e| panic!("the proxy did not exit: {e:#}"));
        let took = signalled.elapsed();
        assert!(status.success(), "exit status {status}; log:\n{log}");
        assert!(took < Duration::from_secs(10), "exit took {took:?}");
        // The committed client is disconnected as well.
        assert!(in_tx.simple_query("SELECT 1").await.is_err());
    })
    .await
}

fn code_of_or_text(e: &tokio_postgres::Error) -> String {
    e.code().map(|c| c.code().to_owned()).unwrap_or_else(|| {
        if e.is_closed() {
            "closed".into()
        } else {
            e.to_string()
        }
    })
}
