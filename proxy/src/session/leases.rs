//! The session's server connections: opened on first use, returned to the pool (or closed)
//! when done, and which one the client's cancel reaches.

use super::*;

impl<R, W> Session<R, W>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    /// Pools a clean lease; closes any other, first cancelling what it still runs so no
    /// statement or lock outlives the client.
    pub(super) fn return_lease(&self, slot: Slot, conn: BackendConn) {
        let clean = conn.is_quiet()
            && !conn.has_temp_schema
            && self.tx != Some(slot)
            && self.open_batch != Some(slot);
        if clean {
            self.shared.pool.release(conn);
            return;
        }
        if !conn.proto.syncs.is_empty() {
            let target = cancel_of(&conn);
            tokio::spawn(async move {
                let _ = send_cancel(&target).await;
                drop(conn);
            });
        }
    }

    /// Where the lease for `slot` is kept.
    pub(super) fn holder(&mut self, slot: Slot) -> &mut Option<BackendConn> {
        match slot {
            Slot::Primary => &mut self.primary,
            Slot::Replica => &mut self.replica,
        }
    }

    pub(super) fn slot_mut(&mut self, slot: Slot) -> Option<&mut BackendConn> {
        self.holder(slot).as_mut()
    }

    /// Opens the lease for `target`, or, when that is a replica that cannot be reached, the
    /// primary instead: a read is not failed because a replica is down. Returns where the
    /// lease is.
    ///
    /// A lease already open, as for nearly every statement, is found by the callers without
    /// an async call; opening one (rare, and slow anyway) runs boxed. That keeps the futures
    /// of every statement's path small: they are moved, by size, each time one is called.
    pub(super) async fn open_lease(&mut self, decision: &mut Decision) -> Result<(), BackendError> {
        match self.ensure_lease(decision.slot).await {
            Err(e) if decision.slot == Slot::Replica => {
                tracing::warn!(error = %e, "replica unavailable; reading from the primary");
                self.replica_failed();
                *decision = Decision::read(Slot::Primary, Reason::ReplicaDown);
                self.ensure_lease(Slot::Primary).await
            }
            done => done,
        }
    }

    /// Opens the lease for `slot` on first use.
    pub(super) async fn ensure_lease(&mut self, slot: Slot) -> Result<(), BackendError> {
        let backend = match slot {
            Slot::Primary => 0,
            Slot::Replica => self.client.replica.as_ref().map_or(0, ReplicaLease::index),
        };
        let holder = match slot {
            Slot::Primary => &mut self.primary,
            Slot::Replica => &mut self.replica,
        };
        if holder.is_none() {
            let key = PoolKey {
                backend,
                startup: self.client.startup.clone(),
            };
            *holder = Some(
                self.shared
                    .pool
                    .acquire(&key, self.client.password.as_deref())
                    .await?,
            );
        }
        Ok(())
    }

    /// Tells the client a unit could not start because its backend is unavailable.
    pub(super) fn report_unavailable(&mut self, err: &BackendError) {
        tracing::warn!(error = %err, "backend unavailable");
        err.encode(Severity::Error, &mut self.cout);
    }

    /// Points the client's cancel key at the backend now running its statement.
    /// Compared by the connection's own key: the slot may hold another connection by now.
    pub(super) fn track_cancel(&mut self, slot: Slot) {
        let Some(conn) = pick(&mut self.primary, &mut self.replica, slot) else {
            return;
        };
        if self.cancel_key == Some(conn.cancel_key) {
            return;
        }
        self.cancel_key = Some(conn.cancel_key);
        self.client.cancel.set(Some(cancel_of(conn)));
    }

    /// The connection the client's cancel would reach leaves the session: a cancel must not
    /// reach whoever uses it next.
    pub(super) fn untrack_cancel(&mut self, conn: &BackendConn) {
        if self.cancel_key == Some(conn.cancel_key) {
            self.cancel_key = None;
            self.client.cancel.set(None);
        }
    }
}

/// The lease in `slot`, borrowed apart from the rest of the session.
pub(super) fn pick<'a>(
    primary: &'a mut Option<BackendConn>,
    replica: &'a mut Option<BackendConn>,
    slot: Slot,
) -> Option<&'a mut BackendConn> {
    match slot {
        Slot::Primary => primary.as_mut(),
        Slot::Replica => replica.as_mut(),
    }
}

pub(super) fn cancel_of(conn: &BackendConn) -> BackendCancel {
    BackendCancel {
        host: conn.info.host.clone(),
        port: conn.info.port,
        pid: conn.cancel_key.0,
        secret: conn.cancel_key.1,
    }
}
