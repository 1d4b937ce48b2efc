//! What a server connection owes: one entry per ReadyForQuery still to come, who sent each
//! unit (the client, or the proxy itself, whose answers are swallowed), what the session
//! watches in its answers, and where the input stream stands between messages. Kept apart
//! from the socket so that the relay over it is tested with byte fixtures alone.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

/// The protocol state of one server connection.
#[derive(Debug, Default)]
pub struct ProtocolState {
    /// Bytes read from the server not yet forwarded.
    pub inbuf: BytesMut,
    /// One entry per ReadyForQuery still to come, oldest first.
    pub syncs: VecDeque<Pending>,
    /// Bytes of a forwarded message still to pass through before the next header.
    pub body_remaining: usize,
    /// The emptied list of an answered unit's Parses, for the next unit that sends one: an
    /// extended-protocol client parses in nearly every batch, and this spares an allocation
    /// for each.
    pub spare_parses: Vec<ParseOrigin>,
}

impl ProtocolState {
    /// With `inbuf` already read (the rest of the startup exchange).
    pub fn new(inbuf: BytesMut) -> ProtocolState {
        ProtocolState {
            inbuf,
            ..ProtocolState::default()
        }
    }

    /// True when the server owes no response and the stream is at a message boundary.
    pub fn is_quiet(&self) -> bool {
        self.syncs.is_empty() && self.body_remaining == 0 && self.inbuf.is_empty()
    }

    /// Units whose answers the client is owed (the proxy's own are not).
    pub fn owed_to_client(&self) -> usize {
        self.client_units().count()
    }

    /// A unit of the client's that may write is still to be answered.
    pub fn owes_write(&self) -> bool {
        self.client_units().any(|p| p.writes)
    }

    /// A unit of the client's that ends a transaction is still to be answered.
    pub fn owes_end_of_transaction(&self) -> bool {
        self.client_units().any(|p| p.ends_tx)
    }

    fn client_units(&self) -> impl Iterator<Item = &Pending> + Clone {
        self.syncs.iter().filter(|p| p.origin == Origin::Client)
    }

    /// Who sent the unit whose answer comes next.
    pub fn front_origin(&self) -> Option<Origin> {
        self.syncs.front().map(|front| front.origin)
    }

    /// A unit sent: one more ReadyForQuery owed.
    pub fn expect(&mut self, unit: Pending) {
        self.syncs.push_back(unit);
    }

    /// The unit sent last, to add to what is noted about it.
    pub fn last_sent(&mut self) -> Option<&mut Pending> {
        self.syncs.back_mut()
    }

    /// The unit being sent (a new one if none is owed yet), for a Parse sent in it.
    pub fn note_parse(&mut self, origin: ParseOrigin) {
        if self.syncs.is_empty() {
            self.syncs.push_back(Pending::default());
        }
        let Some(unit) = self.syncs.back_mut() else {
            return;
        };
        if unit.parses.capacity() == 0 {
            unit.parses = std::mem::take(&mut self.spare_parses);
        }
        unit.parses.push(origin);
    }
}

/// Who sent a Parse in a batch: its ParseComplete goes to the client or is swallowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseOrigin {
    /// Injected by the proxy to prepare a statement lazily.
    Proxy { name: Bytes, generation: u64 },
    /// The client's, defining statement `name` at `generation`.
    Client { name: Bytes, generation: u64 },
    /// The client's, expected to fail (a named statement defined twice).
    ClientUntracked,
    /// The client's, redefining a statement it has (this Parse): expected to fail, but if the
    /// server took it (a `DEALLOCATE` the proxy forwarded dropped the old one there), it is
    /// the statement's definition from now on.
    ClientRedefines(Bytes),
}

/// Who sent a unit, and so where its responses go.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The client's: forwarded.
    #[default]
    Client,
    /// The proxy's replay of the session's settings, which brings this connection to
    /// `Settings::seq`: swallowed.
    Settings,
    /// The proxy's question whether the session holds primary-only state, asked when the
    /// session's pin count was at this epoch: swallowed, its answer kept.
    Probe(u64),
    /// Answers nobody needs: a read the replica refused, which runs on the primary instead.
    /// Swallowed.
    Discard,
    /// The proxy's question for the primary's WAL position right after a unit that may have
    /// committed (`health::POSITION_SQL`): swallowed, its answer kept.
    CommitPosition,
    /// The proxy's question whether the session's transactions default to read committed
    /// and not deferrable, at these settings (`Settings::seq`): swallowed, its answer kept.
    TxDefaults(u64),
    /// The client's `BEGIN` the proxy answered itself, and what brings the real transaction
    /// to where the client's is, sent when it opens on the primary: swallowed.
    Opening,
}

/// What the session wants to learn from a unit's responses beyond forwarding them: whether
/// it failed, whether a transaction rolled back, the probe's answer. Only for the few units
/// that change session state, so that the common path looks at no more messages than before.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Watch {
    /// The unit's session-level settings, as replayable SQL texts in order.
    pub sets: Vec<bytes::Bytes>,
    /// A whole string of settings and transaction control sent outside a transaction:
    /// replayed as it is if it succeeds, whatever it committed or rolled back.
    pub whole: Option<bytes::Bytes>,
    /// The unit is one savepoint statement, with its savepoint's name.
    pub savepoint: Option<(SavepointOp, Box<[u8]>)>,
    /// It contains a `ROLLBACK TO SAVEPOINT`: a `ROLLBACK` tag may not end the transaction.
    pub partial_rollback: bool,
    /// It also changed settings in a way the proxy cannot replay.
    pub unknown_sets: bool,
    /// It ran DISCARD ALL.
    pub discard_all: bool,
    /// An ErrorResponse came: its message.
    pub error: Option<String>,
    /// A CommandComplete `ROLLBACK` came (of the transaction or to a savepoint).
    pub rolled_back: bool,
    /// The answer to a yes-or-no question of the proxy's (the probe: whether the session
    /// holds state; the transaction defaults question).
    pub answer: Option<bool>,
    /// The commit position question's answer.
    pub wal: Option<crate::health::WalSample>,
    /// The ParameterStatus values a client unit's server reported, in order.
    pub reported: Vec<(String, String)>,
}

impl Watch {
    /// Adds what a later part of the same unit (after a Flush) watches.
    pub fn merge(&mut self, later: Watch) {
        self.sets.extend(later.sets);
        self.reported.extend(later.reported);
        self.unknown_sets |= later.unknown_sets;
        self.discard_all |= later.discard_all;
        self.partial_rollback |= later.partial_rollback;
        self.savepoint = None;
        if self.whole.take().is_some() {
            self.unknown_sets = true;
        }
    }
}

/// A savepoint statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SavepointOp {
    Define,
    RollbackTo,
    Release,
}

/// What one batch (up to its ReadyForQuery) sent that needs matching to its responses.
/// Responses come in order, so the n-th ParseComplete answers the n-th Parse, and likewise for
/// Close; an error ends the batch, so Parses past the count of ParseCompletes failed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pending {
    pub parses: Vec<ParseOrigin>,
    pub parses_done: usize,
    /// Closes of statements in order.
    pub closes: Vec<StatementClose>,
    pub closes_done: usize,
    /// An extended-protocol batch ended by Sync. If its Execute starts COPY FROM STDIN, the
    /// server ignores that Sync (it arrives during copy mode) and answers the client's next one.
    pub synced_batch: bool,
    pub origin: Origin,
    pub watch: Option<Box<Watch>>,
    /// When it was sent, if anything wants its duration (metrics, slow-statement log).
    /// (`telemetry::clock::now_nanos`)
    pub started: Option<u64>,
    /// Why it went to this backend (client units).
    pub reason: Option<crate::route::Reason>,
    /// Its SQL, kept only for the slow-statement log's `statement_text`.
    pub sql: Option<Bytes>,
    /// A leading read of a deferred transaction: the client is told `T` (or `E` if it
    /// failed) where the server, running it in autocommit, says `I`.
    pub in_deferred_tx: bool,
    /// On the write lease: it may write, or end a transaction (`COMMIT`...). Lost on its
    /// way, what it did is unknown.
    pub writes: bool,
    pub ends_tx: bool,
}

/// A Close of a prepared statement sent in a unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementClose {
    pub name: Bytes,
    /// The proxy's own (its CloseComplete is not the client's to see).
    pub by_proxy: bool,
}

impl Pending {
    /// A unit the proxy sends on its own behalf.
    pub fn injected(origin: Origin) -> Pending {
        Pending {
            origin,
            watch: Some(Box::default()),
            ..Pending::default()
        }
    }
}
