//! What the tutorial's steps need from wherever the two servers run: the small interface the
//! Docker and local runtimes implement, so the steps are written once.

use std::fmt;
use std::net::Ipv4Addr;

use anyhow::Result;

use crate::tutorial::{PRIMARY, REPLICA};

/// One of the tutorial's two servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Node {
    /// `db01`, the primary.
    Primary,
    /// `db02`, the streaming replica.
    Replica,
}

impl Node {
    /// The container (and `cluster_name`) the tutorial gives it.
    pub fn name(self) -> &'static str {
        match self {
            Node::Primary => PRIMARY,
            Node::Replica => REPLICA,
        }
    }
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
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

/// Where the two servers run. Every method names the node it acts on; paths and commands are
/// the tutorial's, mapped by the runtime.
#[allow(async_fn_in_trait)] // used through generics only, never as `dyn`, so no Send bound is needed
pub trait Runtime {
    /// Where it runs, for messages: "docker (unix:///var/run/docker.sock)", "local (/srv/pg)".
    fn describe(&self) -> String;

    /// Whether `node` exists and runs.
    async fn state(&self, node: Node) -> Result<NodeState>;

    /// Steps 1 and 2: creates `node` with an initialized data directory if it is missing, and
    /// starts it; returns once it accepts connections.
    async fn create(&self, node: Node) -> Result<()>;

    /// Starts a stopped node and waits until it accepts connections (a standby: until it
    /// accepts read-only ones).
    async fn start(&self, node: Node) -> Result<()>;

    /// Stops a running node and waits until its server has really exited.
    async fn stop(&self, node: Node) -> Result<()>;

    /// Runs `argv` in the running `node` (a PostgreSQL client program such as `psql`, which
    /// reaches the node's own server by default), capturing its output and exit code.
    async fn exec(&self, node: Node, argv: &[&str]) -> Result<ExecOutput>;

    /// The contents of `file` in `node`, or `None` if it does not exist. Works while the node
    /// is stopped too.
    async fn read_file(&self, node: Node, file: NodeFile) -> Result<Option<Vec<u8>>>;

    /// Writes `file` in `node`, owned by the server's user (group root) with permission `mode`.
    async fn write_file(
        &self,
        node: Node,
        file: NodeFile,
        contents: &[u8],
        mode: u32,
    ) -> Result<()>;

    /// The path of `file` as commands run by [`Runtime::exec`] in `node` see it.
    fn path(&self, node: Node, file: NodeFile) -> String;

    /// The address `node`'s connections to the other node come from (the pg_hba.conf /32).
    async fn address(&self, node: Node) -> Result<Ipv4Addr>;

    /// How the other node connects to `node` (the base backup's `--host`).
    fn peer_endpoint(&self, node: Node) -> Endpoint;

    /// How programs on this machine, the proxy among them, connect to `node`.
    fn host_endpoint(&self, node: Node) -> Endpoint;

    /// Step 7: runs the `sh` script as the server's user while `node`'s server is stopped, with
    /// `PGDATA` set to its data directory and its `.pgpass` in effect, able to reach the other
    /// node at [`Runtime::peer_endpoint`]. Returns the script's output; a non-zero exit is not
    /// an error here.
    async fn run_offline(&self, node: Node, script: &str) -> Result<ExecOutput>;

    /// Removes both nodes and everything they own; returns what it removed, one item per line.
    async fn teardown(&self) -> Result<Vec<String>>;
}
