//! The `pgrepl-proxy` command line.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use pgrepl_config::Config;
use pgrepl_proxy::route::classify;
use pgrepl_proxy::Proxy;

mod provisioning;
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

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Serve {
        /// TOML config file; every key can also be set as PGREPL_<SECTION>__<KEY>.
        #[arg(long, short)]
        config: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "text")]
        log_format: LogFormat,
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
    },
    /// Check the pair: db02 refuses writes, a row written on db01 appears on db02, the slot is
    /// active, db02 streams.
    Verify {
        #[command(flatten)]
        target: Target,
    },
    /// Show each node's role and WAL position, the replica's lag and the slot.
    Status {
        #[command(flatten)]
        target: Target,
    },
    /// Remove the pair: containers, volumes and network (or local data directories).
    Teardown {
        #[command(flatten)]
        target: Target,
    },
    /// Provision the pair if needed, then serve the proxy in front of it.
    Up {
        #[command(flatten)]
        target: Target,
        /// PostgreSQL image for both containers [default: [provision] image, "postgres:16.1"].
        #[arg(long)]
        image: Option<String>,
        #[arg(long, value_enum, default_value = "text")]
        log_format: LogFormat,
    },
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // The health monitor reports its backends' state changes itself; deadpool's own
        // warnings about the same broken connections would only repeat them, less clearly.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,deadpool=error"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
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

fn load_and_serve(config: Option<PathBuf>, log_format: LogFormat) -> ExitCode {
    match Config::load(config.as_deref()).and_then(|c| c.require_users().map(|()| c)) {
        Ok(config) => serve(config, log_format),
        Err(e) => {
            eprintln!("pgrepl-proxy: {e}");
            ExitCode::from(2)
        }
    }
}

fn serve(config: Config, log_format: LogFormat) -> ExitCode {
    init_logging(log_format);
    // This runtime only accepts clients and watches signals; sessions run on the workers.
    let result = current_thread_runtime().and_then(|runtime| {
        runtime.block_on(async {
            let proxy = Proxy::bind(&config).await?;
            tracing::info!(listen = %proxy.local_addr()?, primary = %config.primary.name, replicas = config.replicas.len(), "pgrepl-proxy serving");
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
    let result = target.config(image).and_then(|config| {
        current_thread_runtime()?.block_on(provisioning::run(&config, target.adopt, action))
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
            ..
        } => exit_code(
            target
                .config(image.as_deref())
                .and_then(|c| provisioning::dry_run(&c)),
        ),
        Command::Provision {
            target,
            image,
            dry_run: false,
            show_password,
        } => provisioning(
            &target,
            image.as_deref(),
            Action::Provision { show_password },
        ),
        Command::Verify { target } => provisioning(&target, None, Action::Verify),
        Command::Status { target } => provisioning(&target, None, Action::Status),
        Command::Teardown { target } => provisioning(&target, None, Action::Teardown),
        Command::Up {
            target,
            image,
            log_format,
        } => up::up(&target, image.as_deref(), log_format),
    }
}
