//! COPY in both directions, LISTEN/NOTIFY and notices relayed while the
//! client is idle, and large results and parameters that must come through
//! the proxy byte for byte.

use pgrepl_tests::roles::DATABASE;
use pgrepl_tests::suite::{
    bounded, bounded_for, caught_up, client, connect_with_messages, node_of_read, on_primary,
    psql_bytes, psql_script, replicated, shared_proxy, text_rows, unique, ConnectionEvent, PRIMARY,
    REPLICA,
};
use pgrepl_tests::throttle::Throttle;
use pgrepl_tests::{connect, wait_until, Cluster};
use std::time::Duration;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::error::DbError;
use tokio_postgres::types::Type;
use tokio_postgres::{AsyncMessage, Notification};

/// The next notification or notice; fails after 10 s or if the connection
/// reports an error first.
async fn next_message(rx: &mut UnboundedReceiver<ConnectionEvent>) -> AsyncMessage {
    match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
        Err(_) => panic!("no message from the connection within 10 s"),
        Ok(None) => panic!("the connection ended without the expected message"),
        Ok(Some(Err(e))) => panic!("the connection failed: {e:?}"),
        Ok(Some(Ok(message))) => message,
    }
}

/// The next message, which must be a notification.
async fn next_notification(rx: &mut UnboundedReceiver<ConnectionEvent>) -> Notification {
    match next_message(rx).await {
        AsyncMessage::Notification(n) => n,
        other => panic!("expected a notification, got {other:?}"),
    }
}

/// The next message, which must be a notice.
async fn next_notice(rx: &mut UnboundedReceiver<ConnectionEvent>) -> DbError {
    match next_message(rx).await {
        AsyncMessage::Notice(notice) => notice,
        other => panic!("expected a notice, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_in_binary_lands_on_the_primary() {
    bounded(async {
        let t = replicated("cp_in", |t| {
            format!("CREATE TABLE {t} (id int PRIMARY KEY, note text)")
        })
        .await;
        let client = client().await;
        let step = Duration::from_secs(15);
        let sink = bounded_for(
            step,
            client.copy_in(&format!("COPY {t} (id, note) FROM STDIN (FORMAT binary)")),
        )
        .await
        .unwrap();
        let writer = BinaryCopyInWriter::new(sink, &[Type::INT4, Type::TEXT]);
        tokio::pin!(writer);
        bounded_for(step, async {
            for id in 1..=10_000i32 {
                let note = format!("row {id}\twith tab");
                writer.as_mut().write(&[&id, &note]).await.unwrap();
            }
        })
        .await;
        let copied = bounded_for(step, writer.finish()).await.unwrap();
        assert_eq!(copied, 10_000);
        assert_eq!(
            on_primary(&format!(
                "SELECT count(*), sum(id), count(*) FILTER (WHERE note = 'row ' || id || E'\\twith tab') FROM {t}"
            )),
            "10000|50005000|10000"
        );
        // The session goes on, reads on the replica.
        let after = bounded_for(step, node_of_read(&client)).await;
        assert_eq!(after, REPLICA);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_in_text_from_psql_lands_on_the_primary() {
    bounded(async {
        let t = unique("cp_psql");
        on_primary(&format!("CREATE TABLE {t} (id int, note text)"));
        let mut script = format!("COPY {t} FROM STDIN;\n");
        for id in 1..=2000 {
            script += &format!("{id}\tnote {id}\n");
        }
        script += "\\N\t\\N\n\\.\n";
        let run = psql_script(script).await;
        assert!(run.success, "psql COPY FROM STDIN failed: {}", run.stderr);
        assert_eq!(
            on_primary(&format!(
                "SELECT count(*), sum(id), count(*) FILTER (WHERE id IS NULL) FROM {t}"
            )),
            "2001|2001000|1"
        );
    })
    .await
}

/// COPY ... TO STDOUT through the proxy returns exactly the bytes a direct
/// connection to the primary gets, in text and binary format.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_out_matches_a_direct_connection() {
    bounded(async {
        let t = replicated("cp_out", |t| {
            format!(
                "CREATE TABLE {t} (id int, note text, data bytea);\n\
                 INSERT INTO {t} SELECT g, CASE WHEN g % 7 = 0 THEN NULL ELSE 'line ' || g || E'\\t\\n\\\\' END, \
                 decode(md5(g::text), 'hex') FROM generate_series(1, 20000) g;\n"
            )
        })
        .await;
        let primary = Cluster::shared().primary.addr();
        for sql in [
            format!("COPY {t} TO STDOUT"),
            format!("COPY {t} TO STDOUT (FORMAT binary)"),
            format!("COPY (SELECT * FROM {t} WHERE id % 2 = 0) TO STDOUT (FORMAT csv, HEADER)"),
        ] {
            let (via_proxy, direct) = tokio::task::spawn_blocking({
                let sql = sql.clone();
                move || {
                    let args = ["-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql.as_str()];
                    (
                        psql_bytes(shared_proxy(), "app", &args, ""),
                        psql_bytes(primary, "app", &args, ""),
                    )
                }
            })
            .await
            .unwrap();
            assert!(via_proxy.success, "{sql} via the proxy: {}", via_proxy.stderr);
            assert!(direct.success, "{sql} direct: {}", direct.stderr);
            assert!(direct.stdout.len() > 100_000, "{sql}: too little output");
            assert!(
                via_proxy.stdout == direct.stdout,
                "{sql}: {} bytes via the proxy, {} direct, first difference at byte {:?}",
                via_proxy.stdout.len(),
                direct.stdout.len(),
                via_proxy
                    .stdout
                    .iter()
                    .zip(&direct.stdout)
                    .position(|(a, b)| a != b)
            );
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notification_reaches_an_idle_listener() {
    bounded(async {
        let channel = unique("chan");
        let (listener, mut rx) = connect_with_messages(shared_proxy(), "app", DATABASE)
            .await
            .unwrap();
        listener
            .batch_execute(&format!("LISTEN {channel}"))
            .await
            .unwrap();
        let notifier = client().await;
        notifier
            .batch_execute(&format!("NOTIFY {channel}, 'hello'"))
            .await
            .unwrap();
        // The listener sends nothing: the proxy must relay it while idle.
        let n = next_notification(&mut rx).await;
        assert_eq!((n.channel(), n.payload()), (channel.as_str(), "hello"));
        // One sent by a transaction arrives when it commits.
        notifier
            .batch_execute(&format!("BEGIN; NOTIFY {channel}, 'in tx'; COMMIT"))
            .await
            .unwrap();
        assert_eq!(next_notification(&mut rx).await.payload(), "in tx");
        // The listener still works after a read, which stays on the primary: the session
        // is pinned there while it listens.
        assert_eq!(node_of_read(&listener).await, PRIMARY);
        notifier
            .batch_execute(&format!("NOTIFY {channel}, 'again'"))
            .await
            .unwrap();
        assert_eq!(next_notification(&mut rx).await.payload(), "again");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notice_reaches_the_client() {
    bounded(async {
        let (client, mut rx) = connect_with_messages(shared_proxy(), "app", DATABASE)
            .await
            .unwrap();
        client
            .batch_execute("DO $$BEGIN RAISE NOTICE 'hi'; END$$")
            .await
            .unwrap();
        let notice = next_notice(&mut rx).await;
        assert_eq!(
            (notice.severity(), notice.code().code(), notice.message()),
            ("NOTICE", "00000", "hi")
        );
        // A warning with detail and hint keeps its fields.
        client
            .batch_execute(
                "DO $$BEGIN RAISE WARNING 'careful' USING DETAIL = 'the detail', HINT = 'the hint'; END$$",
            )
            .await
            .unwrap();
        let notice = next_notice(&mut rx).await;
        assert_eq!(
            (
                notice.severity(),
                notice.message(),
                notice.detail(),
                notice.hint()
            ),
            ("WARNING", "careful", Some("the detail"), Some("the hint"))
        );
    })
    .await
}

const LARGE_QUERY: &str = "SELECT g, repeat(md5(g::text), 4) AS t, \
    decode(repeat(md5(g::text), 2), 'hex') AS b FROM generate_series(1, 50000) g";

/// 50,000 rows of text and bytea through the proxy equal the same query on
/// a direct connection to the replica, in both protocols.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_result_equals_a_direct_connection() {
    bounded(async {
        let via_proxy = client().await;
        let direct = connect(Cluster::shared().replica.addr(), "app", DATABASE)
            .await
            .unwrap();
        let rows = |rows: Vec<tokio_postgres::Row>| {
            rows.iter()
                .map(|r| {
                    (
                        r.get::<_, i32>(0),
                        r.get::<_, String>(1),
                        r.get::<_, Vec<u8>>(2),
                    )
                })
                .collect::<Vec<_>>()
        };
        let got = rows(via_proxy.query(LARGE_QUERY, &[]).await.unwrap());
        let want = rows(direct.query(LARGE_QUERY, &[]).await.unwrap());
        assert_eq!(got.len(), 50_000);
        assert!(
            got == want,
            "extended-protocol rows differ from the replica's"
        );
        let got = text_rows(&via_proxy.simple_query(LARGE_QUERY).await.unwrap());
        let want = text_rows(&direct.simple_query(LARGE_QUERY).await.unwrap());
        assert_eq!(got.len(), 50_000);
        assert!(
            got == want,
            "simple-protocol rows differ from the replica's"
        );
    })
    .await
}

/// Deterministic bytes that do not compress to a pattern.
fn pseudo_random_bytes(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_megabyte_bytea_parameter_round_trips() {
    bounded(async {
        let t = replicated("big_bytea", |t| {
            format!("CREATE TABLE {t} (id int PRIMARY KEY, data bytea)")
        })
        .await;
        let data = pseudo_random_bytes(16 * 1024 * 1024);
        let client = client().await;
        let n = client
            .execute(&format!("INSERT INTO {t} VALUES ($1, $2)"), &[&1i32, &data])
            .await
            .unwrap();
        assert_eq!(n, 1);
        let direct = connect(Cluster::shared().primary.addr(), "app", DATABASE)
            .await
            .unwrap();
        let want_md5: String = direct
            .query_one("SELECT md5($1::bytea)", &[&data])
            .await
            .unwrap()
            .get(0);
        let stored_md5: String = direct
            .query_one(&format!("SELECT md5(data) FROM {t} WHERE id = 1"), &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(
            stored_md5, want_md5,
            "the stored value differs from the parameter"
        );
        caught_up().await;
        let row = client
            .query_one(
                &format!("SELECT data, md5(data) FROM {t} WHERE id = 1"),
                &[],
            )
            .await
            .unwrap();
        let back: Vec<u8> = row.get(0);
        assert_eq!(row.get::<_, String>(1), want_md5);
        assert!(
            back == data,
            "the value read back through the proxy differs"
        );
        // The same parameter through the proxy in a read: md5 computed remotely.
        let echoed: String = client
            .query_one("SELECT md5($1::bytea)", &[&data])
            .await
            .unwrap()
            .get(0);
        assert_eq!(echoed, want_md5);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_result_to_a_client_that_stops_reading_arrives_whole_once_it_reads() {
    bounded(async {
        let throttle = Throttle::start(shared_proxy()).await;
        let client = connect(throttle.addr, pgrepl_tests::roles::APP.name, DATABASE)
            .await
            .unwrap();
        throttle.hold(true);
        // 61 MB: far past what the sockets (a few MB each way) and the proxy's 1 MiB mark for
        // the client's output hold.
        let sql = "SELECT i, repeat('x', 1000) AS pad FROM generate_series(1, 60000) AS i";
        let query = tokio::spawn(async move {
            let rows = client.simple_query(sql).await.unwrap();
            (client, rows)
        });
        // The proxy stops reading the replica once its output to the client is at its mark:
        // the replica's backend then waits on writing to it.
        let blocked = format!(
            "SELECT count(*) > 0 FROM pg_stat_activity \
             WHERE wait_event = 'ClientWrite' AND query = '{}'",
            sql.replace('\'', "''")
        );
        tokio::task::spawn_blocking(move || {
            wait_until(
                "the replica's backend waiting to write the result",
                Duration::from_secs(20),
                || {
                    Ok(Cluster::shared()
                        .replica
                        .psql(pgrepl_tests::roles::APP.name, DATABASE, &blocked)?
                        .trim()
                        == "t")
                },
            )
        })
        .await
        .unwrap()
        .unwrap();
        assert!(
            !query.is_finished(),
            "the result arrived while the client read nothing"
        );
        throttle.hold(false);
        let (client, rows) = query.await.unwrap();
        let rows = text_rows(&rows);
        assert_eq!(rows.len(), 60000, "every row arrives");
        for (n, row) in rows.iter().enumerate() {
            assert_eq!(row[0].as_deref(), Some((n + 1).to_string().as_str()));
            assert_eq!(row[1].as_deref().map(str::len), Some(1000));
        }
        // The session goes on, answering in order.
        let after = client.simple_query("SELECT 'after'").await.unwrap();
        assert_eq!(text_rows(&after), vec![vec![Some("after".to_owned())]]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_in_larger_than_the_servers_buffers_lands_whole() {
    bounded(async {
        let t = replicated("cp_big", |t| {
            format!("CREATE TABLE {t} (id int PRIMARY KEY, pad text)")
        })
        .await;
        let client = client().await;
        let sink = client
            .copy_in(&format!("COPY {t} (id, pad) FROM STDIN (FORMAT binary)"))
            .await
            .unwrap();
        let writer = BinaryCopyInWriter::new(sink, &[Type::INT4, Type::TEXT]);
        tokio::pin!(writer);
        // 30 MB, sent as fast as the proxy takes it: past its 1 MiB mark for a server's
        // output, so it stops reading the client until the server has taken some.
        let pad = "y".repeat(600);
        let rows: i32 = 50_000;
        for id in 0..rows {
            writer.as_mut().write(&[&id, &pad]).await.unwrap();
        }
        let copied = writer.finish().await.unwrap();
        assert_eq!(copied, rows as u64);
        let count = on_primary(&format!("SELECT count(*), sum(length(pad)) FROM {t}"));
        assert_eq!(count.trim(), format!("{rows}|{}", rows * 600));
    })
    .await;
}
