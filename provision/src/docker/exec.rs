//! Commands in a running container (`docker exec`), and the output streams Docker sends for
//! them and for container logs.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use bollard::container::LogOutput;
use bollard::exec::StartExecResults;
use bollard::models::ExecConfig;
use bollard::Docker;
use futures_util::{Stream, TryStreamExt};

use super::names::SERVER_USER;
use super::DockerRuntime;
use crate::runtime::{ExecOutput, NodeId};

/// How often, and how many times, to ask for an exit code Docker has not recorded yet when the
/// output has already ended.
const EXIT_POLL: Duration = Duration::from_millis(20);
const EXIT_POLLS: usize = 250;

impl DockerRuntime {
    /// Runs `argv` in `node`'s container as the server's user (so client programs reach the
    /// server as `postgres` by default), capturing stdout, stderr and the exit code.
    pub(super) async fn exec_in(&self, node: NodeId, argv: &[&str]) -> Result<ExecOutput> {
        let docker = self.engine(node);
        let container = node.name();
        let config = ExecConfig {
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            user: Some(SERVER_USER.to_owned()),
            cmd: Some(argv.iter().map(|arg| (*arg).to_owned()).collect()),
            ..Default::default()
        };
        let what = || format!("cannot run {} in container {container}", argv.join(" "));
        let id = docker
            .create_exec(&container, config)
            .await
            .with_context(what)?
            .id;
        let StartExecResults::Attached { output, .. } =
            docker.start_exec(&id, None).await.with_context(what)?
        else {
            bail!("Docker started {} detached", argv.join(" "));
        };
        let chunks = collect(output).await.with_context(what)?;
        let code = exit_code(docker, &id).await.with_context(what)?;
        Ok(split(code, &chunks))
    }
}

async fn exit_code(docker: &Docker, exec_id: &str) -> Result<i64> {
    for _ in 0..EXIT_POLLS {
        let info = docker.inspect_exec(exec_id).await?;
        match (info.running, info.exit_code) {
            (Some(false), Some(code)) => return Ok(code),
            _ => tokio::time::sleep(EXIT_POLL).await,
        }
    }
    bail!("Docker recorded no exit code")
}

/// Every chunk of a container output stream, in order.
pub(super) async fn collect(
    stream: impl Stream<Item = Result<LogOutput, bollard::errors::Error>>,
) -> Result<Vec<LogOutput>, bollard::errors::Error> {
    stream.try_collect().await
}

/// The chunks' text, stdout and stderr interleaved as they came.
pub(super) fn joined(chunks: &[LogOutput]) -> String {
    text(chunks, |_| true)
}

/// The chunks as a command's result: stdout (and a TTY's console output) apart from stderr.
pub(super) fn split(code: i64, chunks: &[LogOutput]) -> ExecOutput {
    let is_stderr = |chunk: &LogOutput| matches!(chunk, LogOutput::StdErr { .. });
    ExecOutput {
        code,
        stdout: text(chunks, |chunk| !is_stderr(chunk)),
        stderr: text(chunks, is_stderr),
    }
}

fn text(chunks: &[LogOutput], pick: impl Fn(&LogOutput) -> bool) -> String {
    let bytes: Vec<u8> = chunks
        .iter()
        .filter(|chunk| pick(chunk))
        .flat_map(|chunk| chunk.as_ref().iter().copied())
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(text: &str) -> LogOutput {
        LogOutput::StdOut {
            message: text.as_bytes().to_vec().into(),
        }
    }

    fn err(text: &str) -> LogOutput {
        LogOutput::StdErr {
            message: text.as_bytes().to_vec().into(),
        }
    }

    #[test]
    fn streams_are_split_or_joined_in_order() {
        let chunks = [out("a\n"), err("b\n"), out("c\n")];
        assert_eq!(
            split(3, &chunks),
            ExecOutput {
                code: 3,
                stdout: "a\nc\n".into(),
                stderr: "b\n".into(),
            }
        );
        assert_eq!(joined(&chunks), "a\nb\nc\n");
    }
}
