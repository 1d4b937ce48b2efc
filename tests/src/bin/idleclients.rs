//! Opens N client connections to a server, a proxy or a pooler, logs each in (startup and
//! password authentication in raw protocol: a socket per client is all this side keeps), and
//! holds them idle, so the benchmark script can read what idle clients cost the other side.
//!
//! `idleclients --addr HOST:PORT --clients N [--user app] [--database appdb]
//! [--password P] [--concurrency 64] [--hold-seconds 600] [--query]` (`--query`: each client
//! runs `SELECT 1` once logged in, so that under transaction pooling it has used and given
//! back a server connection) prints
//! `ready clients=N seconds=S` once every client is logged in, then holds them until it is
//! stopped (SIGTERM, SIGINT) or `--hold-seconds` have passed, and exits 0. The password
//! defaults to the harness role's. Exits with 1 if a login failed (up to 10 errors on stderr)
//! or the file descriptor limit is too low for N sockets, 2 on bad arguments.

use anyhow::{bail, Context, Result};
use pgrepl_tests::roles::{self, DATABASE};
use pgrepl_tests::suite::raw::{self, RawClient};
use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

const USAGE: &str = "usage: idleclients --addr HOST:PORT --clients N [--user app] \
    [--database appdb] [--password P] [--concurrency 64] [--hold-seconds 600] [--query]";

/// How many login errors are printed.
const SHOWN: usize = 10;
/// File descriptors this process needs besides its sockets.
const SPARE_FDS: u64 = 64;

struct Args {
    addr: SocketAddr,
    clients: usize,
    user: String,
    database: String,
    password: Option<String>,
    concurrency: usize,
    hold: Duration,
    /// Run `SELECT 1` on each client after its login.
    query: bool,
}

fn parse(args: &[String]) -> Result<Args> {
    let mut addr = None;
    let mut clients = None;
    let mut user = roles::APP.name.to_owned();
    let mut database = DATABASE.to_owned();
    let mut password = None;
    let mut concurrency = 64;
    let mut hold = Duration::from_secs(600);
    let mut query = false;
    let mut args = args.iter();
    while let Some(flag) = args.next() {
        if flag == "--query" {
            query = true;
            continue;
        }
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--addr" => {
                addr = value
                    .to_socket_addrs()
                    .with_context(|| format!("--addr {value}: expected HOST:PORT"))?
                    .next()
            }
            "--clients" => clients = Some(number(flag, value)?),
            "--user" => user.clone_from(value),
            "--database" => database.clone_from(value),
            "--password" => password = Some(value.clone()),
            "--concurrency" => concurrency = number(flag, value)?,
            "--hold-seconds" => hold = Duration::from_secs(number(flag, value)?),
            _ => bail!("unknown argument {flag}"),
        }
    }
    if concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    let password = password.or_else(|| roles::password(&user).map(str::to_owned));
    Ok(Args {
        addr: addr.context("--addr is required")?,
        clients: clients.context("--clients is required")?,
        user,
        database,
        password,
        concurrency,
        hold,
        query,
    })
}

fn number<T: std::str::FromStr>(flag: &str, text: &str) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    text.parse()
        .map_err(|e| anyhow::anyhow!("{flag} {text}: {e}"))
}

/// Fails unless this process may open `clients` sockets.
fn check_fd_limit(clients: usize) -> Result<()> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        bail!("getrlimit: {}", std::io::Error::last_os_error());
    }
    let needed = clients as u64 + SPARE_FDS;
    if limit.rlim_cur < needed {
        bail!(
            "{clients} clients need {needed} file descriptors, the limit is {} (raise it: ulimit -n)",
            limit.rlim_cur
        );
    }
    Ok(())
}

/// Logs every client in, at most `concurrency` at a time; the connections, or the errors.
async fn open_all(args: &Args) -> std::result::Result<Vec<RawClient>, Vec<String>> {
    let permits = Arc::new(Semaphore::new(args.concurrency));
    let mut logins = JoinSet::new();
    for _ in 0..args.clients {
        let permits = Arc::clone(&permits);
        let (addr, user, database) = (args.addr, args.user.clone(), args.database.clone());
        let (password, query) = (args.password.clone(), args.query);
        logins.spawn(async move {
            let _permit = permits.acquire_owned().await?;
            let mut client = RawClient::login(addr, &user, &database, password.as_deref()).await?;
            if query {
                select_one(&mut client).await?;
            }
            Ok::<_, anyhow::Error>(client)
        });
    }
    let mut clients = Vec::with_capacity(args.clients);
    let mut errors = Vec::new();
    while let Some(login) = logins.join_next().await {
        match login {
            Ok(Ok(client)) => clients.push(client),
            Ok(Err(e)) => errors.push(format!("{e:#}")),
            Err(e) => errors.push(format!("login task: {e}")),
        }
        let done = clients.len() + errors.len();
        if done % 1000 == 0 {
            eprintln!("idleclients: {done} of {} logins done", args.clients);
        }
    }
    if errors.is_empty() {
        Ok(clients)
    } else {
        Err(errors)
    }
}

/// Runs `SELECT 1` on `client`; fails on an error or an unexpected answer.
async fn select_one(client: &mut RawClient) -> Result<()> {
    client.send(&raw::query("SELECT 1")).await?;
    let answers = client.recv_until(b'Z').await?;
    let kinds: Vec<u8> = answers.iter().map(|m| m.ty).collect();
    if kinds != b"TDCZ" {
        bail!("SELECT 1 answered {:?}", raw::summary(&answers));
    }
    Ok(())
}

/// Returns when SIGTERM or SIGINT arrives, or after `hold`.
async fn hold_until_stopped(hold: Duration) -> Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
        _ = tokio::time::sleep(hold) => {}
    }
    Ok(())
}

async fn run(args: Args) -> Result<bool> {
    check_fd_limit(args.clients)?;
    let started = Instant::now();
    let clients = match open_all(&args).await {
        Ok(clients) => clients,
        Err(errors) => {
            eprintln!(
                "idleclients: {} of {} logins failed",
                errors.len(),
                args.clients
            );
            for error in errors.iter().take(SHOWN) {
                eprintln!("error: {error}");
            }
            return Ok(false);
        }
    };
    println!(
        "ready clients={} seconds={:.1}",
        clients.len(),
        started.elapsed().as_secs_f64()
    );
    std::io::stdout().flush()?;
    hold_until_stopped(args.hold).await?;
    drop(clients);
    Ok(true)
}

#[tokio::main]
async fn main() -> ExitCode {
    pgrepl_tests::program::main("idleclients", USAGE, parse, run).await
}
