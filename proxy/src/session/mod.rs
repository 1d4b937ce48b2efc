//! One client session: after authentication, a single task forwards the client's messages to
//! the backend each routing unit needs (a simple Query, or an extended-protocol batch up to
//! Sync) and relays every backend's messages back, including notifications that arrive while
//! the client is idle.
//!
//! Ordering: units go to one backend at a time. A unit for another backend waits until the
//! current backend has answered everything (its last ReadyForQuery), so replies never
//! interleave and the transaction status is known before the next routing decision.

mod answers;
mod batch;
mod bound;
mod buffers;
mod causal;
mod decide;
mod deferred;
mod hint;
mod leases;
mod lost;
mod output;
mod reads;
mod relay;
mod routing;
mod send;
mod settings;
mod state;
mod waits;
mod wakes;
mod words;
mod writer;

use leases::Leases;
use routing::QueryStep;
use send::{batch_sql, Unit};

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use pgrepl_config::PoolMode;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::futures::OwnedNotified;
use tokio_util::io::poll_read_buf;

use crate::backend::{
    BackendConn, BackendError, Origin, Pending, PoolKey, StartupInfo, StartupSettings, Watch,
};
use crate::balance::ReplicaLease;
use crate::cancel::{send_cancel, CancelTarget};
use crate::health::{Health, WriterState};
use crate::live::RoutingSettings;
use crate::protocol::tags::frontend::*;
use crate::protocol::tags::TxStatus;
use crate::protocol::write::{self, ProxyError, Severity};
use crate::protocol::{fields, frame, peek_header, sqlstate};
use crate::route::{Classifier, Effects, Reason, UserFunctions, Verdict};
use crate::shared::Shared;
use crate::telemetry::Tally;
use batch::{Batch, Statements};
use decide::{Decision, ReadPlan, Slot, Wanted};
use deferred::{Deferred, DeferredState};
use hint::{proxy_setting, ProxySetting, ReadPreference};
use relay::{relay, Outcome, Rerun};
use settings::Settings;
use state::SessionState;
use words::Deallocate;

/// Stop reading from backends while this much is waiting to be written to the client.
const CLIENT_OUT_HIGH_WATER: usize = 1 << 20;
/// Stop reading from the client while this much is waiting to be written to a backend.
const BACKEND_OUT_HIGH_WATER: usize = 1 << 20;
const READ_CHUNK: usize = 16 * 1024;

/// A read sent to a replica, kept until the replica's first reply byte so that it can be sent
/// elsewhere if the replica dies first: the client has seen nothing of it yet.
enum Retry {
    Query(Bytes),
    /// A Sync-ended batch: its messages and its Sync.
    Batch(Vec<(u8, Bytes, Verdict)>, Bytes),
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

/// What a backend connection's I/O came to. Its writes that went through are not events:
/// they are taken in where they happen, without a trip around the session's loop.
enum BackendIo {
    Read(io::Result<usize>),
    WriteFailed(io::Error),
}

/// What the session may take in now, as its state (not its buffers) says: the loop works it
/// out once, and a wake-up polls again with it.
#[derive(Clone, Copy)]
struct Readiness {
    /// The proxy shutting down: the session is idle, and has not seen it yet.
    shutdown: bool,
    /// Nothing in flight, nothing read and not handled: if it waits now, it waits on its
    /// client.
    idle: bool,
}

enum Event {
    ClientRead(io::Result<usize>),
    /// A write to the client failed: it is gone.
    ClientWriteFailed,
    /// All output reached the client while the proxy shuts down: the loop looks again
    /// whether the session can end.
    Flushed,
    Backend(Slot, BackendIo),
    /// A read waiting for a position may go on: it was reached, or the wait ended.
    Causal,
    Shutdown,
    /// The admin console's KILL.
    Killed,
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
    /// `[pool] mode` for its user and database, overrides applied; fixed at login, as a
    /// session in transaction mode counts on giving its connections back.
    pub pool_mode: PoolMode,
    pub cancel: Arc<CancelTarget>,
    /// The servers reported `default_transaction_read_only = on` at startup.
    pub default_read_only: bool,
    /// The worker thread the session runs on: whose tally it counts in.
    pub worker: usize,
    /// Its entry in the registry of clients (the admin console's view, and its KILL).
    pub listed: Arc<crate::clients::ClientEntry>,
}

pub struct Session<R, W> {
    shared: Arc<Shared>,
    /// The `[routing]` settings it routes by, as published at `routing_generation`; replaced
    /// at idle points after a reload (`refresh_routing`).
    routing: Arc<RoutingSettings>,
    routing_generation: u64,
    client: ClientInfo,
    client_r: R,
    client_w: W,
    cin: BytesMut,
    cout: BytesMut,
    leases: Leases,
    /// Backend that holds the client's open transaction (from ReadyForQuery).
    tx: Option<Slot>,
    /// Status byte of the last ReadyForQuery the client got.
    client_status: TxStatus,
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
    last_parse: Option<(Box<[u8]>, u64, Verdict)>,
    /// The next unit waits for `inflight` to finish.
    stalled: bool,
    /// The serial number of the server connection the client's cancel reaches now.
    cancel_conn: Option<u64>,
    /// The session's `SET pgrepl.route`.
    read_pref: ReadPreference,
    /// The session's `SET pgrepl.max_staleness`: replicas staler than this serve none of its
    /// reads (`[routing] max_replica_lag` still applies).
    max_staleness: Option<std::time::Duration>,
    /// The unit being routed: its own mode and staleness bound, from its comments.
    unit_hint: crate::route::CausalHint,
    /// A unit that may write ran on the primary; its commit is noted at the next idle
    /// ReadyForQuery.
    pending_write: bool,
    /// The autocommit unit on the write lease, kept while nothing of its answer has come
    /// (following the primary): sent again if the writer refuses it as a standby.
    writer_retry: Option<Retry>,
    /// Sending such a unit again: it is not kept a second time.
    writer_resending: bool,
    /// The writer's refusal of that unit, as it answered (see `Relayed::writer_refusal`).
    writer_refusal: Option<Bytes>,
    /// The transaction open on this writer was lost with its connection while idle: the
    /// client's next statement is told (40001).
    lost_tx: Option<String>,
    /// The writer word the session adopted (`writer::NOT_SEEN` before it adopted a serving
    /// one): units on the write lease go as long as the word is unchanged.
    writer_seen: u64,
    /// What its reads on replicas must see (read-your-writes, monotonic reads).
    causal: causal::Causal,
    /// A transaction the proxy answered the `BEGIN` of, not opened on any server yet.
    deferred: Option<Deferred>,
    /// Whether its transactions default to read committed, not deferrable, as the primary
    /// answered at these settings (`Settings::seq`).
    tx_defaults: Option<(u64, bool)>,
    /// One entry per unit the replica owes an answer, oldest first: how to re-run it, or None
    /// when it cannot be (inside a transaction, or already partly answered).
    retries: VecDeque<Option<Retry>>,
    /// Settings to follow and primary-only state to stay with.
    state: SessionState,
    /// Wakes the session if the proxy shuts down while it waits idle on its client.
    shutdown_wait: Pin<Box<OwnedNotified>>,
    /// `shutdown_wait` holds the task's current waker: polled again it would only take the
    /// lock that every session's wake-up shares, to find the same waker. Once armed, the
    /// shutdown flag is what a wake-up is checked against.
    shutdown_armed: bool,
    shutting_down: bool,
    /// Written to the client since its stream was last flushed: a TLS stream takes what it is
    /// given into its own buffer when the socket is full, and sends it only when written to
    /// or flushed again.
    unflushed: bool,
    /// Counted in `Shared::pinned_sessions`.
    counted_pinned: bool,
    counts: Counts,
    /// Which of its sockets woke it: only those are read.
    wakes: wakes::Wakes,
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
    /// A unit sent on `conn` (the session's write lease: `on_writer`) for `why`; for a read
    /// on a replica, also the staleness that replica had.
    #[inline]
    fn unit(&mut self, conn: &BackendConn, on_writer: bool, why: Reason, health: &Health) {
        if self.rerun {
            return;
        }
        let backend = conn.info.id;
        if on_writer {
            self.stats.to_primary += 1;
        } else {
            self.stats.to_replica += 1;
        }
        let Some(tally) = &self.tally else { return };
        tally.routed(backend, why);
        if !on_writer {
            tally.read_staleness(backend, health.staleness_nanos(backend));
        }
    }

    /// Copies the session's totals into its registry entry, for the admin console.
    #[inline]
    fn publish(&self, listed: &crate::clients::ClientEntry) {
        let stats = &self.stats;
        listed.publish(
            stats.to_primary + stats.to_replica,
            stats.bytes_in,
            stats.bytes_out,
        );
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

impl<R, W> Session<R, W>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    pub fn new(shared: Arc<Shared>, client: ClientInfo, client_r: R, client_w: W) -> Self {
        let shutdown_wait = Box::pin(shared.shutdown.wait());
        let (routing_generation, routing) = shared.routing.load();
        let functions = routing.classifier.user_functions(&client.startup.database);
        let causal = causal::Causal::new(routing.read_your_writes);
        let state = SessionState::new(client.default_read_only, &client.settings);
        let stmts = Statements::new(shared.statement_ids.clone());
        let tally = shared
            .counting
            .then(|| shared.tallies[client.worker].clone());
        let leases = Leases::new(client.listed.clone());
        let shared_writer = shared.health.writer();
        Session {
            shared,
            routing,
            routing_generation,
            client,
            client_r,
            client_w,
            // Allocated as the client sends and is answered: an idle client costs little.
            cin: BytesMut::new(),
            cout: BytesMut::new(),
            leases,
            tx: None,
            client_status: TxStatus::Idle,
            inflight: None,
            open_batch: None,
            batch: Batch::default(),
            discard_until_sync: false,
            copy_owes_sync: None,
            stmts,
            functions,
            last_parse: None,
            stalled: false,
            cancel_conn: None,
            read_pref: ReadPreference::Auto,
            max_staleness: None,
            unit_hint: crate::route::CausalHint::NONE,
            pending_write: false,
            writer_retry: None,
            writer_resending: false,
            writer_refusal: None,
            lost_tx: None,
            writer_seen: {
                let writer = shared_writer;
                if writer.serves() {
                    crate::health::Writer {
                        held: false,
                        ..writer
                    }
                    .pack()
                } else {
                    writer::NOT_SEEN
                }
            },
            causal,
            deferred: None,
            tx_defaults: None,
            retries: VecDeque::new(),
            state,
            shutdown_wait,
            shutdown_armed: false,
            shutting_down: false,
            unflushed: false,
            counted_pinned: false,
            wakes: wakes::Wakes::new(),
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
        // The forwarding loop, in this function itself: one state machine fewer to step
        // through on every wake-up.
        let end: End = 'session: loop {
            self.shutting_down |= self.shared.shutdown.is_set();
            let idle = self.is_idle();
            if self.shutting_down && idle && self.cout.is_empty() {
                break 'session End::Shutdown;
            }
            let readiness = Readiness {
                shutdown: idle && !self.shutting_down,
                idle,
            };
            // Polled by hand, in priority order: this runs for every message.
            let event = poll_fn(|cx| self.poll_event(cx, readiness)).await;
            match event {
                Event::Flushed => {}
                Event::ClientWriteFailed | Event::ClientRead(Ok(0)) | Event::ClientRead(Err(_)) => {
                    break 'session End::ClientGone
                }
                Event::ClientRead(Ok(n)) => {
                    self.counts.bytes_in(n);
                    if idle {
                        self.refresh_routing();
                    }
                    if let Err(end) = self.process_client_input().await {
                        break 'session end;
                    }
                }
                // Lost connections and the end are boxed: rare, and inline their room would
                // be kept by every session's task.
                Event::Backend(slot, BackendIo::WriteFailed(e) | BackendIo::Read(Err(e))) => {
                    if let Err(end) = Box::pin(self.backend_lost(slot, &e.to_string())).await {
                        break 'session end;
                    }
                }
                Event::Backend(slot, BackendIo::Read(Ok(0))) => {
                    let reason = "the server closed the connection";
                    if let Err(end) = Box::pin(self.backend_lost(slot, reason)).await {
                        break 'session end;
                    }
                }
                Event::Backend(slot, BackendIo::Read(Ok(_))) => {
                    if let Err(end) = self.process_backend_input(slot).await {
                        break 'session end;
                    }
                }
                Event::Causal => {
                    self.stalled = false;
                    if let Err(end) = self.process_client_input().await {
                        break 'session end;
                    }
                }
                Event::Shutdown => self.shutting_down = true,
                Event::Killed => {
                    break 'session End::Fatal(ProxyError::terminated_by_administrator())
                }
            }
        };
        Box::pin(self.finish(end)).await
    }

    /// Tells the client why the session ends, if it is still there to hear it, and gives
    /// the leases back. By reference: by value, the session's task would hold room for a
    /// second copy of the session, all its life.
    async fn finish(&mut self, end: End) -> SessionStats {
        let farewell = match end {
            End::ClientGone => None,
            End::Shutdown => Some(ProxyError::terminated_by_administrator()),
            End::Fatal(e) => Some(e),
        };
        if let Some(err) = farewell {
            err.encode(&mut self.cout);
            let (out, client) = (&self.cout, &mut self.client_w);
            let flush = async move {
                client.write_all(out).await?;
                client.flush().await
            };
            let _ = tokio::time::timeout(std::time::Duration::from_secs(1), flush).await;
        }
        self.counts.publish(&self.client.listed);
        // No cancel may reach the connections once another session can lease them.
        self.client.cancel.set(None);
        self.stop_waiting();
        if self.counted_pinned {
            self.count_pinned(false);
        }
        for slot in [Slot::Primary, Slot::Replica] {
            if let Some(conn) = self.leases.release(slot) {
                self.return_lease(slot, conn);
            }
        }
        self.counts.stats
    }

    /// The next thing to act on: a backend's input, the client's input, the proxy shutting
    /// down; in that order, after writing what can be written. Writes are done here, not
    /// events: a query's two writes would otherwise cost two more trips around the loop, each
    /// polling every socket again.
    #[inline(always)]
    fn poll_event(&mut self, cx: &mut Context<'_>, ready: Readiness) -> Poll<Event> {
        if self.wakes.begin(cx) {
            self.shutdown_armed = false;
        }
        match output::write_out(cx, &mut self.client_w, &mut self.cout) {
            Err(_) => return Poll::Ready(Event::ClientWriteFailed),
            Ok(0) => {}
            Ok(n) => {
                self.counts.bytes_out(n);
                self.unflushed = true;
            }
        }
        // All taken: on to the socket (a no-op for plain TCP), then, shutting down, back to
        // the loop to see whether the session can end.
        if self.unflushed && self.cout.is_empty() {
            match Pin::new(&mut self.client_w).poll_flush(cx) {
                Poll::Ready(Ok(())) => {
                    self.unflushed = false;
                    if self.shutting_down {
                        return Poll::Ready(Event::Flushed);
                    }
                }
                Poll::Ready(Err(_)) => return Poll::Ready(Event::ClientWriteFailed),
                Poll::Pending => {}
            }
        }
        // Backends' answers while the client's output is under its high-water mark.
        let backend_readable = self.cout.len() < CLIENT_OUT_HIGH_WATER;
        if let Poll::Ready((slot, io)) = self.leases.poll(cx, &mut self.wakes, backend_readable) {
            return Poll::Ready(Event::Backend(slot, io));
        }
        if self.causal.wait.is_some() && self.poll_causal(cx).is_ready() {
            return Poll::Ready(Event::Causal);
        }
        // The client's messages while nothing waits and the backends' output is under its
        // mark (as written just now).
        if !self.stalled && self.leases.backlog() < BACKEND_OUT_HIGH_WATER {
            // Here, not before the poll: a wake-up polls this again without the loop, and the
            // read buffer may have gone back to the worker at the last wait (below). A client
            // that has sent nothing yet waits with the few bytes a read reserves itself (64);
            // one that has talked reads a chunk at a time, and has a write buffer.
            if self.counts.stats.bytes_in > 0
                && buffers::wants_room(&self.cin, &self.cout, READ_CHUNK)
            {
                buffers::room(&mut self.cin, &mut self.cout, READ_CHUNK);
            }
            let (client_r, cin) = (&mut self.client_r, &mut self.cin);
            let read = self.wakes.poll_read(wakes::Source::Client, |cx| {
                poll_read_buf(Pin::new(client_r), cx, cin)
            });
            if let Poll::Ready(r) = read {
                return Poll::Ready(Event::ClientRead(r));
            }
        }
        if ready.shutdown {
            // Armed, the wake-up only wakes the task: the flag says why (stored before the
            // wake, and a task's wake-up orders what came before it for the poll it causes).
            if self.shutdown_armed {
                if self.shared.shutdown.is_set() {
                    return Poll::Ready(Event::Shutdown);
                }
            } else if self.shutdown_wait.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Event::Shutdown);
            } else {
                self.shutdown_armed = true;
            }
        }
        // Only on the way to sleep: what the registry shows, and the admin console's KILL.
        self.counts.publish(&self.client.listed);
        if self.client.listed.kill.poll_fired(cx).is_ready() {
            return Poll::Ready(Event::Killed);
        }
        if ready.idle && self.cout.is_empty() {
            buffers::release_idle(&mut self.cin, &mut self.cout, READ_CHUNK);
        }
        Poll::Pending
    }

    /// Before the first message after an idle point: the `[routing]` settings a reload
    /// published since the session took its copy, if any (one relaxed load when none was).
    #[inline]
    fn refresh_routing(&mut self) {
        if self.shared.routing.generation() != self.routing_generation {
            self.take_routing();
        }
    }

    #[cold]
    #[inline(never)]
    fn take_routing(&mut self) {
        let (generation, routing) = self.shared.routing.load();
        if !Arc::ptr_eq(&routing.classifier, &self.routing.classifier) {
            // Its verdict came from the classifier replaced.
            self.last_parse = None;
        }
        if !self.causal.chosen {
            self.set_causal_mode(routing.read_your_writes);
        }
        self.routing = routing;
        self.routing_generation = generation;
    }

    fn is_idle(&self) -> bool {
        self.inflight.is_none()
            && self.tx.is_none()
            && self.deferred.is_none()
            && self.batch.is_empty()
            && self.cin.is_empty()
    }

    /// Handles every complete message the client sent, until one has to wait.
    async fn process_client_input(&mut self) -> Result<(), End> {
        while !self.stalled {
            let Some((ty, total)) = peek_header(&self.cin) else {
                break;
            };
            let max_message_size = self.shared.max_message_size.load(Ordering::Relaxed);
            frame::check_size(total, max_message_size).map_err(|e| {
                End::Fatal(ProxyError::fatal(
                    sqlstate::PROTOCOL_VIOLATION,
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

    /// Handles one complete client message; false when it must wait (it stays in `cin`).
    async fn handle_client_message(&mut self, ty: u8, total: usize) -> Result<bool, End> {
        if self.discard_until_sync && ty != SYNC {
            self.cin.advance(total);
            return Ok(true);
        }
        match ty {
            QUERY => match self.take_query(total) {
                QueryStep::Wait => return Ok(false),
                QueryStep::Answered => {}
                QueryStep::Send(decision, effects) => {
                    let msg = self.cin.split_to(total).freeze();
                    self.send(decision, Unit::Query(msg, effects)).await?;
                }
            },
            PARSE | BIND | DESCRIBE | EXECUTE | CLOSE => {
                let msg = self.cin.split_to(total).freeze();
                let (classifier, functions) = (&*self.routing.classifier, &self.functions);
                let last = &mut self.last_parse;
                self.batch.push(ty, msg, &mut self.stmts, |sql| {
                    remembered_verdict(last, classifier, functions, sql)
                });
            }
            SYNC if self.copy_owes_sync.is_some() => self.sync_after_copy(total),
            SYNC | FLUSH => {
                let Some(decision) = self.route_batch() else {
                    return Ok(false);
                };
                let terminator = self.cin.split_to(total).freeze();
                if self.discard_until_sync {
                    self.discard_until_sync = false;
                    self.batch.clear();
                    write::ready_for_query(self.client_status, &mut self.cout);
                    return Ok(true);
                }
                let messages = std::mem::take(&mut self.batch.messages);
                let unit = Unit::Batch {
                    messages,
                    terminator,
                    synced: ty == SYNC,
                };
                self.send(decision, unit).await?;
            }
            COPY_DATA | COPY_DONE | COPY_FAIL => {
                let msg = self.cin.split_to(total);
                let busy = self.inflight;
                if let Some(conn) = busy.and_then(|slot| self.leases.get(slot)) {
                    conn.out.extend_from_slice(&msg);
                }
            }
            FUNCTION_CALL => {
                let wanted = Wanted::Primary {
                    reason: Reason::Function,
                    writes: true,
                };
                let Some(decision) = self.route(wanted) else {
                    return Ok(false);
                };
                let msg = self.cin.split_to(total).freeze();
                self.send(decision, Unit::Query(msg, Effects::NONE)).await?;
            }
            TERMINATE => return Err(End::ClientGone),
            other => {
                return Err(End::Fatal(ProxyError::fatal(
                    sqlstate::PROTOCOL_VIOLATION,
                    format!("invalid frontend message type {other}"),
                )))
            }
        }
        Ok(true)
    }
}

impl<R, W> Session<R, W>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    /// The client's Sync after a COPY FROM STDIN that swallowed its batch's Sync: it goes
    /// where the COPY ran, with what the client sent since, and completes that batch.
    fn sync_after_copy(&mut self, total: usize) {
        let sync = self.cin.split_to(total);
        let slot = self.copy_owes_sync.take();
        if let Some(conn) = slot.and_then(|slot| self.leases.get(slot)) {
            for (_, msg, _) in &self.batch.messages {
                conn.out.extend_from_slice(msg);
            }
            conn.out.extend_from_slice(&sync);
        }
        self.batch.clear();
    }
}

/// The verdict on a Parse's SQL, reusing the last one when the text is the same and the
/// user functions have not changed since.
fn remembered_verdict(
    last: &mut Option<(Box<[u8]>, u64, Verdict)>,
    classifier: &Classifier,
    functions: &UserFunctions,
    sql: &[u8],
) -> Verdict {
    let generation = functions.generation();
    if let Some((text, seen, verdict)) = last {
        if *seen == generation && **text == *sql {
            return *verdict;
        }
    }
    let verdict = Verdict::of(classifier, functions, sql);
    *last = Some((sql.into(), generation, verdict));
    verdict
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
