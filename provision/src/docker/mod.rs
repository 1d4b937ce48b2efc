//! The Docker runtime: db01, db02, ... as containers on a user-defined network, as the tutorial
//! runs them, driven through the Docker Engine API (bollard) instead of the docker CLI.
//!
//! Everything it creates carries a label (`names`), so re-runs and teardown touch only what
//! provision made; a same-named object of someone else's is refused unless `--adopt` is given.
//!
//! The nodes may be spread over several engines and networks (`[provision.nodes.dbNN]`):
//! `placement` says where each one is, and every call goes to the node's own engine.
//!
//! `connect` reaches the daemons, `image` makes sure of the image, `objects` looks up, creates
//! and removes the labelled objects (the network, the volumes), `container` creates the
//! nodes, `lifecycle` starts and stops them, `exec` runs commands in them, `archive` moves
//! files in and out, `offline` runs step 7's one-shot container, `teardown` removes it all,
//! `error` words Docker's failures, and `plan` prints the docker CLI equivalent.

mod archive;
mod connect;
mod container;
mod error;
mod exec;
mod image;
mod lifecycle;
mod names;
mod objects;
mod offline;
mod placement;
pub mod plan;
mod teardown;

use std::net::Ipv4Addr;

use anyhow::Result;
use pgrepl_config::ProvisionConfig;

use crate::runtime::{Endpoint, ExecOutput, NodeFile, NodeId, NodeState, Runtime};
use connect::Engine;
use names::{container_path, Resource, PG_PORT};
use placement::{listen_of, peer_address_of};

/// db01, db02, ... as Docker containers.
pub struct DockerRuntime {
    /// One client per engine a node runs on; never empty.
    engines: Vec<Engine>,
    /// The engine of nodes without a `docker_host`: DOCKER_HOST or the default socket.
    default: String,
    config: ProvisionConfig,
    /// Whether same-named objects provision did not create may be used and removed.
    adopt: bool,
}

impl Runtime for DockerRuntime {
    fn describe(&self) -> String {
        format!("docker ({})", self.locations())
    }

    async fn state(&self, node: NodeId) -> Result<NodeState> {
        self.node_state(node).await
    }

    async fn create(&self, node: NodeId) -> Result<()> {
        self.create_node(node).await
    }

    async fn start(&self, node: NodeId) -> Result<()> {
        self.start_node(node).await
    }

    async fn stop(&self, node: NodeId) -> Result<()> {
        self.stop_node(node).await
    }

    async fn stop_immediate(&self, node: NodeId) -> Result<()> {
        self.signal_node(node, "SIGQUIT").await
    }

    async fn kill(&self, node: NodeId) -> Result<()> {
        self.signal_node(node, "SIGKILL").await
    }

    async fn exec(&self, node: NodeId, argv: &[&str]) -> Result<ExecOutput> {
        self.existing(node).await?;
        self.exec_in(node, argv).await
    }

    async fn read_file(&self, node: NodeId, file: NodeFile) -> Result<Option<Vec<u8>>> {
        self.existing(node).await?;
        self.download(node, &node.name(), &container_path(file))
            .await
    }

    async fn write_file(
        &self,
        node: NodeId,
        file: NodeFile,
        contents: &[u8],
        mode: u32,
    ) -> Result<()> {
        self.existing(node).await?;
        self.upload(node, &node.name(), &container_path(file), contents, mode)
            .await
    }

    fn path(&self, _node: NodeId, file: NodeFile) -> String {
        container_path(file)
    }

    async fn address(&self, node: NodeId) -> Result<Ipv4Addr> {
        self.node_address(node).await
    }

    /// Its `peer_address`, else the node's name: the shared network's DNS resolves it for
    /// the other containers.
    fn peer_endpoint(&self, node: NodeId) -> Endpoint {
        Endpoint {
            host: peer_address_of(&self.config, node)
                .map_or_else(|| node.name(), |ip| ip.to_string()),
            port: PG_PORT,
        }
    }

    /// The published address: its `listen`, else 127.0.0.1 and its port.
    fn host_endpoint(&self, node: NodeId) -> Endpoint {
        let listen = listen_of(&self.config, node);
        Endpoint {
            host: listen.ip().to_string(),
            port: listen.port(),
        }
    }

    async fn run_offline(&self, node: NodeId, script: &str) -> Result<ExecOutput> {
        self.offline(node, script).await
    }

    /// The labelled nodes, and the tutorial's two when containers of those names exist (an
    /// adopted pair has no labels).
    async fn nodes(&self) -> Result<Vec<NodeId>> {
        let mut nodes = self.labelled_nodes().await?;
        for node in [NodeId::DB01, NodeId::DB02] {
            if self
                .lookup(node, &Resource::container(node))
                .await?
                .is_some()
            {
                nodes.push(node);
            }
        }
        nodes.sort();
        nodes.dedup();
        Ok(nodes)
    }

    async fn teardown(&self) -> Result<Vec<String>> {
        self.remove_all().await
    }
}
