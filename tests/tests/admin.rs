//! The admin console (`[admin]`, the virtual database `pgrepl`) against real servers: psql
//! and tokio-postgres read PgBouncer's columns by name, with values that match what the
//! clients did; KILL ends a client with 57P01 (and its statement on the server); PAUSE holds
//! new units back until RESUME; HOLD WRITES holds units for the primary outside a
//! transaction until RELEASE WRITES or its console session ends; SHUTDOWN ends the proxy; only `[admin] users` get in; an
//! unknown command is an error the session survives.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use pgrepl_tests::roles::{APP, DATABASE, MD5USER, SUPERUSER};
use pgrepl_tests::suite::{
    bounded, code_of, connect_with_messages, eventually, free_addr, run_with_timeout, simple_first,
    PRIMARY, REPLICA,
};
use pgrepl_tests::{connect, conninfo, pg_bin_dir, proxy_config, Cluster, ProxyProcess};
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

const CONSOLE: &str = "pgrepl";
const ADMIN: &str = "admin";
const ADMIN_PASSWORD: &str = "admin-pass";

/// A proxy of the test's own for the shared cluster, with an `admin` user allowed on the
/// console and PAUSE giving up after 2 s.
/// In session mode: the tests count the server connections clients hold while idle.
fn admin_proxy() -> ProxyProcess {
    admin_proxy_with("")
}

/// [`admin_proxy`], its configuration ending with `extra`.
fn admin_proxy_with(extra: &str) -> ProxyProcess {
    let cluster = Cluster::shared();
    let addr = free_addr();
    let toml = proxy_config(cluster, addr)
        + &format!(
            "\n[[users]]\nname = \"{ADMIN}\"\npassword = \"{ADMIN_PASSWORD}\"\n\n\
             [admin]\nusers = [\"{ADMIN}\"]\npause_timeout = \"2s\"\n\n\
             [pool]\nmode = \"session\"\n"
        )
        + extra;
    ProxyProcess::start(&toml, addr).unwrap_or_else(|e| panic!("cannot start a proxy: {e:#}"))
}

/// A console session through tokio-postgres.
async fn console(addr: SocketAddr) -> Client {
    let info = format!(
        "{} password={ADMIN_PASSWORD}",
        conninfo(addr, ADMIN, CONSOLE)
    );
    let (client, connection) = tokio_postgres::connect(&info, NoTls)
        .await
        .expect("the admin user reaches the console");
    tokio::spawn(connection);
    client
}

/// A result read by column name.
#[derive(Debug)]
struct Table {
    columns: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn index(&self, column: &str) -> usize {
        self.columns
            .iter()
            .position(|c| c == column)
            .unwrap_or_else(|| panic!("no column {column} in {:?}", self.columns))
    }

    /// The rows whose `column` is `value`.
    fn rows_where(&self, column: &str, value: &str) -> Vec<&Vec<String>> {
        let i = self.index(column);
        self.rows.iter().filter(|row| row[i] == value).collect()
    }

    /// `column` of the only row whose `key` is `value`.
    fn get(&self, key: &str, value: &str, column: &str) -> &str {
        let rows = self.rows_where(key, value);
        assert_eq!(rows.len(), 1, "one row with {key} = {value}: {self:#?}");
        &rows[0][self.index(column)]
    }

    /// `column` of the only row matching every (key, value), as a number.
    fn number(&self, keys: &[(&str, &str)], column: &str) -> u64 {
        let rows: Vec<&Vec<String>> = self
            .rows
            .iter()
            .filter(|row| keys.iter().all(|(k, v)| row[self.index(k)] == *v))
            .collect();
        assert_eq!(rows.len(), 1, "one row with {keys:?}: {self:#?}");
        let text = &rows[0][self.index(column)];
        text.parse()
            .unwrap_or_else(|_| panic!("{column} = {text:?} is not a number"))
    }

    fn column(&self, column: &str) -> Vec<&str> {
        let i = self.index(column);
        self.rows.iter().map(|row| row[i].as_str()).collect()
    }
}

/// Runs `sql` on the console through psql as `user` (`-A -F,`, header on, footer off) and
/// reads its rows; Err carries psql's stderr.
fn psql_console(addr: SocketAddr, user: &str, password: &str, sql: &str) -> Result<Table, String> {
    let mut cmd = std::process::Command::new(pg_bin_dir().expect("PostgreSQL").join("psql"));
    cmd.args(["-X", "-w", "-h", &addr.ip().to_string()])
        .args(["-p", &addr.port().to_string(), "-U", user, "-d", CONSOLE])
        .args(["-A", "-F,", "-P", "footer=off", "-c", sql])
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "10")
        .env("PGPASSFILE", "/dev/null")
        .env_remove("PGSERVICE")
        .env_remove("PGOPTIONS")
        .env_remove("PGSSLMODE");
    let run = run_with_timeout(cmd, b"", Duration::from_secs(30)).expect("psql runs");
    if !run.success {
        return Err(run.stderr);
    }
    let stdout = String::from_utf8(run.stdout).expect("UTF-8");
    let mut lines = stdout.lines();
    let columns = lines
        .next()
        .unwrap_or_default()
        .split(',')
        .map(str::to_owned)
        .collect::<Vec<_>>();
    let rows = lines
        .map(|line| line.split(',').map(str::to_owned).collect::<Vec<_>>())
        .collect::<Vec<_>>();
    for row in &rows {
        assert_eq!(row.len(), columns.len(), "{sql}: {stdout}");
    }
    Ok(Table { columns, rows })
}

/// [`psql_console`] as the admin user, off the async runtime's thread; panics on an error.
async fn show(addr: SocketAddr, sql: &'static str) -> Table {
    tokio::task::spawn_blocking(move || psql_console(addr, ADMIN, ADMIN_PASSWORD, sql))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// The rows of one simple-protocol answer, by column name.
fn table(messages: &[SimpleQueryMessage]) -> Table {
    let mut columns = Vec::new();
    let mut rows = Vec::new();
    for message in messages {
        match message {
            SimpleQueryMessage::RowDescription(desc) => {
                columns = desc.iter().map(|c| c.name().to_owned()).collect();
            }
            SimpleQueryMessage::Row(row) => rows.push(
                (0..row.len())
                    .map(|i| row.get(i).unwrap_or_default().to_owned())
                    .collect(),
            ),
            _ => {}
        }
    }
    Table { columns, rows }
}

async fn simple(console: &Client, sql: &str) -> Table {
    table(
        &console
            .simple_query(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e:?}")),
    )
}

/// The SQLSTATE a console command fails with.
async fn fails_with(console: &Client, sql: &str) -> String {
    match console.simple_query(sql).await {
        Ok(answer) => panic!("{sql}: expected an error, got {:?}", table(&answer)),
        Err(e) => code_of(&e),
    }
}

const POOLS: [&str; 17] = [
    "database",
    "user",
    "cl_active",
    "cl_waiting",
    "cl_active_cancel_req",
    "cl_waiting_cancel_req",
    "sv_active",
    "sv_active_cancel",
    "sv_being_canceled",
    "sv_idle",
    "sv_used",
    "sv_tested",
    "sv_login",
    "maxwait",
    "maxwait_us",
    "pool_mode",
    "load_balance_hosts",
];

const SOCKETS: [&str; 21] = [
    "type",
    "user",
    "database",
    "replication",
    "state",
    "addr",
    "port",
    "local_addr",
    "local_port",
    "connect_time",
    "request_time",
    "wait",
    "wait_us",
    "close_needed",
    "ptr",
    "link",
    "remote_pid",
    "tls",
    "application_name",
    "prepared_statements",
    "id",
];

const DATABASES: [&str; 17] = [
    "name",
    "host",
    "port",
    "database",
    "force_user",
    "pool_size",
    "min_pool_size",
    "reserve_pool_size",
    "server_lifetime",
    "pool_mode",
    "load_balance_hosts",
    "max_connections",
    "current_connections",
    "max_client_connections",
    "current_client_connections",
    "paused",
    "disabled",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_commands_answer_in_pgbouncer_columns_with_what_the_clients_did() {
    let proxy = admin_proxy();
    let cluster = Cluster::shared();
    let addr = proxy.addr;
    bounded(async {
        // app reads on the replica and on the primary (two server connections); md5user once.
        let app = connect(addr, APP.name, DATABASE).await.unwrap();
        assert_eq!(
            simple_first(&app, "SELECT current_setting('cluster_name')").await,
            REPLICA
        );
        let on_primary = "/* pgrepl:primary */ SELECT current_setting('cluster_name')";
        assert_eq!(simple_first(&app, on_primary).await, PRIMARY);
        let md5 = connect(addr, MD5USER.name, DATABASE).await.unwrap();
        simple_first(&md5, "SELECT 1").await;

        let clients = show(addr, "SHOW CLIENTS").await;
        assert_eq!(clients.columns, SOCKETS);
        let app_id = clients.get("user", APP.name, "id").to_owned();
        let md5_id = clients.get("user", MD5USER.name, "id").to_owned();
        for user in [APP.name, MD5USER.name] {
            assert_eq!(clients.get("user", user, "database"), DATABASE);
            assert_eq!(clients.get("user", user, "state"), "active");
            assert_eq!(clients.get("user", user, "type"), "C");
            assert_eq!(clients.get("user", user, "addr"), "127.0.0.1");
        }
        assert_eq!(
            clients.get("user", ADMIN, "database"),
            CONSOLE,
            "psql itself"
        );
        assert_eq!(clients.rows.len(), 3);

        let pools = show(addr, "SHOW POOLS").await;
        assert_eq!(pools.columns, POOLS);
        let app_pool = [("database", DATABASE), ("user", APP.name)];
        assert_eq!(pools.number(&app_pool, "cl_active"), 1);
        assert_eq!(pools.number(&app_pool, "cl_waiting"), 0);
        assert_eq!(
            pools.number(&app_pool, "sv_active"),
            2,
            "primary and replica"
        );
        let md5_pool = [("database", DATABASE), ("user", MD5USER.name)];
        assert_eq!(pools.number(&md5_pool, "sv_active"), 1);
        assert_eq!(pools.number(&[("user", ADMIN)], "cl_active"), 1);
        assert_eq!(pools.number(&[("user", ADMIN)], "sv_active"), 0);
        assert!(pools.column("pool_mode").iter().all(|m| *m == "session"));

        let servers = show(addr, "SHOW SERVERS").await;
        assert_eq!(servers.columns, SOCKETS);
        let active = servers.rows_where("state", "active");
        assert_eq!(active.len(), 3, "{servers:#?}");
        let links: Vec<&str> = active
            .iter()
            .map(|row| row[servers.index("link")].as_str())
            .collect();
        assert_eq!(links.iter().filter(|l| **l == app_id).count(), 2);
        assert_eq!(links.iter().filter(|l| **l == md5_id).count(), 1);
        let ports: Vec<String> = active
            .iter()
            .map(|row| row[servers.index("port")].clone())
            .collect();
        assert!(ports.contains(&cluster.primary.port.to_string()));
        assert!(ports.contains(&cluster.replica.port.to_string()));

        let stats = show(addr, "SHOW STATS").await;
        assert_eq!(stats.columns.len(), 25);
        assert_eq!(
            stats.columns[..4],
            [
                "database",
                "total_server_assignment_count",
                "total_xact_count",
                "total_query_count"
            ]
        );
        let appdb = [("database", DATABASE)];
        assert!(stats.number(&appdb, "total_query_count") >= 3);
        assert!(stats.number(&appdb, "total_received") > 0);
        assert!(stats.number(&appdb, "total_sent") > 0);
        assert_eq!(stats.number(&appdb, "total_server_assignment_count"), 3);
        assert_eq!(stats.number(&appdb, "total_client_connect_count"), 2);
        let totals = show(addr, "SHOW STATS_TOTALS").await;
        assert!(totals.number(&appdb, "query_count") >= 3);

        let databases = show(addr, "SHOW DATABASES").await;
        assert_eq!(databases.columns, DATABASES);
        assert_eq!(
            databases.get("name", DATABASE, "current_client_connections"),
            "2"
        );
        // Held and pooled: a client's login may leave an idle one (the primary's parameters).
        let in_pools: u64 = pools
            .rows_where("database", DATABASE)
            .iter()
            .map(|row| {
                let n = |c: &str| row[pools.index(c)].parse::<u64>().unwrap();
                n("sv_active") + n("sv_idle")
            })
            .sum();
        let idle = servers.rows_where("state", "idle").len() as u64;
        assert_eq!(in_pools, 3 + idle, "{pools:#?}\n{servers:#?}");
        assert_eq!(
            databases.get("name", DATABASE, "current_connections"),
            in_pools.to_string()
        );
        assert_eq!(
            databases.get("name", DATABASE, "port"),
            cluster.primary.port.to_string()
        );
        assert_eq!(databases.get("name", DATABASE, "paused"), "0");
        assert_eq!(
            databases.get("name", CONSOLE, "current_client_connections"),
            "1"
        );

        let lists = show(addr, "SHOW LISTS").await;
        assert_eq!(lists.columns, ["list", "items"]);
        assert_eq!(lists.get("list", "used_clients", "items"), "3");
        assert_eq!(lists.get("list", "pools", "items"), "3");
        assert_eq!(lists.get("list", "databases", "items"), "2");

        let config = show(addr, "SHOW CONFIG").await;
        assert_eq!(config.columns, ["key", "value", "default", "changeable"]);
        assert_eq!(config.get("key", "admin.database", "value"), CONSOLE);
        assert_eq!(config.get("key", "admin.users", "value"), ADMIN);
        assert_eq!(
            config.get("key", "pool.max_server_connections", "default"),
            "90"
        );
        assert_eq!(config.get("key", "max_client_conn", "value"), "1000");
        assert!(
            config.rows.iter().flatten().all(|v| !v.contains("pass")),
            "no password shown: {config:#?}"
        );

        let version = show(addr, "SHOW VERSION").await;
        assert_eq!(version.columns, ["version"]);
        assert!(
            version.rows[0][0].starts_with("pgrepl-proxy "),
            "{version:?}"
        );

        let backends = show(addr, "SHOW BACKENDS").await;
        assert_eq!(backends.column("name"), [PRIMARY, REPLICA]);
        assert_eq!(backends.get("name", PRIMARY, "role"), "primary");
        assert_eq!(backends.get("name", REPLICA, "role"), "replica");
        assert_eq!(backends.column("up"), ["t", "t"]);
        assert_eq!(backends.get("name", REPLICA, "in_recovery"), "t");
        assert_eq!(backends.get("name", PRIMARY, "state"), "ok");
        assert!(backends
            .get("name", REPLICA, "lag_bytes")
            .parse::<u64>()
            .is_ok());

        let routes = show(addr, "SHOW ROUTES").await;
        assert_eq!(routes.columns, ["backend", "role", "reason", "queries"]);
        assert!(routes.number(&[("backend", REPLICA), ("reason", "read")], "queries") >= 2);
        assert!(routes.number(&[("backend", PRIMARY), ("reason", "hint")], "queries") >= 1);

        let users = show(addr, "SHOW USERS").await;
        assert_eq!(
            users.get("name", APP.name, "current_client_connections"),
            "1"
        );
        let state = show(addr, "SHOW STATE").await;
        assert_eq!(state.get("key", "paused", "value"), "no");
        drop((app, md5));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_postgres_reads_the_console_and_errors_leave_the_session_usable() {
    let proxy = admin_proxy();
    bounded(async {
        let console = console(proxy.addr).await;
        let pools = simple(&console, "SHOW POOLS").await;
        assert_eq!(pools.columns, POOLS);
        assert_eq!(pools.get("user", ADMIN, "database"), CONSOLE);
        let both = console
            .simple_query("SHOW LISTS; SHOW VERSION")
            .await
            .unwrap();
        let completions = both
            .iter()
            .filter(|m| matches!(m, SimpleQueryMessage::CommandComplete(_)))
            .count();
        assert_eq!(completions, 2, "one answer per command");

        for (sql, code) in [
            ("FROBNICATE", "42601"),
            ("SHOW NOTHING", "42601"),
            ("SHOW FDS", "0A000"),
            ("SUSPEND", "0A000"),
            ("KILL 999999", "42704"),
            ("RESUME", "55000"),
            ("RESUME appdb", "55000"),
            ("PAUSE pgrepl", "0A000"),
        ] {
            assert_eq!(fails_with(&console, sql).await, code, "{sql}");
            let version = simple(&console, "SHOW VERSION").await;
            assert_eq!(version.rows.len(), 1, "the session goes on after {sql}");
        }
        // tokio-postgres's query() speaks the extended protocol.
        let err = console.query("SHOW POOLS", &[]).await.unwrap_err();
        assert_eq!(code_of(&err), "0A000");
        assert_eq!(simple(&console, "SHOW STATE").await.rows.len(), 3);
        console.simple_query("SHOW HELP").await.expect("a notice");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_not_in_admin_users_are_refused_the_console() {
    let proxy = admin_proxy();
    let addr = proxy.addr;
    bounded(async {
        let err = tokio_postgres::connect(&conninfo(addr, APP.name, CONSOLE), NoTls)
            .await
            .err()
            .expect("app is not an admin user");
        assert_eq!(code_of(&err), "42501", "{err}");
        let stderr = tokio::task::spawn_blocking(move || {
            psql_console(addr, APP.name, APP.password.unwrap(), "SHOW POOLS")
        })
        .await
        .unwrap()
        .expect_err("psql is refused");
        assert!(
            stderr.contains("permission denied for database \"pgrepl\""),
            "{stderr}"
        );
        // A wrong password is refused before anything else.
        let stderr =
            tokio::task::spawn_blocking(move || psql_console(addr, ADMIN, "wrong", "SHOW POOLS"))
                .await
                .unwrap()
                .expect_err("a wrong password is refused");
        assert!(
            stderr.contains("password authentication failed"),
            "{stderr}"
        );
        // The console's users still reach their databases... if PostgreSQL knows them; app does.
        let app = connect(addr, APP.name, DATABASE).await.unwrap();
        assert_eq!(simple_first(&app, "SELECT 1").await, "1");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_ends_the_named_client_with_57p01_and_its_statement() {
    let proxy = admin_proxy();
    let addr = proxy.addr;
    bounded(async {
        let console = console(addr).await;
        // An idle client: its connection ends with FATAL 57P01 and its next query fails.
        let (idle, mut events) = connect_with_messages(addr, MD5USER.name, DATABASE)
            .await
            .unwrap();
        simple_first(&idle, "SELECT 1").await;
        let clients = simple(&console, "SHOW CLIENTS").await;
        let id = clients.get("user", MD5USER.name, "id").to_owned();
        let done = simple(&console, &format!("KILL {id}")).await;
        assert!(done.rows.is_empty());
        let ended = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match events.recv().await {
                    Some(Err(e)) => return Some(e),
                    Some(Ok(_)) => {}
                    None => return None,
                }
            }
        })
        .await
        .expect("the killed client's connection ends")
        .expect("with an error");
        assert_eq!(code_of(&ended), "57P01", "{ended}");
        assert!(idle.simple_query("SELECT 1").await.is_err());
        let clients = simple(&console, "SHOW CLIENTS").await;
        assert!(
            clients.rows_where("id", &id).is_empty(),
            "gone: {clients:#?}"
        );

        // A client running a statement: the statement fails with 57P01, and stops on its server.
        let busy = connect(addr, APP.name, DATABASE).await.unwrap();
        let marker = "/* pgrepl:primary */ SELECT pg_sleep(30) -- admin kill";
        let running = tokio::spawn(async move { busy.simple_query(marker).await });
        let deadline = Instant::now() + Duration::from_secs(10);
        let id = loop {
            let clients = simple(&console, "SHOW CLIENTS").await;
            let found = clients
                .rows_where("user", APP.name)
                .first()
                .filter(|row| row[clients.index("state")] == "active")
                .map(|row| row[clients.index("id")].clone());
            if let Some(id) = found {
                break id;
            }
            assert!(
                Instant::now() < deadline,
                "the busy client never held a server connection"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        let started = Instant::now();
        simple(&console, &format!("KILL {id}")).await;
        let answer = tokio::time::timeout(Duration::from_secs(10), running)
            .await
            .expect("the statement ends soon after KILL")
            .unwrap();
        let err = answer.expect_err("the killed statement fails");
        assert_eq!(code_of(&err), "57P01", "{err}");
        assert!(started.elapsed() < Duration::from_secs(10));
        let primary = Cluster::shared().primary.clone();
        let still_running = move || {
            primary
                .psql(
                    SUPERUSER,
                    "postgres",
                    "SELECT count(*) FROM pg_stat_activity \
                     WHERE query LIKE '%admin kill%' AND pid <> pg_backend_pid()",
                )
                .unwrap()
                .trim()
                .to_owned()
        };
        eventually(
            "the statement to stop on the primary",
            Duration::from_secs(10),
            || {
                let check = still_running.clone();
                async move { tokio::task::spawn_blocking(check).await.unwrap() == "0" }
            },
        )
        .await
        .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_holds_new_units_until_resume() {
    let proxy = admin_proxy();
    let addr = proxy.addr;
    bounded(async {
        let console = console(addr).await;
        // A session holding its server connection keeps PAUSE from completing: it gives up
        // after [admin] pause_timeout (2 s), the pause staying in force.
        let holder = connect(addr, APP.name, DATABASE).await.unwrap();
        let on_primary = "/* pgrepl:primary */ SELECT current_setting('cluster_name')";
        assert_eq!(simple_first(&holder, on_primary).await, PRIMARY);
        let started = Instant::now();
        assert_eq!(fails_with(&console, "PAUSE appdb").await, "55006");
        assert!(
            started.elapsed() >= Duration::from_millis(1800),
            "waited for pause_timeout"
        );
        let databases = simple(&console, "SHOW DATABASES").await;
        assert_eq!(databases.get("name", DATABASE, "paused"), "1");
        assert_eq!(
            fails_with(&console, "PAUSE appdb").await,
            "55000",
            "already paused"
        );

        // A new client's first unit waits; the holder goes on with its own connection.
        let waiter = connect(addr, MD5USER.name, DATABASE).await.unwrap();
        let waiting = tokio::spawn(async move {
            let row = simple_first(&waiter, "SELECT 'through'").await;
            (row, waiter)
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!waiting.is_finished(), "held back by PAUSE");
        assert_eq!(simple_first(&holder, on_primary).await, PRIMARY);
        let pools = simple(&console, "SHOW POOLS").await;
        let md5_pool = [("database", DATABASE), ("user", MD5USER.name)];
        assert_eq!(pools.number(&md5_pool, "cl_waiting"), 1, "{pools:#?}");
        let clients = simple(&console, "SHOW CLIENTS").await;
        assert_eq!(clients.get("user", MD5USER.name, "state"), "waiting");

        simple(&console, "RESUME appdb").await;
        let (row, waiter) = tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("RESUME lets the unit through")
            .unwrap();
        assert_eq!(row, "through");

        // With no server connection in use, PAUSE answers at once; every database waits.
        drop((holder, waiter));
        eventually("the clients to leave", Duration::from_secs(10), || {
            let console = &console;
            async move { simple(console, "SHOW CLIENTS").await.rows.len() == 1 }
        })
        .await
        .unwrap();
        let started = Instant::now();
        simple(&console, "PAUSE").await;
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(
            fails_with(&console, "RESUME appdb").await,
            "55000",
            "paused as a whole"
        );
        let state = simple(&console, "SHOW STATE").await;
        assert_eq!(state.get("key", "paused", "value"), "yes");
        let late = connect(addr, APP.name, DATABASE).await.unwrap();
        let waiting = tokio::spawn(async move { simple_first(&late, "SELECT 2").await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!waiting.is_finished(), "held back by PAUSE");
        simple(&console, "RESUME").await;
        let row = tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("RESUME lets it through")
            .unwrap();
        assert_eq!(row, "2");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_writes_holds_units_for_the_primary_until_released() {
    let proxy = admin_proxy();
    let addr = proxy.addr;
    bounded(async {
        let holder = console(addr).await;
        let on_primary = "/* pgrepl:primary */ SELECT current_setting('cluster_name')";
        // A transaction open on the primary keeps HOLD WRITES from answering: it gives up
        // after [admin] pause_timeout (2 s), the hold staying in force.
        let tx = connect(addr, APP.name, DATABASE).await.unwrap();
        tx.batch_execute("BEGIN").await.unwrap();
        assert_eq!(simple_first(&tx, on_primary).await, PRIMARY);
        let started = Instant::now();
        assert_eq!(fails_with(&holder, "HOLD WRITES").await, "55006");
        assert!(
            started.elapsed() >= Duration::from_millis(1800),
            "waited for pause_timeout"
        );

        // Held: a unit for the primary outside a transaction waits; the transaction goes
        // on and ends; reads on the replica are not held.
        let waiter = connect(addr, APP.name, DATABASE).await.unwrap();
        let waiting = tokio::spawn(async move {
            let row = simple_first(&waiter, on_primary).await;
            (row, waiter)
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!waiting.is_finished(), "held back by HOLD WRITES");
        assert_eq!(simple_first(&tx, on_primary).await, PRIMARY);
        tx.batch_execute("COMMIT").await.unwrap();
        let reader = connect(addr, APP.name, DATABASE).await.unwrap();
        let read = "SELECT current_setting('cluster_name')";
        assert_eq!(simple_first(&reader, read).await, REPLICA);

        // Nothing open on the primary now: the hold (this session's) answers at once; it
        // is no other console session's to take or lift.
        let started = Instant::now();
        simple(&holder, "HOLD WRITES").await;
        assert!(started.elapsed() < Duration::from_secs(1));
        let other = console(addr).await;
        assert_eq!(fails_with(&other, "HOLD WRITES").await, "55000");
        assert_eq!(fails_with(&other, "RELEASE WRITES").await, "55000");
        assert!(!waiting.is_finished(), "still held");
        simple(&holder, "RELEASE WRITES").await;
        let (row, waiter) = tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("RELEASE WRITES lets the unit through")
            .unwrap();
        assert_eq!(row, PRIMARY);

        // A hold lifts when the console session that took it ends.
        simple(&other, "HOLD WRITES").await;
        let late = tokio::spawn(async move { simple_first(&waiter, on_primary).await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!late.is_finished(), "held back by the other console's hold");
        drop(other);
        let row = tokio::time::timeout(Duration::from_secs(10), late)
            .await
            .expect("the hold lifts with its console session")
            .unwrap();
        assert_eq!(row, PRIMARY);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_write_refused_inside_a_transaction_aborts_it() {
    let routing = "\n[routing]\nwriter_wait = \"1s\"\ntransaction_reads = \"replica\"\n";
    let proxy = admin_proxy_with(routing);
    let addr = proxy.addr;
    bounded(async {
        let holder = console(addr).await;
        let client = connect(addr, APP.name, DATABASE).await.unwrap();
        // The first BEGIN learns what the session's transactions default to; the second
        // one the proxy answers itself: nothing is open on the primary.
        client.batch_execute("BEGIN; COMMIT").await.unwrap();
        client.batch_execute("BEGIN").await.unwrap();
        simple(&holder, "HOLD WRITES").await;
        let on_primary = "/* pgrepl:primary */ SELECT current_setting('cluster_name')";
        let refused = client.simple_query(on_primary).await.unwrap_err();
        assert_eq!(
            code_of(&refused),
            "08006",
            "held past writer_wait: {refused:?}"
        );
        simple(&holder, "RELEASE WRITES").await;
        // As PostgreSQL after a failed statement: the transaction is aborted, so a COMMIT
        // cannot commit what ran around the refused unit.
        let aborted = client.simple_query("SELECT 1").await.unwrap_err();
        assert_eq!(code_of(&aborted), "25P02", "{aborted:?}");
        client.batch_execute("ROLLBACK").await.unwrap();
        assert_eq!(simple_first(&client, on_primary).await, PRIMARY);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_the_proxy() {
    let mut proxy = admin_proxy();
    let addr = proxy.addr;
    bounded(async {
        let (client, mut events) = connect_with_messages(addr, APP.name, DATABASE)
            .await
            .unwrap();
        simple_first(&client, "SELECT 1").await;
        let console = console(addr).await;
        console
            .simple_query("SHUTDOWN")
            .await
            .expect("SHUTDOWN answers");
        let ended = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match events.recv().await {
                    Some(Err(e)) => return Some(e),
                    Some(Ok(_)) => {}
                    None => return None,
                }
            }
        })
        .await
        .expect("the idle client is told")
        .expect("with an error");
        assert_eq!(code_of(&ended), "57P01");
    })
    .await;
    let status = tokio::task::spawn_blocking(move || {
        let status = proxy.wait_exit(Duration::from_secs(20));
        (status, proxy)
    })
    .await
    .unwrap();
    let (status, proxy) = status;
    assert!(status.unwrap().success(), "exits cleanly:\n{}", proxy.log());
    assert!(std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_applies_the_file_and_refuses_a_bad_one() {
    let proxy = admin_proxy();
    bounded(async {
        let console = console(proxy.addr).await;
        // A client of the database, so that SHOW DATABASES lists it.
        let app = connect(proxy.addr, APP.name, DATABASE).await.unwrap();
        simple_first(&app, "SELECT 1").await;
        let config = std::fs::read_to_string(&proxy.config_path).unwrap();
        // A changed pool size is applied, and SHOW DATABASES says so.
        let bigger = config.replace(
            "[pool]\nmode = \"session\"\n",
            "[pool]\nmode = \"session\"\ndefault_pool_size = 7\n",
        );
        assert_ne!(
            bigger, config,
            "the console's configuration has a [pool] table"
        );
        std::fs::write(&proxy.config_path, &bigger).unwrap();
        console
            .simple_query("RELOAD")
            .await
            .expect("RELOAD applied");
        let databases = simple(&console, "SHOW DATABASES").await;
        assert_eq!(databases.get("name", DATABASE, "pool_size"), "7");
        // A configuration that does not validate is refused whole, with the reason.
        std::fs::write(
            &proxy.config_path,
            bigger.replace("default_pool_size = 7", "default_pool_size = -1"),
        )
        .unwrap();
        assert_eq!(fails_with(&console, "RELOAD").await, "F0000");
        let databases = simple(&console, "SHOW DATABASES").await;
        assert_eq!(
            databases.get("name", DATABASE, "pool_size"),
            "7",
            "unchanged"
        );
        // A database's override: its size applies, its mode waits for a restart.
        let overridden = format!(
            "{bigger}\n[pool.databases.{DATABASE}]\nmode = \"transaction\"\ndefault_pool_size = 3\n"
        );
        std::fs::write(&proxy.config_path, overridden).unwrap();
        console
            .simple_query("RELOAD")
            .await
            .expect("RELOAD applied");
        let databases = simple(&console, "SHOW DATABASES").await;
        assert_eq!(databases.get("name", DATABASE, "pool_size"), "3");
        assert_eq!(databases.get("name", DATABASE, "pool_mode"), "session");
        // The session goes on.
        simple(&console, "SHOW VERSION").await;
    })
    .await;
}
