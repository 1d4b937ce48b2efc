//! Runs the causal-reads workload through a proxy and checks its history, for the benchmark
//! script and for trying a proxy by hand.
//!
//! `checkload --addr HOST:PORT [--sessions N] [--keys K] [--write-share F] [--seconds S]
//! [--setup-sql SQL] [--direct HOST:PORT] [--rule session|global|linearizable] [--prepare]`
//! prints one line of figures,
//! `checkload sessions=8 write_share=0.020 ops=12345 ops_per_s=4115.0 reads=12000
//! replica_share=0.973 raw_p50_ms=0.41 raw_p99_ms=2.10 violations=0 errors=0`
//! (`raw_*`: latency of the reads right after a write), then up to 10 violations; up to 10
//! errors go to stderr. Exits with 1 if there were violations or errors (or the load could not
//! run), 2 on bad arguments.
//!
//! `--prepare` first creates `counters` with keys `0..K`; `--direct` adds a session writing
//! straight to that address (the primary), for `--rule linearizable`.

use anyhow::{bail, Context, Result};
use pgrepl_tests::checker::{check, Rule};
use pgrepl_tests::checkload::{self, LoadOptions};
use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

const USAGE: &str = "usage: checkload --addr HOST:PORT [--sessions N] [--keys K] \
    [--write-share 0.02] [--seconds S] [--setup-sql SQL] [--direct HOST:PORT] \
    [--rule session|global|linearizable] [--prepare]";

/// How many violations and errors are printed.
const SHOWN: usize = 10;

struct Args {
    addr: SocketAddr,
    opts: LoadOptions,
    rule: Rule,
    prepare: bool,
}

fn address(text: &str) -> Result<SocketAddr> {
    text.to_socket_addrs()
        .with_context(|| format!("{text}: expected HOST:PORT"))?
        .next()
        .with_context(|| format!("{text}: no address"))
}

fn number<T: std::str::FromStr>(flag: &str, text: &str) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    text.parse()
        .map_err(|e| anyhow::anyhow!("{flag} {text}: {e}"))
}

fn parse(args: &[String]) -> Result<Args> {
    let mut addr = None;
    let mut opts = LoadOptions::default();
    let mut rule = Rule::Session;
    let mut prepare = false;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        // `--flag value` or `--flag=value`.
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => (flag, Some(value.to_owned())),
            _ => (arg.as_str(), None),
        };
        if !flag.starts_with("--") {
            bail!("unknown argument {arg}");
        }
        if flag == "--prepare" {
            if inline.is_some() {
                bail!("--prepare takes no value");
            }
            prepare = true;
            continue;
        }
        let value = match inline {
            Some(value) => value,
            None => args
                .next()
                .with_context(|| format!("{flag} needs a value"))?
                .clone(),
        };
        match flag {
            "--addr" => addr = Some(address(&value)?),
            "--sessions" => opts.sessions = number(flag, &value)?,
            "--keys" => opts.keys = number(flag, &value)?,
            "--write-share" => opts.write_share = number(flag, &value)?,
            "--seconds" => {
                let secs: f64 = number(flag, &value)?;
                opts.duration = Duration::try_from_secs_f64(secs)
                    .map_err(|e| anyhow::anyhow!("{flag} {value}: {e}"))?;
            }
            "--setup-sql" => opts.setup_sql = Some(value),
            "--direct" => opts.direct_writer = Some(address(&value)?),
            "--rule" => rule = value.parse().map_err(anyhow::Error::msg)?,
            _ => bail!("unknown argument {arg}"),
        }
    }
    if opts.keys == 0 {
        bail!("--keys must be at least 1");
    }
    if !(0.0..=1.0).contains(&opts.write_share) {
        bail!("--write-share must be in 0..=1");
    }
    Ok(Args {
        addr: addr.context("--addr is required")?,
        opts,
        rule,
        prepare,
    })
}

/// Runs the load and prints its figures; whether it was clean.
async fn run(args: Args) -> Result<bool> {
    if args.prepare {
        checkload::prepare(args.addr, args.opts.keys).await?;
    }
    let report = checkload::run(args.addr, &args.opts).await?;
    let violations = check(&report.history, args.rule);
    println!("{}", report.summary(&args.opts, violations.len()));
    for violation in violations.iter().take(SHOWN) {
        println!("{violation}");
    }
    for error in report.errors.iter().take(SHOWN) {
        eprintln!("error: {error}");
    }
    Ok(violations.is_empty() && report.errors.is_empty())
}

#[tokio::main]
async fn main() -> ExitCode {
    pgrepl_tests::program::main("checkload", USAGE, parse, run).await
}
