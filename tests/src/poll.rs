//! Waiting for a condition that another process will make true.

use anyhow::{bail, Result};
use std::time::{Duration, Instant};

/// How often conditions are re-checked; short, because the harness mostly
/// waits for local servers that get there within milliseconds.
const INTERVAL: Duration = Duration::from_millis(50);

/// Calls `check` until it returns true; fails after `timeout` saying what
/// was awaited, or at once when `check` fails (the wait is hopeless then).
pub fn wait_until(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Result<bool>,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if check()? {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(INTERVAL);
    }
}
