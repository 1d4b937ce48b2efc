//! State shared by every session of one running proxy.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::futures::OwnedNotified;
use tokio::sync::Notify;

use pgrepl_config::ReadYourWrites;

use crate::backend::Pool;
use crate::balance::{Balancer, ReplicaLease};
use crate::cancel::CancelRegistry;
use crate::client::auth::Users;
use crate::health::Health;
use crate::route::Classifier;

pub struct Shared {
    pub max_message_size: usize,
    pub pool: Arc<Pool>,
    pub classifier: Classifier,
    pub cancels: CancelRegistry,
    pub users: Users,
    pub shutdown: Shutdown,
    pub health: Arc<Health>,
    /// `[routing] read_your_writes`.
    pub read_your_writes: ReadYourWrites,
    /// When the last write through this proxy committed (monitor clock, 0 = none yet), for
    /// `read_your_writes = "global"`.
    pub last_write: AtomicU64,
    balancer: Balancer,
}

impl Shared {
    pub fn new(
        max_message_size: usize,
        pool: Arc<Pool>,
        classifier: Classifier,
        users: Users,
        health: Arc<Health>,
        balancer: Balancer,
        read_your_writes: ReadYourWrites,
    ) -> Shared {
        Shared {
            max_message_size,
            pool,
            classifier,
            cancels: CancelRegistry::default(),
            users,
            shutdown: Shutdown::default(),
            health,
            read_your_writes,
            last_write: AtomicU64::new(0),
            balancer,
        }
    }

    /// A replica to read from, other than `exclude`: one the monitor finds readable (up, in
    /// recovery, within `[routing] max_replica_lag`), chosen by `[routing] balance`. None when
    /// there is none; reads then go to the primary.
    pub fn pick_replica(&self, exclude: Option<usize>) -> Option<ReplicaLease> {
        self.balancer
            .pick(|backend| Some(backend) != exclude && self.health.readable(backend).is_ok())
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
