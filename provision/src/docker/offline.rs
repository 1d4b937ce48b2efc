//! Step 7 done safely: the tutorial empties db02's data directory and runs pg_basebackup
//! inside the running db02, racing the server noticing its files vanish. Here a one-shot
//! container does it on db02's volume while db02 is stopped.

use std::collections::HashMap;

use anyhow::{bail, Context, Result};
use bollard::errors::Error;
use bollard::models::{ContainerCreateBody, HostConfig, NetworkingConfig};
use bollard::query_parameters::{CreateContainerOptionsBuilder, LogsOptionsBuilder};
use bollard::Docker;
use futures_util::StreamExt;

use super::container::{endpoint, is_running, join_peer_network};
use super::exec::{collect, split};
use super::names::{container_path, home_dir, Resource, SERVER_USER};
use super::placement::Attachments;
use super::DockerRuntime;
use crate::runtime::{ExecOutput, NodeFile, NodeId};
use crate::tutorial::PGDATA;

impl DockerRuntime {
    /// Runs `script` with `sh -c` in a fresh container of the node's image on its data volume,
    /// on its engine and networks (with its fixed peer address, free while it is stopped, so
    /// the other nodes' pg_hba.conf lets it in), as the server's user, with the node's
    /// `.pgpass`; removes the container afterwards, whatever happened.
    pub(super) async fn offline(&self, node: NodeId, script: &str) -> Result<ExecOutput> {
        let info = self.existing(node).await?;
        if is_running(&info) {
            bail!("container {node} is running: stop it before its data directory is replaced");
        }
        let image = info
            .image
            .context("Docker reports no image for the container")?;
        let one_shot = Resource::offline(node);
        if let Some(owner) = self.lookup(node, &one_shot).await? {
            self.claim(&one_shot, &owner)?;
            self.remove(node, &one_shot).await?;
        }
        let pgpass = self
            .download(node, &node.name(), &container_path(NodeFile::Pgpass))
            .await?;
        let attachments = self.attachments(node).await?;
        let options = CreateContainerOptionsBuilder::new()
            .name(&one_shot.name)
            .build();
        let spec = offline_spec(node, &image, script, &attachments);
        self.engine(node)
            .create_container(Some(options), spec)
            .await
            .with_context(|| format!("cannot create {one_shot}"))?;
        let result = async {
            join_peer_network(self.engine(node), &one_shot.name, &attachments).await?;
            self.run_to_end(node, &one_shot.name, pgpass.as_deref())
                .await
        }
        .await;
        let removed = self.remove(node, &one_shot).await;
        let output = result?;
        removed?;
        Ok(output)
    }

    async fn run_to_end(
        &self,
        node: NodeId,
        container: &str,
        pgpass: Option<&[u8]>,
    ) -> Result<ExecOutput> {
        if let Some(pgpass) = pgpass {
            self.upload(
                node,
                container,
                &container_path(NodeFile::Pgpass),
                pgpass,
                0o600,
            )
            .await?;
        }
        let docker = self.engine(node);
        docker
            .start_container(container, None)
            .await
            .with_context(|| format!("cannot start container {container}"))?;
        let code = exit_code_of(docker, container).await?;
        let options = LogsOptionsBuilder::new().stdout(true).stderr(true).build();
        let chunks = collect(docker.logs(container, Some(options)))
            .await
            .with_context(|| format!("cannot read the output of container {container}"))?;
        Ok(split(code, &chunks))
    }
}

/// Waits for the container to exit and returns its exit code (bollard reports a non-zero one
/// as an error).
async fn exit_code_of(docker: &Docker, container: &str) -> Result<i64> {
    let mut wait = docker.wait_container(container, None);
    match wait.next().await {
        Some(Ok(exit)) => Ok(exit.status_code),
        Some(Err(Error::DockerContainerWaitError { code, .. })) => Ok(code),
        Some(Err(e)) => Err(e).with_context(|| format!("cannot wait for container {container}")),
        None => bail!("Docker ended the wait for container {container} without an exit code"),
    }
}

/// `sh -c SCRIPT` (the image's entrypoint is bypassed: it would start a server), as the
/// server's user, with PGDATA and HOME set, the node's volume at PGDATA, on the node's own
/// network (with its address there when fixed; the peer network is joined before the start).
fn offline_spec(
    node: NodeId,
    image: &str,
    script: &str,
    attachments: &Attachments,
) -> ContainerCreateBody {
    let (network, ip) = &attachments.own;
    ContainerCreateBody {
        image: Some(image.to_owned()),
        user: Some(SERVER_USER.to_owned()),
        env: Some(vec![
            format!("PGDATA={PGDATA}"),
            format!("HOME={}", home_dir()),
        ]),
        entrypoint: Some(vec!["sh".to_owned(), "-c".to_owned(), script.to_owned()]),
        labels: Some(Resource::offline(node).labels()),
        host_config: Some(HostConfig {
            binds: Some(vec![format!("{}:{PGDATA}", Resource::volume(node).name)]),
            network_mode: Some(network.clone()),
            ..Default::default()
        }),
        networking_config: Some(NetworkingConfig {
            endpoints_config: Some(HashMap::from([(network.clone(), endpoint(None, *ip))])),
        }),
        ..Default::default()
    }
}
