//! The `pgrepl-proxy` command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};
use pgrepl_config::{Config, LogFormat};
use pgrepl_provision::runtime::NodeId;
use pgrepl_proxy::reload::{Loader, Reloader};
use pgrepl_proxy::route::classify;
use pgrepl_proxy::{logging, Proxy};
use tokio::signal::unix::{signal, Signal, SignalKind};

mod console_hold;
mod provisioning;
mod status_cmd;
mod up;

use provisioning::{Action, Target};

#[derive(Parser)]
#[command(
    name = "pgrepl-proxy",
    version,
    about = "PostgreSQL proxy: writes to the primary, reads to replicas"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// `--log-format`; without it, `[log] format` decides.
#[derive(Clone, Copy, ValueEnum)]
enum LogFormatArg {
    Text,
    Json,
}

impl LogFormatArg {
    fn apply(arg: Option<LogFormatArg>, config: &mut Config) {
        match arg {
            Some(LogFormatArg::Text) => config.log.format = LogFormat::Text,
            Some(LogFormatArg::Json) => config.log.format = LogFormat::Json,
            None => {}
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Serve {
        /// TOML config file; every key can also be set as PGREPL_<SECTION>__<KEY>.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Log lines as text or JSON [default: [log] format, "text"].
        #[arg(long, value_enum)]
        log_format: Option<LogFormatArg>,
    },
    /// Print where a statement would be routed and why.
    Classify {
        /// The SQL text (several statements separated by `;` form one simple query); it may
        /// start with a `--` comment.
        #[arg(allow_hyphen_values = true)]
        sql: String,
    },
    /// Build the db01/db02 primary/replica pair as the tutorial does (11 steps; re-running
    /// changes nothing and continues a run that failed).
    Provision {
        #[command(flatten)]
        target: Target,
        /// PostgreSQL image for both containers [default: [provision] image, "postgres:16.1"].
        #[arg(long)]
        image: Option<String>,
        /// Print the equivalent docker CLI commands and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print the replication user's password when step 4 sets it.
        #[arg(long)]
        show_password: bool,
        #[command(flatten)]
        shape: provisioning::Shape,
    },
    /// Planned change of primary, losing nothing: the primary stops cleanly, the target
    /// replays all of its WAL and is promoted, the old primary (rewound) and the other replicas
    /// follow it. Writes are held through the proxy's admin console, or not with
    /// --without-proxy.
    Switchover {
        #[command(flatten)]
        target: Target,
        /// The replica to promote [default: the one that has replayed the most].
        #[arg(long, value_parser = provisioning::parse_node)]
        to: Option<NodeId>,
        /// Go on without a proxy: writes are not held, and writes sent to the primary fail
        /// while it stops.
        #[arg(long)]
        without_proxy: bool,
    },
    /// The primary is dead: promote the most advanced replica (or --to), fence the old
    /// primary, make the other replicas follow the new one.
    Failover {
        #[command(flatten)]
        target: Target,
        /// The replica to promote [default: the one that has received the most WAL].
        #[arg(long, value_parser = provisioning::parse_node)]
        to: Option<NodeId>,
        /// Go on although the primary answers, a replica cannot be asked how far it got
        /// under --sync, or --to is behind another replica.
        #[arg(long)]
        force: bool,
    },
    /// Turn a node that is not the primary (a former primary) into a replica of the primary,
    /// with pg_rewind, or a new base backup when rewinding cannot work.
    Rejoin {
        #[command(flatten)]
        target: Target,
        /// The node, e.g. db01.
        #[arg(value_parser = provisioning::parse_node)]
        node: NodeId,
    },
    /// Check the pair: db02 refuses writes, a row written on db01 appears on db02, the slot is
    /// active, db02 streams.
    Verify {
        #[command(flatten)]
        target: Target,
    },
    /// Show the running proxy's backends (roles, WAL positions, lag, staleness, connections)
    /// from its /status endpoint; with --pair, or when no proxy answers, each node's role and
    /// WAL position, the replica's lag and the slot as seen directly.
    Status(status_cmd::StatusArgs),
    /// Remove the pair: containers, volumes and network (or local data directories).
    Teardown {
        #[command(flatten)]
        target: Target,
    },
    /// Provision the pair if needed, then serve the proxy in front of it.
    Up {
        #[command(flatten)]
        target: Target,
        /// PostgreSQL image for the containers [default: [provision] image, "postgres:16.1"].
        #[arg(long)]
        image: Option<String>,
        /// Log lines as text or JSON [default: [log] format, "text"].
        #[arg(long, value_enum)]
        log_format: Option<LogFormatArg>,
        #[command(flatten)]
        shape: provisioning::Shape,
    },
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; only SIGINT stops the proxy");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
        _ = term.recv() => tracing::info!("SIGTERM received"),
    }
}

/// Reloads the configuration on each SIGHUP `hangups` delivers, until the proxy stops.
async fn reload_on_sighup(hangups: std::io::Result<Signal>, reloader: Arc<Reloader>) {
    let mut hangups = match hangups {
        Ok(hangups) => hangups,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGHUP: the configuration cannot be reloaded by signal");
            return;
        }
    };
    while hangups.recv().await.is_some() {
        tracing::info!("SIGHUP received: reloading the configuration");
        // The outcome is logged and counted by the reload itself.
        let _ = reloader.reload().await;
    }
}

fn load_and_serve(config: Option<PathBuf>, log_format: Option<LogFormatArg>) -> ExitCode {
    let load = move || -> Result<Config, pgrepl_config::ConfigError> {
        let mut config = Config::load(config.as_deref())?;
        config.require_users()?;
        LogFormatArg::apply(log_format, &mut config);
        Ok(config)
    };
    match load() {
        Ok(config) => serve(config, Box::new(move || Ok(load()?))),
        Err(e) => {
            eprintln!("pgrepl-proxy: {e}");
            ExitCode::from(2)
        }
    }
}

/// Serves with `config`; `load` reads the configuration again for a reload.
fn serve(config: Config, load: Loader) -> ExitCode {
    let log = match logging::init(&config.log) {
        Ok(log) => log,
        Err(e) => {
            eprintln!("pgrepl-proxy: {e}");
            return ExitCode::from(2);
        }
    };
    pgrepl_proxy::fd_limit::raise_and_report(&config);
    // This runtime accepts clients, watches signals, runs the control plane and hosts the
    // sessions' timers and side work; the sessions run on the workers' loops.
    let result = current_thread_runtime().and_then(|runtime| {
        runtime.block_on(async {
            // Caught from here on: SIGHUP's default action would end the process.
            let hangups = signal(SignalKind::hangup());
            let mut proxy = Proxy::bind(&config).await?;
            let reloader = proxy.reloader(config.clone(), load, log);
            tokio::spawn(reload_on_sighup(hangups, reloader));
            tracing::info!(
                listen = %proxy.local_addr()?,
                endpoint = %proxy.endpoint_addr()?,
                metrics = config.metrics.enabled,
                primary = %config.primary.name,
                replicas = config.replicas.len(),
                "pgrepl-proxy serving"
            );
            proxy.run(shutdown_signal()).await
        })
    });
    exit_code(result)
}

fn current_thread_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the runtime: {e}"))
}

/// Runs a provisioning command to completion.
fn provisioning(target: &Target, image: Option<&str>, action: Action) -> ExitCode {
    run_provisioning(target.config(image), target.adopt, action)
}

/// Runs a provisioning command on `config` to completion.
fn run_provisioning(config: anyhow::Result<Config>, adopt: bool, action: Action) -> ExitCode {
    let result = config.and_then(|config| {
        current_thread_runtime()?.block_on(provisioning::run(&config, adopt, action))
    });
    exit_code(result)
}

fn exit_code(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pgrepl-proxy: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config, log_format } => load_and_serve(config, log_format),
        Command::Classify { sql } => {
            println!("{}", classify(&sql));
            ExitCode::SUCCESS
        }
        Command::Provision {
            target,
            image,
            dry_run: true,
            shape,
            ..
        } => exit_code(
            target
                .config(image.as_deref())
                .and_then(|c| provisioning::dry_run(&shape.apply(c))),
        ),
        Command::Provision {
            target,
            image,
            dry_run: false,
            show_password,
            shape,
        } => run_provisioning(
            target.config(image.as_deref()).map(|c| shape.apply(c)),
            target.adopt,
            Action::Provision { show_password },
        ),
        Command::Switchover {
            target,
            to,
            without_proxy,
        } => provisioning(&target, None, Action::Switchover { to, without_proxy }),
        Command::Failover { target, to, force } => {
            provisioning(&target, None, Action::Failover { to, force })
        }
        Command::Rejoin { target, node } => provisioning(&target, None, Action::Rejoin { node }),
        Command::Verify { target } => provisioning(&target, None, Action::Verify),
        Command::Status(args) => status_cmd::status(&args),
        Command::Teardown { target } => provisioning(&target, None, Action::Teardown),
        Command::Up {
            target,
            image,
            log_format,
            shape,
        } => up::up(&target, image.as_deref(), log_format, &shape),
    }
}
