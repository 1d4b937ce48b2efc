//! Many clients at once, and clients that vanish in the middle of a
//! transaction or while holding a session lock: nothing they did may stay
//! behind on the primary.

use pgrepl_tests::roles::DATABASE;
use pgrepl_tests::suite::{
    bounded, bounded_for, eventually, node_of_read, on_primary, replicated, shared_proxy, unique,
    PRIMARY,
};
use pgrepl_tests::{conninfo, Cluster};
use std::time::Duration;
use tokio_postgres::{Client, NoTls};

const CLIENTS: i32 = 100;
const ITERATIONS: i32 = 10;

/// 100 clients, each on its own connection, each doing reads, inserts,
/// updates of one shared counter and small transactions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_concurrent_clients_mix_reads_and_writes() {
    bounded_for(Duration::from_secs(120), async {
        let t = replicated("conc", |t| {
            format!(
                "CREATE TABLE {t} (client int, i int, node text, PRIMARY KEY (client, i));\n\
                 CREATE TABLE {t}_counter (id int PRIMARY KEY, n int);\n\
                 INSERT INTO {t}_counter VALUES (1, 0);\n"
            )
        })
        .await;
        let addr = shared_proxy();
        let mut tasks = tokio::task::JoinSet::new();
        for client_id in 0..CLIENTS {
            let t = t.clone();
            tasks.spawn(async move {
                let client = pgrepl_tests::connect(addr, "app", DATABASE)
                    .await
                    .map_err(|e| format!("client {client_id}: connect: {e:#}"))?;
                run_client(&client, client_id, &t)
                    .await
                    .map_err(|e| format!("client {client_id}: {e}"))
            });
        }
        let mut failures = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(Ok(())) => {}
                Ok(Err(e)) => failures.push(e),
                Err(e) => failures.push(format!("task panicked: {e}")),
            }
        }
        assert!(
            failures.is_empty(),
            "{} of {CLIENTS} clients failed:\n{}",
            failures.len(),
            failures.join("\n")
        );
        let total = CLIENTS * ITERATIONS;
        assert_eq!(
            on_primary(&format!(
                "SELECT count(*), count(DISTINCT client), count(*) FILTER (WHERE node = 'db01') FROM {t}"
            )),
            format!("{total}|{CLIENTS}|{total}")
        );
        assert_eq!(
            on_primary(&format!("SELECT n FROM {t}_counter")),
            total.to_string()
        );
    })
    .await
}

async fn run_client(client: &Client, client_id: i32, t: &str) -> Result<(), String> {
    let insert = format!(
        "INSERT INTO {t} VALUES ($1, $2, current_setting('cluster_name')) \
         RETURNING current_setting('cluster_name')"
    );
    let bump = format!("UPDATE {t}_counter SET n = n + 1 WHERE id = 1");
    for i in 0..ITERATIONS {
        let node: String = client
            .query_one(insert.as_str(), &[&client_id, &i])
            .await
            .map_err(|e| format!("insert {i}: {e:?}"))?
            .get(0);
        if node != PRIMARY {
            return Err(format!("insert {i} ran on {node}"));
        }
        let row = client
            .query_one(
                "SELECT $1::int * 1000 + $2::int, current_setting('cluster_name')",
                &[&client_id, &i],
            )
            .await
            .map_err(|e| format!("read {i}: {e:?}"))?;
        if row.get::<_, i32>(0) != client_id * 1000 + i {
            return Err(format!("read {i} returned {}", row.get::<_, i32>(0)));
        }
        if i % 3 == 0 {
            // A transaction: its read sees its own update, on the primary.
            client
                .batch_execute("BEGIN")
                .await
                .map_err(|e| format!("BEGIN {i}: {e:?}"))?;
            client
                .execute(bump.as_str(), &[])
                .await
                .map_err(|e| format!("update in tx {i}: {e:?}"))?;
            let node: String = client
                .query_one("SELECT current_setting('cluster_name')", &[])
                .await
                .map_err(|e| format!("read in tx {i}: {e:?}"))?
                .get(0);
            if node != PRIMARY {
                return Err(format!("read in transaction {i} ran on {node}"));
            }
            client
                .batch_execute("COMMIT")
                .await
                .map_err(|e| format!("COMMIT {i}: {e:?}"))?;
        } else {
            client
                .simple_query(&bump)
                .await
                .map_err(|e| format!("update {i}: {e:?}"))?;
        }
    }
    Ok(())
}

/// A client of its own with an application_name to find its backends by;
/// the returned handle drives the connection, aborting it drops the socket
/// without a Terminate message.
async fn tagged_client(app_name: &str) -> (Client, tokio::task::JoinHandle<()>) {
    let info = format!(
        "{} application_name={app_name}",
        conninfo(shared_proxy(), "app", DATABASE)
    );
    let (client, connection) = tokio_postgres::connect(&info, NoTls).await.unwrap();
    let handle = tokio::spawn(async move {
        let _ = connection.await;
    });
    (client, handle)
}

/// Sessions of user app with this application_name that are idle in a
/// transaction on the primary.
fn idle_in_transaction(app_name: &str) -> String {
    on_primary(&format!(
        "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app' \
         AND application_name = '{app_name}' AND state LIKE 'idle in transaction%'"
    ))
}

/// Whether a direct connection to the primary can take the table lock and
/// the advisory lock now (waiting at most 1 s for the table lock).
fn locks_free(table: &str, key: i64) -> bool {
    let sql = format!(
        "BEGIN;\nSET LOCAL lock_timeout = '1s';\nLOCK TABLE {table} IN ACCESS EXCLUSIVE MODE;\n\
         SELECT pg_try_advisory_xact_lock({key});\nCOMMIT;\n"
    );
    match Cluster::shared().primary.psql("app", DATABASE, &sql) {
        Ok(out) => out.trim() == "t",
        Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_vanishing_mid_transaction_leaves_no_transaction_or_lock() {
    bounded(async {
        let t = replicated("conc_gone", |t| format!("CREATE TABLE {t} (id int)")).await;
        let app_name = unique("vanishing");
        let key = 9_000_000 + std::process::id() as i64 % 1_000_000;
        let (client, connection) = tagged_client(&app_name).await;
        client.batch_execute("BEGIN").await.unwrap();
        client
            .batch_execute(&format!("LOCK TABLE {t} IN ACCESS EXCLUSIVE MODE"))
            .await
            .unwrap();
        client
            .query_one("SELECT pg_advisory_lock($1)", &[&key])
            .await
            .unwrap();
        client
            .batch_execute(&format!("INSERT INTO {t} VALUES (1)"))
            .await
            .unwrap();
        // The transaction and its locks are there while the client is.
        assert_eq!(idle_in_transaction(&app_name), "1");
        assert!(!locks_free(&t, key), "the locks were not taken");
        // The client disappears without a Terminate.
        connection.abort();
        drop(client);
        eventually(
            "the transaction to end and the locks to be released",
            Duration::from_secs(5),
            || {
                let (t, app_name) = (t.clone(), app_name.clone());
                async move {
                    tokio::task::spawn_blocking(move || {
                        idle_in_transaction(&app_name) == "0" && locks_free(&t, key)
                    })
                    .await
                    .unwrap()
                }
            },
        )
        .await
        .unwrap();
        assert_eq!(
            on_primary(&format!("SELECT count(*) FROM {t}")),
            "0",
            "the abandoned transaction was committed"
        );
    })
    .await
}

/// A session-level advisory lock taken outside any transaction belongs to
/// the client's session: it must not outlive the client, even if the proxy
/// keeps the backend connection for someone else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_advisory_lock_is_released_when_the_client_leaves() {
    bounded(async {
        let t = unique("conc_lock");
        let app_name = unique("locker");
        let key = 9_500_000 + std::process::id() as i64 % 400_000;
        on_primary(&format!("CREATE TABLE {t} (id int)"));
        let (client, connection) = tagged_client(&app_name).await;
        let taken: String = client
            .query_one(
                "SELECT current_setting('cluster_name'), pg_advisory_lock($1)::text",
                &[&key],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(taken, PRIMARY);
        // While it holds the lock, the session's reads stay on the primary.
        assert_eq!(node_of_read(&client).await, PRIMARY);
        assert!(!locks_free(&t, key), "the advisory lock was not taken");
        drop(client);
        let _ = tokio::time::timeout(Duration::from_secs(5), connection).await;
        eventually(
            "the advisory lock to be released",
            Duration::from_secs(5),
            || {
                let t = t.clone();
                async move {
                    tokio::task::spawn_blocking(move || locks_free(&t, key))
                        .await
                        .unwrap()
                }
            },
        )
        .await
        .unwrap();
    })
    .await
}
