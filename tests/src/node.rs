//! One PostgreSQL server of the test cluster.

use crate::pg::PgTools;
use crate::process::run;
use crate::roles::{self, SUPERUSER};
use anyhow::Result;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;

/// How long pg_ctl may wait for a start or stop, in seconds.
const PG_CTL_TIMEOUT_SECS: &str = "60";

/// A PostgreSQL server listening on 127.0.0.1.
#[derive(Debug, Clone)]
pub struct Node {
    /// Also its `cluster_name`: "db01" (primary) or "db02" (replica).
    pub name: String,
    pub port: u16,
    pub data_dir: PathBuf,
    /// The server log (pg_ctl -l).
    pub log_file: PathBuf,
    /// The cluster's base directory, which holds data dirs, logs and sockets.
    base_dir: PathBuf,
    tools: PgTools,
}

impl Node {
    pub(crate) fn new(base_dir: &Path, name: &str, port: u16, tools: PgTools) -> Node {
        Node {
            name: name.to_owned(),
            port,
            data_dir: base_dir.join(name),
            log_file: base_dir.join(format!("{name}.log")),
            base_dir: base_dir.to_owned(),
            tools,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// Starts the server and waits until it accepts connections.
    pub fn start(&self) -> Result<()> {
        let mut cmd = self.pg_ctl("start");
        cmd.arg("-l").arg(&self.log_file);
        run(&mut cmd, None).map(drop)
    }

    /// Stops the server cleanly (fast mode: sessions are ended, nothing is lost).
    pub fn stop(&self) -> Result<()> {
        self.stop_mode("fast")
    }

    /// Stops the server without a shutdown checkpoint, for throwaway clusters.
    pub(crate) fn stop_immediately(&self) -> Result<()> {
        self.stop_mode("immediate")
    }

    fn stop_mode(&self, mode: &str) -> Result<()> {
        let mut cmd = self.pg_ctl("stop");
        cmd.args(["-m", mode]);
        run(&mut cmd, None).map(drop)
    }

    fn pg_ctl(&self, action: &str) -> Command {
        let mut cmd = self.tools.server("pg_ctl", &self.base_dir);
        cmd.arg(action)
            .arg("-D")
            .arg(&self.data_dir)
            .args(["-w", "-t", PG_CTL_TIMEOUT_SECS]);
        cmd
    }

    /// Runs `sql` as a psql script (statements one by one, stopping at the
    /// first error) and returns the unaligned, tuples-only output.
    ///
    /// The superuser logs in over the Unix socket; other users over TCP with
    /// their harness password, so their pg_hba.conf method applies.
    pub fn psql(&self, user: &str, db: &str, sql: &str) -> Result<String> {
        let mut cmd = self.tools.client("psql");
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
            cmd.arg("-h").arg(&self.base_dir);
        } else {
            cmd.args(["-h", "127.0.0.1"]);
        }
        match roles::password(user) {
            Some(password) => cmd.env("PGPASSWORD", password),
            None => cmd.env_remove("PGPASSWORD"),
        };
        run(&mut cmd, Some(sql))
    }
}
