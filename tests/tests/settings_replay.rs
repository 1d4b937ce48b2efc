//! Settings replayed on the session's other backend reproduce what the primary has, not the
//! last statement: the startup parameters are the session's defaults on both nodes (what
//! `RESET` returns to, as PostgreSQL does), settings that build on their previous value
//! (DateStyle) end the same, and `set_config` with a bound parameter (asyncpg's
//! `set_config('jit', $1, false)`) is replayed instead of pinning the session's reads.
//!
//! Every read returns `current_setting('cluster_name')` first, so the value is known to come
//! from the server it names.

use std::collections::BTreeMap;

use pgrepl_tests::roles::{APP, DATABASE};
use pgrepl_tests::suite::raw::{self, RawClient};
use pgrepl_tests::suite::{
    bounded, code_of, replicated, shared_proxy, text_rows, PRIMARY, REPLICA,
};
use pgrepl_tests::{conninfo, Cluster};
use tokio_postgres::{Client, Config, NoTls};

/// Reported parameters compared between a direct connection and one through the proxy.
const REPORTED: [&str; 7] = [
    "application_name",
    "client_encoding",
    "DateStyle",
    "IntervalStyle",
    "TimeZone",
    "standard_conforming_strings",
    "default_transaction_read_only",
];

/// A client of `app` through `addr` (the shared proxy, or a server) with `configure`
/// applied, and the values of [`REPORTED`] it was told at startup.
async fn client_at(
    addr: std::net::SocketAddr,
    configure: impl FnOnce(&mut Config),
) -> (Client, BTreeMap<&'static str, Option<String>>) {
    let mut config: Config = conninfo(addr, APP.name, DATABASE).parse().unwrap();
    configure(&mut config);
    let (client, connection) = config
        .connect(NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
    let told = REPORTED
        .iter()
        .map(|&name| (name, connection.parameter(name).map(str::to_owned)))
        .collect();
    tokio::spawn(connection);
    (client, told)
}

/// The values of `settings` where a simple query `prefix SELECT ...` runs, with that node's
/// name first.
async fn values(client: &Client, prefix: &str, settings: &[&str]) -> Vec<String> {
    let columns: Vec<String> = std::iter::once("cluster_name")
        .chain(settings.iter().copied())
        .map(|s| format!("current_setting('{s}')"))
        .collect();
    let sql = format!("{prefix} SELECT {}", columns.join(", "));
    let rows = client
        .simple_query(&sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let rows = text_rows(&rows);
    rows.last()
        .unwrap()
        .iter()
        .map(|v| v.clone().unwrap_or_default())
        .collect()
}

/// `values` with the node's name in front.
fn on(node: &str, values: &[&str]) -> Vec<String> {
    std::iter::once(node)
        .chain(values.iter().copied())
        .map(str::to_owned)
        .collect()
}

/// The same settings on the replica (a plain read), on the primary (hinted), and in a
/// transaction (which runs on the primary).
async fn everywhere(client: &Client, settings: &[&str], expected: &[&str], why: &str) {
    assert_eq!(
        values(client, "", settings).await,
        on(REPLICA, expected),
        "a read {why}"
    );
    assert_eq!(
        values(client, "/* pgrepl:primary */", settings).await,
        on(PRIMARY, expected),
        "a read on the primary {why}"
    );
    client.batch_execute("BEGIN").await.unwrap();
    let in_tx = values(client, "", settings).await;
    client.batch_execute("COMMIT").await.unwrap();
    assert_eq!(in_tx, on(PRIMARY, expected), "in a transaction {why}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_parameters_are_the_defaults_reset_returns_to_on_both_nodes() {
    bounded(async {
        let s = replicated("sr_startup", |s| format!("CREATE SCHEMA {s};\n")).await;
        let configure = |c: &mut Config| {
            c.application_name("sr_startup_app").options(format!(
                "-c search_path={s},public -c DateStyle=SQL,DMY -c work_mem=3MB \
                 -c IntervalStyle=iso_8601"
            ));
        };
        let (client, told) = client_at(shared_proxy(), configure).await;
        let primary = Cluster::shared().primary.addr();
        let (_direct, told_directly) = client_at(primary, configure).await;
        assert_eq!(
            told, told_directly,
            "ParameterStatus at startup: through the proxy and from the primary directly"
        );
        assert_eq!(told["DateStyle"].as_deref(), Some("SQL, DMY"));

        let settings = [
            "application_name",
            "search_path",
            "DateStyle",
            "work_mem",
            "IntervalStyle",
        ];
        let path = format!("{s},public");
        let startup = ["sr_startup_app", &path, "SQL, DMY", "3MB", "iso_8601"];
        everywhere(&client, &settings, &startup, "at first").await;

        client
            .batch_execute(
                "SET application_name = 'other'; SET search_path = public; \
                 SET DateStyle = 'ISO'; SET work_mem = '5MB'; SET IntervalStyle = 'postgres'",
            )
            .await
            .unwrap();
        let changed = ["other", "public", "ISO, DMY", "5MB", "postgres"];
        everywhere(&client, &settings, &changed, "after SETs").await;

        client.batch_execute("RESET ALL").await.unwrap();
        everywhere(&client, &settings, &startup, "after RESET ALL").await;

        client
            .batch_execute("SET application_name = 'other'; SET work_mem = '5MB'")
            .await
            .unwrap();
        client
            .batch_execute("RESET application_name")
            .await
            .unwrap();
        client
            .batch_execute("SET work_mem TO DEFAULT")
            .await
            .unwrap();
        everywhere(&client, &settings, &startup, "after RESET of one setting").await;

        client.batch_execute("DISCARD ALL").await.unwrap();
        everywhere(&client, &settings, &startup, "after DISCARD ALL").await;

        // A reset and a setting after it in one string: the setting stays.
        client
            .batch_execute("SET DateStyle = 'ISO'; RESET ALL; SET application_name = 'z'")
            .await
            .unwrap();
        let mut expected = startup;
        expected[0] = "z";
        everywhere(&client, &settings, &expected, "after RESET ALL and a SET").await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_that_build_on_their_previous_value_end_the_same_on_the_replica() {
    bounded(async {
        let (client, _) = client_at(shared_proxy(), |_| {}).await;
        client
            .batch_execute("SET DateStyle = 'ISO, YMD'")
            .await
            .unwrap();
        client
            .batch_execute("SET DateStyle = 'Postgres'")
            .await
            .unwrap();
        client
            .batch_execute("SET IntervalStyle = 'sql_standard'")
            .await
            .unwrap();
        // A placeholder (custom) setting, set twice.
        client
            .batch_execute("SET sr.custom = 'a'; SET sr.custom = 'b'")
            .await
            .unwrap();
        let settings = ["DateStyle", "IntervalStyle", "sr.custom"];
        let expected = ["Postgres, YMD", "sql_standard", "b"];
        assert_eq!(
            values(&client, "/* pgrepl:primary */", &settings).await,
            on(PRIMARY, &expected)
        );
        assert_eq!(values(&client, "", &settings).await, on(REPLICA, &expected));
        let shown = "SELECT current_setting('cluster_name'), \
                     '2024-01-02 03:04:05'::timestamp::text, interval '1 day 2 hours'::text";
        let primary = client
            .simple_query(&format!("/* pgrepl:primary */ {shown}"))
            .await
            .unwrap();
        let replica = client.simple_query(shown).await.unwrap();
        let (primary, replica) = (text_rows(&primary), text_rows(&replica));
        assert_eq!(replica[0][0].as_deref(), Some(REPLICA));
        assert_eq!(
            primary[0][1..],
            replica[0][1..],
            "dates and intervals print the same"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_config_with_a_bound_parameter_is_replayed_and_reads_stay_on_the_replica() {
    bounded(async {
        let (client, _) = client_at(shared_proxy(), |_| {}).await;
        let where_and_what = "SELECT current_setting('cluster_name'), \
                              current_setting('work_mem'), current_setting('jit')";
        assert_eq!(
            values(&client, "", &["work_mem"]).await[0],
            REPLICA,
            "reads start on the replica"
        );
        // Binary format (tokio-postgres's for text), and asyncpg's own statement.
        let old: String = client
            .query_one("SELECT set_config('work_mem', $1, false)", &[&"8MB"])
            .await
            .unwrap()
            .get(0);
        assert_eq!(old, "8MB");
        client
            .query_one("SELECT pg_catalog.set_config('jit', $1, false)", &[&"off"])
            .await
            .unwrap();
        for _ in 0..3 {
            let rows = client.simple_query(where_and_what).await.unwrap();
            assert_eq!(
                text_rows(&rows),
                [[REPLICA, "8MB", "off"].map(|v| Some(v.to_owned()))],
                "reads stay on the replica and see the settings there"
            );
            let row = client.query_one(where_and_what, &[]).await.unwrap();
            assert_eq!(
                (row.get::<_, String>(0), row.get::<_, String>(1)),
                (REPLICA.to_owned(), "8MB".to_owned())
            );
        }
        // Both arguments bound, and the session's settings still follow.
        let statement = client
            .prepare_typed(
                "SELECT set_config($1, $2, false)",
                &[
                    tokio_postgres::types::Type::TEXT,
                    tokio_postgres::types::Type::TEXT,
                ],
            )
            .await
            .unwrap();
        client
            .query_one(&statement, &[&"work_mem", &"9MB"])
            .await
            .unwrap();
        assert_eq!(
            values(&client, "", &["work_mem"]).await,
            on(REPLICA, &["9MB"])
        );
    })
    .await;
}

/// The values a simple query's DataRows carry, as text.
fn row_texts(messages: &[raw::RawMessage]) -> Vec<String> {
    let row = messages.iter().find(|m| m.ty == b'D').expect("a row");
    let mut body = &row.body[2..];
    let mut values = Vec::new();
    while body.len() >= 4 {
        let len = i32::from_be_bytes(body[..4].try_into().unwrap());
        body = &body[4..];
        let len = usize::try_from(len).unwrap_or(0);
        values.push(String::from_utf8_lossy(&body[..len]).into_owned());
        body = &body[len..];
    }
    values
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_config_with_a_text_format_parameter_is_replayed() {
    bounded(async {
        let mut client = RawClient::login_trust(shared_proxy(), "trustuser", DATABASE)
            .await
            .unwrap();
        // Parse with no parameter types, Bind in text format, Execute, Sync.
        let mut batch = raw::message(b'P', b"\0SELECT set_config('work_mem', $1, false)\0\0\0");
        let mut bind = b"\0\0\0\0\0\x01".to_vec();
        bind.extend_from_slice(&3i32.to_be_bytes());
        bind.extend_from_slice(b"7MB\0\0");
        batch.extend(raw::message(b'B', &bind));
        batch.extend(raw::message(b'E', b"\0\0\0\0\0"));
        batch.extend(raw::message(b'S', b""));
        client.send(&batch).await.unwrap();
        let answer = client.recv_until(b'Z').await.unwrap();
        assert!(
            !answer.iter().any(|m| m.ty == b'E'),
            "{:?}",
            raw::summary(&answer)
        );
        for _ in 0..2 {
            client
                .send(&raw::query(
                    "SELECT current_setting('cluster_name'), current_setting('work_mem')",
                ))
                .await
                .unwrap();
            let read = client.recv_until(b'Z').await.unwrap();
            assert_eq!(row_texts(&read), [REPLICA, "7MB"]);
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_startup_setting_the_server_refuses_refuses_the_login_as_the_server_would() {
    bounded(async {
        let primary = Cluster::shared().primary.addr();
        for options in ["-c DateStyle=bogus", "-c no_such_setting=1"] {
            let attempt = |addr| async move {
                let mut config: Config = conninfo(addr, APP.name, DATABASE).parse().unwrap();
                config.options(options);
                match config.connect(NoTls).await {
                    Ok(_) => panic!("{options}: login accepted by {addr}"),
                    Err(e) => (code_of(&e), e.as_db_error().unwrap().severity().to_owned()),
                }
            };
            assert_eq!(
                attempt(shared_proxy()).await,
                attempt(primary).await,
                "{options}: through the proxy and directly"
            );
        }
    })
    .await;
}
