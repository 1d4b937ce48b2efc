//! Errors that leave the session usable, error fields forwarded unchanged,
//! query cancellation through the proxy's cancel keys, and client
//! authentication for every configured method.

use pgrepl_tests::roles::{DATABASE, LOGIN_ROLES};
use pgrepl_tests::suite::raw::RawClient;
use pgrepl_tests::suite::{
    bounded, bounded_for, client, code_of, eventually, node_of_read, on_primary, psql, replicated,
    shared_proxy, simple_first, unique, PRIMARY, REPLICA,
};
use pgrepl_tests::{connect, conninfo, Cluster};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio_postgres::error::DbError;
use tokio_postgres::{Client, NoTls};

/// A table `T (id int primary key)` holding 1, on both nodes.
async fn fixture(prefix: &str) -> String {
    replicated(prefix, |t| {
        format!("CREATE TABLE {t} (id int PRIMARY KEY);\nINSERT INTO {t} VALUES (1);\n")
    })
    .await
}

/// Whether `node` (a direct address) shows an active statement containing
/// `marker`.
async fn running_on(node: SocketAddr, marker: &str) -> bool {
    let Ok(direct) = connect(node, "app", DATABASE).await else {
        return false;
    };
    let sql = "SELECT count(*) FROM pg_stat_activity \
               WHERE state = 'active' AND query LIKE '%' || $1 || '%' AND pid <> pg_backend_pid()";
    match direct.query_one(sql, &[&marker]).await {
        Ok(row) => row.get::<_, i64>(0) == 1,
        Err(_) => false,
    }
}

/// The sessions of user app on both nodes, for failure messages.
async fn activity() -> String {
    let cluster = Cluster::shared();
    let mut out = String::new();
    for node in [&cluster.primary, &cluster.replica] {
        let Ok(direct) = connect(node.addr(), "app", DATABASE).await else {
            out += &format!("\n{}: cannot connect", node.name);
            continue;
        };
        let rows = direct
            .query(
                "SELECT coalesce(state, ''), left(query, 80) FROM pg_stat_activity \
                 WHERE usename = 'app' AND pid <> pg_backend_pid()",
                &[],
            )
            .await
            .map(|rows| {
                rows.iter()
                    .map(|r| format!("{}: {}", r.get::<_, String>(0), r.get::<_, String>(1)))
                    .collect::<Vec<_>>()
            });
        out += &format!("\n{}: {rows:?}", node.name);
    }
    out
}

/// Runs a 30 s sleep tagged with a marker through `client`, waits until it
/// shows up running on `node`, cancels it through the proxy and returns the
/// statement's error and how long the cancel took to end it.
async fn sleep_and_cancel(client: &Client, node: SocketAddr) -> (tokio_postgres::Error, Duration) {
    let marker = unique("cancel_marker");
    let sql = format!("SELECT pg_sleep(30) /* {marker} */");
    let token = client.cancel_token();
    let sleeping = client.simple_query(&sql);
    let cancel = async {
        let seen = eventually(
            "the sleep to run on the expected node",
            Duration::from_secs(10),
            || running_on(node, &marker),
        )
        .await;
        if let Err(e) = seen {
            panic!("{e:#}; sessions of app: {}", activity().await);
        }
        let sent = Instant::now();
        token.cancel_query(NoTls).await.expect("cancel request");
        sent
    };
    let (result, sent) = tokio::join!(bounded_for(Duration::from_secs(20), sleeping), cancel);
    let err = result.expect_err("the sleep was not cancelled");
    (err, sent.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_a_read_on_the_replica() {
    bounded(async {
        let client = client().await;
        let (err, took) = sleep_and_cancel(&client, Cluster::shared().replica.addr()).await;
        assert_eq!(code_of(&err), "57014", "{err:?}");
        assert!(took < Duration::from_secs(5), "cancel took {took:?}");
        assert_eq!(node_of_read(&client).await, REPLICA);
        // Again on the same session: the cancel key still points right.
        let (err, _) = sleep_and_cancel(&client, Cluster::shared().replica.addr()).await;
        assert_eq!(code_of(&err), "57014", "{err:?}");
        assert_eq!(node_of_read(&client).await, REPLICA);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_a_statement_in_a_transaction_on_the_primary() {
    bounded(async {
        let client = client().await;
        // A read first, so the cancel key has pointed at the replica before.
        assert_eq!(node_of_read(&client).await, REPLICA);
        client.batch_execute("BEGIN").await.unwrap();
        let (err, took) = sleep_and_cancel(&client, Cluster::shared().primary.addr()).await;
        assert_eq!(code_of(&err), "57014", "{err:?}");
        assert!(took < Duration::from_secs(5), "cancel took {took:?}");
        let err = client.simple_query("SELECT 1").await.unwrap_err();
        assert_eq!(code_of(&err), "25P02");
        client.batch_execute("ROLLBACK").await.unwrap();
        assert_eq!(node_of_read(&client).await, REPLICA);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_with_nothing_running_is_harmless() {
    bounded(async {
        let client = client().await;
        client.cancel_token().cancel_query(NoTls).await.unwrap();
        assert_eq!(node_of_read(&client).await, REPLICA);
        // A cancel key the proxy never issued is ignored too.
        let mut packet = 16u32.to_be_bytes().to_vec();
        for word in [80_877_102i32, 4242, 4243] {
            packet.extend_from_slice(&word.to_be_bytes());
        }
        let mut raw = RawClient::connect(shared_proxy()).await.unwrap();
        raw.send(&packet).await.unwrap();
        assert!(
            raw.recv().await.unwrap().is_none(),
            "a cancel request gets no answer"
        );
        assert_eq!(node_of_read(&client).await, REPLICA);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_leave_the_session_usable() {
    bounded(async {
        let t = fixture("err_usable").await;
        let client = client().await;
        let err = client.simple_query("SELEC 1").await.unwrap_err();
        assert_eq!(code_of(&err), "42601");
        assert_eq!(node_of_read(&client).await, REPLICA);
        let err = client.simple_query("SELECT 1/0").await.unwrap_err();
        assert_eq!(code_of(&err), "22012");
        assert_eq!(node_of_read(&client).await, REPLICA);
        let err = client
            .simple_query(&format!("INSERT INTO {t} VALUES (1)"))
            .await
            .unwrap_err();
        assert_eq!(code_of(&err), "23505");
        assert_eq!(
            simple_first(
                &client,
                &format!("INSERT INTO {t} VALUES (2) RETURNING current_setting('cluster_name')")
            )
            .await,
            PRIMARY
        );
        assert_eq!(node_of_read(&client).await, REPLICA);
        // An error in the middle of a multi-statement string stops it there.
        let err = client
            .simple_query(&format!(
                "INSERT INTO {t} VALUES (3); SELECT 1/0; INSERT INTO {t} VALUES (4)"
            ))
            .await
            .unwrap_err();
        assert_eq!(code_of(&err), "22012");
        assert_eq!(
            on_primary(&format!(
                "SELECT string_agg(id::text, ',' ORDER BY id) FROM {t}"
            )),
            "1,2"
        );
        assert_eq!(node_of_read(&client).await, REPLICA);
    })
    .await
}

/// The fields a client sees of an error.
fn fields(e: &DbError) -> Vec<(&'static str, Option<String>)> {
    vec![
        ("severity", Some(e.severity().to_owned())),
        ("code", Some(e.code().code().to_owned())),
        ("message", Some(e.message().to_owned())),
        ("detail", e.detail().map(str::to_owned)),
        ("hint", e.hint().map(str::to_owned)),
        ("position", e.position().map(|p| format!("{p:?}"))),
        ("schema", e.schema().map(str::to_owned)),
        ("table", e.table().map(str::to_owned)),
        ("column", e.column().map(str::to_owned)),
        ("constraint", e.constraint().map(str::to_owned)),
        ("routine", e.routine().map(str::to_owned)),
    ]
}

async fn db_error(client: &Client, sql: &str) -> DbError {
    let err = client
        .simple_query(sql)
        .await
        .expect_err("the statement succeeded");
    err.as_db_error()
        .unwrap_or_else(|| panic!("{sql}: not a server error: {err:?}"))
        .clone()
}

/// Errors through the proxy carry the same fields as on a direct connection
/// to the node the statement runs on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_fields_equal_a_direct_connection() {
    bounded(async {
        let t = fixture("err_fields").await;
        let cluster = Cluster::shared();
        let proxied = client().await;
        let primary = connect(cluster.primary.addr(), "app", DATABASE)
            .await
            .unwrap();
        let replica = connect(cluster.replica.addr(), "app", DATABASE)
            .await
            .unwrap();
        let dup = format!("INSERT INTO {t} VALUES (1)");
        let via = db_error(&proxied, &dup).await;
        assert_eq!(via.detail(), Some("Key (id)=(1) already exists."));
        assert_eq!(fields(&via), fields(&db_error(&primary, &dup).await));
        for sql in [
            "SELECT 1/0".to_owned(),
            "SELECT no_such_function_xyz(1)".to_owned(),
            format!("SELECT nosuchcolumn FROM {t}"),
            "SELECT 'abc'::int".to_owned(),
        ] {
            let via = db_error(&proxied, &sql).await;
            let direct = db_error(&replica, &sql).await;
            assert_eq!(fields(&via), fields(&direct), "{sql}");
        }
        // Hint present, as a check that the comparison covers it.
        let via = db_error(&proxied, "SELECT no_such_function_xyz(1)").await;
        assert!(via
            .hint()
            .is_some_and(|h| h.contains("explicit type casts")));
        let syntax = "SELECT * FRM nowhere";
        assert_eq!(
            fields(&db_error(&proxied, syntax).await),
            fields(&db_error(&primary, syntax).await)
        );
    })
    .await
}

async fn login_error(addr: SocketAddr, user: &str, password: Option<&str>) -> DbError {
    let mut info = format!(
        "host={} port={} user={user} dbname={DATABASE} connect_timeout=10",
        addr.ip(),
        addr.port()
    );
    if let Some(password) = password {
        info += &format!(" password={password}");
    }
    match tokio_postgres::connect(&info, NoTls).await {
        Ok(_) => panic!("{user} logged in with password {password:?}"),
        Err(e) => e
            .as_db_error()
            .unwrap_or_else(|| panic!("{user}: no server error: {e:?}"))
            .clone(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_refused() {
    bounded(async {
        let err = login_error(shared_proxy(), "app", Some("wrong")).await;
        assert_eq!(
            (err.severity(), err.code().code(), err.message()),
            (
                "FATAL",
                "28P01",
                "password authentication failed for user \"app\""
            )
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_user_is_refused_like_a_wrong_password() {
    bounded(async {
        let err = login_error(shared_proxy(), "nosuchuser", Some("whatever")).await;
        assert_eq!(
            (err.code().code(), err.message()),
            (
                "28P01",
                "password authentication failed for user \"nosuchuser\""
            )
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn md5_user_logs_in_with_the_right_password_only() {
    bounded(async {
        let client = connect(shared_proxy(), "md5user", DATABASE).await.unwrap();
        let user: String = client
            .query_one("SELECT current_user::text", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(user, "md5user");
        let err = login_error(shared_proxy(), "md5user", Some("md5-wrong")).await;
        assert_eq!(
            (err.code().code(), err.message()),
            (
                "28P01",
                "password authentication failed for user \"md5user\""
            )
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_user_logs_in_with_the_right_password_only() {
    bounded(async {
        let client = connect(shared_proxy(), "plainuser", DATABASE)
            .await
            .unwrap();
        assert_eq!(
            simple_first(&client, "SELECT current_user").await,
            "plainuser"
        );
        let err = login_error(shared_proxy(), "plainuser", Some("nope")).await;
        assert_eq!(err.code().code(), "28P01");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_user_logs_in_without_a_password() {
    bounded(async {
        let addr = shared_proxy();
        let info = format!(
            "host={} port={} user=trustuser dbname={DATABASE} connect_timeout=10",
            addr.ip(),
            addr.port()
        );
        let (client, connection) = tokio_postgres::connect(&info, NoTls).await.unwrap();
        tokio::spawn(connection);
        assert_eq!(
            simple_first(&client, "SELECT current_user").await,
            "trustuser"
        );
    })
    .await
}

/// Every role reaches both backends through the proxy with the credentials
/// the proxy holds for it: a read on the replica, a transaction on the
/// primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_reads_on_the_replica_and_writes_on_the_primary() {
    bounded(async {
        for role in LOGIN_ROLES {
            let client = connect(shared_proxy(), role.name, DATABASE)
                .await
                .unwrap_or_else(|e| panic!("{}: {e:#}", role.name));
            let row = client
                .query_one(
                    "SELECT current_user::text, current_setting('cluster_name')",
                    &[],
                )
                .await
                .unwrap();
            assert_eq!(
                (row.get::<_, String>(0), row.get::<_, String>(1)),
                (role.name.to_owned(), REPLICA.to_owned()),
                "{}",
                role.name
            );
            client.batch_execute("BEGIN").await.unwrap();
            assert_eq!(node_of_read(&client).await, PRIMARY, "{}", role.name);
            client.batch_execute("COMMIT").await.unwrap();
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_logs_in_with_scram_and_is_refused_with_a_wrong_password() {
    bounded(async {
        let addr = shared_proxy();
        let (ok, refused) = tokio::task::spawn_blocking(move || {
            let ok = psql(addr, "app", &["-A", "-t", "-c", "SELECT current_user"], "");
            let info = conninfo(addr, "app", DATABASE).replace("app-pass", "bad-pass");
            let bin = pgrepl_tests::pg_bin_dir().unwrap().join("psql");
            let mut cmd = std::process::Command::new(bin);
            cmd.args(["-X", "-w", "-d", &info, "-c", "SELECT 1"])
                .env("PGPASSFILE", "/dev/null")
                .env_remove("PGPASSWORD");
            let refused =
                pgrepl_tests::suite::run_with_timeout(cmd, b"", Duration::from_secs(30)).unwrap();
            (ok, refused)
        })
        .await
        .unwrap();
        assert!(ok.success, "psql: {}", ok.stderr);
        assert_eq!(ok.stdout.trim(), "app");
        assert!(!refused.success);
        assert!(
            refused
                .stderr
                .contains("password authentication failed for user \"app\""),
            "{}",
            refused.stderr
        );
    })
    .await
}
