//! The node containers: what each is created with (the tutorial's `docker run` for db01 and
//! db02), and finding them again, refusing same-named containers provision did not create.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use anyhow::{Context, Result};
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, EndpointIpamConfig, EndpointSettings,
    HostConfig, NetworkConnectRequest, NetworkingConfig, PortBinding, RestartPolicy,
    RestartPolicyNameEnum,
};
use bollard::query_parameters::CreateContainerOptionsBuilder;
use bollard::Docker;
use pgrepl_config::ProvisionConfig;

use super::error::{optional, port_changed};
use super::names::{port_key, Resource, STOP_SIGNAL, STOP_TIMEOUT_SECS};
use super::objects::Owner;
use super::placement::{listen_of, network_of, peer_address_of, Attachments};
use super::DockerRuntime;
use crate::runtime::{NodeId, NodeState};
use crate::tutorial::password::random_password;
use crate::tutorial::PGDATA;

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
        let info = optional(
            self.engine(node)
                .inspect_container(&container.name, None)
                .await,
        )
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
    /// (an existing container is looked at first, so a refused one leaves nothing behind),
    /// on the node's engine; then the server is started and waited for.
    pub(super) async fn create_node(&self, node: NodeId) -> Result<()> {
        let listen = listen_of(&self.config, node);
        if let Some(info) = self.inspect_node(node).await? {
            let published = published(&info);
            if published != Some(listen) {
                return Err(port_changed(node, published, listen, self.own_listen(node)));
            }
            return self.start_node(node).await;
        }
        self.ensure_network(node).await?;
        self.ensure_volume(node).await?;
        let attachments = self.attachments(node).await?;
        let password = random_password().context("cannot get random bytes for a password")?;
        let options = CreateContainerOptionsBuilder::new()
            .name(&node.name())
            .build();
        let spec = node_spec(&self.config, node, &attachments, &password);
        self.engine(node)
            .create_container(Some(options), spec)
            .await
            .with_context(|| format!("cannot create container {node}"))?;
        let started = async {
            join_peer_network(self.engine(node), &node.name(), &attachments).await?;
            self.launch(node).await
        }
        .await;
        if let Err(e) = started {
            // It never ran and its data is in the volume: removing it lets a re-run (say,
            // with another port) create it afresh. The start's error is the one to report.
            let _ = self.remove(node, &Resource::container(node)).await;
            return Err(e);
        }
        self.wait_ready(node).await
    }

    /// Whether `node`'s published address is its own `listen` setting.
    pub(super) fn own_listen(&self, node: NodeId) -> bool {
        self.config.node(&node.name()).listen.is_some()
    }

    /// The networks `node`'s containers join: its own, and the one of its engine that holds
    /// its `peer_address`, if any.
    pub(super) async fn attachments(&self, node: NodeId) -> Result<Attachments> {
        let own = network_of(&self.config, node);
        let peer = match peer_address_of(&self.config, node) {
            Some(ip) => Some((ip, self.network_holding(node, ip).await?)),
            None => None,
        };
        Ok(Attachments::new(own, peer))
    }

    /// The address the other nodes reach `node` at: its `peer_address`, else its address on
    /// its network (`docker inspect`'s IPAddress).
    pub(super) async fn node_address(&self, node: NodeId) -> Result<Ipv4Addr> {
        if let Some(ip) = peer_address_of(&self.config, node) {
            return Ok(ip);
        }
        let info = self.existing(node).await?;
        let network = network_of(&self.config, node);
        let ip = info
            .network_settings
            .and_then(|s| s.networks)
            .and_then(|mut networks| networks.remove(&network))
            .and_then(|endpoint| endpoint.ip_address)
            .filter(|ip| !ip.is_empty())
            .with_context(|| {
                format!("container {node} has no address on network {network}: is it running, on that network?")
            })?;
        ip.parse()
            .with_context(|| format!("container {node}'s address {ip:?} is not an IPv4 address"))
    }
}

/// Connects the created, not yet started `container` to the network its peer address is on,
/// with that address.
pub(super) async fn join_peer_network(
    docker: &Docker,
    container: &str,
    attachments: &Attachments,
) -> Result<()> {
    let Some((network, ip)) = &attachments.peer else {
        return Ok(());
    };
    let request = NetworkConnectRequest {
        container: container.to_owned(),
        endpoint_config: Some(endpoint(None, Some(*ip))),
    };
    docker
        .connect_network(network, request)
        .await
        .with_context(|| {
            format!("cannot connect container {container} to network {network} as {ip}")
        })
}

/// An endpoint on a network, under `alias` and with a fixed `ip` when given.
pub(super) fn endpoint(alias: Option<String>, ip: Option<Ipv4Addr>) -> EndpointSettings {
    EndpointSettings {
        aliases: alias.map(|a| vec![a]),
        ipam_config: ip.map(|ip| EndpointIpamConfig {
            ipv4_address: Some(ip.to_string()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The address the container publishes 5432/tcp on, if any.
fn published(info: &ContainerInspectResponse) -> Option<SocketAddr> {
    let bindings = info.host_config.as_ref()?.port_bindings.as_ref()?;
    let binding = bindings.get(&port_key())?.as_ref()?.first()?;
    let ip: IpAddr = binding.host_ip.as_ref()?.parse().ok()?;
    Some(SocketAddr::new(
        ip,
        binding.host_port.as_ref()?.parse().ok()?,
    ))
}

/// `docker run -d --name NODE --hostname NODE --network NET [--ip IP] -p LISTEN:5432
/// -v NODE-data:PGDATA -e POSTGRES_PASSWORD=... --stop-signal SIGINT IMAGE`, labelled, with
/// no restart policy: a restart would bring db02 back in the middle of step 7.
fn node_spec(
    config: &ProvisionConfig,
    node: NodeId,
    attachments: &Attachments,
    password: &str,
) -> ContainerCreateBody {
    let name = node.name();
    let listen = listen_of(config, node);
    let binding = PortBinding {
        host_ip: Some(listen.ip().to_string()),
        host_port: Some(listen.port().to_string()),
    };
    let (network, ip) = &attachments.own;
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
            network_mode: Some(network.clone()),
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::NO),
                maximum_retry_count: None,
            }),
            ..Default::default()
        }),
        networking_config: Some(NetworkingConfig {
            endpoints_config: Some(HashMap::from([(
                network.clone(),
                endpoint(Some(name.clone()), *ip),
            )])),
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

    fn single_host() -> Attachments {
        Attachments::new("rideshare-net".to_owned(), None)
    }

    #[test]
    fn a_nodes_settings_choose_its_network_address_and_published_address() {
        let mut config = config();
        config.nodes.insert(
            "db02".into(),
            pgrepl_config::NodeSettings {
                network: Some("wan".into()),
                listen: Some("10.0.0.12:5432".parse().unwrap()),
                ..Default::default()
            },
        );
        let ip = Ipv4Addr::new(172, 30, 0, 12);
        let on_wan = Attachments::new("wan".into(), Some((ip, Some("wan".into()))));
        let spec = node_spec(&config, NodeId::DB02, &on_wan, "pw");
        let host = spec.host_config.unwrap();
        assert_eq!(host.network_mode.as_deref(), Some("wan"));
        assert_eq!(
            host.port_bindings.unwrap()["5432/tcp"],
            Some(vec![PortBinding {
                host_ip: Some("10.0.0.12".into()),
                host_port: Some("5432".into()),
            }])
        );
        let endpoints = spec.networking_config.unwrap().endpoints_config.unwrap();
        let wan = &endpoints["wan"];
        assert_eq!(wan.aliases, Some(vec!["db02".to_owned()]));
        assert_eq!(
            wan.ipam_config.as_ref().unwrap().ipv4_address.as_deref(),
            Some("172.30.0.12")
        );
        let single = node_spec(&config, NodeId::DB01, &single_host(), "pw");
        let endpoints = single.networking_config.unwrap().endpoints_config.unwrap();
        assert_eq!(
            endpoints["rideshare-net"].ipam_config, None,
            "no fixed address"
        );
    }

    #[test]
    fn the_replica_is_published_on_loopback_only_with_no_restart_policy() {
        let spec = node_spec(&config(), NodeId::DB02, &single_host(), "pw");
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
        let spec = node_spec(&config(), NodeId::DB01, &single_host(), "pw");
        let info = ContainerInspectResponse {
            host_config: spec.host_config,
            ..Default::default()
        };
        assert_eq!(published(&info), Some("127.0.0.1:54321".parse().unwrap()));
        assert_eq!(published(&ContainerInspectResponse::default()), None);
    }
}
