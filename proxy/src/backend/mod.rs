//! Connections from the proxy to PostgreSQL servers: opening and authenticating them, and
//! pooling them per (backend, user, database, startup parameters that cannot be set later).

pub mod apply;
mod conn;
mod connect;
mod line;
mod pause;
mod pool;
mod prepared;
mod protocol_state;
mod registry;
mod socket;
mod statement_ids;
mod stream;

pub use conn::{BackendConn, Counted, SettingsMark};
pub use connect::{BackendError, ServerParams};
pub use pause::{Interrupted, PauseConflict, PauseGate, Paused};
pub use pool::{close, IdleServer, KeyFigures, KeyPool, Pool, PoolKey, NO_WORKER, RESET_SETTINGS};
pub use prepared::{same_name, Prepared};
pub use protocol_state::{
    Origin, ParseOrigin, Pending, ProtocolState, SavepointOp, StatementClose, Watch,
};
pub use registry::{Backends, Full};
pub use socket::CutDetection;
pub use statement_ids::StatementIds;
pub use stream::{ServerRead, ServerWrite};

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::telemetry::BackendMeters;

/// Which server: by the order it was configured in, the first node first (see
/// [`Backends`]). Also the index of the per-backend tables (health, tallies, pools).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendId(usize);

impl BackendId {
    /// The first configured node: the writer without `[routing] follow_primary`.
    pub const FIRST: BackendId = BackendId(0);

    /// The `n`-th configured server: the primary, then the replicas in order.
    pub const fn nth(n: usize) -> BackendId {
        BackendId(n)
    }

    /// Every server of a list of `count`, the primary first.
    pub fn all(count: usize) -> impl Iterator<Item = BackendId> {
        (0..count).map(BackendId)
    }

    /// The first configured node (the writer only without `follow_primary`).
    pub const fn is_first(self) -> bool {
        self.0 == 0
    }

    /// Its place in per-backend lists.
    pub const fn index(self) -> usize {
        self.0
    }
}

impl fmt::Display for BackendId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// One configured PostgreSQL server.
#[derive(Debug)]
pub struct BackendInfo {
    pub id: BackendId,
    pub name: String,
    pub host: String,
    pub port: u16,
    /// May be chosen as the writer (`promotable` in the configuration).
    pub promotable: bool,
    /// Connections to it open now, leased or pooled.
    pub open: AtomicUsize,
    /// A reload removed it from the configuration: it gets no new sessions or connections.
    pub retired: AtomicBool,
    pub meters: BackendMeters,
}

impl BackendInfo {
    /// A server configured as `config`, under id `id`.
    pub fn new(
        id: BackendId,
        config: &pgrepl_config::BackendConfig,
        primary_name: &str,
        timing: Option<crate::telemetry::Timing>,
    ) -> BackendInfo {
        BackendInfo {
            id,
            name: config.name.clone(),
            host: config.host.clone(),
            port: config.port,
            promotable: config.promotable,
            open: AtomicUsize::new(0),
            retired: AtomicBool::new(false),
            meters: BackendMeters::register(&config.name, id.is_first(), primary_name, timing),
        }
    }

    pub fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
    }

    /// Marks it removed from the configuration.
    pub fn retire(&self) {
        self.retired.store(true, Ordering::Release);
    }

    /// Connections to this backend open now.
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }
}

impl fmt::Display for BackendInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}:{})", self.name, self.host, self.port)
    }
}

/// What a client asked for at startup, which every backend connection it uses must match.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StartupInfo {
    pub user: String,
    pub database: String,
    /// Startup parameters a connection must be opened with (`client::params`), sorted by
    /// name. The others are applied on lease: they are not part of the pool key.
    pub options: Vec<(String, String)>,
}

/// The startup parameters a client's connections get on lease, and the ParameterStatus
/// values it was told at startup: what its settings return to on `RESET`.
#[derive(Debug, Clone, Default)]
pub struct StartupSettings {
    pub settings: Vec<(String, String)>,
    pub told: std::sync::Arc<ServerParams>,
}
