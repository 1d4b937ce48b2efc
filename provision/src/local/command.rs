//! Running a program to completion, capturing what it printed and how it ended.

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::runtime::ExecOutput;

/// Runs `cmd` with no input; a non-zero exit is not an error here.
pub(super) async fn output(cmd: Command) -> Result<ExecOutput> {
    let described = format!("{cmd:?}");
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.stdin(Stdio::null());
    let out = cmd
        .output()
        .await
        .with_context(|| format!("cannot run {described}"))?;
    // A signal is shown the way shells show it.
    let code = out
        .status
        .code()
        .or_else(|| out.status.signal().map(|s| 128 + s))
        .unwrap_or(-1);
    Ok(ExecOutput {
        code: code.into(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// Runs `cmd` and fails unless it exits 0; the error carries the command line and what it
/// printed, because PostgreSQL's programs say what went wrong only there.
pub(super) async fn checked(cmd: Command) -> Result<()> {
    let described = format!("{cmd:?}");
    let out = output(cmd).await?;
    if !out.success() {
        bail!("{described} failed (exit {}): {}", out.code, out.message());
    }
    Ok(())
}
