//! Sending a unit to its server: the settings it lacks first, then the unit, then whatever
//! the proxy must ask after it; and what the session notes about it.

use super::*;
use crate::backend::StatementClose;
use crate::health::POSITION_SQL;

/// A unit to send, as the client sent it.
pub(super) enum Unit {
    /// A simple Query or a FunctionCall, with what its statement does.
    Query(Bytes, Effects),
    /// The buffered batch's messages (taken out of it) and the Sync (`synced`) or Flush that
    /// ends them.
    Batch {
        messages: Vec<(u8, Bytes, Verdict)>,
        terminator: Bytes,
        synced: bool,
    },
}

impl Unit {
    /// Whether a ReadyForQuery answers it (a batch up to a Flush has none yet).
    fn synced(&self) -> bool {
        match self {
            Unit::Query(..) => true,
            Unit::Batch { synced, .. } => *synced,
        }
    }
}

impl<R, W> Session<R, W>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    /// Sends a unit where `decision` says: the lease opened if need be, the settings it lacks
    /// and the statements it uses brought there first, what the session must learn from its
    /// answers noted, and a read kept for a re-run while the replica has not answered it.
    ///
    /// A unit on the write lease first checks the writer word (one load in the common case;
    /// see `writer`); an `Err` ends the session. Opening a lease may wait (`PAUSE`, a full
    /// pool, a new connection), and a read may fall back to the primary there: the word is
    /// checked again after it, so a unit never goes to a writer that was left meanwhile.
    pub(super) async fn send(&mut self, mut decision: Decision, unit: Unit) -> Result<(), End> {
        loop {
            if decision.slot == Slot::Primary
                && self.shared.health.writer_word() != self.writer_seen
            {
                if let Some(refusal) = Box::pin(self.follow_writer(decision)).await? {
                    if is_lone_rollback(&unit) {
                        self.rolled_back();
                    } else {
                        refusal.encode(&mut self.cout);
                    }
                    self.not_sent(unit);
                    return Ok(());
                }
            }
            if self.leases.holds(decision.slot) || self.take_idle_lease(decision.slot) {
                break;
            }
            if let Err(e) = Box::pin(self.open_lease(&mut decision)).await {
                self.report_unavailable(&e);
                self.not_sent(unit);
                return Ok(());
            }
            if decision.slot != Slot::Primary
                || self.shared.health.writer_word() == self.writer_seen
            {
                break;
            }
        }
        self.send_on_lease(decision, unit);
        Ok(())
    }

    /// Sends a unit on the lease `decision` names, which the session holds.
    fn send_on_lease(&mut self, decision: Decision, unit: Unit) {
        let target = decision.slot;
        let synced = unit.synced();
        let (effects, runs_statement) = match &unit {
            Unit::Query(_, effects) => (*effects, true),
            Unit::Batch { .. } => (self.batch.effects, self.batch.verdict().is_some()),
        };
        // A deferred transaction opens on the primary with its first unit there.
        let opening = if target == Slot::Primary {
            self.deferred.take()
        } else {
            None
        };
        if opening.is_some() {
            self.tx = Some(Slot::Primary);
        }
        let leading_read = self.deferred.is_some() && self.note_leading_read();
        if target == Slot::Primary && effects.intersects(Effects::SYNC_COMMIT | Effects::OPAQUE) {
            self.may_commit_asynchronously(effects);
        }
        let ask_defaults = target == Slot::Primary && self.asks_tx_defaults(effects);
        if effects.contains(Effects::DATABASE_DDL) {
            self.before_database_ddl(&unit);
        }
        Self::log_route(decision);
        self.pending_write |= target == Slot::Primary && decision.writes;
        let continuing = self.open_batch.take().is_some();
        // A Parse that redefines a known statement must reach the server that refuses it,
        // once: such a batch is not retried. (Checked before the batch's Parses are recorded.)
        let retryable = match target {
            Slot::Replica => synced && self.tx.is_none(),
            // Following the primary: one autocommit unit alone on the write lease. The
            // proxy's own questions may still be on their way there (a commit position
            // asked after the unit before): their answers come first, and are no answer to
            // this unit.
            Slot::Primary => {
                self.shared.health.follows()
                    && !self.writer_resending
                    && synced
                    && !continuing
                    && self.tx.is_none()
                    && opening.is_none()
                    && self
                        .leases
                        .peek(Slot::Primary)
                        .is_none_or(|conn| conn.proto.owed_to_client() == 0)
            }
        } && !redefines(&unit, &self.stmts);
        // As nearly every statement: one that changes nothing the session follows.
        let watch = if effects.is_none() && !self.state.watching() {
            None
        } else {
            self.watch_for(&unit, effects)
        };
        let probe = synced
            && target == Slot::Primary
            && self.state.wants_probe(effects)
            && may_probe(self.tx.is_some(), effects);
        if self.stmts.settings_seq() != self.state.settings.seq() {
            self.number_under_settings();
        }
        let Some(conn) = self.leases.get(target) else {
            return self.not_sent(unit);
        };
        conn.has_temp_schema |= effects.contains(Effects::TEMP);
        if !continuing {
            bring_settings(conn, &self.state.settings);
            if ask_defaults {
                let seq = self.state.settings.seq();
                injected_query(conn, TX_DEFAULTS, Origin::TxDefaults(seq));
            }
            if let Some(opening) = opening {
                open_transaction(conn, opening);
            }
            start_unit(conn);
        }
        // A batch that runs no statement (a Close, a lone Sync, a Describe) is no statement to
        // count; a batch continued after a Flush counts once, with its first statement. A
        // Query always counts, also one that closes an open batch (it is timed then: the two
        // share its ReadyForQuery).
        let counts = &mut self.counts;
        let is_query = matches!(unit, Unit::Query(..));
        let counted = is_query || (runs_statement && !(continuing && counts.open_batch_counted));
        if counted {
            counts.unit(
                conn,
                target == Slot::Primary,
                decision.reason,
                &self.shared.health,
            );
            start_timing(conn, decision.reason, || unit_sql(&unit, &self.stmts));
        }
        counts.open_batch_counted =
            !synced && (counted || (continuing && counts.open_batch_counted));
        watch_unit(conn, watch);
        if target == Slot::Primary {
            if let Some(sent) = conn.proto.last_sent() {
                sent.writes |= decision.writes;
                sent.ends_tx |= effects.contains(Effects::ENDS_TX);
            }
        }
        if leading_read {
            mark_leading_read(conn);
        }
        match &unit {
            Unit::Query(msg, _) => write_query(conn, msg, &mut self.stmts),
            Unit::Batch {
                messages,
                terminator,
                synced,
            } => write_batch(conn, messages, terminator, *synced, &mut self.stmts),
        }
        if probe {
            ask_holds_state(conn, self.state.pin_epoch());
            self.state.probing();
        }
        if causal::asks_commit_position(
            self.causal.mode,
            synced,
            target == Slot::Primary,
            self.pending_write,
            self.tx.is_some(),
            effects,
        ) {
            injected_query(conn, POSITION_SQL, Origin::CommitPosition);
            self.causal.commits_asked += 1;
            if let Some(tally) = &self.counts.tally {
                tally.commit_question();
            }
        }
        self.open_batch = (!synced).then_some(target);
        self.inflight = Some(target);
        self.track_cancel(target);
        self.keep_for_rerun(target, !continuing, retryable, unit);
    }

    /// Statements defined from now on are numbered under the session's settings as they are.
    #[cold]
    fn number_under_settings(&mut self) {
        let seq = self.state.settings.seq();
        let fingerprint = self.state.settings.fingerprint().clone();
        self.stmts.parse_under(seq, fingerprint);
    }

    /// A unit refused, or with no server to run it: the client is answered as the server
    /// would end it (a batch up to a Flush: its messages up to Sync are skipped).
    fn not_sent(&mut self, unit: Unit) {
        match unit {
            Unit::Query(..) => write::ready_for_query(self.client_status, &mut self.cout),
            Unit::Batch {
                messages, synced, ..
            } => {
                self.batch.restore(messages);
                if synced {
                    write::ready_for_query(self.client_status, &mut self.cout);
                } else {
                    self.discard_until_sync = true;
                }
            }
        }
    }

    /// What to watch in the answers to a unit that changes what the session follows.
    #[inline(never)]
    fn watch_for(&mut self, unit: &Unit, effects: Effects) -> Option<Box<Watch>> {
        let in_tx = self.tx.is_some();
        match unit {
            Unit::Query(msg, _) => {
                // A FunctionCall travels as a Query unit, and has no text.
                let text = fields::query_sql(msg).filter(|_| msg[0] == QUERY);
                let sql = msg.slice_ref(text.unwrap_or_default());
                let sets = if effects.contains(Effects::ONLY_SETS) {
                    vec![sql.clone()]
                } else {
                    Vec::new()
                };
                self.state.sending(effects, sets, Some(&sql), in_tx)
            }
            Unit::Batch { .. } => {
                let sets = std::mem::take(&mut self.batch.sets);
                self.state.sending(effects, sets, None, in_tx)
            }
        }
    }

    /// Before `DROP DATABASE` or a rename: the pool lets go of its connections to it.
    #[cold]
    fn before_database_ddl(&self, unit: &Unit) {
        if let Some(sql) = unit_sql(unit, &self.stmts) {
            self.shared.pool.before_database_ddl(&sql);
        }
    }

    /// A unit sent to the replica is kept (the messages themselves, no copy) until the
    /// replica answers it, to run elsewhere if the replica dies or refuses it first; a
    /// batch's message list otherwise goes back to the batch buffer.
    #[inline(always)]
    fn keep_for_rerun(&mut self, target: Slot, new_unit: bool, retryable: bool, unit: Unit) {
        let retry = match unit {
            Unit::Query(msg, _) => retryable.then_some(Retry::Query(msg)),
            Unit::Batch {
                messages,
                terminator,
                ..
            } => {
                if retryable {
                    self.batch.clear();
                    Some(Retry::Batch(messages, terminator))
                } else {
                    self.batch.restore(messages);
                    None
                }
            }
        };
        match target {
            Slot::Replica => self.note_replica_unit(new_unit, retry),
            Slot::Primary => self.writer_retry = retry,
        }
    }
}

/// Queues a simple Query (or FunctionCall) on `conn`. A simple Query destroys the unnamed
/// statement; DISCARD ALL and DEALLOCATE ALL drop the named ones.
#[inline(always)]
fn write_query(conn: &mut BackendConn, msg: &Bytes, stmts: &mut Statements) {
    if msg[0] == QUERY && !conn.prepared.is_empty() {
        stmts.before_sql_naming(conn, fields::query_sql(msg).unwrap_or_default());
    }
    conn.out.extend_from_slice(msg);
    if !conn.prepared.is_empty() {
        conn.prepared.remove(&b""[..]);
    }
    if msg[0] == QUERY && resets_statements(fields::query_sql(msg).unwrap_or_default()) {
        conn.prepared.clear();
        stmts.clear();
    }
}

/// Queues a batch on `conn`: its Parses recorded (or answered from what the server has),
/// the statements its Binds and Describes use prepared there first, its Closes followed.
#[inline]
fn write_batch(
    conn: &mut BackendConn,
    messages: &[(u8, Bytes, Verdict)],
    terminator: &Bytes,
    synced: bool,
    stmts: &mut Statements,
) {
    if synced {
        if let Some(pending) = conn.proto.last_sent() {
            pending.synced_batch = true;
        }
    }
    // The statement a Parse of this batch has just defined here (drivers parse the unnamed
    // statement, then bind it): a Bind or Describe of it needs no look-up.
    let mut just_parsed = None;
    for (ty, msg, kind) in messages {
        match *ty {
            PARSE => {
                stmts.parse_on(conn, msg.clone(), *kind);
                just_parsed = fields::cstr(fields::body(msg)).map(|(name, _)| name);
                continue;
            }
            BIND => {
                if let Some(name) = fields::bind_statement(msg).filter(|n| Some(*n) != just_parsed)
                {
                    stmts.ensure_on(conn, name);
                }
            }
            DESCRIBE => {
                if let Some((b'S', name)) =
                    fields::target(msg).filter(|(_, n)| Some(*n) != just_parsed)
                {
                    stmts.ensure_on(conn, name);
                }
            }
            CLOSE => {
                stmts.close_on(conn, msg);
                just_parsed = None;
                continue;
            }
            _ => {}
        }
        conn.out.extend_from_slice(msg);
    }
    conn.out.extend_from_slice(terminator);
}

/// Whether `unit` is one plain `ROLLBACK` (or `ABORT`) in a simple Query.
fn is_lone_rollback(unit: &Unit) -> bool {
    matches!(unit, Unit::Query(msg, _) if msg[0] == QUERY
        && fields::query_sql(msg).and_then(deferred::ending) == Some(deferred::Ending::Rollback))
}

/// Whether a batch has a Parse that redefines a statement the session has.
fn redefines(unit: &Unit, stmts: &Statements) -> bool {
    let Unit::Batch { messages, .. } = unit else {
        return false;
    };
    messages.iter().any(|(ty, msg, _)| {
        // The unnamed statement, the usual one, cannot be: no scan for its name.
        *ty == PARSE
            && fields::body(msg).first() != Some(&0)
            && fields::parse_name_sql(msg)
                .is_some_and(|(name, _)| !name.is_empty() && stmts.contains(name))
    })
}

/// The SQL a unit runs, for the slow-statement log and database DDL.
fn unit_sql(unit: &Unit, stmts: &Statements) -> Option<Bytes> {
    match unit {
        Unit::Query(msg, _) => {
            let sql = fields::query_sql(msg).filter(|_| msg[0] == QUERY)?;
            Some(msg.slice_ref(sql))
        }
        Unit::Batch { messages, .. } => batch_sql(messages, stmts),
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

/// Starts a unit on `conn` (after the settings it lacks): its entry among the answers owed,
/// with Closes of the statements the client deallocated since put in front of it (their
/// answers swallowed).
#[inline(always)]
fn start_unit(conn: &mut BackendConn) {
    conn.proto.expect(Pending::default());
    if !conn.closes_due.is_empty() {
        close_deallocated(conn);
    }
}

/// Whether the session's transactions default to read committed, not deferrable: only then
/// may a plain `BEGIN` be deferred (its leading reads each take their own snapshot).
const TX_DEFAULTS: &str = "SELECT pg_catalog.current_setting('default_transaction_isolation') \
     IN ('read committed', 'read uncommitted') \
     AND NOT pg_catalog.current_setting('default_transaction_deferrable')::bool";

/// Opens a deferred transaction for real on `conn`: the client's own `BEGIN`, then what
/// brings it where the client's is (a snapshot taken, if reads ran: `SET TRANSACTION` is then
/// refused as PostgreSQL would; aborted, if a leading read failed); answers swallowed.
#[cold]
fn open_transaction(conn: &mut BackendConn, deferred: Deferred) {
    conn.out.extend_from_slice(&deferred.begin);
    expect_injected(conn, Origin::Opening);
    match deferred.state {
        DeferredState::Reading { reads: 0 } => {}
        DeferredState::Reading { .. } => injected_query(conn, "SELECT", Origin::Opening),
        DeferredState::Aborted => injected_query(conn, "SELECT 1/0", Origin::Opening),
    }
}

/// The unit just queued on `conn` is a deferred transaction's leading read.
#[cold]
fn mark_leading_read(conn: &mut BackendConn) {
    if let Some(unit) = conn.proto.last_sent() {
        unit.in_deferred_tx = true;
        unit.watch.get_or_insert_with(Box::default);
    }
}

#[cold]
#[inline(never)]
fn close_deallocated(conn: &mut BackendConn) {
    for name in std::mem::take(&mut conn.closes_due) {
        write::close_statement(&name, &mut conn.out);
        if let Some(unit) = conn.proto.last_sent() {
            unit.closes.push(StatementClose {
                name,
                by_proxy: true,
            });
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

/// Before anything else on a connection another session left with other settings: back to
/// the values it started with, its answer swallowed.
#[cold]
pub(super) fn reset_settings(conn: &mut BackendConn) {
    injected_query(conn, crate::backend::RESET_SETTINGS, Origin::Settings);
}

#[cold]
#[inline(never)]
pub(super) fn replay_settings(conn: &mut BackendConn, settings: &Settings) {
    for sql in settings.replay_since(conn.settings_seq, &conn.params) {
        injected_query(conn, &sql, Origin::Settings);
    }
    conn.settings_seq = settings.seq();
}

/// Queues a simple query of the proxy's own on `conn`, its answer swallowed. Like any simple
/// query it destroys the server's unnamed statement: a later Bind of it prepares it again.
fn injected_query(conn: &mut BackendConn, sql: &str, origin: Origin) {
    write::query(sql, &mut conn.out);
    expect_injected(conn, origin);
}

/// The simple query just queued on `conn` is the proxy's own: its answer is swallowed, and
/// it destroyed the unnamed statement.
fn expect_injected(conn: &mut BackendConn, origin: Origin) {
    conn.proto.expect(Pending::injected(origin));
    conn.prepared.remove(&b""[..]);
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
    injected_query(conn, HOLDS_STATE, Origin::Probe(epoch));
}
