//! `pgrepl-proxy status`: the running proxy's view (its `/status` endpoint) as a table or JSON;
//! with `--pair`, or when no proxy answers, the provisioned pair as seen directly.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use pgrepl_proxy::telemetry::{table, Status};

use crate::provisioning::{Action, Target};
use crate::{exit_code, provisioning};

const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Args)]
pub struct StatusArgs {
    #[command(flatten)]
    target: Target,
    /// Print the proxy's status as JSON (as `/status` serves it).
    #[arg(long, conflicts_with = "pair")]
    json: bool,
    /// The proxy's metrics endpoint, host:port [default: [metrics] listen].
    #[arg(long, conflicts_with = "pair")]
    endpoint: Option<String>,
    /// Show the provisioned pair as seen directly (roles, WAL positions, lag, slot) instead.
    #[arg(long)]
    pair: bool,
}

pub fn status(args: &StatusArgs) -> ExitCode {
    if args.pair {
        return provisioning(&args.target, None, Action::Status);
    }
    let endpoint = match &args.endpoint {
        Some(endpoint) => endpoint.clone(),
        None => match args.target.config(None) {
            Ok(config) => config.metrics.listen,
            Err(e) => return exit_code(Err(e)),
        },
    };
    match fetch_status(&endpoint) {
        Ok(body) if args.json => {
            print!("{body}");
            ExitCode::SUCCESS
        }
        Ok(body) => exit_code(
            serde_json::from_str::<Status>(&body)
                .with_context(|| format!("{endpoint}/status answered something unexpected"))
                .map(|status| print!("{}", table::render(&status))),
        ),
        Err(e) if args.json => exit_code(Err(e)),
        Err(e) => {
            println!("no proxy answering on {endpoint} ({e:#}); the pair as seen directly:");
            provisioning(&args.target, None, Action::Status)
        }
    }
}

/// The body of `GET /status` from the endpoint at `endpoint` (host:port).
fn fetch_status(endpoint: &str) -> Result<String> {
    let addr = endpoint
        .to_socket_addrs()
        .with_context(|| format!("bad endpoint address {endpoint}"))?
        .next()
        .with_context(|| format!("{endpoint} resolves to no address"))?;
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    write!(
        stream,
        "GET /status HTTP/1.1\r\nHost: {endpoint}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("incomplete HTTP response")?;
    let status_line = head.lines().next().unwrap_or_default();
    if !status_line.contains(" 200 ") {
        bail!("{endpoint}/status answered {status_line:?}");
    }
    Ok(body.to_owned())
}
