//! The primary `db01` and its streaming replica `db02` (or replicas `db02`..`db(N+1)`), built
//! by the tutorial's provisioning steps with the local runtime, plus the harness's roles,
//! database and pg_hba.conf.

use crate::local::{block_on, local_runtime};
use crate::net::{free_port, free_ports};
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

/// A running primary with its replicas, whose files all live in `base_dir`.
#[derive(Debug)]
pub struct Cluster {
    pub base_dir: PathBuf,
    pub primary: Node,
    /// The first replica, `db02`: the tutorial's pair is `primary` and `replica`.
    pub replica: Node,
    /// Every replica, `db02` (`replica`) first, in order.
    pub replicas: Vec<Node>,
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
        Cluster::start_replicas(base_dir, 1, None, settings)
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
        Cluster::start_replicas(base_dir, 1, Some(rig), settings)
    }

    /// A cluster of db01 and `replicas` replicas, db02..db(N+1), built by `provision
    /// --replicas N`'s steps (each replica streams through a slot of its own), on loopback
    /// ports, or with each node in its namespace of `rig` as [`Cluster::start_in_netns`] puts
    /// them (the rig has every node); returns once every replica has replayed the harness's
    /// setup.
    pub fn start_replicas(
        base_dir: &Path,
        replicas: u8,
        rig: Option<&Rig>,
        settings: &[(&str, &str)],
    ) -> Result<Cluster> {
        let options = Options {
            replicas,
            ..Options::default()
        };
        Cluster::start_provisioned(base_dir, &options, rig, settings)
    }

    /// Like [`Cluster::start_replicas`], built by `provision` with `options` (`--sync`...).
    pub fn start_provisioned(
        base_dir: &Path,
        options: &Options,
        rig: Option<&Rig>,
        settings: &[(&str, &str)],
    ) -> Result<Cluster> {
        let replicas = options.replicas;
        fs::create_dir_all(base_dir)
            .with_context(|| format!("cannot create {}", base_dir.display()))?;
        let base_dir = base_dir.canonicalize()?;
        // free_port hands out each port once in a process, so the replicas' range misses it.
        let primary_port = free_port();
        let replica_port = free_ports(replicas.into());
        let mut rt = local_runtime(&base_dir, primary_port, replica_port)?.with_settings(settings);
        let nodes = runtime::NodeId::first(replicas);
        if let Some(rig) = rig {
            for &id in &nodes {
                rt = rt.with_node_network(id, rig.node(&id.name())?.network());
            }
        }
        let cluster = Cluster::new(rt, &nodes)?;
        let primary_dir = cluster.rt.layout().node_dir(runtime::NodeId::DB01);
        ensure!(
            !primary_dir.exists(),
            "{} already exists: a cluster needs a fresh directory",
            primary_dir.display()
        );
        let clients = rig.map_or(roles::LOOPBACK_CLIENTS.to_owned(), Rig::subnet);
        if let Err(e) = cluster.bootstrap(options, &clients) {
            cluster.stop();
            return Err(e);
        }
        Ok(cluster)
    }

    /// The cluster of `nodes` (db01, then its replicas, db02 among them) run by `rt`.
    fn new(rt: LocalRuntime, nodes: &[runtime::NodeId]) -> Result<Cluster> {
        let replicas = nodes
            .iter()
            .filter(|&&id| id != runtime::NodeId::DB01)
            .map(|&id| Node::new(&rt, id))
            .collect::<Result<Vec<Node>>>()?;
        Ok(Cluster {
            base_dir: rt.layout().base().to_owned(),
            primary: Node::new(&rt, runtime::NodeId::DB01)?,
            replica: replicas
                .first()
                .context("a cluster needs a replica")?
                .clone(),
            replicas,
            rt,
        })
    }

    /// The primary, then the replicas.
    fn nodes(&self) -> impl DoubleEndedIterator<Item = &Node> {
        std::iter::once(&self.primary).chain(&self.replicas)
    }

    fn bootstrap(&self, options: &Options, clients: &str) -> Result<()> {
        // Written first, so a crashed start can still be found and stopped.
        fs::write(self.base_dir.join(PORTS_FILE), self.env_lines())?;
        block_on(async { Ok(steps::provision(&self.rt, options, &mut std::io::stderr()).await?) })?;
        self.primary
            .psql(SUPERUSER, "postgres", &roles::setup_sql())?;
        let hba = roles::pg_hba(clients);
        for node in self.nodes() {
            node.replace_pg_hba(&hba)?;
        }
        self.wait_replica_caught_up()
    }

    /// Waits until every replica has replayed all WAL the primary had written
    /// when called, so reads on any replica see every committed write.
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
        for replica in &self.replicas {
            wait_until(
                &format!("{} to replay up to {target}", replica.name),
                REPLICATION_TIMEOUT,
                || Ok(replica.psql(SUPERUSER, "postgres", &sql)?.trim() == "t"),
            )?;
        }
        Ok(())
    }

    /// Stops every server (fast mode, through the runtime), the replicas first; nodes that
    /// are not running are skipped and failures are only reported on stderr, because
    /// this runs in teardown.
    pub fn stop(&self) {
        for node in self.nodes().rev() {
            if let Err(e) = node
                .is_running()
                .and_then(|up| if up { node.stop() } else { Ok(()) })
            {
                eprintln!("cannot stop {}: {e:#}", node.name);
            }
        }
    }

    /// The cluster started earlier in `base_dir`, e.g. by another process: db01, db02 and
    /// the other replicas whose directory is there.
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
        let mut nodes = runtime::NodeId::first(1);
        let more = rt.layout().existing_nodes()?.into_iter();
        nodes.extend(more.filter(|&id| id > runtime::NodeId::DB02));
        Cluster::new(rt, &nodes)
    }

    /// The environment under which `pgrepl-proxy`'s provisioning commands (`failover`,
    /// `rejoin`...) act on this cluster with the local runtime. They start nodes without the
    /// harness's server settings: a test that has them restart a node keeps what must match
    /// across nodes in the nodes' own configuration (`ALTER SYSTEM`).
    pub fn provision_env(&self) -> Vec<(String, String)> {
        let var = |key: &str, value: String| (format!("PGREPL_PROVISION__{key}"), value);
        vec![
            var("RUNTIME", "local".to_owned()),
            var("DATA_DIR", self.base_dir.to_string_lossy().into_owned()),
            var("PRIMARY_PORT", self.primary.port.to_string()),
            var("REPLICA_PORT", self.replica.port.to_string()),
            var("REPLICAS", self.replicas.len().to_string()),
        ]
    }

    /// `PRIMARY_PORT=…` and `REPLICA_PORT=…` (db02's; the other replicas' follow it) lines,
    /// for shells to eval.
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

    /// Like [`OwnCluster::start`], built by `provision` with `options`
    /// ([`Cluster::start_provisioned`]).
    pub fn start_provisioned(name: &str, options: &Options) -> Result<OwnCluster> {
        Cluster::start_provisioned(&run_dir().join(name), options, None, &[]).map(OwnCluster)
    }

    /// Like [`OwnCluster::start_with`], with `replicas` replicas, in `rig` if given
    /// ([`Cluster::start_replicas`]).
    pub fn start_replicas(
        name: &str,
        replicas: u8,
        rig: Option<&Rig>,
        settings: &[(&str, &str)],
    ) -> Result<OwnCluster> {
        Cluster::start_replicas(&run_dir().join(name), replicas, rig, settings).map(OwnCluster)
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
