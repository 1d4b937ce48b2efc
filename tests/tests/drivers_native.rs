//! The client suite's non-Python drivers, each run for real through the proxy against the
//! shared cluster: pgjdbc, pgx v4, node-postgres, ruby-pg, PHP PDO and Perl DBD::Pg, all from
//! Debian's packages (`scripts/install-native-drivers.sh`). Each runs its program from
//! `tests/drivers/` (the cases are listed there) and must report every case passed, its reads
//! on the expected node. A missing driver or toolchain fails the test.
//!
//! `cargo test -p pgrepl-tests --test drivers_native -- --nocapture` prints, per driver, where
//! each case's reads ran.

use pgrepl_tests::drivers::{parse_line, problems, table, CaseLine, Expect};
use pgrepl_tests::endpoint::Metrics;
use pgrepl_tests::roles::{self, DATABASE};
use pgrepl_tests::suite::{
    free_addr, on_primary, proxy_config_with, run_with_timeout, unique, PRIMARY,
};
use pgrepl_tests::{Cluster, ProxyProcess};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

/// Where `scripts/install-native-drivers.sh` unpacks Debian's node-pg and what it needs.
const NODE_PATH: &str = "/opt/pgrepl-drivers/node_modules";
/// Debian's pgjdbc (`libpostgresql-jdbc-java`).
const PGJDBC_JAR: &str = "/usr/share/java/postgresql.jar";
/// Debian's Go sources (`golang-github-jackc-pgx-v4-dev` and what it depends on).
const GOPATH: &str = "/usr/share/gocode";
/// A compilation (javac, go build on a busy machine, the first one of pgx) may take this long.
const BUILD_TIMEOUT: Duration = Duration::from_secs(600);
/// A driver program may take this long (a JVM's start, 24 MB of bytea, 10,000 rows, under load).
const RUN_TIMEOUT: Duration = Duration::from_secs(300);

/// The cases every program reports, and where their reads must run.
const COMMON: &[(&str, Expect)] = &[
    ("login", Expect::NoRead),
    ("replica_read", Expect::Replica),
    ("params", Expect::Replica),
    ("stream", Expect::Replica),
    ("write_read_back", Expect::Either),
    ("tx_commit", Expect::Primary),
    ("tx_rollback", Expect::Primary),
    ("error", Expect::Either),
    ("error_in_tx", Expect::Primary),
    ("nextval", Expect::Primary),
    ("for_update", Expect::Primary),
    ("replica_after_write", Expect::Replica),
];

/// The proxy these tests share: the standard configuration (read-your-writes on, as a new
/// user has it), except that backend logins may take 20 s, the replica may lag 60 s before
/// reads leave it, and a health sample has 3 s to answer: six drivers writing megabytes at
/// once on a busy machine can hold the replica a second behind, or a sample past its 1 s
/// floor (the replica then counts as down and reads go to the primary), which is not what
/// these tests are about.
fn proxy() -> &'static ProxyProcess {
    static PROXY: OnceLock<ProxyProcess> = OnceLock::new();
    PROXY.get_or_init(|| {
        let addr = free_addr();
        let toml = proxy_config_with(Cluster::shared(), addr, "connect_timeout = \"20s\"")
            + "\n[routing]\nmax_replica_lag = \"60s\"\n[health]\ninterval = \"3s\"\n";
        ProxyProcess::start(&toml, addr).unwrap_or_else(|e| panic!("cannot start the proxy: {e:#}"))
    })
}

/// Why statements ran on the primary so far, by `pgrepl_queries_total`'s reason: what a
/// failing case's "ran on db01" needs to be understood.
fn primary_reasons(proxy: &ProxyProcess) -> String {
    let metrics = Metrics::scrape(proxy.endpoint());
    let reasons = [
        "replica_down",
        "lag",
        "read_your_writes",
        "session_pinned",
        "hint",
    ];
    let counts: Vec<String> = reasons
        .iter()
        .map(|reason| {
            let labels = [("backend", PRIMARY), ("reason", *reason)];
            format!(
                "{reason} {}",
                metrics.value("pgrepl_queries_total", &labels)
            )
        })
        .collect();
    counts.join(", ")
}

/// The program's source directory, `tests/drivers/<dir>`.
fn source(dir: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("drivers")
        .join(dir)
}

/// Where compiled programs go: under `target/`.
fn build_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("drivers")
        .join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs a compiler; panics with its output if it fails or cannot run.
fn build(what: &str, cmd: Command) {
    let run = run_with_timeout(cmd, b"", BUILD_TIMEOUT)
        .unwrap_or_else(|e| panic!("cannot build the {what} program (scripts/install-native-drivers.sh installs the toolchain): {e:#}"));
    assert!(
        run.success,
        "building the {what} program failed:\n{}{}",
        String::from_utf8_lossy(&run.stdout),
        run.stderr
    );
}

fn require(path: &str, package: &str) {
    assert!(
        Path::new(path).exists(),
        "{path} is missing: install {package} (scripts/install-native-drivers.sh)"
    );
}

/// Creates the driver's fixtures on the primary (see tests/drivers/README.md), waits until the
/// replica has them, then runs `program` through the proxy and checks its report against
/// [`COMMON`] and `own` cases.
fn run_driver(driver: &str, mut program: Command, own: &[(&str, Expect)]) {
    let proxy = proxy();
    let addr = proxy.addr;
    let table_name = unique(&format!("drv_{}", driver.replace('-', "_")));
    on_primary(&format!(
        "CREATE TABLE {table_name} (id int PRIMARY KEY, v text);\n\
         INSERT INTO {table_name} SELECT g, 'row ' || g FROM generate_series(1, 10) g;\n\
         CREATE SEQUENCE {table_name}_seq;\n\
         CREATE TABLE {table_name}_copy (a int, b text);"
    ));
    Cluster::shared()
        .wait_replica_caught_up()
        .expect("the replica did not catch up");
    program
        .env("PGHOST", addr.ip().to_string())
        .env("PGPORT", addr.port().to_string())
        .env("PGUSER", roles::APP.name)
        .env("PGPASSWORD", roles::password(roles::APP.name).unwrap())
        .env("PGDATABASE", DATABASE)
        .env("PGREPL_TABLE", &table_name)
        .env("PGPASSFILE", "/dev/null")
        .env_remove("PGSERVICE")
        .env_remove("PGOPTIONS")
        .env_remove("PGSSLMODE");
    let run = run_with_timeout(program, b"", RUN_TIMEOUT)
        .unwrap_or_else(|e| panic!("the {driver} program did not run: {e:#}"));
    let stdout = String::from_utf8_lossy(&run.stdout);
    let lines: Vec<CaseLine> = stdout.lines().filter_map(parse_line).collect();
    let expected: Vec<(&str, Expect)> = COMMON.iter().chain(own).copied().collect();
    println!("{}", table(driver, &expected, &lines));
    let mut wrong = problems(driver, &expected, &lines);
    if !run.success {
        wrong.push("the program exited with an error".to_owned());
    }
    assert!(
        wrong.is_empty(),
        "{driver} through the proxy:\n{}\n(statements on the primary by reason: {})\n\n--- \
         stdout ---\n{stdout}\n--- stderr ---\n{}",
        wrong.join("\n"),
        primary_reasons(proxy),
        run.stderr
    );
}

#[test]
fn pgjdbc() {
    require(PGJDBC_JAR, "libpostgresql-jdbc-java");
    let classes = build_dir("pgjdbc");
    let mut javac = Command::new("javac");
    javac
        .arg("-d")
        .arg(&classes)
        .args(["-cp", PGJDBC_JAR])
        .arg(source("pgjdbc").join("DriverCases.java"));
    build("pgjdbc", javac);
    let mut java = Command::new("java");
    java.arg("-cp")
        .arg(format!("{}:{PGJDBC_JAR}", classes.display()))
        .arg("DriverCases");
    run_driver(
        "pgjdbc",
        java,
        &[
            ("server_prepared", Expect::Either),
            ("batch", Expect::NoRead),
        ],
    );
}

#[test]
fn pgx() {
    require(
        &format!("{GOPATH}/src/github.com/jackc/pgx/v4"),
        "golang-github-jackc-pgx-v4-dev",
    );
    let dir = build_dir("pgx");
    let bin = dir.join("pgx-cases");
    let mut go = Command::new("go");
    go.arg("build")
        .arg("-o")
        .arg(&bin)
        .arg(source("pgx").join("main.go"))
        .env("GO111MODULE", "off")
        .env("GOPATH", GOPATH)
        .env("GOPROXY", "off")
        .env("GOFLAGS", "")
        .env("GOCACHE", dir.join("cache"));
    build("pgx", go);
    run_driver(
        "pgx",
        Command::new(bin),
        &[
            ("statement_cache", Expect::Either),
            ("prepared", Expect::Either),
            ("copy_from", Expect::NoRead),
        ],
    );
}

#[test]
fn node_pg() {
    require(&format!("{NODE_PATH}/pg/package.json"), "node-pg");
    let mut node = Command::new("node");
    node.arg(source("node-pg").join("cases.js"))
        .env("NODE_PATH", NODE_PATH);
    run_driver("node-pg", node, &[("named_query", Expect::Either)]);
}

#[test]
fn ruby_pg() {
    let mut ruby = Command::new("ruby");
    ruby.arg(source("ruby-pg").join("cases.rb"));
    run_driver(
        "ruby-pg",
        ruby,
        &[("prepared", Expect::Either), ("copy", Expect::NoRead)],
    );
}

#[test]
fn php_pdo() {
    let mut php = Command::new("php");
    php.arg(source("php-pdo").join("cases.php"));
    run_driver(
        "php-pdo",
        php,
        &[
            ("reprepare", Expect::Replica),
            ("reprepare_tx", Expect::Primary),
        ],
    );
}

#[test]
fn perl_dbd_pg() {
    let mut perl = Command::new("perl");
    perl.arg(source("perl-dbd-pg").join("cases.pl"));
    run_driver(
        "perl-dbd-pg",
        perl,
        &[
            ("bind_types", Expect::Replica),
            ("reprepare_tx", Expect::Primary),
        ],
    );
}
