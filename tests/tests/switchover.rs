//! `pgrepl-proxy switchover --to db02` through a running proxy (design §8, §10 row 3): db01
//! and two asynchronous replicas built by `provision` on the local runtime, a proxy in front
//! with every node promotable and an admin user, and a load through it: sessions writing
//! increasing values with a prepared INSERT in autocommit, one session writing in explicit
//! transactions, sessions reading. The switchover holds writes at the proxy's console, so no
//! acknowledged write is lost and no client sees an error outside a transaction open at the
//! hold (those may get 40001; one left open on purpose makes HOLD WRITES answer 55006 after
//! `[admin] pause_timeout`, which the tool reports before going on); prepared statements and `SET`s keep working, writes go on on
//! db02, db01 streams from db02, and a second run prints only "already done". Prints how long
//! writes were held, errors by SQLSTATE and writes acknowledged against found. Run in both
//! pool modes by scripts/test.sh.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pgrepl_provision::runtime::{NodeId, Runtime};
use pgrepl_tests::provisioning::LocalSet;
use pgrepl_tests::roles::{APP, DATABASE, SUPERUSER};
use pgrepl_tests::suite::{bounded_for, eventually, free_addr, sqlstate};
use pgrepl_tests::{connect, free_port, users_toml, ProxyProcess};
use tokio_postgres::{Client, NoTls};

const ADMIN: &str = "admin";
const ADMIN_PASSWORD: &str = "admin-pass";
const WRITERS: i64 = 3;
const READERS: usize = 2;
/// The setting each writer makes before the switchover and reads back after it.
const TIMEOUT_SETTING: &str = "17s";
const LIMIT: Duration = Duration::from_secs(90);

/// What the load saw.
#[derive(Default)]
struct Seen {
    /// Values whose INSERT (or whose transaction's COMMIT) was acknowledged.
    acknowledged: BTreeSet<i64>,
    /// Errors outside an explicit transaction, by SQLSTATE.
    errors: BTreeMap<String, usize>,
    /// Errors inside explicit transactions, by SQLSTATE.
    transaction_errors: BTreeMap<String, usize>,
    /// The longest an acknowledged write took.
    slowest_write: Duration,
    /// The longest time between two acknowledged autocommit writes of one session.
    longest_gap: Duration,
    reads: usize,
}

fn count(map: &mut BTreeMap<String, usize>, err: &tokio_postgres::Error) {
    let code = sqlstate(err).unwrap_or_else(|| format!("none ({err})"));
    *map.entry(code).or_default() += 1;
}

/// The superuser on `node` directly, past the proxy.
async fn direct(set: &LocalSet, node: NodeId, db: &str) -> Client {
    let endpoint = set.runtime().host_endpoint(node);
    let info = format!(
        "host={} port={} user={SUPERUSER} dbname={db} connect_timeout=10",
        endpoint.host, endpoint.port
    );
    let (client, connection) = tokio_postgres::connect(&info, NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

/// The proxy's configuration: every node promotable, samples every 100 ms, the admin user
/// on the console; HOLD WRITES answers within 2 s, well inside `writer_wait` (10 s).
fn proxy_toml(set: &LocalSet, listen: SocketAddr) -> String {
    let rt = set.runtime();
    let mut toml = format!("[proxy]\nlisten = \"{listen}\"\n");
    for node in NodeId::first(3) {
        let endpoint = rt.host_endpoint(node);
        toml += &format!(
            "\n[[nodes]]\nname = \"{node}\"\nhost = \"{}\"\nport = {}\n",
            endpoint.host, endpoint.port
        );
    }
    toml += &users_toml(&[APP]);
    toml += &format!(
        "\n[[users]]\nname = \"{ADMIN}\"\npassword = \"{ADMIN_PASSWORD}\"\n\n\
         [admin]\nusers = [\"{ADMIN}\"]\npause_timeout = \"2s\"\n\n\
         [health]\ninterval = \"100ms\"\n\n\
         [routing]\nwriter_confirmations = 3\n\n\
         [metrics]\nlisten = \"127.0.0.1:{}\"\n",
        free_port()
    );
    toml
}

/// A session writing `base + 1, base + 2, ...` with one prepared INSERT in autocommit, its
/// `statement_timeout` set first; returns the port of the server its last write ran on.
async fn writer(addr: SocketAddr, base: i64, stop: Arc<AtomicBool>, seen: Arc<Mutex<Seen>>) -> i32 {
    let client = connect(addr, APP.name, DATABASE).await.unwrap();
    client
        .batch_execute(&format!("SET statement_timeout = '{TIMEOUT_SETTING}'"))
        .await
        .unwrap();
    let insert = client
        .prepare("INSERT INTO acked (id) VALUES ($1) RETURNING inet_server_port()")
        .await
        .unwrap();
    let (mut next, mut port, mut last_ack) = (base, 0, Instant::now());
    while !stop.load(Ordering::Relaxed) {
        next += 1;
        let sent = Instant::now();
        let answer = client.query_one(&insert, &[&next]).await;
        {
            let mut seen = seen.lock().unwrap();
            match answer {
                Ok(row) => {
                    port = row.get(0);
                    seen.acknowledged.insert(next);
                    seen.slowest_write = seen.slowest_write.max(sent.elapsed());
                    seen.longest_gap = seen.longest_gap.max(last_ack.elapsed());
                    last_ack = Instant::now();
                }
                Err(e) => count(&mut seen.errors, &e),
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let setting: String = client
        .query_one("SHOW statement_timeout", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(setting, TIMEOUT_SETTING, "the session's SET survived");
    port
}

/// A session writing two values per explicit transaction, a pause inside each so some are
/// open when the hold comes. A failed transaction is rolled back and its values are not
/// acknowledged.
async fn transactions(addr: SocketAddr, base: i64, stop: Arc<AtomicBool>, seen: Arc<Mutex<Seen>>) {
    let client = connect(addr, APP.name, DATABASE).await.unwrap();
    let mut next = base;
    while !stop.load(Ordering::Relaxed) {
        let (a, b) = (next + 1, next + 2);
        next += 2;
        let run = async {
            client.batch_execute("BEGIN").await?;
            client
                .execute("INSERT INTO acked (id) VALUES ($1)", &[&a])
                .await?;
            tokio::time::sleep(Duration::from_millis(20)).await;
            client
                .execute("INSERT INTO acked (id) VALUES ($1)", &[&b])
                .await?;
            client.batch_execute("COMMIT").await
        };
        match run.await {
            Ok(()) => {
                seen.lock().unwrap().acknowledged.extend([a, b]);
            }
            Err(e) => {
                count(&mut seen.lock().unwrap().transaction_errors, &e);
                client.batch_execute("ROLLBACK").await.unwrap();
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A session reading in autocommit.
async fn reader(addr: SocketAddr, stop: Arc<AtomicBool>, seen: Arc<Mutex<Seen>>) {
    let client = connect(addr, APP.name, DATABASE).await.unwrap();
    while !stop.load(Ordering::Relaxed) {
        let answer = client.query_one("SELECT count(*) FROM acked", &[]).await;
        {
            let mut seen = seen.lock().unwrap();
            match answer {
                Ok(_) => seen.reads += 1,
                Err(e) => count(&mut seen.errors, &e),
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Runs `pgrepl-proxy ARGS --config <the proxy's>` on the set, off the async threads.
fn cli(set: &LocalSet, proxy_config: &str, args: &[&str]) -> pgrepl_tests::suite::PsqlRun {
    let mut args = args.to_vec();
    args.extend(["--config", proxy_config]);
    tokio::task::block_in_place(|| set.run(&args))
}

/// Whether `replica` streams from `primary`.
async fn streams_from(primary: &Client, replica: NodeId) -> bool {
    let sql = format!(
        "SELECT count(*) FROM pg_stat_replication \
         WHERE application_name = '{replica}' AND state = 'streaming'"
    );
    primary
        .query_one(&sql, &[])
        .await
        .is_ok_and(|row| row.get::<_, i64>(0) == 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switchover_through_the_proxy_loses_no_acknowledged_write() {
    let began = Instant::now();
    let set = LocalSet::new("switchover-proxy", 2);
    tokio::task::block_in_place(|| set.expect(&["provision"]));
    bounded_for(LIMIT, async {
        let db01 = direct(&set, NodeId::DB01, "postgres").await;
        db01.batch_execute(&format!(
            "CREATE ROLE {} LOGIN PASSWORD '{}'",
            APP.name,
            APP.password.unwrap()
        ))
        .await
        .unwrap();
        db01.batch_execute(&format!("CREATE DATABASE {DATABASE} OWNER {}", APP.name))
            .await
            .unwrap();
        let app_db = direct(&set, NodeId::DB01, DATABASE).await;
        app_db
            .batch_execute(&format!(
                "CREATE TABLE acked (id bigint PRIMARY KEY); ALTER TABLE acked OWNER TO {}",
                APP.name
            ))
            .await
            .unwrap();

        let listen = free_addr();
        let toml = proxy_toml(&set, listen);
        let config_path = set.dir.join("proxy.toml");
        std::fs::write(&config_path, &toml).unwrap();
        let config_path = config_path.to_string_lossy().into_owned();

        // No proxy yet: the switchover says so and changes nothing.
        let refused = cli(&set, &config_path, &["switchover", "--to", "db02"]);
        assert!(
            !refused.success,
            "went on without a proxy:\n{}",
            refused.stdout
        );
        assert!(
            refused
                .stderr
                .contains("cannot reach the proxy's admin console")
                && refused.stderr.contains("--without-proxy"),
            "{}",
            refused.stderr
        );
        let in_recovery: bool = db01
            .query_one("SELECT pg_is_in_recovery()", &[])
            .await
            .unwrap()
            .get(0);
        assert!(!in_recovery, "the refusal left db01 the primary");

        let proxy = ProxyProcess::start(&toml, listen).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let writers: Vec<_> = (1..=WRITERS)
            .map(|w| tokio::spawn(writer(listen, w * 1_000_000, stop.clone(), seen.clone())))
            .collect();
        let transaction_writer = tokio::spawn(transactions(
            listen,
            (WRITERS + 1) * 1_000_000,
            stop.clone(),
            seen.clone(),
        ));
        let readers: Vec<_> = (0..READERS)
            .map(|_| tokio::spawn(reader(listen, stop.clone(), seen.clone())))
            .collect();

        tokio::time::sleep(Duration::from_secs(2)).await;
        let before = seen.lock().unwrap().acknowledged.len();
        assert!(before > 20, "the load is running ({before} writes)");
        // A transaction left open across the hold: HOLD WRITES answers 55006 after
        // pause_timeout, the switchover goes on, and the transaction gets 40001.
        let open = connect(listen, APP.name, DATABASE).await.unwrap();
        open.batch_execute("BEGIN; INSERT INTO acked (id) VALUES (-1)")
            .await
            .unwrap();
        let switch_began = Instant::now();
        let out = cli(&set, &config_path, &["switchover", "--to", "db02"]);
        let switch_took = switch_began.elapsed();
        assert!(
            out.success,
            "switchover failed:\n{}{}\n{}",
            out.stdout,
            out.stderr,
            proxy.log()
        );
        eprintln!("{}", out.stdout);
        assert!(
            out.stdout
                .contains("writes held by the proxy; 1 transaction(s)")
                && out.stdout.contains("still open"),
            "HOLD WRITES reported the open transaction:\n{}",
            out.stdout
        );
        let lost = open
            .batch_execute("INSERT INTO acked (id) VALUES (-2)")
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&lost).as_deref(), Some("40001"), "{lost}");
        open.batch_execute("ROLLBACK").await.unwrap();
        assert!(
            out.stdout.contains("the proxy writes to db02"),
            "{}",
            out.stdout
        );
        let acknowledged_at_switch = seen.lock().unwrap().acknowledged.len();

        // Writes go on after the switchover, then the load stops.
        tokio::time::sleep(Duration::from_secs(2)).await;
        stop.store(true, Ordering::Relaxed);
        let db02_port = i32::from(set.runtime().host_endpoint(NodeId::DB02).port);
        for w in writers {
            assert_eq!(w.await.unwrap(), db02_port, "the last writes ran on db02");
        }
        transaction_writer.await.unwrap();
        for r in readers {
            r.await.unwrap();
        }
        let seen = std::mem::take(&mut *seen.lock().unwrap());
        assert!(
            seen.acknowledged.len() > acknowledged_at_switch + 20,
            "writes resumed after the switchover"
        );

        let db02 = direct(&set, NodeId::DB02, DATABASE).await;
        let found: BTreeSet<i64> = db02
            .query("SELECT id FROM acked", &[])
            .await
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect();
        let lost: Vec<&i64> = seen.acknowledged.difference(&found).collect();
        eprintln!(
            "switchover took {:.2} s; writes held: the slowest acknowledged write took {} ms, \
             the longest gap between a session's writes was {} ms; writes acknowledged {}, \
             found on db02 {} (rows there {}), lost {}; reads {}; errors outside transactions \
             {:?}, in transactions {:?}",
            switch_took.as_secs_f64(),
            seen.slowest_write.as_millis(),
            seen.longest_gap.as_millis(),
            seen.acknowledged.len(),
            seen.acknowledged.len() - lost.len(),
            found.len(),
            lost.len(),
            seen.reads,
            seen.errors,
            seen.transaction_errors
        );
        assert!(
            lost.is_empty(),
            "acknowledged writes missing on db02: {lost:?}"
        );
        assert!(
            !found.contains(&-1),
            "the transaction open at the hold was not committed"
        );
        assert!(seen.errors.is_empty(), "client errors: {:?}", seen.errors);
        assert!(
            seen.transaction_errors.keys().all(|code| code == "40001"),
            "transactions failed other than with 40001: {:?}",
            seen.transaction_errors
        );
        assert!(
            seen.transaction_errors.values().sum::<usize>() <= 1,
            "only a transaction open at the hold may fail: {:?}",
            seen.transaction_errors
        );

        // db01 is a streaming replica of db02.
        let db02_postgres = direct(&set, NodeId::DB02, "postgres").await;
        eventually("db01 to stream from db02", Duration::from_secs(30), || {
            streams_from(&db02_postgres, NodeId::DB01)
        })
        .await
        .unwrap();
        let db01 = direct(&set, NodeId::DB01, "postgres").await;
        let in_recovery: bool = db01
            .query_one("SELECT pg_is_in_recovery()", &[])
            .await
            .unwrap()
            .get(0);
        assert!(in_recovery, "db01 is a standby");

        let again = cli(&set, &config_path, &["switchover", "--to", "db02"]);
        assert!(again.success, "{}{}", again.stdout, again.stderr);
        let steps: Vec<&str> = again
            .stdout
            .lines()
            .filter(|l| l.starts_with('['))
            .collect();
        assert!(!steps.is_empty(), "{}", again.stdout);
        for line in steps {
            assert!(
                line.ends_with("... already done"),
                "a rerun changed something: {line}\n{}",
                again.stdout
            );
        }
        drop(proxy);
    })
    .await;
    assert!(began.elapsed() < LIMIT, "took {:?}", began.elapsed());
}
