//! Starts or stops a db01/db02 test cluster outside `cargo test`, for the
//! benchmark script and for poking at the proxy by hand.
//!
//! `testcluster start DIR [NAME=VALUE]...` (server settings on top of the harness's) prints `PRIMARY_PORT=…`, `REPLICA_PORT=…` and
//! `PG_BIN=…` lines for a shell to eval, and leaves the servers running;
//! `testcluster wait DIR` waits until the replica has replayed the primary's
//! writes; `testcluster stop DIR` stops the servers; `testcluster free-port`
//! prints a free loopback port.

use anyhow::{bail, Result};
use pgrepl_provision::text;
use pgrepl_tests::{free_port, pg_bin_dir, proxy_config, Cluster};
use std::path::Path;

const USAGE: &str =
    "usage: testcluster start DIR [NAME=VALUE]... | wait DIR | stop DIR | free-port | proxy-config DIR LISTEN";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["start", dir, settings @ ..] => {
            let settings = settings
                .iter()
                .map(|s| {
                    s.split_once('=')
                        .ok_or_else(|| anyhow::anyhow!("{s}: expected NAME=VALUE"))
                })
                .collect::<Result<Vec<_>>>()?;
            let cluster = Cluster::start_with(Path::new(dir), &settings)?;
            print!("{}", cluster.env_lines());
            println!(
                "PG_BIN={}",
                text::quote(&pg_bin_dir()?.display().to_string())
            );
        }
        ["wait", dir] => Cluster::attach(Path::new(dir))?.wait_replica_caught_up()?,
        ["stop", dir] => Cluster::attach(Path::new(dir))?.stop(),
        ["free-port"] => println!("{}", free_port()),
        ["proxy-config", dir, listen] => {
            let listen = listen
                .parse()
                .map_err(|e| anyhow::anyhow!("LISTEN {listen}: {e}"))?;
            print!(
                "{}",
                proxy_config(&Cluster::attach(Path::new(dir))?, listen)
            );
        }
        _ => bail!("{USAGE}"),
    }
    Ok(())
}
