//! An authenticated backend connection: its socket, what it has prepared and replayed, and
//! its place in the pool.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use crate::cancel::BackendCancel;
use crate::telemetry::clock::Tick;

use bytes::{Bytes, BytesMut};

use super::protocol_state::ProtocolState;
use super::Prepared;

use super::pool::{KeyPool, Place};
use super::stream::{self, ServerRead, ServerWrite};
use super::{BackendInfo, PoolKey, ServerParams};

/// What a pooled connection's settings are, for the next session that leases it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum SettingsMark {
    /// As the server started it (new, or reset): a session replays all of its own.
    #[default]
    Startup,
    /// A session's whole settings, written as the queries that give a new connection them
    /// (`Settings::fingerprint`): a session with the same needs nothing replayed.
    Of(Arc<str>),
    /// Not known: reset before another session uses it.
    Unknown,
}

/// A connection to one backend, leased by at most one client session at a time.
pub struct BackendConn {
    pub rd: ServerRead,
    pub wr: ServerWrite,
    /// The answers it owes and where its input stream stands.
    pub proto: ProtocolState,
    /// Bytes waiting to be written to the server.
    pub out: BytesMut,
    pub info: Arc<BackendInfo>,
    pub key: PoolKey,
    /// Unique among the connections the proxy opens, never 0 ([`next_serial`]): what tells
    /// one from another, where the server's key may not (a server may send none).
    pub serial: u64,
    /// The server's BackendKeyData (where a client's cancel for it goes), and the cancels
    /// forwarded here and not yet delivered.
    pub cancel: Arc<BackendCancel>,
    pub params: Arc<ServerParams>,
    /// Prepared statements present on this server.
    pub prepared: Prepared,
    /// When it was opened, for `server_lifetime` (coarse: see [`Tick`]).
    pub created: Tick,
    /// The same, by the wall clock: the admin console shows it for every lease.
    pub connected: SystemTime,
    /// Its own address, read once: the admin console lists it for every lease.
    pub local: Option<SocketAddr>,
    /// A session made temporary objects here: the server's temporary schema outlives any
    /// reset, so the connection is closed, not pooled, when the session ends.
    pub has_temp_schema: bool,
    /// Statements the client deallocated that this server still holds: closed before its
    /// next unit.
    pub closes_due: Vec<Bytes>,
    /// How much of its session's settings this connection has (`Settings::seq`); 0 for the
    /// startup state a pooled connection is reset to.
    pub settings_seq: u64,
    /// What settings it has between sessions (transaction pooling).
    pub settings: SettingsMark,
    /// The worker whose loop its socket is registered with; `NO_WORKER` for one that no
    /// session has used yet (its socket may be on a loop or on tokio's reactor).
    pub worker: usize,
    pub counted: Counted,
    /// Its place among `[pool] max_server_connections` of its backend and in its key's
    /// pool, given back when it closes.
    pub place: Place,
}

/// The serial number of a connection being opened.
pub fn next_serial() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
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
    /// Moves the socket to the loop of the worker this runs on. A pooled connection may have
    /// been opened on another worker or off the workers; left there, every read would be a
    /// cross-thread wake-up.
    pub fn adopt(self, worker: usize) -> std::io::Result<BackendConn> {
        let BackendConn { rd, wr, .. } = self;
        let (rd, wr) = stream::adopt(rd, wr)?;
        Ok(BackendConn {
            rd,
            wr,
            worker,
            ..self
        })
    }

    /// The key pool it belongs to.
    pub fn member(&self) -> &Arc<KeyPool> {
        self.place.member()
    }

    /// True when the server owes no response, the stream is at a message boundary and no
    /// client's cancel is on its way here.
    pub fn is_quiet(&self) -> bool {
        self.proto.is_quiet() && self.cancel.in_flight.load(Ordering::Acquire) == 0
    }
}
