//! Helpers for the proxy integration suites in `tests/tests`: a proxy shared
//! by the tests of one binary, proxies with changed settings, psql and
//! tokio-postgres clients through an address, and raw protocol messages for
//! the tests that send what no well-behaved client would.

use crate::client::{connect, conninfo};
use crate::cluster::{Cluster, OwnCluster};
use crate::net::free_port;
use crate::node::Node;
use crate::proxy::{proxy_config, ProxyProcess};
use crate::roles::{self, DATABASE};
use anyhow::{bail, ensure, Context, Result};
use pgrepl_provision::local::pg_bin_dir;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client, NoTls, SimpleQueryMessage};

pub use pgrepl_provision::tutorial::{PRIMARY, REPLICA};

/// How long a psql run may take before it is killed and reported.
const PSQL_TIMEOUT: Duration = Duration::from_secs(60);

/// A loopback address on a port that was free a moment ago.
pub fn free_addr() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()))
}

/// A name no other test of this process uses, for tables, sequences, locks.
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// The standard configuration with `keys` (TOML `key = value` lines) added
/// to its `[proxy]` table.
pub fn proxy_config_with(cluster: &Cluster, listen: SocketAddr, keys: &str) -> String {
    let toml = proxy_config(cluster, listen);
    let anchor = format!("listen = \"{listen}\"\n");
    assert!(
        toml.contains(&anchor),
        "the standard config has no `{anchor}` line to add [proxy] keys after:\n{toml}"
    );
    toml.replacen(&anchor, &format!("{anchor}{keys}\n"), 1)
}

/// Starts a proxy of its own for the shared cluster on a free port, with
/// `keys` added to `[proxy]`; it is killed when dropped.
pub fn start_proxy(keys: &str) -> ProxyProcess {
    let cluster = Cluster::shared();
    let addr = free_addr();
    ProxyProcess::start(&proxy_config_with(cluster, addr, keys), addr)
        .unwrap_or_else(|e| panic!("cannot start a proxy: {e:#}"))
}

/// The address of the proxy shared by the tests of this binary, started on
/// first use with the standard configuration (and stopped at exit), except
/// that read-your-writes is off (these suites check where each statement runs,
/// right after writes the replica may not have replayed yet; read-your-writes
/// has a suite of its own) and that backend and client logins may take 20 s: a hundred
/// clients opening SCRAM logins at once in a debug build on a busy 2-core
/// machine can exceed the default 5 s, which is not what these suites test; and that it may
/// open 200 connections per backend (the harness's servers take 300), so that a hundred
/// concurrent sessions do not queue behind the default `[pool] max_server_connections` of 90
/// (the `pooling` suite tests that limit).
pub fn shared_proxy() -> SocketAddr {
    static PROXY: OnceLock<ProxyProcess> = OnceLock::new();
    PROXY
        .get_or_init(|| {
            let cluster = Cluster::shared();
            let addr = free_addr();
            let toml = proxy_config_with(
                cluster,
                addr,
                "connect_timeout = \"20s\"\nstartup_timeout = \"20s\"",
            ) + "\n[routing]\nread_your_writes = \"off\"\n\n[pool]\nmax_server_connections = 200\n";
            ProxyProcess::start(&toml, addr)
                .unwrap_or_else(|e| panic!("cannot start the shared proxy: {e:#}"))
        })
        .addr
}

/// Waits, off the async runtime's thread, until the replica has replayed
/// everything committed on the primary so far.
pub async fn caught_up() {
    tokio::task::spawn_blocking(|| Cluster::shared().wait_replica_caught_up())
        .await
        .expect("the catch-up task panicked")
        .expect("the replica did not catch up");
}

/// A tokio-postgres client of `app` on `appdb` through the shared proxy.
pub async fn client() -> Client {
    connect(shared_proxy(), roles::APP.name, DATABASE)
        .await
        .unwrap()
}

/// Takes a fresh [`unique`] name from `prefix`, runs the SQL `setup` makes
/// of it on the primary (see [`on_primary`]), waits until the replica has
/// replayed it and returns the name.
pub async fn replicated(prefix: &str, setup: impl FnOnce(&str) -> String) -> String {
    let name = unique(prefix);
    on_primary(&setup(&name));
    caught_up().await;
    name
}

/// Runs `sql` directly on the primary as `app`, the owner of `appdb`
/// (psql script, tuples only, unaligned, `|` between columns) and returns
/// the trimmed output; panics on failure.
pub fn on_primary(sql: &str) -> String {
    let out = Cluster::shared()
        .primary
        .psql(roles::APP.name, DATABASE, sql)
        .unwrap_or_else(|e| panic!("psql on the primary failed: {e:#}"));
    out.trim().to_owned()
}

/// Runs `script` through psql as `app` on the shared proxy (unaligned,
/// tuples only, quiet, stopping at the first error), off the async
/// runtime's thread.
pub async fn psql_script(script: String) -> PsqlRun {
    tokio::task::spawn_blocking(move || {
        psql(
            shared_proxy(),
            roles::APP.name,
            &["-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-f", "-"],
            &script,
        )
    })
    .await
    .expect("the psql task panicked")
}

/// What a psql run produced.
#[derive(Debug)]
pub struct PsqlRun {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs psql as `user` against `addr` (host, port, database `appdb`, the
/// user's harness password) with `args` after the connection options and
/// `input` on stdin; a psql that runs over [`PSQL_TIMEOUT`] is killed.
pub fn psql(addr: SocketAddr, user: &str, args: &[&str], input: &str) -> PsqlRun {
    psql_env(addr, user, args, input, &[]).into_text()
}

/// Like [`psql`], but keeps stdout as bytes (COPY output).
pub fn psql_bytes(addr: SocketAddr, user: &str, args: &[&str], input: &str) -> PsqlBytes {
    psql_env(addr, user, args, input, &[])
}

/// Like [`psql_bytes`], with extra environment variables (`PGSSLMODE`...).
pub fn psql_env(
    addr: SocketAddr,
    user: &str,
    args: &[&str],
    input: &str,
    env: &[(&str, &str)],
) -> PsqlBytes {
    let bin = pg_bin_dir()
        .expect("no PostgreSQL installation")
        .join("psql");
    let mut cmd = Command::new(bin);
    cmd.args(["-X", "-w", "-h", &addr.ip().to_string()])
        .args(["-p", &addr.port().to_string(), "-U", user, "-d", DATABASE])
        .args(args)
        .env("PGCONNECT_TIMEOUT", "10")
        .env("PGPASSFILE", "/dev/null")
        .env_remove("PGSERVICE")
        .env_remove("PGOPTIONS")
        .env_remove("PGSSLMODE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .envs(env.iter().copied());
    match roles::password(user) {
        Some(password) => cmd.env("PGPASSWORD", password),
        None => cmd.env_remove("PGPASSWORD"),
    };
    run_with_timeout(cmd, input.as_bytes(), PSQL_TIMEOUT)
        .unwrap_or_else(|e| panic!("psql {args:?} failed to run: {e:#}"))
}

/// A psql run with its stdout as bytes.
#[derive(Debug)]
pub struct PsqlBytes {
    pub success: bool,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl PsqlBytes {
    pub fn into_text(self) -> PsqlRun {
        PsqlRun {
            success: self.success,
            stdout: String::from_utf8_lossy(&self.stdout).into_owned(),
            stderr: self.stderr,
        }
    }
}

/// Runs `cmd` with `input` on stdin; kills it after `timeout`.
pub fn run_with_timeout(mut cmd: Command, input: &[u8], timeout: Duration) -> Result<PsqlBytes> {
    use std::io::{Read, Write};
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().with_context(|| format!("cannot run {cmd:?}"))?;
    let mut stdin = child.stdin.take().context("no stdin")?;
    let input = input.to_vec();
    // Threads, so a full pipe in either direction cannot block the others.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let mut stdout = child.stdout.take().context("no stdout")?;
    let mut stderr = child.stderr.take().context("no stderr")?;
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        buf
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{cmd:?} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = writer.join();
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    Ok(PsqlBytes {
        success: status.success(),
        stdout,
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    })
}

/// What the connection of a [`connect_with_messages`] client reported.
pub type ConnectionEvent = Result<AsyncMessage, tokio_postgres::Error>;

/// Connects like [`crate::connect`], but hands the connection's notices,
/// notifications and its final error to the returned receiver.
pub async fn connect_with_messages(
    addr: SocketAddr,
    user: &str,
    db: &str,
) -> Result<(Client, mpsc::UnboundedReceiver<ConnectionEvent>)> {
    let (client, mut connection) = tokio_postgres::connect(&conninfo(addr, user, db), NoTls)
        .await
        .with_context(|| format!("cannot connect to {addr} as {user}"))?;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(message)) => {
                    let _ = tx.send(Ok(message));
                }
                Some(Err(e)) => {
                    let _ = tx.send(Err(e));
                    break;
                }
                None => break,
            }
        }
    });
    Ok((client, rx))
}

/// The SQLSTATE of a failed statement or connection attempt, if the server
/// (or the proxy) sent one.
pub fn sqlstate(err: &tokio_postgres::Error) -> Option<String> {
    err.code().map(|c| c.code().to_owned())
}

/// The SQLSTATE of an error that must carry one; panics with the error.
pub fn code_of(err: &tokio_postgres::Error) -> String {
    sqlstate(err).unwrap_or_else(|| panic!("error without SQLSTATE: {err:?}"))
}

/// The text rows of a simple-protocol result, all statements together.
pub fn text_rows(messages: &[SimpleQueryMessage]) -> Vec<Vec<Option<String>>> {
    messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(
                (0..row.len())
                    .map(|i| row.get(i).map(str::to_owned))
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

/// The first column of the last row among simple-protocol results, if
/// there is one and it is not NULL.
pub fn last_first(messages: &[SimpleQueryMessage]) -> Option<String> {
    text_rows(messages)
        .last()
        .and_then(|r| r.first().cloned().flatten())
}

/// The first column of the last row a simple query returned: with
/// `current_setting('cluster_name')` as first column, where it ran.
pub async fn simple_first(client: &Client, sql: &str) -> String {
    let messages = client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    let rows = text_rows(&messages);
    let row = rows
        .last()
        .unwrap_or_else(|| panic!("{sql}: returned no rows"));
    row.first()
        .cloned()
        .flatten()
        .unwrap_or_else(|| panic!("{sql}: first column is empty"))
}

/// Which node serves a plain read on `client` now.
pub async fn node_of_read(client: &Client) -> String {
    simple_first(client, "SELECT current_setting('cluster_name')").await
}

/// Runs each of `cases` (statement, node it must run on, and what else
/// `run` needs) with `run`, which yields the first column of the statement's
/// last row: `current_setting('cluster_name')`, where it ran. Fails listing
/// every statement that ran elsewhere or failed.
pub async fn expect_nodes<'c, A, F, Fut, E>(
    cases: impl IntoIterator<Item = (&'c str, &'c str, A)>,
    mut run: F,
) where
    F: FnMut(&'c str, A) -> Fut,
    Fut: std::future::Future<Output = Result<Option<String>, E>>,
    E: std::fmt::Debug,
{
    let mut wrong = Vec::new();
    for (sql, expected, args) in cases {
        match run(sql, args).await {
            Ok(got) => {
                if got.as_deref() != Some(expected) {
                    wrong.push(format!("{sql}: ran on {got:?}, expected {expected}"));
                }
            }
            Err(e) => wrong.push(format!(
                "{sql}: failed ({e:?}), expected to run on {expected}"
            )),
        }
    }
    assert!(wrong.is_empty(), "misrouted:\n{}", wrong.join("\n"));
}

/// Hand-written protocol messages over a plain TCP stream.
pub mod raw {
    use crate::auth::{AuthRequest, PasswordAuth};
    use anyhow::{bail, Context, Result};
    use std::net::SocketAddr;
    use std::time::Duration;
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    /// How long a read may wait for the proxy.
    const READ_TIMEOUT: Duration = Duration::from_secs(10);
    /// Protocol 3.0.
    const PROTOCOL_3_0: i32 = 196_608;
    const SSL_REQUEST: i32 = 80_877_103;

    /// An untyped StartupMessage (protocol 3.0) with these parameters.
    pub fn startup_packet(params: &[(&str, &str)]) -> Vec<u8> {
        let mut body = PROTOCOL_3_0.to_be_bytes().to_vec();
        for (name, value) in params {
            body.extend_from_slice(name.as_bytes());
            body.push(0);
            body.extend_from_slice(value.as_bytes());
            body.push(0);
        }
        body.push(0);
        let mut packet = ((body.len() + 4) as u32).to_be_bytes().to_vec();
        packet.extend(body);
        packet
    }

    /// An SSLRequest packet.
    pub fn ssl_request() -> Vec<u8> {
        let mut packet = 8u32.to_be_bytes().to_vec();
        packet.extend_from_slice(&SSL_REQUEST.to_be_bytes());
        packet
    }

    /// A typed message: type byte, length, body.
    pub fn message(ty: u8, body: &[u8]) -> Vec<u8> {
        let mut msg = vec![ty];
        msg.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        msg.extend_from_slice(body);
        msg
    }

    /// A simple Query message.
    pub fn query(sql: &str) -> Vec<u8> {
        let mut body = sql.as_bytes().to_vec();
        body.push(0);
        message(b'Q', &body)
    }

    /// The next message on `stream` (plain or TLS), or None when the proxy closed it.
    pub async fn read_message<S: AsyncRead + Unpin>(
        stream: &mut S,
    ) -> std::io::Result<Option<RawMessage>> {
        let mut header = [0u8; 5];
        if let Err(e) = stream.read_exact(&mut header).await {
            return if closed(&e) { Ok(None) } else { Err(e) };
        }
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        if len < 4 {
            return Err(std::io::Error::other(format!(
                "invalid length {len} in a message from the proxy"
            )));
        }
        let mut body = vec![0u8; len - 4];
        if let Err(e) = stream.read_exact(&mut body).await {
            return if closed(&e) { Ok(None) } else { Err(e) };
        }
        Ok(Some(RawMessage {
            ty: header[0],
            body,
        }))
    }

    /// One message from the proxy.
    #[derive(Debug, Clone)]
    pub struct RawMessage {
        pub ty: u8,
        pub body: Vec<u8>,
    }

    impl RawMessage {
        /// The fields of an ErrorResponse or NoticeResponse.
        pub fn fields(&self) -> Vec<(u8, String)> {
            self.body
                .split(|&b| b == 0)
                .filter(|f| !f.is_empty())
                .map(|f| (f[0], String::from_utf8_lossy(&f[1..]).into_owned()))
                .collect()
        }

        pub fn field(&self, code: u8) -> Option<String> {
            self.fields()
                .into_iter()
                .find(|(c, _)| *c == code)
                .map(|(_, v)| v)
        }

        /// The SQLSTATE of an ErrorResponse.
        pub fn code(&self) -> Option<String> {
            if self.ty == b'E' {
                self.field(b'C')
            } else {
                None
            }
        }
    }

    /// A client connection speaking bytes.
    pub struct RawClient {
        pub stream: TcpStream,
    }

    impl RawClient {
        pub async fn connect(addr: SocketAddr) -> Result<RawClient> {
            let stream = TcpStream::connect(addr)
                .await
                .with_context(|| format!("cannot connect to {addr}"))?;
            stream.set_nodelay(true)?;
            Ok(RawClient { stream })
        }

        /// Connects and logs in as a user the proxy trusts; returns after
        /// the first ReadyForQuery.
        pub async fn login_trust(addr: SocketAddr, user: &str, db: &str) -> Result<RawClient> {
            RawClient::login(addr, user, db, None).await
        }

        /// Connects and logs in, answering the password request the server makes
        /// (cleartext, md5 or SCRAM-SHA-256; `password` None: a user it trusts); returns
        /// after the first ReadyForQuery. A refusal is an error with its fields.
        pub async fn login(
            addr: SocketAddr,
            user: &str,
            db: &str,
            password: Option<&str>,
        ) -> Result<RawClient> {
            let mut client = RawClient::connect(addr).await?;
            client
                .send(&startup_packet(&[("user", user), ("database", db)]))
                .await?;
            let mut auth = PasswordAuth::new(user, password);
            // Bounded: a login is a handful of messages and the parameters the server reports.
            for _ in 0..1_000 {
                let Some(m) = client.recv().await? else {
                    bail!("the connection closed during the login");
                };
                match m.ty {
                    b'R' => {
                        if let Some(body) = auth.reply(AuthRequest::parse(&m.body)?)? {
                            client.send(&message(b'p', &body)).await?;
                        }
                    }
                    b'E' => bail!("login refused: {:?}", m.fields()),
                    b'Z' => return Ok(client),
                    _ => {}
                }
            }
            bail!("no ReadyForQuery among 1000 messages of a login")
        }

        pub async fn send(&mut self, bytes: &[u8]) -> Result<()> {
            self.stream.write_all(bytes).await?;
            self.stream.flush().await?;
            Ok(())
        }

        /// One byte (the answer to SSLRequest); None when the proxy closed.
        pub async fn recv_byte(&mut self) -> Result<Option<u8>> {
            let mut byte = [0u8];
            match tokio::time::timeout(READ_TIMEOUT, self.stream.read(&mut byte)).await {
                Err(_) => bail!("no byte from the proxy within {READ_TIMEOUT:?}"),
                Ok(Ok(0)) => Ok(None),
                Ok(Ok(_)) => Ok(Some(byte[0])),
                Ok(Err(e)) if closed(&e) => Ok(None),
                Ok(Err(e)) => Err(e.into()),
            }
        }

        /// The next message; None when the proxy closed the connection.
        pub async fn recv(&mut self) -> Result<Option<RawMessage>> {
            match tokio::time::timeout(READ_TIMEOUT, read_message(&mut self.stream)).await {
                Err(_) => bail!("no message from the proxy within {READ_TIMEOUT:?}"),
                Ok(result) => Ok(result?),
            }
        }

        /// Messages up to and including the first of type `ty`; fails if the
        /// connection closes first.
        pub async fn recv_until(&mut self, ty: u8) -> Result<Vec<RawMessage>> {
            let mut messages = Vec::new();
            // Bounded: no exchange in the suites needs more messages.
            for _ in 0..100_000 {
                match self.recv().await? {
                    Some(m) => {
                        let done = m.ty == ty;
                        messages.push(m);
                        if done {
                            return Ok(messages);
                        }
                    }
                    None => bail!(
                        "connection closed before a '{}' message; got {:?}",
                        ty as char,
                        summary(&messages)
                    ),
                }
            }
            bail!("no '{}' message among 100000", ty as char)
        }

        /// Everything until the proxy closes the connection.
        pub async fn recv_to_end(&mut self) -> Result<Vec<RawMessage>> {
            let mut messages = Vec::new();
            for _ in 0..100_000 {
                match self.recv().await? {
                    Some(m) => messages.push(m),
                    None => return Ok(messages),
                }
            }
            bail!("the proxy did not close the connection")
        }
    }

    /// Type bytes and error fields, for failure messages.
    pub fn summary(messages: &[RawMessage]) -> Vec<String> {
        messages
            .iter()
            .map(|m| match m.ty {
                b'E' | b'N' => format!("{}{:?}", m.ty as char, m.fields()),
                ty => (ty as char).to_string(),
            })
            .collect()
    }

    fn closed(e: &std::io::Error) -> bool {
        use std::io::ErrorKind::*;
        matches!(
            e.kind(),
            UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe
        )
    }
}

/// Fails unless `cond` holds within `timeout`, checking every 50 ms.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Ends (`pg_terminate_backend`) the one backend of `node` running a statement that
/// contains `marker`, once it runs there; fails after `within`.
pub async fn terminate_running(node: &Node, marker: &str, within: Duration) {
    let kill = format!(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE state = 'active' AND query LIKE '%{marker}%' AND pid <> pg_backend_pid()"
    );
    let what = format!("a statement marked {marker} to run on {}", node.name);
    eventually(&what, within, || {
        let (node, kill) = (node.clone(), kill.clone());
        async move {
            tokio::task::spawn_blocking(move || node.psql(roles::SUPERUSER, "postgres", &kill))
                .await
                .unwrap()
                .is_ok_and(|out| out.trim() == "1")
        }
    })
    .await
    .unwrap();
}

/// How long one suite test may run before it fails instead of hanging.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs a test body, failing it if it takes longer than [`TEST_TIMEOUT`]
/// (a proxy that stops answering must not hang the suite).
pub async fn bounded<F: std::future::Future>(body: F) -> F::Output {
    bounded_for(TEST_TIMEOUT, body).await
}

/// Like [`bounded`], with another limit.
pub async fn bounded_for<F: std::future::Future>(limit: Duration, body: F) -> F::Output {
    match tokio::time::timeout(limit, body).await {
        Ok(out) => out,
        Err(_) => panic!("test timed out after {limit:?} (the proxy stopped answering?)"),
    }
}

/// A cluster of the calling test's own (for tests that pause or stop its replica), with
/// `setup` run on the primary as `app` and replayed, and a proxy whose config is the standard
/// one with `extra` TOML appended.
pub fn own_cluster_and_proxy(name: &str, setup: &str, extra: &str) -> (OwnCluster, ProxyProcess) {
    let cluster = OwnCluster::start(name).unwrap();
    cluster
        .primary
        .psql(roles::APP.name, DATABASE, setup)
        .unwrap();
    cluster.wait_replica_caught_up().unwrap();
    let addr = free_addr();
    let proxy = ProxyProcess::start(&(proxy_config(&cluster, addr) + extra), addr).unwrap();
    (cluster, proxy)
}

/// Runs `sql` on `cluster`'s replica as the superuser, off the async runtime's thread.
pub async fn on_replica(cluster: &OwnCluster, sql: &'static str) {
    let replica = cluster.replica.clone();
    tokio::task::spawn_blocking(move || replica.psql(roles::SUPERUSER, "postgres", sql))
        .await
        .unwrap()
        .unwrap();
}

/// pgbench through the proxy, as `pgbench` and its arguments would run it; its output.
pub fn pgbench(addr: SocketAddr, args: &[&str]) -> String {
    pgbench_on(addr, DATABASE, args)
}

/// [`pgbench`] on database `db`.
pub fn pgbench_on(addr: SocketAddr, db: &str, args: &[&str]) -> String {
    let mut cmd = Command::new(pg_bin_dir().unwrap().join("pgbench"));
    cmd.args([
        "-h",
        "127.0.0.1",
        "-p",
        &addr.port().to_string(),
        "-U",
        roles::APP.name,
    ])
    .args(args)
    .arg(db)
    .env("PGPASSWORD", "app-pass")
    .env("PGPASSFILE", "/dev/null");
    let run = run_with_timeout(cmd, b"", Duration::from_secs(120)).unwrap();
    let out = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(
        run.success,
        "pgbench {args:?} failed:\n{out}\n{}",
        run.stderr
    );
    out
}
