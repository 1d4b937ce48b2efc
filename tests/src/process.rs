//! Running helper programs and turning their failures into readable errors.

use anyhow::{bail, Context, Result};
use std::io::{ErrorKind, Write};
use std::process::{Command, Stdio};

/// Runs `cmd` to completion, feeding it `input` on stdin, and returns its stdout.
///
/// A failure carries the command line and both output streams, because the
/// server tools explain what went wrong only there.
pub(crate) fn run(cmd: &mut Command, input: Option<&str>) -> Result<String> {
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().with_context(|| format!("cannot run {cmd:?}"))?;
    // Written from another thread, so a child that answers while still
    // reading cannot deadlock on a full output pipe.
    let writer = match (input, child.stdin.take()) {
        (Some(text), Some(mut stdin)) => {
            let bytes = text.as_bytes().to_vec();
            Some(std::thread::spawn(move || stdin.write_all(&bytes)))
        }
        _ => None,
    };
    let out = child
        .wait_with_output()
        .with_context(|| format!("cannot wait for {cmd:?}"))?;
    if let Some(writer) = writer {
        match writer.join() {
            // A child that exits before reading everything reports why itself.
            Ok(Err(e)) if e.kind() != ErrorKind::BrokenPipe => {
                return Err(e).with_context(|| format!("cannot write the input of {cmd:?}"));
            }
            Ok(_) => {}
            Err(_) => bail!("the thread feeding {cmd:?} panicked"),
        }
    }
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            stdout
        );
    }
    Ok(stdout)
}
