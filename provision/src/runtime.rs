//! What the tutorial's steps need from wherever the two servers run: the small interface the
//! Docker and local runtimes implement, so the steps are written once.

use std::fmt;
use std::net::Ipv4Addr;

use anyhow::{bail, Result};

/// One server, named `db01`, `db02`, ... as the tutorial names its two: `db01` is the first
/// primary, the replicas are `db02` up to `db(N+1)`. After a failover any of them may be the
/// primary, so the id says which server, never which role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(u8);

impl NodeId {
    /// The tutorial's primary.
    pub const DB01: NodeId = NodeId(1);
    /// The tutorial's replica.
    pub const DB02: NodeId = NodeId(2);
    /// Names have two digits: db99 is the last.
    const LAST: u8 = 99;

    /// `dbNN` for `number` NN from 1 to 99.
    pub const fn new(number: u8) -> Option<NodeId> {
        if number >= 1 && number <= Self::LAST {
            Some(NodeId(number))
        } else {
            None
        }
    }

    /// The NN of `dbNN`.
    pub fn number(self) -> u8 {
        self.0
    }

    /// The container (and `cluster_name`): `db01`, `db02`, ...
    pub fn name(self) -> String {
        self.to_string()
    }

    /// The node named `name` (`db07`), if it is one.
    pub fn parse(name: &str) -> Option<NodeId> {
        let digits = name.strip_prefix("db")?;
        if digits.len() != 2 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        NodeId::new(digits.parse().ok()?)
    }

    /// db01 and the `replicas` replicas after it.
    pub fn first(replicas: u8) -> Vec<NodeId> {
        (1..=replicas.saturating_add(1).min(Self::LAST))
            .map(NodeId)
            .collect()
    }

    /// The port this node listens on when db01 uses `primary_port` and db02 `replica_port`:
    /// the replicas take the ports after db02's, in order ([`check_ports`] says whether they
    /// fit; past 65535 this saturates).
    pub fn port(self, primary_port: u16, replica_port: u16) -> u16 {
        match self.0 {
            1 => primary_port,
            n => replica_port.saturating_add(u16::from(n) - 2),
        }
    }
}

/// Whether db01 and `replicas` replicas get distinct ports from `primary_port` and
/// `replica_port` (see [`NodeId::port`]).
pub fn check_ports(primary_port: u16, replica_port: u16, replicas: u8) -> Result<()> {
    let last = u32::from(replica_port) + u32::from(replicas) - 1;
    if last > u32::from(u16::MAX) {
        bail!(
            "{replicas} replicas need ports {replica_port} to {last} ([provision] replica_port \
             and up), past 65535: choose a lower replica_port"
        );
    }
    if (u32::from(replica_port)..=last).contains(&u32::from(primary_port)) {
        bail!(
            "[provision] primary_port {primary_port} is among the replicas' ports \
             {replica_port}..{last} (replica_port and up, one per replica): choose another"
        );
    }
    Ok(())
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "db{:02}", self.0)
    }
}

/// A file the steps read or write in a node, named as the tutorial names it; each runtime
/// maps it to a real path (inside the container, or under the local data directory).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeFile {
    /// A file in the data directory (`/var/lib/postgresql/data/<name>` in the image).
    Data(&'static str),
    /// The postgres user's password file (`/var/lib/postgresql/.pgpass` in the image).
    Pgpass,
    /// A script the steps upload and then run (the tutorial copies `replication_user.sql` to `/`).
    Script(&'static str),
}

/// What a command run in a node printed, and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    pub code: i64,
    pub stdout: String,
    pub stderr: String,
}

impl ExecOutput {
    pub fn success(&self) -> bool {
        self.code == 0
    }

    /// stderr, or stdout when stderr is empty, trimmed: what to show when the command failed.
    pub fn message(&self) -> &str {
        let err = self.stderr.trim();
        if err.is_empty() {
            self.stdout.trim()
        } else {
            err
        }
    }
}

/// A host and port to connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// Whether a node exists and runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    /// Nothing of it exists yet.
    Missing,
    /// It exists (container or data directory) but its server does not run.
    Stopped,
    Running,
}

/// Where the servers run. Every method names the node it acts on; paths and commands are
/// the tutorial's, mapped by the runtime.
#[allow(async_fn_in_trait)] // used through generics only, never as `dyn`, so no Send bound is needed
pub trait Runtime {
    /// Where it runs, for messages: "docker (unix:///var/run/docker.sock)", "local (/srv/pg)".
    fn describe(&self) -> String;

    /// Whether `node` exists and runs.
    async fn state(&self, node: NodeId) -> Result<NodeState>;

    /// Steps 1 and 2: creates `node` with an initialized data directory if it is missing, and
    /// starts it; returns once it accepts connections.
    async fn create(&self, node: NodeId) -> Result<()>;

    /// Starts a stopped node and waits until it accepts connections (a standby: until it
    /// accepts read-only ones).
    async fn start(&self, node: NodeId) -> Result<()>;

    /// Stops a running node and waits until its server has really exited.
    async fn stop(&self, node: NodeId) -> Result<()>;

    /// Stops `node` in immediate mode (no shutdown checkpoint; the next start runs crash
    /// recovery), as `failover` fences a primary that must stop writing at once.
    async fn stop_immediate(&self, node: NodeId) -> Result<()>;

    /// Kills `node`'s server and every process of it with SIGKILL, as a crash would, and
    /// waits until they are gone; for tests of what happens when a primary dies.
    async fn kill(&self, node: NodeId) -> Result<()>;

    /// Runs `argv` in the running `node` (a PostgreSQL client program such as `psql`, which
    /// reaches the node's own server by default), capturing its output and exit code.
    async fn exec(&self, node: NodeId, argv: &[&str]) -> Result<ExecOutput>;

    /// The contents of `file` in `node`, or `None` if it does not exist. Works while the node
    /// is stopped too.
    async fn read_file(&self, node: NodeId, file: NodeFile) -> Result<Option<Vec<u8>>>;

    /// Writes `file` in `node`, owned by the server's user (group root) with permission `mode`.
    async fn write_file(
        &self,
        node: NodeId,
        file: NodeFile,
        contents: &[u8],
        mode: u32,
    ) -> Result<()>;

    /// The path of `file` as commands run by [`Runtime::exec`] in `node` see it.
    fn path(&self, node: NodeId, file: NodeFile) -> String;

    /// The address `node`'s connections to the other node come from (the pg_hba.conf /32).
    async fn address(&self, node: NodeId) -> Result<Ipv4Addr>;

    /// How the other node connects to `node` (the base backup's `--host`).
    fn peer_endpoint(&self, node: NodeId) -> Endpoint;

    /// How programs on this machine, the proxy among them, connect to `node`.
    fn host_endpoint(&self, node: NodeId) -> Endpoint;

    /// Step 7: runs the `sh` script as the server's user while `node`'s server is stopped, with
    /// `PGDATA` set to its data directory and its `.pgpass` in effect, able to reach the other
    /// node at [`Runtime::peer_endpoint`]. Returns the script's output; a non-zero exit is not
    /// an error here.
    async fn run_offline(&self, node: NodeId, script: &str) -> Result<ExecOutput>;

    /// The nodes that exist (a data directory, a container or a volume), in order: what
    /// `status`, `verify` and `teardown` cover, however many replicas were provisioned.
    async fn nodes(&self) -> Result<Vec<NodeId>>;

    /// Removes every node and everything they own; returns what it removed, one item per line.
    async fn teardown(&self) -> Result<Vec<String>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_have_two_digits_and_parse_back() {
        assert_eq!(NodeId::DB01.name(), "db01");
        assert_eq!(NodeId::new(12).unwrap().to_string(), "db12");
        for (name, number) in [("db01", Some(1)), ("db02", Some(2)), ("db99", Some(99))] {
            assert_eq!(NodeId::parse(name).map(NodeId::number), number, "{name}");
        }
        for name in ["db00", "db1", "db100", "xb01", "db0a", "db+1", "db01-data"] {
            assert_eq!(NodeId::parse(name), None, "{name}");
        }
        assert_eq!(NodeId::new(0), None);
        assert_eq!(NodeId::new(100), None);
    }

    #[test]
    fn the_first_nodes_are_db01_then_the_replicas() {
        let names: Vec<String> = NodeId::first(3).into_iter().map(NodeId::name).collect();
        assert_eq!(names, ["db01", "db02", "db03", "db04"]);
        assert_eq!(NodeId::first(1), [NodeId::DB01, NodeId::DB02]);
    }

    #[test]
    fn replicas_take_the_ports_after_db02s() {
        let port = |n| NodeId::new(n).unwrap().port(54321, 54322);
        assert_eq!(
            [port(1), port(2), port(3), port(4)],
            [54321, 54322, 54323, 54324]
        );
        assert!(check_ports(54321, 54322, 3).is_ok());
        assert!(check_ports(54321, 54322, 98).is_ok());
        assert!(
            check_ports(54324, 54322, 3).is_err(),
            "db04 would share db01's port"
        );
        assert!(check_ports(54320, 65535, 1).is_ok());
        assert!(
            check_ports(54320, 65535, 2).is_err(),
            "db03 would be on 65536"
        );
    }
}
