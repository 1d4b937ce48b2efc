//! The client suite for Python's drivers: psycopg2, psycopg 3, asyncpg, SQLAlchemy 2 and
//! Django's ORM, installed from PyPI by `scripts/install-python-drivers.sh` into a virtualenv,
//! each run for real through the proxy (SCRAM login, default read-your-writes) against the
//! shared cluster by its program in `tests/drivers/python/`.
//!
//! A program prints one JSON line per case: whether its values checked out and where the
//! case's read ran (`current_setting('cluster_name')`). This file holds which node each case
//! must have run on, and fails listing every case that failed, ran elsewhere, or never
//! reported (the whole output is printed then). A missing virtualenv or driver fails the test:
//! nothing here is skipped.

use pgrepl_tests::roles::{APP, DATABASE};
use pgrepl_tests::suite::{caught_up, on_primary, run_with_timeout, start_proxy, unique};
use pgrepl_tests::ProxyProcess;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long one driver program may run: it makes a few dozen connections and moves ~30 MB of
/// bytea through a debug build of the proxy on a machine shared with other builds.
const PROGRAM_TIMEOUT: Duration = Duration::from_secs(300);
/// Where the install script puts the virtualenv unless `PGREPL_PYTHON_VENV` says otherwise.
const DEFAULT_VENV: &str = "/opt/pgrepl-venv";
/// Lines of the proxy's log shown with a failure.
const LOG_LINES: usize = 60;

/// Where a case's read must have run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    Primary,
    Replica,
    /// Either: recorded for the table, not asserted (a read-back right after a write runs on
    /// the primary or the replica, depending on whether the replica has replayed it yet).
    Either,
}

impl Node {
    fn name(self) -> Option<&'static str> {
        match self {
            Node::Primary => Some("db01"),
            Node::Replica => Some("db02"),
            Node::Either => None,
        }
    }
}

/// The cases every driver program runs. Streaming runs in a transaction (named cursors,
/// asyncpg's cursor and Django's atomic()), hence on the primary.
const COMMON: &[(&str, Node)] = &[
    ("autocommit_read", Node::Replica),
    ("write_read_back", Node::Either),
    ("reads_return_to_replica", Node::Replica),
    ("transaction_commit", Node::Primary),
    ("transaction_rollback", Node::Primary),
    ("parameters", Node::Replica),
    ("error", Node::Replica),
    ("error_in_transaction", Node::Primary),
    ("stream", Node::Primary),
    ("nextval", Node::Primary),
    ("for_update", Node::Primary),
];

/// A cursor WITH HOLD lives on the primary; once closed, the session reads on the replica.
const WITHHOLD: &[(&str, Node)] = &[
    ("withhold_cursor", Node::Primary),
    ("after_withhold_cursor", Node::Replica),
];

const PSYCOPG3: &[(&str, Node)] = &[
    ("prepared", Node::Replica),
    ("prepared_eviction", Node::Replica),
    ("prepared_after_rollback", Node::Replica),
];

const ASYNCPG: &[(&str, Node)] = &[
    ("custom_types", Node::Either),
    ("reads_after_introspection", Node::Replica),
    ("statement_cache_eviction", Node::Replica),
    ("pool_reset", Node::Either),
    ("pool_reads_on_replica", Node::Replica),
];

/// The ORM's Session reads inside the transaction psycopg2 opens, so on the primary, unless it
/// is read-only.
const SQLALCHEMY: &[(&str, Node)] = &[
    ("orm_session", Node::Primary),
    ("orm_for_update", Node::Primary),
    ("orm_readonly_session", Node::Replica),
];

const DJANGO: &[(&str, Node)] = &[
    ("iterator", Node::Primary),
    ("after_iterator", Node::Replica),
];

/// One line a driver program printed.
#[derive(Debug, Clone, PartialEq)]
struct Outcome {
    case: String,
    ok: bool,
    node: Option<String>,
    detail: String,
}

/// The case lines of a program's stdout (other lines, such as warnings, are left out).
fn outcomes(stdout: &str, driver: &str) -> Vec<Outcome> {
    stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|v| v["driver"] == driver)
        .map(|v| Outcome {
            case: v["case"].as_str().unwrap_or_default().to_owned(),
            ok: v["ok"] == true,
            node: v["node"].as_str().map(str::to_owned),
            detail: v["detail"].as_str().unwrap_or_default().to_owned(),
        })
        .collect()
}

/// What became of one expected case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Ok,
    Failed,
    WrongNode,
    NotReported,
}

impl Verdict {
    fn of(node: Node, outcome: Option<&Outcome>) -> Verdict {
        match outcome {
            None => Verdict::NotReported,
            Some(o) if !o.ok => Verdict::Failed,
            Some(o) if node.name().is_some_and(|n| o.node.as_deref() != Some(n)) => {
                Verdict::WrongNode
            }
            Some(_) => Verdict::Ok,
        }
    }

    fn word(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Failed => "failed",
            Verdict::WrongNode => "wrong node",
            Verdict::NotReported => "not reported",
        }
    }
}

/// What is wrong with a program's outcomes against the expected cases: each case failed, run
/// on another node than it must, reported twice or never, and each case not expected.
fn problems(expected: &[(&str, Node)], got: &[Outcome]) -> Vec<String> {
    let mut wrong = Vec::new();
    for &(case, node) in expected {
        let reports: Vec<&Outcome> = got.iter().filter(|o| o.case == case).collect();
        if reports.len() > 1 {
            wrong.push(format!("{case}: reported more than once"));
        }
        let outcome = reports.first().copied();
        let detail = outcome.map_or("", |o| o.detail.as_str());
        match Verdict::of(node, outcome) {
            Verdict::Ok => {}
            Verdict::NotReported => wrong.push(format!("{case}: did not report")),
            Verdict::Failed => wrong.push(format!("{case}: failed: {detail}")),
            Verdict::WrongNode => wrong.push(format!(
                "{case}: ran on {}, must run on {} ({detail})",
                outcome.and_then(|o| o.node.as_deref()).unwrap_or("nothing"),
                node.name().unwrap_or_default(),
            )),
        }
    }
    for outcome in got {
        if !expected.iter().any(|&(case, _)| case == outcome.case) {
            wrong.push(format!("{}: not a case of this suite", outcome.case));
        }
    }
    wrong
}

/// The outcomes as a Markdown table: case, where its read ran, where it must run, verdict.
fn table(driver: &str, expected: &[(&str, Node)], got: &[Outcome]) -> String {
    let mut text =
        format!("| {driver} case | read ran on | must run on | result |\n|---|---|---|---|\n");
    for &(case, node) in expected {
        let outcome = got.iter().find(|o| o.case == case);
        let ran = outcome.and_then(|o| o.node.as_deref()).unwrap_or("-");
        let must = node.name().unwrap_or("either");
        let result = Verdict::of(node, outcome).word();
        text += &format!("| {case} | {ran} | {must} | {result} |\n");
    }
    text
}

/// The proxy these tests share: the standard configuration, so read-your-writes is on (the
/// default) and the programs' reads right after their writes go to the primary.
fn proxy() -> &'static ProxyProcess {
    static PROXY: OnceLock<ProxyProcess> = OnceLock::new();
    PROXY.get_or_init(|| start_proxy("connect_timeout = \"20s\""))
}

/// The suite's virtualenv, `$PGREPL_PYTHON_VENV` or [`DEFAULT_VENV`].
fn venv() -> PathBuf {
    std::env::var_os("PGREPL_PYTHON_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_VENV))
}

fn programs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("drivers/python")
}

/// The tables a driver program works on, named `<prefix>_...`, created on the primary and
/// replayed on the replica before it starts: 10,000 rows to stream, a table to write, a
/// sequence, rows to lock, an enum and a composite type.
fn fixtures(prefix: &str) -> String {
    format!(
        "CREATE TABLE {prefix}_stream (id int PRIMARY KEY, v text NOT NULL);\n\
         INSERT INTO {prefix}_stream SELECT g, 'row ' || g FROM generate_series(1, 10000) g;\n\
         CREATE TABLE {prefix}_items (id serial PRIMARY KEY, note text NOT NULL, \
         qty int NOT NULL DEFAULT 0);\n\
         CREATE SEQUENCE {prefix}_seq;\n\
         CREATE TABLE {prefix}_locked (id int PRIMARY KEY, v int NOT NULL);\n\
         INSERT INTO {prefix}_locked VALUES (1, 10), (2, 20);\n\
         CREATE TYPE {prefix}_mood AS ENUM ('sad', 'ok', 'happy');\n\
         CREATE TYPE {prefix}_pair AS (a int, b text);\n"
    )
}

/// Runs `tests/drivers/python/<program>` (with `env` added) for `driver` through the proxy and
/// fails unless every case in `expected` succeeded on its node; prints the table either way.
async fn run_driver(
    driver: &str,
    program: &str,
    env: &[(&str, &str)],
    expected: &[&[(&str, Node)]],
) {
    let expected: Vec<(&str, Node)> = expected.iter().flat_map(|c| c.iter().copied()).collect();
    let python = venv().join("bin/python");
    assert!(
        python.is_file(),
        "no Python driver virtualenv at {} (PGREPL_PYTHON_VENV): run \
         scripts/install-python-drivers.sh (scripts/install-deps.sh does)",
        venv().display()
    );
    let proxy = proxy();
    let prefix = unique(&format!("py_{}", driver.replace('-', "_")));
    on_primary(&fixtures(&prefix));
    caught_up().await;

    let mut cmd = Command::new(&python);
    cmd.arg(programs_dir().join(program))
        .current_dir(programs_dir())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("DRIVER_HOST", proxy.addr.ip().to_string())
        .env("DRIVER_PORT", proxy.addr.port().to_string())
        .env("DRIVER_USER", APP.name)
        .env("DRIVER_PASSWORD", APP.password.expect("app has a password"))
        .env("DRIVER_DB", DATABASE)
        .env("DRIVER_PREFIX", &prefix)
        .envs(env.iter().copied());
    let started = Instant::now();
    let run = tokio::task::spawn_blocking(move || run_with_timeout(cmd, b"", PROGRAM_TIMEOUT))
        .await
        .expect("the driver program's task panicked")
        .unwrap_or_else(|e| panic!("{driver}: {e:#}\n{}", log_tail(proxy)));
    let stdout = String::from_utf8_lossy(&run.stdout);
    let got = outcomes(&stdout, driver);
    println!(
        "{}\n{driver}: {} cases in {:.1} s",
        table(driver, &expected, &got),
        got.len(),
        started.elapsed().as_secs_f64()
    );

    let mut wrong = problems(&expected, &got);
    if !run.success {
        wrong.push(format!("the program exited with an error: {}", run.stderr));
    }
    assert!(
        wrong.is_empty(),
        "{driver} through the proxy:\n{}\n--- stdout:\n{stdout}--- stderr:\n{}\n{}",
        wrong.join("\n"),
        run.stderr,
        log_tail(proxy)
    );
}

/// The end of the proxy's log without its lines about clients coming and going, for a
/// failure message.
fn log_tail(proxy: &ProxyProcess) -> String {
    let log = proxy.log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| !l.contains("client connected") && !l.contains("client disconnected"))
        .collect();
    let start = lines.len().saturating_sub(LOG_LINES);
    format!("--- proxy log (last lines):\n{}", lines[start..].join("\n"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg2_through_the_proxy() {
    run_driver("psycopg2", "psycopg2_cases.py", &[], &[COMMON, WITHHOLD]).await;
}

/// psycopg 3 as `psycopg[binary]` installs it, with the libpq it bundles.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg3_binary_through_the_proxy() {
    let cases: &[&[(&str, Node)]] = &[COMMON, WITHHOLD, PSYCOPG3];
    run_driver("psycopg3-binary", "psycopg3_cases.py", &[], cases).await;
}

/// psycopg 3 as plain `pip install psycopg` runs it: in Python, on the system's libpq
/// (Debian's 15), which has no protocol-level Close, so psycopg evicts prepared statements
/// with SQL `DEALLOCATE name`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg3_on_system_libpq_through_the_proxy() {
    let env = [("PSYCOPG_IMPL", "python")];
    let cases: &[&[(&str, Node)]] = &[COMMON, WITHHOLD, PSYCOPG3];
    run_driver("psycopg3-python", "psycopg3_cases.py", &env, cases).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asyncpg_through_the_proxy() {
    run_driver("asyncpg", "asyncpg_cases.py", &[], &[COMMON, ASYNCPG]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlalchemy_through_the_proxy() {
    run_driver(
        "sqlalchemy",
        "sqlalchemy_cases.py",
        &[],
        &[COMMON, SQLALCHEMY],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn django_through_the_proxy() {
    run_driver("django", "django_cases.py", &[], &[COMMON, DJANGO]).await;
}

/// The verdict on a program's lines, as a table of cases.
#[test]
fn problems_name_every_case_that_failed_ran_elsewhere_or_never_reported() {
    let line = |case: &str, ok: bool, node: Option<&str>| Outcome {
        case: case.to_owned(),
        ok,
        node: node.map(str::to_owned),
        detail: "why".to_owned(),
    };
    let expected = [("a", Node::Replica), ("b", Node::Either)];
    let cases: [(&str, Vec<Outcome>, Vec<&str>); 7] = [
        (
            "all ok",
            vec![line("a", true, Some("db02")), line("b", true, Some("db01"))],
            vec![],
        ),
        (
            "wrong node",
            vec![line("a", true, Some("db01")), line("b", true, None)],
            vec!["a: ran on db01, must run on db02 (why)"],
        ),
        (
            "no node",
            vec![line("a", true, None), line("b", true, None)],
            vec!["a: ran on nothing, must run on db02 (why)"],
        ),
        (
            "failed",
            vec![line("a", true, Some("db02")), line("b", false, None)],
            vec!["b: failed: why"],
        ),
        (
            "missing",
            vec![line("a", true, Some("db02"))],
            vec!["b: did not report"],
        ),
        (
            "twice",
            vec![
                line("a", true, Some("db02")),
                line("a", true, Some("db02")),
                line("b", true, None),
            ],
            vec!["a: reported more than once"],
        ),
        (
            "unexpected",
            vec![
                line("a", true, Some("db02")),
                line("b", true, None),
                line("c", true, None),
            ],
            vec!["c: not a case of this suite"],
        ),
    ];
    for (name, got, want) in cases {
        assert_eq!(problems(&expected, &got), want, "{name}");
    }
}

#[test]
fn outcomes_are_read_from_the_json_lines_of_one_driver() {
    let stdout = "warning: something\n\
        {\"driver\": \"d\", \"case\": \"a\", \"ok\": true, \"node\": \"db02\", \"detail\": \"\"}\n\
        {\"driver\": \"other\", \"case\": \"b\", \"ok\": true, \"node\": null, \"detail\": \"\"}\n\
        {\"driver\": \"d\", \"case\": \"c\", \"ok\": false, \"node\": null, \"detail\": \"E\"}\n";
    let got = outcomes(stdout, "d");
    let summary: Vec<(&str, bool, Option<&str>, &str)> = got
        .iter()
        .map(|o| (o.case.as_str(), o.ok, o.node.as_deref(), o.detail.as_str()))
        .collect();
    assert_eq!(
        summary,
        [("a", true, Some("db02"), ""), ("c", false, None, "E")]
    );
}
