//! Which replica a session reads from, among those the caller finds usable, by
//! `[routing] balance` and the replicas' weights. Lock-free: a pick is a few atomic operations
//! and one pass (two for the weighted policies) over the replicas. A reload changes the policy
//! and the weights in place, and takes replicas out (weight 0) or in.

use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use pgrepl_config::{Balance, Named};

use crate::backend::{BackendId, Backends};
use rand::Rng;

pub struct Balancer {
    /// `[routing] balance`, by its place in [`Balance::ALL`].
    policy: AtomicU8,
    /// By backend id, for every id the registry may hand out (the first node's only when
    /// it is configured as a member: following the primary, any node may be a replica).
    replicas: Box<[Replica]>,
    /// Picks look at ids `first..span`: those handed out so far, from the first node only
    /// when it is a member.
    first: AtomicUsize,
    span: AtomicUsize,
    /// Round robin's position; for least connections, where the scan starts, so ties rotate.
    turn: AtomicU64,
}

struct Replica {
    backend: BackendId,
    /// 0 while it is not a configured replica (removed, or not added yet).
    weight: AtomicU64,
    /// Sessions holding a lease on it.
    readers: Arc<AtomicUsize>,
}

impl Replica {
    fn weight(&self) -> u64 {
        self.weight.load(Relaxed)
    }
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
        let balancer = Balancer {
            policy: AtomicU8::new(0),
            replicas: BackendId::all(Backends::CAPACITY)
                .map(|backend| Replica {
                    backend,
                    weight: AtomicU64::new(0),
                    readers: Arc::default(),
                })
                .collect(),
            first: AtomicUsize::new(1),
            span: AtomicUsize::new(1),
            turn: AtomicU64::new(0),
        };
        let members: Vec<(BackendId, u32)> = weights
            .into_iter()
            .enumerate()
            .map(|(i, weight)| (BackendId::nth(i + 1), weight))
            .collect();
        balancer.configure(policy, &members);
        balancer
    }

    /// Makes `members` (replica ids with their weights) the replicas picks choose from, by
    /// `policy`; any other replica gets no more sessions. Sessions reading from one keep
    /// their lease until they leave it.
    pub fn configure(&self, policy: Balance, members: &[(BackendId, u32)]) {
        let span = members
            .iter()
            .map(|(id, _)| id.index() + 1)
            .max()
            .unwrap_or(1)
            .max(self.span.load(Relaxed));
        for replica in &self.replicas[..span] {
            let weight = members
                .iter()
                .find(|(id, _)| *id == replica.backend)
                .map_or(0, |(_, w)| u64::from(*w));
            replica.weight.store(weight, Relaxed);
        }
        let policy = Balance::ALL.iter().position(|p| *p == policy).unwrap_or(0);
        self.policy.store(policy as u8, Relaxed);
        let first = !members.iter().any(|(id, _)| id.is_first());
        self.first.store(usize::from(first), Relaxed);
        self.span.store(span, Relaxed);
    }

    fn policy(&self) -> Balance {
        Balance::ALL[usize::from(self.policy.load(Relaxed))]
    }

    /// The replicas picks look at (some may have weight 0).
    fn members(&self) -> &[Replica] {
        let span = self.span.load(Relaxed).min(self.replicas.len());
        &self.replicas[self.first.load(Relaxed).min(span)..span]
    }

    /// Sessions reading from replica `backend` now (0 for the writer).
    pub fn readers(&self, backend: BackendId) -> usize {
        self.replicas
            .get(backend.index())
            .map_or(0, |r| r.readers.load(Relaxed))
    }

    /// A lease on a replica `usable` accepts; None when there is none.
    pub fn pick(&self, usable: impl Fn(BackendId) -> bool) -> Option<ReplicaLease> {
        let chosen = match self.policy() {
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
        let members = self.members();
        let n = members.len().max(1);
        let start = (self.turn.fetch_add(1, Relaxed) % n as u64) as usize;
        let (head, tail) = members.split_at(start.min(members.len()));
        let mut best: Option<(&Replica, u64, u64)> = None;
        for replica in usable_in(tail.iter().chain(head), usable) {
            let (readers, weight) = (replica.readers.load(Relaxed) as u64, replica.weight());
            // readers / weight < best's, without division.
            if best.is_none_or(|(_, b_readers, b_weight)| readers * b_weight < b_readers * weight) {
                best = Some((replica, readers, weight));
            }
        }
        best.map(|(replica, _, _)| replica)
    }

    /// The replica whose share of the usable replicas' total weight holds the slot `slot_of`
    /// picks from `0..total`.
    fn by_weight(
        &self,
        usable: &impl Fn(BackendId) -> bool,
        slot_of: impl FnOnce(u64) -> u64,
    ) -> Option<&Replica> {
        let members = self.members();
        let total: u64 = usable_in(members.iter(), usable).map(Replica::weight).sum();
        if total == 0 {
            return None;
        }
        let mut slot = slot_of(total);
        let mut last = None;
        for replica in usable_in(members.iter(), usable) {
            let weight = replica.weight();
            if slot < weight {
                return Some(replica);
            }
            slot -= weight;
            last = Some(replica);
        }
        // A replica became unusable (or a reload changed weights) between the two passes:
        // any usable one will do.
        last
    }
}

/// The configured replicas among `replicas` that `usable` accepts.
fn usable_in<'a>(
    replicas: impl Iterator<Item = &'a Replica>,
    usable: impl Fn(BackendId) -> bool,
) -> impl Iterator<Item = &'a Replica> {
    replicas.filter(move |r| r.weight() > 0 && usable(r.backend))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(balancer: &Balancer, picks: usize, usable: impl Fn(BackendId) -> bool) -> Vec<usize> {
        let mut counts = vec![0; balancer.span.load(Relaxed)];
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
            b.members()
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

    #[test]
    fn a_reload_reweights_removes_and_adds_replicas_in_place() {
        let replica = BackendId::nth;
        for policy in [
            Balance::LeastConnections,
            Balance::RoundRobin,
            Balance::Random,
        ] {
            let b = Balancer::new(policy, [1, 1]);
            let kept = b.pick(|id| id == replica(1)).unwrap();
            // Replica 1 removed, replica 3 added with twice replica 2's weight.
            b.configure(policy, &[(replica(2), 1), (replica(3), 2)]);
            // Held, so that least connections spreads them by weight too.
            let leases: Vec<ReplicaLease> = (0..300).map(|_| b.pick(|_| true).unwrap()).collect();
            let on = |id| leases.iter().filter(|l| l.backend() == id).count();
            let c = [on(replica(1)), on(replica(2)), on(replica(3))];
            assert_eq!((c[0], c[1] + c[2]), (0, 300), "{policy:?}: {c:?}");
            assert!(c[2] > c[1], "{policy:?}: {c:?}");
            drop(leases);
            assert_eq!(
                b.readers(replica(1)),
                1,
                "a lease outlives its replica's removal"
            );
            drop(kept);
            assert_eq!(b.readers(replica(1)), 0);
            b.configure(Balance::RoundRobin, &[]);
            assert!(b.pick(|_| true).is_none(), "no replica configured");
        }
    }

    #[test]
    fn the_first_node_is_picked_only_as_a_member() {
        let b = Balancer::new(Balance::RoundRobin, [1]);
        assert_eq!(counts(&b, 4, |_| true), [0, 4]);
        b.configure(
            Balance::RoundRobin,
            &[(BackendId::FIRST, 1), (BackendId::nth(1), 1)],
        );
        assert_eq!(counts(&b, 4, |_| true), [2, 2]);
    }
}
