//! Helpers for the provisioning suites: running `pgrepl-proxy` provisioning commands, the
//! docker CLI (to look at what provisioning built from outside, as a user would), and the
//! rules about when Docker tests may be skipped.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::proxy::proxy_command;
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

/// The `[n/11] ...` lines of a provisioning run, checked to be the 11 steps in order, each
/// ending in `done in X s` (possibly with a note) or `already done`. Returns how each ended:
/// true for already done.
pub fn step_outcomes(stdout: &str) -> Vec<bool> {
    let lines: Vec<&str> = stdout.lines().filter(|l| l.starts_with('[')).collect();
    assert_eq!(lines.len(), 11, "expected 11 step lines in:\n{stdout}");
    lines
        .iter()
        .enumerate()
        .map(|(i, line)| {
            assert!(
                line.starts_with(&format!("[{}/11] ", i + 1)),
                "step {} out of order: {line}",
                i + 1
            );
            let already = line.ends_with("... already done");
            assert!(
                already || line.contains("... done in "),
                "step line without an outcome: {line}"
            );
            already
        })
        .collect()
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
