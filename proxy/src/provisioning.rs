//! The provisioning commands (`provision`, `switchover`, `failover`, `rejoin`, `verify`,
//! `status`, `teardown`, and the first half of `up`): pick the runtime the user chose, then run the same code over either.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use pgrepl_config::{Config, Named, ProvisionConfig, RuntimeKind};
use pgrepl_provision::app_roles;
use pgrepl_provision::docker::{plan, DockerRuntime};
use pgrepl_provision::failover::{self, WithoutProxy};
use pgrepl_provision::local::LocalRuntime;
use pgrepl_provision::runtime::{check_ports, Endpoint, NodeId, Runtime};
use pgrepl_provision::topology::Topology;
use pgrepl_provision::{status, steps, verify};

use crate::console_hold::ConsoleHold;

/// Where the pair runs: shared by every provisioning command.
#[derive(Args, Debug, Clone)]
pub struct Target {
    /// TOML config file; every key can also be set as PGREPL_<SECTION>__<KEY>.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Where the pair runs [default: [provision] runtime, "docker"].
    #[arg(long, value_parser = parse_runtime)]
    pub runtime: Option<RuntimeKind>,
    /// Use containers named db01/db02 that pgrepl-proxy did not create.
    #[arg(long)]
    pub adopt: bool,
}

fn parse_runtime(text: &str) -> Result<RuntimeKind, String> {
    RuntimeKind::ALL
        .iter()
        .copied()
        .find(|kind| kind.as_str() == text)
        .ok_or_else(|| format!("expected \"docker\" or \"local\", found {text:?}"))
}

impl Target {
    /// The configuration with the command-line choices applied over it.
    pub fn config(&self, image: Option<&str>) -> Result<Config> {
        let mut config = Config::load(self.config.as_deref())?;
        if let Some(kind) = self.runtime {
            config.provision.runtime = kind;
        }
        if let Some(image) = image {
            config.provision.image = image.to_owned();
        }
        Ok(config)
    }
}

/// How many nodes `provision` builds, over `[provision]`.
#[derive(Args, Debug, Clone)]
pub struct Shape {
    /// How many replicas: db02 up to db(N+1), each with its own slot and port
    /// (replica_port and up) [default: [provision] replicas, 1].
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=98))]
    pub replicas: Option<u8>,
    /// Synchronous replication: a commit on the primary waits until one other node has
    /// flushed it, so a failover to the most advanced replica loses no acknowledged commit;
    /// while every replica is down, commits wait [default: [provision] sync, false].
    #[arg(long)]
    pub sync: bool,
}

impl Shape {
    /// `config` with the command line's choices over it.
    pub fn apply(&self, mut config: Config) -> Config {
        if let Some(replicas) = self.replicas {
            config.provision.replicas = replicas;
        }
        if self.sync {
            config.provision.sync = true;
        }
        config
    }
}

/// A node's name on the command line: `db01`, `db02`, ...
pub fn parse_node(text: &str) -> Result<NodeId, String> {
    NodeId::parse(text).ok_or_else(|| format!("expected a node name such as db02, found {text:?}"))
}

/// What to do with the nodes.
pub enum Action {
    Provision {
        show_password: bool,
    },
    Switchover {
        to: Option<NodeId>,
        without_proxy: bool,
    },
    Failover {
        to: Option<NodeId>,
        force: bool,
    },
    Rejoin {
        node: NodeId,
    },
    Verify,
    Status,
    Teardown,
}

/// Runs `action` on the runtime `config` names.
pub async fn run(config: &Config, adopt: bool, action: Action) -> Result<()> {
    let p = &config.provision;
    match p.runtime {
        RuntimeKind::Docker => {
            let rt = DockerRuntime::connect(p, adopt).await?;
            if matches!(action, Action::Provision { .. }) {
                rt.ensure_image().await?;
            }
            run_on(&rt, config, action).await
        }
        RuntimeKind::Local => run_on(&local_runtime(p)?, config, action).await,
    }
}

async fn run_on<R: Runtime>(rt: &R, config: &Config, action: Action) -> Result<()> {
    match action {
        Action::Provision { show_password } => {
            let p = &config.provision;
            check_ports(p.primary_port, p.replica_port, p.replicas)?;
            let options = steps::Options {
                replication_password: p.replication_password.clone(),
                show_password,
                replicas: p.replicas,
                sync: p.sync,
            };
            let topology = Topology::current(rt, p.replicas).await?;
            println!(
                "provisioning {} and {} with {}",
                topology.primary,
                topology.replica_list(),
                rt.describe()
            );
            steps::provision(rt, &options, &mut std::io::stdout()).await?;
            print_endpoints(rt, &topology.nodes());
        }
        Action::Switchover { to, without_proxy } => {
            println!("switching over with {}", rt.describe());
            let out = &mut std::io::stdout();
            if without_proxy {
                failover::switchover(rt, to, &mut WithoutProxy, out).await?;
            } else {
                failover::switchover(rt, to, &mut ConsoleHold::new(config)?, out).await?;
            }
        }
        Action::Failover { to, force } => {
            println!("failing over with {}", rt.describe());
            failover::failover(rt, to, force, &mut std::io::stdout()).await?;
        }
        Action::Rejoin { node } => {
            println!("rejoining {node} with {}", rt.describe());
            failover::rejoin(rt, node, &mut std::io::stdout()).await?;
        }
        Action::Verify => verify::verify(rt).await?,
        Action::Status => status::status(rt).await?,
        Action::Teardown => {
            let removed = rt.teardown().await?;
            if removed.is_empty() {
                println!("nothing to remove");
            }
            for item in removed {
                println!("removed {item}");
            }
        }
    }
    Ok(())
}

fn print_endpoints<R: Runtime>(rt: &R, nodes: &[NodeId]) {
    for &node in nodes {
        println!("{node} listens on {}", rt.host_endpoint(node));
    }
}

/// The local runtime, which runs every node on this machine: per-node hosts are refused
/// rather than ignored.
fn local_runtime(p: &ProvisionConfig) -> Result<LocalRuntime> {
    if let Some(name) = p.nodes.keys().next() {
        anyhow::bail!(
            "[provision.nodes.{name}] places a node on a Docker engine or network: it needs \
             --runtime docker ([provision] runtime = \"docker\"); the local runtime runs every \
             node on this machine"
        );
    }
    LocalRuntime::new(p)
}

/// `provision --dry-run`: the docker CLI commands equivalent to the steps, changing nothing.
pub fn dry_run(config: &Config) -> Result<()> {
    if config.provision.runtime != RuntimeKind::Docker {
        anyhow::bail!("--dry-run prints docker CLI commands; it needs --runtime docker");
    }
    if config.provision.replicas != 1 {
        anyhow::bail!(
            "--dry-run prints the tutorial's db01 and db02 only; it takes no --replicas \
             (each more replica repeats db02's steps with its own name, slot and port)"
        );
    }
    if !config.provision.nodes.is_empty() {
        anyhow::bail!(
            "--dry-run prints the tutorial's pair on one Docker engine and network; it does not \
             show [provision.nodes.*] settings (remove them to see the plan)"
        );
    }
    for line in plan::docker_commands(&config.provision) {
        println!("{line}");
    }
    Ok(())
}

/// How long `up` waits for the standbys to replay the login roles it just set.
const REPLAY_WAIT: Duration = Duration::from_secs(30);

/// Provisions (when needed), makes sure the proxy's users can log in on the nodes (setting
/// the password of existing roles too when `reset_passwords`), and returns where the proxy
/// must send its traffic: every node's endpoint, the current primary first.
pub async fn prepare_nodes(
    config: &Config,
    adopt: bool,
    reset_passwords: bool,
) -> Result<Vec<(NodeId, Endpoint)>> {
    let action = Action::Provision {
        show_password: false,
    };
    run(config, adopt, action).await?;
    let p = &config.provision;
    match p.runtime {
        RuntimeKind::Docker => {
            let rt = DockerRuntime::connect(p, adopt).await?;
            endpoints(&rt, config, reset_passwords).await
        }
        RuntimeKind::Local => endpoints(&local_runtime(p)?, config, reset_passwords).await,
    }
}

async fn endpoints<R: Runtime>(
    rt: &R,
    config: &Config,
    reset_passwords: bool,
) -> Result<Vec<(NodeId, Endpoint)>> {
    // Every node there is: also replicas a former `provision --replicas N` built.
    let topology = Topology::discover(rt).await?;
    let primary = topology.primary;
    for user in &config.users {
        let password = user.password.as_deref().with_context(|| {
            format!("user {} has no password to create its role with", user.name)
        })?;
        app_roles::ensure_login_role(rt, primary, &user.name, password, reset_passwords).await?;
    }
    // Otherwise the proxy's first logins on the standbys race their replay of a role just
    // made or changed, fail, and reads go to the primary until the next health check.
    let replicas = &topology.replicas;
    if let Err(e) = app_roles::replicas_replayed(rt, primary, replicas, REPLAY_WAIT).await {
        eprintln!("warning: {e:#}; reads go to the primary until the replicas have it");
    }
    let nodes = topology.nodes().into_iter();
    Ok(nodes.map(|node| (node, rt.host_endpoint(node))).collect())
}
