//! Nodes whose servers run in a network namespace of their own instead of on this machine's
//! loopback: the test harness's partition rig puts each node on its own "host" this way, so
//! that a firewall inside a node's namespace can cut it off from the proxy or its peers.
//!
//! Only where a server listens and where its network programs run changes: the node's files
//! and Unix socket stay where they are, and the socket (a file, which crosses namespaces) is
//! what psql, pg_isready and pg_ctl keep using.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::process::Command;

/// Where a node's server runs: a namespace made by `ip netns add`, and the node's address
/// there, which other nodes and the proxy reach it at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeNetwork {
    pub netns: String,
    pub ip: Ipv4Addr,
}

/// The nodes that run in a namespace, by node name (`db01`); a node not listed runs on the
/// loopback.
#[derive(Debug, Clone, Default)]
pub(super) struct Networks(HashMap<String, NodeNetwork>);

impl Networks {
    pub fn insert(&mut self, node: &str, network: NodeNetwork) {
        self.0.insert(node.to_owned(), network);
    }

    /// The address `node` listens on and is reached at: its namespace address, else `loopback`.
    pub fn ip(&self, node: &str, loopback: Ipv4Addr) -> Ipv4Addr {
        self.0.get(node).map_or(loopback, |n| n.ip)
    }

    /// `cmd` as it runs on `node`'s network: wrapped in `ip netns exec <netns>` when the node
    /// has a namespace, with the same arguments, environment and directory; else `cmd` itself.
    pub fn on_node(&self, node: &str, cmd: Command) -> Command {
        let Some(network) = self.0.get(node) else {
            return cmd;
        };
        let mut wrapped = Command::new("ip");
        wrapped
            .args(["netns", "exec", &network.netns])
            .arg(cmd.get_program())
            .args(cmd.get_args());
        for (name, value) in cmd.get_envs() {
            match value {
                Some(value) => wrapped.env(name, value),
                None => wrapped.env_remove(name),
            };
        }
        if let Some(dir) = cmd.get_current_dir() {
            wrapped.current_dir(dir);
        }
        wrapped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn described(cmd: &Command) -> (Vec<String>, Vec<(String, Option<String>)>) {
        let argv = std::iter::once(cmd.get_program())
            .chain(cmd.get_args())
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let env = cmd
            .get_envs()
            .map(|(n, v)| {
                let v = v.map(|v| v.to_string_lossy().into_owned());
                (n.to_string_lossy().into_owned(), v)
            })
            .collect();
        (argv, env)
    }

    #[test]
    fn a_node_in_a_namespace_runs_its_programs_there_and_is_reached_at_its_address() {
        let mut networks = Networks::default();
        let ip = Ipv4Addr::new(10, 77, 3, 1);
        networks.insert(
            "db01",
            NodeNetwork {
                netns: "pgr42-0-db01".into(),
                ip,
            },
        );
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--", "pg_ctl", "start"])
            .env("PGPASSFILE", "/srv/db01/.pgpass")
            .env_remove("PGSERVICE")
            .current_dir("/srv/db01");
        let wrapped = networks.on_node("db01", cmd);
        let (argv, env) = described(&wrapped);
        assert_eq!(
            argv,
            [
                "ip",
                "netns",
                "exec",
                "pgr42-0-db01",
                "runuser",
                "-u",
                "postgres",
                "--",
                "pg_ctl",
                "start"
            ]
        );
        assert_eq!(
            env,
            [
                (
                    "PGPASSFILE".to_owned(),
                    Some("/srv/db01/.pgpass".to_owned())
                ),
                ("PGSERVICE".to_owned(), None)
            ]
        );
        assert_eq!(
            wrapped.get_current_dir(),
            Some(std::path::Path::new("/srv/db01"))
        );
        assert_eq!(networks.ip("db01", Ipv4Addr::LOCALHOST), ip);
    }

    #[test]
    fn a_node_without_a_namespace_stays_on_the_loopback() {
        let networks = Networks::default();
        let cmd = networks.on_node("db02", Command::new("pg_ctl"));
        assert_eq!(described(&cmd).0, ["pg_ctl"]);
        assert_eq!(
            networks.ip("db02", Ipv4Addr::LOCALHOST),
            Ipv4Addr::LOCALHOST
        );
    }
}
