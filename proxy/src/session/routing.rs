//! Where each unit goes: the session's side of the routing decision (`decide` has the pure
//! steps), and the statements the proxy answers itself instead of routing them.

use super::*;
use crate::route::CausalHint;
use causal::Awaited;
use decide::ReplicaView;
use pgrepl_config::ReadYourWrites;

/// What a simple Query's routing step came to.
pub(super) enum QueryStep {
    /// It must wait for work in flight.
    Wait,
    /// The proxy answered it.
    Answered,
    /// Send it, with what it does to the session.
    Send(Decision, Effects),
}

impl<R, W> Session<R, W>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    /// Takes a simple Query's routing step: the statements the proxy answers itself
    /// (`SET pgrepl.route`, `DEALLOCATE` of a statement it tracks), else where it goes.
    #[inline]
    pub(super) fn take_query(&mut self, total: usize) -> QueryStep {
        if self.may_take_deferral(total) {
            if let Some(step) = self.take_deferral(total) {
                return step;
            }
        }
        let sql = fields::query_sql(&self.cin[..total]).unwrap_or_default();
        let mut batch_setting = None;
        match proxy_setting(sql) {
            // Inside an extended batch a Flush left open, the answer must come in order from
            // the batch's server: the statement goes there like any other (a harmless
            // placeholder setting to PostgreSQL), and the session takes the preference too.
            // Waiting for the batch would never end: the client waits for this answer first.
            Some(Ok(setting))
                if self.open_batch.is_some() && self.client_status != TxStatus::Failed =>
            {
                batch_setting = Some(setting);
            }
            Some(_) if self.open_batch.is_some() => {}
            Some(setting) => {
                if self.inflight.is_some() {
                    return QueryStep::Wait;
                }
                let reset = sql.trim_ascii_start()[0].eq_ignore_ascii_case(&b'R');
                self.cin.advance(total);
                self.answer_proxy_setting(setting, reset);
                return QueryStep::Answered;
            }
            None => {}
        }
        let session_only = words::may_start_with(sql, &[b"DEALLOCATE", b"DISCARD"]);
        let dropped = session_only.then(|| words::deallocate(sql)).flatten();
        if let Some(Deallocate::Named(name)) = &dropped {
            if self.stmts.contains(name) && self.open_batch.is_none() {
                if self.inflight.is_some() {
                    return QueryStep::Wait;
                }
                self.cin.advance(total);
                self.answer_deallocate(name);
                return QueryStep::Answered;
            }
        }
        let verdict = Verdict::of(&self.routing.classifier, &self.functions, sql);
        let mut wanted = decide::wanted(verdict, self.state.default_read_only);
        if dropped.is_some() || (session_only && words::discards(sql)) {
            // The session's own statements and state: on the primary, but no write.
            wanted = Wanted::Primary {
                reason: verdict.reason,
                writes: false,
            };
        }
        if let Some(setting) = batch_setting {
            self.take_setting(setting);
        }
        if let Some(deferred) = &self.deferred {
            wanted = deferred::wanted_in_deferred(wanted, verdict.effects, deferred.state);
        }
        self.unit_hint = verdict.hint;
        match self.route(wanted) {
            Some(decision) => QueryStep::Send(decision, verdict.effects),
            None => QueryStep::Wait,
        }
    }

    /// Where the buffered extended-protocol batch goes, at its Sync or Flush.
    #[inline]
    pub(super) fn route_batch(&mut self) -> Option<Decision> {
        let verdict = self.batch.verdict();
        self.unit_hint = verdict.map_or(CausalHint::NONE, |v| v.hint);
        let mut wanted = decide::wanted_by_batch(
            verdict,
            self.batch.names_primary_object(),
            self.state.pinned(),
            self.state.default_read_only,
        );
        if let Some(deferred) = &self.deferred {
            wanted = deferred::wanted_in_deferred(wanted, self.batch.effects, deferred.state);
        }
        self.route(wanted)
    }

    /// Where a unit goes, from where it would go on its own; None when it must wait (for
    /// work in flight, or for the primary to say whether a pinned session is still pinned).
    #[inline(always)]
    pub(super) fn route(&mut self, wanted: Wanted) -> Option<Decision> {
        let (standalone, awaited) = match wanted {
            Wanted::Primary { reason, writes } => {
                let decision = Decision {
                    slot: Slot::Primary,
                    reason,
                    writes,
                };
                (decision, None)
            }
            Wanted::Read { reason, hinted } => self.place_read(reason, hinted),
            Wanted::Any => match (
                self.leases.holds(Slot::Replica),
                self.leases.holds(Slot::Primary),
            ) {
                (true, _) => (Decision::read(Slot::Replica, Reason::Read), None),
                (false, true) => (Decision::read(Slot::Primary, Reason::Read), None),
                (false, false) => self.place_read(Reason::Read, false),
            },
        };
        // A deferred transaction's units go one at a time: one that fails aborts the
        // transaction, and what follows it must learn so before it runs anywhere.
        if self.deferred.is_some() && self.inflight.is_some() && self.open_batch.is_none() {
            return None;
        }
        let slot = decide::join(standalone.slot, self.open_batch, self.tx, self.inflight)?;
        let decision = decide::joined(standalone, slot, self.tx);
        // The writer moved while units of the client's are still owed: they are answered
        // (or told lost) first, so that what the move does to this unit (an error, a lease
        // closed) comes after them, in order.
        if decision.slot == Slot::Primary
            && self.inflight.is_some()
            && self.shared.health.writer_word() != self.writer_seen
        {
            return None;
        }
        // A read that runs where a transaction or batch already is needs no wait.
        if let Some(awaited) = awaited {
            if decision.slot == Slot::Replica
                && self.tx.is_none()
                && self.open_batch.is_none()
                && self.await_position(awaited)
            {
                return None;
            }
        }
        if self.awaits_probe(decision) {
            return None;
        }
        if self.causal.wait.is_some() {
            self.waited(decision);
        }
        Some(decision)
    }

    /// Where a read goes now, and what it must wait for first if it goes to a replica.
    pub(super) fn place_read(
        &mut self,
        reason: Reason,
        hinted: bool,
    ) -> (Decision, Option<Awaited>) {
        let (view, reason) = match decide::plan_read(hinted, self.read_pref, self.state.pinned()) {
            ReadPlan::Primary(why) => (None, why),
            ReadPlan::Replica { forced } => (Some(self.replica_view(forced)), reason),
        };
        let Some(view) = view else {
            return (Decision::read(Slot::Primary, reason), None);
        };
        let awaited = match view {
            ReplicaView::Waits(awaited) => Some(awaited),
            _ => None,
        };
        let (slot, reason) = decide::place_read(view, reason);
        (Decision::read(slot, reason), awaited)
    }

    /// A read pinned to the primary waits while the primary answers whether the session
    /// still holds state there: the statement before it may have released the last of it.
    pub(super) fn awaits_probe(&self, decision: Decision) -> bool {
        decision.slot == Slot::Primary
            && decision.reason == Reason::SessionPinned
            && self.tx.is_none()
            && self.open_batch.is_none()
            && self.state.awaits_probe()
    }

    /// Logs where a unit went and why (debug level: the reasons are also what the metrics
    /// count). Runs for every unit: the level test inline, the event out of line.
    #[inline(always)]
    pub(super) fn log_route(decision: Decision) {
        if tracing::level_enabled!(tracing::Level::DEBUG) {
            Self::log_route_now(decision);
        }
    }

    #[inline(never)]
    pub(super) fn log_route_now(decision: Decision) {
        tracing::debug!(
            to = match decision.slot {
                Slot::Primary => "primary",
                Slot::Replica => "replica",
            },
            reason = decision.reason.as_str(),
            "routed"
        );
    }

    /// Answers `SET/RESET pgrepl.*` itself, as PostgreSQL would answer a SET.
    pub(super) fn answer_proxy_setting(
        &mut self,
        setting: Result<ProxySetting, String>,
        reset: bool,
    ) {
        match setting {
            _ if self.client_status == TxStatus::Failed => {
                ProxyError::in_failed_transaction().encode(&mut self.cout)
            }
            Err(message) => {
                ProxyError::error(sqlstate::INVALID_PARAMETER_VALUE, message).encode(&mut self.cout)
            }
            Ok(setting) => {
                self.take_setting(setting);
                write::command_complete(if reset { "RESET" } else { "SET" }, &mut self.cout);
            }
        }
        write::ready_for_query(self.client_status, &mut self.cout);
    }

    /// The session takes one of the proxy's settings.
    fn take_setting(&mut self, setting: ProxySetting) {
        match setting {
            ProxySetting::Route(pref) => self.read_pref = pref,
            ProxySetting::ReadYourWrites(mode) => {
                self.causal.chosen = mode.is_some();
                self.set_causal_mode(mode.unwrap_or(self.routing.read_your_writes));
            }
            ProxySetting::MaxStaleness(bound) => self.max_staleness = bound,
        }
    }

    /// The session's causal-reads mode from now on.
    pub(super) fn set_causal_mode(&mut self, mode: ReadYourWrites) {
        if mode != self.causal.mode {
            // What the old mode did not track is bounded by a look-up from now on.
            self.causal.mode = mode;
            self.position_unknown();
        }
    }

    /// Answers `DEALLOCATE` of a statement the proxy tracks itself, as PostgreSQL would: the
    /// statement is prepared only on the connections that ran it, perhaps none the session
    /// still has, so forwarding it could fail (and abort a transaction) where PostgreSQL
    /// would not. The connections that have it close it before their next unit, out of the
    /// client's sight (a Close and Sync of their own would leave an answer owed, and a
    /// connection that owes one cannot go back to the pool when the client leaves).
    pub(super) fn answer_deallocate(&mut self, name: &[u8]) {
        if self.client_status == TxStatus::Failed {
            ProxyError::in_failed_transaction().encode(&mut self.cout);
        } else {
            self.stmts.forget(name);
            for conn in self.leases.each_mut() {
                if conn.prepared.remove(name).is_some() {
                    conn.closes_due.push(Bytes::copy_from_slice(name));
                }
            }
            write::command_complete("DEALLOCATE", &mut self.cout);
        }
        write::ready_for_query(self.client_status, &mut self.cout);
    }
}
