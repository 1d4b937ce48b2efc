//! Sending a unit to its server: the settings it lacks first, then the unit, then whatever
//! the proxy must ask after it; and what the session notes about it.

use super::*;

impl<R, W> Session<R, W>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    /// Sends a simple Query (or FunctionCall): one ReadyForQuery will come back.
    pub(super) async fn send_query(
        &mut self,
        mut decision: Decision,
        msg: Bytes,
        effects: Effects,
    ) {
        let closes_batch = self.open_batch.take().is_some();
        let deallocates =
            msg[0] == b'Q' && resets_statements(fields::query_sql(&msg).unwrap_or_default());
        if let Some(refusal) = self.refuse_write(decision) {
            refusal.encode(&mut self.cout);
            write::ready_for_query(self.client_status, &mut self.cout);
            return;
        }
        if effects.contains(Effects::DATABASE_DDL) {
            let sql = fields::query_sql(&msg).unwrap_or_default();
            self.shared.pool.before_database_ddl(sql);
        }
        if !self.leases.holds(decision.slot) {
            if let Err(e) = Box::pin(self.open_lease(&mut decision)).await {
                self.report_unavailable(&e);
                write::ready_for_query(self.client_status, &mut self.cout);
                return;
            }
        }
        let target = decision.slot;
        Self::log_route(decision);
        self.pending_write |= target == Slot::Primary && decision.writes;
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
        let Some(conn) = self.leases.get(target) else {
            return;
        };
        conn.has_temp_schema |= effects.contains(Effects::TEMP);
        self.counts.unit(conn, decision.reason, &self.shared.health);
        if !closes_batch {
            begin_unit(conn, &self.state.settings);
        }
        // A Query that closes an open batch shares its ReadyForQuery: the Query is timed.
        let sql = || {
            let sql = fields::query_sql(&msg).filter(|_| msg[0] == b'Q')?;
            Some(msg.slice_ref(sql))
        };
        start_timing(conn, decision.reason, sql);
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
    pub(super) async fn send_batch(
        &mut self,
        mut decision: Decision,
        terminator: Bytes,
        is_sync: bool,
    ) {
        let continuing = self.open_batch.is_some();
        let runs_statement = self.batch.verdict().is_some();
        if let Some(refusal) = self.refuse_write(decision) {
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
        if !self.leases.holds(decision.slot) {
            if let Err(e) = Box::pin(self.open_lease(&mut decision)).await {
                self.batch.restore(messages);
                self.report_unavailable(&e);
                if is_sync {
                    write::ready_for_query(self.client_status, &mut self.cout);
                } else {
                    self.discard_until_sync = true;
                }
                return;
            }
        }
        let target = decision.slot;
        Self::log_route(decision);
        self.pending_write |= target == Slot::Primary && decision.writes;
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
        let Some(conn) = self.leases.get(target) else {
            self.batch.restore(messages);
            return;
        };
        conn.has_temp_schema |= effects.contains(Effects::TEMP);
        if !continuing {
            begin_unit(conn, &self.state.settings);
        }
        // A batch that runs no statement (a Close, a lone Sync, a Describe) is no statement to
        // count; a batch continued after a Flush counts once, with its first statement.
        let counted = runs_statement && !(continuing && self.counts.open_batch_counted);
        if counted {
            self.counts.unit(conn, decision.reason, &self.shared.health);
            start_timing(conn, decision.reason, || batch_sql(&messages, &self.stmts));
        }
        self.counts.open_batch_counted =
            !is_sync && (counted || (continuing && self.counts.open_batch_counted));
        watch_unit(conn, watch);
        if is_sync {
            if let Some(pending) = conn.proto.last_sent() {
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
}

/// Times the unit last queued on `conn`, sent for `why`, when metrics or the slow-statement
/// log want durations (with its SQL if the log shows statements).
#[inline]
pub(super) fn start_timing(
    conn: &mut BackendConn,
    why: Reason,
    sql: impl FnOnce() -> Option<Bytes>,
) {
    let Some(timing) = &conn.info.meters.timing else {
        return;
    };
    let with_text = timing.text && timing.slow.is_some();
    if let Some(pending) = conn.proto.last_sent() {
        pending.started = Some(crate::telemetry::clock::now_nanos());
        pending.reason = Some(why);
        pending.sql = if with_text { sql() } else { None };
    }
}

/// The SQL a batch runs, for the slow-statement log: its first Parse's, else that of the
/// statement its first Bind names.
pub(super) fn batch_sql(messages: &[(u8, Bytes, Verdict)], stmts: &Statements) -> Option<Bytes> {
    messages.iter().find_map(|(ty, msg, _)| match ty {
        b'P' => fields::parse_name_sql(msg).map(|(_, sql)| msg.slice_ref(sql)),
        b'B' => fields::bind_statement(msg).and_then(|name| stmts.sql_of(name)),
        _ => None,
    })
}

/// Starts a unit on `conn`: the settings it lacks first (units of their own), then the
/// unit's entry among the answers owed, with Closes of the statements the client deallocated
/// since put in front of it (their answers swallowed).
#[inline(always)]
pub(super) fn begin_unit(conn: &mut BackendConn, settings: &Settings) {
    bring_settings(conn, settings);
    conn.proto.expect(Pending::default());
    if !conn.closes_due.is_empty() {
        close_deallocated(conn);
    }
}

#[cold]
#[inline(never)]
fn close_deallocated(conn: &mut BackendConn) {
    for name in std::mem::take(&mut conn.closes_due) {
        write::close_statement(&name, &mut conn.out);
        if let Some(unit) = conn.proto.last_sent() {
            unit.closes.push(true);
        }
    }
}

/// Before a unit on `conn`: replays the session's settings it lacks, swallowing the answer.
/// Runs for every unit, which nearly always finds the connection up to date: that test inline,
/// the replay out of line.
#[inline(always)]
pub(super) fn bring_settings(conn: &mut BackendConn, settings: &Settings) {
    if conn.settings_seq < settings.seq() {
        replay_settings(conn, settings);
    }
}

#[cold]
#[inline(never)]
pub(super) fn replay_settings(conn: &mut BackendConn, settings: &Settings) {
    for sql in settings.replay_since(conn.settings_seq, &conn.params) {
        write::query(&sql, &mut conn.out);
        conn.proto.expect(Pending::injected(Origin::Settings));
    }
    conn.settings_seq = settings.seq();
}

/// Attaches what to watch to the unit being sent on `conn`.
#[inline]
pub(super) fn watch_unit(conn: &mut BackendConn, watch: Option<Box<Watch>>) {
    let (Some(watch), Some(unit)) = (watch, conn.proto.last_sent()) else {
        return;
    };
    match &mut unit.watch {
        Some(existing) => existing.merge(*watch),
        None => unit.watch = Some(watch),
    }
}

/// Whether a probe may follow a unit: not inside a transaction (a client's cancel meant for
/// its own statement could hit the probe and abort the transaction), unless the unit ends it.
pub(super) fn may_probe(in_tx: bool, effects: Effects) -> bool {
    !in_tx
        || (effects.contains(Effects::TX_CONTROL) && !effects.contains(Effects::PARTIAL_ROLLBACK))
}

/// Whether the session holds state only this server has: temporary tables, LISTENs,
/// advisory locks, SQL-level prepared statements, cursors WITH HOLD.
pub(super) const HOLDS_STATE: &str = "SELECT EXISTS (SELECT FROM pg_catalog.pg_class \
     WHERE relnamespace = pg_catalog.pg_my_temp_schema()) \
     OR EXISTS (SELECT FROM pg_catalog.pg_listening_channels()) \
     OR EXISTS (SELECT FROM pg_catalog.pg_locks \
       WHERE locktype = 'advisory' AND pid = pg_catalog.pg_backend_pid()) \
     OR EXISTS (SELECT FROM pg_catalog.pg_prepared_statements WHERE from_sql) \
     OR EXISTS (SELECT FROM pg_catalog.pg_cursors WHERE is_holdable)";

/// After a unit on the primary that may have released such state: asks, swallowing the
/// answer, which is taken only if no newer pin than `epoch` was made meanwhile.
pub(super) fn ask_holds_state(conn: &mut BackendConn, epoch: u64) {
    write::query(HOLDS_STATE, &mut conn.out);
    conn.proto.expect(Pending::injected(Origin::Probe(epoch)));
}
