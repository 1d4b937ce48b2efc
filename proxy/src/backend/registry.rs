//! Every server the proxy has been configured with since it started, by [`BackendId`]: the
//! primary, then the replicas in the order they were configured or added by a reload.
//!
//! Ids are never reused. A replica a reload removes keeps its entry, retired: sessions may
//! still hold connections to it and leases on it, and what the workers counted under its id
//! stays its own. Tables indexed by backend (health, pool slots, tallies, the balancer) are
//! sized [`Backends::CAPACITY`] once, so adding a replica never moves them under the sessions
//! reading them.

use std::ops::Index;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use super::{BackendId, BackendInfo};

pub struct Backends {
    entries: Box<[OnceLock<Arc<BackendInfo>>]>,
    /// Ids handed out so far: entries `0..len` are set.
    len: AtomicUsize,
}

/// No id is left for another backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "all {} backend ids are in use (a removed replica's is not reused)",
    Backends::CAPACITY
)]
pub struct Full;

impl Backends {
    /// Backends one proxy process may ever have: the primary and 63 replicas, counting each
    /// replica a reload adds (a replica whose address changes is added anew).
    pub const CAPACITY: usize = 64;

    /// An empty registry: the primary is the first one added.
    pub fn new() -> Backends {
        Backends {
            entries: (0..Self::CAPACITY).map(|_| OnceLock::new()).collect(),
            len: AtomicUsize::new(0),
        }
    }

    /// Registers the next server under a new id. The caller (startup, or the one reload that
    /// runs at a time) is the only one adding.
    pub fn add(&self, make: impl FnOnce(BackendId) -> BackendInfo) -> Result<BackendId, Full> {
        let index = self.len.load(Ordering::Acquire);
        let entry = self.entries.get(index).ok_or(Full)?;
        let id = BackendId::nth(index);
        let info = make(id);
        debug_assert_eq!(info.id, id);
        if entry.set(Arc::new(info)).is_err() {
            unreachable!("backend ids are handed out by one caller at a time");
        }
        self.len.store(index + 1, Ordering::Release);
        Ok(id)
    }

    /// Ids left for replicas a reload adds.
    pub fn room(&self) -> usize {
        Self::CAPACITY - self.len()
    }

    /// Ids handed out so far, retired ones included.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every backend registered, retired ones included, by id.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<BackendInfo>> {
        self.entries[..self.len()].iter().filter_map(OnceLock::get)
    }

    /// The backends configured now: the primary first, then the replicas not retired.
    pub fn active(&self) -> impl Iterator<Item = &Arc<BackendInfo>> {
        self.iter().filter(|b| !b.is_retired())
    }
}

impl Default for Backends {
    fn default() -> Self {
        Self::new()
    }
}

impl Index<usize> for Backends {
    type Output = Arc<BackendInfo>;

    /// The backend with id index `index`; ids come from this registry, so it is there.
    fn index(&self, index: usize) -> &Arc<BackendInfo> {
        self.entries[index]
            .get()
            .expect("a backend id from the registry")
    }
}

#[cfg(test)]
mod tests {
    use pgrepl_config::BackendConfig;

    use super::*;

    fn info(name: &str) -> impl FnOnce(BackendId) -> BackendInfo + '_ {
        move |id| {
            let config = BackendConfig {
                name: name.to_owned(),
                host: "127.0.0.1".to_owned(),
                port: 5432,
                weight: 1,
                promotable: true,
            };
            BackendInfo::new(id, &config, "db01", None)
        }
    }

    #[test]
    fn ids_follow_the_order_of_registration_and_are_never_reused() {
        let backends = Backends::new();
        backends.add(info("db01")).unwrap();
        backends.add(info("db02")).unwrap();
        assert_eq!(backends.len(), 2);
        backends[1].retire();
        let added = backends.add(info("db02")).unwrap();
        assert_eq!(added, BackendId::nth(2), "a new id, not the retired one's");
        let names = |it: &mut dyn Iterator<Item = &Arc<BackendInfo>>| {
            it.map(|b| (b.id.index(), b.name.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(&mut backends.iter()),
            [(0, "db01".into()), (1, "db02".into()), (2, "db02".into())]
        );
        assert_eq!(
            names(&mut backends.active()),
            [(0, "db01".into()), (2, "db02".into())]
        );
    }

    #[test]
    fn the_registry_refuses_backends_past_its_capacity() {
        let backends = Backends::new();
        backends.add(info("db01")).unwrap();
        for _ in 1..Backends::CAPACITY {
            backends.add(info("replica")).unwrap();
        }
        assert_eq!(backends.room(), 0);
        assert_eq!(backends.add(info("one-more")), Err(Full));
    }
}
