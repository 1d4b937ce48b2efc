//! The typed configuration the proxy runs with, one struct per TOML section.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// Everything the proxy needs to run; see `Config::load`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub proxy: ProxyConfig,
    /// The first node: `[primary]`, or the first `[[nodes]]` entry. With `[routing]
    /// follow_primary` off it is the writer; with it on, the writer is whichever node the
    /// servers say (see `Config::nodes`).
    pub primary: BackendConfig,
    /// The other nodes: `[[replicas]]`, or the `[[nodes]]` entries after the first.
    pub replicas: Vec<BackendConfig>,
    /// Which form the file or the environment used for the nodes.
    pub nodes_form: NodesForm,
    pub users: Vec<UserConfig>,
    pub pool: PoolConfig,
    pub routing: RoutingConfig,
    pub metrics: MetricsConfig,
    pub log: LogConfig,
    pub health: HealthConfig,
    pub tls: Option<TlsConfig>,
    pub provision: ProvisionConfig,
    pub admin: AdminConfig,
}

/// `[proxy]`: the client-facing listener and its limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyConfig {
    /// `host:port` to accept clients on.
    pub listen: String,
    /// Authenticated clients at most; connections still logging in do not count.
    pub max_client_connections: usize,
    /// Connections accepted and not yet authenticated, at most: past this the oldest of them
    /// is closed to make room.
    pub max_pending_logins: usize,
    /// Pending logins from one source address, at most (0: no per-address bound); past this
    /// that address's oldest is closed.
    pub max_pending_logins_per_address: usize,
    /// Backend TCP connect plus authentication.
    pub connect_timeout: Duration,
    /// A server connection whose data stays unacknowledged this long, or that answers no
    /// keepalive probe, is closed (TCP_USER_TIMEOUT and keepalive): a silent network cut
    /// fails its statement instead of hanging. Zero: the operating system's defaults.
    pub server_tcp_user_timeout: Duration,
    /// A client must finish startup and authentication within this from its accept (the
    /// login timeout).
    pub startup_timeout: Duration,
    /// How long a graceful shutdown waits for sessions to end.
    pub shutdown_timeout: Duration,
    /// Largest protocol message accepted, in bytes.
    pub max_message_size: usize,
    /// Event-loop threads serving sessions; 0 means one per CPU.
    pub workers: usize,
}

/// `[primary]`, each `[[replicas]]` entry or each `[[nodes]]` entry: a PostgreSQL server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendConfig {
    /// Unique across the nodes; used in logs, metrics and errors.
    pub name: String,
    pub host: String,
    pub port: u16,
    /// Share of reads relative to the other replicas (ignored while it is the writer).
    pub weight: u32,
    /// May be chosen as the writer when `[routing] follow_primary` is on (default: true for
    /// `[primary]` and `[[nodes]]`, false for `[[replicas]]`).
    pub promotable: bool,
}

/// How the configuration lists its servers. Both say the same thing (`Config::nodes`); the
/// form only decides how keys are named in errors and in `SHOW CONFIG`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum NodesForm {
    /// `[primary]` and `[[replicas]]`, as before `[[nodes]]` existed (the defaults' form).
    #[default]
    PrimaryReplicas,
    /// `[[nodes]]`.
    Nodes,
}

/// `[[users]]`: who may connect to the proxy; the proxy uses the same credentials to the backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserConfig {
    pub name: String,
    /// Absent only when `auth` is `trust`.
    pub password: Option<String>,
    /// How clients authenticate to the proxy.
    pub auth: AuthMethod,
}

/// How a client proves its identity to the proxy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum AuthMethod {
    #[default]
    ScramSha256,
    Md5,
    Trust,
}

/// A closed set of names a config value must be one of.
pub trait Named: Copy + 'static {
    /// Every value, in the order error messages list them.
    const ALL: &'static [Self];
    /// The name used in TOML (and, for auth methods, in PostgreSQL's `pg_hba.conf`).
    fn as_str(self) -> &'static str;
}

impl Named for AuthMethod {
    const ALL: &'static [Self] = &[AuthMethod::ScramSha256, AuthMethod::Md5, AuthMethod::Trust];

    fn as_str(self) -> &'static str {
        match self {
            AuthMethod::ScramSha256 => "scram-sha-256",
            AuthMethod::Md5 => "md5",
            AuthMethod::Trust => "trust",
        }
    }
}

impl fmt::Display for AuthMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[pool]`: how clients share server connections, and how many a backend may have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConfig {
    /// When a client gives its server connections back.
    pub mode: PoolMode,
    /// Server connections per (backend, user, database) at most; 0: bounded only by
    /// `max_server_connections`.
    pub default_pool_size: usize,
    /// Server connections per (backend, user, database) kept open once it has been used.
    pub min_pool_size: usize,
    /// Extra connections a pool may open for clients that waited `reserve_pool_timeout`.
    pub reserve_pool_size: usize,
    pub reserve_pool_timeout: Duration,
    /// Connections the proxy opens to one backend at most (leased and idle together); more
    /// clients wait for one. Below the server's `max_connections` (100 by default), which the
    /// monitor and catalog also use.
    pub max_server_connections: usize,
    /// How long a client's statement waits for a server connection before it fails.
    pub query_wait_timeout: Duration,
    /// Idle connections kept per (backend, user, database) at most.
    pub max_idle: usize,
    /// Idle connections unused for this long are closed.
    pub server_idle_timeout: Duration,
    /// Connections older than this are closed when they come back idle.
    pub server_lifetime: Duration,
    /// Protocol-level prepared statements one server connection keeps at most; past that
    /// the least recently used is closed (0: no bound).
    pub max_prepared_statements: usize,
    /// `[pool.databases.<name>]`: what the pools of one database do differently.
    pub databases: BTreeMap<String, PoolOverride>,
    /// `[pool.users.<name>]`: what the pools of one user do differently; wins over
    /// `databases` (see `PoolConfig::settings_for`).
    pub users: BTreeMap<String, PoolOverride>,
}

/// `[pool.databases.<name>]` or `[pool.users.<name>]`: the `[pool]` keys one database or
/// user may set for itself, as PgBouncer's `[databases]` and `[users]` do; None keeps the
/// value from below.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolOverride {
    pub mode: Option<PoolMode>,
    pub default_pool_size: Option<usize>,
    pub min_pool_size: Option<usize>,
    pub reserve_pool_size: Option<usize>,
}

/// `[pool] mode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum PoolMode {
    /// A client keeps its server connections until it disconnects.
    #[default]
    Session,
    /// A client holds a server connection only while a transaction, an extended-protocol
    /// batch or a COPY is open, or while its session holds state that lives on one
    /// connection (temporary tables, LISTEN, session advisory locks, SQL `PREPARE`,
    /// cursors `WITH HOLD`).
    Transaction,
}

impl Named for PoolMode {
    const ALL: &'static [Self] = &[PoolMode::Session, PoolMode::Transaction];

    fn as_str(self) -> &'static str {
        match self {
            PoolMode::Session => "session",
            PoolMode::Transaction => "transaction",
        }
    }
}

/// `[routing]`: when a read may go to a replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutingConfig {
    /// Replicas staler than this get no reads.
    pub max_replica_lag: Duration,
    /// Statement classifications remembered by SQL text.
    pub classify_cache_size: usize,
    /// Whose writes a read must see before it may use a replica.
    pub read_your_writes: ReadYourWrites,
    /// How long a read waits for its replica to replay what it must see before it goes to
    /// the primary instead (0: never waits).
    pub causal_wait: Duration,
    /// Where the leading reads of a transaction opened by a plain `BEGIN` run.
    pub transaction_reads: TransactionReads,
    /// How a read picks among the usable replicas.
    pub balance: Balance,
    /// Functions that send a statement to the primary, beyond the built-in list and the
    /// catalog's volatile user functions (lower-case, optionally schema-qualified).
    pub write_functions: Vec<String>,
    /// Functions known to have no side effects even if volatile: they keep a read a read.
    pub read_only_functions: Vec<String>,
    /// Writes go to whichever promotable node is out of recovery on the highest timeline,
    /// rather than always to the first node (default: on when at least two nodes are
    /// promotable).
    pub follow_primary: bool,
    /// Consecutive samples that must agree before a new writer is accepted.
    pub writer_confirmations: usize,
    /// How long a write waits while a new writer is being confirmed or writes are held.
    pub writer_wait: Duration,
}

/// `[routing] read_your_writes`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum ReadYourWrites {
    /// A session's reads see its own committed writes.
    #[default]
    Session,
    /// Every session's reads see every write committed through this proxy.
    Global,
    /// Every read sees every commit acknowledged anywhere before it arrived.
    Linearizable,
    /// Reads may miss recent writes (still bounded by `max_replica_lag`).
    Off,
}

impl Named for ReadYourWrites {
    const ALL: &'static [Self] = &[
        ReadYourWrites::Session,
        ReadYourWrites::Global,
        ReadYourWrites::Linearizable,
        ReadYourWrites::Off,
    ];

    fn as_str(self) -> &'static str {
        match self {
            ReadYourWrites::Session => "session",
            ReadYourWrites::Global => "global",
            ReadYourWrites::Linearizable => "linearizable",
            ReadYourWrites::Off => "off",
        }
    }
}

/// `[routing] transaction_reads`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum TransactionReads {
    /// The whole transaction runs on the primary, from its `BEGIN`.
    #[default]
    Primary,
    /// The proxy answers a plain `BEGIN` itself and runs the transaction's leading reads on a
    /// replica; the real transaction opens on the primary at its first statement that is not
    /// a plain read.
    Replica,
}

impl Named for TransactionReads {
    const ALL: &'static [Self] = &[TransactionReads::Primary, TransactionReads::Replica];

    fn as_str(self) -> &'static str {
        match self {
            TransactionReads::Primary => "primary",
            TransactionReads::Replica => "replica",
        }
    }
}

/// `[routing] balance`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Balance {
    /// The usable replica with the fewest sessions reading from it, relative to its weight.
    #[default]
    LeastConnections,
    /// In turn, each replica as often as its weight says.
    RoundRobin,
    /// At random, in proportion to the weights.
    Random,
}

impl Named for Balance {
    const ALL: &'static [Self] = &[
        Balance::LeastConnections,
        Balance::RoundRobin,
        Balance::Random,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Balance::LeastConnections => "least_connections",
            Balance::RoundRobin => "round_robin",
            Balance::Random => "random",
        }
    }
}

/// `[metrics]`: the HTTP endpoint serving `/metrics`, `/healthz`, `/readyz` and `/status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsConfig {
    pub listen: String,
    /// False: no Prometheus recorder and no per-statement timing; the endpoint still serves
    /// the health and status pages.
    pub enabled: bool,
}

/// `[log]`: what the proxy logs and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// A `tracing` filter such as `info` or `info,pgrepl_proxy=debug`; `RUST_LOG` wins.
    pub level: String,
    pub format: LogFormat,
    /// Statements (or extended-protocol batches) slower than this are logged; zero: none.
    pub slow_statement: Duration,
    /// Slow-statement lines carry the SQL text (never bind parameters).
    pub statement_text: bool,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum LogFormat {
    /// For a person reading a terminal.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

impl Named for LogFormat {
    const ALL: &'static [Self] = &[LogFormat::Text, LogFormat::Json];

    fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

/// `[health]`: the backend monitor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthConfig {
    pub interval: Duration,
}

/// `[admin]`: the admin console, a virtual database the proxy answers itself (PgBouncer's
/// `SHOW POOLS`, `PAUSE`... for operators' scripts and exporters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    /// The name clients connect to for the console; no backend database of that name is
    /// reachable through the proxy.
    pub database: String,
    /// `[[users]]` names allowed on the console; empty: nobody.
    pub users: Vec<String>,
    /// How long `PAUSE` waits for the server connections in use to be given back.
    pub pause_timeout: Duration,
}

/// `[tls]`: present means clients may negotiate TLS with the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// `[provision]`: how `pgrepl-proxy provision` builds the db01/db02 pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvisionConfig {
    pub runtime: RuntimeKind,
    /// Docker image both containers run (the tutorial's PostgreSQL 16.1 by default).
    pub image: String,
    /// The user-defined Docker network the pair shares.
    pub network: String,
    /// Host ports (on 127.0.0.1) for db01 and db02, so the proxy on the host reaches both.
    pub primary_port: u16,
    pub replica_port: u16,
    /// The replication user's password; absent means a random one.
    pub replication_password: Option<String>,
    /// Local runtime: where the data directories `db01/` and `db02/` live.
    pub data_dir: PathBuf,
    /// How many replicas: db02..db(N+1); dbNN listens on `replica_port + NN - 2`.
    pub replicas: u8,
    /// Synchronous replication: a commit waits until one replica has flushed it
    /// (`synchronous_standby_names = 'ANY 1 (...)'` on every node).
    pub sync: bool,
    /// `[provision.nodes.dbNN]`: where each node runs when they are not all on one Docker
    /// engine and network, by node name (`db01`..`db99`); nodes not listed keep the defaults.
    pub nodes: BTreeMap<String, NodeSettings>,
}

impl ProvisionConfig {
    /// `node`'s `[provision.nodes.<node>]` settings; all unset when it has none.
    pub fn node(&self, node: &str) -> NodeSettings {
        self.nodes.get(node).cloned().unwrap_or_default()
    }
}

/// `[provision.nodes.dbNN]`: one node's place on several hosts (Docker runtime). Every key is
/// optional; unset, the node is where a single-host `provision` puts it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeSettings {
    /// The Docker engine the node runs on, as DOCKER_HOST would name it (`unix://` or
    /// `tcp://`); unset: DOCKER_HOST, else the local socket.
    pub docker_host: Option<String>,
    /// The Docker network the node joins; unset: `[provision] network`.
    pub network: Option<String>,
    /// Where the other nodes reach it (port 5432), and where its own connections to them come
    /// from (their pg_hba.conf line); unset: its address on its network.
    pub peer_address: Option<Ipv4Addr>,
    /// The published address the proxy connects to; unset: 127.0.0.1 and the node's port.
    pub listen: Option<SocketAddr>,
}

/// Where the pair runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum RuntimeKind {
    /// Containers through the Docker Engine API.
    #[default]
    Docker,
    /// Processes from the installed PostgreSQL (initdb, pg_ctl, pg_basebackup).
    Local,
}

impl Named for RuntimeKind {
    const ALL: &'static [Self] = &[RuntimeKind::Docker, RuntimeKind::Local];

    fn as_str(self) -> &'static str {
        match self {
            RuntimeKind::Docker => "docker",
            RuntimeKind::Local => "local",
        }
    }
}

impl fmt::Display for RuntimeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
