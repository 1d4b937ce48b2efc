//! An authenticated backend connection and the per-connection protocol state the session keeps.

use std::collections::{HashMap, VecDeque};

use foldhash::fast::RandomState;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use super::{BackendInfo, PoolKey, ServerParams};

/// Who sent a Parse in a batch: its ParseComplete goes to the client or is swallowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseOrigin {
    /// Injected by the proxy to prepare a statement lazily.
    Proxy,
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
    /// The probe's answer.
    pub holds_state: Option<bool>,
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
    /// Closes in order: true for one the proxy injected.
    pub closes: Vec<bool>,
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

/// A connection to one backend, leased by at most one client session at a time.
pub struct BackendConn {
    pub rd: OwnedReadHalf,
    pub wr: OwnedWriteHalf,
    /// Bytes read from the server not yet forwarded.
    pub inbuf: BytesMut,
    /// Bytes waiting to be written to the server.
    pub out: BytesMut,
    pub info: Arc<BackendInfo>,
    pub key: PoolKey,
    /// The server's BackendKeyData, to forward a client's cancel.
    pub cancel_key: (i32, i32),
    pub params: Arc<ServerParams>,
    /// Prepared statements present on this server: client name -> generation.
    pub prepared: HashMap<Bytes, u64, RandomState>,
    /// One entry per ReadyForQuery still to come, oldest first.
    pub syncs: VecDeque<Pending>,
    /// Bytes of a forwarded message still to pass through before the next header.
    pub body_remaining: usize,
    pub created: Instant,
    /// A session made temporary objects here: the server's temporary schema outlives any
    /// reset, so the connection is closed, not pooled, when the session ends.
    pub has_temp_schema: bool,
    /// Statements the client deallocated that this server still holds: closed before its
    /// next unit.
    pub closes_due: Vec<Bytes>,
    /// How much of its session's settings this connection has (`Settings::seq`); 0 for the
    /// startup state a pooled connection is reset to.
    pub settings_seq: u64,
    pub counted: Counted,
    /// Its place among `[pool] max_server_connections` of its backend, given back when it
    /// closes.
    pub _slot: tokio::sync::OwnedSemaphorePermit,
}

/// Counts a connection in its backend's open connections while it exists.
pub struct Counted(Arc<BackendInfo>);

impl Counted {
    pub fn new(info: &Arc<BackendInfo>) -> Counted {
        info.open.fetch_add(1, Ordering::Relaxed);
        Counted(info.clone())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl BackendConn {
    /// Moves the socket to the reactor of the runtime this runs on. A pooled connection may
    /// have been opened on another worker; left there, every read would be a cross-thread
    /// wake-up.
    pub fn adopt(self) -> std::io::Result<BackendConn> {
        let BackendConn { rd, wr, .. } = self;
        let stream = rd.reunite(wr).map_err(std::io::Error::other)?;
        let (rd, wr) = tokio::net::TcpStream::from_std(stream.into_std()?)?.into_split();
        Ok(BackendConn { rd, wr, ..self })
    }

    /// True when the server owes no response and the stream is at a message boundary.
    pub fn is_quiet(&self) -> bool {
        self.syncs.is_empty() && self.body_remaining == 0 && self.inbuf.is_empty()
    }

    /// Units whose answers the client is owed (the proxy's own are not).
    pub fn owed_to_client(&self) -> usize {
        self.syncs
            .iter()
            .filter(|p| p.origin == Origin::Client)
            .count()
    }
}
