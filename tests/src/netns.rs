//! The partition rig: each test node on a "host" of its own, a network namespace, so that a
//! test can cut the network between the proxy and a node, or between two nodes, and heal it.
//!
//! A rig of this process is named `pgr<pid>-<n>`. Each node gets a namespace
//! `pgr<pid>-<n>-dbNN` whose `eth0` is plugged into a bridge, and the bridge lives in a
//! namespace of its own (`pgr<pid>-<n>-sw`, the "switch"), joined to this machine's namespace,
//! where the proxy runs, by a veth pair `pgr<pid>-<n>`. Addresses are `10.77.k.NN/24`, one `k`
//! per rig, the proxy's side at `.254`. The bridge is not in the root namespace because
//! bridged traffic there goes through the host's iptables `FORWARD` chain when
//! `br_netfilter` is loaded, which Docker loads with a `DROP` policy: node-to-node traffic
//! would be dropped, and the rig must not touch the host's firewall to let it through.
//!
//! A cut is an nftables table inside the namespace of each node it isolates, dropping
//! packets from and to the other side, so it looks like a pulled cable (no reset, no ICMP):
//! the host's firewall is never touched. Healing deletes the tables. Everything is removed on
//! drop, and a rig's creation first removes what rigs of processes that died left behind.
//! Needs root, `ip` (iproute2) and `nft` (nftables).

use crate::process::run;
use anyhow::{bail, Context, Result};
use pgrepl_provision::local::NodeNetwork;
use std::fs::File;
use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Every rig's names start with this, then the pid of the process that made it.
const PREFIX: &str = "pgr";
/// Rigs take `10.77.k.0/24` subnets; `k` goes from 1 to 253.
const NET: [u8; 2] = [10, 77];
/// The last octet of the proxy's side (this machine's namespace).
const PROXY_HOST: u8 = 254;
/// Held while a rig picks its subnet and builds, so that two test processes do not take the
/// same one; also while rigs of dead processes are removed.
const LOCK_FILE: &str = "pgrepl-netns.lock";

/// One node's place in the rig.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetNode {
    /// The node's name, `db01`.
    pub name: String,
    pub netns: String,
    pub ip: Ipv4Addr,
}

impl NetNode {
    /// What the local runtime needs to run the node's server there.
    pub fn network(&self) -> NodeNetwork {
        NodeNetwork {
            netns: self.netns.clone(),
            ip: self.ip,
        }
    }
}

/// One side of a cut: the proxy (this machine's namespace), or a node by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side<'a> {
    Proxy,
    Node(&'a str),
}

/// Namespaces, links and addresses of one rig; all removed on drop.
#[derive(Debug)]
pub struct Rig {
    name: String,
    subnet: u8,
    nodes: Vec<NetNode>,
    /// Namespaces made so far, removed on drop even when the rig was left half-built.
    made: Vec<String>,
}

impl Rig {
    /// Makes the switch, then one namespace per node in `nodes` (`db01` gets `.1`, the second
    /// `.2`, ...), each reachable from this machine's namespace and from the others.
    pub fn create(nodes: &[&str]) -> Result<Rig> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "{PREFIX}{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let _lock = lock()?;
        remove_stale()?;
        let mut rig = Rig {
            subnet: free_subnet()?,
            name,
            nodes: Vec::new(),
            made: Vec::new(),
        };
        rig.build(nodes)
            .with_context(|| format!("cannot build the network rig {}", rig.name))?;
        Ok(rig)
    }

    fn build(&mut self, nodes: &[&str]) -> Result<()> {
        let switch = format!("{}-sw", self.name);
        self.add_netns(&switch)?;
        ip(&["-n", &switch, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &switch, "link", "set", "br0", "up"])?;
        let uplink = &self.name;
        ip(&[
            "link", "add", uplink, "type", "veth", "peer", "name", "uplink", "netns", &switch,
        ])?;
        ip(&[
            "-n", &switch, "link", "set", "uplink", "master", "br0", "up",
        ])?;
        let proxy = format!("{}/24", self.proxy_ip());
        ip(&["addr", "add", &proxy, "dev", uplink])?;
        ip(&["link", "set", uplink, "up"])?;
        for (i, node) in nodes.iter().enumerate() {
            let host = u8::try_from(i + 1)
                .ok()
                .filter(|&h| h < PROXY_HOST)
                .context("too many nodes for one /24")?;
            let netns = format!("{}-{node}", self.name);
            self.add_netns(&netns)?;
            ip(&[
                "link", "add", "eth0", "netns", &netns, "type", "veth", "peer", "name", node,
                "netns", &switch,
            ])?;
            ip(&["-n", &switch, "link", "set", node, "master", "br0", "up"])?;
            let addr = self.ip(host);
            ip(&["-n", &netns, "link", "set", "lo", "up"])?;
            ip(&[
                "-n",
                &netns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &netns, "link", "set", "eth0", "up"])?;
            self.nodes.push(NetNode {
                name: (*node).to_owned(),
                netns,
                ip: addr,
            });
        }
        Ok(())
    }

    fn add_netns(&mut self, netns: &str) -> Result<()> {
        ip(&["netns", "add", netns])?;
        self.made.push(netns.to_owned());
        Ok(())
    }

    fn ip(&self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(NET[0], NET[1], self.subnet, host)
    }

    /// The address the proxy's connections to the nodes come from.
    pub fn proxy_ip(&self) -> Ipv4Addr {
        self.ip(PROXY_HOST)
    }

    /// `10.77.k.0/24`: every address of the rig, for pg_hba.conf.
    pub fn subnet(&self) -> String {
        format!("{}/24", self.ip(0))
    }

    pub fn node(&self, name: &str) -> Result<&NetNode> {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .with_context(|| format!("the rig has no node {name}"))
    }

    fn address(&self, side: Side) -> Result<Ipv4Addr> {
        match side {
            Side::Proxy => Ok(self.proxy_ip()),
            Side::Node(name) => Ok(self.node(name)?.ip),
        }
    }

    /// Cuts the network between `a` and `b` until the returned guard is healed or dropped:
    /// each node side drops every packet from and to the other side (the proxy's side has no
    /// firewall of its own: the node's table cuts both directions).
    pub fn cut(&self, a: Side, b: Side) -> Result<Cut<'_>> {
        if a == b {
            bail!("a cut needs two different sides, not {a:?} twice");
        }
        let mut cut = Cut {
            rig: self,
            tables: Vec::new(),
        };
        for (this, other) in [(a, b), (b, a)] {
            let Side::Node(name) = this else { continue };
            let netns = self.node(name)?.netns.clone();
            let peer = self.address(other)?;
            let table = format!("pgrepl_cut_{}", peer.octets()[3]);
            nft(&netns, &cut_rules(&table, peer))?;
            cut.tables.push((netns, table));
        }
        Ok(cut)
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        for netns in self.made.iter().rev() {
            if let Err(e) = remove_netns(netns) {
                eprintln!("cannot remove the network namespace {netns}: {e:#}");
            }
        }
    }
}

/// A network cut made by [`Rig::cut`]; healed when dropped, so a failing test leaves none.
#[derive(Debug)]
pub struct Cut<'r> {
    /// Borrowed so that a cut cannot outlive the namespaces its tables are in.
    rig: &'r Rig,
    /// `(namespace, nft table)` of each firewall the cut added.
    tables: Vec<(String, String)>,
}

impl Cut<'_> {
    /// Removes the cut's firewalls: packets flow again (TCP connections that have not timed
    /// out meanwhile carry on with their next retransmission).
    pub fn heal(mut self) -> Result<()> {
        self.remove()
    }

    fn remove(&mut self) -> Result<()> {
        while let Some((netns, table)) = self.tables.pop() {
            nft(&netns, &format!("delete table inet {table}\n"))
                .with_context(|| format!("cannot heal a cut in the rig {}", self.rig.name))?;
        }
        Ok(())
    }
}

impl Drop for Cut<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.remove() {
            eprintln!("{e:#}");
        }
    }
}

/// An nftables table dropping every packet from and to `peer`, in both directions.
fn cut_rules(table: &str, peer: Ipv4Addr) -> String {
    format!(
        "table inet {table} {{\n\
         \tchain input {{ type filter hook input priority 0; policy accept; ip saddr {peer} drop; }}\n\
         \tchain output {{ type filter hook output priority 0; policy accept; ip daddr {peer} drop; }}\n\
         }}\n"
    )
}

fn ip(args: &[&str]) -> Result<String> {
    run(Command::new("ip").args(args), None)
}

/// Runs the nft `script` in `netns`.
fn nft(netns: &str, script: &str) -> Result<()> {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", netns, "nft", "-f", "-"]);
    run(&mut cmd, Some(script)).map(drop)
}

/// Ends what still runs in `netns` (servers a test could not stop) and removes it; its links
/// go with it.
fn remove_netns(netns: &str) -> Result<()> {
    for pid in ip(&["netns", "pids", netns])?.split_whitespace() {
        let pid: libc::pid_t = pid.parse().context("ip netns pids")?;
        // SAFETY: kill has no memory-safety preconditions; the pid was listed in the
        // namespace, which only this harness's processes use.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    ip(&["netns", "del", netns]).map(drop)
}

/// Exclusive use of the rigs' names and subnets, across processes, until dropped.
fn lock() -> Result<File> {
    let path = std::env::temp_dir().join(LOCK_FILE);
    let file = File::create(&path).with_context(|| format!("cannot open {}", path.display()))?;
    file.lock()
        .with_context(|| format!("cannot lock {}", path.display()))?;
    Ok(file)
}

/// The pid in a rig's name (`pgr4242-0-db01` -> 4242), if it is one.
fn owner(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(PREFIX)?;
    let (pid, _) = rest.split_once('-')?;
    pid.parse().ok()
}

/// Whether a rig name belongs to a process that no longer runs.
fn is_stale(name: &str) -> bool {
    owner(name).is_some_and(|pid| {
        pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists()
    })
}

/// Removes the namespaces, and uplinks left without them, of rigs whose process died.
fn remove_stale() -> Result<()> {
    for line in ip(&["netns", "list"])?.lines() {
        let Some(netns) = line.split_whitespace().next() else {
            continue;
        };
        if is_stale(netns) {
            remove_netns(netns)?;
        }
    }
    for line in ip(&["-o", "link", "show"])?.lines() {
        // "12: pgr4242-0@if3: <...": the name, without the peer after '@'.
        let Some(link) = line.split(": ").nth(1) else {
            continue;
        };
        let link = link.split('@').next().unwrap_or(link);
        if is_stale(link) {
            ip(&["link", "del", link])?;
        }
    }
    Ok(())
}

/// The first `k` whose `10.77.k.0/24` no address of this machine's namespace is in.
fn free_subnet() -> Result<u8> {
    let addresses = ip(&["-4", "-o", "addr", "show"])?;
    let taken = |k: u8| {
        let net = format!(" {}.{}.{k}.", NET[0], NET[1]);
        addresses.lines().any(|l| l.contains(&format!("inet{net}")))
    };
    match (1..PROXY_HOST).find(|&k| !taken(k)) {
        Some(k) => Ok(k),
        None => bail!("every 10.77.k.0/24 subnet is taken"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rig_names_carry_the_pid_of_their_process() {
        assert_eq!(owner("pgr4242-0-db01"), Some(4242));
        assert_eq!(owner("pgr4242-13"), Some(4242));
        assert_eq!(owner("pgr-db01"), None);
        assert_eq!(owner("docker0"), None);
        assert!(!is_stale(&format!("{PREFIX}{}-0-sw", std::process::id())));
        assert!(!is_stale("eth0"));
    }

    #[test]
    fn a_cut_drops_both_directions_for_one_peer() {
        let rules = cut_rules("pgrepl_cut_254", Ipv4Addr::new(10, 77, 3, 254));
        assert!(rules.starts_with("table inet pgrepl_cut_254 {"));
        assert!(rules.contains("hook input priority 0; policy accept; ip saddr 10.77.3.254 drop;"));
        assert!(rules.contains("hook output priority 0; policy accept; ip daddr 10.77.3.254 drop;"));
    }
}
