//! SQL on a node through `psql` run in it, as the tutorial does (`docker exec db01 psql -U
//! postgres ...`): the superuser over the node's own Unix socket, where pg_hba trusts it.

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::runtime::{ExecOutput, NodeId, Runtime};

/// `psql` arguments shared by every call: no ~/.psqlrc, unaligned tuples only, stop at the
/// first error (without it psql exits 0 on SQL errors).
const PSQL: &[&str] = &[
    "psql",
    "-X",
    "-A",
    "-t",
    "-q",
    "-v",
    "ON_ERROR_STOP=1",
    "-U",
    "postgres",
    "-d",
    "postgres",
];

/// Runs `sql` on `node` and returns what psql answered, success or not.
pub async fn try_sql<R: Runtime>(rt: &R, node: NodeId, sql: &str) -> Result<ExecOutput> {
    let mut argv = PSQL.to_vec();
    argv.extend(["-c", sql]);
    rt.exec(node, &argv).await
}

/// Runs `sql` on `node` and returns its output, trimmed; an SQL error is an error naming the
/// node and what the server said.
pub async fn sql<R: Runtime>(rt: &R, node: NodeId, sql: &str) -> Result<String> {
    expect_success(node, try_sql(rt, node, sql).await?)
}

/// Runs the script file at `path` (as `node` sees it) with `psql -f`.
pub async fn sql_file<R: Runtime>(rt: &R, node: NodeId, path: &str) -> Result<String> {
    let mut argv = PSQL.to_vec();
    argv.extend(["-f", path]);
    expect_success(node, rt.exec(node, &argv).await?)
}

fn expect_success(node: NodeId, out: ExecOutput) -> Result<String> {
    if !out.success() {
        bail!(
            "psql on {node} failed (exit {}): {}",
            out.code,
            out.message()
        );
    }
    Ok(out.stdout.trim().to_owned())
}

/// Retries `check` every 200 ms until it returns true; an error when `timeout` passes first.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<bool>>,
{
    let start = Instant::now();
    loop {
        if check().await? {
            return Ok(());
        }
        if start.elapsed() > timeout {
            bail!("gave up waiting for {what} after {} s", timeout.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
