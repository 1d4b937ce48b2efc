//! The primary `db01` and its streaming replica `db02`.

use crate::conf::{replica_overrides, server_settings};
use crate::net::free_port;
use crate::node::Node;
use crate::pg::PgTools;
use crate::poll::wait_until;
use crate::process::run;
use crate::roles::{self, REPLICATOR, SUPERUSER};
use anyhow::{ensure, Context, Result};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The primary's name and `cluster_name`.
pub const PRIMARY: &str = "db01";
/// The replica's name and `cluster_name`.
pub const REPLICA: &str = "db02";
/// Keeps on the primary the WAL the replica has not received yet.
const SLOT: &str = "db02_slot";
/// Written into the base directory so `Cluster::attach` can find the ports.
const PORTS_FILE: &str = "ports.env";
const REPLICATION_TIMEOUT: Duration = Duration::from_secs(30);

/// A running primary/replica pair whose files all live in `base_dir`.
#[derive(Debug)]
pub struct Cluster {
    pub base_dir: PathBuf,
    pub primary: Node,
    pub replica: Node,
}

impl Cluster {
    /// Creates and starts a fresh cluster in `base_dir` (created if missing;
    /// must not hold one already): the primary with the harness roles, the
    /// `appdb` database and the `db02_slot` slot, then a replica cloned from
    /// it; returns once the replica streams.
    ///
    /// Nothing stops the servers when the value is dropped: call
    /// [`Cluster::stop`], or use [`Cluster::shared`], which does.
    pub fn start(base_dir: &Path) -> Result<Cluster> {
        let tools = PgTools::locate()?;
        fs::create_dir_all(base_dir)
            .with_context(|| format!("cannot create {}", base_dir.display()))?;
        // Absolute, because the path goes into the server configuration.
        let base_dir = base_dir.canonicalize()?;
        tools.hand_over(&base_dir)?;
        let primary_port = free_port();
        let replica_port = loop {
            let port = free_port();
            if port != primary_port {
                break port;
            }
        };
        let cluster = Cluster {
            primary: Node::new(&base_dir, PRIMARY, primary_port, tools.clone()),
            replica: Node::new(&base_dir, REPLICA, replica_port, tools.clone()),
            base_dir,
        };
        ensure!(
            !cluster.primary.data_dir.exists(),
            "{} already exists: a cluster needs a fresh directory",
            cluster.primary.data_dir.display()
        );
        if let Err(e) = cluster.bootstrap(&tools) {
            cluster.stop();
            return Err(e);
        }
        Ok(cluster)
    }

    fn bootstrap(&self, tools: &PgTools) -> Result<()> {
        // Written first, so a crashed start can still be found and stopped.
        fs::write(self.base_dir.join(PORTS_FILE), self.env_lines())?;
        self.init_primary(tools)?;
        self.primary.start()?;
        let setup = format!(
            "{}SELECT pg_create_physical_replication_slot('{SLOT}');\n",
            roles::setup_sql()
        );
        self.primary.psql(SUPERUSER, "postgres", &setup)?;
        self.clone_replica(tools)?;
        self.replica.start()?;
        self.wait_streaming()
    }

    fn init_primary(&self, tools: &PgTools) -> Result<()> {
        let data_dir = &self.primary.data_dir;
        let mut initdb = tools.server("initdb", &self.base_dir);
        initdb
            .arg("-D")
            .arg(data_dir)
            .args(["-U", SUPERUSER, "-E", "UTF8", "--locale=C"])
            .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
            .args(["--no-sync", "--no-instructions"]);
        run(&mut initdb, None)?;
        append(
            &data_dir.join("postgresql.conf"),
            &server_settings(PRIMARY, self.primary.port, &self.base_dir),
        )?;
        // Truncating keeps the file's owner, so the server can still read it.
        fs::write(data_dir.join("pg_hba.conf"), roles::pg_hba())?;
        Ok(())
    }

    /// pg_basebackup writes `primary_conninfo` (with the replication
    /// password, taken from the connection string) and `primary_slot_name`.
    fn clone_replica(&self, tools: &PgTools) -> Result<()> {
        let conninfo = format!(
            "host=127.0.0.1 port={} user={} password={} application_name={REPLICA}",
            self.primary.port,
            REPLICATOR.name,
            REPLICATOR.password.unwrap_or_default()
        );
        let mut basebackup = tools.server("pg_basebackup", &self.base_dir);
        basebackup
            .arg("-D")
            .arg(&self.replica.data_dir)
            .args(["-d", &conninfo, "--slot", SLOT])
            .args(["--wal-method=stream", "--write-recovery-conf"])
            .args(["--checkpoint=fast", "--no-sync"]);
        run(&mut basebackup, None)?;
        append(
            &self.replica.data_dir.join("postgresql.conf"),
            &replica_overrides(REPLICA, self.replica.port),
        )
    }

    fn wait_streaming(&self) -> Result<()> {
        let sql = format!(
            "SELECT count(*) FROM pg_stat_replication \
             WHERE application_name = '{REPLICA}' AND state = 'streaming'"
        );
        wait_until("the replica to stream", REPLICATION_TIMEOUT, || {
            Ok(self.primary.psql(SUPERUSER, "postgres", &sql)?.trim() == "1")
        })
    }

    /// Waits until the replica has replayed all WAL the primary had written
    /// when called, so reads on the replica see every committed write.
    ///
    /// With `synchronous_commit = off` the last commits may still sit in the
    /// primary's WAL buffers, so first a transaction that writes WAL (a
    /// logical message; one that writes none commits asynchronously anyway)
    /// commits synchronously, which flushes everything before it; then the
    /// primary's written position is compared with the replica's replay one.
    pub fn wait_replica_caught_up(&self) -> Result<()> {
        let flush = "BEGIN;\n\
                     SET LOCAL synchronous_commit = on;\n\
                     SELECT pg_logical_emit_message(true, 'pgrepl-harness', 'catch-up') \\g /dev/null\n\
                     COMMIT;\n\
                     SELECT pg_current_wal_lsn();\n";
        let out = self.primary.psql(SUPERUSER, "postgres", flush)?;
        let target = out.trim();
        let sql = format!("SELECT pg_last_wal_replay_lsn() >= '{target}'::pg_lsn");
        wait_until(
            &format!("the replica to replay up to {target}"),
            REPLICATION_TIMEOUT,
            || Ok(self.replica.psql(SUPERUSER, "postgres", &sql)?.trim() == "t"),
        )
    }

    /// Stops both servers in immediate mode (the data is disposable, so no
    /// shutdown checkpoint); nodes that are not running are skipped and
    /// failures are only reported on stderr, because this runs in teardown.
    pub fn stop(&self) {
        for node in [&self.replica, &self.primary] {
            if node.data_dir.join("postmaster.pid").exists() {
                if let Err(e) = node.stop_immediately() {
                    eprintln!("cannot stop {}: {e:#}", node.name);
                }
            }
        }
    }

    /// The cluster started earlier in `base_dir`, e.g. by another process.
    pub fn attach(base_dir: &Path) -> Result<Cluster> {
        let tools = PgTools::locate()?;
        let base_dir = base_dir.canonicalize()?;
        let path = base_dir.join(PORTS_FILE);
        let ports = fs::read_to_string(&path)
            .with_context(|| format!("no cluster in {}", base_dir.display()))?;
        let port = |key: &str| {
            ports
                .lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
                .with_context(|| format!("{} has no {key}", path.display()))
        };
        Ok(Cluster {
            primary: Node::new(&base_dir, PRIMARY, port("PRIMARY_PORT")?, tools.clone()),
            replica: Node::new(&base_dir, REPLICA, port("REPLICA_PORT")?, tools),
            base_dir,
        })
    }

    /// `PRIMARY_PORT=…` and `REPLICA_PORT=…` lines, for shells to eval.
    pub fn env_lines(&self) -> String {
        format!(
            "PRIMARY_PORT={}\nREPLICA_PORT={}\n",
            self.primary.port, self.replica.port
        )
    }
}

fn append(path: &Path, text: &str) -> Result<()> {
    OpenOptions::new()
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .with_context(|| format!("cannot append to {}", path.display()))
}
