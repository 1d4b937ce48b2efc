//! State shared by every session of one running proxy.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

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
