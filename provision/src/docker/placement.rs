//! Where each node is when they are spread over several hosts: its engine, its network, the
//! address the proxy reaches it at and the one the other nodes reach it at, from `[provision]`
//! and its `[provision.nodes.dbNN]` settings. Pure, so the rules are tested as tables; with no
//! per-node settings every answer is the single-host one.

use std::net::{Ipv4Addr, SocketAddr};

use anyhow::{bail, Result};
use pgrepl_config::ProvisionConfig;

use crate::runtime::NodeId;

/// bollard's default when DOCKER_HOST is unset.
pub(super) const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";

/// The engine the nodes without a `docker_host` run on, and what chose it, for messages.
pub(super) fn default_engine(docker_host_env: Option<String>) -> (String, &'static str) {
    match docker_host_env {
        Some(host) => (host, "from DOCKER_HOST"),
        None => (
            DEFAULT_HOST.to_owned(),
            "the default; DOCKER_HOST is not set",
        ),
    }
}

/// The engine `node` runs on: its `docker_host`, else `default`.
pub(super) fn engine_of(config: &ProvisionConfig, node: NodeId, default: &str) -> String {
    config
        .node(&node.name())
        .docker_host
        .unwrap_or_else(|| default.to_owned())
}

/// The nodes whose engines must be reached: those `provision` builds, and every one with
/// settings (a node provisioned earlier with more replicas, which teardown must find).
pub(super) fn nodes_of(config: &ProvisionConfig) -> Vec<NodeId> {
    let mut nodes = NodeId::first(config.replicas);
    nodes.extend(config.nodes.keys().filter_map(|name| NodeId::parse(name)));
    nodes.sort();
    nodes.dedup();
    nodes
}

/// The Docker network `node` joins.
pub(super) fn network_of(config: &ProvisionConfig, node: NodeId) -> String {
    config
        .node(&node.name())
        .network
        .unwrap_or_else(|| config.network.clone())
}

/// Where `node`'s server is published for the proxy: its `listen`, else 127.0.0.1 and its
/// port from `primary_port`/`replica_port`.
pub(super) fn listen_of(config: &ProvisionConfig, node: NodeId) -> SocketAddr {
    config.node(&node.name()).listen.unwrap_or_else(|| {
        SocketAddr::from((
            Ipv4Addr::LOCALHOST,
            node.port(config.primary_port, config.replica_port),
        ))
    })
}

/// Where the other nodes reach `node`, when set rather than found on its network.
pub(super) fn peer_address_of(config: &ProvisionConfig, node: NodeId) -> Option<Ipv4Addr> {
    config.node(&node.name()).peer_address
}

/// Nodes on different networks cannot find each other by name (the single-host way): each
/// of them needs a `peer_address`. The same network name on several engines may be one
/// overlay network, so it is allowed.
pub(super) fn check_reachable(config: &ProvisionConfig) -> Result<()> {
    let nodes = NodeId::first(config.replicas);
    let first = network_of(config, nodes[0]);
    if nodes.iter().all(|&n| network_of(config, n) == first) {
        return Ok(());
    }
    let missing: Vec<String> = nodes
        .iter()
        .filter(|&&n| peer_address_of(config, n).is_none())
        .map(|n| format!("[provision.nodes.{n}] peer_address"))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let networks: Vec<String> = nodes
        .iter()
        .map(|&n| format!("{n} on {}", network_of(config, n)))
        .collect();
    bail!(
        "the nodes are on different Docker networks ({}), so they cannot reach each other by \
         name: set {} (the address the other nodes reach it at)",
        networks.join(", "),
        missing.join(", ")
    )
}

/// The networks a node's containers (the node, and its one-shots while it is stopped) are
/// on: its own network, and the one its `peer_address` belongs to with that address fixed
/// (a shared network across hosts, such as an overlay or a routed bridge). A `peer_address`
/// on no network of the engine is the host's own, reached through the published port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Attachments {
    /// Its own network, and its address there when the peer address is on it.
    pub own: (String, Option<Ipv4Addr>),
    /// Another network the peer address is on, joined with that address.
    pub peer: Option<(String, Ipv4Addr)>,
}

impl Attachments {
    /// `own` is the node's network, `peer` its peer address with the engine's network that
    /// holds it, if any.
    pub fn new(own: String, peer: Option<(Ipv4Addr, Option<String>)>) -> Attachments {
        match peer {
            Some((ip, Some(network))) if network == own => Attachments {
                own: (own, Some(ip)),
                peer: None,
            },
            Some((ip, Some(network))) => Attachments {
                own: (own, None),
                peer: Some((network, ip)),
            },
            _ => Attachments {
                own: (own, None),
                peer: None,
            },
        }
    }
}

/// Whether `ip` is in `cidr` (`172.30.0.0/24`); false for anything that is not an IPv4
/// subnet.
pub(super) fn subnet_contains(cidr: &str, ip: Ipv4Addr) -> bool {
    let Some((base, bits)) = cidr.split_once('/') else {
        return false;
    };
    let (Ok(base), Ok(bits)) = (base.parse::<Ipv4Addr>(), bits.parse::<u32>()) else {
        return false;
    };
    if bits > 32 {
        return false;
    }
    let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
    u32::from(base) & mask == u32::from(ip) & mask
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docker::container::tests::config;
    use pgrepl_config::NodeSettings;

    fn with(settings: &[(&str, NodeSettings)]) -> ProvisionConfig {
        let mut config = config();
        for (name, node) in settings {
            config.nodes.insert((*name).to_owned(), node.clone());
        }
        config
    }

    fn on_network(network: &str, peer: Option<[u8; 4]>) -> NodeSettings {
        NodeSettings {
            network: Some(network.to_owned()),
            peer_address: peer.map(Ipv4Addr::from),
            ..NodeSettings::default()
        }
    }

    #[test]
    fn without_settings_every_node_is_where_a_single_host_puts_it() {
        let config = config();
        for node in [NodeId::DB01, NodeId::DB02] {
            assert_eq!(engine_of(&config, node, DEFAULT_HOST), DEFAULT_HOST);
            assert_eq!(network_of(&config, node), "rideshare-net");
            assert_eq!(peer_address_of(&config, node), None);
        }
        assert_eq!(
            listen_of(&config, NodeId::DB01).to_string(),
            "127.0.0.1:54321"
        );
        assert_eq!(
            listen_of(&config, NodeId::DB02).to_string(),
            "127.0.0.1:54322"
        );
        assert_eq!(nodes_of(&config), [NodeId::DB01, NodeId::DB02]);
        assert!(check_reachable(&config).is_ok());
    }

    #[test]
    fn a_nodes_settings_override_only_that_node() {
        let db02 = NodeSettings {
            docker_host: Some("tcp://10.0.0.12:2376".into()),
            listen: Some("10.0.0.12:5432".parse().unwrap()),
            ..on_network("db02-net", Some([10, 0, 0, 12]))
        };
        let config = with(&[("db02", db02), ("db05", on_network("x", None))]);
        assert_eq!(
            engine_of(&config, NodeId::DB02, DEFAULT_HOST),
            "tcp://10.0.0.12:2376"
        );
        assert_eq!(engine_of(&config, NodeId::DB01, "unix:///x"), "unix:///x");
        assert_eq!(network_of(&config, NodeId::DB02), "db02-net");
        assert_eq!(
            listen_of(&config, NodeId::DB02).to_string(),
            "10.0.0.12:5432"
        );
        assert_eq!(
            listen_of(&config, NodeId::DB01).to_string(),
            "127.0.0.1:54321"
        );
        let db05 = NodeId::new(5).unwrap();
        assert_eq!(
            nodes_of(&config),
            [NodeId::DB01, NodeId::DB02, db05],
            "a configured node's engine is reached too"
        );
        assert_eq!(
            default_engine(None),
            (
                DEFAULT_HOST.to_owned(),
                "the default; DOCKER_HOST is not set"
            )
        );
        assert_eq!(
            default_engine(Some("tcp://h:2375".into())).0,
            "tcp://h:2375"
        );
    }

    #[test]
    fn nodes_on_different_networks_need_peer_addresses() {
        // (db01's settings, db02's settings, the peer_address keys the error asks for)
        let cases: [(NodeSettings, NodeSettings, Option<&str>); 5] = [
            (
                on_network("a", Some([10, 0, 0, 11])),
                on_network("b", Some([10, 0, 0, 12])),
                None,
            ),
            (
                on_network("a", None),
                on_network("b", Some([10, 0, 0, 12])),
                Some("set [provision.nodes.db01] peer_address ("),
            ),
            (
                NodeSettings::default(),
                on_network("b", None),
                Some("[provision.nodes.db01] peer_address, [provision.nodes.db02] peer_address"),
            ),
            // The same name on two engines may be one overlay network.
            (
                NodeSettings {
                    docker_host: Some("tcp://a:2376".into()),
                    ..NodeSettings::default()
                },
                NodeSettings::default(),
                None,
            ),
            (
                on_network("rideshare-net", None),
                NodeSettings::default(),
                None,
            ),
        ];
        for (i, (db01, db02, wanted)) in cases.into_iter().enumerate() {
            let result = check_reachable(&with(&[("db01", db01), ("db02", db02)]));
            match wanted {
                None => assert!(result.is_ok(), "case {i}: {result:?}"),
                Some(text) => {
                    let err = result.unwrap_err().to_string();
                    assert!(err.contains(text), "case {i}: {err}");
                    assert!(err.contains("db01 on "), "case {i}: {err}");
                }
            }
        }
    }

    #[test]
    fn the_peer_address_is_fixed_on_the_network_that_holds_it() {
        let ip = Ipv4Addr::new(172, 30, 0, 12);
        // (peer address and the network holding it, the attachments)
        let cases = [
            (None, ("own", None), None),
            (Some((ip, None)), ("own", None), None),
            (Some((ip, Some("own"))), ("own", Some(ip)), None),
            (Some((ip, Some("wan"))), ("own", None), Some(("wan", ip))),
        ];
        for (peer, own, joined) in cases {
            let peer = peer.map(|(ip, net): (Ipv4Addr, Option<&str>)| (ip, net.map(str::to_owned)));
            let got = Attachments::new("own".to_owned(), peer.clone());
            let want = Attachments {
                own: (own.0.to_owned(), own.1),
                peer: joined.map(|(n, ip)| (n.to_owned(), ip)),
            };
            assert_eq!(got, want, "{peer:?}");
        }
    }

    #[test]
    fn subnets_contain_their_addresses_only() {
        let ip = Ipv4Addr::new(172, 30, 0, 12);
        for (cidr, inside) in [
            ("172.30.0.0/24", true),
            ("172.30.0.0/16", true),
            ("172.30.1.0/24", false),
            ("0.0.0.0/0", true),
            ("172.30.0.12/32", true),
            ("172.30.0.13/32", false),
            ("fd00::/64", false),
            ("172.30.0.0/33", false),
            ("garbage", false),
        ] {
            assert_eq!(subnet_contains(cidr, ip), inside, "{cidr}");
        }
    }
}
