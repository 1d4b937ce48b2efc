//! Deferred transactions (`[routing] transaction_reads = "replica"`): the proxy answers a
//! plain `BEGIN` itself, runs the transaction's leading plain reads on a replica (each in
//! autocommit there, meeting the session's floor, the client told `T` as PostgreSQL would),
//! and opens the real transaction on the primary, with the client's own `BEGIN`, at the first
//! statement that is anything else; a transaction that only reads costs the primary nothing.
//! What the client could observe differently is in the README.

use bytes::Bytes;
use pgrepl_config::TransactionReads;

use super::decide::Wanted;
use super::routing::QueryStep;
use super::words::{may_start_with, Words};
use super::*;

/// A transaction the client began that no server has opened yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deferred {
    /// The client's `BEGIN`, as sent: replayed to open the real transaction.
    pub begin: Bytes,
    pub state: DeferredState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeferredState {
    /// Only plain reads so far, this many.
    Reading { reads: u32 },
    /// A leading read failed: PostgreSQL's transaction would be aborted.
    Aborted,
}

/// How the client ends a deferred transaction, answered by the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    Commit,
    Rollback,
}

impl Ending {
    /// The command tag PostgreSQL answers with: an aborted transaction's `COMMIT` is a
    /// rollback.
    pub fn tag(self, state: DeferredState) -> &'static str {
        match (self, state) {
            (Ending::Commit, DeferredState::Reading { .. }) => "COMMIT",
            _ => "ROLLBACK",
        }
    }
}

/// Where a unit goes inside a deferred transaction: a plain read (one that changes nothing)
/// where it would go on its own while only reads ran; anything else to the primary, which
/// opens the real transaction there.
pub fn wanted_in_deferred(wanted: Wanted, effects: Effects, state: DeferredState) -> Wanted {
    match (wanted, state) {
        (Wanted::Read { .. }, DeferredState::Reading { .. }) if effects.is_none() => wanted,
        (Wanted::Primary { .. }, _) => wanted,
        _ => Wanted::Primary {
            reason: Reason::Transaction,
            writes: false,
        },
    }
}

impl<R, W> Session<R, W>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    /// Whether the simple query of `total` bytes in `cin` may begin or end a deferred
    /// transaction: nothing to look at with deferral off (the default), else its first
    /// letters, unless a transaction is deferred.
    #[inline(always)]
    pub(super) fn may_take_deferral(&self, total: usize) -> bool {
        self.deferred.is_some()
            || (self.routing.transaction_reads == TransactionReads::Replica
                && may_start_with(
                    fields::query_sql(&self.cin[..total]).unwrap_or_default(),
                    &[b"BEGIN", b"START"],
                ))
    }

    /// A plain `BEGIN` the proxy answers itself, or the `COMMIT`/`ROLLBACK` of a deferred
    /// transaction; None for anything else.
    #[cold]
    pub(super) fn take_deferral(&mut self, total: usize) -> Option<QueryStep> {
        // Inside a batch a Flush left open, the batch's server answers, in order.
        if self.open_batch.is_some() {
            return None;
        }
        let sql = fields::query_sql(&self.cin[..total]).unwrap_or_default();
        let (tag, status, begins) = match &self.deferred {
            Some(deferred) => (ending(sql)?.tag(deferred.state), TxStatus::Idle, false),
            None => {
                let tag = plain_begin(sql)?;
                // What is in flight may change whether it may be (a probe may unpin).
                if self.inflight.is_some() {
                    return Some(QueryStep::Wait);
                }
                if !self.may_defer() {
                    return None;
                }
                (tag, TxStatus::InTransaction, true)
            }
        };
        if self.inflight.is_some() {
            return Some(QueryStep::Wait);
        }
        let begin = self.cin.split_to(total).freeze();
        self.deferred = begins.then_some(Deferred {
            begin,
            state: DeferredState::Reading { reads: 0 },
        });
        Self::log_route_now(Decision::read(Slot::Replica, Reason::Transaction));
        write::command_complete(tag, &mut self.cout);
        self.client_status = status;
        write::ready_for_query(status, &mut self.cout);
        Some(QueryStep::Answered)
    }

    /// Whether a plain `BEGIN` may be deferred now: nothing open or in flight, reads free to
    /// go to replicas, and the session's transactions known to default to read committed.
    fn may_defer(&self) -> bool {
        self.tx.is_none()
            && self.open_batch.is_none()
            && self.batch.is_empty()
            && self.client_status == TxStatus::Idle
            && !self.state.pinned()
            && self.read_pref == ReadPreference::Auto
            && !self.state.default_read_only
            && self.tx_defaults == Some((self.state.settings.seq(), true))
    }

    /// Whether a unit with `effects` going to the primary should first ask what the
    /// session's transactions default to: a `BEGIN` that could have been deferred, had that
    /// been known at these settings.
    pub(super) fn asks_tx_defaults(&self, effects: Effects) -> bool {
        self.routing.transaction_reads == TransactionReads::Replica
            && effects.contains(Effects::DEFAULT_MODE_BEGIN)
            && self.tx.is_none()
            && self
                .tx_defaults
                .is_none_or(|(seq, _)| seq != self.state.settings.seq())
    }

    /// A unit goes to a replica while a transaction is deferred: one more leading read.
    pub(super) fn note_leading_read(&mut self) -> bool {
        match &mut self.deferred {
            Some(Deferred {
                state: DeferredState::Reading { reads },
                ..
            }) => {
                *reads += 1;
                true
            }
            _ => false,
        }
    }

    /// A leading read ended, the client told `told`: a failed one aborts the transaction.
    #[cold]
    pub(super) fn deferred_read_done(&mut self, told: TxStatus) {
        self.client_status = told;
        if let (TxStatus::Failed, Some(deferred)) = (told, &mut self.deferred) {
            deferred.state = DeferredState::Aborted;
        }
    }
}

/// The tag PostgreSQL answers `sql` with if it is exactly one plain `BEGIN [WORK |
/// TRANSACTION]` or `START TRANSACTION`, with no mode but perhaps `ISOLATION LEVEL READ
/// COMMITTED` (or `READ UNCOMMITTED`, the same in PostgreSQL): a transaction whose leading
/// reads may run elsewhere, each with its own snapshot, as read committed takes anyway.
pub fn plain_begin(sql: &[u8]) -> Option<&'static str> {
    let mut words = Words(sql);
    let first = words.next();
    let tag = if is(first, b"BEGIN") {
        skip_work_or_transaction(&mut words);
        "BEGIN"
    } else if is(first, b"START") && is(words.next(), b"TRANSACTION") {
        "START TRANSACTION"
    } else {
        return None;
    };
    if words.rest_is_empty() {
        return Some(tag);
    }
    let read_committed = is(words.next(), b"ISOLATION")
        && is(words.next(), b"LEVEL")
        && is(words.next(), b"READ")
        && matches!(words.next(), Some(w) if w.eq_ignore_ascii_case(b"COMMITTED") || w.eq_ignore_ascii_case(b"UNCOMMITTED"));
    (read_committed && words.rest_is_empty()).then_some(tag)
}

/// How `sql` ends the transaction, if it is exactly one `COMMIT`/`END` or
/// `ROLLBACK`/`ABORT` (`WORK`/`TRANSACTION` and `AND NO CHAIN` allowed).
pub fn ending(sql: &[u8]) -> Option<Ending> {
    let mut words = Words(sql);
    let verb = words.next();
    let ending = if is(verb, b"COMMIT") || is(verb, b"END") {
        Ending::Commit
    } else if is(verb, b"ROLLBACK") || is(verb, b"ABORT") {
        Ending::Rollback
    } else {
        return None;
    };
    skip_work_or_transaction(&mut words);
    let plain = words.rest_is_empty()
        || (is(words.next(), b"AND")
            && is(words.next(), b"NO")
            && is(words.next(), b"CHAIN")
            && words.rest_is_empty());
    plain.then_some(ending)
}

/// Whether `word` is `expected`, in any case.
fn is(word: Option<&[u8]>, expected: &[u8]) -> bool {
    word.is_some_and(|w| w.eq_ignore_ascii_case(expected))
}

/// Past an optional `WORK` or `TRANSACTION`.
fn skip_work_or_transaction(words: &mut Words<'_>) {
    let mut probe = Words(words.0);
    let next = probe.next();
    if is(next, b"WORK") || is(next, b"TRANSACTION") {
        *words = probe;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_begins_and_what_is_not_one() {
        for (sql, tag) in [
            ("BEGIN", Some("BEGIN")),
            ("begin;", Some("BEGIN")),
            ("  BEGIN WORK", Some("BEGIN")),
            ("BEGIN TRANSACTION;", Some("BEGIN")),
            ("START TRANSACTION", Some("START TRANSACTION")),
            ("begin isolation level read committed", Some("BEGIN")),
            (
                "START TRANSACTION ISOLATION LEVEL READ UNCOMMITTED",
                Some("START TRANSACTION"),
            ),
            ("BEGIN ISOLATION LEVEL REPEATABLE READ", None),
            ("BEGIN ISOLATION LEVEL SERIALIZABLE", None),
            ("BEGIN READ ONLY", None),
            ("BEGIN READ WRITE", None),
            ("BEGIN ISOLATION LEVEL READ COMMITTED, READ WRITE", None),
            ("BEGIN ISOLATION LEVEL READ COMMITTED READ ONLY", None),
            ("BEGIN DEFERRABLE", None),
            ("BEGIN; SELECT 1", None),
            ("START", None),
            ("COMMIT", None),
            ("SELECT 1", None),
        ] {
            assert_eq!(plain_begin(sql.as_bytes()), tag, "{sql}");
        }
    }

    #[test]
    fn endings_and_what_is_not_one() {
        use Ending::*;
        for (sql, want) in [
            ("COMMIT", Some(Commit)),
            ("end;", Some(Commit)),
            ("COMMIT WORK", Some(Commit)),
            ("commit transaction and no chain", Some(Commit)),
            ("ROLLBACK", Some(Rollback)),
            ("abort work;", Some(Rollback)),
            ("COMMIT AND CHAIN", None),
            ("ROLLBACK AND CHAIN", None),
            ("ROLLBACK TO SAVEPOINT a", None),
            ("ROLLBACK TO a", None),
            ("COMMIT PREPARED 'x'", None),
            ("COMMIT; SELECT 1", None),
            ("SELECT 1", None),
        ] {
            assert_eq!(ending(sql.as_bytes()), want, "{sql}");
        }
    }

    #[test]
    fn only_plain_reads_stay_where_they_would_go() {
        let read = Wanted::Read {
            reason: Reason::Read,
            hinted: false,
        };
        let write = Wanted::Primary {
            reason: Reason::Write,
            writes: true,
        };
        let opens = Wanted::Primary {
            reason: Reason::Transaction,
            writes: false,
        };
        let reading = DeferredState::Reading { reads: 2 };
        let aborted = DeferredState::Aborted;
        for (wanted, effects, state, expected) in [
            (read, Effects::NONE, reading, read),
            (read, Effects::SESSION_SET, reading, opens),
            (read, Effects::TX_CONTROL, reading, opens),
            (read, Effects::NONE, aborted, opens),
            (write, Effects::NONE, reading, write),
            (Wanted::Any, Effects::NONE, reading, opens),
        ] {
            assert_eq!(
                wanted_in_deferred(wanted, effects, state),
                expected,
                "{wanted:?} {effects:?} {state:?}"
            );
        }
    }

    #[test]
    fn an_aborted_transaction_commits_as_a_rollback() {
        let reading = DeferredState::Reading { reads: 1 };
        assert_eq!(Ending::Commit.tag(reading), "COMMIT");
        assert_eq!(Ending::Commit.tag(DeferredState::Aborted), "ROLLBACK");
        assert_eq!(Ending::Rollback.tag(reading), "ROLLBACK");
    }
}
