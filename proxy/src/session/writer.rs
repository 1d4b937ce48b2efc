//! The session's side of the writer pointer: before each unit on its write lease, one load
//! of the writer word compared with the one it last adopted. Anything else (the writer
//! moved, cannot take writes now, or is being confirmed) takes the cold path here, which
//! decides by `step` what becomes of the unit and of the lease on the old writer.

use metrics::counter;

use super::*;
use crate::health::Writer;
use crate::telemetry::names;

/// `writer_seen` before the session adopted a serving writer: never equal to a word.
pub(super) const NOT_SEEN: u64 = u64::MAX;

/// The session's write lease, as the step sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Lease {
    /// None held.
    None,
    /// On the writer now.
    OnWriter,
    /// On another node, idle.
    Idle,
    /// On another node, with the client's transaction open there.
    InTransaction,
    /// On another node, holding state only that connection has (temporary tables, LISTEN,
    /// advisory locks, SQL `PREPARE`, cursors `WITH HOLD`, unfollowable settings).
    Pinned,
    /// On another node, with answers still owed (pipelined units, a batch left open).
    Busy,
}

/// What the step looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct UnitView {
    /// `[routing] follow_primary`.
    pub following: bool,
    pub state: WriterState,
    /// The unit may write.
    pub writes: bool,
    pub lease: Lease,
    /// It already waited `writer_wait` for a writer to be confirmed or a hold lifted.
    pub waited: bool,
    /// Writes are held (`HOLD WRITES`).
    pub held: bool,
    /// The client's transaction is open on the write lease.
    pub in_transaction: bool,
}

/// Why a unit is not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    /// The writer is a standby (25006, as without `follow_primary`).
    ReadOnly,
    /// The writer's last sample failed (08006).
    Down,
    /// A new writer was not confirmed within `writer_wait` (08006).
    WaitTimeout,
    /// Writes stayed held for longer than `writer_wait` (08006).
    Held,
    /// Conflict, NoCandidate or Fenced: no writer may be chosen (08006).
    NoWriter(WriterState),
}

/// What becomes of the lease on the old writer when the session adopts a new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Leave {
    Nothing,
    /// Closed, not pooled: the next lease comes from the new writer's pool.
    Close,
    /// The transaction there is lost: the unit gets 40001, later ones run in an aborted
    /// transaction on the new writer until the client ends it.
    Abort,
    /// The session's state there is gone: it ends with FATAL 08006.
    End,
}

impl Refusal {
    /// `reason` of `pgrepl_writes_refused_total`.
    fn as_str(self) -> &'static str {
        match self {
            Refusal::ReadOnly => "read_only",
            Refusal::Down => "down",
            Refusal::WaitTimeout | Refusal::Held => "wait_timeout",
            Refusal::NoWriter(WriterState::Conflict) => "conflict",
            Refusal::NoWriter(WriterState::Fenced) => "fenced",
            Refusal::NoWriter(_) => "no_candidate",
        }
    }
}

/// What became of a transaction lost with its writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LostOutcome {
    /// It was not committed (40001).
    NotCommitted,
    /// Its commit was on its way (08007).
    Unknown,
}

/// Counts a transaction (or autocommit write) lost with its writer.
pub(super) fn count_lost(outcome: LostOutcome) {
    let outcome = match outcome {
        LostOutcome::NotCommitted => "not_committed",
        LostOutcome::Unknown => "unknown",
    };
    counter!(names::WRITER_LOST_TRANSACTIONS, "outcome" => outcome).increment(1);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    /// Send the unit as it is.
    Send,
    /// Wait for the writer word to change, within `writer_wait`, then step again.
    Wait,
    Refuse(Refusal),
    /// Take the writer as the session's, leaving the old one as said, then send.
    Adopt(Leave),
    /// Leave the lease on another node as said, then send to the writer without adopting it
    /// (it cannot take writes now: a read, or a unit of a transaction open on it).
    Leave(Leave),
}

/// What becomes of a lease held on a node that is not the writer.
fn leave_of(lease: Lease) -> Leave {
    match lease {
        Lease::None | Lease::OnWriter => Leave::Nothing,
        Lease::Idle => Leave::Close,
        Lease::InTransaction => Leave::Abort,
        Lease::Pinned | Lease::Busy => Leave::End,
    }
}

/// The per-unit step (a pure function; the session gathers `view` and carries it out).
pub(super) fn step(view: UnitView) -> Step {
    // Held writes wait, but a transaction already open goes on so that it can finish.
    if view.held && !view.in_transaction {
        return if view.waited {
            Step::Refuse(Refusal::Held)
        } else {
            Step::Wait
        };
    }
    if !view.following {
        // The first node is the writer whatever it says: only a standby refuses writes. A
        // serving one is adopted, so that the next units take the one-load path.
        return match view.state {
            WriterState::ReadOnly if view.writes => Step::Refuse(Refusal::ReadOnly),
            WriterState::Serving if !view.held => Step::Adopt(Leave::Nothing),
            _ => Step::Send,
        };
    }
    // A transaction open on the writer goes on while its sample fails: the connection, not
    // the sample, says whether it is still there.
    let on_writer_in_transaction = view.lease == Lease::OnWriter && view.in_transaction;
    match view.state {
        WriterState::Serving => Step::Adopt(leave_of(view.lease)),
        WriterState::Confirming if view.waited => Step::Refuse(Refusal::WaitTimeout),
        WriterState::Confirming => Step::Wait,
        WriterState::ReadOnly if view.writes => Step::Refuse(Refusal::ReadOnly),
        WriterState::Down if view.writes && !on_writer_in_transaction => {
            Step::Refuse(Refusal::Down)
        }
        // Reads go to the writer as it is; never on a lease held on another node.
        WriterState::ReadOnly | WriterState::Down => match leave_of(view.lease) {
            Leave::Nothing => Step::Send,
            leave => Step::Leave(leave),
        },
        state => Step::Refuse(Refusal::NoWriter(state)),
    }
}

/// A simple Query `BEGIN`: opens the aborted transaction a lost one leaves the client in.
const BEGIN: &[u8] = b"Q\0\0\0\x0aBEGIN\0";

impl<R, W> Session<R, W>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    /// The writer word differs from the one the session adopted: decides what becomes of
    /// the unit (`Ok(Some(error))`: not sent) and of the lease on the old writer; an
    /// `Err` ends the session.
    #[cold]
    #[inline(never)]
    pub(super) async fn follow_writer(
        &mut self,
        decision: Decision,
    ) -> Result<Option<ProxyError>, End> {
        if let Some(node) = self.lost_tx.take() {
            self.abort_transaction();
            return Ok(Some(ProxyError::error(
                sqlstate::SERIALIZATION_FAILURE,
                format!(
                    "pgrepl-proxy: the connection to {node} was lost during this transaction; \
                     it was not committed"
                ),
            )));
        }
        let health = self.shared.health.clone();
        let deadline = tokio::time::Instant::now() + health.writer_wait();
        let mut waited = false;
        loop {
            let moved = health.writer_moved();
            let writer = health.writer();
            let view = UnitView {
                following: health.follows(),
                state: writer.state,
                writes: decision.writes,
                lease: self.write_lease(writer),
                waited,
                held: writer.held,
                in_transaction: self.tx == Some(Slot::Primary),
            };
            match step(view) {
                Step::Send => return Ok(None),
                Step::Wait => {
                    waited = tokio::time::timeout_at(deadline, moved).await.is_err();
                }
                Step::Refuse(why) => {
                    let refusal = self.refusal(why, writer);
                    if self.tx == Some(Slot::Primary) || self.deferred.is_some() {
                        // As PostgreSQL after a failed statement: the transaction is aborted,
                        // never left open for a later COMMIT to commit part of it.
                        self.close_write_lease();
                        self.abort_transaction();
                    }
                    return Ok(Some(refusal));
                }
                Step::Adopt(leave) => return self.adopt(writer, leave),
                Step::Leave(leave) => return self.leave(writer, leave),
            }
        }
    }

    /// The writer refused an autocommit unit as a standby, before anything of its answer
    /// reached the client: the monitor may not know yet. It samples that node again at
    /// once. If the node is still the writer, serving (out of recovery: a read-only
    /// transaction, say), its refusal goes to the client as it is: run again there, what
    /// the unit did before the refused statement would run twice. Otherwise the unit is
    /// sent once more, to whichever node is the writer after that round (the writer step
    /// decides, as for any unit): a standby ran nothing of it, so it is no duplicate.
    #[cold]
    #[inline(never)]
    pub(super) async fn writer_refused(&mut self, retry: Retry) -> Result<(), End> {
        let health = self.shared.health.clone();
        let refusal = self.writer_refusal.take();
        if let Some(info) = self.leases.peek(Slot::Primary).map(|c| c.info.clone()) {
            tracing::info!(backend = %info, "the writer refused a write as a standby: sampling it again");
            health.next_sample(info.id, health.writer_wait()).await;
            let writer = health.writer();
            if let Some(answer) =
                refusal.filter(|_| writer.serves() && writer.backend == Some(info.id))
            {
                self.cout.extend_from_slice(&answer);
                write::ready_for_query(self.client_status, &mut self.cout);
                self.inflight = None;
                if self.stalled {
                    self.stalled = false;
                    self.process_client_input().await?;
                }
                return Ok(());
            }
        }
        self.inflight = None;
        self.writer_resending = true;
        let write = Decision {
            slot: Slot::Primary,
            reason: Reason::Write,
            writes: true,
        };
        let sent = self.resend(std::iter::once(retry), write).await;
        self.writer_resending = false;
        sent
    }

    /// The session's write lease, against `writer`.
    fn write_lease(&self, writer: Writer) -> Lease {
        let Some(conn) = self.leases.peek(Slot::Primary) else {
            return Lease::None;
        };
        let primary = Some(Slot::Primary);
        if Some(conn.info.id) == writer.backend {
            Lease::OnWriter
        } else if self.state.pinned() || conn.has_temp_schema {
            Lease::Pinned
        } else if !conn.proto.is_quiet()
            || self.inflight == primary
            || self.open_batch == primary
            || self.copy_owes_sync == primary
        {
            Lease::Busy
        } else if self.tx == primary {
            Lease::InTransaction
        } else {
            Lease::Idle
        }
    }

    /// Makes `writer` the session's, leaving the old one's lease as `leave` says.
    fn adopt(&mut self, writer: Writer, leave: Leave) -> Result<Option<ProxyError>, End> {
        let was = self.writer_seen;
        self.writer_seen = Writer {
            held: false,
            ..writer
        }
        .pack();
        let error = self.leave(writer, leave)?;
        if was != NOT_SEEN && Writer::unpack(was).epoch != writer.epoch {
            // What the session saw on the old writer's timeline bounds nothing on the new.
            self.causal.floor = 0;
            self.position_unknown();
        }
        Ok(error)
    }

    /// Leaves the write lease, held on a node that is not `writer`, as `leave` says.
    fn leave(&mut self, writer: Writer, leave: Leave) -> Result<Option<ProxyError>, End> {
        let old = self.leases.peek(Slot::Primary).map(|c| c.info.clone());
        let from = old.as_ref().map_or("the old primary", |info| &info.name);
        let to = self.backend_name(writer);
        Ok(match leave {
            Leave::Nothing => None,
            Leave::Close => {
                self.close_write_lease();
                None
            }
            Leave::Abort => {
                count_lost(LostOutcome::NotCommitted);
                let lost = ProxyError::error(
                    sqlstate::SERIALIZATION_FAILURE,
                    format!(
                        "pgrepl-proxy: the primary changed from {from} to {to} during this \
                         transaction; it was not committed"
                    ),
                );
                self.close_write_lease();
                self.abort_transaction();
                Some(lost)
            }
            Leave::End => {
                return Err(End::Fatal(ProxyError::fatal(
                    sqlstate::CONNECTION_FAILURE,
                    format!(
                        "pgrepl-proxy: the primary changed from {from} to {to}; this session's \
                         state on {from} (temporary tables, LISTEN, advisory locks, SQL \
                         prepared statements, cursors WITH HOLD, or settings the proxy cannot \
                         replay) is gone"
                    ),
                )))
            }
        })
    }

    /// Closes the write lease (cancelling what it still runs), never pooling it.
    fn close_write_lease(&mut self) {
        if let Some(conn) = self.leases.release(Slot::Primary) {
            self.untrack_cancel(&conn);
            let target = conn.cancel.clone();
            if conn.proto.is_quiet() {
                crate::backend::close(conn);
            } else {
                tokio::spawn(async move {
                    let _ = send_cancel(&target).await;
                    crate::backend::close(conn);
                });
            }
        }
        if self.inflight == Some(Slot::Primary) {
            self.inflight = None;
        }
    }

    /// A `ROLLBACK` whose transaction is gone with the write lease (or that could not be
    /// sent): PostgreSQL never fails one, so the proxy answers it, the lease closed.
    pub(super) fn rolled_back(&mut self) {
        self.close_write_lease();
        self.tx = None;
        self.open_batch = None;
        self.deferred = None;
        self.client_status = TxStatus::Idle;
        write::command_complete("ROLLBACK", &mut self.cout);
    }

    /// The client's transaction is lost: it is told `E`, and its next statements run in an
    /// aborted transaction opened on the writer (as a deferred one that failed), so the
    /// server answers them 25P02 until the client's `ROLLBACK`, which the proxy answers.
    pub(super) fn abort_transaction(&mut self) {
        self.tx = None;
        self.open_batch = None;
        self.deferred = Some(Deferred {
            begin: Bytes::from_static(BEGIN),
            state: DeferredState::Aborted,
        });
        self.client_status = TxStatus::Failed;
    }

    fn backend_name(&self, writer: Writer) -> String {
        writer.backend.map_or_else(
            || "none".to_owned(),
            |b| self.shared.pool.backends()[b.index()].name.clone(),
        )
    }

    /// The error a unit refused gets; counted.
    fn refusal(&self, why: Refusal, writer: Writer) -> ProxyError {
        counter!(names::WRITES_REFUSED, "reason" => why.as_str()).increment(1);
        let name = self.backend_name(writer);
        let no_primary = |message: String| {
            ProxyError::error(
                sqlstate::CONNECTION_FAILURE,
                format!("pgrepl-proxy: no primary: {message}"),
            )
        };
        match why {
            Refusal::ReadOnly => ProxyError::error(
                sqlstate::READ_ONLY_SQL_TRANSACTION,
                format!(
                    "pgrepl-proxy: {name} is in recovery, not a primary; statements that may write are not sent to it"
                ),
            ),
            Refusal::Down => no_primary(format!("{name} is down")),
            Refusal::WaitTimeout => no_primary(format!(
                "a new primary was not confirmed within [routing] writer_wait ({})",
                humantime::format_duration(self.shared.health.writer_wait())
            )),
            Refusal::Held => ProxyError::error(
                sqlstate::CONNECTION_FAILURE,
                format!(
                    "pgrepl-proxy: writes were held (the admin console's HOLD WRITES) for \
                     longer than [routing] writer_wait ({})",
                    humantime::format_duration(self.shared.health.writer_wait())
                ),
            ),
            Refusal::NoWriter(state) => no_primary(self.shared.health.why_no_writer(
                state,
                &|i| self.shared.pool.backends()[i].name.clone(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_unit_on_the_write_lease_takes_one_step() {
        use Lease::*;
        use WriterState::*;
        let view = |following, state, writes, lease, waited| UnitView {
            following,
            state,
            writes,
            lease,
            waited,
            held: false,
            in_transaction: lease == InTransaction,
        };
        let held = |following, state, lease, waited| UnitView {
            held: true,
            ..view(following, state, true, lease, waited)
        };
        let cases = [
            // Without follow_primary: the first node, adopted while it serves (the next
            // units take the one-load path), else today's behaviour.
            (
                view(false, Serving, true, OnWriter, false),
                Step::Adopt(Leave::Nothing),
            ),
            (
                view(false, Serving, false, None, false),
                Step::Adopt(Leave::Nothing),
            ),
            (view(false, Down, true, OnWriter, false), Step::Send),
            (
                view(false, ReadOnly, true, OnWriter, false),
                Step::Refuse(Refusal::ReadOnly),
            ),
            (view(false, ReadOnly, false, OnWriter, false), Step::Send),
            // Following: the writer moved.
            (
                view(true, Serving, true, None, false),
                Step::Adopt(Leave::Nothing),
            ),
            (
                view(true, Serving, true, OnWriter, false),
                Step::Adopt(Leave::Nothing),
            ),
            (
                view(true, Serving, false, Idle, false),
                Step::Adopt(Leave::Close),
            ),
            (
                view(true, Serving, false, InTransaction, false),
                Step::Adopt(Leave::Abort),
            ),
            (
                view(true, Serving, false, Pinned, false),
                Step::Adopt(Leave::End),
            ),
            (
                view(true, Serving, true, Busy, false),
                Step::Adopt(Leave::End),
            ),
            // Following: no writer to send to.
            (view(true, Confirming, true, Idle, false), Step::Wait),
            (
                view(true, Confirming, true, Idle, true),
                Step::Refuse(Refusal::WaitTimeout),
            ),
            (
                view(true, Down, true, OnWriter, false),
                Step::Refuse(Refusal::Down),
            ),
            (
                view(true, Down, true, None, false),
                Step::Refuse(Refusal::Down),
            ),
            // A transaction open on the writer goes on: the connection says if it is there.
            (
                UnitView {
                    in_transaction: true,
                    ..view(true, Down, true, OnWriter, false)
                },
                Step::Send,
            ),
            // Reads go to the writer down or in recovery, as they would to a standby.
            (view(true, Down, false, OnWriter, false), Step::Send),
            (view(true, Down, false, None, false), Step::Send),
            (view(true, ReadOnly, false, None, false), Step::Send),
            // Never on a lease held on a node that is not the writer (COMMIT included).
            (
                view(true, ReadOnly, false, InTransaction, false),
                Step::Leave(Leave::Abort),
            ),
            (
                view(true, ReadOnly, false, Idle, false),
                Step::Leave(Leave::Close),
            ),
            (
                view(true, Down, false, Idle, false),
                Step::Leave(Leave::Close),
            ),
            (
                view(true, Down, false, Pinned, false),
                Step::Leave(Leave::End),
            ),
            (
                view(true, ReadOnly, true, InTransaction, false),
                Step::Refuse(Refusal::ReadOnly),
            ),
            (
                view(true, ReadOnly, true, OnWriter, false),
                Step::Refuse(Refusal::ReadOnly),
            ),
            (view(true, ReadOnly, false, OnWriter, false), Step::Send),
            (
                view(true, Conflict, false, None, false),
                Step::Refuse(Refusal::NoWriter(Conflict)),
            ),
            (
                view(true, Fenced, true, OnWriter, false),
                Step::Refuse(Refusal::NoWriter(Fenced)),
            ),
            (
                view(true, NoCandidate, true, None, false),
                Step::Refuse(Refusal::NoWriter(NoCandidate)),
            ),
        ];
        let holds = [
            // Held: units outside a transaction wait, whether following or not.
            (held(false, Serving, OnWriter, false), Step::Wait),
            (held(true, Serving, None, false), Step::Wait),
            (held(true, Serving, Idle, true), Step::Refuse(Refusal::Held)),
            // A transaction open goes on: on the writer, or lost with the old one.
            (held(false, Serving, InTransaction, false), Step::Send),
            (
                held(true, Serving, InTransaction, false),
                Step::Adopt(Leave::Abort),
            ),
        ];
        for (view, expected) in cases.into_iter().chain(holds) {
            assert_eq!(step(view), expected, "{view:?}");
        }
    }
}
