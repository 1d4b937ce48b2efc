//! Which replica a session reads from, among those the caller finds usable, by
//! `[routing] balance` and the replicas' weights. Lock-free: a pick is a few atomic operations
//! and one pass (two for the weighted policies) over the replicas.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use pgrepl_config::Balance;

use crate::backend::BackendId;
use rand::Rng;

pub struct Balancer {
    policy: Balance,
    replicas: Box<[Replica]>,
    /// Round robin's position; for least connections, where the scan starts, so ties rotate.
    turn: AtomicU64,
}

struct Replica {
    backend: BackendId,
    weight: u64,
    /// Sessions holding a lease on it.
    readers: Arc<AtomicUsize>,
}

/// A session's claim on a replica: it counts as one of the replica's readers until dropped.
#[derive(Debug)]
pub struct ReplicaLease {
    backend: BackendId,
    readers: Arc<AtomicUsize>,
}

impl ReplicaLease {
    /// The replica.
    pub fn backend(&self) -> BackendId {
        self.backend
    }
}

impl Drop for ReplicaLease {
    fn drop(&mut self) {
        self.readers.fetch_sub(1, Relaxed);
    }
}

impl Balancer {
    /// `weights` are the replicas', in config order (the backends after the primary).
    pub fn new(policy: Balance, weights: impl IntoIterator<Item = u32>) -> Balancer {
        let replicas = weights
            .into_iter()
            .enumerate()
            .map(|(i, weight)| Replica {
                backend: BackendId::nth(i + 1),
                weight: weight.into(),
                readers: Arc::default(),
            })
            .collect();
        Balancer {
            policy,
            replicas,
            turn: AtomicU64::new(0),
        }
    }

    /// Sessions reading from replica `backend` now (0 for the primary).
    pub fn readers(&self, backend: BackendId) -> usize {
        self.replicas
            .iter()
            .find(|r| r.backend == backend)
            .map_or(0, |r| r.readers.load(Relaxed))
    }

    /// A lease on a replica `usable` accepts; None when there is none.
    pub fn pick(&self, usable: impl Fn(BackendId) -> bool) -> Option<ReplicaLease> {
        let chosen = match self.policy {
            Balance::LeastConnections => self.least_loaded(&usable),
            Balance::RoundRobin => {
                let turn = self.turn.fetch_add(1, Relaxed);
                self.by_weight(&usable, |total| turn % total)
            }
            Balance::Random => self.by_weight(&usable, |total| rand::rng().random_range(0..total)),
        }?;
        chosen.readers.fetch_add(1, Relaxed);
        Some(ReplicaLease {
            backend: chosen.backend,
            readers: chosen.readers.clone(),
        })
    }

    /// The usable replica with the fewest readers per unit of weight.
    fn least_loaded(&self, usable: &impl Fn(BackendId) -> bool) -> Option<&Replica> {
        let n = self.replicas.len().max(1);
        let start = (self.turn.fetch_add(1, Relaxed) % n as u64) as usize;
        let (head, tail) = self.replicas.split_at(start);
        let mut best: Option<(&Replica, u64)> = None;
        for replica in usable_in(tail.iter().chain(head), usable) {
            let readers = replica.readers.load(Relaxed) as u64;
            // readers / weight < best's, without division.
            if best.is_none_or(|(b, b_readers)| readers * b.weight < b_readers * replica.weight) {
                best = Some((replica, readers));
            }
        }
        best.map(|(replica, _)| replica)
    }

    /// The replica whose share of the usable replicas' total weight holds the slot `slot_of`
    /// picks from `0..total`.
    fn by_weight(
        &self,
        usable: &impl Fn(BackendId) -> bool,
        slot_of: impl FnOnce(u64) -> u64,
    ) -> Option<&Replica> {
        let total: u64 = usable_in(self.replicas.iter(), usable)
            .map(|r| r.weight)
            .sum();
        if total == 0 {
            return None;
        }
        let mut slot = slot_of(total);
        let mut last = None;
        for replica in usable_in(self.replicas.iter(), usable) {
            if slot < replica.weight {
                return Some(replica);
            }
            slot -= replica.weight;
            last = Some(replica);
        }
        // A replica became unusable between the two passes: any usable one will do.
        last
    }
}

fn usable_in<'a>(
    replicas: impl Iterator<Item = &'a Replica>,
    usable: impl Fn(BackendId) -> bool,
) -> impl Iterator<Item = &'a Replica> {
    replicas.filter(move |r| usable(r.backend))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(balancer: &Balancer, picks: usize, usable: impl Fn(BackendId) -> bool) -> Vec<usize> {
        let mut counts = vec![0; balancer.replicas.len() + 1];
        for _ in 0..picks {
            counts[balancer.pick(&usable).expect("a replica").backend().index()] += 1;
        }
        counts
    }

    #[test]
    fn round_robin_follows_the_weights() {
        let b = Balancer::new(Balance::RoundRobin, [3, 1]);
        assert_eq!(counts(&b, 400, |_| true), [0, 300, 100]);
    }

    #[test]
    fn random_follows_the_weights() {
        let b = Balancer::new(Balance::Random, [3, 1]);
        let c = counts(&b, 40_000, |_| true);
        // Expected 30000 : 10000; the standard deviation is under 100.
        assert!((9_000..11_000).contains(&c[2]), "{c:?}");
    }

    #[test]
    fn only_usable_replicas_are_picked() {
        for policy in [
            Balance::LeastConnections,
            Balance::RoundRobin,
            Balance::Random,
        ] {
            let b = Balancer::new(policy, [1, 5, 1]);
            let c = counts(&b, 50, |id| id != BackendId::nth(2));
            assert_eq!((c[0], c[2], c[1] + c[3]), (0, 0, 50), "{policy:?}");
            assert!(b.pick(|_| false).is_none(), "{policy:?}");
        }
        for policy in [
            Balance::LeastConnections,
            Balance::RoundRobin,
            Balance::Random,
        ] {
            assert!(Balancer::new(policy, []).pick(|_| true).is_none());
        }
    }

    #[test]
    fn least_connections_fills_replicas_in_proportion_to_their_weights() {
        let b = Balancer::new(Balance::LeastConnections, [2, 1]);
        let mut leases: Vec<ReplicaLease> = (0..30).map(|_| b.pick(|_| true).unwrap()).collect();
        let readers = |b: &Balancer| {
            b.replicas
                .iter()
                .map(|r| r.readers.load(Relaxed))
                .collect::<Vec<_>>()
        };
        assert_eq!(readers(&b), [20, 10]);
        // Sessions leaving replica 1 send the next ones there until it is level again.
        leases.retain(|l| l.backend() != BackendId::nth(1));
        assert_eq!(readers(&b), [0, 10]);
        let more: Vec<ReplicaLease> = (0..20).map(|_| b.pick(|_| true).unwrap()).collect();
        assert!(more.iter().all(|l| l.backend() == BackendId::nth(1)));
        drop((leases, more));
        assert_eq!(readers(&b), [0, 0]);
    }

    #[test]
    fn least_connections_rotates_among_equally_loaded_replicas() {
        let b = Balancer::new(Balance::LeastConnections, [1, 1]);
        // Each lease is dropped at once, so every pick is a tie.
        assert_eq!(counts(&b, 10, |_| true), [0, 5, 5]);
    }
}
