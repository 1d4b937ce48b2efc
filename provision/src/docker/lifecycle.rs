//! Starting and stopping a node's container, and waiting until that has really happened:
//! Docker answers "started" before the server accepts connections, and a start sent while a
//! stop is still under way is silently ignored (HTTP 304).

use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bollard::query_parameters::{
    KillContainerOptionsBuilder, LogsOptionsBuilder, StopContainerOptionsBuilder,
};

use super::container::is_running;
use super::error::{is_port_in_use, port_in_use};
use super::exec::{collect, joined};
use super::names::{PG_ISREADY, STOP_TIMEOUT_SECS};
use super::placement::listen_of;
use super::DockerRuntime;
use crate::psql::wait_until;
use crate::runtime::NodeId;

/// How long a started server may take to accept connections (the first start runs initdb).
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// How long Docker may take to report a stopped container as not running.
const STOPPED_TIMEOUT: Duration = Duration::from_secs(30);
/// Log lines shown when a server does not come up.
const LOG_TAIL_LINES: &str = "20";

impl DockerRuntime {
    /// Starts the container; a taken host port is explained rather than passed on raw.
    pub(super) async fn launch(&self, node: NodeId) -> Result<()> {
        self.engine(node)
            .start_container(&node.name(), None)
            .await
            .map_err(|e| {
                if is_port_in_use(&e) {
                    port_in_use(node, listen_of(&self.config, node), self.own_listen(node))
                } else {
                    anyhow::Error::from(e).context(format!("cannot start container {node}"))
                }
            })
    }

    pub(super) async fn start_node(&self, node: NodeId) -> Result<()> {
        self.existing(node).await?;
        self.launch(node).await?;
        self.wait_ready(node).await
    }

    /// Stops the container (SIGINT: a fast shutdown) and waits until Docker agrees it has.
    pub(super) async fn stop_node(&self, node: NodeId) -> Result<()> {
        self.existing(node).await?;
        let options = StopContainerOptionsBuilder::new()
            .t(STOP_TIMEOUT_SECS)
            .build();
        self.engine(node)
            .stop_container(&node.name(), Some(options))
            .await
            .with_context(|| format!("cannot stop container {node}"))?;
        self.wait_stopped(node).await
    }

    /// Sends `signal` to the container's PID 1 (the postmaster) and waits until Docker
    /// reports it stopped: SIGQUIT is PostgreSQL's immediate shutdown, SIGKILL a crash.
    pub(super) async fn signal_node(&self, node: NodeId, signal: &str) -> Result<()> {
        self.existing(node).await?;
        let options = KillContainerOptionsBuilder::new().signal(signal).build();
        self.engine(node)
            .kill_container(&node.name(), Some(options))
            .await
            .with_context(|| format!("cannot send {signal} to container {node}"))?;
        self.wait_stopped(node).await
    }

    /// Waits until Docker reports the container not running.
    async fn wait_stopped(&self, node: NodeId) -> Result<()> {
        wait_until(
            &format!("container {node} to stop"),
            STOPPED_TIMEOUT,
            || async { Ok(!is_running(&self.existing(node).await?)) },
        )
        .await
    }

    /// Waits until the server answers on TCP; fails as soon as the container exits, with the
    /// end of its log, where the server or the entrypoint says why.
    pub(super) async fn wait_ready(&self, node: NodeId) -> Result<()> {
        let what = format!("{node} to accept connections");
        match wait_until(&what, READY_TIMEOUT, || self.is_ready(node)).await {
            Ok(()) => Ok(()),
            Err(e) => Err(self.with_log(node, e).await),
        }
    }

    async fn is_ready(&self, node: NodeId) -> Result<bool> {
        let info = self.existing(node).await?;
        if !is_running(&info) {
            let code = info.state.and_then(|s| s.exit_code).unwrap_or_default();
            bail!("container {node} exited (code {code}) before accepting connections");
        }
        match self.exec_in(node, PG_ISREADY).await {
            Ok(out) if out.code == 0 => Ok(true),
            // 1: starting up or shutting down; 2: no answer yet.
            Ok(out) if matches!(out.code, 1 | 2) => Ok(false),
            // Anything else may be the container dying under the exec (which then ends with
            // 137, or fails): the next round reports the exit.
            _ if !is_running(&self.existing(node).await?) => Ok(false),
            Ok(out) => bail!(
                "pg_isready in {node} failed (exit {}): {}",
                out.code,
                out.message()
            ),
            Err(e) => Err(e),
        }
    }

    /// `e` with the last lines of the container's log.
    async fn with_log(&self, node: NodeId, e: anyhow::Error) -> anyhow::Error {
        let options = LogsOptionsBuilder::new()
            .stdout(true)
            .stderr(true)
            .tail(LOG_TAIL_LINES)
            .build();
        match collect(self.engine(node).logs(&node.name(), Some(options))).await {
            Ok(chunks) => anyhow!(
                "{e:#}\n--- last lines of container {node}'s log:\n{}",
                joined(&chunks).trim_end()
            ),
            Err(log_error) => anyhow!("{e:#}\n(its log cannot be read: {log_error})"),
        }
    }
}
