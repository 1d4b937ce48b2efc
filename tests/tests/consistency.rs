//! The consistency checker against real servers through the proxy: the counter workload of
//! [`checkload`] (8 sessions, simple and extended protocol mixed) runs for a few seconds in
//! each causal-reads mode while the replica is healthy, has its replay paused or slowed, or
//! is stopped and started, and [`check`] must find no read that breaks the mode's rule. With
//! causal reads off and replay paused it must find some (so the checker can fail).
//!
//! Each test function has a cluster of its own (it pauses, slows or stops the replica) and
//! runs several cases on it; the functions run one at a time, so the loads do not compete
//! for the machine (the replica shares are asserted). A function runs all its cases, printing
//! each one's figures, then fails listing every case that broke its expectations.

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use pgrepl_tests::checker::{check, Rule};
use pgrepl_tests::checkload::{self, LoadOptions};
use pgrepl_tests::roles::{APP, DATABASE};
use pgrepl_tests::suite::{bounded_for, node_of_read, on_replica, own_cluster_and_proxy, REPLICA};
use pgrepl_tests::{connect, OwnCluster, ProxyProcess};

const LIMIT: Duration = Duration::from_secs(150);
/// Keys of `counters`: few enough that sessions often read what others wrote.
const KEYS: u32 = 32;
const SESSIONS: usize = 8;
const WRITE_SHARE: f64 = 0.2;
/// How long each case's load runs.
const RUN: Duration = Duration::from_millis(2500);
/// The share of reads a healthy replica must serve in session mode.
const MIN_REPLICA_SHARE: f64 = 0.8;
/// How long the replica may take to catch up and serve again between cases.
const SETTLE: Duration = Duration::from_secs(15);
/// Violations and errors printed per case.
const SHOWN: usize = 20;

const SESSION: &str = "SET pgrepl.read_your_writes = 'session'";
const GLOBAL: &str = "SET pgrepl.read_your_writes = 'global'";
const LINEARIZABLE: &str = "SET pgrepl.read_your_writes = 'linearizable'";
const OFF: &str = "SET pgrepl.read_your_writes = 'off'";
/// The default mode is "session": the proxy recognises only a lone `SET` of its own setting,
/// so this case relies on the default rather than setting both.
const ASYNC_COMMITS: &str = "SET synchronous_commit = off";

const PAUSE: &str = "SELECT pg_wal_replay_pause()";
const RESUME: &str = "SELECT pg_wal_replay_resume()";
const SLOW: &str = "ALTER SYSTEM SET recovery_min_apply_delay = '30ms';\nSELECT pg_reload_conf();";
const UNSLOW: &str = "ALTER SYSTEM RESET recovery_min_apply_delay;\nSELECT pg_reload_conf();";

/// The loads of different test functions must not overlap.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A cluster of the test's own with `counters` (keys `0..KEYS`, created through the proxy by
/// [`checkload::prepare`]), and a proxy in front that waits up to `causal_wait` for the
/// replica on reads that need it: where a test counts the replica's share, long enough for
/// a loaded machine (a read that waits in vain costs that much, so not where replay stops).
async fn cluster_and_proxy(name: &str, causal_wait: &str) -> (OwnCluster, ProxyProcess) {
    let extra = format!(
        "\n[routing]\nmax_replica_lag = \"60s\"\ncausal_wait = \"{causal_wait}\"\n\n\
         [health]\ninterval = \"100ms\"\n"
    );
    let name = name.to_owned();
    let (cluster, proxy) =
        tokio::task::spawn_blocking(move || own_cluster_and_proxy(&name, "", &extra))
            .await
            .unwrap();
    checkload::prepare(proxy.addr, KEYS).await.unwrap();
    (cluster, proxy)
}

/// Waits until the replica has replayed everything and a fresh session reads on it again.
async fn settle(cluster: &OwnCluster, proxy: &ProxyProcess) {
    tokio::task::block_in_place(|| cluster.wait_replica_caught_up()).unwrap();
    let deadline = Instant::now() + SETTLE;
    loop {
        let node = match connect(proxy.addr, APP.name, DATABASE).await {
            Ok(client) => node_of_read(&client).await,
            Err(e) => format!("{e:#}"),
        };
        if node == REPLICA {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "reads did not return to the replica within {SETTLE:?} (last: {node})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One bounded load and what its history must show.
struct Case {
    name: &'static str,
    /// The one statement each session runs after connecting.
    setup_sql: &'static str,
    rule: Rule,
    /// A session writing straight to the primary (for the linearizable mode).
    direct_writer: Option<SocketAddr>,
    /// Fail unless at least this share of the reads ran on the replica.
    min_replica_share: Option<f64>,
    /// The sanity case: the checker must report violations.
    expect_violations: bool,
    /// The fault must show: some reads ran on the primary.
    expect_primary_reads: bool,
    duration: Duration,
}

impl Case {
    fn new(name: &'static str, setup_sql: &'static str, rule: Rule) -> Case {
        Case {
            name,
            setup_sql,
            rule,
            direct_writer: None,
            min_replica_share: None,
            expect_violations: false,
            expect_primary_reads: false,
            duration: RUN,
        }
    }

    fn direct(mut self, primary: SocketAddr) -> Case {
        self.direct_writer = Some(primary);
        self
    }

    fn min_share(mut self, share: f64) -> Case {
        self.min_replica_share = Some(share);
        self
    }

    fn primary_reads(mut self) -> Case {
        self.expect_primary_reads = true;
        self
    }
}

/// The three modes, each checked against its own rule (linearizable with an outside writer).
fn every_mode(prefix: &'static [&'static str; 3], primary: SocketAddr) -> [Case; 3] {
    [
        Case::new(prefix[0], SESSION, Rule::Session),
        Case::new(prefix[1], GLOBAL, Rule::Global),
        Case::new(prefix[2], LINEARIZABLE, Rule::Linearizable).direct(primary),
    ]
}

/// Runs `case`'s load through the proxy at `addr` while `fault` runs alongside; prints its
/// figures, violations and errors. `Err` describes every expectation it broke.
async fn run_case(
    addr: SocketAddr,
    case: &Case,
    fault: impl Future<Output = ()>,
) -> Result<(), String> {
    let opts = LoadOptions {
        sessions: SESSIONS,
        keys: KEYS,
        write_share: WRITE_SHARE,
        duration: case.duration,
        setup_sql: Some(case.setup_sql.to_owned()),
        direct_writer: case.direct_writer,
    };
    let started = Instant::now();
    let (report, ()) = tokio::join!(checkload::run(addr, &opts), fault);
    let wall = started.elapsed();
    let report = match report {
        Ok(report) => report,
        Err(e) => {
            eprintln!("[{}] the load did not run: {e:#}", case.name);
            return Err(format!("{}: the load did not run: {e:#}", case.name));
        }
    };
    let violations = check(&report.history, case.rule);
    eprintln!(
        "[{}] rule={} wall={:.2}s writes={} {}",
        case.name,
        case.rule,
        wall.as_secs_f64(),
        report.writes,
        report.summary(&opts, violations.len())
    );
    for violation in violations.iter().take(SHOWN) {
        eprintln!("[{}]   {violation}", case.name);
    }
    for error in report.errors.iter().take(SHOWN) {
        eprintln!("[{}]   error: {error}", case.name);
    }

    let mut broken = Vec::new();
    if case.expect_violations {
        if violations.is_empty() {
            broken.push(format!(
                "the {} rule found no violation in {} reads ({} on the replica)",
                case.rule, report.reads, report.replica_reads
            ));
        }
    } else if !violations.is_empty() {
        let lines: Vec<String> = violations
            .iter()
            .take(SHOWN)
            .map(|v| format!("\n    {v}"))
            .collect();
        broken.push(format!(
            "{} violations of the {} rule:{}",
            violations.len(),
            case.rule,
            lines.concat()
        ));
    }
    if !report.errors.is_empty() {
        let lines: Vec<String> = report
            .errors
            .iter()
            .take(SHOWN)
            .map(|e| format!("\n    {e}"))
            .collect();
        broken.push(format!("{} errors:{}", report.errors.len(), lines.concat()));
    }
    if report.reads == 0 || report.writes == 0 {
        broken.push(format!(
            "too little load: {} reads, {} writes",
            report.reads, report.writes
        ));
    }
    if let Some(min) = case.min_replica_share {
        if report.replica_share() < min {
            broken.push(format!(
                "replica share {:.3} of {} reads, below {min}",
                report.replica_share(),
                report.reads
            ));
        }
    }
    if case.expect_primary_reads && report.replica_reads == report.reads {
        broken.push(format!(
            "all {} reads ran on the replica: the fault did not show",
            report.reads
        ));
    }
    if broken.is_empty() {
        Ok(())
    } else {
        Err(format!("{}: {}", case.name, broken.join("; ")))
    }
}

/// Prints when a fault took effect, counted from just before the case's sessions connect.
fn mark(case: &Case, t0: Instant, what: &str) {
    eprintln!(
        "[{}] {what} at {:.2}s",
        case.name,
        t0.elapsed().as_secs_f64()
    );
}

/// Fails listing every case that broke its expectations.
fn assert_all_held(failures: &[String]) {
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_replica_breaks_no_mode() {
    let _serial = SERIAL.lock().await;
    bounded_for(LIMIT, async {
        let (cluster, proxy) = cluster_and_proxy("consistency-healthy", "1s").await;
        let primary = cluster.primary.addr();
        let mut failures = Vec::new();
        let [session, global, linearizable] = every_mode(
            &["healthy/session", "healthy/global", "healthy/linearizable"],
            primary,
        );
        let cases = [
            session.min_share(MIN_REPLICA_SHARE),
            global,
            linearizable,
            Case::new("healthy/async-commits", ASYNC_COMMITS, Rule::Session)
                .min_share(MIN_REPLICA_SHARE),
        ];
        for case in &cases {
            settle(&cluster, &proxy).await;
            if let Err(e) = run_case(proxy.addr, case, async {}).await {
                failures.push(e);
            }
        }
        assert_all_held(&failures);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_or_slowed_replay_breaks_no_mode() {
    let _serial = SERIAL.lock().await;
    bounded_for(LIMIT, async {
        let (cluster, proxy) = cluster_and_proxy("consistency-replay", "50ms").await;
        let primary = cluster.primary.addr();
        let mut failures = Vec::new();

        // Replay paused for a second in the middle of the run.
        let paused = every_mode(
            &["paused/session", "paused/global", "paused/linearizable"],
            primary,
        )
        .map(Case::primary_reads);
        for case in &paused {
            settle(&cluster, &proxy).await;
            let t0 = Instant::now();
            let fault = async {
                tokio::time::sleep(Duration::from_millis(700)).await;
                on_replica(&cluster, PAUSE).await;
                mark(case, t0, "replay paused");
                tokio::time::sleep(Duration::from_secs(1)).await;
                on_replica(&cluster, RESUME).await;
                mark(case, t0, "replay resumed");
            };
            if let Err(e) = run_case(proxy.addr, case, fault).await {
                failures.push(e);
            }
        }

        // Replay slowed: every commit applied 30 ms late.
        settle(&cluster, &proxy).await;
        on_replica(&cluster, SLOW).await;
        let slowed = [
            Case::new("slowed/session", SESSION, Rule::Session),
            Case::new("slowed/linearizable", LINEARIZABLE, Rule::Linearizable).direct(primary),
        ];
        for case in &slowed {
            if let Err(e) = run_case(proxy.addr, case, async {}).await {
                failures.push(e);
            }
        }
        on_replica(&cluster, UNSLOW).await;

        // Sanity: without causal reads, a paused replica serves stale reads to writers.
        settle(&cluster, &proxy).await;
        on_replica(&cluster, PAUSE).await;
        let mut off = Case::new("sanity/off-paused", OFF, Rule::Session);
        off.expect_violations = true;
        if let Err(e) = run_case(proxy.addr, &off, async {}).await {
            failures.push(e);
        }
        on_replica(&cluster, RESUME).await;
        settle(&cluster, &proxy).await;

        assert_all_held(&failures);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_restarted_mid_run_breaks_no_session() {
    let _serial = SERIAL.lock().await;
    bounded_for(LIMIT, async {
        let (cluster, proxy) = cluster_and_proxy("consistency-restart", "50ms").await;
        settle(&cluster, &proxy).await;
        let mut case = Case::new("restart/session", SESSION, Rule::Session).primary_reads();
        case.duration = Duration::from_secs(3);
        let replica = cluster.replica.clone();
        let t0 = Instant::now();
        let fault = async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let node = replica.clone();
            tokio::task::spawn_blocking(move || node.stop())
                .await
                .unwrap()
                .unwrap();
            mark(&case, t0, "replica stopped");
            tokio::time::sleep(Duration::from_secs(1)).await;
            tokio::task::spawn_blocking(move || replica.start())
                .await
                .unwrap()
                .unwrap();
            mark(&case, t0, "replica started");
        };
        let outcome = run_case(proxy.addr, &case, fault).await;
        settle(&cluster, &proxy).await;
        assert_all_held(&outcome.err().into_iter().collect::<Vec<_>>());
    })
    .await
}
