//! Running the pgrepl-proxy binary under test as a child process.

use crate::cluster::Cluster;
use crate::net::free_port;
use crate::node::Node;
use crate::poll::wait_until;
use crate::roles::{Role, LOGIN_ROLES};
use crate::shared::run_dir;
use anyhow::{anyhow, Context, Result};
use pgrepl_provision::local::log::tail;
use std::fs::{self, File};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

const BIN_NAME: &str = "pgrepl-proxy";
const START_TIMEOUT: Duration = Duration::from_secs(20);
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
const LOG_TAIL_LINES: usize = 40;

/// Numbers the proxies of this process, to name their files.
static NEXT_ID: AtomicUsize = AtomicUsize::new(0);
/// Proxies spawned and not yet reaped, killed at exit: a proxy kept in a
/// static is never dropped. An unreaped child's pid cannot be reused, so
/// signalling these is safe.
static LIVE: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// The pgrepl-proxy binary: `$PGREPL_PROXY_BIN`, else the one cargo built
/// next to this executable (test binaries live in `<target>/<profile>/deps`),
/// else `$CARGO_TARGET_DIR/debug/pgrepl-proxy`.
///
/// Cargo does not build a dependency's binaries for `cargo test -p
/// pgrepl-tests`, hence the hint in the error.
pub fn proxy_bin() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("PGREPL_PROXY_BIN") {
        let path = PathBuf::from(path);
        anyhow::ensure!(
            path.is_file(),
            "PGREPL_PROXY_BIN={} is not a file",
            path.display()
        );
        return Ok(path);
    }
    let exe = std::env::current_exe().context("cannot find the running executable")?;
    let mut dir = exe.parent().context("executable has no directory")?;
    if dir.ends_with("deps") {
        dir = dir.parent().unwrap_or(dir);
    }
    let mut candidates = vec![dir.join(BIN_NAME)];
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        candidates.push(PathBuf::from(target).join("debug").join(BIN_NAME));
    }
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .with_context(|| {
            let tried: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
            format!(
                "no {BIN_NAME} binary (tried {}): build it with `cargo build --workspace`, \
             or set PGREPL_PROXY_BIN",
                tried.join(", ")
            )
        })
}

/// Runs every suite's proxies in one pooling mode: `transaction` or `session` (the
/// configuration's default when unset). Not a `PGREPL_` name: the proxy would read it.
pub const POOL_MODE_VAR: &str = "TEST_POOL_MODE";

/// The `[pool] mode` the suites run in ([`POOL_MODE_VAR`]), for a configuration that does
/// not choose one itself: a test of one mode's behaviour says so in its configuration.
fn suite_pool_mode(config_toml: &str) -> Result<Option<String>> {
    let Some(mode) = std::env::var_os(POOL_MODE_VAR) else {
        return Ok(None);
    };
    let mode = mode
        .into_string()
        .map_err(|_| anyhow!("{POOL_MODE_VAR} is not UTF-8"))?;
    anyhow::ensure!(
        mode == "session" || mode == "transaction",
        "{POOL_MODE_VAR}={mode}: expected session or transaction"
    );
    let config: toml::Table = config_toml.parse().context("the proxy configuration")?;
    let chosen = config
        .get("pool")
        .and_then(|pool| pool.get("mode"))
        .is_some();
    Ok((!chosen).then_some(mode))
}

/// A command running the pgrepl-proxy binary. The binary's own `PGREPL_PROXY_BIN` is not
/// passed on: the proxy would read it as configuration (an unknown key) and refuse to start.
pub fn proxy_command() -> Command {
    let mut cmd = Command::new(proxy_bin().expect("no pgrepl-proxy binary"));
    cmd.env_remove("PGREPL_PROXY_BIN");
    cmd
}

/// A running `pgrepl-proxy serve`; killed when dropped.
#[derive(Debug)]
pub struct ProxyProcess {
    pub addr: SocketAddr,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
    child: Child,
}

impl ProxyProcess {
    /// Writes `config_toml` into [`run_dir`](crate::run_dir), starts the proxy
    /// on it with stdout and stderr going to a log file there, and waits until
    /// `addr` accepts TCP connections. Errors include the end of the log.
    pub fn start(config_toml: &str, addr: SocketAddr) -> Result<ProxyProcess> {
        Self::start_with_env(config_toml, addr, &[])
    }

    /// [`ProxyProcess::start`] with extra environment variables (such as `RUST_LOG`).
    pub fn start_with_env(
        config_toml: &str,
        addr: SocketAddr,
        env: &[(&str, &str)],
    ) -> Result<ProxyProcess> {
        let bin = proxy_bin()?;
        let mut command = proxy_command();
        if let Some(mode) = suite_pool_mode(config_toml)? {
            command.env("PGREPL_POOL__MODE", mode);
        }
        command.envs(env.iter().copied());
        let stem = run_dir().join(format!("proxy-{}", NEXT_ID.fetch_add(1, Ordering::Relaxed)));
        let config_path = stem.with_extension("toml");
        let log_path = stem.with_extension("log");
        fs::write(&config_path, config_toml)
            .with_context(|| format!("cannot write {}", config_path.display()))?;
        let log = File::create(&log_path)
            .with_context(|| format!("cannot create {}", log_path.display()))?;
        let child = command
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot run {}", bin.display()))?;
        live_proxies().push(child.id());
        // Lets a later run kill this proxy if this process dies without cleanup.
        fs::write(stem.with_extension("pid"), child.id().to_string())?;
        let mut proxy = ProxyProcess {
            addr,
            config_path,
            log_path,
            child,
        };
        proxy.wait_accepting()?;
        Ok(proxy)
    }

    fn wait_accepting(&mut self) -> Result<()> {
        let (addr, child) = (self.addr, &mut self.child);
        let waited = wait_until(
            &format!("pgrepl-proxy to accept connections on {addr}"),
            START_TIMEOUT,
            || {
                if let Some(status) = child.try_wait()? {
                    return Err(anyhow!("pgrepl-proxy exited early ({status})"));
                }
                Ok(TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok())
            },
        );
        waited.map_err(|e| self.with_log(e))
    }

    /// Where the proxy serves `/metrics`, `/healthz`, `/readyz` and `/status`: `[metrics]
    /// listen` of its config file.
    pub fn endpoint(&self) -> SocketAddr {
        let text = fs::read_to_string(&self.config_path).expect("the proxy's config file");
        let config: toml::Table = text.parse().expect("the proxy's config is TOML");
        config["metrics"]["listen"]
            .as_str()
            .and_then(|listen| listen.parse().ok())
            .expect("[metrics] listen is an IP address and port")
    }

    /// Everything the proxy has logged so far.
    pub fn log(&self) -> String {
        fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Writes `config_toml` over the proxy's config file and sends SIGHUP: the proxy reads
    /// its configuration again.
    pub fn reload_with(&mut self, config_toml: &str) -> Result<()> {
        fs::write(&self.config_path, config_toml)
            .with_context(|| format!("cannot write {}", self.config_path.display()))?;
        if let Some(status) = self.child.try_wait()? {
            return Err(self.with_log(anyhow!("pgrepl-proxy exited ({status})")));
        }
        // SAFETY: the child has not been reaped (checked above), so the pid is still ours.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGHUP) };
        Ok(())
    }

    /// Sends SIGTERM and waits for the proxy to exit; after a timeout it is
    /// killed and an error returned, since it did not shut down gracefully.
    pub fn terminate(&mut self) -> Result<ExitStatus> {
        if let Some(status) = self.child.try_wait()? {
            return Ok(status);
        }
        // SAFETY: the child has not been reaped, so the pid is still ours.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let child = &mut self.child;
        let exited = wait_until("pgrepl-proxy to exit after SIGTERM", STOP_TIMEOUT, || {
            Ok(child.try_wait()?.is_some())
        });
        if let Err(e) = exited {
            let _ = self.child.kill();
            let _ = self.child.wait();
            return Err(self.with_log(e));
        }
        Ok(self.child.wait()?)
    }

    /// Waits up to `timeout` for the proxy to exit by itself (the admin console's
    /// SHUTDOWN), returning its status; an error with the end of its log if it does not.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let child = &mut self.child;
        let exited = wait_until("pgrepl-proxy to exit by itself", timeout, || {
            Ok(child.try_wait()?.is_some())
        });
        exited.map_err(|e| self.with_log(e))?;
        Ok(self.child.wait()?)
    }

    fn with_log(&self, e: anyhow::Error) -> anyhow::Error {
        anyhow!(
            "{e:#}\n--- last lines of {}:\n{}",
            self.log_path.display(),
            tail(&self.log_path, LOG_TAIL_LINES)
        )
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        // A failing test's proxy says what it saw: whether it was still running (a reset
        // connection may be its exit) and the end of its log.
        if std::thread::panicking() {
            let status = match self.child.try_wait() {
                Ok(Some(status)) => format!("exited ({status})"),
                Ok(None) => "running".to_owned(),
                Err(e) => format!("unknown ({e})"),
            };
            eprintln!(
                "--- pgrepl-proxy on {} was {status} when its test failed; last lines of {}:\n{}",
                self.addr,
                self.log_path.display(),
                tail(&self.log_path, LOG_TAIL_LINES)
            );
        }
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let pid = self.child.id();
        live_proxies().retain(|&p| p != pid);
    }
}

fn live_proxies() -> std::sync::MutexGuard<'static, Vec<u32>> {
    // A panic while holding the lock cannot leave the list inconsistent.
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Kills the proxies tests did not drop; runs at process exit.
pub(crate) fn kill_live_proxies() {
    for &pid in live_proxies().iter() {
        // SAFETY: pids in LIVE belong to unreaped children of this process.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    }
}

/// Kills proxies left running by a dead test process in `dir`, identified by
/// their pid files; a pid only counts if that process's command line names
/// the proxy's config file, so a recycled pid is never hit.
pub(crate) fn kill_stale_proxies(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for path in entries.flatten().map(|e| e.path()) {
        if path.extension().is_none_or(|ext| ext != "pid") {
            continue;
        }
        let Some(pid) = fs::read_to_string(&path)
            .ok()
            .and_then(|s| s.trim().parse::<libc::pid_t>().ok())
            .filter(|&pid| pid > 0)
        else {
            continue;
        };
        let config = path.with_extension("toml");
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if cmdline
            .split(|&b| b == 0)
            .any(|arg| arg == config.as_os_str().as_bytes())
        {
            // SAFETY: the process was identified by its command line above.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// The standard proxy configuration for `cluster`: listen on `listen`, the
/// primary and every replica as backends, and one user per harness role.
/// Callers may append more TOML tables.
pub fn proxy_config(cluster: &Cluster, listen: SocketAddr) -> String {
    let node = |n: &Node| {
        format!(
            "name = \"{}\"\nhost = \"{}\"\nport = {}\n",
            n.name, n.ip, n.port
        )
    };
    let mut toml = format!(
        "[proxy]\nlisten = \"{listen}\"\n\n[primary]\n{}",
        node(&cluster.primary)
    );
    for replica in &cluster.replicas {
        toml += &format!("\n[[replicas]]\n{}", node(replica));
    }
    toml += &users_toml(&LOGIN_ROLES);
    // Proxies run side by side: each gets an endpoint port of its own.
    toml += &format!("\n[metrics]\nlisten = \"127.0.0.1:{}\"\n", free_port());
    toml
}

/// [`proxy_config`] with every node in `[[nodes]]` (promotable, so the proxy follows the
/// primary) instead of `[primary]` and `[[replicas]]`.
pub fn nodes_config(cluster: &Cluster, listen: SocketAddr) -> String {
    proxy_config(cluster, listen)
        .replace("[primary]", "[[nodes]]")
        .replace("[[replicas]]", "[[nodes]]")
}

/// `[[users]]` entries for `roles`, with their harness passwords.
pub fn users_toml(roles: &[Role]) -> String {
    let mut toml = String::new();
    for role in roles {
        toml += &format!("\n[[users]]\nname = \"{}\"\n", role.name);
        if let Some(password) = role.password {
            toml += &format!("password = \"{password}\"\n");
        }
        toml += &format!("auth = \"{}\"\n", proxy_auth(role));
    }
    toml
}

/// How the proxy authenticates a role's clients: like the server for
/// passwordless and md5 roles, SCRAM for the others (cleartext passwords
/// are not something to offer clients).
fn proxy_auth(role: &Role) -> &'static str {
    match (role.password, role.hba_method) {
        (None, _) => "trust",
        (Some(_), "md5") => "md5",
        (Some(_), _) => "scram-sha-256",
    }
}
