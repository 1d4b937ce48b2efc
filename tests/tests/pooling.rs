//! Backend connections through the proxy: clients that differ only in startup parameters the
//! proxy can set share pooled connections; a backend never gets more than `[pool]
//! max_server_connections` from the proxy (clients wait their turn, then get 53300); the
//! proxy's idle connections do not keep `DROP DATABASE` or `ALTER DATABASE ... RENAME` from
//! running right after the database was used through it.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use pgrepl_tests::roles::{APP, DATABASE, SUPERUSER};
use pgrepl_tests::suite::{
    bounded, bounded_for, code_of, free_addr, shared_proxy, simple_first, start_proxy, text_rows,
    unique, PRIMARY, REPLICA,
};
use pgrepl_tests::{connect, conninfo, proxy_config, Cluster, Node, OwnCluster, ProxyProcess};
use tokio_postgres::{Client, Config, NoTls};

/// A client of `app` on `db` through `addr` with `application_name`, and the
/// application_name it was told at startup.
async fn client_named(addr: SocketAddr, db: &str, name: &str) -> (Client, Option<String>) {
    let mut config: Config = conninfo(addr, APP.name, db).parse().unwrap();
    config.application_name(name);
    let (client, connection) = config
        .connect(NoTls)
        .await
        .unwrap_or_else(|e| panic!("client {name} cannot connect through the proxy: {e}"));
    let told = connection.parameter("application_name").map(str::to_owned);
    tokio::spawn(connection);
    (client, told)
}

/// Connections of `app` open on `node` now (as its superuser sees them).
async fn app_connections(node: &Node) -> usize {
    let node = node.clone();
    let sql = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE usename = '{}'",
        APP.name
    );
    tokio::task::spawn_blocking(move || node.psql(SUPERUSER, "postgres", &sql))
        .await
        .unwrap()
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Where a statement ran, the session's application_name, and the one the server shows for
/// the connection in pg_stat_activity.
const WHO: &str = "SELECT current_setting('cluster_name'), current_setting('application_name'), \
                   application_name FROM pg_stat_activity WHERE pid = pg_backend_pid()";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_with_their_own_application_names_share_connections_within_max_connections_100() {
    let cluster = tokio::task::spawn_blocking(|| {
        OwnCluster::start_with("pool_names", &[("max_connections", "100")])
    })
    .await
    .unwrap()
    .unwrap();
    let addr = free_addr();
    let proxy = ProxyProcess::start(&proxy_config(&cluster, addr), addr).unwrap();
    bounded_for(Duration::from_secs(240), async {
        // PostgreSQL's regression suite runs each test with an application_name of its own.
        const CLIENTS: usize = 120;
        let mut most = (0, 0);
        for i in 0..CLIENTS {
            let name = format!("pool_test_{i}");
            let (client, told) = client_named(addr, DATABASE, &name).await;
            assert_eq!(told.as_deref(), Some(name.as_str()), "told at startup");
            // pg_stat_activity answers for the server it is read on: node-local, so the
            // replica's needs a hint to be read there.
            for (sql, node) in [
                (format!("/* pgrepl:replica */ {WHO}"), REPLICA),
                (format!("/* pgrepl:primary */ {WHO}"), PRIMARY),
            ] {
                let rows = client
                    .simple_query(&sql)
                    .await
                    .unwrap_or_else(|e| panic!("client #{i}: {sql}: {e}"));
                assert_eq!(
                    text_rows(&rows),
                    [[node, &name, &name].map(|v| Some(v.to_owned()))],
                    "client #{i}: where it ran, its application_name, and pg_stat_activity's"
                );
            }
            drop(client);
            if i % 20 == 19 {
                most.0 = most.0.max(app_connections(&cluster.primary).await);
                most.1 = most.1.max(app_connections(&cluster.replica).await);
            }
        }
        eprintln!(
            "most connections of app seen: primary {}, replica {}",
            most.0, most.1
        );
        // A client can arrive before the session of the one before it has given its
        // connections back (more often on a loaded machine): a few more open and stay pooled.
        // Without reuse there would be one per client, past max_connections.
        assert!(
            most.0 <= 10 && most.1 <= 10,
            "{CLIENTS} clients one after another should reuse a few pooled connections; \
             the proxy had up to {} on the primary and {} on the replica",
            most.0,
            most.1
        );
    })
    .await;
    drop(proxy);
}

/// A proxy for the shared cluster allowing `max` connections per backend, waiting `wait`
/// for one; in session mode: its clients keep their connections while idle.
fn limited_proxy(max: usize, wait: &str) -> ProxyProcess {
    start_proxy(&format!(
        "\n[pool]\nmode = \"session\"\nmax_server_connections = {max}\nquery_wait_timeout = \"{wait}\"\n"
    ))
}

/// A client of `app` through `addr` that has leased a primary connection.
async fn on_the_primary(addr: SocketAddr) -> Client {
    let client = connect(addr, APP.name, DATABASE).await.unwrap();
    let node = simple_first(
        &client,
        "/* pgrepl:primary */ SELECT current_setting('cluster_name')",
    )
    .await;
    assert_eq!(node, PRIMARY);
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_past_max_server_connections_wait_their_turn_then_get_53300() {
    let proxy = limited_proxy(2, "3s");
    bounded(async {
        let a = on_the_primary(proxy.addr).await;
        let b = on_the_primary(proxy.addr).await;
        let c = connect(proxy.addr, APP.name, DATABASE).await.unwrap();
        let primary = "/* pgrepl:primary */ SELECT current_setting('cluster_name')";

        // Both places taken for as long as the wait lasts: refused, naming the backend.
        let started = Instant::now();
        let err = c.simple_query(primary).await.unwrap_err();
        let waited = started.elapsed();
        assert_eq!(code_of(&err), "53300", "{err:?}");
        let message = err.as_db_error().unwrap().message().to_owned();
        assert!(
            message.contains(PRIMARY) && message.contains("max_server_connections"),
            "{message}"
        );
        assert!(waited >= Duration::from_secs(2), "waited only {waited:?}");
        // Reads still run where there is room, and the session goes on.
        assert_eq!(
            simple_first(&c, "SELECT current_setting('cluster_name')").await,
            REPLICA
        );

        // A place that comes free while it waits is its.
        let (done, ()) = tokio::join!(c.simple_query(primary), async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            drop(a);
        });
        assert_eq!(
            text_rows(&done.expect("a place came free while it waited")),
            [[Some(PRIMARY.to_owned())]]
        );
        drop(b);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_of_another_user_makes_room() {
    let proxy = limited_proxy(1, "3s");
    bounded(async {
        // md5user's client leaves its primary connection idle in the pool.
        let other = connect(proxy.addr, "md5user", DATABASE).await.unwrap();
        let node = simple_first(
            &other,
            "/* pgrepl:primary */ SELECT current_setting('cluster_name')",
        )
        .await;
        assert_eq!(node, PRIMARY);
        drop(other);
        // Its connection may still be on its way back to the pool: wait until it is in,
        // then app takes the one place (not waiting 3 s for it).
        let app = connect(proxy.addr, APP.name, DATABASE).await.unwrap();
        let started = Instant::now();
        let node = simple_first(
            &app,
            "/* pgrepl:primary */ SELECT current_setting('cluster_name')",
        )
        .await;
        assert_eq!(node, PRIMARY);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "waited {:?} for a place an idle connection held",
            started.elapsed()
        );
    })
    .await;
}

/// Runs `sql` through the shared proxy from a session on `appdb`.
async fn through_proxy(sql: &str) -> Result<(), tokio_postgres::Error> {
    let client = connect(shared_proxy(), APP.name, DATABASE).await.unwrap();
    client.batch_execute(sql).await
}

/// Uses database `db` through the shared proxy, on both nodes, in a session that then ends.
async fn use_database(db: &str) {
    let (client, _) = client_named(shared_proxy(), db, "pool_user_of_db").await;
    for sql in [
        "SELECT current_setting('cluster_name')",
        "/* pgrepl:primary */ SELECT current_setting('cluster_name')",
    ] {
        client
            .simple_query(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql} on {db}: {e}"));
    }
    client
        .query_one("SELECT current_setting('cluster_name')", &[])
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_database_right_after_using_it_through_the_proxy_succeeds() {
    bounded(async {
        let db = unique("pool_dropped");
        through_proxy(&format!("CREATE DATABASE {db}"))
            .await
            .unwrap();
        wait_for_database_on_replica(&db).await;
        use_database(&db).await;
        let started = Instant::now();
        through_proxy(&format!("DROP DATABASE {db}"))
            .await
            .unwrap_or_else(|e| panic!("DROP DATABASE {db} through the proxy: {e:?}"));
        eprintln!("DROP DATABASE took {:?}", started.elapsed());

        // Also with the extended protocol, WITH (FORCE) and a rename.
        let db = unique("pool_renamed");
        through_proxy(&format!("CREATE DATABASE {db}"))
            .await
            .unwrap();
        wait_for_database_on_replica(&db).await;
        use_database(&db).await;
        through_proxy(&format!("ALTER DATABASE {db} RENAME TO {db}_b"))
            .await
            .unwrap_or_else(|e| panic!("ALTER DATABASE {db} RENAME through the proxy: {e:?}"));
        let client = connect(shared_proxy(), APP.name, DATABASE).await.unwrap();
        client
            .execute(&format!("DROP DATABASE {db}_b WITH (FORCE)"), &[])
            .await
            .unwrap_or_else(|e| panic!("DROP DATABASE {db}_b WITH (FORCE): {e:?}"));
    })
    .await;
}

/// Waits until the replica has replayed the creation of `db`.
async fn wait_for_database_on_replica(db: &str) {
    let replica = Cluster::shared().replica.clone();
    let sql = format!("SELECT count(*) FROM pg_database WHERE datname = '{db}'");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let replica = replica.clone();
        let sql = sql.clone();
        let out = tokio::task::spawn_blocking(move || replica.psql(SUPERUSER, "postgres", &sql))
            .await
            .unwrap()
            .unwrap();
        if out.trim() == "1" {
            return;
        }
        assert!(Instant::now() < deadline, "{db} never reached the replica");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
