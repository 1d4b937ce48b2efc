//! State shared by every session of one running proxy.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Instant;

use tokio::sync::futures::OwnedNotified;
use tokio::sync::Notify;

use pgrepl_config::Config;

use crate::admin::Averages;
use crate::backend::{PauseGate, Pool};
use crate::balance::{Balancer, ReplicaLease};
use crate::cancel::CancelRegistry;
use crate::client::auth::Users;
use crate::client::logins::Logins;
use crate::clients::ClientRegistry;
use crate::health::Health;
use crate::live::{Published, RoutingSettings};
use crate::reload::Reloader;
use crate::telemetry::{ClientMeters, ReloadMeters, Tally};

pub struct Shared {
    /// `[proxy] max_message_size`.
    pub max_message_size: AtomicUsize,
    pub pool: Arc<Pool>,
    /// Sessions keeping their primary connection in transaction pooling (they hold state
    /// only it has).
    pub pinned_sessions: AtomicUsize,
    /// Numbers prepared-statement definitions for every session.
    pub statement_ids: Arc<crate::backend::StatementIds>,
    pub cancels: CancelRegistry,
    pub users: Published<Users>,
    pub shutdown: Shutdown,
    pub health: Arc<Health>,
    /// `[routing]` settings that sessions read per statement, from their own copy.
    pub routing: Published<RoutingSettings>,
    /// For `read_your_writes = "global"`: the first primary look-up round sent after the
    /// last commit through this proxy (0 = none yet); every read must see its position.
    pub commit_round: AtomicU64,
    pub balancer: Balancer,
    /// Authenticated clients, against `[proxy] max_client_connections`.
    pub clients: ClientCount,
    /// Connections not yet authenticated, against `[proxy] max_pending_logins`.
    pub logins: Arc<Logins>,
    pub client_meters: ClientMeters,
    pub reload_meters: ReloadMeters,
    /// `[metrics] enabled`: statements, bytes and staleness are counted.
    pub counting: bool,
    /// One per worker thread, by worker index: what its sessions counted.
    pub tallies: Box<[Arc<Tally>]>,
    /// The client listener's address, for the status page.
    pub listen: String,
    pub started: Instant,
    /// The clients connected now, for the admin console.
    pub registry: Arc<ClientRegistry>,
    /// The admin console's `PAUSE` and `RESUME`.
    pub pause: PauseGate,
    /// The averages of the admin console's `SHOW STATS`.
    pub averages: Averages,
    /// The configuration in force (`[admin]`, `SHOW CONFIG`); replaced by a reload.
    pub config: std::sync::RwLock<Arc<Config>>,
    /// What applies a changed configuration (SIGHUP, the admin console's RELOAD); set once
    /// the proxy has one.
    pub reloader: OnceLock<Weak<Reloader>>,
}

impl Shared {
    /// A replica to read from: one the monitor finds readable (up, in recovery, within
    /// `[routing] max_replica_lag`), chosen by `[routing] balance`. None when there is none;
    /// reads then go to the primary.
    pub fn pick_replica(&self) -> Option<ReplicaLease> {
        self.balancer
            .pick(|backend| self.health.readable(backend).is_ok())
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<Config> {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// What reloads this proxy's configuration, once it has one.
    pub fn reloader(&self) -> Option<Arc<Reloader>> {
        self.reloader.get().and_then(Weak::upgrade)
    }
}

/// Authenticated clients, against `[proxy] max_client_connections`.
pub struct ClientCount {
    count: Arc<AtomicUsize>,
    max: AtomicUsize,
}

impl ClientCount {
    pub fn new(max: usize) -> ClientCount {
        ClientCount {
            count: Arc::default(),
            max: AtomicUsize::new(max),
        }
    }

    /// A reloaded limit: clients over a lower one stay; new ones are refused until enough
    /// have left.
    pub fn set_max(&self, max: usize) {
        self.max.store(max, Ordering::Relaxed);
    }

    /// A slot for one more client, or None at the limit.
    pub fn take(&self) -> Option<ClientSlot> {
        let prev = self.count.fetch_add(1, Ordering::AcqRel);
        if prev >= self.max() {
            self.count.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(ClientSlot(self.count.clone()))
    }

    pub fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    pub fn max(&self) -> usize {
        self.max.load(Ordering::Relaxed)
    }
}

/// Counts an authenticated client against `max_client_connections` while it lives.
pub struct ClientSlot(Arc<AtomicUsize>);

impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Tells sessions the proxy is shutting down: a flag they check as they loop (cheap on the hot
/// path), and a wake-up for those waiting idle on their client.
#[derive(Default)]
pub struct Shutdown {
    flag: AtomicBool,
    notify: Arc<Notify>,
}

impl Shutdown {
    pub fn begin(&self) {
        self.flag.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    pub fn is_set(&self) -> bool {
        self.flag.load(Ordering::Relaxed)
    }

    /// A wake-up for `begin`; it fires even if `begin` comes before its first poll.
    pub fn wait(&self) -> OwnedNotified {
        self.notify.clone().notified_owned()
    }
}
