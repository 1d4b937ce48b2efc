//! One client session: after authentication, a single task forwards the client's messages to
//! the backend each routing unit needs (a simple Query, or an extended-protocol batch up to
//! Sync) and relays every backend's messages back, including notifications that arrive while
//! the client is idle.
//!
//! Ordering: units go to one backend at a time. A unit for another backend waits until the
//! current backend has answered everything (its last ReadyForQuery), so replies never
//! interleave and the transaction status is known before the next routing decision.

mod batch;
mod bound;
mod hint;
mod reads;
mod relay;
mod settings;
mod state;
mod words;

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::futures::OwnedNotified;
use tokio_util::io::poll_read_buf;

use crate::backend::{
    BackendConn, BackendError, Origin, Pending, PoolKey, StartupInfo, StartupSettings, Watch,
};
use crate::balance::ReplicaLease;
use crate::cancel::{send_cancel, BackendCancel, CancelTarget};
use crate::health::{Health, Unusable};
use crate::protocol::write::{self, ProxyError, Severity};
use crate::protocol::{fields, frame, peek_header};
use crate::route::{Classifier, Effects, Reason, Route, UserFunctions};
use crate::shared::Shared;
use crate::telemetry::Tally;
use batch::{Batch, Kind, Statements};
use hint::{route_setting, ReadPreference};
use relay::{relay, Outcome};
use settings::Settings;
use state::SessionState;

/// Stop reading from backends while this much is waiting to be written to the client.
const CLIENT_OUT_HIGH_WATER: usize = 1 << 20;
/// Stop reading from the client while this much is waiting to be written to a backend.
const BACKEND_OUT_HIGH_WATER: usize = 1 << 20;
const READ_CHUNK: usize = 16 * 1024;

/// Which of the session's two leases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Primary,
    Replica,
}

/// A read sent to a replica, kept until the replica's first reply byte so that it can be sent
/// elsewhere if the replica dies first: the client has seen nothing of it yet.
enum Retry {
    Query(Bytes),
    /// A Sync-ended batch: its messages and its Sync.
    Batch(Vec<(u8, Bytes, Kind)>, Bytes),
}

/// Why a session ended.
pub enum End {
    /// The client closed the connection or sent Terminate.
    ClientGone,
    /// The proxy is shutting down and the session reached an idle point.
    Shutdown,
    /// An error the client is told about before the connection closes.
    Fatal(ProxyError),
}

enum BackendIo {
    Read(io::Result<usize>),
    Wrote(io::Result<usize>),
}

enum Event {
    ClientRead(io::Result<usize>),
    ClientWrote(io::Result<usize>),
    Backend(Slot, BackendIo),
    Shutdown,
}

/// What a session did, for its closing log line.
#[derive(Debug, Default, Clone, Copy)]
pub struct SessionStats {
    /// Statements (or extended-protocol batches) sent to the primary, and to a replica.
    pub to_primary: u64,
    pub to_replica: u64,
    /// Bytes received from the client, and sent to it.
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// Everything a session needs to know about its client.
pub struct ClientInfo {
    pub startup: Arc<StartupInfo>,
    /// Its startup settings, applied on every lease, and what it was told at startup.
    pub settings: StartupSettings,
    pub password: Option<Arc<str>>,
    /// The replica this session reads from, if any; it counts the session as a reader.
    pub replica: Option<ReplicaLease>,
    pub cancel: Arc<CancelTarget>,
    /// The servers reported `default_transaction_read_only = on` at startup.
    pub default_read_only: bool,
    /// The worker thread the session runs on: whose tally it counts in.
    pub worker: usize,
}

pub struct Session<R, W> {
    shared: Arc<Shared>,
    client: ClientInfo,
    client_r: R,
    client_w: W,
    cin: BytesMut,
    cout: BytesMut,
    primary: Option<BackendConn>,
    replica: Option<BackendConn>,
    /// Backend that holds the client's open transaction (from ReadyForQuery).
    tx: Option<Slot>,
    /// Status byte of the last ReadyForQuery the client got.
    client_status: u8,
    /// Backend with responses still owed, or with a batch flushed but not synced.
    inflight: Option<Slot>,
    /// A batch sent up to a Flush whose Sync has not come yet.
    open_batch: Option<Slot>,
    batch: Batch,
    /// An error ended the current batch: skip the client's messages up to Sync, as PostgreSQL does.
    discard_until_sync: bool,
    /// A COPY FROM STDIN swallowed its batch's Sync on this backend: the client's next Sync
    /// goes there and completes that batch.
    copy_owes_sync: Option<Slot>,
    stmts: Statements,
    /// Its database's user functions, which the classifier needs.
    functions: UserFunctions,
    /// The SQL of the client's last Parse, the functions' generation and its route: drivers
    /// re-parse the same unnamed statement for every execution, and a byte compare is far
    /// cheaper than a cache lookup.
    last_parse: Option<(Box<[u8]>, u64, Kind)>,
    /// The next unit waits for `inflight` to finish.
    stalled: bool,
    cancel_slot: Option<Slot>,
    /// The session's `SET pgrepl.route`.
    read_pref: ReadPreference,
    /// The unit being sent may write (it was not classified a read).
    unit_writes: bool,
    /// Why the unit being sent goes where it goes.
    why: Reason,
    /// A unit that may write ran on the primary; its commit is noted at the next idle
    /// ReadyForQuery.
    pending_write: bool,
    /// When this session's last write committed (monitor clock): read-your-writes.
    wrote_at: Option<u64>,
    /// One entry per unit the replica owes an answer, oldest first: how to re-run it, or None
    /// when it cannot be (inside a transaction, or already partly answered).
    retries: VecDeque<Option<Retry>>,
    /// Settings to follow and primary-only state to stay with.
    state: SessionState,
    /// Wakes the session if the proxy shuts down while it waits idle on its client.
    shutdown_wait: Pin<Box<OwnedNotified>>,
    shutting_down: bool,
    counts: Counts,
}

/// What a session counts: its own totals, and its worker's tally for the metrics.
struct Counts {
    stats: SessionStats,
    /// None with metrics off.
    tally: Option<Arc<Tally>>,
    /// Re-running reads a replica lost: they were counted when first sent.
    rerun: bool,
    /// The batch left open by a Flush has been counted.
    open_batch_counted: bool,
}

impl Counts {
    /// A unit sent on `conn` for `why`; for a read on a replica, also the staleness that
    /// replica had.
    #[inline]
    fn unit(&mut self, conn: &BackendConn, why: Reason, health: &Health) {
        if self.rerun {
            return;
        }
        let backend = conn.info.index;
        if backend == 0 {
            self.stats.to_primary += 1;
        } else {
            self.stats.to_replica += 1;
        }
        let Some(tally) = &self.tally else { return };
        tally.routed(backend, why);
        if backend != 0 {
            tally.read_staleness(backend, health.staleness_nanos(backend));
        }
    }

    #[inline]
    fn bytes_in(&mut self, n: usize) {
        self.stats.bytes_in += n as u64;
        if let Some(tally) = &self.tally {
            tally.bytes_in(n);
        }
    }

    #[inline]
    fn bytes_out(&mut self, n: usize) {
        self.stats.bytes_out += n as u64;
        if let Some(tally) = &self.tally {
            tally.bytes_out(n);
        }
    }
}

/// Polls one lease: its pending write first, then a read if the client can take more.
fn poll_backend(
    cx: &mut Context<'_>,
    conn: &mut Option<BackendConn>,
    can_read: bool,
) -> Poll<BackendIo> {
    let Some(conn) = conn else {
        return Poll::Pending;
    };
    if !conn.out.is_empty() {
        if let Poll::Ready(r) = Pin::new(&mut conn.wr).poll_write(cx, &conn.out) {
            return Poll::Ready(BackendIo::Wrote(r));
        }
    }
    if can_read {
        if conn.inbuf.capacity() - conn.inbuf.len() < READ_CHUNK / 2 {
            conn.inbuf.reserve(READ_CHUNK);
        }
        if let Poll::Ready(r) = poll_read_buf(Pin::new(&mut conn.rd), cx, &mut conn.inbuf) {
            return Poll::Ready(BackendIo::Read(r));
        }
    }
    Poll::Pending
}

impl<R, W> Session<R, W>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    pub fn new(shared: Arc<Shared>, client: ClientInfo, client_r: R, client_w: W) -> Self {
        let shutdown_wait = Box::pin(shared.shutdown.wait());
        let functions = shared.classifier.user_functions(&client.startup.database);
        let state = SessionState::new(client.default_read_only, &client.settings);
        let tally = shared
            .counting
            .then(|| shared.tallies[client.worker].clone());
        Session {
            shared,
            client,
            client_r,
            client_w,
            cin: BytesMut::with_capacity(READ_CHUNK),
            cout: BytesMut::with_capacity(READ_CHUNK),
            primary: None,
            replica: None,
            tx: None,
            client_status: b'I',
            inflight: None,
            open_batch: None,
            batch: Batch::default(),
            discard_until_sync: false,
            copy_owes_sync: None,
            stmts: Statements::default(),
            functions,
            last_parse: None,
            stalled: false,
            cancel_slot: None,
            read_pref: ReadPreference::Auto,
            unit_writes: false,
            why: Reason::Read,
            pending_write: false,
            wrote_at: None,
            retries: VecDeque::new(),
            state,
            shutdown_wait,
            shutting_down: false,
            counts: Counts {
                stats: SessionStats::default(),
                tally,
                rerun: false,
                open_batch_counted: false,
            },
        }
    }

    /// Runs the session to its end, returns its leases to the pool, and says what it did.
    pub async fn run(mut self) -> SessionStats {
        self.functions.ready().await;
        let end = match self.drive().await {
            Ok(()) => End::ClientGone,
            Err(end) => end,
        };
        let farewell = match end {
            End::ClientGone => None,
            End::Shutdown => Some(ProxyError::fatal(
                "57P01",
                "terminating connection due to administrator command",
            )),
            End::Fatal(e) => Some(e),
        };
        if let Some(err) = farewell {
            err.encode(&mut self.cout);
            let flush = self.client_w.write_all(&self.cout);
            let _ = tokio::time::timeout(std::time::Duration::from_secs(1), flush).await;
        }
        for (slot, conn) in [
            (Slot::Primary, self.primary.take()),
            (Slot::Replica, self.replica.take()),
        ] {
            if let Some(conn) = conn {
                self.return_lease(slot, conn);
            }
        }
        self.counts.stats
    }

    /// Pools a clean lease; closes any other, first cancelling what it still runs so no
    /// statement or lock outlives the client.
    fn return_lease(&self, slot: Slot, conn: BackendConn) {
        let clean = conn.is_quiet() && self.tx != Some(slot) && self.open_batch != Some(slot);
        if clean {
            self.shared.pool.release(conn);
            return;
        }
        if !conn.syncs.is_empty() {
            let target = cancel_of(&conn);
            tokio::spawn(async move {
                let _ = send_cancel(&target).await;
                drop(conn);
            });
        }
    }

    fn is_idle(&self) -> bool {
        self.inflight.is_none() && self.tx.is_none() && self.batch.is_empty() && self.cin.is_empty()
    }

    async fn drive(&mut self) -> Result<(), End> {
        loop {
            self.shutting_down |= self.shared.shutdown.is_set();
            let idle = self.is_idle();
            if self.shutting_down && idle && self.cout.is_empty() {
                return Err(End::Shutdown);
            }
            let backend_readable = self.cout.len() < CLIENT_OUT_HIGH_WATER;
            let backlog = self.primary.as_ref().map_or(0, |c| c.out.len())
                + self.replica.as_ref().map_or(0, |c| c.out.len());
            let client_readable = !self.stalled && backlog < BACKEND_OUT_HIGH_WATER;
            if client_readable && self.cin.capacity() - self.cin.len() < READ_CHUNK / 2 {
                self.cin.reserve(READ_CHUNK);
            }
            let event = {
                let Session {
                    client_r,
                    client_w,
                    cin,
                    cout,
                    primary,
                    replica,
                    shutdown_wait,
                    shutting_down,
                    ..
                } = self;
                let watch_shutdown = idle && !*shutting_down;
                // Polled by hand, in priority order: this runs for every message.
                poll_fn(|cx| {
                    if !cout.is_empty() {
                        if let Poll::Ready(r) = Pin::new(&mut *client_w).poll_write(cx, cout) {
                            return Poll::Ready(Event::ClientWrote(r));
                        }
                    }
                    if let Poll::Ready(io) = poll_backend(cx, primary, backend_readable) {
                        return Poll::Ready(Event::Backend(Slot::Primary, io));
                    }
                    if let Poll::Ready(io) = poll_backend(cx, replica, backend_readable) {
                        return Poll::Ready(Event::Backend(Slot::Replica, io));
                    }
                    if client_readable {
                        if let Poll::Ready(r) = poll_read_buf(Pin::new(&mut *client_r), cx, cin) {
                            return Poll::Ready(Event::ClientRead(r));
                        }
                    }
                    if watch_shutdown && shutdown_wait.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Event::Shutdown);
                    }
                    Poll::Pending
                })
                .await
            };
            match event {
                Event::ClientWrote(Ok(n)) => {
                    self.cout.advance(n);
                    self.counts.bytes_out(n);
                }
                Event::ClientWrote(Err(_))
                | Event::ClientRead(Ok(0))
                | Event::ClientRead(Err(_)) => return Err(End::ClientGone),
                Event::ClientRead(Ok(n)) => {
                    self.counts.bytes_in(n);
                    self.process_client_input().await?
                }
                Event::Backend(slot, BackendIo::Wrote(Ok(n))) => {
                    if let Some(conn) = self.slot_mut(slot) {
                        conn.out.advance(n);
                    }
                }
                Event::Backend(slot, BackendIo::Wrote(Err(e)) | BackendIo::Read(Err(e))) => {
                    self.backend_lost(slot, &e.to_string()).await?
                }
                Event::Backend(slot, BackendIo::Read(Ok(0))) => {
                    self.backend_lost(slot, "the server closed the connection")
                        .await?
                }
                Event::Backend(slot, BackendIo::Read(Ok(_))) => {
                    self.process_backend_input(slot).await?
                }
                Event::Shutdown => self.shutting_down = true,
            }
        }
    }

    /// Where the lease for `slot` is kept.
    fn holder(&mut self, slot: Slot) -> &mut Option<BackendConn> {
        match slot {
            Slot::Primary => &mut self.primary,
            Slot::Replica => &mut self.replica,
        }
    }

    fn slot_mut(&mut self, slot: Slot) -> Option<&mut BackendConn> {
        self.holder(slot).as_mut()
    }

    /// Where a unit of `route` goes; records whether it may write.
    fn slot_of(&mut self, route: Route) -> Slot {
        self.unit_writes = route == Route::Primary;
        match route {
            Route::Primary => Slot::Primary,
            Route::Replica => self.read_slot(false),
        }
    }

    /// Handles every complete message the client sent, until one has to wait.
    async fn process_client_input(&mut self) -> Result<(), End> {
        while !self.stalled {
            let Some((ty, total)) = peek_header(&self.cin) else {
                break;
            };
            frame::check_size(total, self.shared.max_message_size).map_err(|e| {
                End::Fatal(ProxyError::fatal(
                    "08P01",
                    format!("invalid frontend message: {e}"),
                ))
            })?;
            if self.cin.len() < total {
                self.cin.reserve(total - self.cin.len());
                break;
            }
            if !self.handle_client_message(ty, total).await? {
                self.stalled = true;
            }
        }
        Ok(())
    }

    /// Where a unit goes, given where it would go on its own; None when it must first wait
    /// for in-flight work to finish: work on another backend (replies must not interleave),
    /// or work that may end the open transaction (then the unit's place is not known yet).
    fn decide(&self, standalone: Slot) -> Option<Slot> {
        if let Some(slot) = self.open_batch {
            return Some(slot);
        }
        match (self.tx, self.inflight) {
            (Some(tx), _) if tx == standalone => Some(tx),
            (Some(_), Some(_)) => None,
            (Some(tx), None) => Some(tx),
            (None, Some(busy)) if busy != standalone => None,
            (None, _) => Some(standalone),
        }
    }

    /// Handles one complete client message; false when it must wait (it stays in `cin`).
    async fn handle_client_message(&mut self, ty: u8, total: usize) -> Result<bool, End> {
        if self.discard_until_sync && ty != b'S' {
            self.cin.advance(total);
            return Ok(true);
        }
        match ty {
            b'Q' => {
                let sql = fields::query_sql(&self.cin[..total]).unwrap_or_default();
                match route_setting(sql) {
                    // Inside an extended batch a Flush left open, the answer must come in
                    // order from the batch's server: the statement goes there like any
                    // other (a harmless placeholder setting to PostgreSQL), and the session
                    // takes the preference too. Waiting for the batch would never end: the
                    // client waits for this answer first.
                    Some(Ok(pref)) if self.open_batch.is_some() && self.client_status != b'E' => {
                        self.read_pref = pref;
                    }
                    Some(_) if self.open_batch.is_some() => {}
                    Some(setting) => {
                        if self.inflight.is_some() {
                            return Ok(false);
                        }
                        let reset = sql.trim_ascii_start()[0].eq_ignore_ascii_case(&b'R');
                        self.cin.advance(total);
                        self.answer_route_setting(setting, reset);
                        return Ok(true);
                    }
                    None => {}
                }
                let (route, reason, effects) =
                    classify_sql(&self.shared.classifier, &self.functions, sql);
                self.why = reason;
                let standalone = match (reason, route) {
                    // In a default_transaction_read_only session a plain BEGIN starts a
                    // read-only transaction, which a replica can run.
                    (Reason::Transaction, _)
                        if self.state.default_read_only
                            && effects.contains(Effects::DEFAULT_MODE_BEGIN) =>
                    {
                        self.unit_writes = false;
                        self.why = Reason::ReadOnlyTransaction;
                        self.read_slot(false)
                    }
                    // A hint chooses where a read runs; it is not a write either way.
                    (Reason::Hint, Route::Primary) => {
                        self.unit_writes = false;
                        Slot::Primary
                    }
                    (Reason::Hint, Route::Replica) => {
                        self.unit_writes = false;
                        self.read_slot(true)
                    }
                    // Settings write no data: no reason to wait for a replica after them.
                    _ if effects.contains(Effects::ONLY_SETS) => {
                        self.unit_writes = false;
                        Slot::Primary
                    }
                    _ => self.slot_of(route),
                };
                let Some(target) = self.decide(standalone) else {
                    return Ok(false);
                };
                if self.awaits_probe(target) {
                    return Ok(false);
                }
                self.joins_transaction(standalone, target);
                let msg = self.cin.split_to(total).freeze();
                self.send_query(target, msg, effects).await;
            }
            b'P' | b'B' | b'D' | b'E' | b'C' => {
                let msg = self.cin.split_to(total).freeze();
                let (classifier, functions) = (&self.shared.classifier, &self.functions);
                let last = &mut self.last_parse;
                self.batch.push(ty, msg, &self.stmts, |sql| {
                    remembered_kind(last, classifier, functions, sql)
                });
            }
            b'S' if self.copy_owes_sync.is_some() => {
                let sync = self.cin.split_to(total);
                let slot = self.copy_owes_sync.take();
                let conn = slot.and_then(|slot| pick(&mut self.primary, &mut self.replica, slot));
                if let Some(conn) = conn {
                    for (_, msg, _) in &self.batch.messages {
                        conn.out.extend_from_slice(msg);
                    }
                    conn.out.extend_from_slice(&sync);
                }
                self.batch.clear();
            }
            b'S' | b'H' => {
                let standalone = self.batch_target();
                let Some(target) = self.decide(standalone) else {
                    return Ok(false);
                };
                if self.awaits_probe(target) {
                    return Ok(false);
                }
                self.joins_transaction(standalone, target);
                let terminator = self.cin.split_to(total).freeze();
                if self.discard_until_sync {
                    self.discard_until_sync = false;
                    self.batch.clear();
                    write::ready_for_query(self.client_status, &mut self.cout);
                    return Ok(true);
                }
                self.send_batch(target, terminator, ty == b'S').await;
            }
            b'd' | b'c' | b'f' => {
                let msg = self.cin.split_to(total);
                let busy = self.inflight;
                if let Some(conn) = busy.and_then(|slot| self.slot_mut(slot)) {
                    conn.out.extend_from_slice(&msg);
                }
            }
            b'F' => {
                self.unit_writes = true;
                self.why = Reason::Function;
                let Some(target) = self.decide(Slot::Primary) else {
                    return Ok(false);
                };
                let msg = self.cin.split_to(total).freeze();
                self.send_query(target, msg, Effects::NONE).await;
            }
            b'X' => return Err(End::ClientGone),
            other => {
                return Err(End::Fatal(ProxyError::fatal(
                    "08P01",
                    format!("invalid frontend message type {other}"),
                )))
            }
        }
        Ok(true)
    }

    /// Where a batch with no statement of its own to run goes: a backend already leased
    /// (replica first), else a replica.
    fn batch_target(&mut self) -> Slot {
        if self.state.default_read_only && self.batch.effects.contains(Effects::DEFAULT_MODE_BEGIN)
        {
            self.why = Reason::ReadOnlyTransaction;
            return self.slot_of(Route::Replica);
        }
        let (route, why) = match self.batch.route() {
            Some(decided) => decided,
            None if self.replica.is_some() => return Slot::Replica,
            None if self.primary.is_some() => return Slot::Primary,
            None => (Route::Replica, Reason::Read),
        };
        self.why = why;
        self.slot_of(route)
    }

    /// A read pinned to the primary waits while the primary answers whether the session
    /// still holds state there: the statement before it may have released the last of it.
    fn awaits_probe(&self, target: Slot) -> bool {
        target == Slot::Primary
            && self.why == Reason::SessionPinned
            && self.tx.is_none()
            && self.open_batch.is_none()
            && self.state.awaits_probe()
    }

    /// A unit that goes where the open transaction (or batch) is, not where it would go on
    /// its own, goes there because of it; so does a read inside a transaction.
    fn joins_transaction(&mut self, standalone: Slot, target: Slot) {
        if standalone != target || (self.tx == Some(target) && !self.unit_writes) {
            self.why = Reason::Transaction;
        }
    }

    /// Logs where a unit went and why (debug level: the reasons are also what the metrics
    /// count). Runs for every unit: the level test inline, the event out of line.
    #[inline(always)]
    fn log_route(&self, target: Slot) {
        if tracing::level_enabled!(tracing::Level::DEBUG) {
            self.log_route_now(target);
        }
    }

    #[inline(never)]
    fn log_route_now(&self, target: Slot) {
        tracing::debug!(
            to = match target {
                Slot::Primary => "primary",
                Slot::Replica => "replica",
            },
            reason = self.why.as_str(),
            "routed"
        );
    }

    /// Answers `SET/RESET pgrepl.route` itself, as PostgreSQL would answer a SET.
    fn answer_route_setting(&mut self, setting: Result<ReadPreference, String>, reset: bool) {
        match setting {
            _ if self.client_status == b'E' => ProxyError::error(
                "25P02",
                "current transaction is aborted, commands ignored until end of transaction block",
            )
            .encode(&mut self.cout),
            Err(message) => ProxyError::error("22023", message).encode(&mut self.cout),
            Ok(pref) => {
                self.read_pref = pref;
                write::command_complete(if reset { "RESET" } else { "SET" }, &mut self.cout);
            }
        }
        write::ready_for_query(self.client_status, &mut self.cout);
    }

    /// A unit that may write is never sent to a primary the monitor found in recovery.
    fn refuse_write(&self, target: Slot) -> Option<ProxyError> {
        if target != Slot::Primary || !self.unit_writes {
            return None;
        }
        match self.shared.health.primary_state() {
            Err(Unusable::InRecovery) => Some(ProxyError::error(
                "25006",
                format!(
                    "pgrepl-proxy: {} is in recovery, not a primary; statements that may write are not sent to it",
                    self.shared.pool.backends()[0]
                ),
            )),
            _ => None,
        }
    }

    /// Opens the lease for `target`, or, when that is a replica that cannot be reached, the
    /// primary instead: a read is not failed because a replica is down. Returns where the
    /// lease is.
    ///
    /// A lease already open, as for nearly every statement, is found by the callers without
    /// an async call; opening one (rare, and slow anyway) runs boxed. That keeps the futures
    /// of every statement's path small: they are moved, by size, each time one is called.
    async fn open_lease(&mut self, target: Slot) -> Result<Slot, BackendError> {
        match self.ensure_lease(target).await {
            Ok(()) => Ok(target),
            Err(e) if target == Slot::Replica => {
                tracing::warn!(error = %e, "replica unavailable; reading from the primary");
                self.why = Reason::ReplicaDown;
                self.replica_failed();
                self.ensure_lease(Slot::Primary)
                    .await
                    .map(|()| Slot::Primary)
            }
            Err(e) => Err(e),
        }
    }

    /// Opens the lease for `slot` on first use.
    async fn ensure_lease(&mut self, slot: Slot) -> Result<(), BackendError> {
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
    fn report_unavailable(&mut self, err: &BackendError) {
        tracing::warn!(error = %err, "backend unavailable");
        err.encode(Severity::Error, &mut self.cout);
    }

    /// Points the client's cancel key at the backend now running its statement.
    fn track_cancel(&mut self, slot: Slot) {
        if self.cancel_slot == Some(slot) {
            return;
        }
        self.cancel_slot = Some(slot);
        let target = self.slot_mut(slot).map(|conn| cancel_of(conn));
        self.client.cancel.set(target);
    }

    /// Sends a simple Query (or FunctionCall): one ReadyForQuery will come back.
    async fn send_query(&mut self, target: Slot, msg: Bytes, effects: Effects) {
        let closes_batch = self.open_batch.take().is_some();
        let deallocates =
            msg[0] == b'Q' && resets_statements(fields::query_sql(&msg).unwrap_or_default());
        if let Some(refusal) = self.refuse_write(target) {
            refusal.encode(&mut self.cout);
            write::ready_for_query(self.client_status, &mut self.cout);
            return;
        }
        if effects.contains(Effects::DATABASE_DDL) {
            let sql = fields::query_sql(&msg).unwrap_or_default();
            self.shared.pool.before_database_ddl(sql);
        }
        let leased = if self.holder(target).is_some() {
            Ok(target)
        } else {
            Box::pin(self.open_lease(target)).await
        };
        let target = match leased {
            Ok(target) => target,
            Err(e) => {
                self.report_unavailable(&e);
                write::ready_for_query(self.client_status, &mut self.cout);
                return;
            }
        };
        self.log_route(target);
        self.pending_write |= target == Slot::Primary && self.unit_writes;
        let watch = if effects.is_none() && !self.state.watching() {
            None
        } else {
            let sql = msg.slice_ref(fields::query_sql(&msg).unwrap_or_default());
            let sets = if effects.contains(Effects::ONLY_SETS) {
                vec![sql.clone()]
            } else {
                Vec::new()
            };
            let in_tx = self.tx.is_some();
            self.state.sending(effects, sets, Some(&sql), in_tx)
        };
        let probe = target == Slot::Primary
            && self.state.wants_probe(effects)
            && may_probe(self.tx.is_some(), effects);
        let Some(conn) = pick(&mut self.primary, &mut self.replica, target) else {
            return;
        };
        self.counts.unit(conn, self.why, &self.shared.health);
        if !closes_batch {
            bring_settings(conn, &self.state.settings);
            conn.syncs.push_back(Pending::default());
        }
        // A Query that closes an open batch shares its ReadyForQuery: the Query is timed.
        let sql = || {
            let sql = fields::query_sql(&msg).filter(|_| msg[0] == b'Q')?;
            Some(msg.slice_ref(sql))
        };
        start_timing(conn, self.why, sql);
        watch_unit(conn, watch);
        conn.out.extend_from_slice(&msg);
        if probe {
            ask_holds_state(conn, self.state.pin_epoch());
            self.state.probing();
        }
        // A simple Query destroys the unnamed statement; DISCARD/DEALLOCATE drop named ones.
        if !conn.prepared.is_empty() {
            conn.prepared.remove(&b""[..]);
        }
        if deallocates {
            conn.prepared.clear();
            self.stmts.clear();
        }
        self.inflight = Some(target);
        self.track_cancel(target);
        if target == Slot::Replica {
            let retry = self.tx.is_none().then_some(Retry::Query(msg));
            self.note_replica_unit(!closes_batch, retry);
        }
    }

    /// Sends the buffered batch and its Sync or Flush to `target`.
    async fn send_batch(&mut self, target: Slot, terminator: Bytes, is_sync: bool) {
        let continuing = self.open_batch.is_some();
        let runs_statement = self.batch.route().is_some();
        if let Some(refusal) = self.refuse_write(target) {
            refusal.encode(&mut self.cout);
            self.batch.clear();
            if is_sync {
                write::ready_for_query(self.client_status, &mut self.cout);
            } else {
                self.discard_until_sync = true;
            }
            return;
        }
        let messages = std::mem::take(&mut self.batch.messages);
        let leased = if self.holder(target).is_some() {
            Ok(target)
        } else {
            Box::pin(self.open_lease(target)).await
        };
        let target = match leased {
            Ok(target) => target,
            Err(e) => {
                self.batch.restore(messages);
                self.report_unavailable(&e);
                if is_sync {
                    write::ready_for_query(self.client_status, &mut self.cout);
                } else {
                    self.discard_until_sync = true;
                }
                return;
            }
        };
        self.log_route(target);
        self.pending_write |= target == Slot::Primary && self.unit_writes;
        // A Parse that redefines a known statement must reach the server that refuses it,
        // once: such a batch is not retried. (Checked before the batch's Parses are recorded.)
        let redefines = || {
            messages.iter().any(|(ty, msg, _)| {
                // The unnamed statement, the usual one, cannot be: no scan for its name.
                *ty == b'P'
                    && fields::body(msg).first() != Some(&0)
                    && fields::parse_name_sql(msg)
                        .is_some_and(|(name, _)| !name.is_empty() && self.stmts.contains(name))
            })
        };
        let retryable = target == Slot::Replica && is_sync && self.tx.is_none() && !redefines();
        let effects = self.batch.effects;
        if effects.contains(Effects::DATABASE_DDL) {
            if let Some(sql) = batch_sql(&messages, &self.stmts) {
                self.shared.pool.before_database_ddl(&sql);
            }
        }
        // As for a simple query: nothing to note for a batch that changes nothing unwatched.
        let watch = if effects.is_none() && !self.state.watching() {
            None
        } else {
            let sets = std::mem::take(&mut self.batch.sets);
            self.state.sending(effects, sets, None, self.tx.is_some())
        };
        let probe = is_sync
            && target == Slot::Primary
            && self.state.wants_probe(effects)
            && may_probe(self.tx.is_some(), effects);
        let Some(conn) = pick(&mut self.primary, &mut self.replica, target) else {
            self.batch.restore(messages);
            return;
        };
        if !continuing {
            bring_settings(conn, &self.state.settings);
            conn.syncs.push_back(Pending::default());
        }
        // A batch that runs no statement (a Close, a lone Sync, a Describe) is no statement to
        // count; a batch continued after a Flush counts once, with its first statement.
        let counted = runs_statement && !(continuing && self.counts.open_batch_counted);
        if counted {
            self.counts.unit(conn, self.why, &self.shared.health);
            start_timing(conn, self.why, || batch_sql(&messages, &self.stmts));
        }
        self.counts.open_batch_counted =
            !is_sync && (counted || (continuing && self.counts.open_batch_counted));
        watch_unit(conn, watch);
        if is_sync {
            if let Some(pending) = conn.syncs.back_mut() {
                pending.synced_batch = true;
            }
        }
        for (ty, msg, kind) in &messages {
            match ty {
                b'P' => {
                    self.stmts.parse_on(conn, msg.clone(), *kind);
                    continue;
                }
                b'B' => {
                    if let Some(name) = fields::bind_statement(msg) {
                        self.stmts.ensure_on(conn, name);
                    }
                }
                b'D' => {
                    if let Some((b'S', name)) = fields::target(msg) {
                        self.stmts.ensure_on(conn, name);
                    }
                }
                b'C' => {
                    self.stmts.close_on(conn, msg);
                    continue;
                }
                _ => {}
            }
            conn.out.extend_from_slice(msg);
        }
        conn.out.extend_from_slice(&terminator);
        if probe {
            ask_holds_state(conn, self.state.pin_epoch());
            self.state.probing();
        }
        self.open_batch = if is_sync { None } else { Some(target) };
        self.inflight = Some(target);
        self.track_cancel(target);
        if target == Slot::Replica {
            // The messages themselves are kept for a re-run: no copy. Their list goes back to
            // the batch buffer once the replica has answered (`replica_answered`).
            let retry = if retryable {
                self.batch.clear();
                Some(Retry::Batch(messages, terminator))
            } else {
                self.batch.restore(messages);
                None
            };
            self.note_replica_unit(!continuing, retry);
        } else {
            self.batch.restore(messages);
        }
    }

    /// Forwards what a backend sent and resumes the client once that backend is done.
    async fn process_backend_input(&mut self, slot: Slot) -> Result<(), End> {
        let Some(conn) = pick(&mut self.primary, &mut self.replica, slot) else {
            return Ok(());
        };
        let retries = &self.retries;
        let may_rerun = |answered: usize| {
            slot == Slot::Replica && retries.get(answered).is_some_and(Option::is_some)
        };
        let seen = relay(
            conn,
            &mut self.cout,
            self.counts.tally.as_deref(),
            may_rerun,
        );
        let done = conn.syncs.is_empty();
        if slot == Slot::Replica {
            let (units, more) = (seen.units_done, seen.open_unit_answered);
            replica_answered(&mut self.retries, &mut self.batch, units, more);
        }
        for (name, generation) in &seen.failed_parses {
            self.stmts.parse_failed(Some(&mut *conn), name, *generation);
        }
        if seen.copy_ate_sync {
            self.copy_owes_sync = Some(slot);
        }
        if let Some(on) = seen.default_read_only {
            self.state.default_read_only = on;
        }
        if let Some(status) = seen.last_status {
            self.client_status = status;
            self.tx = (status != b'I').then_some(slot);
        }
        let committed =
            seen.last_status == Some(b'I') && slot == Slot::Primary && self.pending_write;
        let unsolicited = seen.unsolicited.map(|ty| (ty, conn.info.clone()));
        // What the units answered before anything else happened counts, even if the
        // connection is lost right after (a probe's answer, a SET that took effect).
        if !seen.outcomes.is_empty() {
            if let Some(error) = self.settle(slot, &seen.outcomes) {
                let reason = format!("could not apply the session's settings there: {error}");
                return self.backend_lost(slot, &reason).await;
            }
        }
        if committed {
            self.pending_write = false;
            self.note_commit();
        }
        if let Some((ty, info)) = unsolicited {
            tracing::warn!(backend = %info, message_type = %(ty as char), "backend sent an unsolicited message; closing it");
            return self
                .backend_lost(slot, "the server ended the session")
                .await;
        }
        // A replica shutting down answers an in-flight read with FATAL before closing: the
        // client has seen nothing of that read yet, so it goes elsewhere instead.
        if seen.fatal_before_rerunnable {
            return self
                .backend_lost(slot, "the server ended the session")
                .await;
        }
        if done && self.open_batch != Some(slot) && self.inflight == Some(slot) {
            self.inflight = None;
            if self.stalled {
                self.stalled = false;
                self.process_client_input().await?;
            }
        }
        Ok(())
    }

    /// Takes in how watched units ended; returns the error of a replay of settings that
    /// failed (the connection then cannot serve this session).
    fn settle(&mut self, slot: Slot, outcomes: &[Outcome]) -> Option<String> {
        for outcome in outcomes {
            match outcome.origin {
                Origin::Client => {
                    let before = self.state.settings.seq();
                    self.state.settle(&outcome.watch, outcome.status);
                    // The connection that ran the settings has them (but for a return
                    // to startup values after a reset: the client is told those).
                    let after = self.state.settings.take_runner_seq();
                    for (name, value) in self.state.take_corrections() {
                        write::parameter_status(&name, &value, &mut self.cout);
                    }
                    if let Some(conn) = self.slot_mut(slot) {
                        if conn.settings_seq == before {
                            conn.settings_seq = after;
                        }
                    }
                }
                // A "no" from inside a transaction may be undone by its rollback.
                Origin::Probe(epoch) => {
                    let holds = outcome.watch.holds_state;
                    let valid = holds.filter(|held| *held || outcome.status == b'I');
                    self.state.probed(valid, epoch)
                }
                Origin::Settings => {
                    if let Some(error) = &outcome.watch.error {
                        return Some(error.clone());
                    }
                }
            }
        }
        None
    }

    /// A backend connection broke. An idle one is just dropped (the next use opens another);
    /// one that owed the client an answer ends that unit with 08006, or the session when the
    /// client's transaction or a partly sent message died with it.
    async fn backend_lost(&mut self, slot: Slot, reason: &str) -> Result<(), End> {
        let Some(conn) = self.holder(slot).take() else {
            return Ok(());
        };
        if self.cancel_slot == Some(slot) {
            self.cancel_slot = None;
            self.client.cancel.set(None);
        }
        for pending in &conn.syncs {
            if let Origin::Probe(epoch) = pending.origin {
                self.state.probed(None, epoch);
            }
        }
        let owed = conn.owed_to_client();
        let in_tx = self.tx == Some(slot);
        if owed == 0 && !in_tx && self.open_batch != Some(slot) {
            tracing::info!(backend = %conn.info, reason, "idle backend connection closed");
            // Only the proxy's own questions were outstanding there.
            if self.inflight == Some(slot) {
                self.inflight = None;
                if self.stalled {
                    self.stalled = false;
                    self.process_client_input().await?;
                }
            }
            return Ok(());
        }
        let retries = std::mem::take(&mut self.retries);
        let retryable = slot == Slot::Replica
            && !in_tx
            && conn.body_remaining == 0
            && self.open_batch != Some(slot)
            && retries.len() == owed
            && retries.iter().all(Option::is_some)
            // Re-sending a batch goes through the batch buffer, so only when the client has
            // not begun its next batch there.
            && self.batch.is_empty();
        if retryable {
            tracing::warn!(backend = %conn.info, reason, units = owed, "replica lost before answering reads; sending them to the primary");
            conn.info.meters.read_retries.increment(owed as u64);
            self.replica_failed();
            self.inflight = None;
            return self.resend(retries.into_iter().flatten()).await;
        }
        tracing::warn!(backend = %conn.info, reason, "backend connection lost during a statement");
        let err = ProxyError::error(
            "08006",
            format!(
                "pgrepl-proxy: lost the connection to backend {}: {reason}",
                conn.info
            ),
        );
        if in_tx || owed > 1 || conn.body_remaining > 0 || self.open_batch == Some(slot) {
            let mut fatal = err;
            fatal.severity = Severity::Fatal;
            return Err(End::Fatal(fatal));
        }
        err.encode(&mut self.cout);
        write::ready_for_query(b'I', &mut self.cout);
        self.client_status = b'I';
        self.tx = None;
        self.inflight = None;
        if self.stalled {
            self.stalled = false;
            self.process_client_input().await?;
        }
        Ok(())
    }
}

impl<R, W> Session<R, W>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    /// Records a unit sent to the replica: a new entry when it owes a new answer, else the
    /// unit continues the newest one, which can then no longer be re-run on its own.
    fn note_replica_unit(&mut self, new_unit: bool, retry: Option<Retry>) {
        if new_unit {
            self.retries.push_back(retry);
        } else if let Some(last) = self.retries.back_mut() {
            *last = None;
        }
    }

    /// Sends reads whose replica died before answering them to the primary, in order (the
    /// monitor may not know yet that the replica is gone, so it is not picked again for them).
    async fn resend(&mut self, retries: impl Iterator<Item = Retry>) -> Result<(), End> {
        let target = Slot::Primary;
        self.counts.rerun = true;
        for retry in retries {
            self.unit_writes = false;
            self.why = Reason::ReplicaDown;
            match retry {
                Retry::Query(msg) => self.send_query(target, msg, Effects::NONE).await,
                Retry::Batch(messages, sync) => {
                    // The statements the batch defined died with the replica: define them anew.
                    for (ty, msg, _) in &messages {
                        if let Some((name, _)) = fields::parse_name_sql(msg).filter(|_| *ty == b'P')
                        {
                            self.stmts.forget(name);
                        }
                    }
                    self.batch.messages = messages;
                    self.send_batch(target, sync, true).await;
                }
            }
        }
        self.counts.rerun = false;
        if self.stalled && self.inflight.is_none() {
            self.stalled = false;
            self.process_client_input().await?;
        }
        Ok(())
    }
}

/// Times the unit last queued on `conn`, sent for `why`, when metrics or the slow-statement
/// log want durations (with its SQL if the log shows statements).
#[inline]
fn start_timing(conn: &mut BackendConn, why: Reason, sql: impl FnOnce() -> Option<Bytes>) {
    let Some(timing) = &conn.info.meters.timing else {
        return;
    };
    let with_text = timing.text && timing.slow.is_some();
    if let Some(pending) = conn.syncs.back_mut() {
        pending.started = Some(crate::telemetry::clock::now_nanos());
        pending.reason = Some(why);
        pending.sql = if with_text { sql() } else { None };
    }
}

/// The SQL a batch runs, for the slow-statement log: its first Parse's, else that of the
/// statement its first Bind names.
fn batch_sql(messages: &[(u8, Bytes, Kind)], stmts: &Statements) -> Option<Bytes> {
    messages.iter().find_map(|(ty, msg, _)| match ty {
        b'P' => fields::parse_name_sql(msg).map(|(_, sql)| msg.slice_ref(sql)),
        b'B' => fields::bind_statement(msg).and_then(|name| stmts.sql_of(name)),
        _ => None,
    })
}

/// Before a unit on `conn`: replays the session's settings it lacks, swallowing the answer.
/// Runs for every unit, which nearly always finds the connection up to date: that test inline,
/// the replay out of line.
#[inline(always)]
fn bring_settings(conn: &mut BackendConn, settings: &Settings) {
    if conn.settings_seq < settings.seq() {
        replay_settings(conn, settings);
    }
}

#[cold]
#[inline(never)]
fn replay_settings(conn: &mut BackendConn, settings: &Settings) {
    for sql in settings.replay_since(conn.settings_seq, &conn.params) {
        write::query(&sql, &mut conn.out);
        conn.syncs.push_back(Pending::injected(Origin::Settings));
    }
    conn.settings_seq = settings.seq();
}

/// Attaches what to watch to the unit being sent on `conn`.
#[inline]
fn watch_unit(conn: &mut BackendConn, watch: Option<Box<Watch>>) {
    let (Some(watch), Some(unit)) = (watch, conn.syncs.back_mut()) else {
        return;
    };
    match &mut unit.watch {
        Some(existing) => existing.merge(*watch),
        None => unit.watch = Some(watch),
    }
}

/// Whether a probe may follow a unit: not inside a transaction (a client's cancel meant for
/// its own statement could hit the probe and abort the transaction), unless the unit ends it.
fn may_probe(in_tx: bool, effects: Effects) -> bool {
    !in_tx
        || (effects.contains(Effects::TX_CONTROL) && !effects.contains(Effects::PARTIAL_ROLLBACK))
}

/// Whether the session holds state only this server has: temporary tables, LISTENs,
/// advisory locks, SQL-level prepared statements, cursors WITH HOLD.
const HOLDS_STATE: &str = "SELECT EXISTS (SELECT FROM pg_catalog.pg_class \
     WHERE relnamespace = pg_catalog.pg_my_temp_schema()) \
     OR EXISTS (SELECT FROM pg_catalog.pg_listening_channels()) \
     OR EXISTS (SELECT FROM pg_catalog.pg_locks \
       WHERE locktype = 'advisory' AND pid = pg_catalog.pg_backend_pid()) \
     OR EXISTS (SELECT FROM pg_catalog.pg_prepared_statements WHERE from_sql) \
     OR EXISTS (SELECT FROM pg_catalog.pg_cursors WHERE is_holdable)";

/// After a unit on the primary that may have released such state: asks, swallowing the
/// answer, which is taken only if no newer pin than `epoch` was made meanwhile.
fn ask_holds_state(conn: &mut BackendConn, epoch: u64) {
    write::query(HOLDS_STATE, &mut conn.out);
    conn.syncs
        .push_back(Pending::injected(Origin::Probe(epoch)));
}

/// The replica answered `units` units to the end, and the start of the next one if `more`:
/// none of those can be re-run any more.
#[inline]
fn replica_answered(
    retries: &mut VecDeque<Option<Retry>>,
    batch: &mut Batch,
    units: usize,
    more: bool,
) {
    for _ in 0..units {
        if let Some(Some(Retry::Batch(messages, _))) = retries.pop_front() {
            // Reuse the list's allocation when the batch buffer has none (it gave its own to
            // this retry); an empty buffer has nothing else to lose.
            // Nothing was pushed since (that would have allocated), so the batch is clear.
            if batch.messages.capacity() == 0 {
                let mut messages = messages;
                messages.clear();
                batch.messages = messages;
            }
        }
    }
    if more {
        if let Some(head) = retries.front_mut() {
            *head = None;
        }
    }
}

/// The lease in `slot`, borrowed apart from the rest of the session.
fn pick<'a>(
    primary: &'a mut Option<BackendConn>,
    replica: &'a mut Option<BackendConn>,
    slot: Slot,
) -> Option<&'a mut BackendConn> {
    match slot {
        Slot::Primary => primary.as_mut(),
        Slot::Replica => replica.as_mut(),
    }
}

fn cancel_of(conn: &BackendConn) -> BackendCancel {
    BackendCancel {
        host: conn.info.host.clone(),
        port: conn.info.port,
        pid: conn.cancel_key.0,
        secret: conn.cancel_key.1,
    }
}

/// The kind of a Parse's SQL, reusing the last one when the text is the same and the
/// user functions have not changed since.
fn remembered_kind(
    last: &mut Option<(Box<[u8]>, u64, Kind)>,
    classifier: &Classifier,
    functions: &UserFunctions,
    sql: &[u8],
) -> Kind {
    let generation = functions.generation();
    if let Some((text, seen, kind)) = last {
        if *seen == generation && **text == *sql {
            return *kind;
        }
    }
    let (route, reason, effects) = classify_sql(classifier, functions, sql);
    let kind = Kind {
        route,
        reason,
        effects,
    };
    *last = Some((sql.into(), generation, kind));
    kind
}

/// The route of SQL text, why, and what it does to the session. Text that is not UTF-8
/// cannot be parsed: it goes to the primary, and may do anything.
fn classify_sql(
    classifier: &Classifier,
    functions: &UserFunctions,
    sql: &[u8],
) -> (Route, Reason, Effects) {
    std::str::from_utf8(sql).map_or(
        (Route::Primary, Reason::Unparseable, Effects::OPAQUE),
        |text| {
            let (classification, effects) = classifier.decide(text, functions);
            (classification.route, classification.reason, effects)
        },
    )
}

/// SQL-level DISCARD ALL / DEALLOCATE [PREPARE] ALL drop the session's protocol-level
/// statements too. Checked on every simple query, so it only looks at the first words.
fn resets_statements(sql: &[u8]) -> bool {
    if !words::may_start_with(sql, &[b"DISCARD", b"DEALLOCATE"]) {
        return false;
    }
    let mut words = words::Words(sql);
    let is = |w: Option<&[u8]>, word: &[u8]| w.is_some_and(|w| w.eq_ignore_ascii_case(word));
    match words.next() {
        Some(w) if w.eq_ignore_ascii_case(b"DISCARD") => is(words.next(), b"ALL"),
        Some(w) if w.eq_ignore_ascii_case(b"DEALLOCATE") => {
            let next = words.next();
            if is(next, b"PREPARE") {
                is(words.next(), b"ALL")
            } else {
                is(next, b"ALL")
            }
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::resets_statements;

    #[test]
    fn recognises_statement_resets() {
        assert!(resets_statements(b"  discard ALL"));
        assert!(resets_statements(b"DEALLOCATE all"));
        assert!(resets_statements(b"deallocate prepare ALL;"));
        assert!(!resets_statements(b"DEALLOCATE s1"));
        assert!(!resets_statements(b"SELECT 'DISCARD ALL'"));
        assert!(!resets_statements(b""));
    }
}
