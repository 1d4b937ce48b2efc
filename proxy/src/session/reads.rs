//! Where a session's reads may go right now: its replica while the monitor finds it readable
//! (up, a standby, within `max_replica_lag`) and, under read-your-writes, once it has replayed
//! what the session must see (`causal`); otherwise another readable replica, or the primary.
//!
//! Every check is a few atomic loads of the monitor's published state: no round trip.

use tokio::io::{AsyncRead, AsyncWrite};

use super::causal::CausalStep;
use super::decide::ReplicaView;
use super::{Session, Slot};
use crate::balance::ReplicaLease;
use crate::health::Unusable;
use crate::route::Reason;

impl<R, W> Session<R, W>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    /// The replica a read planned for one can have now. `forced` (a hint) takes one even if
    /// it lags or has not replayed the session's writes (never one that is down).
    pub(super) fn replica_view(&mut self, forced: bool) -> ReplicaView {
        let left = self.leave_unreadable_replica(forced);
        if self.client.replica.is_none() && !self.leases.holds(Slot::Replica) {
            self.client.replica = self.shared.pick_replica();
        }
        let Some(replica) = self.client.replica.as_ref().map(ReplicaLease::backend) else {
            return ReplicaView::Unavailable(self.no_replica_reason(left));
        };
        if forced {
            return ReplicaView::Ready;
        }
        if let Some(bound) = self.unit_hint.bound_in(self.max_staleness) {
            let staleness = self.shared.health.staleness_nanos(replica);
            if u128::from(staleness) > bound.as_nanos() {
                return ReplicaView::Unavailable(Reason::Lag);
            }
        }
        match self.causal_step(replica) {
            CausalStep::Ready => ReplicaView::Ready,
            CausalStep::Wait(awaited) => ReplicaView::Waits(awaited),
            CausalStep::Primary => ReplicaView::NotReplayed,
        }
    }

    /// Why no replica could be picked: none configured, or none readable (lagging, if that
    /// is what the one just left or the first lagging one is).
    fn no_replica_reason(&self, left: Option<Unusable>) -> Reason {
        let backends = self.shared.pool.backends();
        let writer = self.shared.health.writer().backend;
        let mut replicas = backends
            .active()
            .filter(|b| Some(b.id) != writer)
            .peekable();
        if replicas.peek().is_none() {
            return Reason::NoReplica;
        }
        let lagging = |why: Option<Unusable>| matches!(why, Some(Unusable::Lagging));
        let health = &self.shared.health;
        if lagging(left) || replicas.any(|b| lagging(health.readable(b.id).err())) {
            Reason::Lag
        } else {
            Reason::ReplicaDown
        }
    }

    /// Gives up the session's replica when the monitor says it may not serve reads (a hint
    /// to read from replicas tolerates lag, not a replica that is down). Its connection is
    /// returned only when idle; a busy one finishes what it runs first. Returns why it left.
    fn leave_unreadable_replica(&mut self, forced: bool) -> Option<Unusable> {
        let lease = self.client.replica.as_ref()?;
        let unusable = match self.shared.health.readable(lease.backend()) {
            Ok(()) => return None,
            Err(Unusable::Lagging) if forced => return None,
            Err(why) => why,
        };
        let busy = self.inflight == Some(Slot::Replica)
            || self.tx == Some(Slot::Replica)
            || self.open_batch == Some(Slot::Replica);
        if busy {
            return None;
        }
        tracing::debug!(replica = %lease.backend(), %unusable, "leaving a replica that cannot serve reads");
        self.replica_failed();
        Some(unusable)
    }

    /// The session's replica failed or may not serve reads: drop it (its connection too, when
    /// idle) and read from the primary until another replica is picked.
    pub(super) fn replica_failed(&mut self) {
        self.client.replica = None;
        // What it served is bounded by the primary's position from a look-up sent later.
        self.position_unknown();
        if let Some(conn) = self.leases.release(Slot::Replica) {
            self.untrack_cancel(&conn);
            self.return_lease(Slot::Replica, conn);
        }
    }
}
