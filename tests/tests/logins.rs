//! Connections that have not authenticated: floods of silent TCP connections and of
//! connections that stop in the middle of SCRAM never keep a real client out. They do not
//! count against `max_client_connections`; past `max_pending_logins` (or
//! `max_pending_logins_per_address`) the oldest of them are closed; `startup_timeout` closes
//! them; only authenticated clients are refused 53300.
//!
//! The flood tests give logins a minute (`startup_timeout`): the login timeout has a test of
//! its own, and SCRAM logins from a debug build on a busy 2-core machine are slow (the
//! client's PBKDF2 is unoptimised code there: ten at once can take longer than the 5 s
//! default).

use pgrepl_tests::endpoint::Metrics;
use pgrepl_tests::roles::{APP, DATABASE, MD5USER};
use pgrepl_tests::suite::raw::{self, RawClient};
use pgrepl_tests::suite::{
    bounded, code_of, eventually, node_of_read, start_proxy, PRIMARY, REPLICA,
};
use pgrepl_tests::{connect, conninfo};
use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinSet;
use tokio_postgres::{Client, NoTls};

const PENDING: &str = "pgrepl_client_logins_pending";
const REJECTED: &str = "pgrepl_client_rejected_total";

/// A second loopback address: a source other than 127.0.0.1 (all of 127/8 is local).
const OTHER_SOURCE: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// Raises this process's open-file limit to its hard limit: the floods hold a thousand
/// sockets or more here, with tests running side by side (the usual soft limit is 1024).
fn raise_fd_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write one rlimit, which `limit` is.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
    }
}

/// A TCP connection from `source` that never sends anything.
async fn silent_from(source: IpAddr, addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(source, 0)).unwrap();
    socket.connect(addr).await.unwrap()
}

async fn silent(addr: SocketAddr) -> TcpStream {
    silent_from(IpAddr::V4(Ipv4Addr::LOCALHOST), addr).await
}

/// A connection that sends its startup packet as `app` (SCRAM), reads the password
/// request, and never answers it.
async fn stalled_in_scram(addr: SocketAddr) -> TcpStream {
    let mut client = RawClient::connect(addr).await.unwrap();
    client
        .send(&raw::startup_packet(&[
            ("user", APP.name),
            ("database", DATABASE),
        ]))
        .await
        .unwrap();
    let request = client.recv().await.unwrap().expect("a password request");
    assert_eq!(request.ty, b'R', "{request:?}");
    client.stream
}

/// Whether the proxy closed `stream` (end of stream or reset) within `wait`; anything it
/// sends first is read and dropped.
async fn closed_within(stream: &mut TcpStream, wait: Duration) -> bool {
    let mut buf = [0u8; 512];
    let to_end = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    };
    tokio::time::timeout(wait, to_end).await.is_ok()
}

/// A tokio-postgres client of `app` (SCRAM) whose connection comes from `source`.
async fn connect_from(source: IpAddr, addr: SocketAddr) -> Client {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(source, 0)).unwrap();
    let stream = socket.connect(addr).await.unwrap();
    let config: tokio_postgres::Config = conninfo(addr, APP.name, DATABASE).parse().unwrap();
    let (client, connection) = config.connect_raw(stream, NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

/// A client of `user` that logged in and had a read answered, and how long its login took;
/// fails if it was refused or not answered.
async fn real_client(addr: SocketAddr, user: &'static str) -> (Client, Duration) {
    let started = Instant::now();
    let client = connect(addr, user, DATABASE)
        .await
        .unwrap_or_else(|e| panic!("a real client was refused: {e:#}"));
    let took = started.elapsed();
    // Where it ran does not matter here (a flooded monitor may find the replica stale).
    let node = node_of_read(&client).await;
    assert!([PRIMARY, REPLICA].contains(&node.as_str()), "{node}");
    (client, took)
}

/// Logs `count` real clients in at once, one in five with SCRAM (`app`), the others with md5
/// (`md5user`: the test's own SCRAM, unoptimised code in a debug build, would take most of
/// the time); returns them and the slowest login.
async fn real_clients(addr: SocketAddr, count: usize) -> (Vec<Client>, Duration) {
    let mut logins = JoinSet::new();
    for i in 0..count {
        let user = if i % 5 == 0 { APP.name } else { MD5USER.name };
        logins.spawn(real_client(addr, user));
    }
    let mut clients = Vec::new();
    let mut slowest = Duration::ZERO;
    while let Some(done) = logins.join_next().await {
        let (client, took) = done.unwrap();
        clients.push(client);
        slowest = slowest.max(took);
    }
    (clients, slowest)
}

/// A scrape once `pending` connections are logging in and the harness's start-up probe (a
/// connection opened and closed at once, which waits in the listen backlog until the
/// monitor's first round is done) has been accepted and has left.
async fn settled_pending(endpoint: SocketAddr, pending: f64) -> Metrics {
    eventually(
        &format!("{pending} connections logging in"),
        Duration::from_secs(10),
        || async {
            let metrics = Metrics::scrape(endpoint);
            metrics.value("pgrepl_client_connections_total", &[]) >= 1.0
                && metrics.value(PENDING, &[]) == pending
        },
    )
    .await
    .unwrap();
    Metrics::scrape(endpoint)
}

fn rejected(metrics: &Metrics, reason: &str) -> f64 {
    metrics.value(REJECTED, &[("reason", reason)])
}

/// A scrape once `count` connections have been turned away for `reason` (each counts its
/// own, when its task sees that it was closed).
async fn settled_rejected(endpoint: SocketAddr, reason: &str, count: f64) -> Metrics {
    let settled = eventually(
        &format!("{count} connections turned away for {reason}"),
        Duration::from_secs(10),
        || async { rejected(&Metrics::scrape(endpoint), reason) == count },
    )
    .await;
    let metrics = Metrics::scrape(endpoint);
    if let Err(e) = settled {
        panic!(
            "{e:#}: {} turned away for {reason}, {} pending",
            rejected(&metrics, reason),
            metrics.value(PENDING, &[])
        );
    }
    metrics
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_unauthenticated_connections_takes_no_client_slot() {
    raise_fd_limit();
    bounded(async {
        let proxy = start_proxy("max_client_connections = 50\nstartup_timeout = \"60s\"");
        let (addr, endpoint) = (proxy.addr, proxy.endpoint());
        settled_pending(endpoint, 0.0).await;
        // Ten times max_client_connections, silent, and a hundred stopped inside SCRAM.
        let mut flood = Vec::new();
        for _ in 0..500 {
            flood.push(silent(addr).await);
        }
        for _ in 0..100 {
            flood.push(stalled_in_scram(addr).await);
        }
        let before = settled_pending(endpoint, 600.0).await;
        assert_eq!(before.value("pgrepl_client_connections", &[]), 0.0);

        // Every place of max_client_connections is there for clients that authenticate.
        let (clients, slowest) = real_clients(addr, 50).await;
        eprintln!(
            "flood of 600 unauthenticated connections, max_client_connections = 50: \
             50 of 50 real clients in and answered, slowest login {slowest:?}"
        );
        let full = Metrics::scrape(endpoint);
        assert_eq!(full.value("pgrepl_client_connections", &[]), 50.0);
        assert_eq!(full.value(PENDING, &[]), 600.0);

        // Past it, a client is refused once it has authenticated: a wrong password is
        // still told 28P01, the right one 53300.
        let wrong = conninfo(addr, APP.name, DATABASE).replace(APP.password.unwrap(), "wrong");
        let err = tokio_postgres::connect(&wrong, NoTls).await.err().unwrap();
        assert_eq!(code_of(&err), "28P01");
        let err = connect(addr, APP.name, DATABASE).await.err().unwrap();
        let db = err
            .chain()
            .find_map(|e| e.downcast_ref::<tokio_postgres::Error>())
            .and_then(|e| e.as_db_error())
            .unwrap_or_else(|| panic!("no server error: {err:#}"));
        assert_eq!(
            (db.code().code(), db.message()),
            ("53300", "sorry, too many clients already")
        );
        // None of the flood was closed: nothing needed its place.
        for conn in flood.iter_mut().step_by(50) {
            assert!(!closed_within(conn, Duration::from_millis(20)).await);
        }
        let after = Metrics::scrape(endpoint);
        assert_eq!(rejected(&after, "limit") - rejected(&before, "limit"), 1.0);
        assert_eq!(rejected(&after, "pending_limit"), 0.0);
        // One leaves, another gets in.
        drop(clients);
        eventually(
            "a client slot to come free",
            Duration::from_secs(5),
            || async { connect(addr, APP.name, DATABASE).await.is_ok() },
        )
        .await
        .unwrap();
    })
    .await
}

/// Opens silent and SCRAM-stalled connections, alternately, one every `pace`, until
/// `stop`, keeping the newest `kept` open (the proxy has closed the older ones); returns how
/// many it opened.
async fn keep_flooding(
    addr: SocketAddr,
    pace: Duration,
    kept: usize,
    stop: Arc<AtomicBool>,
) -> usize {
    let mut open = VecDeque::new();
    let mut opened = 0;
    let mut tick = tokio::time::interval(pace);
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        open.push_back(if opened % 2 == 0 {
            silent(addr).await
        } else {
            stalled_in_scram(addr).await
        });
        opened += 1;
        if open.len() > kept {
            open.pop_front();
        }
    }
    opened
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_pending_logins_the_oldest_are_closed_and_real_clients_get_in() {
    raise_fd_limit();
    bounded(async {
        let proxy = start_proxy(
            "max_client_connections = 50\nmax_pending_logins = 500\nstartup_timeout = \"60s\"",
        );
        let (addr, endpoint) = (proxy.addr, proxy.endpoint());
        settled_pending(endpoint, 0.0).await;
        // 800 at once: the 300 oldest make room for the newer ones.
        let mut burst = Vec::new();
        for _ in 0..800 {
            burst.push(silent(addr).await);
        }
        settled_pending(endpoint, 500.0).await;
        settled_rejected(endpoint, "pending_limit", 300.0).await;
        for (i, conn) in burst.iter_mut().enumerate().step_by(25) {
            let closed = closed_within(conn, Duration::from_millis(200)).await;
            assert_eq!(closed, i < 300, "connection {i} of the burst");
        }
        // Its 500 survivors stay pending: the flood below closes them first.
        burst.drain(..300);

        // Then a flood that goes on, 100 connections a second from the same address, while
        // real clients (SCRAM) log in one after another: each has 5 s before it would be the
        // oldest, and takes 0.2-1.5 s here (a debug build on a busy machine).
        let stop = Arc::new(AtomicBool::new(false));
        let flood = tokio::spawn(keep_flooding(
            addr,
            Duration::from_millis(10),
            600,
            stop.clone(),
        ));
        let flooding_since = tokio::time::Instant::now();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut clients = Vec::new();
        let mut slowest = Duration::ZERO;
        for _ in 0..20 {
            let (client, took) = real_client(addr, APP.name).await;
            clients.push(client);
            slowest = slowest.max(took);
        }
        // At least 2 s of flood, however fast the logins were.
        tokio::time::sleep_until(flooding_since + Duration::from_secs(2)).await;
        stop.store(true, Ordering::Relaxed);
        let opened = flood.await.unwrap();
        let metrics = Metrics::scrape(endpoint);
        let closed = rejected(&metrics, "pending_limit");
        eprintln!(
            "max_pending_logins = 500: a burst of 800 then {opened} more at 100/s; {closed} \
             logins closed to make room; 20 of 20 real clients in and answered, slowest login \
             {slowest:?}"
        );
        assert!(opened >= 100, "the flood opened {opened}");
        assert!(closed >= 300.0 + opened as f64 - 500.0 - 1.0, "{closed}");
        assert!(metrics.value(PENDING, &[]) <= 500.0);
        assert_eq!(clients.len(), 20);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_login_timeout_closes_connections_that_do_not_authenticate() {
    bounded(async {
        let proxy = start_proxy("startup_timeout = \"1s\"");
        let (addr, endpoint) = (proxy.addr, proxy.endpoint());
        let before = settled_pending(endpoint, 0.0).await;
        let opened = Instant::now();
        let mut waiting = Vec::new();
        for _ in 0..20 {
            waiting.push(silent(addr).await);
            waiting.push(stalled_in_scram(addr).await);
        }
        for conn in &mut waiting {
            assert!(
                closed_within(conn, Duration::from_secs(5)).await,
                "a connection was still open 5 s after the login timeout"
            );
        }
        let took = opened.elapsed();
        assert!(took >= Duration::from_millis(900), "closed after {took:?}");
        settled_pending(endpoint, 0.0).await;
        settled_rejected(endpoint, "timeout", rejected(&before, "timeout") + 40.0).await;
        // A client that does authenticate in time is not affected.
        let client = connect(addr, APP.name, DATABASE).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(node_of_read(&client).await, REPLICA);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_address_bound_closes_only_that_address_s_oldest_logins() {
    raise_fd_limit();
    bounded(async {
        let proxy = start_proxy("max_pending_logins_per_address = 20\nstartup_timeout = \"60s\"");
        let (addr, endpoint) = (proxy.addr, proxy.endpoint());
        settled_pending(endpoint, 0.0).await;
        let mut elsewhere = Vec::new();
        for _ in 0..10 {
            elsewhere.push(silent_from(OTHER_SOURCE, addr).await);
        }
        let mut local = Vec::new();
        for _ in 0..150 {
            local.push(silent(addr).await);
        }
        settled_pending(endpoint, 30.0).await;
        let metrics = settled_rejected(endpoint, "address_limit", 130.0).await;
        assert_eq!(rejected(&metrics, "pending_limit"), 0.0);
        for (i, conn) in local.iter_mut().enumerate().step_by(10) {
            let closed = closed_within(conn, Duration::from_millis(200)).await;
            assert_eq!(closed, i < 130, "connection {i} from 127.0.0.1");
        }
        for conn in &mut elsewhere {
            assert!(
                !closed_within(conn, Duration::from_millis(20)).await,
                "127.0.0.1's flood closed a login from 127.0.0.2"
            );
        }
        // A client from the other address logs in and reads.
        let client = connect_from(OTHER_SOURCE, addr).await;
        assert_eq!(node_of_read(&client).await, REPLICA);
    })
    .await
}
