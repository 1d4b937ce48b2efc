//! State shared by every session of one running proxy.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::futures::OwnedNotified;
use tokio::sync::Notify;

use crate::backend::Pool;
use crate::cancel::CancelRegistry;
use crate::client::auth::Users;
use crate::route::ClassifyCache;

pub struct Shared {
    pub max_message_size: usize,
    pub pool: Arc<Pool>,
    pub classifier: ClassifyCache,
    pub cancels: CancelRegistry,
    pub users: Users,
    pub shutdown: Shutdown,
    /// Backend indexes of the replicas.
    replicas: Vec<usize>,
    next_replica: AtomicUsize,
}

impl Shared {
    pub fn new(
        max_message_size: usize,
        pool: Arc<Pool>,
        classifier: ClassifyCache,
        users: Users,
    ) -> Shared {
        let replicas = (1..pool.backends().len()).collect();
        Shared {
            max_message_size,
            pool,
            classifier,
            cancels: CancelRegistry::default(),
            users,
            shutdown: Shutdown::default(),
            replicas,
            next_replica: AtomicUsize::new(0),
        }
    }

    /// The replica a new session reads from: round robin over the configured replicas.
    pub fn pick_replica(&self) -> Option<usize> {
        if self.replicas.is_empty() {
            return None;
        }
        let n = self.next_replica.fetch_add(1, Ordering::Relaxed);
        Some(self.replicas[n % self.replicas.len()])
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
