//! Deferred transactions (`[routing] transaction_reads = "replica"`): a plain `BEGIN`'s
//! leading reads run on the replica, and everything the client sees (command tags, errors,
//! status bytes) is what the primary would send; every statement that is not a plain read
//! opens the real transaction on the primary at once. Each script is run through the proxy
//! and straight on db01, byte-level, and the answers compared.

use std::net::SocketAddr;
use std::time::Duration;

use pgrepl_tests::roles::DATABASE;
use pgrepl_tests::suite::raw::{self, RawClient, RawMessage};
use pgrepl_tests::suite::{bounded_for, own_cluster_and_proxy, PRIMARY, REPLICA};
use pgrepl_tests::{OwnCluster, ProxyProcess};

const LIMIT: Duration = Duration::from_secs(180);
const NODE: &str = "SELECT current_setting('cluster_name')";

fn cluster_and_proxy(name: &str) -> (OwnCluster, ProxyProcess) {
    let extra = "\n[routing]\ntransaction_reads = \"replica\"\nmax_replica_lag = \"60s\"\ncausal_wait = \"1s\"\n\n\
                 [health]\ninterval = \"100ms\"\n";
    own_cluster_and_proxy(
        name,
        "CREATE TABLE t (id int); GRANT ALL ON t TO PUBLIC;",
        extra,
    )
}

async fn login(addr: SocketAddr) -> RawClient {
    RawClient::login_trust(addr, "trustuser", DATABASE)
        .await
        .unwrap()
}

async fn simple(client: &mut RawClient, sql: &str) -> Vec<RawMessage> {
    client.send(&raw::query(sql)).await.unwrap();
    client.recv_until(b'Z').await.unwrap()
}

/// What a client can tell of an answer, row values aside: message types, command tags,
/// error and notice codes, status bytes.
fn shape(answer: &[RawMessage]) -> Vec<String> {
    answer
        .iter()
        .filter(|m| m.ty != b'S')
        .map(|m| match m.ty {
            b'C' => format!("C {}", String::from_utf8_lossy(&m.body[..m.body.len() - 1])),
            b'E' | b'N' => format!("{} {}", m.ty as char, m.field(b'C').unwrap_or_default()),
            b'Z' => format!("Z {}", m.body[0] as char),
            ty => (ty as char).to_string(),
        })
        .collect()
}

/// The first column of the first row of an answer.
fn value(answer: &[RawMessage]) -> Option<String> {
    let row = answer.iter().find(|m| m.ty == b'D')?;
    let len = i32::from_be_bytes(row.body[2..6].try_into().ok()?);
    let len = usize::try_from(len).ok()?;
    Some(String::from_utf8_lossy(&row.body[6..6 + len]).into_owned())
}

/// Runs `script` on `client`; the answers' shapes, and the node each `NODE` read ran on.
async fn run(client: &mut RawClient, script: &[&str]) -> (Vec<Vec<String>>, Vec<String>) {
    let mut shapes = Vec::new();
    let mut nodes = Vec::new();
    for sql in script {
        let answer = simple(client, sql).await;
        if *sql == NODE {
            nodes.push(value(&answer).unwrap_or_default());
        }
        shapes.push(shape(&answer));
    }
    (shapes, nodes)
}

/// Runs `script` through the proxy and on db01; the answers must be alike. Returns the
/// nodes the proxy ran the `NODE` reads on.
async fn same_as_primary(
    proxy: &mut RawClient,
    direct: &mut RawClient,
    script: &[&str],
) -> Vec<String> {
    let (through, nodes) = run(proxy, script).await;
    let (expected, _) = run(direct, script).await;
    assert_eq!(through, expected, "{script:?}");
    nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leading_reads_run_on_the_replica_and_answer_as_the_primary_would() {
    bounded_for(LIMIT, async {
        let (cluster, proxy) = cluster_and_proxy("deferred-reads");
        let mut through = login(proxy.addr).await;
        let mut direct = login(cluster.primary.addr()).await;
        // The session's first BEGIN learns its transaction defaults, on the primary.
        let first = same_as_primary(&mut through, &mut direct, &["BEGIN", NODE, "COMMIT"]).await;
        assert_eq!(first, [PRIMARY]);

        for (script, nodes) in [
            (
                &["BEGIN", NODE, NODE, "COMMIT"][..],
                &[REPLICA, REPLICA][..],
            ),
            (&["START TRANSACTION", NODE, "END"], &[REPLICA]),
            (
                &["begin isolation level read committed", NODE, "ROLLBACK"],
                &[REPLICA],
            ),
            (&["BEGIN", "SELECT count(*) FROM t", "ABORT"], &[]),
            // A failed leading read aborts the transaction, as on the primary.
            (
                &["BEGIN", NODE, "SELECT 1/0", "SELECT 1", "COMMIT"],
                &[REPLICA],
            ),
            (&["BEGIN", "SELECT 1/0", "ROLLBACK"], &[]),
            (&["BEGIN", "SELECT 1/0", "SAVEPOINT s", "ROLLBACK"], &[]),
            (&["BEGIN", "COMMIT"], &[]),
        ] {
            let ran = same_as_primary(&mut through, &mut direct, script).await;
            assert_eq!(ran, nodes, "{script:?}");
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anything_but_a_plain_read_opens_the_transaction_on_the_primary() {
    bounded_for(LIMIT, async {
        let (cluster, proxy) = cluster_and_proxy("deferred-opens");
        let mut through = login(proxy.addr).await;
        let mut direct = login(cluster.primary.addr()).await;
        same_as_primary(&mut through, &mut direct, &["BEGIN", "COMMIT"]).await;
        // (The next read's node: none where the statement fails, as on the primary, and
        // the transaction is aborted.)
        for (statement, then) in [
            ("INSERT INTO t VALUES (1)", PRIMARY),
            ("UPDATE t SET id = id WHERE id = -1", PRIMARY),
            ("SAVEPOINT s", PRIMARY),
            ("SET LOCAL work_mem = '8MB'", PRIMARY),
            ("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", ""),
            ("SELECT * FROM t WHERE false FOR UPDATE", PRIMARY),
            ("LOCK TABLE t IN SHARE MODE", PRIMARY),
            ("DECLARE c CURSOR FOR SELECT 1", PRIMARY),
            ("BEGIN", PRIMARY),
            ("/* pgrepl:primary */ SELECT 1", PRIMARY),
            ("SELECT pg_advisory_xact_lock(1)", PRIMARY),
            ("SELECT txid_current()", PRIMARY),
            ("COMMIT AND CHAIN", PRIMARY),
            ("CREATE TEMP TABLE tt (a int) ON COMMIT DROP", PRIMARY),
            // Last: the session's settings change, and its next BEGIN asks the defaults
            // again, on the primary.
            ("SET search_path = public", PRIMARY),
        ] {
            let script = ["BEGIN", NODE, statement, NODE, "COMMIT"];
            let nodes = same_as_primary(&mut through, &mut direct, &script).await;
            assert_eq!(nodes, [REPLICA, then], "{statement}");
        }
        // Modes a replica's autocommit reads cannot give are never deferred.
        for begin in [
            "BEGIN ISOLATION LEVEL REPEATABLE READ",
            "BEGIN ISOLATION LEVEL SERIALIZABLE",
            "BEGIN READ WRITE",
            "BEGIN; SELECT 1",
        ] {
            let script = [begin, NODE, "COMMIT"];
            let nodes = same_as_primary(&mut through, &mut direct, &script).await;
            assert_eq!(nodes, [PRIMARY], "{begin}");
        }
        // The session's default isolation is followed.
        let sql = "SET default_transaction_isolation = 'repeatable read'";
        same_as_primary(&mut through, &mut direct, &[sql]).await;
        for _ in 0..2 {
            let nodes =
                same_as_primary(&mut through, &mut direct, &["BEGIN", NODE, "COMMIT"]).await;
            assert_eq!(nodes, [PRIMARY], "repeatable read by default");
        }
        // Written rows are there afterwards; the rolled-back write is not.
        let script = ["BEGIN", "INSERT INTO t VALUES (10)", "ROLLBACK"];
        same_as_primary(&mut through, &mut direct, &script).await;
        let count = simple(&mut direct, "SELECT count(*) FROM t WHERE id = 10").await;
        assert_eq!(value(&count).as_deref(), Some("0"));
    })
    .await
}
