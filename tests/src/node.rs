//! One PostgreSQL server of the test cluster.

use crate::local::block_on;
use crate::process::run;
use crate::roles::{self, SUPERUSER};
use anyhow::Result;
use pgrepl_provision::local::LocalRuntime;
use pgrepl_provision::runtime::{self, Runtime};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

/// A PostgreSQL server listening on 127.0.0.1 (or on its address in the partition rig), run
/// by the provision crate's local runtime.
#[derive(Debug, Clone)]
pub struct Node {
    /// Also its `cluster_name`: "db01" (primary) or "db02" (replica).
    pub name: String,
    /// Where it listens and the proxy reaches it: 127.0.0.1, or its network namespace's address.
    pub ip: IpAddr,
    pub port: u16,
    pub data_dir: PathBuf,
    /// The server log (pg_ctl -l).
    pub log_file: PathBuf,
    /// Which of the tutorial's nodes it is, for the runtime.
    id: runtime::NodeId,
    /// Holds the node's Unix socket.
    socket_dir: PathBuf,
    rt: LocalRuntime,
}

impl Node {
    pub(crate) fn new(rt: &LocalRuntime, id: runtime::NodeId) -> Result<Node> {
        let layout = rt.layout();
        let endpoint = rt.host_endpoint(id);
        Ok(Node {
            name: id.name(),
            ip: endpoint.host.parse()?,
            port: endpoint.port,
            data_dir: layout.data_dir(id),
            log_file: layout.log_file(id),
            id,
            socket_dir: layout.node_dir(id),
            rt: rt.clone(),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((self.ip, self.port))
    }

    /// Starts the server, with the same identity and settings provisioning gave it, and
    /// waits until it accepts connections.
    pub fn start(&self) -> Result<()> {
        block_on(self.rt.start(self.id))
    }

    /// Stops the server cleanly (fast mode: sessions are ended, nothing is lost).
    pub fn stop(&self) -> Result<()> {
        block_on(self.rt.stop(self.id))
    }

    /// Kills its server as a crash would (SIGKILL to the postmaster and its children, by the
    /// runtime's `kill`) and waits until they are gone; a later [`Node::start`] runs crash
    /// recovery.
    pub fn kill(&self) -> Result<()> {
        block_on(self.rt.kill(self.id))
    }

    /// Replaces the server's pg_hba.conf with `text` and reloads it.
    pub(crate) fn replace_pg_hba(&self, text: &str) -> Result<()> {
        let file = runtime::NodeFile::Data("pg_hba.conf");
        block_on(self.rt.write_file(self.id, file, text.as_bytes(), 0o600))?;
        self.psql(SUPERUSER, "postgres", "SELECT pg_reload_conf()")
            .map(drop)
    }

    /// Whether its server runs (`pg_ctl status`).
    pub(crate) fn is_running(&self) -> Result<bool> {
        Ok(block_on(self.rt.state(self.id))? == runtime::NodeState::Running)
    }

    /// Runs `sql` as a psql script (statements one by one, stopping at the
    /// first error) and returns the unaligned, tuples-only output.
    ///
    /// The superuser logs in over the Unix socket; other users over TCP (at
    /// [`Node::ip`]) with their harness password, so their pg_hba.conf method applies.
    pub fn psql(&self, user: &str, db: &str, sql: &str) -> Result<String> {
        let mut cmd = self.rt.programs().client("psql");
        cmd.args(["-X", "-A", "-t", "-q", "-w", "-v", "ON_ERROR_STOP=1"])
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                user,
                "-d",
                db,
                "-f",
                "-",
            ])
            .env("PGCONNECT_TIMEOUT", "10")
            // Keep the caller's ~/.pgpass and PG* settings out of the way.
            .env("PGPASSFILE", "/dev/null")
            .env_remove("PGSERVICE")
            .env_remove("PGOPTIONS");
        if user == SUPERUSER {
            cmd.arg("-h").arg(&self.socket_dir);
        } else {
            cmd.args(["-h", &self.ip.to_string()]);
        }
        match roles::password(user) {
            Some(password) => cmd.env("PGPASSWORD", password),
            None => cmd.env_remove("PGPASSWORD"),
        };
        run(&mut cmd, Some(sql))
    }
}
