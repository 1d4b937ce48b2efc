//! The session's server connections: opened on first use, returned to the pool (or closed)
//! when done, and which one the client's cancel reaches.

use super::wakes::{Source, Wakes};
use super::*;
use crate::backend::{BackendId, Interrupted, KeyPool, Pool, SettingsMark};
use crate::clients::ClientEntry;
use pgrepl_config::PoolMode;

/// The server connections a session holds: at most one on the primary and one on its
/// replica. Acquired from the pool on first use; released (to the pool or closed) by the
/// session, which knows whether a connection is clean. The client's registry entry is told
/// of both, for the admin console.
pub(super) struct Leases {
    primary: Option<Box<BackendConn>>,
    replica: Option<Box<BackendConn>>,
    listed: Arc<ClientEntry>,
    /// The key pools this session has taken connections from, by backend: found once.
    pools: Vec<Arc<KeyPool>>,
}

/// A slot's place in the registry entry's list of server connections.
fn listed_index(slot: Slot) -> usize {
    match slot {
        Slot::Primary => 0,
        Slot::Replica => 1,
    }
}

impl Leases {
    pub(super) fn new(listed: Arc<ClientEntry>) -> Leases {
        Leases {
            primary: None,
            replica: None,
            listed,
            pools: Vec::new(),
        }
    }

    fn holder(&mut self, slot: Slot) -> &mut Option<Box<BackendConn>> {
        match slot {
            Slot::Primary => &mut self.primary,
            Slot::Replica => &mut self.replica,
        }
    }

    /// The connection in `slot`, if the session holds one.
    #[inline]
    pub(super) fn get(&mut self, slot: Slot) -> Option<&mut BackendConn> {
        self.holder(slot).as_deref_mut()
    }

    /// The connection in `slot`, to look at.
    pub(super) fn peek(&self, slot: Slot) -> Option<&BackendConn> {
        match slot {
            Slot::Primary => self.primary.as_deref(),
            Slot::Replica => self.replica.as_deref(),
        }
    }

    pub(super) fn holds(&self, slot: Slot) -> bool {
        self.peek(slot).is_some()
    }

    /// The key pool of `backend` for this session's startup request.
    fn key_pool(
        &mut self,
        backend: BackendId,
        pool: &Pool,
        startup: &Arc<StartupInfo>,
    ) -> &Arc<KeyPool> {
        let index = match self.pools.iter().position(|p| p.key.backend == backend) {
            Some(index) => index,
            None => {
                let key = PoolKey {
                    backend,
                    startup: startup.clone(),
                };
                self.pools.push(pool.key_pool(&key));
                self.pools.len() - 1
            }
        };
        &self.pools[index]
    }

    /// Gives up the connection in `slot`: the caller returns it to the pool or closes it.
    pub(super) fn release(&mut self, slot: Slot) -> Option<Box<BackendConn>> {
        let conn = self.holder(slot).take();
        if conn.is_some() {
            self.listed.released(listed_index(slot));
        }
        conn
    }

    /// Both connections held, to act on each.
    pub(super) fn each_mut(&mut self) -> impl Iterator<Item = &mut BackendConn> {
        [self.primary.as_deref_mut(), self.replica.as_deref_mut()]
            .into_iter()
            .flatten()
    }

    /// Bytes waiting to be written to the servers.
    pub(super) fn backlog(&self) -> usize {
        self.primary.as_ref().map_or(0, |c| c.out.len())
            + self.replica.as_ref().map_or(0, |c| c.out.len())
    }

    /// Polls the primary's connection, then the replica's: pending writes first (taken in
    /// here), then a read if the client can take more.
    #[inline(always)]
    pub(super) fn poll(
        &mut self,
        cx: &mut Context<'_>,
        wakes: &mut Wakes,
        can_read: bool,
    ) -> Poll<(Slot, BackendIo)> {
        if let Poll::Ready(io) = poll_backend(cx, wakes, Slot::Primary, &mut self.primary, can_read)
        {
            return Poll::Ready((Slot::Primary, io));
        }
        if let Poll::Ready(io) = poll_backend(cx, wakes, Slot::Replica, &mut self.replica, can_read)
        {
            return Poll::Ready((Slot::Replica, io));
        }
        Poll::Pending
    }
}

/// Polls one lease: its pending writes first, as far as the socket takes them, then a read
/// if the client can take more and the socket fired (see [`Wakes`]).
#[inline(always)]
fn poll_backend(
    cx: &mut Context<'_>,
    wakes: &mut Wakes,
    slot: Slot,
    conn: &mut Option<Box<BackendConn>>,
    can_read: bool,
) -> Poll<BackendIo> {
    let Some(conn) = conn else {
        return Poll::Pending;
    };
    if let Err(e) = super::output::write_out(cx, &mut conn.wr, &mut conn.out) {
        return Poll::Ready(BackendIo::WriteFailed(e));
    }
    if !can_read {
        return Poll::Pending;
    }
    let (rd, inbuf) = (&mut conn.rd, &mut conn.proto.inbuf);
    let read = wakes.poll_read(Source::Lease(slot), |cx| {
        if inbuf.capacity() - inbuf.len() < READ_CHUNK / 2 {
            inbuf.reserve(READ_CHUNK);
        }
        poll_read_buf(Pin::new(rd), cx, inbuf)
    });
    read.map(BackendIo::Read)
}

impl<R, W> Session<R, W>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    /// Pools a clean lease (as it is when the session holds no state on it, else reset);
    /// closes any other, first cancelling what it still runs so no statement or lock
    /// outlives the client.
    pub(super) fn return_lease(&mut self, slot: Slot, conn: Box<BackendConn>) {
        let clean = conn.is_quiet()
            && !conn.has_temp_schema
            && self.tx != Some(slot)
            && self.open_batch != Some(slot);
        let pooling = self.client.pool_mode == PoolMode::Transaction;
        if clean && pooling && self.at_idle(slot, &conn) == AtIdle::GiveBack {
            self.give_back(conn);
            return;
        }
        if clean {
            self.shared.pool.release(conn);
            return;
        }
        if conn.proto.syncs.is_empty() {
            crate::backend::close(conn);
            return;
        }
        let target = conn.cancel.clone();
        tokio::spawn(async move {
            let _ = send_cancel(&target).await;
            crate::backend::close(conn);
        });
    }

    /// Opens the lease for `target`, or, when that is a replica that cannot be reached, the
    /// primary instead: a read is not failed because a replica is down. Returns where the
    /// lease is.
    ///
    /// A lease already open, as for nearly every statement, is found by the callers without
    /// an async call; opening one (rare, and slow anyway) runs boxed. That keeps the futures
    /// of every statement's path small: they are moved, by size, each time one is called.
    pub(super) async fn open_lease(&mut self, decision: &mut Decision) -> Result<(), BackendError> {
        match self.acquire(decision.slot).await {
            Err(e) if decision.slot == Slot::Replica => {
                tracing::warn!(error = %e, "replica unavailable; reading from the primary");
                self.replica_failed();
                *decision = Decision::read(Slot::Primary, Reason::ReplicaDown);
                self.acquire(Slot::Primary).await
            }
            done => done,
        }
    }

    /// Opens the lease for `slot` on first use, once no `PAUSE` holds the database back.
    /// The registry entry shows the client waiting meanwhile.
    async fn acquire(&mut self, slot: Slot) -> Result<(), BackendError> {
        if self.leases.holds(slot) {
            return Ok(());
        }
        let listed = self.client.listed.clone();
        listed.waiting();
        if self.shared.pause.is_closed() {
            let database = &self.client.startup.database;
            let passed = self
                .shared
                .pause
                .wait(database, &listed.kill, &self.shared.shutdown)
                .await;
            if let Err(why) = passed {
                listed.waited(listed_index(slot), None);
                return Err(interrupted(why));
            }
        }
        let acquired = self.acquire_lease(slot).await;
        if acquired.is_err() {
            listed.waited(listed_index(slot), None);
        }
        acquired
    }

    /// Takes the lease for `slot` from the pool: a connection told what settings it must
    /// have for this session.
    async fn acquire_lease(&mut self, slot: Slot) -> Result<(), BackendError> {
        let backend = self.backend_for(slot);
        let (pool, client) = (&self.shared.pool, &self.client);
        let key_pool = self.leases.key_pool(backend, pool, &client.startup);
        let (seq, fingerprint) = wanted_settings(&mut self.state.settings);
        let suits = |conn: &BackendConn| has_settings(conn, seq, fingerprint);
        let password = client.password.as_deref();
        let mut conn = pool
            .acquire(key_pool, password, client.worker, &suits)
            .await?;
        take_on(&mut conn, seq, fingerprint);
        self.hold(slot, conn);
        Ok(())
    }

    /// Opens the lease for `slot` at once with an idle connection, when one is at hand and
    /// nothing holds the session back (no `PAUSE`, nobody before it in the pool's line): in
    /// transaction mode, nearly every unit, without the boxed async path of
    /// [`Self::open_lease`]. False when it must take that path.
    pub(super) fn take_idle_lease(&mut self, slot: Slot) -> bool {
        if self.shared.pause.is_closed() {
            return false;
        }
        let backend = self.backend_for(slot);
        let (pool, client) = (&self.shared.pool, &self.client);
        let key_pool = self.leases.key_pool(backend, pool, &client.startup);
        let (seq, fingerprint) = wanted_settings(&mut self.state.settings);
        let suits = |conn: &BackendConn| has_settings(conn, seq, fingerprint);
        let password = client.password.as_deref();
        let Some(mut conn) = pool.take_idle(key_pool, password, client.worker, &suits) else {
            return false;
        };
        take_on(&mut conn, seq, fingerprint);
        self.hold(slot, conn);
        true
    }

    /// The backend a lease for `slot` comes from: the primary's is the writer word's node
    /// now, never the one the session last adopted (which may have been left since; `send`
    /// checks the word again after the lease is open).
    fn backend_for(&self, slot: Slot) -> BackendId {
        let writer = || self.shared.health.writer().backend;
        match slot {
            Slot::Primary => writer(),
            Slot::Replica => self.client.replica.as_ref().map(ReplicaLease::backend),
        }
        .or_else(writer)
        .unwrap_or(BackendId::FIRST)
    }

    /// Holds `conn` as the lease for `slot` (told what settings it has in this session: see
    /// [`take_on`]), shown in the registry.
    fn hold(&mut self, slot: Slot, conn: Box<BackendConn>) {
        self.client.listed.waited(listed_index(slot), Some(&conn));
        *self.leases.holder(slot) = Some(conn);
        // Its reads were last polled by the login or the pool, under other wakers.
        self.wakes.due(Source::Lease(slot));
    }

    /// Transaction pooling: at an idle point, gives back each connection the session needs
    /// no more (see [`Self::may_give_back`]).
    pub(super) fn give_back_idle(&mut self) {
        if self.client.pool_mode != PoolMode::Transaction {
            return;
        }
        let pinned = self.state.pinned() || self.keeps_temp_schema();
        if pinned != self.counted_pinned {
            self.count_pinned(pinned);
        }
        for slot in [Slot::Primary, Slot::Replica] {
            let next = match self.leases.peek(slot) {
                Some(conn) => self.at_idle(slot, conn),
                None => continue,
            };
            if next == AtIdle::Keep {
                continue;
            }
            if let Some(conn) = self.leases.release(slot) {
                self.untrack_cancel(&conn);
                match next {
                    AtIdle::GiveBack => self.give_back(conn),
                    _ => crate::backend::close(conn),
                }
            }
        }
    }

    /// The primary connection holds the session's temporary schema: temporary objects of
    /// every kind (not only tables) live there until the session ends.
    fn keeps_temp_schema(&self) -> bool {
        self.leases
            .peek(Slot::Primary)
            .is_some_and(|conn| conn.has_temp_schema)
    }

    /// Counts the session among those that keep their primary connection (or no more).
    #[cold]
    pub(super) fn count_pinned(&mut self, pinned: bool) {
        let count = &self.shared.pinned_sessions;
        if pinned {
            count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::debug!("session pinned: it holds state only its primary connection has (a temporary table, LISTEN, an advisory lock, a SQL prepared statement or a cursor WITH HOLD), or settings the proxy cannot replay");
        } else {
            count.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            tracing::debug!(
                "session unpinned: its primary connection goes back to the pool at idle points"
            );
        }
        self.counted_pinned = pinned;
    }

    /// What becomes of `conn`, the session's connection in `slot`, at an idle point.
    fn at_idle(&self, slot: Slot, conn: &BackendConn) -> AtIdle {
        let busy = [self.tx, self.open_batch, self.copy_owes_sync, self.inflight];
        let holds_state = self.state.pinned() || self.deferred.is_some() || conn.has_temp_schema;
        at_idle(Idle {
            busy: busy.contains(&Some(slot)),
            answers_owed: !conn.proto.is_quiet(),
            cancel_in_flight: conn
                .cancel
                .in_flight
                .load(std::sync::atomic::Ordering::Acquire)
                > 0,
            holds_state: slot == Slot::Primary && holds_state,
        })
    }

    /// Gives a connection the session holds no state on back to the pool as it is, saying
    /// what settings it has; one with a temporary schema is closed (a reset cannot remove
    /// that schema).
    fn give_back(&mut self, mut conn: Box<BackendConn>) {
        if conn.has_temp_schema {
            crate::backend::close(conn);
            return;
        }
        let known = self.state.settings_known();
        let settings = &mut self.state.settings;
        conn.settings = if conn.settings_seq != settings.seq() || !known {
            SettingsMark::Unknown
        } else if settings.seq() == 0 {
            SettingsMark::Startup
        } else {
            SettingsMark::Of(settings.fingerprint().clone())
        };
        self.shared.pool.give_back(conn);
    }

    /// Tells the client a unit could not start because its backend is unavailable.
    pub(super) fn report_unavailable(&mut self, err: &BackendError) {
        tracing::warn!(error = %err, "backend unavailable");
        err.encode(Severity::Error, &mut self.cout);
    }

    /// Points the client's cancel key at the backend now running its statement.
    /// Compared by the connection's serial number: the slot may hold another connection by
    /// now.
    pub(super) fn track_cancel(&mut self, slot: Slot) {
        let Some(conn) = self.leases.get(slot) else {
            return;
        };
        if self.cancel_conn == Some(conn.serial) {
            return;
        }
        self.cancel_conn = Some(conn.serial);
        self.client.cancel.set(Some(conn.cancel.clone()));
    }

    /// The connection the client's cancel would reach leaves the session: a cancel must not
    /// reach whoever uses it next.
    pub(super) fn untrack_cancel(&mut self, conn: &BackendConn) {
        if self.cancel_conn == Some(conn.serial) {
            self.cancel_conn = None;
            self.client.cancel.set(None);
        }
    }
}

/// A unit that waited at the PAUSE gate and will not run: the session is ending.
fn interrupted(why: Interrupted) -> BackendError {
    let message = match why {
        Interrupted::Killed => write::TERMINATED_BY_ADMINISTRATOR,
        Interrupted::ShuttingDown => "the proxy is shutting down",
    };
    BackendError::Server {
        fields: vec![
            (b'S', "ERROR".to_owned()),
            (b'V', "ERROR".to_owned()),
            (b'C', sqlstate::ADMIN_SHUTDOWN.to_owned()),
            (b'M', message.to_owned()),
        ],
    }
}

/// What becomes of a connection a session holds at an idle point (transaction pooling).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AtIdle {
    /// The session still needs it.
    Keep,
    /// Back to the pool, as it is.
    GiveBack,
    /// Closed: a client's cancel meant for the statement just finished may still land on it.
    Close,
}

/// What decides [`AtIdle`].
#[derive(Debug, Clone, Copy, Default)]
struct Idle {
    /// A transaction, a batch or a COPY of the session's is open on it, or it runs a unit.
    busy: bool,
    /// The server still owes answers (the proxy's own pipelined questions included).
    answers_owed: bool,
    cancel_in_flight: bool,
    /// It holds state of the session's that lives there alone (the primary, pinned).
    holds_state: bool,
}

fn at_idle(idle: Idle) -> AtIdle {
    if idle.busy || idle.answers_owed || idle.holds_state {
        AtIdle::Keep
    } else if idle.cancel_in_flight {
        AtIdle::Close
    } else {
        AtIdle::GiveBack
    }
}

/// What a lease is taken with besides its key pool: the session's settings
/// (`Settings::seq` and `fingerprint`), which an idle connection best has.
fn wanted_settings(settings: &mut Settings) -> (u64, &Arc<str>) {
    (settings.seq(), settings.fingerprint())
}

/// Whether `conn` has the settings of a session at `seq` with `fingerprint` already.
fn has_settings(conn: &BackendConn, seq: u64, fingerprint: &Arc<str>) -> bool {
    match &conn.settings {
        SettingsMark::Startup => seq == 0,
        SettingsMark::Of(theirs) => same_settings(theirs, fingerprint),
        SettingsMark::Unknown => false,
    }
}

/// Whether two settings fingerprints are the same: mostly the very text (a session taking
/// back the connection it gave back), which needs no compare of the bytes.
fn same_settings(theirs: &Arc<str>, ours: &Arc<str>) -> bool {
    Arc::ptr_eq(theirs, ours) || **theirs == **ours
}

/// A connection just leased learns what settings it has in this session's numbering: all of
/// them if another session left the same, none if it is as the server started it; else it
/// is reset first (back to its startup values; its prepared statements stay, tracked).
/// `seq` and `fingerprint` are the session's (`Settings`).
fn take_on(conn: &mut BackendConn, seq: u64, fingerprint: &Arc<str>) {
    conn.settings_seq = match std::mem::replace(&mut conn.settings, SettingsMark::Unknown) {
        SettingsMark::Startup => 0,
        SettingsMark::Of(theirs) if same_settings(&theirs, fingerprint) => seq,
        SettingsMark::Of(_) | SettingsMark::Unknown => {
            send::reset_settings(conn);
            0
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_goes_back_only_when_the_session_needs_nothing_of_it() {
        let free = Idle::default();
        let cases = [
            (free, AtIdle::GiveBack),
            (Idle { busy: true, ..free }, AtIdle::Keep),
            (
                Idle {
                    answers_owed: true,
                    ..free
                },
                AtIdle::Keep,
            ),
            (
                Idle {
                    holds_state: true,
                    ..free
                },
                AtIdle::Keep,
            ),
            (
                Idle {
                    cancel_in_flight: true,
                    ..free
                },
                AtIdle::Close,
            ),
            (
                Idle {
                    cancel_in_flight: true,
                    answers_owed: true,
                    ..free
                },
                AtIdle::Keep,
            ),
        ];
        for (idle, want) in cases {
            assert_eq!(at_idle(idle), want, "{idle:?}");
        }
    }
}
