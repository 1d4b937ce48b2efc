//! Extended-protocol batches and the client's prepared statements.
//!
//! A batch is every message up to Sync (or Flush): it is routed as one unit. Prepared
//! statements are remembered by the client's name with a generation number; each backend
//! connection records which generation it holds, so a statement is prepared lazily on
//! whichever backend runs it, and a stale one is closed first.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use foldhash::fast::RandomState;

use super::bound::bound_set_configs;
use super::words::{may_start_with, sql_statement_name};
use crate::backend::{same_name, BackendConn, ParseOrigin, Pending, StatementClose, StatementIds};
use crate::protocol::{fields, write};
use crate::route::{Effects, Verdict};

/// A statement the client prepared, as it sent it.
pub struct Statement {
    pub generation: u64,
    /// The client's Parse message, replayed on a backend that lacks the statement.
    pub parse: Bytes,
    pub verdict: Verdict,
}

/// The client's prepared statements by name (the unnamed statement under "").
pub struct Statements {
    /// The named ones.
    map: HashMap<Bytes, Statement, RandomState>,
    /// The unnamed one, apart: drivers define it anew for nearly every query, and a field
    /// costs less than a hash map's insert.
    unnamed: Option<Statement>,
    /// Numbers every definition, proxy-wide.
    ids: Arc<StatementIds>,
    /// The session's settings new definitions are parsed under (`Settings::fingerprint`), and
    /// the change (`Settings::seq`) they were taken at.
    under: (u64, Arc<str>),
    /// The statement bound last (name, generation, verdict): a driver binds the same
    /// prepared statement again and again, and this spares the hash look-ups. Every change
    /// forgets it.
    recent: Option<(Bytes, u64, Verdict)>,
}

impl Statements {
    pub fn new(ids: Arc<StatementIds>) -> Statements {
        Statements {
            map: HashMap::default(),
            unnamed: None,
            ids,
            under: (u64::MAX, Arc::from("")),
            recent: None,
        }
    }

    /// The change of the session's settings (`Settings::seq`) new definitions are numbered
    /// under, to compare before each unit.
    #[inline(always)]
    pub fn settings_seq(&self) -> u64 {
        self.under.0
    }

    /// New definitions are parsed under these settings from now on.
    pub fn parse_under(&mut self, seq: u64, fingerprint: Arc<str>) {
        self.under = (seq, fingerprint);
    }

    /// The number of a new definition, `parse`: shared by every session for a named one.
    fn number(&self, name: &[u8], parse: &Bytes) -> u64 {
        if name.is_empty() {
            self.ids.fresh()
        } else {
            self.ids.of_named(&self.under.1, parse)
        }
    }

    fn get(&self, name: &[u8]) -> Option<&Statement> {
        if name.is_empty() {
            self.unnamed.as_ref()
        } else {
            self.map.get(name)
        }
    }

    /// The verdict and generation of statement `name`, for a Bind of it.
    #[inline(always)]
    pub fn bound(&mut self, name: &[u8]) -> Option<(Verdict, u64)> {
        if name.is_empty() {
            return self.unnamed.as_ref().map(|s| (s.verdict, s.generation));
        }
        if let Some((recent, generation, verdict)) = &self.recent {
            if same_name(recent, name) {
                return Some((*verdict, *generation));
            }
        }
        let (key, stmt) = self.map.get_key_value(name)?;
        self.recent = Some((key.clone(), stmt.generation, stmt.verdict));
        Some((stmt.verdict, stmt.generation))
    }

    fn define(&mut self, name: Bytes, statement: Statement) {
        if name.is_empty() {
            self.unnamed = Some(statement);
        } else {
            self.recent = None;
            self.map.insert(name, statement);
        }
    }

    fn undefine(&mut self, name: &[u8]) {
        if name.is_empty() {
            self.unnamed = None;
        } else {
            self.recent = None;
            self.map.remove(name);
        }
    }

    pub fn clear(&mut self) {
        self.recent = None;
        self.unnamed = None;
        self.map.clear();
    }

    /// The SQL text of statement `name`, for the slow-statement log.
    pub fn sql_of(&self, name: &[u8]) -> Option<Bytes> {
        let parse = &self.get(name)?.parse;
        let (_, sql) = fields::parse_name_sql(parse)?;
        Some(parse.slice_ref(sql))
    }

    pub fn contains(&self, name: &[u8]) -> bool {
        self.get(name).is_some()
    }

    /// Forgets a statement whose Parse never reached a server that answered (its backend died
    /// first), so that the same Parse can be sent elsewhere.
    pub fn forget(&mut self, name: &[u8]) {
        self.undefine(name);
    }

    /// Makes sure `conn` holds the current version of statement `name`, injecting a Close of
    /// a stale version and a Parse whose responses the client will not see.
    ///
    /// Runs for every Bind: the test inline, the preparing out of line.
    #[inline(always)]
    pub fn ensure_on(&mut self, conn: &mut BackendConn, name: &[u8]) {
        let Some((_, generation)) = self.bound(name) else {
            // Unknown to the session: the server reports it, as it would directly, unless a
            // pooled connection holds another session's statement by that name.
            if conn.prepared.contains_key(name) {
                Self::close_foreign(conn, name);
            }
            return;
        };
        if !conn.prepared.holds(name, generation) {
            if let Some(stmt) = self.get(name) {
                Self::prepare_on(conn, name, stmt);
            }
        }
    }

    /// Before a simple query that names a prepared statement in SQL (`PREPARE`, `EXECUTE`,
    /// `DEALLOCATE`): the session's own statement by that name is prepared there if missing,
    /// and what `conn` holds by that name for another session is closed, so the server
    /// answers as it would on a connection of this session's own.
    #[inline(always)]
    pub fn before_sql_naming(&mut self, conn: &mut BackendConn, sql: &[u8]) {
        if !may_start_with(sql, &[b"PREPARE", b"EXECUTE", b"DEALLOCATE"]) {
            return;
        }
        let Some(name) = sql_statement_name(sql) else {
            return;
        };
        if self.contains(&name) {
            // The session's own: there, as on a connection of its own.
            self.ensure_on(conn, &name);
        } else if conn.prepared.contains_key(&name) {
            Self::close_foreign(conn, &name);
        }
    }

    /// Closes what `conn` holds under `name` for another session, so that the server answers
    /// this session's use of the name as it would on a connection of its own.
    #[cold]
    #[inline(never)]
    fn close_foreign(conn: &mut BackendConn, name: &[u8]) {
        write::close_statement(name, &mut conn.out);
        closing(conn, Bytes::copy_from_slice(name), true);
        conn.prepared.remove(name);
    }

    /// Prepares `stmt` on `conn`, closing the stale version there first.
    #[cold]
    #[inline(never)]
    fn prepare_on(conn: &mut BackendConn, name: &[u8], stmt: &Statement) {
        if !name.is_empty() && may_hold(conn, name) {
            write::close_statement(name, &mut conn.out);
            closing(conn, Bytes::copy_from_slice(name), true);
        }
        conn.out.extend_from_slice(&stmt.parse);
        conn.proto.note_parse(ParseOrigin::Proxy {
            name: Bytes::copy_from_slice(name),
            generation: stmt.generation,
        });
        hold(conn, Bytes::copy_from_slice(name), stmt.generation);
    }

    /// Forwards the client's Parse to `conn` and records the statement.
    pub fn parse_on(&mut self, conn: &mut BackendConn, msg: Bytes, verdict: Verdict) {
        let Some((name, _)) = fields::parse_name_sql(&msg) else {
            conn.out.extend_from_slice(&msg); // malformed: let the server reject it
            conn.proto.note_parse(ParseOrigin::ClientUntracked);
            return;
        };
        let name = name_of(&msg, name);
        if !name.is_empty() && self.map.contains_key(&name) {
            // PostgreSQL refuses to redefine a named statement: make the server say so.
            self.ensure_on(conn, &name);
            conn.out.extend_from_slice(&msg);
            conn.proto.note_parse(ParseOrigin::ClientRedefines(msg));
            return;
        }
        if !name.is_empty() && may_hold(conn, &name) {
            write::close_statement(&name, &mut conn.out);
            closing(conn, name.clone(), true);
        }
        conn.out.extend_from_slice(&msg);
        let generation = self.number(&name, &msg);
        conn.proto.note_parse(ParseOrigin::Client {
            name: name.clone(),
            generation,
        });
        hold(conn, name.clone(), generation);
        self.define(
            name,
            Statement {
                generation,
                parse: msg,
                verdict,
            },
        );
    }

    /// A redefinition the server accepted (`ParseOrigin::ClientRedefines`): the statement's
    /// definition from now on, held by `conn` alone.
    pub fn redefined(&mut self, conn: &mut BackendConn, parse: Bytes, verdict: Verdict) {
        let Some((name, _)) = fields::parse_name_sql(&parse) else {
            return;
        };
        let name = name_of(&parse, name);
        let generation = self.number(&name, &parse);
        // Taken in between units: nothing may be written now, so no statement is given up
        // for it (the bound is passed by one until the next definition).
        if let Some(victim) = conn.prepared.insert(name.clone(), generation) {
            conn.prepared.mark_unsure(&victim);
        }
        self.define(
            name,
            Statement {
                generation,
                parse,
                verdict,
            },
        );
    }

    /// Forwards the client's Close (of a statement or portal); a closed statement is
    /// forgotten. Other backends keep their copy, marked by its old generation, and close it
    /// before the name is reused there.
    pub fn close_on(&mut self, conn: &mut BackendConn, msg: &Bytes) {
        let name = match fields::target(msg) {
            Some((b'S', name)) => {
                self.undefine(name);
                let held = conn.prepared.remove(name).is_some();
                // If skipped, what the connection held stays there, to be closed.
                if held {
                    msg.slice_ref(name)
                } else {
                    Bytes::new()
                }
            }
            // A portal's Close: nothing prepared is at stake.
            _ => Bytes::new(),
        };
        conn.out.extend_from_slice(msg);
        closing(conn, name, false);
    }

    /// Forgets a statement whose Parse the server rejected, unless it was redefined since.
    pub fn parse_failed(&mut self, conn: Option<&mut BackendConn>, name: &[u8], generation: u64) {
        if self.get(name).is_some_and(|s| s.generation == generation) {
            self.undefine(name);
        }
        if let Some(conn) = conn {
            conn.prepared.not_sure_of(name, generation);
        }
    }
}

/// Records that `conn` holds `name` at `generation`, closing there the statement given up
/// to stay within `[pool] max_prepared_statements`.
fn hold(conn: &mut BackendConn, name: Bytes, generation: u64) {
    if let Some(victim) = conn.prepared.insert(name, generation) {
        write::close_statement(&victim, &mut conn.out);
        closing(conn, victim, true);
    }
}

/// Whether `conn` may hold a statement `name`: it does, or a Close of it is still unanswered
/// (an error before it in its batch may yet make the server skip it).
fn may_hold(conn: &BackendConn, name: &[u8]) -> bool {
    conn.prepared.contains_key(name)
        || conn.proto.syncs.iter().any(|unit| {
            let unanswered = unit.closes.get(unit.closes_done..).unwrap_or_default();
            unanswered.iter().any(|close| same_name(&close.name, name))
        })
}

/// Notes a Close of statement `name` written to `conn` in the batch being sent (empty: one
/// that leaves nothing behind if skipped, of a portal or of a statement not held there).
fn closing(conn: &mut BackendConn, name: Bytes, by_proxy: bool) {
    current(conn).closes.push(StatementClose { name, by_proxy });
}

/// A statement's name, as a part of its message; the unnamed statement, which drivers parse
/// for every query, as the static empty name, which costs nothing to clone or drop.
fn name_of(msg: &Bytes, name: &[u8]) -> Bytes {
    if name.is_empty() {
        Bytes::new()
    } else {
        msg.slice_ref(name)
    }
}

/// The bookkeeping of the batch being sent on `conn`.
fn current(conn: &mut BackendConn) -> &mut Pending {
    if conn.proto.syncs.is_empty() {
        conn.proto.expect(Pending::default());
    }
    let last = conn.proto.syncs.len() - 1;
    &mut conn.proto.syncs[last]
}

/// Extended-protocol messages waiting for Sync or Flush, with what they say about the route.
#[derive(Default)]
pub struct Batch {
    /// Messages in order, each with the verdict on its SQL (for Parse).
    pub messages: Vec<(u8, Bytes, Verdict)>,
    /// Statements parsed in this batch, by name, with their verdicts.
    parsed: Vec<(Bytes, Verdict)>,
    /// The strictest of the statements bound (and so executed) in this batch.
    bound: Option<Verdict>,
    /// The strictest of the statements parsed in this batch.
    parse_route: Option<Verdict>,
    /// An Execute of a portal bound outside this batch.
    unbound_execute: bool,
    /// A Describe or Close of a portal bound outside this batch, or of a statement the proxy
    /// does not track (prepared in SQL): what it names lives on the primary, or nowhere.
    names_primary_object: bool,
    /// What the statements bound in this batch do to the session.
    pub effects: Effects,
    /// The SQL of the session-level SETs bound in this batch, in order.
    pub sets: Vec<Bytes>,
}

/// The stricter of the statements so far and the next one: the one that binds the batch to
/// the primary most strongly (`Verdict::rank`), else the first.
#[inline]
fn stricter(so_far: Option<Verdict>, next: Verdict) -> Verdict {
    match so_far {
        // A batch of one statement, the usual one, ranks nothing.
        None => next,
        Some(kept) => {
            let hint = kept.hint.combine(next.hint);
            let chosen = if kept.rank() >= next.rank() {
                kept
            } else {
                next
            };
            Verdict { hint, ..chosen }
        }
    }
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// Empties the batch, keeping its allocations for the next one.
    pub fn clear(&mut self) {
        self.messages.clear();
        self.parsed.clear();
        self.bound = None;
        self.parse_route = None;
        self.unbound_execute = false;
        self.names_primary_object = false;
        self.effects = Effects::NONE;
        self.sets.clear();
    }

    /// Puts back the message list taken out to send it, emptied.
    pub fn restore(&mut self, messages: Vec<(u8, Bytes, Verdict)>) {
        let old = std::mem::replace(&mut self.messages, messages);
        // Nearly always the empty list `mem::take` left: nothing to free, no drop call.
        if old.capacity() == 0 {
            std::mem::forget(old);
        }
        self.clear();
    }

    /// Adds a message; `classify` gives the verdict on the SQL of a Parse.
    pub fn push(
        &mut self,
        ty: u8,
        msg: Bytes,
        stmts: &mut Statements,
        classify: impl FnOnce(&[u8]) -> Verdict,
    ) {
        match ty {
            b'P' => {
                let (name, verdict) = match fields::parse_name_sql(&msg) {
                    Some((name, sql)) => (name_of(&msg, name), classify(sql)),
                    None => (Bytes::new(), Verdict::UNKNOWN),
                };
                self.parse_route = Some(stricter(self.parse_route, verdict));
                self.parsed.push((name, verdict));
                self.messages.push((ty, msg, verdict));
                return;
            }
            b'B' => {
                let verdict = fields::bind_statement(&msg).and_then(|name| {
                    let local = self.parsed.iter().rev().find(|(n, _)| n == name);
                    local
                        .map(|(_, verdict)| *verdict)
                        .or_else(|| stmts.bound(name).map(|(verdict, _)| verdict))
                });
                let verdict = verdict.unwrap_or(Verdict::UNKNOWN);
                self.bound = Some(stricter(self.bound, verdict));
                if !verdict.effects.is_none() {
                    self.bind_effects(verdict.effects, &msg, stmts);
                }
            }
            b'E' if self.bound.is_none() => self.unbound_execute = true,
            // Drivers describe the portal they just bound with every execution: that is
            // decided without reading the name.
            b'D' | b'C' if !self.names_primary_object => {
                self.names_primary_object = match fields::body(&msg).first() {
                    Some(b'P') => self.bound.is_none(),
                    Some(b'S') => fields::target(&msg).is_some_and(|(_, name)| {
                        !stmts.contains(name) && !self.parsed.iter().any(|(n, _)| n == name)
                    }),
                    _ => false,
                };
            }
            _ => {}
        }
        self.messages.push((ty, msg, Verdict::UNKNOWN));
    }

    /// Notes what a bound statement does to the session, and the SQL of a SET (for a
    /// `set_config` call with parameters, the call with the values the Bind gives).
    fn bind_effects(&mut self, effects: Effects, bind: &[u8], stmts: &Statements) {
        if !effects.contains(Effects::SESSION_SET) {
            self.effects |= effects;
            return;
        }
        let Some(name) = fields::bind_statement(bind) else {
            return;
        };
        let parse_here = self.messages.iter().rev().find(|(ty, msg, _)| {
            *ty == b'P' && fields::parse_name_sql(msg).is_some_and(|(n, _)| n == name)
        });
        let parse = parse_here
            .map(|(_, msg, _)| msg)
            .or_else(|| stmts.get(name).map(|s| &s.parse));
        let Some(msg) = parse else {
            self.effects |= effects;
            return;
        };
        if !effects.contains(Effects::ONLY_SETS) {
            if let Some(sets) = bound_set_configs(msg, bind).filter(|s| !s.is_empty()) {
                self.effects |= effects | Effects::ONLY_SETS;
                self.sets.extend(sets);
                return;
            }
        }
        self.effects |= effects;
        if let Some((_, sql)) = fields::parse_name_sql(msg) {
            self.sets.push(msg.slice_ref(sql));
        }
    }

    /// The verdict on what the batch runs, or None when it runs no statement (only
    /// Describe, Close...): that of its strictest statement, with that statement's own
    /// effects (what the whole batch does to the session is `effects`).
    pub fn verdict(&self) -> Option<Verdict> {
        if self.unbound_execute {
            // A portal bound earlier: what it runs is not known here.
            return Some(Verdict {
                effects: self.effects,
                ..Verdict::UNKNOWN
            });
        }
        self.bound.or(self.parse_route)
    }

    /// Whether the batch names a portal or statement that lives on the primary.
    pub fn names_primary_object(&self) -> bool {
        self.names_primary_object
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::{Reason, Route};

    fn v(route: Route, reason: Reason, effects: Effects) -> Verdict {
        Verdict {
            route,
            reason,
            effects,
            hint: crate::route::CausalHint::NONE,
        }
    }

    #[test]
    fn the_statement_that_binds_a_batch_most_strongly_decides_it() {
        let read = v(Route::Replica, Reason::Read, Effects::NONE);
        let other_read = v(Route::Replica, Reason::Show, Effects::NONE);
        let begin = v(
            Route::Primary,
            Reason::Transaction,
            Effects::DEFAULT_MODE_BEGIN,
        );
        let set = v(
            Route::Primary,
            Reason::Utility,
            Effects::SESSION_SET | Effects::ONLY_SETS,
        );
        let hinted = v(Route::Primary, Reason::Hint, Effects::NONE);
        let insert = v(Route::Primary, Reason::Write, Effects::NONE);
        // (statements in order, the batch's verdict)
        let cases: &[(&[Verdict], Verdict)] = &[
            (&[read, other_read], read),
            (&[read, begin], begin),
            (&[begin, read], begin),
            (&[set, insert], insert),
            (&[hinted, insert], insert),
            (&[begin, set, insert, read], insert),
            (&[insert, set], insert),
            (&[set, hinted], set),
        ];
        for (statements, want) in cases {
            let got = statements
                .iter()
                .fold(None, |so_far, next| Some(stricter(so_far, *next)));
            assert_eq!(got, Some(*want), "{statements:?}");
        }
    }
}
