//! What real drivers do that a proxy must answer exactly as the primary would: `DEALLOCATE` of
//! a statement prepared on another server (PHP PDO, Perl DBD::Pg), Describe and Close of
//! cursors and SQL-prepared statements in a batch that runs nothing (psycopg 3 cursors WITH
//! HOLD, psql's `\gdesc`), hints read the same way in both protocols, read-only transactions
//! that are no writes, and a read the replica refuses because it writes after all.

use std::time::Duration;

use pgrepl_tests::roles::{APP, DATABASE};
use pgrepl_tests::suite::raw::{self, RawClient, RawMessage};
use pgrepl_tests::suite::{
    bounded, bounded_for, node_of_read, on_replica, own_cluster_and_proxy, replicated,
    shared_proxy, simple_first, start_proxy, PRIMARY, REPLICA,
};
use pgrepl_tests::{connect, endpoint::Metrics};

/// The cluster name in the first DataRow of `answer`.
fn node_in(answer: &[RawMessage]) -> String {
    let row = answer
        .iter()
        .find(|m| m.ty == b'D')
        .unwrap_or_else(|| panic!("no row in {:?}", raw::summary(answer)));
    let text = String::from_utf8_lossy(&row.body);
    [PRIMARY, REPLICA]
        .into_iter()
        .find(|node| text.contains(node))
        .unwrap_or_else(|| panic!("no node name in {text:?}"))
        .to_owned()
}

/// A Describe (`D`) or Close (`C`) of a portal (`P`) or statement (`S`).
fn target_message(ty: u8, kind: u8, name: &str) -> Vec<u8> {
    let mut body = vec![kind];
    body.extend_from_slice(name.as_bytes());
    body.push(0);
    raw::message(ty, &body)
}

async fn trust_client() -> RawClient {
    RawClient::login_trust(shared_proxy(), "trustuser", DATABASE)
        .await
        .unwrap()
}

async fn simple(client: &mut RawClient, sql: &str) -> Vec<RawMessage> {
    client.send(&raw::query(sql)).await.unwrap();
    client.recv_until(b'Z').await.unwrap()
}

/// The SQLSTATE of the first ErrorResponse in `answer`.
fn error_code(answer: &[RawMessage]) -> Option<String> {
    answer.iter().find(|m| m.ty == b'E').and_then(|m| m.code())
}

fn no_error(answer: &[RawMessage], what: &str) {
    assert!(
        answer.iter().all(|m| m.ty != b'E'),
        "{what}: {:?}",
        raw::summary(answer)
    );
}

/// Prepares statement `name` by protocol and runs it: Parse, Bind, Execute, Sync.
async fn prepare_and_run(client: &mut RawClient, name: &str, sql: &str) -> Vec<RawMessage> {
    let mut parse = format!("{name}\0{sql}\0").into_bytes();
    parse.extend_from_slice(&[0, 0]);
    let mut batch = raw::message(b'P', &parse);
    batch.extend(run_message(name));
    client.send(&batch).await.unwrap();
    client.recv_until(b'Z').await.unwrap()
}

/// Bind (no parameters, text results) of statement `name`, Execute, Sync.
fn run_message(name: &str) -> Vec<u8> {
    let mut bind = format!("\0{name}\0").into_bytes();
    bind.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    let mut batch = raw::message(b'B', &bind);
    batch.extend(raw::message(b'E', b"\0\0\0\0\0"));
    batch.extend(raw::message(b'S', b""));
    batch
}

/// PDO and DBD::Pg prepare with the protocol and drop with SQL `DEALLOCATE`. The proxy
/// prepared the statement only where it ran (the replica), so forwarding the DEALLOCATE to the
/// primary failed there, and aborted the client's transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deallocate_of_a_statement_prepared_elsewhere_succeeds_and_is_no_write() {
    bounded(async {
        let mut client = trust_client().await;
        let node = "SELECT current_setting('cluster_name')";
        let ran = prepare_and_run(&mut client, "pdo_stmt_00000001", node).await;
        assert_eq!(node_in(&ran), REPLICA, "the statement ran on the replica");

        no_error(&simple(&mut client, "BEGIN").await, "BEGIN");
        assert_eq!(node_in(&simple(&mut client, node).await), PRIMARY);
        let dropped = simple(&mut client, "DEALLOCATE pdo_stmt_00000001").await;
        no_error(&dropped, "DEALLOCATE of a statement the client prepared");
        assert!(
            dropped
                .iter()
                .any(|m| m.ty == b'C' && m.body.starts_with(b"DEALLOCATE")),
            "{:?}",
            raw::summary(&dropped)
        );
        let after = simple(&mut client, "SELECT current_setting('cluster_name')").await;
        no_error(&after, "the transaction did not abort");
        no_error(&simple(&mut client, "COMMIT").await, "COMMIT");
        // Deallocated: the server says so for a second DEALLOCATE, as PostgreSQL would.
        let again = simple(&mut client, "DEALLOCATE PREPARE pdo_stmt_00000001").await;
        assert_eq!(
            again.iter().find_map(RawMessage::code).as_deref(),
            Some("26000"),
            "{:?}",
            raw::summary(&again)
        );
        assert_eq!(
            node_in(&simple(&mut client, node).await),
            REPLICA,
            "DEALLOCATE is no write: reads stay on the replica"
        );
        // The name can be prepared anew, and runs.
        let anew = prepare_and_run(&mut client, "pdo_stmt_00000001", node).await;
        assert_eq!(node_in(&anew), REPLICA, "{:?}", raw::summary(&anew));
    })
    .await
}

/// A `DEALLOCATE` the proxy forwards (here in a string of two statements, inside a
/// transaction) drops the statement where it runs; the client's new definition under the same
/// name, which that server accepts, is the one every server runs from then on, not the old
/// one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_redefined_after_a_forwarded_deallocate_runs_its_new_text() {
    bounded(async {
        let mut client = trust_client().await;
        no_error(&simple(&mut client, "BEGIN").await, "BEGIN");
        let old = prepare_and_run(&mut client, "redone", "SELECT 'old'::text").await;
        no_error(&old, "the first definition, on the primary");
        let dropped = simple(&mut client, "DEALLOCATE redone; SELECT 1").await;
        no_error(&dropped, "DEALLOCATE where the statement is");
        let mut parse = raw::message(b'P', b"redone\0SELECT 'new'::text\0\0\0");
        parse.extend(raw::message(b'S', b""));
        client.send(&parse).await.unwrap();
        no_error(
            &client.recv_until(b'Z').await.unwrap(),
            "the new definition",
        );
        no_error(&simple(&mut client, "COMMIT").await, "COMMIT");
        client.send(&run_message("redone")).await.unwrap();
        let ran = client.recv_until(b'Z').await.unwrap();
        let row = ran.iter().find(|m| m.ty == b'D').expect("a row");
        assert!(
            String::from_utf8_lossy(&row.body).contains("new"),
            "ran {:?}",
            String::from_utf8_lossy(&row.body)
        );
    })
    .await
}

/// In a failed transaction the proxy answers DEALLOCATE as the server would: 25P02.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deallocate_in_a_failed_transaction_is_refused_as_the_server_would() {
    bounded(async {
        let mut client = trust_client().await;
        no_error(
            &prepare_and_run(&mut client, "kept", "SELECT 1").await,
            "prepare",
        );
        simple(&mut client, "BEGIN").await;
        simple(&mut client, "SELECT 1/0").await;
        let refused = simple(&mut client, "DEALLOCATE kept").await;
        assert_eq!(
            refused.iter().find_map(RawMessage::code).as_deref(),
            Some("25P02"),
            "{:?}",
            raw::summary(&refused)
        );
        simple(&mut client, "ROLLBACK").await;
        client.send(&run_message("kept")).await.unwrap();
        no_error(
            &client.recv_until(b'Z').await.unwrap(),
            "the statement is still there",
        );
    })
    .await
}

/// psycopg 3 declares `WITH HOLD` cursors, then describes and closes them by protocol in
/// batches that run no statement; the cursor lives on the primary (it pins the session).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_and_close_of_a_holdable_cursor_go_where_it_lives() {
    bounded(async {
        let mut client = trust_client().await;
        let read = simple(&mut client, "SELECT current_setting('cluster_name')").await;
        assert_eq!(
            node_in(&read),
            REPLICA,
            "the session has a replica connection"
        );
        no_error(
            &simple(
                &mut client,
                "DECLARE held CURSOR WITH HOLD FOR SELECT current_setting('cluster_name') AS node",
            )
            .await,
            "DECLARE",
        );
        let mut batch = target_message(b'D', b'P', "held");
        batch.extend(raw::message(b'S', b""));
        client.send(&batch).await.unwrap();
        let described = client.recv_until(b'Z').await.unwrap();
        no_error(&described, "Describe of the cursor");
        assert!(
            described.iter().any(|m| m.ty == b'T'),
            "{:?}",
            raw::summary(&described)
        );

        let fetched = simple(&mut client, "FETCH ALL FROM held").await;
        assert_eq!(node_in(&fetched), PRIMARY);

        let mut batch = target_message(b'C', b'P', "held");
        batch.extend(raw::message(b'S', b""));
        client.send(&batch).await.unwrap();
        no_error(
            &client.recv_until(b'Z').await.unwrap(),
            "Close of the cursor",
        );
        let gone = simple(&mut client, "FETCH ALL FROM held").await;
        assert_eq!(
            gone.iter().find_map(RawMessage::code).as_deref(),
            Some("34000"),
            "the Close reached the cursor: {:?}",
            raw::summary(&gone)
        );
    })
    .await
}

/// psql's `\gdesc` after `PREPARE` describes a statement prepared in SQL, which exists only
/// on the primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_of_a_statement_prepared_in_sql_goes_to_the_primary() {
    bounded(async {
        let mut client = trust_client().await;
        let read = simple(&mut client, "SELECT current_setting('cluster_name')").await;
        assert_eq!(node_in(&read), REPLICA);
        no_error(
            &simple(&mut client, "PREPARE byname(int) AS SELECT $1 + 1 AS next").await,
            "PREPARE",
        );
        let mut batch = target_message(b'D', b'S', "byname");
        batch.extend(raw::message(b'S', b""));
        client.send(&batch).await.unwrap();
        let described = client.recv_until(b'Z').await.unwrap();
        no_error(&described, "Describe of the SQL statement");
        assert!(
            described.iter().any(|m| m.ty == b't') && described.iter().any(|m| m.ty == b'T'),
            "{:?}",
            raw::summary(&described)
        );
    })
    .await
}

/// `/* pgrepl:replica */` and `/* pgrepl:primary */` mean the same in both protocols: a
/// hinted replica read takes the replica even when the session would not, and a hinted
/// primary read is no write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hints_are_read_the_same_in_both_protocols() {
    bounded(async {
        let client = connect(shared_proxy(), APP.name, DATABASE).await.unwrap();
        client
            .batch_execute("SET pgrepl.route = 'primary'")
            .await
            .unwrap();
        let hinted = "/* pgrepl:replica */ SELECT current_setting('cluster_name')";
        assert_eq!(simple_first(&client, hinted).await, REPLICA, "simple");
        let row = client.query_one(hinted, &[]).await.unwrap();
        assert_eq!(row.get::<_, String>(0), REPLICA, "extended");
        client.batch_execute("RESET pgrepl.route").await.unwrap();

        let fresh = connect(shared_proxy(), APP.name, DATABASE).await.unwrap();
        let row = fresh
            .query_one(
                "/* pgrepl:primary */ SELECT current_setting('cluster_name')",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), PRIMARY);
        let row = fresh
            .query_one("SELECT current_setting('cluster_name')", &[])
            .await
            .unwrap();
        assert_eq!(
            row.get::<_, String>(0),
            REPLICA,
            "a hinted read on the primary is no write to wait for"
        );
    })
    .await
}

/// A transaction that only read, a setting or a reset leaves nothing for later reads to wait
/// for, in either protocol; a transaction that wrote does. The replica's replay is paused, so a read that waited for a
/// write would go to the primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_transactions_and_session_statements_are_no_writes() {
    bounded_for(Duration::from_secs(120), async {
        let extra = "\n[routing]\nmax_replica_lag = \"60s\"\n";
        let (cluster, proxy) = own_cluster_and_proxy("fidelity-rot", SETUP, extra);
        let client = connect(proxy.addr, APP.name, DATABASE).await.unwrap();
        on_replica(&cluster, "SELECT pg_wal_replay_pause()").await;

        client
            .batch_execute("BEGIN; SELECT count(*) FROM t; COMMIT")
            .await
            .unwrap();
        assert_eq!(node_of_read(&client).await, REPLICA, "one string");
        for statement in ["BEGIN", "SELECT count(*) FROM t", "COMMIT"] {
            client.simple_query(statement).await.unwrap();
        }
        assert_eq!(
            node_of_read(&client).await,
            REPLICA,
            "statement by statement"
        );
        let transaction = {
            client.batch_execute("BEGIN").await.unwrap();
            client.query("SELECT count(*) FROM t", &[]).await.unwrap();
            client.batch_execute("COMMIT").await
        };
        transaction.unwrap();
        assert_eq!(node_of_read(&client).await, REPLICA, "extended protocol");
        // Nor do statements that change only the session (pgjdbc sends its SETs by protocol).
        client
            .execute("SET extra_float_digits = 3", &[])
            .await
            .unwrap();
        for statement in ["DISCARD ALL", "DEALLOCATE ALL", "SET TIME ZONE 'UTC'"] {
            client.batch_execute(statement).await.unwrap();
        }
        assert_eq!(node_of_read(&client).await, REPLICA, "settings and resets");

        client
            .batch_execute("BEGIN; INSERT INTO t VALUES (1); COMMIT")
            .await
            .unwrap();
        assert_eq!(
            node_of_read(&client).await,
            PRIMARY,
            "after a transaction that wrote, reads wait for the replica"
        );
        on_replica(&cluster, "SELECT pg_wal_replay_resume()").await;
    })
    .await
}

/// A table `t` that `trustuser` may write, and `sneaky()`, which writes to it and which the
/// proxies of these tests are told is read-only.
const SETUP: &str = "CREATE TABLE t (id int);\n\
    GRANT ALL ON t TO trustuser;\n\
    CREATE FUNCTION sneaky() RETURNS int LANGUAGE sql AS $$ INSERT INTO t VALUES (0) RETURNING id $$;\n";

/// Whatever else a unit holds, one statement that writes makes it a write: a batch with a
/// `SET` or a hinted read before its `INSERT`, and a read the replica refused (it wrote after
/// all) that ran on the primary. The replica's replay is paused, so a read that waits for a
/// write goes to the primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unit_that_writes_anywhere_in_it_is_a_write() {
    bounded_for(Duration::from_secs(120), async {
        let extra = "\n[routing]\nmax_replica_lag = \"60s\"\nread_only_functions = [\"sneaky\"]\n";
        let (cluster, proxy) = own_cluster_and_proxy("fidelity-writes", SETUP, extra);
        on_replica(&cluster, "SELECT pg_wal_replay_pause()").await;
        let node = "SELECT current_setting('cluster_name')";
        for first in [
            "SET application_name = 'batch'",
            "/* pgrepl:primary */ SELECT 1",
        ] {
            let mut client = RawClient::login_trust(proxy.addr, "trustuser", DATABASE)
                .await
                .unwrap();
            assert_eq!(node_in(&simple(&mut client, node).await), REPLICA);
            let mut batch = Vec::new();
            for sql in [first, "INSERT INTO t VALUES (1)"] {
                batch.extend(raw::message(b'P', format!("\0{sql}\0\0\0").as_bytes()));
                batch.extend(raw::message(b'B', &[0, 0, 0, 0, 0, 0, 0, 0]));
                batch.extend(raw::message(b'E', &[0, 0, 0, 0, 0]));
            }
            batch.extend(raw::message(b'S', b""));
            client.send(&batch).await.unwrap();
            no_error(&client.recv_until(b'Z').await.unwrap(), first);
            assert_eq!(
                node_in(&simple(&mut client, node).await),
                PRIMARY,
                "after a batch of {first:?} and an INSERT"
            );
        }
        let client = connect(proxy.addr, APP.name, DATABASE).await.unwrap();
        assert_eq!(node_of_read(&client).await, REPLICA);
        assert_eq!(
            simple_first(&client, "SELECT sneaky()").await,
            "0",
            "re-run on the primary"
        );
        assert_eq!(
            node_of_read(&client).await,
            PRIMARY,
            "the refused read wrote: the next read waits for it"
        );
        on_replica(&cluster, "SELECT pg_wal_replay_resume()").await;
    })
    .await
}

/// A function the configuration calls read-only, which writes: the replica refuses the read
/// (25006), and the proxy runs it on the primary instead of failing it, counted as a
/// misrouted retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_the_replica_refuses_runs_on_the_primary() {
    bounded(async {
        let f = replicated("refused", |f| {
            format!(
                "CREATE TABLE {f}_log (node text);\n\
                 CREATE FUNCTION {f}_sneaky() RETURNS text LANGUAGE sql AS $$\n\
                 INSERT INTO {f}_log VALUES (current_setting('cluster_name'));\n\
                 SELECT current_setting('cluster_name') $$;\n"
            )
        })
        .await;
        let proxy = start_proxy(&format!(
            "[routing]\nread_only_functions = [\"{f}_sneaky\"]\nread_your_writes = \"off\"\n"
        ));
        let client = connect(proxy.addr, APP.name, DATABASE).await.unwrap();
        let retries = [("reason", "misrouted")];
        let before = Metrics::scrape(proxy.endpoint()).value("pgrepl_read_retries_total", &retries);
        let sql = format!("SELECT {f}_sneaky()");
        assert_eq!(
            simple_first(&client, &sql).await,
            PRIMARY,
            "simple protocol"
        );
        let row = client.query_one(sql.as_str(), &[]).await.unwrap();
        assert_eq!(row.get::<_, String>(0), PRIMARY, "extended protocol");
        let after = Metrics::scrape(proxy.endpoint()).value("pgrepl_read_retries_total", &retries);
        assert_eq!(after - before, 2.0, "both re-runs counted");
        let logged = simple_first(
            &client,
            &format!("/* pgrepl:primary */ SELECT count(*) FROM {f}_log"),
        )
        .await;
        assert_eq!(logged, "2", "each ran once, on the primary");
        assert!(
            proxy.log().contains("a replica refused a read that writes"),
            "logged:\n{}",
            proxy.log()
        );
        assert_eq!(
            node_of_read(&client).await,
            REPLICA,
            "the session still reads there"
        );
    })
    .await
}

/// A query the proxy sends itself (a replay of the session's settings, the question whether a
/// session still holds state) destroys the server's unnamed statement, as any simple query
/// does: a Bind of the unnamed statement after one must find it prepared again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_unnamed_statement_survives_the_proxys_own_queries() {
    bounded(async {
        let mut client = trust_client().await;
        let first =
            prepare_and_run(&mut client, "", "SELECT current_setting('cluster_name')").await;
        no_error(&first, "the unnamed statement's first run");
        let node = node_in(&first);
        // A setting the connection that ran it lacks: replayed there before the next unit.
        no_error(&simple(&mut client, "SET work_mem = '5MB'").await, "SET");
        client.send(&run_message("")).await.unwrap();
        let again = client.recv_until(b'Z').await.unwrap();
        no_error(&again, "a Bind of the unnamed statement after the replay");
        assert_eq!(node_in(&again), node, "it runs where it ran before");
        // The question whether state is left, after a unit that may have released it.
        no_error(
            &simple(&mut client, "SELECT pg_advisory_lock(4711)").await,
            "lock",
        );
        let unlock = prepare_and_run(
            &mut client,
            "",
            "SELECT pg_advisory_unlock(4711), current_setting('cluster_name')",
        )
        .await;
        no_error(&unlock, "unlock");
        client.send(&run_message("")).await.unwrap();
        let after_probe = client.recv_until(b'Z').await.unwrap();
        no_error(
            &after_probe,
            "a Bind of the unnamed statement after the probe",
        );
        assert_eq!(node_in(&after_probe), PRIMARY);
    })
    .await;
}

/// A Parse the server rejected leaves no statement, as directly: a later Bind of it is
/// refused with 26000, and the rejected text is not sent again in its place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_unnamed_parse_leaves_no_statement() {
    bounded(async {
        let mut client = trust_client().await;
        let rejected = prepare_and_run(&mut client, "", "SELEC 1").await;
        let code = error_code(&rejected);
        assert_eq!(
            code.as_deref(),
            Some("42601"),
            "{:?}",
            raw::summary(&rejected)
        );
        client.send(&run_message("")).await.unwrap();
        let bound = client.recv_until(b'Z').await.unwrap();
        let code = error_code(&bound);
        assert_eq!(code.as_deref(), Some("26000"), "{:?}", raw::summary(&bound));
    })
    .await;
}

/// A statement the proxy prepares on a connection that lacks it, in a batch where an error
/// comes first, is skipped by the server: the proxy must not count it as prepared there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_prepared_in_a_batch_an_error_cut_short_is_prepared_again() {
    bounded(async {
        let mut client = trust_client().await;
        let first =
            prepare_and_run(&mut client, "s2", "SELECT current_setting('cluster_name')").await;
        no_error(&first, "s2 on the replica");
        assert_eq!(node_in(&first), REPLICA);
        no_error(
            &simple(&mut client, "SET pgrepl.route = primary").await,
            "route",
        );
        // On the primary, which lacks s2: the division fails before the proxy's Parse of s2.
        let mut parse = b"\0SELECT 1/0\0".to_vec();
        parse.extend_from_slice(&[0, 0]);
        let mut batch = raw::message(b'P', &parse);
        let mut bind_unnamed = b"\0\0".to_vec();
        bind_unnamed.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        batch.extend(raw::message(b'B', &bind_unnamed));
        batch.extend(raw::message(b'E', b"\0\0\0\0\0"));
        batch.extend(run_message("s2"));
        client.send(&batch).await.unwrap();
        let cut = client.recv_until(b'Z').await.unwrap();
        let code = error_code(&cut);
        assert_eq!(code.as_deref(), Some("22012"), "{:?}", raw::summary(&cut));
        client.send(&run_message("s2")).await.unwrap();
        let again = client.recv_until(b'Z').await.unwrap();
        no_error(&again, "s2 on the primary after the cut batch");
        assert_eq!(node_in(&again), PRIMARY);
    })
    .await;
}
