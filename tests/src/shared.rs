//! The per-process scratch directory and the cluster shared by all tests of
//! a test binary, both cleaned up when the process exits.

use crate::cluster::Cluster;
use crate::proxy;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Scratch directories are `<temp dir>/pgrepl-test-<pid>`; the pid tells
/// whether the run that made one is still alive.
const PREFIX: &str = "pgrepl-test-";

static RUN_DIR: OnceLock<PathBuf> = OnceLock::new();
/// The error is kept as text so every test that asks gets the same message
/// instead of retrying a start that cannot succeed.
static SHARED: OnceLock<Result<Cluster, String>> = OnceLock::new();

/// This process's scratch directory, `<temp dir>/pgrepl-test-<pid>`: the
/// shared cluster's base directory, and where proxies keep their config and
/// log. Created on first use; removed at exit, with everything running in it.
pub fn run_dir() -> &'static Path {
    RUN_DIR.get_or_init(|| {
        remove_stale_run_dirs();
        let dir = std::env::temp_dir().join(format!("{PREFIX}{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        // SAFETY: cleanup_at_exit is an extern "C" fn that never unwinds.
        if unsafe { libc::atexit(cleanup_at_exit) } != 0 {
            panic!("cannot register the test cluster cleanup with atexit");
        }
        dir
    })
}

impl Cluster {
    /// The cluster of this test process, started in [`run_dir`] on first use
    /// and stopped and deleted when the process exits (the Rust test runner
    /// ends with `exit`, which runs `atexit` handlers).
    ///
    /// Panics if it cannot start, since no test that asks can run without it.
    pub fn shared() -> &'static Cluster {
        SHARED
            .get_or_init(|| Cluster::start(run_dir()).map_err(|e| format!("{e:#}")))
            .as_ref()
            .unwrap_or_else(|e| panic!("cannot start the shared test cluster: {e}"))
    }
}

extern "C" fn cleanup_at_exit() {
    proxy::kill_live_proxies();
    if let Some(Ok(cluster)) = SHARED.get() {
        cluster.stop();
    }
    if let Some(dir) = RUN_DIR.get() {
        // Failure only leaves files behind, and the next run retries.
        let _ = fs::remove_dir_all(dir);
    }
}

/// Deletes the scratch directories of earlier runs that died without
/// cleaning up, after stopping the servers and proxies still running there.
/// Directories of live processes, including a recycled pid, are left alone.
fn remove_stale_run_dirs() {
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(PREFIX))
            .and_then(|p| p.parse::<i32>().ok())
            .filter(|&pid| pid > 0)
        else {
            continue;
        };
        if process_exists(pid) {
            continue;
        }
        let dir = entry.path();
        proxy::kill_stale_proxies(&dir);
        if let Ok(cluster) = Cluster::attach(&dir) {
            cluster.stop();
        }
        let _ = fs::remove_dir_all(&dir);
    }
}

fn process_exists(pid: i32) -> bool {
    // SAFETY: signal 0 only checks whether the process exists.
    let alive = unsafe { libc::kill(pid, 0) } == 0;
    alive || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}
