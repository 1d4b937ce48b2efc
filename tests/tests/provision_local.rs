//! `pgrepl-proxy provision --runtime local`: the same 11 steps with the installed PostgreSQL's
//! programs, a second run that changes nothing, a lost replica rebuilt by re-running, verify,
//! status and teardown.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use pgrepl_tests::provisioning::{assert_healthy_status, pgrepl, step_outcomes};
use pgrepl_tests::{free_port, run_dir};

/// A local pair in its own directory, torn down when the test ends, passed or not.
struct LocalPair {
    env: Vec<(String, String)>,
    dir: PathBuf,
}

impl LocalPair {
    fn new(name: &str) -> LocalPair {
        let dir = run_dir().join(name);
        let env = vec![
            ("PGREPL_PROVISION__RUNTIME".into(), "local".into()),
            (
                "PGREPL_PROVISION__DATA_DIR".into(),
                dir.to_string_lossy().into_owned(),
            ),
            (
                "PGREPL_PROVISION__PRIMARY_PORT".into(),
                free_port().to_string(),
            ),
            (
                "PGREPL_PROVISION__REPLICA_PORT".into(),
                free_port().to_string(),
            ),
            // Where `status` looks for a running proxy: nothing listens there.
            (
                "PGREPL_METRICS__LISTEN".into(),
                format!("127.0.0.1:{}", free_port()),
            ),
        ];
        LocalPair { env, dir }
    }

    fn run(&self, args: &[&str]) -> pgrepl_tests::suite::PsqlRun {
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        pgrepl(args, &env)
    }

    fn provision(&self) -> Vec<bool> {
        let run = self.run(&["provision"]);
        assert!(
            run.success,
            "provision failed:\n{}{}",
            run.stdout, run.stderr
        );
        step_outcomes(&run.stdout)
    }
}

impl Drop for LocalPair {
    fn drop(&mut self) {
        let run = self.run(&["teardown"]);
        if !run.success {
            eprintln!("teardown of {} failed: {}", self.dir.display(), run.stderr);
        }
    }
}

#[test]
fn local_pair_provisions_reprovisions_and_tears_down() {
    let pair = LocalPair::new("local-pair");
    assert!(pair.provision().iter().all(|already| !already));

    let pgpass = std::fs::metadata(pair.dir.join("db02/.pgpass")).expect("no .pgpass for db02");
    assert_eq!(pgpass.mode() & 0o777, 0o600, ".pgpass must be private");
    assert!(pair.dir.join("db02/data/standby.signal").exists());

    assert!(
        pair.provision().iter().all(|already| *already),
        "a provisioned pair is left as it is"
    );

    let verify = pair.run(&["verify"]);
    assert!(
        verify.success,
        "verify failed:\n{}{}",
        verify.stdout, verify.stderr
    );
    assert_eq!(
        verify
            .stdout
            .lines()
            .filter(|l| l.starts_with("ok  "))
            .count(),
        4
    );

    // No proxy answers: `status` says so and shows the pair as seen directly.
    let status = pair.run(&["status"]);
    assert!(
        status
            .stdout
            .starts_with("no proxy answering on 127.0.0.1:"),
        "{}",
        status.stdout
    );
    assert_healthy_status(&status);
    assert_healthy_status(&pair.run(&["status", "--pair"]));

    let removed = pair.run(&["teardown"]);
    assert!(removed.success, "{}", removed.stderr);
    assert!(!pair.dir.join("db01").exists() && !pair.dir.join("db02").exists());
}

#[test]
fn a_lost_replica_is_rebuilt_by_running_provision_again() {
    let pair = LocalPair::new("lost-replica");
    pair.provision();
    stop_and_remove(&pair.dir.join("db02"));

    let outcomes = pair.provision();
    // The primary's steps (1, 3, 5, 6) and the tutorial's table (11) are there already; the
    // replica is created again, gets a new .pgpass (and password) and a fresh base backup.
    let redone: Vec<usize> = (1..=11).filter(|n| !outcomes[n - 1]).collect();
    assert_eq!(redone, vec![2, 4, 7, 8, 9, 10], "{outcomes:?}");
    let verify = pair.run(&["verify"]);
    assert!(
        verify.success,
        "verify failed:\n{}{}",
        verify.stdout, verify.stderr
    );
}

/// Stops the server in `node_dir` at once and deletes the node, as a lost machine would.
fn stop_and_remove(node_dir: &Path) {
    let pid_file = node_dir.join("data/postmaster.pid");
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .expect("db02 is not running")
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .expect("no pid in postmaster.pid");
    // SAFETY: kill(2) has no memory-safety preconditions. SIGQUIT: immediate shutdown.
    unsafe { libc::kill(pid, libc::SIGQUIT) };
    for _ in 0..100 {
        if !pid_file.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    std::fs::remove_dir_all(node_dir).expect("cannot remove db02");
}
