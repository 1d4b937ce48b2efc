//! The node containers: what each is created with (the tutorial's `docker run` for db01 and
//! db02), and finding them again, refusing same-named containers provision did not create.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use anyhow::{Context, Result};
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, EndpointSettings, HostConfig, NetworkingConfig,
    PortBinding, RestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::CreateContainerOptionsBuilder;
use pgrepl_config::ProvisionConfig;

use super::error::{optional, port_changed};
use super::names::{port_key, Resource, LOOPBACK, STOP_SIGNAL, STOP_TIMEOUT_SECS};
use super::objects::Owner;
use super::DockerRuntime;
use crate::runtime::{NodeId, NodeState};
use crate::tutorial::password::random_password;
use crate::tutorial::PGDATA;

/// The host port `node` is published on.
pub(super) fn host_port(config: &ProvisionConfig, node: NodeId) -> u16 {
    node.port(config.primary_port, config.replica_port)
}

/// Whether the container's server process runs.
pub(super) fn is_running(info: &ContainerInspectResponse) -> bool {
    info.state.as_ref().and_then(|s| s.running) == Some(true)
}

impl DockerRuntime {
    /// `node`'s container, or `None` when there is none; one provision did not create is an
    /// error unless adopting.
    pub(super) async fn inspect_node(
        &self,
        node: NodeId,
    ) -> Result<Option<ContainerInspectResponse>> {
        let container = Resource::container(node);
        let info = optional(self.docker.inspect_container(&container.name, None).await)
            .with_context(|| format!("cannot inspect {container}"))?;
        if let Some(info) = &info {
            self.claim(&container, &Owner::of_container(&container, info))?;
        }
        Ok(info)
    }

    /// Like [`DockerRuntime::inspect_node`], for steps that need the container to be there.
    pub(super) async fn existing(&self, node: NodeId) -> Result<ContainerInspectResponse> {
        self.inspect_node(node)
            .await?
            .with_context(|| format!("container {node} does not exist (provision creates it)"))
    }

    pub(super) async fn node_state(&self, node: NodeId) -> Result<NodeState> {
        Ok(match self.inspect_node(node).await? {
            None => NodeState::Missing,
            Some(info) if is_running(&info) => NodeState::Running,
            Some(_) => NodeState::Stopped,
        })
    }

    /// Steps 1 and 2: the network, the data volume and the container, each only if missing
    /// (an existing container is looked at first, so a refused one leaves nothing behind);
    /// then the server is started and waited for.
    pub(super) async fn create_node(&self, node: NodeId) -> Result<()> {
        let port = host_port(&self.config, node);
        if let Some(info) = self.inspect_node(node).await? {
            let published = published_port(&info);
            if published != Some(port) {
                return Err(port_changed(node, published, port));
            }
            return self.start_node(node).await;
        }
        self.ensure_network().await?;
        self.ensure_volume(node).await?;
        let password = random_password().context("cannot get random bytes for a password")?;
        let options = CreateContainerOptionsBuilder::new()
            .name(&node.name())
            .build();
        let spec = node_spec(&self.config, node, &password);
        self.docker
            .create_container(Some(options), spec)
            .await
            .with_context(|| format!("cannot create container {node}"))?;
        if let Err(e) = self.launch(node).await {
            // It never ran and its data is in the volume: removing it lets a re-run (say,
            // with another port) create it afresh. The start's error is the one to report.
            let _ = self.remove(&Resource::container(node)).await;
            return Err(e);
        }
        self.wait_ready(node).await
    }

    /// The address `node` has on the pair's network (`docker inspect`'s IPAddress).
    pub(super) async fn node_address(&self, node: NodeId) -> Result<Ipv4Addr> {
        let info = self.existing(node).await?;
        let network = &self.config.network;
        let ip = info
            .network_settings
            .and_then(|s| s.networks)
            .and_then(|mut networks| networks.remove(network))
            .and_then(|endpoint| endpoint.ip_address)
            .filter(|ip| !ip.is_empty())
            .with_context(|| {
                format!("container {node} has no address on network {network}: is it running, on that network?")
            })?;
        ip.parse()
            .with_context(|| format!("container {node}'s address {ip:?} is not an IPv4 address"))
    }
}

/// The host port the container publishes 5432/tcp on, if any.
fn published_port(info: &ContainerInspectResponse) -> Option<u16> {
    let bindings = info.host_config.as_ref()?.port_bindings.as_ref()?;
    let binding = bindings.get(&port_key())?.as_ref()?.first()?;
    binding.host_port.as_ref()?.parse().ok()
}

/// `docker run -d --name NODE --hostname NODE --network NET -p 127.0.0.1:PORT:5432
/// -v NODE-data:PGDATA -e POSTGRES_PASSWORD=... --stop-signal SIGINT IMAGE`, labelled, with
/// no restart policy: a restart would bring db02 back in the middle of step 7.
fn node_spec(config: &ProvisionConfig, node: NodeId, password: &str) -> ContainerCreateBody {
    let name = node.name();
    let binding = PortBinding {
        host_ip: Some(LOOPBACK.to_owned()),
        host_port: Some(host_port(config, node).to_string()),
    };
    let endpoint = EndpointSettings {
        aliases: Some(vec![name.clone()]),
        ..Default::default()
    };
    ContainerCreateBody {
        hostname: Some(name.clone()),
        image: Some(config.image.clone()),
        env: Some(vec![format!("POSTGRES_PASSWORD={password}")]),
        labels: Some(Resource::container(node).labels()),
        exposed_ports: Some(vec![port_key()]),
        stop_signal: Some(STOP_SIGNAL.to_owned()),
        stop_timeout: Some(STOP_TIMEOUT_SECS.into()),
        host_config: Some(HostConfig {
            binds: Some(vec![format!("{}:{PGDATA}", Resource::volume(node).name)]),
            port_bindings: Some(HashMap::from([(port_key(), Some(vec![binding]))])),
            network_mode: Some(config.network.clone()),
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::NO),
                maximum_retry_count: None,
            }),
            ..Default::default()
        }),
        networking_config: Some(NetworkingConfig {
            endpoints_config: Some(HashMap::from([(config.network.clone(), endpoint)])),
        }),
        ..Default::default()
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use pgrepl_config::RuntimeKind;

    pub(in super::super) fn config() -> ProvisionConfig {
        ProvisionConfig {
            runtime: RuntimeKind::Docker,
            image: "postgres:16.1".into(),
            network: "rideshare-net".into(),
            primary_port: 54321,
            replica_port: 54322,
            replication_password: Some("s3cret-rep".into()),
            data_dir: "/tmp/unused".into(),
            replicas: 1,
            sync: false,
            nodes: Default::default(),
        }
    }

    #[test]
    fn the_replica_is_published_on_loopback_only_with_no_restart_policy() {
        let spec = node_spec(&config(), NodeId::DB02, "pw");
        let host = spec.host_config.clone().unwrap();
        let bindings = host.port_bindings.unwrap();
        assert_eq!(
            bindings["5432/tcp"],
            Some(vec![PortBinding {
                host_ip: Some("127.0.0.1".into()),
                host_port: Some("54322".into()),
            }])
        );
        assert_eq!(
            host.restart_policy.unwrap().name,
            Some(RestartPolicyNameEnum::NO)
        );
        assert_eq!(
            host.binds.unwrap(),
            vec!["db02-data:/var/lib/postgresql/data"]
        );
        assert_eq!(host.network_mode.as_deref(), Some("rideshare-net"));
        assert_eq!(spec.hostname.as_deref(), Some("db02"));
        assert_eq!(spec.stop_signal.as_deref(), Some("SIGINT"));
        assert_eq!(spec.env.unwrap(), vec!["POSTGRES_PASSWORD=pw"]);
        assert_eq!(spec.labels.unwrap()["io.pgrepl-proxy.node"], "db02");
        let endpoints = spec.networking_config.unwrap().endpoints_config.unwrap();
        assert_eq!(
            endpoints["rideshare-net"].aliases,
            Some(vec!["db02".to_owned()])
        );
    }

    #[test]
    fn the_published_port_is_read_back() {
        let spec = node_spec(&config(), NodeId::DB01, "pw");
        let info = ContainerInspectResponse {
            host_config: spec.host_config,
            ..Default::default()
        };
        assert_eq!(published_port(&info), Some(54321));
        assert_eq!(published_port(&ContainerInspectResponse::default()), None);
    }
}
