//! The provision crate's local runtime as the harness uses it: the pair is built by the
//! tutorial's steps, with server settings that suit disposable test data, and the runtime's
//! async calls are driven from the harness's blocking code.

use anyhow::{Context, Result};
use pgrepl_config::Config;
use pgrepl_provision::local::LocalRuntime;
use std::future::Future;
use std::path::Path;

/// Given to both servers at every start, on top of the tutorial's configuration.
///
/// Durability is switched off because test data is disposable and start-up and write speed
/// matter more; commits stay synchronous (PostgreSQL's default, and what users run): with
/// `fsync = off` that costs nothing, and the causal-reads tests set `synchronous_commit =
/// off` in the sessions that exercise asynchronous commits. Connections are logged, with the authentication method used, to show what the
/// proxy did on the backends.
const SETTINGS: &[(&str, &str)] = &[
    ("fsync", "off"),
    ("full_page_writes", "off"),
    ("max_connections", "300"),
    ("hot_standby_feedback", "on"),
    ("log_connections", "on"),
    ("password_encryption", "scram-sha-256"),
];

/// The local runtime for a pair in `base_dir` on the given loopback ports.
pub(crate) fn local_runtime(
    base_dir: &Path,
    primary_port: u16,
    replica_port: u16,
) -> Result<LocalRuntime> {
    let mut config = Config::defaults().provision;
    config.data_dir = base_dir.to_owned();
    config.primary_port = primary_port;
    config.replica_port = replica_port;
    Ok(LocalRuntime::new(&config)?.with_settings(SETTINGS))
}

/// Runs `future` to completion on a current-thread tokio runtime of its own thread: the
/// harness is blocking code, and is also called from inside async tests, where a runtime
/// may not be started on the test's own thread.
pub fn block_on<T: Send>(future: impl Future<Output = Result<T>> + Send) -> Result<T> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .context("cannot start a tokio runtime")?
                    .block_on(future)
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}
