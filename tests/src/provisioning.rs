//! Helpers for the provisioning suites: running `pgrepl-proxy` provisioning commands, the
//! docker CLI (to look at what provisioning built from outside, as a user would), and the
//! rules about when Docker tests may be skipped.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use pgrepl_config::{Config, ProvisionConfig, RuntimeKind};
use pgrepl_provision::local::LocalRuntime;
use pgrepl_provision::runtime::NodeId;

use crate::local::block_on;
use crate::net::{free_port, free_ports};
use crate::proxy::proxy_command;
use crate::shared::run_dir;
use crate::suite::{run_with_timeout, PsqlRun};

/// The only way to skip the Docker suites, for machines without Docker. CI never sets it: there
/// an unreachable engine fails the tests. Not a `PGREPL_` name, because pgrepl-proxy reads
/// every `PGREPL_*` variable as configuration and rejects unknown ones.
pub const SKIP_DOCKER_VAR: &str = "SKIP_DOCKER_TESTS";

/// The image the Docker suites provision with, built by `scripts/build-pg-image.sh` when missing
/// (no registry is reachable from these machines, so `postgres:16.1` cannot be pulled).
pub const LOCAL_IMAGE: &str = "pgrepl/postgres:local";

/// Long enough for a first provisioning on a slow machine; a hang fails instead of blocking CI.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(300);

/// Where test processes that create the fixed names take turns (a file every checkout's
/// suite locks).
const ENGINE_LOCK: &str = "/tmp/pgrepl-docker-engine.lock";
/// How long a test waits for its turn on the engine before failing.
const TURN_TIMEOUT: Duration = Duration::from_secs(1200);

/// A test's turn on the Docker engine, held until dropped.
pub struct EngineTurn {
    _file: File,
    _guard: MutexGuard<'static, ()>,
}

/// Waits for this test's turn on the engine: the tutorial's names (db01, db02,
/// rideshare-net) are fixed, so tests that create them take turns, within this process and
/// with other test processes (another checkout's suite, run at the same time).
pub fn engine_turn() -> EngineTurn {
    static ENGINE: Mutex<()> = Mutex::new(());
    let guard = ENGINE.lock().unwrap_or_else(|e| e.into_inner());
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(ENGINE_LOCK)
        .unwrap_or_else(|e| panic!("cannot open {ENGINE_LOCK}: {e}"));
    let deadline = Instant::now() + TURN_TIMEOUT;
    // SAFETY: flock(2) on a descriptor this function owns; it has no memory preconditions.
    while unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        assert!(
            Instant::now() < deadline,
            "another test process held {ENGINE_LOCK} for {TURN_TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    EngineTurn {
        _file: file,
        _guard: guard,
    }
}

/// True when the Docker suites must run: always, unless [`SKIP_DOCKER_VAR`] is set to 1. When
/// they must run, Docker has to answer, and the local image has to exist (built if missing).
pub fn docker_suite_enabled() -> bool {
    if std::env::var(SKIP_DOCKER_VAR).as_deref() == Ok("1") {
        eprintln!("{SKIP_DOCKER_VAR}=1: skipping a Docker test");
        return false;
    }
    let info = docker(&["info", "--format", "{{.ServerVersion}}"]);
    assert!(
        info.success,
        "the Docker engine is not reachable ({}); Docker tests fail without it \
         (set {SKIP_DOCKER_VAR}=1 only on machines that have no Docker)",
        info.stderr.trim()
    );
    build_local_image();
    true
}

/// Runs `scripts/build-pg-image.sh`, which returns at once when the image exists.
fn build_local_image() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/build-pg-image.sh");
    let mut cmd = Command::new("bash");
    cmd.arg(script).arg(LOCAL_IMAGE);
    let run = run_with_timeout(cmd, b"", Duration::from_secs(900))
        .expect("cannot run scripts/build-pg-image.sh")
        .into_text();
    assert!(
        run.success,
        "cannot build {LOCAL_IMAGE}: {}{}",
        run.stdout, run.stderr
    );
}

/// A directory of this test process's own for `name` (certificates, data).
pub fn scratch_dir(name: &str) -> PathBuf {
    run_dir().join(name)
}

/// Runs `pgrepl-proxy ARGS` with extra environment variables, to completion.
pub fn pgrepl(args: &[&str], env: &[(&str, &str)]) -> PsqlRun {
    let mut cmd = proxy_command();
    cmd.args(args);
    for (key, value) in env {
        cmd.env(key, value);
    }
    run_with_timeout(cmd, b"", COMMAND_TIMEOUT)
        .unwrap_or_else(|e| panic!("pgrepl-proxy {args:?}: {e:#}"))
        .into_text()
}

/// [`pgrepl`], which must succeed: its stdout, echoed to the test's output.
pub fn pgrepl_ok(args: &[&str], env: &[(&str, &str)]) -> String {
    let run = pgrepl(args, env);
    assert!(
        run.success,
        "pgrepl-proxy {args:?} failed:\n{}{}",
        run.stdout, run.stderr
    );
    eprintln!("{}", run.stdout);
    run.stdout
}

/// Runs the docker CLI, to completion.
pub fn docker(args: &[&str]) -> PsqlRun {
    let mut cmd = Command::new("docker");
    cmd.args(args);
    run_with_timeout(cmd, b"", COMMAND_TIMEOUT)
        .unwrap_or_else(|e| panic!("docker {args:?}: {e:#}"))
        .into_text()
}

/// `psql -XAtq -U postgres -c SQL` inside a container, as the tutorial checks its pair.
pub fn docker_psql(container: &str, sql: &str) -> PsqlRun {
    docker(&[
        "exec", container, "psql", "-X", "-A", "-t", "-q", "-U", "postgres", "-c", sql,
    ])
}

/// The `[n/11] ...` lines of a provisioning run with the tutorial's one replica, checked to be
/// the 11 steps in order, one line each (see [`step_lines`]). Returns how each ended: true
/// for already done.
pub fn step_outcomes(stdout: &str) -> Vec<bool> {
    let lines = step_lines(stdout);
    assert_eq!(lines.len(), 11, "expected 11 step lines in:\n{stdout}");
    lines.into_iter().map(|(_, already)| already).collect()
}

/// The `[n/11] ...` lines of a provisioning run, checked to be the 11 steps in order (a step
/// about one replica has a line per replica), each ending in `done in X s` (possibly with a
/// note) or `already done`. Returns each line's step and whether it was already done.
pub fn step_lines(stdout: &str) -> Vec<(usize, bool)> {
    let mut previous = 0;
    let lines: Vec<(usize, bool)> = stdout
        .lines()
        .filter(|l| l.starts_with('['))
        .map(|line| {
            let step: usize = line[1..]
                .split('/')
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("no step number in {line}"));
            assert!(
                line.starts_with(&format!("[{step}/11] "))
                    && (step == previous || step == previous + 1),
                "step {step} out of order after {previous}: {line}"
            );
            previous = step;
            let already = line.ends_with("... already done");
            assert!(
                already || line.contains("... done in "),
                "step line without an outcome: {line}"
            );
            (step, already)
        })
        .collect();
    assert_eq!(previous, 11, "not every step ran:\n{stdout}");
    lines
}

/// A set of nodes built by `pgrepl-proxy provision --runtime local` in its own directory,
/// torn down when dropped, passed or not.
pub struct LocalSet {
    env: Vec<(String, String)>,
    pub dir: PathBuf,
    config: ProvisionConfig,
}

impl LocalSet {
    /// db01 and `replicas` replicas in `run_dir()/name`, on free ports.
    pub fn new(name: &str, replicas: u8) -> LocalSet {
        let dir = run_dir().join(name);
        let mut config = Config::defaults().provision;
        config.runtime = RuntimeKind::Local;
        config.data_dir = dir.clone();
        config.primary_port = free_port();
        config.replica_port = free_ports(replicas.into());
        config.replicas = replicas;
        let env = vec![
            ("PGREPL_PROVISION__RUNTIME".into(), "local".into()),
            (
                "PGREPL_PROVISION__DATA_DIR".into(),
                dir.to_string_lossy().into_owned(),
            ),
            (
                "PGREPL_PROVISION__PRIMARY_PORT".into(),
                config.primary_port.to_string(),
            ),
            (
                "PGREPL_PROVISION__REPLICA_PORT".into(),
                config.replica_port.to_string(),
            ),
            ("PGREPL_PROVISION__REPLICAS".into(), replicas.to_string()),
            // Where `status` looks for a running proxy: nothing listens there.
            (
                "PGREPL_METRICS__LISTEN".into(),
                format!("127.0.0.1:{}", free_port()),
            ),
        ];
        LocalSet { env, dir, config }
    }

    /// Runs `pgrepl-proxy ARGS` on this set.
    pub fn run(&self, args: &[&str]) -> PsqlRun {
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        pgrepl(args, &env)
    }

    /// Runs `pgrepl-proxy ARGS`, which must succeed, and returns its output.
    pub fn expect(&self, args: &[&str]) -> String {
        let run = self.run(args);
        assert!(
            run.success,
            "pgrepl-proxy {args:?} failed:\n{}{}",
            run.stdout, run.stderr
        );
        run.stdout
    }

    /// `provision`, which must succeed; returns its step lines (see [`step_lines`]).
    pub fn provision(&self) -> Vec<(usize, bool)> {
        step_lines(&self.expect(&["provision"]))
    }

    /// The runtime the commands use, for what a test does to the nodes directly.
    pub fn runtime(&self) -> LocalRuntime {
        LocalRuntime::new(&self.config).expect("no local PostgreSQL")
    }

    /// `sql` run by the superuser on `node`, its output trimmed.
    pub fn sql(&self, node: NodeId, sql: &str) -> anyhow::Result<String> {
        let rt = self.runtime();
        block_on(async { pgrepl_provision::psql::sql(&rt, node, sql).await })
    }
}

impl Drop for LocalSet {
    fn drop(&mut self) {
        let run = self.run(&["teardown"]);
        if !run.success {
            eprintln!("teardown of {} failed: {}", self.dir.display(), run.stderr);
        }
    }
}

/// Checks `pgrepl-proxy status` output for a healthy pair: a primary, a streaming standby and
/// the tutorial's slot in use.
pub fn assert_healthy_status(status: &PsqlRun) {
    assert!(status.success, "status failed: {}", status.stderr);
    for part in [
        "primary  current",
        "standby  received",
        "rideshare_slot  active",
        "streaming",
    ] {
        assert!(
            status.stdout.contains(part),
            "status lacks {part:?}:\n{}",
            status.stdout
        );
    }
}
