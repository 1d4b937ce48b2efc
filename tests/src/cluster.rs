//! The primary `db01` and its streaming replica `db02`, built by the tutorial's provisioning
//! steps with the local runtime, plus the harness's roles, database and pg_hba.conf.

use crate::local::{block_on, local_runtime};
use crate::net::free_port;
use crate::netns::Rig;
use crate::node::Node;
use crate::poll::wait_until;
use crate::roles::{self, SUPERUSER};
use crate::shared::run_dir;
use anyhow::{ensure, Context, Result};
use pgrepl_provision::local::LocalRuntime;
use pgrepl_provision::runtime;
use pgrepl_provision::steps::{self, Options};
use std::fs;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Written into the base directory so `Cluster::attach` can find the ports.
const PORTS_FILE: &str = "ports.env";
const REPLICATION_TIMEOUT: Duration = Duration::from_secs(30);

/// A running primary/replica pair whose files all live in `base_dir`.
#[derive(Debug)]
pub struct Cluster {
    pub base_dir: PathBuf,
    pub primary: Node,
    pub replica: Node,
    rt: LocalRuntime,
}

impl Cluster {
    /// Creates and starts a fresh cluster in `base_dir` (created if missing;
    /// must not hold one already): the tutorial's 11 steps, then the harness
    /// roles and the `appdb` database on the primary and the harness
    /// pg_hba.conf on both nodes; returns once the replica has replayed them.
    ///
    /// Nothing stops the servers when the value is dropped: call
    /// [`Cluster::stop`], or use [`Cluster::shared`], which does.
    pub fn start(base_dir: &Path) -> Result<Cluster> {
        Cluster::start_with(base_dir, &[])
    }

    /// Like [`Cluster::start`], with server `settings` on top of the harness's (a lower
    /// `max_connections`...), given to both servers at every start.
    pub fn start_with(base_dir: &Path, settings: &[(&str, &str)]) -> Result<Cluster> {
        Cluster::create(base_dir, settings, roles::LOOPBACK_CLIENTS, Ok)
    }

    /// Like [`Cluster::start_with`], with each node's server in its namespace of `rig` (which
    /// has `db01` and `db02`), listening on its address there: the replica streams from the
    /// primary's address, the proxy reaches both at theirs ([`Node::addr`]), and pg_hba.conf
    /// lets in the rig's subnet. psql as the superuser keeps using the Unix sockets.
    pub fn start_in_netns(
        base_dir: &Path,
        rig: &Rig,
        settings: &[(&str, &str)],
    ) -> Result<Cluster> {
        Cluster::create(base_dir, settings, &rig.subnet(), |mut rt| {
            for id in [runtime::NodeId::DB01, runtime::NodeId::DB02] {
                rt = rt.with_node_network(id, rig.node(&id.name())?.network());
            }
            Ok(rt)
        })
    }

    /// Builds the cluster with the runtime `place` returns (where its servers run), TCP
    /// logins let in from `clients`.
    fn create(
        base_dir: &Path,
        settings: &[(&str, &str)],
        clients: &str,
        place: impl FnOnce(LocalRuntime) -> Result<LocalRuntime>,
    ) -> Result<Cluster> {
        fs::create_dir_all(base_dir)
            .with_context(|| format!("cannot create {}", base_dir.display()))?;
        let base_dir = base_dir.canonicalize()?;
        let primary_port = free_port();
        let replica_port = loop {
            let port = free_port();
            if port != primary_port {
                break port;
            }
        };
        let rt = local_runtime(&base_dir, primary_port, replica_port)?.with_settings(settings);
        let cluster = Cluster::new(place(rt)?)?;
        let primary_dir = cluster.rt.layout().node_dir(runtime::NodeId::DB01);
        ensure!(
            !primary_dir.exists(),
            "{} already exists: a cluster needs a fresh directory",
            primary_dir.display()
        );
        if let Err(e) = cluster.bootstrap(clients) {
            cluster.stop();
            return Err(e);
        }
        Ok(cluster)
    }

    fn new(rt: LocalRuntime) -> Result<Cluster> {
        Ok(Cluster {
            base_dir: rt.layout().base().to_owned(),
            primary: Node::new(&rt, runtime::NodeId::DB01)?,
            replica: Node::new(&rt, runtime::NodeId::DB02)?,
            rt,
        })
    }

    fn bootstrap(&self, clients: &str) -> Result<()> {
        // Written first, so a crashed start can still be found and stopped.
        fs::write(self.base_dir.join(PORTS_FILE), self.env_lines())?;
        block_on(async {
            Ok(steps::provision(&self.rt, &Options::default(), &mut std::io::stderr()).await?)
        })?;
        self.primary
            .psql(SUPERUSER, "postgres", &roles::setup_sql())?;
        let hba = roles::pg_hba(clients);
        for node in [&self.primary, &self.replica] {
            node.replace_pg_hba(&hba)?;
        }
        self.wait_replica_caught_up()
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

    /// Stops both servers (fast mode, through the runtime); nodes that are not
    /// running are skipped and failures are only reported on stderr, because
    /// this runs in teardown.
    pub fn stop(&self) {
        for node in [&self.replica, &self.primary] {
            if let Err(e) = node
                .is_running()
                .and_then(|up| if up { node.stop() } else { Ok(()) })
            {
                eprintln!("cannot stop {}: {e:#}", node.name);
            }
        }
    }

    /// The cluster started earlier in `base_dir`, e.g. by another process.
    pub fn attach(base_dir: &Path) -> Result<Cluster> {
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
        let rt = local_runtime(&base_dir, port("PRIMARY_PORT")?, port("REPLICA_PORT")?)?;
        Cluster::new(rt)
    }

    /// `PRIMARY_PORT=…` and `REPLICA_PORT=…` lines, for shells to eval.
    pub fn env_lines(&self) -> String {
        format!(
            "PRIMARY_PORT={}\nREPLICA_PORT={}\n",
            self.primary.port, self.replica.port
        )
    }
}

/// A cluster of one test's own, for tests that stop, pause or break a node, which the other
/// users of the shared cluster must not see. Stopped when dropped, whether the test passed or
/// not; its files go with [`run_dir`] at exit.
#[derive(Debug)]
pub struct OwnCluster(Cluster);

impl OwnCluster {
    /// Starts a fresh cluster in `run_dir()/name`.
    pub fn start(name: &str) -> Result<OwnCluster> {
        OwnCluster::start_with(name, &[])
    }

    /// Like [`OwnCluster::start`], with server `settings` on top of the harness's.
    pub fn start_with(name: &str, settings: &[(&str, &str)]) -> Result<OwnCluster> {
        Cluster::start_with(&run_dir().join(name), settings).map(OwnCluster)
    }

    /// Like [`OwnCluster::start_with`], each node in its namespace of `rig`
    /// ([`Cluster::start_in_netns`]). Drop it before the rig, whose namespaces its servers
    /// run in.
    pub fn start_in_netns(name: &str, rig: &Rig, settings: &[(&str, &str)]) -> Result<OwnCluster> {
        Cluster::start_in_netns(&run_dir().join(name), rig, settings).map(OwnCluster)
    }
}

impl Deref for OwnCluster {
    type Target = Cluster;

    fn deref(&self) -> &Cluster {
        &self.0
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        self.0.stop();
    }
}
