//! A cluster whose nodes each run in a network namespace of the partition rig ([`crate::netns`]),
//! with a proxy in front of it in this machine's namespace: what the partition and node-fault
//! suites break and heal.

use crate::cluster::OwnCluster;
use crate::endpoint::get_json;
use crate::netns::Rig;
use crate::proxy::ProxyProcess;
use crate::roles::{APP, DATABASE};
use crate::suite::{free_addr, proxy_config_with};
use pgrepl_provision::runtime::NodeId;
use std::time::Duration;

/// The monitor samples every 100 ms, as in `primary_down.rs`; a sample not answered within
/// 1 s (the floor) counts as down.
const HEALTH: &str = "\n[health]\ninterval = \"100ms\"\n";
/// `[proxy] server_tcp_user_timeout`: a statement sent on a server connection a cut silences
/// fails after this (the default, 10 s, would outlast the suites' cuts).
pub const USER_TIMEOUT: Duration = Duration::from_secs(2);

/// A rigged cluster and its proxy. Fields drop in order: the proxy, then the servers, then
/// the namespaces they ran in.
pub struct Rigged {
    pub proxy: ProxyProcess,
    pub cluster: OwnCluster,
    pub rig: Rig,
}

impl Rigged {
    /// Builds a rig of db01 and `replicas` replicas and the cluster in it, creates table `w`
    /// (`id bigint`) directly on the primary (so the proxy holds no connection to it but its
    /// monitor's) and starts a proxy with every replica, [`HEALTH`], [`USER_TIMEOUT`] and
    /// `toml` added.
    pub fn start(name: &str, replicas: u8, toml: &str) -> Rigged {
        let names: Vec<String> = NodeId::first(replicas)
            .into_iter()
            .map(NodeId::name)
            .collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let rig = Rig::create(&names).unwrap();
        let cluster = OwnCluster::start_replicas(name, replicas, Some(&rig), &[]).unwrap();
        cluster
            .primary
            .psql(APP.name, DATABASE, "CREATE TABLE w (id bigint);")
            .unwrap();
        cluster.wait_replica_caught_up().unwrap();
        let addr = free_addr();
        let user_timeout = format!(
            "server_tcp_user_timeout = \"{}ms\"",
            USER_TIMEOUT.as_millis()
        );
        let config = proxy_config_with(&cluster, addr, &user_timeout) + HEALTH + toml;
        let proxy = ProxyProcess::start(&config, addr).unwrap();
        Rigged {
            proxy,
            cluster,
            rig,
        }
    }

    /// A backend's entry in the proxy's `/status`.
    pub fn status(&self, name: &str) -> serde_json::Value {
        let status = get_json(self.proxy.endpoint(), "/status");
        let backends = status["backends"].as_array().unwrap().clone();
        backends
            .into_iter()
            .find(|b| b["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in /status: {status}"))
    }
}
