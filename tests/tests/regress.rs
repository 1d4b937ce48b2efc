//! PostgreSQL's own regression suite (the installed server's version, the schedule `make
//! installcheck` runs, one test at a time), run directly against the primary and then through
//! the proxy in front of the same servers: a test whose outcome differs is something a client
//! of the proxy sees that a client of the server would not.
//!
//! The differences not fixed yet are listed, with their cause, in `tests/regress/known-differences.txt`;
//! the test fails when a test outside the list differs, and when a listed one no longer does
//! (so the list can only shrink), unless it is listed as `flaky`. An entry may also name an
//! error message (`output: TEXT`): it explains every differing test whose output has it. What each run wrote is kept in
//! `target/tmp/regress/` (`direct/` and `proxy/` with pg_regress's summary and
//! `regression.diffs`, and `<test>.diff` between the two runs' outputs for each differing test).
//!
//! Both listed differences come from pooling itself: a client session gets a server
//! connection an earlier one used. A third run, through a proxy that keeps no idle connection
//! (`[pool] max_idle = 0`: each client session gets server connections of its own), must
//! differ from the direct run in no test at all.

use pgrepl_tests::regress::{self, Difference, Suite, Verdict};
use pgrepl_tests::suite::{free_addr, proxy_config_with};
use pgrepl_tests::{run_dir, OwnCluster, ProxyProcess};
use std::path::Path;
use std::time::Duration;

/// Server settings for this cluster on top of the harness's: PostgreSQL's default
/// `max_connections`, which the proxy must live with; and no standby feedback, PostgreSQL's
/// default too, because with it the replica's reported xmin can keep `VACUUM` in test_setup
/// from marking tenk1's pages all-visible, and create_index's plans then change with the moment
/// the feedback came (in either run).
const SETTINGS: &[(&str, &str)] = &[("max_connections", "100"), ("hot_standby_feedback", "off")];

/// One run takes about 2 minutes directly and 4 through the proxy (debug build) on a busy
/// 2-core machine; far past that, something hangs.
const RUN_TIMEOUT: Duration = Duration::from_secs(20 * 60);

const KNOWN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/regress/known-differences.txt");

#[test]
fn regression_suite_through_the_proxy_differs_from_the_direct_run_only_in_known_tests() {
    let suite = Suite::prepare().unwrap();
    let cluster = OwnCluster::start_with("regress", SETTINGS).unwrap();
    cluster
        .primary
        .psql(
            regress::SUPERUSER,
            "postgres",
            &regress::superuser_password_sql(),
        )
        .unwrap();
    cluster.wait_replica_caught_up().unwrap();

    let direct = suite
        .run(
            cluster.primary.addr(),
            &run_dir().join("regress-direct"),
            RUN_TIMEOUT,
        )
        .unwrap();
    cluster.wait_replica_caught_up().unwrap();
    let addr = free_addr();
    // Backend logins may take long on a busy machine; that is not what this test is about.
    let config = proxy_config_with(&cluster, addr, "connect_timeout = \"20s\"")
        + &regress::proxy_user_toml();
    let proxy = ProxyProcess::start(&config, addr).unwrap();
    let through = suite
        .run(addr, &run_dir().join("regress-proxy"), RUN_TIMEOUT)
        .unwrap();
    drop(proxy);
    cluster.wait_replica_caught_up().unwrap();
    // Connections of each session's own: session mode, whatever mode the suites run in.
    let unpooled_env = [
        ("PGREPL_POOL__MAX_IDLE", "0"),
        ("PGREPL_POOL__MODE", "session"),
    ];
    let unpooled = ProxyProcess::start_with_env(&config, addr, &unpooled_env).unwrap();
    let unshared = suite
        .run(addr, &run_dir().join("regress-proxy-unpooled"), RUN_TIMEOUT)
        .unwrap();
    drop(unpooled);
    eprintln!(
        "regression suite: {} tests, {:.0?} directly, {:.0?} through the proxy, {:.0?} through \
         a proxy that keeps no idle connection",
        direct.outcomes.len(),
        direct.duration,
        through.duration,
        unshared.duration
    );
    let known = regress::Known::parse(&std::fs::read_to_string(KNOWN).unwrap());
    let mut unpooled_differences = regress::differences(&direct.outcomes, &unshared.outcomes);
    // Where reads run shows in these whatever the pooling.
    unpooled_differences.retain(|name, _| !known.routing().contains(&name.as_str()));
    let unpooled_names: Vec<&str> = unpooled_differences.keys().map(String::as_str).collect();
    let kept_unpooled = Path::new(env!("CARGO_TARGET_TMPDIR")).join("regress-unpooled");
    regress::keep(
        [("direct", &direct), ("unpooled", &unshared)],
        &unpooled_names,
        &kept_unpooled,
    )
    .unwrap();
    assert!(
        unpooled_differences.is_empty(),
        "without pooling, the regression suite through the proxy differs from the direct run \
         in: {:?} (outputs and their differences in {})",
        unpooled_differences
            .iter()
            .map(|(name, difference)| describe(name, difference))
            .collect::<Vec<_>>(),
        kept_unpooled.display()
    );

    let differences = regress::differences(&direct.outcomes, &through.outcomes);
    let names: Vec<&str> = differences.keys().map(String::as_str).collect();
    let kept = Path::new(env!("CARGO_TARGET_TMPDIR")).join("regress");
    regress::keep([("direct", &direct), ("proxy", &through)], &names, &kept).unwrap();

    let verdict = known.check(&names, |name| {
        std::fs::read_to_string(through.result_file(name)).unwrap_or_default()
    });
    for name in &verdict.new {
        eprintln!("differs: {}", describe(name, &differences[name]));
    }
    assert!(
        verdict == Verdict::default(),
        "the regression suite through the proxy differs from the direct run in tests not \
         explained by {KNOWN}: {:?}; entries there that explain no difference any more (remove \
         them): {:?}; outputs and differences are in {}",
        verdict.new,
        verdict.fixed,
        kept.display()
    );
}

/// `name (ok directly, FAILED through the proxy)` and the like.
fn describe(name: &str, difference: &Difference) -> String {
    match difference {
        Difference::Outcome { first, second } => {
            format!("{name} ({first:?} directly, {second:?} through the proxy)")
        }
        Difference::Missing { in_first: true } => format!("{name} (not run through the proxy)"),
        Difference::Missing { in_first: false } => format!("{name} (not run directly)"),
    }
}
