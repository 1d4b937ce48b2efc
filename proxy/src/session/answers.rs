//! What servers answer: relayed to the client, taken in by the session (transaction status,
//! settings that took effect, failed statements), and reads a replica could not answer sent
//! to the primary instead.

use super::*;
use crate::telemetry::Finished;

/// What follows a backend's input, once taken in.
enum AfterInput {
    /// Nothing more now.
    Nothing,
    /// The backend has answered everything: the client's next messages may go.
    Resume,
    /// The connection cannot serve the session any more, for this reason.
    Lost(std::borrow::Cow<'static, str>),
    /// A read the replica refused runs on the primary.
    Rerun(Retry),
}

const SERVER_ENDED: &str = "the server ended the session";

impl<R, W> Session<R, W>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    /// Forwards what a backend sent and resumes the client once that backend is done.
    pub(super) async fn process_backend_input(&mut self, slot: Slot) -> Result<(), End> {
        // What was relayed is taken in before any await: it is not kept in the future.
        let next = {
            let mut seen = relay::Relayed::default();
            match self.relay_from(slot, &mut seen) {
                Some((done, misrouted)) => self.take_in(slot, &seen, done, misrouted),
                None => AfterInput::Nothing,
            }
        };
        match next {
            AfterInput::Nothing => Ok(()),
            AfterInput::Resume => {
                self.inflight = None;
                self.give_back_idle();
                if self.stalled {
                    self.stalled = false;
                    self.process_client_input().await?;
                }
                Ok(())
            }
            // The rare paths boxed: inline, every session's task would keep their room.
            AfterInput::Lost(reason) => Box::pin(self.backend_lost(slot, &reason)).await,
            AfterInput::Rerun(retry) if slot == Slot::Primary => {
                Box::pin(self.writer_refused(retry)).await
            }
            AfterInput::Rerun(retry) => Box::pin(self.rerun_refused(retry)).await,
        }
    }

    /// What the relay saw, taken in: the transaction status, the units that ended, a commit;
    /// and what must happen next.
    #[inline(always)]
    fn take_in(
        &mut self,
        slot: Slot,
        seen: &relay::Relayed,
        done: bool,
        misrouted: Option<Retry>,
    ) -> AfterInput {
        if let Some(status) = seen.last_status {
            self.client_status = status;
            self.tx = (status != TxStatus::Idle).then_some(slot);
        }
        if let Some(told) = seen.client_status {
            self.deferred_read_done(told);
        }
        // What the units answered before anything else happened counts, even if the
        // connection is lost right after (a probe's answer, a SET that took effect).
        let failed_replay = if seen.outcomes.is_empty() {
            None
        } else {
            self.settle(slot, &seen.outcomes)
        };
        if slot == Slot::Primary {
            self.primary_answered(seen);
        }
        if let Some(error) = failed_replay {
            let reason = format!("could not apply the session's settings there: {error}");
            return AfterInput::Lost(reason.into());
        }
        if let Some(ty) = seen.unsolicited {
            if let Some(conn) = self.leases.peek(slot) {
                tracing::warn!(backend = %conn.info, message_type = %(ty as char), "backend sent an unsolicited message; closing it");
            }
            return AfterInput::Lost(SERVER_ENDED.into());
        }
        // A replica shutting down answers an in-flight read with FATAL before closing: the
        // client has seen nothing of that read yet, so it goes elsewhere instead.
        if seen.fatal_before_rerunnable {
            return AfterInput::Lost(SERVER_ENDED.into());
        }
        if let Some(fatal) = &seen.server_fatal {
            return AfterInput::Lost(format!("the server ended the session ({fatal})").into());
        }
        if let Some(retry) = misrouted {
            return AfterInput::Rerun(retry);
        }
        if done && self.open_batch != Some(slot) && self.inflight == Some(slot) {
            AfterInput::Resume
        } else {
            AfterInput::Nothing
        }
    }

    /// Relays what the connection in `slot` has read to the client, and takes in what that
    /// says about the connection's statements, the replica's re-runnable reads and COPY.
    /// Returns whether the connection owes nothing more, and a read the replica refused (to
    /// run on the primary); None without a connection.
    #[inline(always)]
    fn relay_from(
        &mut self,
        slot: Slot,
        seen: &mut relay::Relayed,
    ) -> Option<(bool, Option<Retry>)> {
        let conn = self.leases.get(slot)?;
        let retries = &self.retries;
        // Re-sending a batch goes through the batch buffer: only while the client has not
        // begun its next batch there.
        let alone = self.batch.is_empty();
        let writer_retry = self.writer_retry.is_some();
        let may_rerun = |answered: usize| {
            if slot == Slot::Primary {
                if writer_retry && answered == 0 && alone {
                    Rerun::IfRefused
                } else {
                    Rerun::No
                }
            } else if !retries.get(answered).is_some_and(Option::is_some) {
                Rerun::No
            } else if alone && retries.len() == answered + 1 {
                Rerun::IfFatalOrRefused
            } else {
                Rerun::IfFatal
            }
        };
        // Following, a FATAL from the writer is no answer to pass on: the session tells
        // what became of the units, and goes on with the next writer.
        let hold_fatal = slot == Slot::Primary && self.shared.health.follows();
        let tally = self.counts.tally.as_deref();
        let (info, key) = (&conn.info, &conn.key);
        let timed = |started, unit: &Pending| {
            let unit = Finished {
                backend: &info.name,
                key,
                reason: unit.reason,
                sql: unit.sql.as_ref(),
            };
            info.meters.finished(tally, started, &unit);
        };
        relay(
            &mut conn.proto,
            &mut self.cout,
            seen,
            timed,
            may_rerun,
            hold_fatal,
        );
        let done = conn.proto.syncs.is_empty();
        let mut misrouted = None;
        if slot == Slot::Replica {
            let (units, more) = (seen.units_done, seen.open_unit_answered);
            replica_answered(&mut self.retries, &mut self.batch, units, more);
            if seen.misrouted {
                misrouted = self.retries.pop_front().flatten();
            }
        } else if seen.misrouted {
            misrouted = self.writer_retry.take();
            self.writer_refusal = seen.writer_refusal.take();
        } else if self.writer_retry.is_some() && (seen.units_done > 0 || seen.open_unit_answered) {
            self.writer_retry = None;
        }
        if let Some(news) = seen.statements.take() {
            let verdict = |sql: &[u8]| Verdict::of(&self.routing.classifier, &self.functions, sql);
            follow_statements(&mut self.stmts, verdict, conn, *news);
        }
        if seen.copy_ate_sync {
            self.copy_owes_sync = Some(slot);
        }
        if let Some(on) = seen.default_read_only {
            self.state.default_read_only = on;
        }
        Some((done, misrouted))
    }

    /// Takes in how watched units ended; returns the error of a replay of settings that
    /// failed (the connection then cannot serve this session).
    pub(super) fn settle(&mut self, slot: Slot, outcomes: &[Outcome]) -> Option<String> {
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
                    if let Some(conn) = self.leases.get(slot) {
                        if conn.settings_seq == before {
                            conn.settings_seq = after;
                        }
                    }
                }
                // A "no" from inside a transaction may be undone by its rollback.
                Origin::Probe(epoch) => {
                    let holds = outcome.watch.answer;
                    let valid = holds.filter(|held| *held || outcome.status == TxStatus::Idle);
                    self.state.probed(valid, epoch)
                }
                Origin::Settings => {
                    if let Some(error) = &outcome.watch.error {
                        return Some(error.clone());
                    }
                }
                Origin::CommitPosition => self.commit_sampled(outcome.watch.wal),
                Origin::TxDefaults(seq) => {
                    self.tx_defaults = outcome.watch.answer.map(|plain| (seq, plain))
                }
                Origin::Opening => {}
                Origin::Discard => {}
            }
        }
        None
    }

    /// A backend connection broke. An idle one is just dropped (the next use opens another);
    /// one that owed the client an answer ends that unit with 08006, or the session when the
    /// client's transaction or a partly sent message died with it. Following the primary, a
    /// transaction lost with the writer is not committed (40001: at once, or at the client's
    /// next statement if it was idle), a commit or autocommit write on its way is of unknown
    /// outcome (08007), and the session goes on.
    pub(super) async fn backend_lost(&mut self, slot: Slot, reason: &str) -> Result<(), End> {
        let Some(conn) = self.leases.release(slot) else {
            return Ok(());
        };
        self.untrack_cancel(&conn);
        for pending in &conn.proto.syncs {
            match pending.origin {
                Origin::Probe(epoch) => self.state.probed(None, epoch),
                Origin::CommitPosition => self.commit_sampled(None),
                _ => {}
            }
        }
        let owed = conn.proto.owed_to_client();
        let in_tx = self.tx == Some(slot);
        // What it may have answered in part, or what the replica served before it went
        // (restarted, perhaps at an older point), is bounded by a look-up from now on.
        if owed > 0 || slot == Slot::Replica {
            self.position_unknown();
        }
        // Following the primary, the writer may have moved: the monitor looks again now, and
        // the session goes on with what became of its units told as well as it is known.
        let follows = slot == Slot::Primary && self.shared.health.follows();
        if follows {
            self.shared.health.recheck(conn.info.id);
        }
        let idle = owed == 0 && self.open_batch != Some(slot);
        if idle && (!in_tx || follows) {
            if in_tx {
                // The client's next statement is told (`follow_writer`).
                tracing::warn!(backend = %conn.info, reason, "connection to the writer lost with a transaction open: it was not committed");
                writer::count_lost(writer::LostOutcome::NotCommitted);
                self.lost_tx = Some(conn.info.name.clone());
                self.writer_seen = writer::NOT_SEEN;
            } else {
                tracing::info!(backend = %conn.info, reason, "idle backend connection closed");
            }
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
            && conn.proto.body_remaining == 0
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
            let retries = retries.into_iter().flatten();
            let target = Decision::read(Slot::Primary, Reason::ReplicaDown);
            return self.resend(retries, target).await;
        }
        tracing::warn!(backend = %conn.info, reason, "backend connection lost during a statement");
        let lost = format!(
            "pgrepl-proxy: lost the connection to backend {}: {reason}",
            conn.info
        );
        // Each unit owed is answered in turn, but for a message half forwarded or a batch
        // half sent; with a fixed primary, only a lone unit outside a transaction is.
        let whole = conn.proto.body_remaining == 0 && self.open_batch != Some(slot);
        if !whole || (!follows && (owed != 1 || in_tx)) {
            return Err(End::Fatal(ProxyError::fatal(
                sqlstate::CONNECTION_FAILURE,
                lost,
            )));
        }
        let may_have_committed =
            conn.proto.owes_end_of_transaction() || (!in_tx && conn.proto.owes_write());
        let told = lost::lost_units(follows, in_tx, may_have_committed);
        if let Some(outcome) = told.counted {
            writer::count_lost(outcome);
        }
        // The errors end autocommit statements (or commits whose outcome is unknown); they
        // abort a deferred transaction, and one lost on the writer.
        self.client_status = match &mut self.deferred {
            Some(deferred) => {
                deferred.state = DeferredState::Aborted;
                TxStatus::Failed
            }
            None => TxStatus::Idle,
        };
        if told.aborts {
            self.abort_transaction();
        }
        for unit in 0..owed {
            let error = match (unit, told.rest) {
                (0, _) => ProxyError::error(told.first, lost.clone()),
                (_, sqlstate::IN_FAILED_SQL_TRANSACTION) => ProxyError::in_failed_transaction(),
                (_, code) => ProxyError::error(code, lost.clone()),
            };
            error.encode(&mut self.cout);
            write::ready_for_query(self.client_status, &mut self.cout);
        }
        self.tx = None;
        self.inflight = None;
        // Whatever was on its way there is known or told now; what committed is bounded
        // by the look-up `position_unknown` asked for.
        if slot == Slot::Primary {
            self.pending_write = false;
        }
        if self.stalled {
            self.stalled = false;
            self.process_client_input().await?;
        }
        Ok(())
    }

    /// Records a unit sent to the replica: a new entry when it owes a new answer, else the
    /// unit continues the newest one, which can then no longer be re-run on its own.
    pub(super) fn note_replica_unit(&mut self, new_unit: bool, retry: Option<Retry>) {
        if new_unit {
            self.retries.push_back(retry);
        } else if let Some(last) = self.retries.back_mut() {
            *last = None;
        }
    }

    /// Sends a read a replica refused as a standby (it writes after all: a function the
    /// proxy took for read-only, say) to the primary, where it runs as it would have
    /// directly: a wrong guess costs a round trip, not an error. Nothing of it reached the
    /// client, and the rest of the replica's answer is swallowed.
    #[cold]
    pub(super) async fn rerun_refused(&mut self, retry: Retry) -> Result<(), End> {
        let sql = match &retry {
            Retry::Query(msg) => fields::query_sql(msg).map(|sql| msg.slice_ref(sql)),
            Retry::Batch(messages, _) => batch_sql(messages, &self.stmts),
        };
        let shown = sql
            .as_deref()
            .and_then(|sql| std::str::from_utf8(sql).ok())
            .and_then(crate::route::fingerprint::shown);
        if let Some(conn) = self.leases.peek(Slot::Replica) {
            conn.info.meters.refused_retries.increment(1);
            tracing::info!(backend = %conn.info, statement = shown.as_deref().unwrap_or("(not shown)"),
                "a replica refused a read that writes; running it on the primary");
        }
        self.functions.refused_read();
        self.inflight = None;
        let writes = Decision {
            slot: Slot::Primary,
            reason: Reason::Function,
            writes: true,
        };
        self.resend(std::iter::once(retry), writes).await
    }

    /// Sends reads whose replica died before answering them to the primary, in order (the
    /// monitor may not know yet that the replica is gone, so it is not picked again for them).
    pub(super) async fn resend(
        &mut self,
        retries: impl Iterator<Item = Retry>,
        target: Decision,
    ) -> Result<(), End> {
        self.counts.rerun = true;
        for retry in retries {
            let sent = match retry {
                Retry::Query(msg) => self.send(target, Unit::Query(msg, Effects::NONE)).await,
                Retry::Batch(messages, sync) => {
                    // The statements the batch defined died with the replica: define them anew.
                    for (ty, msg, _) in &messages {
                        if let Some((name, _)) = fields::parse_name_sql(msg).filter(|_| *ty == b'P')
                        {
                            self.stmts.forget(name);
                        }
                    }
                    let unit = Unit::Batch {
                        messages,
                        terminator: sync,
                        synced: true,
                    };
                    self.send(target, unit).await
                }
            };
            if sent.is_err() {
                self.counts.rerun = false;
                return sent;
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

/// The replica answered `units` units to the end, and the start of the next one if `more`:
/// none of those can be re-run any more.
#[inline]
pub(super) fn replica_answered(
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

/// Follows what the relay saw of prepared statements on `conn` (`verdict` classifies a
/// redefined statement's text).
#[cold]
fn follow_statements(
    stmts: &mut Statements,
    verdict: impl Fn(&[u8]) -> Verdict,
    conn: &mut BackendConn,
    news: relay::StatementNews,
) {
    for (name, generation) in &news.failed_parses {
        stmts.parse_failed(Some(&mut *conn), name, *generation);
    }
    for (name, generation) in &news.skipped_parses {
        conn.prepared.not_sure_of(name, *generation);
    }
    // The server still holds them: closed before the connection's next unit. (One prepared
    // again meanwhile, in a unit sent before this answer, was closed first.)
    for name in news.skipped_closes {
        if !conn.prepared.contains_key(&name) {
            conn.closes_due.push(name);
        }
    }
    for parse in news.redefined {
        let verdict = verdict(fields::parse_name_sql(&parse).map_or(&b""[..], |(_, sql)| sql));
        stmts.redefined(conn, parse, verdict);
    }
}
