//! Online reload: on SIGHUP the proxy reads its configuration file again and applies users,
//! `[routing]`, `[pool]`, the replica list and the log level while clients stay connected; a
//! configuration that does not load or validate changes nothing; keys that need a restart
//! are reported and kept.
//!
//! Every test runs a proxy of its own on the shared cluster, and rewrites its config file.
//! The reload counter of `/metrics` tells when a reload is done. Where a statement ran is
//! `current_setting('cluster_name')`: `db01` the primary, `db02` the replica, whatever name
//! the proxy's config gives it.

use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pgrepl_tests::endpoint::{get_json, Metrics};
use pgrepl_tests::roles::{Role, APP, DATABASE, MD5USER, PLAINUSER};
use pgrepl_tests::suite::{
    bounded_for, caught_up, code_of, eventually, free_addr, node_of_read, on_primary, simple_first,
    unique, PRIMARY, REPLICA,
};
use pgrepl_tests::{conninfo, users_toml, Cluster, ProxyProcess};
use tokio_postgres::{Client, NoTls};

const RELOADS: &str = "pgrepl_config_reloads_total";
const QUERIES: &str = "pgrepl_queries_total";
const TEST_LIMIT: Duration = Duration::from_secs(180);
const WAIT: Duration = Duration::from_secs(30);

/// A second name for the cluster's replica: the proxy takes it for another replica.
const REPLICA_B: &str = "db02b";

/// What a test's proxy is configured with.
#[derive(Clone)]
struct Setup {
    listen: SocketAddr,
    metrics: SocketAddr,
    /// `[[users]]` entries (see [`users_toml`]).
    users: String,
    /// Names and weights, all at the cluster's replica.
    replicas: Vec<(&'static str, u32)>,
    /// `[proxy]` keys besides `listen`.
    proxy: String,
    /// More tables.
    extra: String,
}

impl Setup {
    fn new(users: &[Role]) -> Setup {
        Setup {
            listen: free_addr(),
            metrics: free_addr(),
            users: users_toml(users),
            replicas: vec![(REPLICA, 1)],
            // Debug builds on a busy 2-core machine: SCRAM logins may be slow.
            proxy: "connect_timeout = \"20s\"".to_owned(),
            extra: String::new(),
        }
    }

    fn toml(&self) -> String {
        let cluster = Cluster::shared();
        // An empty list must be said: arrays replace the defaults' whole.
        let mut toml = if self.replicas.is_empty() {
            "replicas = []\n\n".to_owned()
        } else {
            String::new()
        };
        toml += &format!(
            "[proxy]\nlisten = \"{}\"\n{}\n\n[primary]\nname = \"{PRIMARY}\"\nhost = \"127.0.0.1\"\n\
             port = {}\n\n[metrics]\nlisten = \"{}\"\n",
            self.listen, self.proxy, cluster.primary.port, self.metrics
        );
        for (name, weight) in &self.replicas {
            toml += &format!(
                "\n[[replicas]]\nname = \"{name}\"\nhost = \"127.0.0.1\"\nport = {}\nweight = {weight}\n",
                cluster.replica.port
            );
        }
        toml + &self.users + "\n" + &self.extra
    }
}

/// A proxy started on a [`Setup`].
struct Running {
    proxy: ProxyProcess,
    /// Where `/metrics` is: the one it started with, whatever the file says later.
    endpoint: SocketAddr,
}

impl Running {
    fn start(setup: &Setup) -> Running {
        Running::start_with_env(setup, &[])
    }

    fn start_with_env(setup: &Setup, env: &[(&str, &str)]) -> Running {
        let proxy = ProxyProcess::start_with_env(&setup.toml(), setup.listen, env)
            .unwrap_or_else(|e| panic!("cannot start a proxy: {e:#}"));
        Running {
            proxy,
            endpoint: setup.metrics,
        }
    }

    async fn metrics(&self) -> Metrics {
        let endpoint = self.endpoint;
        tokio::task::spawn_blocking(move || Metrics::scrape(endpoint))
            .await
            .unwrap()
    }

    /// Reloads counted so far: (applied, rejected).
    async fn reloads(&self) -> (f64, f64) {
        let metrics = self.metrics().await;
        (
            metrics.value(RELOADS, &[("result", "ok")]),
            metrics.value(RELOADS, &[("result", "rejected")]),
        )
    }

    /// Writes `setup` over the config file, sends SIGHUP and waits until the reload is
    /// counted; true if it applied, false if it was rejected.
    async fn reload(&mut self, setup: &Setup) -> bool {
        let (ok, rejected) = self.reloads().await;
        self.proxy.reload_with(&setup.toml()).unwrap();
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let (ok_now, rejected_now) = self.reloads().await;
            if ok_now + rejected_now > ok + rejected {
                assert_eq!(ok_now + rejected_now, ok + rejected + 1.0, "one per SIGHUP");
                return ok_now > ok;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the reload was not counted within {WAIT:?}:\n{}",
                self.proxy.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn applies(&mut self, setup: &Setup) {
        assert!(
            self.reload(setup).await,
            "the reload was rejected:\n{}",
            self.proxy.log()
        );
    }

    /// Statements routed to `backend` (by the proxy's name for it) so far.
    async fn routed_to(&self, backend: &str) -> f64 {
        self.metrics().await.value(QUERIES, &[("backend", backend)])
    }

    /// The backends `/status` lists: their names, and whether each is up.
    async fn backends(&self) -> Vec<(String, bool)> {
        let endpoint = self.endpoint;
        let status = tokio::task::spawn_blocking(move || get_json(endpoint, "/status"))
            .await
            .unwrap();
        status["backends"]
            .as_array()
            .expect("a list of backends")
            .iter()
            .map(|b| (b["name"].as_str().unwrap().to_owned(), b["up"] == true))
            .collect()
    }

    /// The names of the backends `/status` lists.
    async fn listed(&self) -> Vec<String> {
        self.backends()
            .await
            .into_iter()
            .map(|(name, _)| name)
            .collect()
    }

    /// Waits until every backend `/status` lists is up (a replica just added is not until
    /// the monitor has sampled it).
    async fn all_up(&self) {
        eventually("every backend to be up", WAIT, || async {
            self.backends().await.iter().all(|(_, up)| *up)
        })
        .await
        .unwrap();
    }

    /// Where `reads` new sessions read, one read each: the statements routed to `a` and to
    /// `b` meanwhile.
    async fn spread(&self, reads: usize, a: &str, b: &str) -> (f64, f64) {
        let (a0, b0) = (self.routed_to(a).await, self.routed_to(b).await);
        for _ in 0..reads {
            let client = login(self.proxy.addr, APP).await.unwrap();
            assert_eq!(node_of_read(&client).await, REPLICA);
        }
        (self.routed_to(a).await - a0, self.routed_to(b).await - b0)
    }
}

/// Logs in as `user` with `password`; the SQLSTATE if refused.
async fn login_with(addr: SocketAddr, user: &str, password: &str) -> Result<Client, String> {
    let info = format!(
        "host={} port={} user={user} dbname={DATABASE} password={password} connect_timeout=20",
        addr.ip(),
        addr.port()
    );
    let (client, connection) = tokio_postgres::connect(&info, NoTls)
        .await
        .map_err(|e| code_of(&e))?;
    tokio::spawn(connection);
    Ok(client)
}

/// Logs in as harness role `role`; the SQLSTATE if refused.
async fn login(addr: SocketAddr, role: Role) -> Result<Client, String> {
    login_with(addr, role.name, role.password.unwrap_or_default()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_under_load_drop_no_client_and_fail_no_statement() {
    bounded_for(TEST_LIMIT, async {
        let table = unique("reload_load");
        on_primary(&format!(
            "CREATE TABLE {table} (client int, n int); GRANT ALL ON {table} TO md5user"
        ));
        caught_up().await;
        let base = Setup::new(&[APP, MD5USER]);
        let mut proxy = Running::start(&base);
        let stop = Arc::new(AtomicBool::new(false));
        let errors = Arc::new(Mutex::new(Vec::<String>::new()));
        let mut clients = Vec::new();
        for id in 0..8 {
            let role = if id % 2 == 0 { APP } else { MD5USER };
            let (client, connection) =
                tokio_postgres::connect(&conninfo(base.listen, role.name, DATABASE), NoTls)
                    .await
                    .unwrap();
            let connection = tokio::spawn(connection);
            let done = Arc::new(AtomicU64::new(0));
            let task = tokio::spawn(keep_querying(
                client,
                id,
                table.clone(),
                stop.clone(),
                errors.clone(),
                done.clone(),
            ));
            clients.push((connection, task, done));
        }
        let routing = |keys: &str| format!("[routing]\n{keys}\n");
        let steps: Vec<(Setup, bool)> = vec![
            (
                Setup {
                    replicas: vec![(REPLICA, 1), (REPLICA_B, 1)],
                    extra: routing(
                        "read_your_writes = \"off\"\nbalance = \"round_robin\"\ncausal_wait = \"5ms\"",
                    ) + "\n[pool]\nmax_idle = 5\n",
                    ..base.clone()
                },
                true,
            ),
            (
                Setup {
                    replicas: vec![(REPLICA_B, 2)],
                    extra: routing(
                        "read_your_writes = \"global\"\ntransaction_reads = \"replica\"",
                    ),
                    ..base.clone()
                },
                true,
            ),
            (
                Setup {
                    replicas: vec![(REPLICA, 3), (REPLICA_B, 1)],
                    users: users_toml(&[APP, MD5USER, PLAINUSER]),
                    extra: routing(
                        "classify_cache_size = 50\nwrite_functions = [\"no_such_function\"]",
                    ) + "\n[pool]\nmax_server_connections = 60\n\n[log]\nlevel = \"debug\"\n",
                    ..base.clone()
                },
                true,
            ),
            (
                Setup {
                    replicas: vec![],
                    extra: routing("causal_wait = \"5s\""),
                    ..base.clone()
                },
                false,
            ),
            (base.clone(), true),
        ];
        for (i, (setup, valid)) in steps.iter().enumerate() {
            let before: Vec<u64> = clients
                .iter()
                .map(|(_, _, done)| done.load(Ordering::Relaxed))
                .collect();
            assert_eq!(proxy.reload(setup).await, *valid, "step {i}");
            // Every client runs some more rounds under the new settings.
            eventually("every client to go on", WAIT, || {
                let progress = clients
                    .iter()
                    .zip(&before)
                    .all(|((_, _, done), b)| done.load(Ordering::Relaxed) >= b + 10);
                async move { progress }
            })
            .await
            .unwrap_or_else(|e| panic!("step {i}: {e:#}; errors: {:?}", errors.lock().unwrap()));
        }
        stop.store(true, Ordering::Relaxed);
        for (id, (connection, task, _)) in clients.into_iter().enumerate() {
            let client = task.await.unwrap();
            assert!(!connection.is_finished(), "client {id} lost its connection");
            client.simple_query("SELECT 1").await.unwrap();
        }
        let errors = std::mem::take(&mut *errors.lock().unwrap());
        let first = &errors[..errors.len().min(10)];
        assert!(errors.is_empty(), "{} errors: {first:?}", errors.len());
        assert_eq!(proxy.reloads().await, (4.0, 1.0));
        for replica in [REPLICA, REPLICA_B] {
            assert!(proxy.routed_to(replica).await > 0.0, "no read on {replica}");
        }
    })
    .await
}

/// Client `id`'s loop until `stop`: a read, a parameterized read, and a transaction that
/// writes and counts its own rows; counts its rounds in `done` and reports any failure.
async fn keep_querying(
    client: Client,
    id: i32,
    table: String,
    stop: Arc<AtomicBool>,
    errors: Arc<Mutex<Vec<String>>>,
    done: Arc<AtomicU64>,
) -> Client {
    let mut client = client;
    let mut written = 0i64;
    while !stop.load(Ordering::Relaxed) {
        let round = done.load(Ordering::Relaxed) as i32;
        let result: Result<(), String> = async {
            client
                .simple_query("SELECT current_setting('cluster_name')")
                .await
                .map_err(|e| format!("read: {e}"))?;
            let row = client
                .query_one("SELECT $1::int + 1", &[&round])
                .await
                .map_err(|e| format!("extended read: {e}"))?;
            if row.get::<_, i32>(0) != round + 1 {
                return Err("wrong answer".to_owned());
            }
            let tx = client
                .transaction()
                .await
                .map_err(|e| format!("BEGIN: {e}"))?;
            tx.execute(
                &format!("INSERT INTO {table} VALUES ($1, $2)"),
                &[&id, &round],
            )
            .await
            .map_err(|e| format!("INSERT: {e}"))?;
            let count: i64 = tx
                .query_one(
                    &format!("SELECT count(*) FROM {table} WHERE client = $1"),
                    &[&id],
                )
                .await
                .map_err(|e| format!("count: {e}"))?
                .get(0);
            if count != written + 1 {
                return Err(format!(
                    "the transaction sees {count} rows, wrote {}",
                    written + 1
                ));
            }
            tx.commit().await.map_err(|e| format!("COMMIT: {e}"))?;
            written += 1;
            Ok(())
        }
        .await;
        match result {
            Ok(()) => {
                done.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                errors.lock().unwrap().push(format!("client {id}: {e}"));
                return client;
            }
        }
    }
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_added_removed_and_changed_apply_to_new_logins_only() {
    bounded_for(TEST_LIMIT, async {
        let base = Setup::new(&[APP, PLAINUSER]);
        let mut proxy = Running::start(&base);
        let addr = base.listen;
        assert_eq!(login(addr, MD5USER).await.err().as_deref(), Some("28P01"));
        let plain = login(addr, PLAINUSER).await.unwrap();
        assert_eq!(node_of_read(&plain).await, REPLICA);

        proxy
            .applies(&Setup {
                users: users_toml(&[APP, MD5USER]),
                ..base.clone()
            })
            .await;
        let md5 = login(addr, MD5USER).await.expect("an added user logs in");
        assert_eq!(simple_first(&md5, "SELECT current_user").await, MD5USER.name);
        assert_eq!(
            login(addr, PLAINUSER).await.err().as_deref(),
            Some("28P01"),
            "a removed user cannot log in"
        );
        // Its session goes on, on both servers.
        assert_eq!(simple_first(&plain, "SELECT current_user").await, PLAINUSER.name);
        let primary = "/* pgrepl:primary */ SELECT current_setting('cluster_name')";
        assert_eq!(simple_first(&plain, primary).await, PRIMARY);

        // md5user's password and method changed in the configuration: the proxy asks for
        // the new password.
        let changed = users_toml(&[APP])
            + "\n[[users]]\nname = \"md5user\"\npassword = \"changed-pass\"\nauth = \"scram-sha-256\"\n";
        proxy
            .applies(&Setup {
                users: changed,
                ..base.clone()
            })
            .await;
        assert_eq!(login(addr, MD5USER).await.err().as_deref(), Some("28P01"));
        // The new password passes the proxy; the server, which still has the old one,
        // refuses the proxy's login with it.
        login_with(addr, MD5USER.name, "changed-pass")
            .await
            .expect("the new password passes the proxy");
        assert_eq!(simple_first(&md5, "SELECT current_user").await, MD5USER.name);
        let log = proxy.proxy.log();
        assert!(
            log.contains("user md5user changed") && log.contains("user plainuser removed"),
            "{log}"
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_settings_reach_running_sessions_at_their_next_idle_point() {
    bounded_for(TEST_LIMIT, async {
        let function = unique("where_am_i");
        on_primary(&format!(
            "CREATE FUNCTION {function}() RETURNS text VOLATILE LANGUAGE sql \
             AS $$SELECT current_setting('cluster_name')$$"
        ));
        caught_up().await;
        let base = Setup {
            extra: "[routing]\nread_your_writes = \"off\"\n".to_owned(),
            ..Setup::new(&[APP])
        };
        let mut proxy = Running::start(&base);
        let session = login(base.listen, APP).await.unwrap();
        let in_transaction = login(base.listen, APP).await.unwrap();
        let call = format!("SELECT {function}()");
        assert_eq!(
            simple_first(&session, &call).await,
            PRIMARY,
            "a volatile function"
        );
        assert_eq!(in_transaction_read(&session).await, PRIMARY);

        let replica_reads = Setup {
            extra: format!(
                "[routing]\nread_your_writes = \"global\"\ntransaction_reads = \"replica\"\n\
                 read_only_functions = [\"{function}\"]\n"
            ),
            ..base.clone()
        };
        proxy.applies(&replica_reads).await;
        assert_eq!(simple_first(&session, &call).await, REPLICA);
        // The first plain BEGIN runs on the primary and learns what the session's
        // transactions default to, as in a session that started with these settings.
        assert_eq!(in_transaction_read(&session).await, PRIMARY);
        assert_eq!(in_transaction_read(&session).await, REPLICA);
        let status = get_json(proxy.endpoint, "/status");
        assert_eq!(status["causal"]["mode"], "global");

        // A transaction open across a reload keeps the settings it began with.
        in_transaction_read(&in_transaction).await;
        in_transaction.batch_execute("BEGIN").await.unwrap();
        assert_eq!(node_of_read(&in_transaction).await, REPLICA);
        proxy.applies(&base).await;
        assert_eq!(node_of_read(&in_transaction).await, REPLICA);
        in_transaction.batch_execute("COMMIT").await.unwrap();
        assert_eq!(in_transaction_read(&in_transaction).await, PRIMARY);
        assert_eq!(simple_first(&session, &call).await, PRIMARY);
    })
    .await
}

/// Where a read inside a transaction opened by a plain `BEGIN` runs.
async fn in_transaction_read(client: &Client) -> String {
    client.batch_execute("BEGIN").await.unwrap();
    let node = node_of_read(client).await;
    client.batch_execute("COMMIT").await.unwrap();
    node
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_removed_added_and_reweighted_move_reads() {
    bounded_for(TEST_LIMIT, async {
        let base = Setup {
            extra: "[routing]\nread_your_writes = \"off\"\nbalance = \"round_robin\"\n".to_owned(),
            ..Setup::new(&[APP])
        };
        let mut proxy = Running::start(&base);
        let addr = base.listen;
        let session = login(addr, APP).await.unwrap();
        for _ in 0..30 {
            assert_eq!(node_of_read(&session).await, REPLICA);
        }

        // Removed: the session's next read goes elsewhere (the primary: no replica left).
        let none = Setup {
            replicas: vec![],
            ..base.clone()
        };
        proxy.applies(&none).await;
        assert_eq!(node_of_read(&session).await, PRIMARY);
        let fresh = login(addr, APP).await.unwrap();
        assert_eq!(node_of_read(&fresh).await, PRIMARY);
        assert_eq!(proxy.listed().await, [PRIMARY]);
        // Its counts stay on the page; its gauges go.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        proxy.metrics().await;
        let metrics = proxy.metrics().await;
        let reads_on_db02 = metrics.value(QUERIES, &[("backend", REPLICA), ("route", "replica")]);
        assert_eq!(reads_on_db02, 30.0);
        assert!(!metrics.has("pgrepl_backend_up", &[("backend", REPLICA)]));

        // Added: used once the monitor has sampled it.
        let b_only = Setup {
            replicas: vec![(REPLICA_B, 1)],
            ..base.clone()
        };
        proxy.applies(&b_only).await;
        eventually("reads on the added replica", WAIT, || async {
            node_of_read(&session).await == REPLICA
        })
        .await
        .unwrap();
        assert!(proxy.routed_to(REPLICA_B).await >= 1.0);
        assert_eq!(proxy.listed().await, [PRIMARY, REPLICA_B]);

        // db02 again, under a new id: its counts go on from where they were.
        let both = Setup {
            replicas: vec![(REPLICA, 1), (REPLICA_B, 1)],
            ..base.clone()
        };
        proxy.applies(&both).await;
        assert_eq!(proxy.listed().await, [PRIMARY, REPLICA_B, REPLICA]);
        proxy.all_up().await;
        // Round robin: one new session in two on each.
        assert_eq!(proxy.spread(10, REPLICA, REPLICA_B).await, (5.0, 5.0));

        // Reweighted: one in four on db02.
        let weighted = Setup {
            replicas: vec![(REPLICA, 1), (REPLICA_B, 3)],
            ..base.clone()
        };
        proxy.applies(&weighted).await;
        assert_eq!(proxy.spread(8, REPLICA, REPLICA_B).await, (2.0, 6.0));
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configuration_that_does_not_validate_changes_nothing() {
    bounded_for(TEST_LIMIT, async {
        let base = Setup::new(&[APP]);
        let mut proxy = Running::start(&base);
        let with_md5 = Setup {
            users: users_toml(&[APP, MD5USER]),
            ..base.clone()
        };
        let invalid = [
            ("[routing]\ncausal_wait = \"5s\"\n", "causal_wait"),
            ("[routing]\nread_your_writes = \"sometimes\"\n", "sometimes"),
            (
                "[pool]\nmax_server_connections = 0\n",
                "max_server_connections",
            ),
            ("[log]\nlevel = \"info,pgrepl_proxy=loud\"\n", "[log] level"),
            ("[routing\n", "unclosed table"),
        ];
        for (i, (extra, why)) in invalid.iter().enumerate() {
            let setup = Setup {
                extra: extra.to_string(),
                ..with_md5.clone()
            };
            assert!(!proxy.reload(&setup).await, "case {i} applied");
            assert_eq!(
                login(base.listen, MD5USER).await.err().as_deref(),
                Some("28P01"),
                "case {i}: nothing applied"
            );
            let log = proxy.proxy.log();
            let line = log
                .lines()
                .rfind(|l| l.contains("configuration reload rejected"))
                .unwrap_or_else(|| panic!("case {i}: no rejection logged:\n{log}"));
            assert!(line.contains(why), "case {i}: {line}");
        }
        assert_eq!(proxy.reloads().await, (0.0, invalid.len() as f64));
        let client = login(base.listen, APP).await.unwrap();
        assert_eq!(node_of_read(&client).await, REPLICA);

        proxy.applies(&with_md5).await;
        login(base.listen, MD5USER)
            .await
            .expect("the valid one applies");
        let last = proxy
            .metrics()
            .await
            .value("pgrepl_config_last_reload_success_timestamp_seconds", &[]);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(
            (now - last).abs() < 60.0,
            "last reload at {last}, now {now}"
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_that_need_a_restart_are_reported_and_kept() {
    bounded_for(TEST_LIMIT, async {
        let base = Setup::new(&[APP]);
        let mut proxy = Running::start(&base);
        let moved = Setup {
            listen: free_addr(),
            metrics: free_addr(),
            proxy: base.proxy.clone() + "\nworkers = 3",
            extra: "[routing]\nmax_replica_lag = \"2s\"\n".to_owned(),
            ..base.clone()
        };
        proxy.applies(&moved).await;
        let log = proxy.proxy.log();
        let warning = log
            .lines()
            .find(|l| l.contains("need a restart"))
            .unwrap_or_else(|| panic!("no warning:\n{log}"));
        for key in ["[proxy] listen", "[proxy] workers", "[metrics] listen"] {
            assert!(warning.contains(key), "{key}: {warning}");
        }
        assert!(!warning.contains("max_replica_lag"), "{warning}");
        assert!(
            log.lines()
                .any(|l| l.contains("configuration reloaded") && l.contains("max_replica_lag")),
            "{log}"
        );
        // Still where it was; nothing on the new addresses.
        let client = login(base.listen, APP).await.unwrap();
        assert_eq!(node_of_read(&client).await, REPLICA);
        for addr in [moved.listen, moved.metrics] {
            assert!(
                TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err(),
                "{addr} accepts"
            );
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_level_follows_the_configuration() {
    bounded_for(TEST_LIMIT, async {
        let base = Setup::new(&[APP]);
        let mut proxy = Running::start(&base);
        let client = login(base.listen, APP).await.unwrap();
        let routed = |proxy: &Running| {
            proxy
                .proxy
                .log()
                .lines()
                .filter(|l| l.contains("routed"))
                .count()
        };
        node_of_read(&client).await;
        assert_eq!(routed(&proxy), 0, "debug lines at level info");
        proxy
            .applies(&Setup {
                extra: "[log]\nlevel = \"info,pgrepl_proxy=debug\"\n".to_owned(),
                ..base.clone()
            })
            .await;
        node_of_read(&client).await;
        eventually("a debug line", WAIT, || async { routed(&proxy) > 0 })
            .await
            .unwrap();
        proxy.applies(&base).await;
        let debug_lines = routed(&proxy);
        for _ in 0..5 {
            node_of_read(&client).await;
        }
        assert_eq!(routed(&proxy), debug_lines, "back at level info");

        // RUST_LOG set at start stays in force.
        let base = Setup::new(&[APP]);
        let mut proxy = Running::start_with_env(&base, &[("RUST_LOG", "info")]);
        let debug = Setup {
            extra: "[log]\nlevel = \"debug\"\n".to_owned(),
            ..base.clone()
        };
        proxy.applies(&debug).await;
        let client = login(base.listen, APP).await.unwrap();
        node_of_read(&client).await;
        assert_eq!(routed(&proxy), 0, "RUST_LOG=info decides");
        let log = proxy.proxy.log();
        assert!(
            log.lines()
                .any(|l| l.contains("need a restart") && l.contains("[log] level")),
            "{log}"
        );
    })
    .await
}

/// `[pool]` of a proxy in session mode with `n` connections per backend, that refuses a
/// statement after a second's wait for one.
fn limit_toml(n: usize) -> String {
    format!(
        "[pool]\nmode = \"session\"\nmax_server_connections = {n}\nquery_wait_timeout = \"1s\"\nreserve_pool_timeout = \"1s\"\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lower_connection_limit_waits_for_connections_to_close_and_a_higher_one_applies_at_once()
{
    bounded_for(TEST_LIMIT, async {
        let base = Setup {
            replicas: vec![],
            // Session mode: each session keeps its connection while it lasts.
            extra: limit_toml(3),
            ..Setup::new(&[APP])
        };
        let limit = |n: usize| Setup {
            extra: limit_toml(n),
            ..base.clone()
        };
        let mut proxy = Running::start(&base);
        let addr = base.listen;
        // Each session keeps its primary connection while it lasts.
        let mut sessions = Vec::new();
        for _ in 0..3 {
            let client = login(addr, APP).await.unwrap();
            client.simple_query("SELECT 1").await.unwrap();
            sessions.push(client);
        }
        // 1 while 3 are open: the new limit holds once two have closed.
        proxy.applies(&limit(1)).await;
        let late = login(addr, APP).await.unwrap();
        let full = late.simple_query("SELECT 1").await.unwrap_err();
        assert_eq!(code_of(&full), "53300");
        drop(sessions.remove(0));
        tokio::time::sleep(Duration::from_millis(300)).await;
        let full = late.simple_query("SELECT 1").await.unwrap_err();
        assert_eq!(code_of(&full), "53300", "2 open, limit 1");
        drop(sessions.remove(0));
        tokio::time::sleep(Duration::from_millis(300)).await;
        let full = late.simple_query("SELECT 1").await.unwrap_err();
        assert_eq!(code_of(&full), "53300", "1 open, limit 1");
        // Raised: at once.
        proxy.applies(&limit(2)).await;
        late.simple_query("SELECT 1").await.unwrap();
        assert_eq!(node_of_read(&sessions[0]).await, PRIMARY);
    })
    .await
}
