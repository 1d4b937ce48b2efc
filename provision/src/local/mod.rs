//! The local runtime: the servers as processes of the installed PostgreSQL (initdb,
//! pg_ctl, pg_basebackup, psql), each node in its own directory under a base directory.
//!
//! `programs` finds PostgreSQL and runs server programs as `postgres` when we are root,
//! `layout` says where each node's files are, `pg_ctl` builds the server command lines,
//! `network` puts a node in a network namespace (for the test harness's partitions),
//! `command` runs programs, `files` reads and writes node files, `process` kills a server,
//! `log` and `shell` are small
//! helpers the test harness shares.

mod command;
mod files;
pub mod layout;
pub mod log;
mod network;
mod pg_ctl;
mod process;
pub mod programs;

use std::ffi::OsString;
use std::net::Ipv4Addr;
use std::process::Command;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use pgrepl_config::ProvisionConfig;

use crate::psql::wait_until;
use crate::runtime::{Endpoint, ExecOutput, NodeFile, NodeId, NodeState, Runtime};
use crate::tutorial::password::random_password;
use command::{checked, output};
use layout::Layout;
use network::Networks;
pub use network::NodeNetwork;
use pg_ctl::Server;
pub use programs::{pg_bin_dir, Programs};

/// How long a started server may take to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Server log lines shown when a start fails.
const LOG_TAIL_LINES: usize = 20;
/// initdb reads the superuser's password from this file in the node directory; it is
/// removed right after.
const PWFILE: &str = "initdb.pwfile";
/// Every server listens here only, unless it runs in a network namespace of its own.
const LOOPBACK: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// db01, db02, ... as local processes.
#[derive(Debug, Clone)]
pub struct LocalRuntime {
    layout: Layout,
    programs: Programs,
    primary_port: u16,
    replica_port: u16,
    /// Extra `-c name=value` server settings given at every start.
    settings: Vec<(String, String)>,
    /// Nodes whose servers run in a network namespace instead of on the loopback.
    networks: Networks,
}

impl LocalRuntime {
    /// The nodes under `config.data_dir` (made absolute) on `config.primary_port` and
    /// `config.replica_port` and up; fails when no installed PostgreSQL is found.
    pub fn new(config: &ProvisionConfig) -> Result<LocalRuntime> {
        let base = std::path::absolute(&config.data_dir)
            .with_context(|| format!("cannot resolve {}", config.data_dir.display()))?;
        Ok(LocalRuntime {
            layout: Layout::new(base),
            programs: Programs::locate()?,
            primary_port: config.primary_port,
            replica_port: config.replica_port,
            settings: Vec::new(),
            networks: Networks::default(),
        })
    }

    /// Adds server settings every start passes as `-c name=value` (the test harness trades
    /// durability for speed this way).
    pub fn with_settings(mut self, settings: &[(&str, &str)]) -> LocalRuntime {
        let owned = settings.iter().map(|&(n, v)| (n.to_owned(), v.to_owned()));
        self.settings.extend(owned);
        self
    }

    /// Runs `node`'s server, and its offline programs (the base backup), in the network
    /// namespace `network.netns`, listening on `network.ip` (and its Unix socket) instead of
    /// 127.0.0.1: the other node and the proxy reach it there, and pg_hba.conf sees its
    /// connections come from there. The namespace must exist and reach the other nodes.
    pub fn with_node_network(mut self, node: NodeId, network: NodeNetwork) -> LocalRuntime {
        self.networks.insert(&node.name(), network);
        self
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn programs(&self) -> &Programs {
        &self.programs
    }

    /// The port `node` listens on (its address and its Unix socket): `primary_port` for db01,
    /// `replica_port` for db02, the ports after it for the other replicas.
    pub fn port(&self, node: NodeId) -> u16 {
        node.port(self.primary_port, self.replica_port)
    }

    /// Where `node` listens and is reached: 127.0.0.1, or its namespace address.
    fn ip(&self, node: NodeId) -> Ipv4Addr {
        self.networks.ip(&node.name(), LOOPBACK)
    }

    fn server(&self, node: NodeId) -> Server<'_> {
        Server {
            node,
            port: self.port(node),
            listen: self.ip(node),
            layout: &self.layout,
            settings: &self.settings,
        }
    }

    /// A server program run as the server user in the node's directory, which that user
    /// may enter even when it may not enter ours.
    fn server_program(&self, node: NodeId, program: &str) -> Command {
        let mut cmd = self.programs.server(program);
        cmd.current_dir(self.layout.node_dir(node));
        cmd
    }

    fn pg_ctl(&self, node: NodeId, args: Vec<OsString>) -> Command {
        let mut cmd = self.server_program(node, "pg_ctl");
        cmd.args(args);
        cmd
    }

    /// The node directory, owned by the server user, and an initialized data directory in
    /// it, with a random superuser password like the image's POSTGRES_PASSWORD (never shown).
    async fn init(&self, node: NodeId) -> Result<()> {
        let dir = self.layout.node_dir(node);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        self.programs.hand_over(&dir)?;
        let pwfile = dir.join(PWFILE);
        let password = random_password().context("cannot get random bytes for a password")?;
        files::write(
            &self.programs,
            &pwfile,
            format!("{password}\n").as_bytes(),
            0o600,
        )
        .await?;
        let mut initdb = self.server_program(node, "initdb");
        initdb.args(self.server(node).initdb_args(&pwfile));
        let result = checked(initdb).await;
        std::fs::remove_file(&pwfile)
            .with_context(|| format!("cannot remove {}", pwfile.display()))?;
        result
    }

    /// Waits until `node` accepts connections (pg_isready exits 0; a standby does once it
    /// accepts read-only ones).
    async fn wait_ready(&self, node: NodeId) -> Result<()> {
        let what = format!("{node} to accept connections");
        wait_until(&what, READY_TIMEOUT, || async {
            let mut cmd = self.programs.client("pg_isready");
            cmd.arg("-q")
                .arg("-h")
                .arg(self.layout.node_dir(node))
                .args(["-p", &self.port(node).to_string()]);
            Ok(output(cmd).await?.success())
        })
        .await
    }

    /// `e` with the end of `node`'s server log, where the server says why it did not start.
    fn with_log(&self, node: NodeId, e: anyhow::Error) -> anyhow::Error {
        let log = self.layout.log_file(node);
        anyhow!(
            "{e:#}\n--- last lines of {}:\n{}",
            log.display(),
            log::tail(&log, LOG_TAIL_LINES)
        )
    }
}

impl Runtime for LocalRuntime {
    fn describe(&self) -> String {
        format!("local ({})", self.layout.base().display())
    }

    /// Missing until initdb has made the data directory; a data directory emptied by step 7
    /// is Stopped, as the tutorial's stopped container is.
    async fn state(&self, node: NodeId) -> Result<NodeState> {
        if !self.layout.data_dir(node).is_dir() {
            return Ok(NodeState::Missing);
        }
        let out = output(self.pg_ctl(node, self.server(node).status_args())).await?;
        match out.code {
            0 => Ok(NodeState::Running),
            // 3: no server running; 4: the directory holds no cluster (yet).
            3 | 4 => Ok(NodeState::Stopped),
            code => bail!(
                "pg_ctl status for {node} failed (exit {code}): {}",
                out.message()
            ),
        }
    }

    async fn create(&self, node: NodeId) -> Result<()> {
        let state = self.state(node).await?;
        if state == NodeState::Missing {
            self.init(node).await?;
        }
        if state != NodeState::Running {
            self.start(node).await?;
        }
        Ok(())
    }

    /// PGPASSFILE is set for the server because the standby's walreceiver logs in with the
    /// password in the node's `.pgpass`.
    async fn start(&self, node: NodeId) -> Result<()> {
        let mut cmd = self.pg_ctl(node, self.server(node).start_args());
        cmd.env("PGPASSFILE", self.layout.file(node, NodeFile::Pgpass));
        let cmd = self.networks.on_node(&node.name(), cmd);
        let started = async {
            checked(cmd).await?;
            self.wait_ready(node).await
        };
        started.await.map_err(|e| self.with_log(node, e))
    }

    async fn stop(&self, node: NodeId) -> Result<()> {
        checked(self.pg_ctl(node, self.server(node).stop_args())).await
    }

    async fn stop_immediate(&self, node: NodeId) -> Result<()> {
        checked(self.pg_ctl(node, self.server(node).stop_immediate_args())).await
    }

    /// SIGKILL to the postmaster's process group (pg_ctl starts it in a session of its own,
    /// so its children share the group), then a wait until no process of the group is left:
    /// a start before that would find the old shared memory still in use.
    async fn kill(&self, node: NodeId) -> Result<()> {
        let pid_file = self.layout.file(node, NodeFile::Data("postmaster.pid"));
        let text = files::read(&pid_file)
            .await?
            .with_context(|| format!("{node} is not running: no {}", pid_file.display()))?;
        let pid: i32 = String::from_utf8_lossy(&text)
            .lines()
            .next()
            .and_then(|line| line.trim().parse().ok())
            .with_context(|| format!("no pid in {}", pid_file.display()))?;
        process::kill_group(pid)?;
        wait_until(
            &format!("{node}'s processes to exit"),
            READY_TIMEOUT,
            || async { Ok(!process::group_alive(pid)) },
        )
        .await?;
        // The postmaster was orphaned when pg_ctl exited; where nothing reaps orphans (a
        // container's init may not, or not yet), it stays a zombie, which pg_ctl and the next
        // postmaster take for a live server holding the lock files: the data directory's and
        // its Unix socket's. A crashed server's lock files name a process that is gone: make
        // it so.
        if process::is_zombie(pid) {
            std::fs::remove_file(&pid_file)
                .with_context(|| format!("cannot remove {}", pid_file.display()))?;
            process::remove_socket_locks(&self.layout.node_dir(node), pid)?;
        }
        Ok(())
    }

    /// Runs as the current user; PGHOST and PGPORT point client programs at `node`.
    async fn exec(&self, node: NodeId, argv: &[&str]) -> Result<ExecOutput> {
        let (program, args) = argv.split_first().context("exec needs a program")?;
        let mut cmd = self.programs.client(program);
        cmd.args(args)
            .env("PGHOST", self.layout.node_dir(node))
            .env("PGPORT", self.port(node).to_string());
        output(cmd).await
    }

    async fn read_file(&self, node: NodeId, file: NodeFile) -> Result<Option<Vec<u8>>> {
        files::read(&self.layout.file(node, file)).await
    }

    async fn write_file(
        &self,
        node: NodeId,
        file: NodeFile,
        contents: &[u8],
        mode: u32,
    ) -> Result<()> {
        files::write(
            &self.programs,
            &self.layout.file(node, file),
            contents,
            mode,
        )
        .await
    }

    fn path(&self, node: NodeId, file: NodeFile) -> String {
        self.layout.file(node, file).display().to_string()
    }

    async fn address(&self, node: NodeId) -> Result<Ipv4Addr> {
        Ok(self.ip(node))
    }

    fn peer_endpoint(&self, node: NodeId) -> Endpoint {
        self.host_endpoint(node)
    }

    fn host_endpoint(&self, node: NodeId) -> Endpoint {
        Endpoint {
            host: self.ip(node).to_string(),
            port: self.port(node),
        }
    }

    /// `sh -c script` as the server user in the node's directory (and network), with
    /// PostgreSQL's programs first on PATH.
    async fn run_offline(&self, node: NodeId, script: &str) -> Result<ExecOutput> {
        let mut cmd = self.programs.as_server_user("sh");
        let path = std::env::var_os("PATH").unwrap_or_default();
        let bin = std::iter::once(self.programs.bin().to_path_buf());
        let path = std::env::join_paths(bin.chain(std::env::split_paths(&path)))
            .context("the PostgreSQL bin directory cannot go on PATH")?;
        cmd.args(["-c", script])
            .current_dir(self.layout.node_dir(node))
            .env("PGDATA", self.layout.data_dir(node))
            .env("PGPASSFILE", self.layout.file(node, NodeFile::Pgpass))
            .env("PATH", path);
        output(self.networks.on_node(&node.name(), cmd)).await
    }

    async fn nodes(&self) -> Result<Vec<NodeId>> {
        self.layout.existing_nodes()
    }

    /// Stops what runs, then removes every node directory (replicas first), and the base
    /// directory when nothing else is left in it.
    async fn teardown(&self) -> Result<Vec<String>> {
        let mut removed = Vec::new();
        for node in self.layout.existing_nodes()?.into_iter().rev() {
            if self.state(node).await? == NodeState::Running {
                self.stop(node).await?;
            }
            let dir = self.layout.node_dir(node);
            std::fs::remove_dir_all(&dir)
                .with_context(|| format!("cannot remove {}", dir.display()))?;
            removed.push(dir.display().to_string());
        }
        let base = self.layout.base();
        // Fails, and so keeps it, when it is missing or holds other files.
        if std::fs::remove_dir(base).is_ok() {
            removed.push(base.display().to_string());
        }
        Ok(removed)
    }
}
