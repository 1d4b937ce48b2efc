//! Pools of authenticated backend connections, one per (backend, user, database, startup
//! parameters that cannot be set later): a [`KeyPool`].
//!
//! A key pool opens at most `default_pool_size` connections (plus `reserve_pool_size` for
//! clients that waited `reserve_pool_timeout`): `[pool]`'s, or its database's or user's
//! override (see `PoolConfig::settings_for`). A backend opens at most
//! `max_server_connections` over all its keys. A client that finds none idle and no room
//! waits its turn, first come first served (but see `line`: a connection may go to a client on
//! its own worker thread first), up to `query_wait_timeout`: a connection given back goes
//! straight to a client in line, and so does the room a closed one leaves.
//!
//! Given back, a connection is either pooled as it is (transaction pooling: the session says
//! what settings it has, and its prepared statements are tracked), or reset with
//! `DISCARD ALL` first (a session that ended in session mode), or closed when its state is
//! not known to be clean. Before a database is dropped or renamed, the idle connections to
//! it are closed, so that the proxy's own connections do not hold it.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use pgrepl_config::PoolConfig;
use tokio::io::AsyncReadExt;
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

use super::apply;
use super::connect::connect;
use super::line::{Line, Waiter};
use super::{
    BackendConn, BackendError, BackendId, BackendInfo, Backends, CutDetection, Prepared,
    ServerParams, SettingsMark, StartupInfo,
};
use crate::telemetry::clock::Tick;
use crate::telemetry::names;

/// Connections are interchangeable only for the same backend and the same startup request
/// (user, database and the startup parameters that cannot be set later).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    pub backend: BackendId,
    pub startup: Arc<StartupInfo>,
}

/// How long a reset may take before the connection is given up.
const RESET_TIMEOUT: Duration = Duration::from_secs(5);
/// How long connections to a database being dropped or renamed are closed instead of pooled:
/// PostgreSQL's `DROP DATABASE` waits up to 5 s for other sessions to leave.
const CLOSING_GRACE: Duration = Duration::from_secs(10);
/// What the pool remembers of ParameterStatus answers, at most: past that it starts over.
const MAX_REMEMBERED_PARAMS: usize = 1024;
/// Idle connections looked through for one that suits the session best (same worker
/// thread, same settings) before the newest is taken.
const AFFINITY_SCAN: usize = 8;

/// Whether an idle connection suits the session that asks (has its settings, say).
pub type Suits<'a> = dyn Fn(&BackendConn) -> bool + Sync + 'a;

/// Startup settings a client's connections get on lease (see `client::params`).
type Settings = Vec<(String, String)>;

/// Taken by whoever asks a server about one key and its settings.
type Gate = Arc<tokio::sync::Mutex<()>>;

/// Brings a connection's settings back to its startup values (what `DISCARD ALL` does to
/// settings), as a statement a standby also runs.
pub const RESET_SETTINGS: &str = "SET SESSION AUTHORIZATION DEFAULT; RESET ALL";

/// A Terminate message: a connection closed with it ends its server process at once.
const TERMINATE: [u8; 5] = [b'X', 0, 0, 0, 4];

/// The sizes and times of `[pool]` that apply to every key alike.
#[derive(Debug, Clone, Copy)]
struct Limits {
    reserve_pool_timeout: Duration,
    max_server_connections: usize,
    query_wait_timeout: Duration,
    max_idle: usize,
    idle_timeout: Duration,
    lifetime: Duration,
    max_prepared_statements: usize,
}

impl Limits {
    fn of(config: &PoolConfig) -> Limits {
        Limits {
            reserve_pool_timeout: config.reserve_pool_timeout,
            max_server_connections: config.max_server_connections,
            query_wait_timeout: config.query_wait_timeout,
            max_idle: config.max_idle,
            idle_timeout: config.server_idle_timeout,
            lifetime: config.server_lifetime,
            max_prepared_statements: config.max_prepared_statements,
        }
    }
}

/// The sizes of one key pool, which its database or user may override.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    /// `usize::MAX` when only the backend's bound applies.
    pool_size: usize,
    min_pool_size: usize,
    reserve_pool_size: usize,
}

impl Sizes {
    fn of(config: &PoolConfig, key: &PoolKey) -> Sizes {
        let startup = &key.startup;
        let settings = config.settings_for(Some(&startup.user), Some(&startup.database));
        Sizes {
            pool_size: match settings.default_pool_size {
                0 => usize::MAX,
                size => size,
            },
            min_pool_size: settings.min_pool_size,
            reserve_pool_size: settings.reserve_pool_size,
        }
    }
}

/// What a client waiting in a key pool's line is handed.
enum Handoff {
    /// A connection given back.
    Conn(Box<BackendConn>),
    /// Room for one more connection, counted as open already: the waiter opens it, or, if
    /// it is gone, the room goes on to the next (the `Member` is that room).
    Room(Member),
}

struct KeyState {
    /// Newest last, with when each came back.
    idle: Vec<(Box<BackendConn>, Tick)>,
    /// Connections open or being opened for this key.
    open: usize,
    waiting: Line<Handoff>,
    /// The password the last client of this key gave, to open `min_pool_size` connections.
    password: Option<Arc<str>>,
    /// Set when the key pool is made, and by a reload.
    sizes: Sizes,
}

impl KeyState {
    fn new(sizes: Sizes) -> KeyState {
        KeyState {
            idle: Vec::new(),
            open: 0,
            waiting: Line::default(),
            password: None,
            sizes,
        }
    }

    /// Hands room counted in `open` (of `pool`, whose state this is) to the first client in
    /// line; with nobody there, it is no longer counted.
    fn hand_room(&mut self, pool: &Arc<KeyPool>) {
        match self
            .waiting
            .hand_over(Handoff::Room(Member::counted(pool)), None)
        {
            None => {} // the first in line has the room now
            Some(Handoff::Room(room)) => {
                self.open = self.open.saturating_sub(1);
                room.disarm();
            }
            Some(Handoff::Conn(_)) => unreachable!("handed back what was given"),
        }
    }

    /// The idle connection that suits a session best (see [`Self::pick_idle`]), if nobody
    /// waits in line: nobody may pass them. Notes the password connections it opens use.
    fn take_idle_first(
        &mut self,
        password: Option<&str>,
        worker: usize,
        suits: &Suits<'_>,
    ) -> Option<(Box<BackendConn>, Tick)> {
        if password.is_some() && self.password.as_deref() != password {
            self.password = password.map(Arc::from);
        }
        if !self.waiting.is_empty() {
            return None;
        }
        self.pick_idle(worker, suits)
    }

    /// The idle connection that suits a session best: on its worker thread and with
    /// `settings`, else on its worker, else the newest; with when it was pooled.
    fn pick_idle(&mut self, worker: usize, suits: &Suits<'_>) -> Option<(Box<BackendConn>, Tick)> {
        let len = self.idle.len();
        let recent = len.saturating_sub(AFFINITY_SCAN)..len;
        let at = |best: &dyn Fn(&BackendConn) -> bool| {
            recent.clone().rev().find(|&i| best(&self.idle[i].0))
        };
        let index = at(&|c| c.worker == worker && suits(c))
            .or_else(|| at(&|c| c.worker == worker))
            .or_else(|| len.checked_sub(1))?;
        Some(self.idle.remove(index))
    }
}

/// The connections of one key: its idle ones, how many are open, who waits.
pub struct KeyPool {
    pub key: PoolKey,
    state: Mutex<KeyState>,
    info: Arc<BackendInfo>,
}

/// A place in a key pool, counted in its `open`: held by a connection while it exists, or
/// by a waiter about to open one. When it ends, the room goes to the first client waiting
/// (still counted), or, with nobody waiting, is no longer counted.
pub struct Member(Option<Arc<KeyPool>>);

impl Member {
    /// A place already counted in `pool`'s `open`.
    fn counted(pool: &Arc<KeyPool>) -> Member {
        Member(Some(pool.clone()))
    }

    /// Ends without handing anything on: the caller has uncounted it.
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let Some(pool) = self.0.take() else { return };
        locked(&pool.state).hand_room(&pool);
    }
}

/// A connection's places: among its backend's `max_server_connections`, and in its key pool.
pub struct Place {
    _slot: OwnedSemaphorePermit,
    member: Member,
}

impl Place {
    pub fn member(&self) -> &Arc<KeyPool> {
        self.member
            .0
            .as_ref()
            .expect("a connection's place is armed")
    }
}

/// The idle connections' databases that are not pooled now.
#[derive(Default)]
struct Closing(Vec<(String, Instant)>);

/// What every lease and give-back checks of `[pool]`, readable without a lock (two locks a
/// transaction otherwise); set with the rest of the limits.
#[derive(Default)]
struct LeaseLimits {
    lifetime: AtomicU64,
    max_idle: AtomicUsize,
}

impl LeaseLimits {
    fn set(&self, limits: &Limits) {
        let nanos = u64::try_from(limits.lifetime.as_nanos()).unwrap_or(u64::MAX);
        self.lifetime.store(nanos, Ordering::Relaxed);
        self.max_idle.store(limits.max_idle, Ordering::Relaxed);
    }

    /// Whether a connection made at `created` has outlived `server_lifetime` at `now`.
    fn too_old(&self, created: Tick, now: Tick) -> bool {
        now.since(created) >= Duration::from_nanos(self.lifetime.load(Ordering::Relaxed))
    }

    fn max_idle(&self) -> usize {
        self.max_idle.load(Ordering::Relaxed)
    }
}

pub struct Pool {
    backends: Arc<Backends>,
    /// Per backend id (every id the registry may hand out): one permit per connection it may
    /// have open.
    slots: Vec<Arc<Semaphore>>,
    /// Per backend: acquires waiting for a permit. While some wait, returned connections
    /// nobody of their key waits for are closed rather than pooled, so the permit goes to
    /// the first in line.
    waiting: Vec<AtomicUsize>,
    keys: Mutex<HashMap<PoolKey, Arc<KeyPool>>>,
    closing: Mutex<Closing>,
    /// Whether `closing` lists a database: checked without its lock at every give-back.
    any_closing: AtomicBool,
    /// ParameterStatus values per key and startup settings, remembered from the last
    /// connection opened for the key with the settings applied, so a client can be told them
    /// at startup without a backend connection of its own.
    params: Mutex<HashMap<(PoolKey, Settings), Arc<ServerParams>>>,
    /// Per key and settings being asked about now: held while a server is asked for
    /// ParameterStatus values not remembered yet.
    asking: Mutex<HashMap<(PoolKey, Settings), Gate>>,
    /// `[pool]`, which a reload may change (see `reconfigure`).
    limits: Mutex<Limits>,
    lease_limits: LeaseLimits,
    /// `[pool]` with its overrides, which decide each key pool's sizes.
    config: Mutex<PoolConfig>,
    connect_timeout: Duration,
    /// `[proxy] server_tcp_user_timeout`, for every connection opened.
    cut_detection: Option<CutDetection>,
    next_waiter: AtomicU64,
    /// Clients waiting for a connection now, over every key.
    clients_waiting: AtomicUsize,
    /// `pgrepl_pool_wait_seconds`, registered at start so that it is exported from then on.
    wait_seconds: metrics::Histogram,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks leaves plain data behind; keep serving.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// How long a closed connection stays counted while its server ends its process.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Closes a connection, telling its server first (best effort: a full socket buffer just
/// closes it). It stays counted in its pools until the server has closed its end, so that
/// one opened in its place never makes the server hold one more than the pool's size.
pub fn close(conn: Box<BackendConn>) {
    let _ = conn.wr.try_write(&TERMINATE);
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        let mut conn = conn;
        let mut sink = [0u8; 512];
        let ended = async { while matches!(conn.rd.read(&mut sink).await, Ok(n) if n > 0) {} };
        let _ = tokio::time::timeout(CLOSE_WAIT, ended).await;
    });
}

/// Counts an acquire in a line while it waits.
struct InLine<'a>(&'a AtomicUsize);

impl<'a> InLine<'a> {
    fn join(count: &'a AtomicUsize) -> InLine<'a> {
        count.fetch_add(1, Ordering::AcqRel);
        InLine(count)
    }
}

impl Drop for InLine<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What an acquire does next, decided under the key pool's lock.
enum Step {
    /// An idle connection was taken.
    Ready,
    /// Room was counted for a new one.
    Open,
    Wait(u64, oneshot::Receiver<Handoff>),
}

/// A key pool's figures at one moment, for the admin console and the status page.
#[derive(Debug, Clone)]
pub struct KeyFigures {
    pub key: PoolKey,
    pub open: usize,
    pub idle: usize,
    pub waiting: usize,
    /// How long the first in line has waited.
    pub longest_wait: Duration,
}

impl Pool {
    pub fn new(
        backends: Arc<Backends>,
        config: &PoolConfig,
        connect_timeout: Duration,
        cut_detection: Option<CutDetection>,
    ) -> Arc<Pool> {
        let limits = Limits::of(config);
        let ids = 0..Backends::CAPACITY;
        Arc::new(Pool {
            slots: ids
                .clone()
                .map(|_| Arc::new(Semaphore::new(limits.max_server_connections)))
                .collect(),
            waiting: ids.map(|_| AtomicUsize::new(0)).collect(),
            backends,
            keys: Mutex::default(),
            closing: Mutex::default(),
            any_closing: AtomicBool::new(false),
            params: Mutex::new(HashMap::new()),
            asking: Mutex::default(),
            limits: Mutex::new(limits),
            lease_limits: {
                let lease_limits = LeaseLimits::default();
                lease_limits.set(&limits);
                lease_limits
            },
            config: Mutex::new(config.clone()),
            connect_timeout,
            cut_detection,
            next_waiter: AtomicU64::new(0),
            clients_waiting: AtomicUsize::new(0),
            wait_seconds: metrics::histogram!(names::POOL_WAIT_SECONDS),
        })
    }

    /// `[pool]` now.
    fn limits(&self) -> Limits {
        *locked(&self.limits)
    }

    pub fn backends(&self) -> &Backends {
        &self.backends
    }

    /// The pool of `key`, made on first use.
    pub fn key_pool(&self, key: &PoolKey) -> Arc<KeyPool> {
        let mut keys = locked(&self.keys);
        if let Some(pool) = keys.get(key) {
            return pool.clone();
        }
        let sizes = Sizes::of(&locked(&self.config), key);
        let pool = Arc::new(KeyPool {
            key: key.clone(),
            state: Mutex::new(KeyState::new(sizes)),
            info: self.backends[key.backend.index()].clone(),
        });
        keys.insert(key.clone(), pool.clone());
        pool
    }

    /// A connection of `pool`: an idle one still alive (on the worker thread `worker` and
    /// `suits` the session, if one does), or a new one, or one given back or made room for
    /// while this client waits in line.
    pub async fn acquire(
        &self,
        pool: &Arc<KeyPool>,
        password: Option<&str>,
        worker: usize,
        suits: &Suits<'_>,
    ) -> Result<Box<BackendConn>, BackendError> {
        let started = Instant::now();
        loop {
            let (idle, step) = {
                let mut state = locked(&pool.state);
                let first_in_line = state.waiting.is_empty();
                let idle = state.take_idle_first(password, worker, suits);
                let step = if idle.is_some() {
                    Step::Ready
                } else if first_in_line && state.open < state.sizes.pool_size {
                    state.open += 1;
                    Step::Open
                } else {
                    let id = self.next_waiter.fetch_add(1, Ordering::Relaxed);
                    let (tx, rx) = oneshot::channel();
                    state.waiting.join(Waiter::new(id, worker, tx));
                    Step::Wait(id, rx)
                };
                (idle, step)
            };
            let (conn, pooled) = match (idle, step) {
                (Some((conn, since)), _) => (conn, Some(since)),
                (None, Step::Wait(id, rx)) => match self.wait_in_line(pool, id, rx, started).await?
                {
                    Handoff::Conn(conn) => (conn, None),
                    Handoff::Room(room) => {
                        return self.open(pool, room, password, worker, started).await
                    }
                },
                (None, _) => {
                    let room = Member::counted(pool);
                    return self.open(pool, room, password, worker, started).await;
                }
            };
            if let Some(conn) = self.ready(conn, pooled, worker) {
                return Ok(conn);
            }
        }
    }

    /// An idle connection of `pool` still alive, taken at once (chosen as by
    /// [`Self::acquire`]); None when there is none or clients are in line before this one.
    pub fn take_idle(
        &self,
        pool: &Arc<KeyPool>,
        password: Option<&str>,
        worker: usize,
        suits: &Suits<'_>,
    ) -> Option<Box<BackendConn>> {
        loop {
            let (conn, since) = locked(&pool.state).take_idle_first(password, worker, suits)?;
            if let Some(conn) = self.ready(conn, Some(since), worker) {
                return Some(conn);
            }
        }
    }

    /// A connection taken from the idle list (`pooled` since then) or handed over, checked
    /// alive and moved to the worker thread that uses it; None if it had died (its room is
    /// handed on).
    fn ready(
        &self,
        conn: Box<BackendConn>,
        pooled: Option<Tick>,
        worker: usize,
    ) -> Option<Box<BackendConn>> {
        let now = Tick::now();
        let asked = pooled.is_some_and(|since| now.since(since) >= ASK_IF_IDLE_FOR);
        if !is_alive(&conn, asked) || self.lease_limits.too_old(conn.created, now) {
            close(conn);
            return None;
        }
        if conn.worker == worker {
            return Some(conn);
        }
        match conn.adopt(worker) {
            Ok(conn) => Some(Box::new(conn)),
            Err(e) => {
                tracing::warn!(error = %e, "cannot move a pooled connection to this worker");
                None
            }
        }
    }

    /// Waits in `pool`'s line (entry `id`) for a connection or room, up to
    /// `query_wait_timeout` since `started`; after `reserve_pool_timeout`, takes room in the
    /// reserve if there is some.
    async fn wait_in_line(
        &self,
        pool: &Arc<KeyPool>,
        id: u64,
        mut rx: oneshot::Receiver<Handoff>,
        started: Instant,
    ) -> Result<Handoff, BackendError> {
        let _in_line = InLine::join(&self.clients_waiting);
        // A waiter that goes away (its client left) leaves the line.
        let _spot = Spot { pool, id };
        let limits = self.limits();
        let deadline = started + limits.query_wait_timeout;
        if locked(&pool.state).sizes.reserve_pool_size > 0 {
            let reserve_at = started + limits.reserve_pool_timeout;
            if let Ok(handoff) = tokio::time::timeout_at(reserve_at.into(), &mut rx).await {
                return self.waited(pool, started, handoff.ok());
            }
            let mut state = locked(&pool.state);
            let reserve = state
                .sizes
                .pool_size
                .saturating_add(state.sizes.reserve_pool_size);
            if state.open < reserve && state.waiting.leave(id) {
                state.open += 1;
                drop(state);
                tracing::info!(pool = %pool.name(), "a client waited {}ms: opening a reserve connection",
                    limits.reserve_pool_timeout.as_millis());
                let room = Handoff::Room(Member::counted(pool));
                return self.waited(pool, started, Some(room));
            }
        }
        match tokio::time::timeout_at(deadline.into(), &mut rx).await {
            Ok(handoff) => self.waited(pool, started, handoff.ok()),
            Err(_) => {
                let left = locked(&pool.state).waiting.leave(id);
                if !left {
                    // Handed something just as the wait ended: take it.
                    if let Ok(handoff) = rx.try_recv() {
                        return self.waited(pool, started, Some(handoff));
                    }
                }
                self.waited(pool, started, None)
            }
        }
    }

    /// The end of a wait in line, counted: what it was handed, or the error of a wait that
    /// ran out.
    fn waited(
        &self,
        pool: &KeyPool,
        started: Instant,
        handoff: Option<Handoff>,
    ) -> Result<Handoff, BackendError> {
        self.wait_seconds.record(started.elapsed().as_secs_f64());
        handoff.ok_or_else(|| self.timed_out(pool))
    }

    fn timed_out(&self, pool: &KeyPool) -> BackendError {
        let limits = self.limits();
        let size = match locked(&pool.state).sizes.pool_size {
            usize::MAX => format!(
                "{} ([pool] max_server_connections)",
                limits.max_server_connections
            ),
            size => format!("{size} (default_pool_size)"),
        };
        BackendError::Full {
            backend: pool.info.to_string(),
            reason: format!(
                "no server connection of pool {} came free within {}ms ([pool] \
                 query_wait_timeout); its size is {size}",
                pool.name(),
                limits.query_wait_timeout.as_millis(),
            ),
        }
    }

    /// Opens a connection in room already counted in `pool`; on failure the room goes to
    /// the next in line.
    async fn open(
        &self,
        pool: &Arc<KeyPool>,
        member: Member,
        password: Option<&str>,
        worker: usize,
        started: Instant,
    ) -> Result<Box<BackendConn>, BackendError> {
        let slot = self.slot(pool, started).await?;
        let place = Place {
            _slot: slot,
            member,
        };
        let info = pool.info.clone();
        let mut conn = connect(
            info,
            pool.key.clone(),
            password,
            self.connect_timeout,
            self.cut_detection,
            place,
        )
        .await?;
        conn.worker = worker;
        conn.prepared = Prepared::bounded(self.limits().max_prepared_statements);
        self.remember((pool.key.clone(), Vec::new()), conn.params.clone());
        Ok(conn)
    }

    fn remember(&self, key: (PoolKey, Settings), params: Arc<ServerParams>) {
        let mut remembered = locked(&self.params);
        if remembered.len() >= MAX_REMEMBERED_PARAMS {
            remembered.clear();
        }
        remembered.insert(key, params);
    }

    /// A place for one more connection to `pool`'s backend: free at once, or made by closing
    /// an idle connection there, or the first to come free before the wait's deadline.
    async fn slot(
        &self,
        pool: &KeyPool,
        started: Instant,
    ) -> Result<OwnedSemaphorePermit, BackendError> {
        let backend = pool.key.backend;
        let slots = &self.slots[backend.index()];
        if let Ok(slot) = slots.clone().try_acquire_owned() {
            return Ok(slot);
        }
        let _in_line = InLine::join(&self.waiting[backend.index()]);
        self.close_oldest_idle(backend);
        let limits = self.limits();
        let deadline = started + limits.query_wait_timeout;
        match tokio::time::timeout_at(deadline.into(), slots.clone().acquire_owned()).await {
            Ok(Ok(slot)) => Ok(slot),
            _ => Err(BackendError::Full {
                backend: pool.info.to_string(),
                reason: format!(
                    "sorry, too many clients already: {} connections are open there \
                     ([pool] max_server_connections) and none came free within {}ms \
                     ([pool] query_wait_timeout)",
                    limits.max_server_connections,
                    limits.query_wait_timeout.as_millis()
                ),
            }),
        }
    }

    /// Every key pool, for looking through them.
    fn key_pools(&self) -> Vec<Arc<KeyPool>> {
        locked(&self.keys).values().cloned().collect()
    }

    /// Closes the idle connection to `backend` unused the longest, if there is one.
    fn close_oldest_idle(&self, backend: BackendId) {
        let oldest = self
            .key_pools()
            .into_iter()
            .filter(|pool| pool.key.backend == backend)
            .filter_map(|pool| {
                let since = locked(&pool.state).idle.first().map(|(_, since)| *since)?;
                Some((since, pool))
            })
            .min_by_key(|(since, _)| *since);
        let Some((_, pool)) = oldest else { return };
        let conn = {
            let mut state = locked(&pool.state);
            (!state.idle.is_empty()).then(|| state.idle.remove(0).0)
        };
        if let Some(conn) = conn {
            tracing::debug!(backend = %conn.info, "closing an idle connection to make room for another");
            close(conn);
        }
    }

    /// The ParameterStatus values a client with the startup `settings` is told: those a
    /// connection for `key` reports once they are applied, as the server reports them at
    /// startup. A connection is opened or leased only when no such answer is remembered.
    /// Fails as the server would refuse the startup packet, if it refuses a setting.
    pub async fn server_params(
        self: &Arc<Self>,
        key: &PoolKey,
        password: Option<&str>,
        settings: &[(String, String)],
    ) -> Result<Arc<ServerParams>, BackendError> {
        let remembered = (key.clone(), settings.to_vec());
        if let Some(params) = locked(&self.params).get(&remembered) {
            return Ok(params.clone());
        }
        // One at a time per key and settings: clients that log in together with the same
        // settings need one answer, not a connection each.
        let gate = locked(&self.asking)
            .entry(remembered.clone())
            .or_default()
            .clone();
        let _turn = gate.lock().await;
        if let Some(params) = locked(&self.params).get(&remembered) {
            return Ok(params.clone());
        }
        let asked = self.ask_params(key, password, settings).await;
        locked(&self.asking).remove(&remembered);
        let params = asked?;
        self.remember(remembered, params.clone());
        Ok(params)
    }

    /// Asks a connection for `key` what it reports with `settings` applied.
    async fn ask_params(
        self: &Arc<Self>,
        key: &PoolKey,
        password: Option<&str>,
        settings: &[(String, String)],
    ) -> Result<Arc<ServerParams>, BackendError> {
        let pool = self.key_pool(key);
        let startup = |conn: &BackendConn| conn.settings == SettingsMark::Startup;
        let mut conn = self.acquire(&pool, password, NO_WORKER, &startup).await?;
        let Some(sql) = apply::set_config_sql(settings.iter().map(|(n, v)| (&**n, &**v))) else {
            let params = conn.params.clone();
            self.give_back(conn);
            return Ok(params);
        };
        let unreachable = |conn: &BackendConn, e: std::io::Error| BackendError::Unreachable {
            backend: conn.info.to_string(),
            reason: e.to_string(),
        };
        // The values reported are what the settings change from the startup values, which a
        // connection another session left with its own settings must return to first, in a
        // query of its own: the server reports only what differs from what it reported last.
        if conn.settings != SettingsMark::Startup {
            apply::run(&mut conn, RESET_SETTINGS)
                .await
                .map_err(|e| unreachable(&conn, e))?;
            conn.settings = SettingsMark::Startup;
        }
        let answer = apply::run(&mut conn, &sql)
            .await
            .map_err(|e| unreachable(&conn, e))?;
        let params = Arc::new(apply::overlay(&conn.params, &answer.reported));
        self.release(conn);
        match answer.error {
            Some(fields) => Err(BackendError::Server { fields }),
            None => Ok(params),
        }
    }

    /// Takes a connection back: reset with `DISCARD ALL` in the background and pooled, or
    /// closed if its state is not clean.
    pub fn release(self: &Arc<Self>, conn: Box<BackendConn>) {
        if !conn.is_quiet() || conn.info.is_retired() {
            close(conn);
            return;
        }
        let pool = self.clone();
        tokio::spawn(async move {
            if let Ok(Ok(conn)) = tokio::time::timeout(RESET_TIMEOUT, reset(conn)).await {
                pool.give_back(conn);
            }
        });
    }

    /// Takes a clean connection back as it is: to the first client waiting for its key, or
    /// pooled, unless it is too old, its database is being dropped, clients wait for a place
    /// at its backend (it closes, and the first in line there gets its place), or enough
    /// connections for its key are idle already.
    pub fn give_back(&self, conn: Box<BackendConn>) {
        if !conn.is_quiet() {
            close(conn);
            return;
        }
        let pool = conn.member().clone();
        let now = Tick::now();
        let mut state = locked(&pool.state);
        // Retirement is checked under the lock `close_backend` takes after retiring, and the
        // database's closing under the one `close_database` takes to close the idle ones.
        let doomed = self.lease_limits.too_old(conn.created, now)
            || conn.info.is_retired()
            || self.is_closing(&conn.key.startup.database);
        if doomed {
            drop(state);
            close(conn);
            return;
        }
        let conn = if state.waiting.is_empty() {
            conn
        } else {
            let worker = conn.worker;
            match state.waiting.hand_over(Handoff::Conn(conn), Some(worker)) {
                None => return,
                Some(Handoff::Conn(conn)) => conn,
                Some(Handoff::Room(_)) => unreachable!("handed back what was given"),
            }
        };
        let backend_full = self.waiting[conn.key.backend.index()].load(Ordering::Acquire) > 0;
        if backend_full || state.idle.len() >= self.lease_limits.max_idle() {
            drop(state);
            close(conn);
            return;
        }
        state.idle.push((conn, now));
    }

    /// Whether `database` is being dropped or renamed: one load at a give-back while none is.
    #[inline]
    fn is_closing(&self, database: &str) -> bool {
        self.any_closing.load(Ordering::Acquire) && self.is_listed_closing(database)
    }

    #[cold]
    #[inline(never)]
    fn is_listed_closing(&self, database: &str) -> bool {
        let mut closing = locked(&self.closing);
        let now = Instant::now();
        closing.0.retain(|(_, until)| *until > now);
        self.any_closing
            .store(!closing.0.is_empty(), Ordering::Release);
        closing.0.iter().any(|(name, _)| name == database)
    }

    /// Closes connections idle for longer than `server_idle_timeout` or older than
    /// `server_lifetime`, and opens what keys lack of `min_pool_size`.
    pub fn maintain(self: &Arc<Self>) {
        let now = Tick::now();
        let limits = self.limits();
        for pool in self.key_pools() {
            let (expired, missing, password) = {
                let mut state = locked(&pool.state);
                let mut expired = Vec::new();
                let mut i = 0;
                while i < state.idle.len() {
                    let (conn, since) = &state.idle[i];
                    let old = self.lease_limits.too_old(conn.created, now);
                    if old || now.since(*since) >= limits.idle_timeout {
                        expired.push(state.idle.remove(i).0);
                    } else {
                        i += 1;
                    }
                }
                let missing = state
                    .sizes
                    .min_pool_size
                    .saturating_sub(state.open - expired.len().min(state.open));
                (expired, missing, state.password.clone())
            };
            expired.into_iter().for_each(close);
            if missing > 0 && !pool.info.is_retired() {
                self.fill(&pool, missing, password);
            }
        }
    }

    /// Opens `count` connections for `pool` in the background, to keep `min_pool_size`.
    fn fill(self: &Arc<Self>, pool: &Arc<KeyPool>, count: usize, password: Option<Arc<str>>) {
        for _ in 0..count {
            {
                let mut state = locked(&pool.state);
                let sizes = state.sizes;
                if state.open >= sizes.min_pool_size.min(sizes.pool_size) {
                    return;
                }
                state.open += 1;
            }
            let (this, pool, password) = (self.clone(), pool.clone(), password.clone());
            let room = Member::counted(&pool);
            tokio::spawn(async move {
                match this
                    .open(&pool, room, password.as_deref(), NO_WORKER, Instant::now())
                    .await
                {
                    Ok(conn) => this.give_back(conn),
                    Err(e) => {
                        tracing::debug!(pool = %pool.name(), error = %e, "could not open a connection for [pool] min_pool_size")
                    }
                }
            });
        }
    }

    /// Before `DROP DATABASE` or `ALTER DATABASE ... RENAME` of `database`: closes the idle
    /// connections to it on every backend, and for a while closes those returned instead of
    /// pooling them (a client that just left may still be handing its connection back).
    fn close_database(&self, database: &str) {
        let mut closing = locked(&self.closing);
        closing
            .0
            .push((database.to_owned(), Instant::now() + CLOSING_GRACE));
        self.any_closing.store(true, Ordering::Release);
        drop(closing);
        let mut closed = Vec::new();
        for pool in self.key_pools() {
            if pool.key.startup.database == database {
                closed.extend(locked(&pool.state).idle.drain(..).map(|(conn, _)| conn));
            }
        }
        tracing::info!(
            database,
            connections = closed.len(),
            "closing idle connections to a database about to be dropped or renamed"
        );
        closed.into_iter().for_each(close);
    }

    /// Before a statement classified [`Effects::DATABASE_DDL`](crate::route::Effects): closes
    /// the idle connections to the database it drops or renames.
    pub fn before_database_ddl(&self, sql: &[u8]) {
        let name = std::str::from_utf8(sql)
            .ok()
            .and_then(crate::route::database_ddl_target_sql);
        if let Some(name) = name {
            self.close_database(&name);
        }
    }

    /// Every key pool's figures now.
    pub fn figures(&self) -> Vec<KeyFigures> {
        let now = Instant::now();
        self.key_pools()
            .into_iter()
            .map(|pool| {
                let state = locked(&pool.state);
                KeyFigures {
                    key: pool.key.clone(),
                    open: state.open,
                    idle: state.idle.len(),
                    waiting: state.waiting.len(),
                    longest_wait: state
                        .waiting
                        .first()
                        .map_or(Duration::ZERO, |w| now.duration_since(w.since)),
                }
            })
            .collect()
    }

    /// Pooled connections per backend (by index), for the status page and gauges.
    pub fn idle_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.backends.len()];
        for figures in self.figures() {
            counts[figures.key.backend.index()] += figures.idle;
        }
        counts
    }

    /// Clients waiting for a server connection now.
    pub fn clients_waiting(&self) -> usize {
        self.clients_waiting.load(Ordering::Relaxed)
    }

    /// The idle connections now, for the admin console (read only).
    pub fn idle_snapshot(&self) -> Vec<IdleServer> {
        let mut servers = Vec::new();
        for pool in self.key_pools() {
            let state = locked(&pool.state);
            servers.extend(state.idle.iter().map(|(conn, since)| IdleServer {
                key: pool.key.clone(),
                backend: conn.info.clone(),
                pid: conn.cancel.pid,
                local: conn.local,
                connected: conn.connected,
                since: *since,
            }));
        }
        servers
    }

    /// Applies `[pool]` settings a reload changed, overrides included. Idle connections beyond
    /// a lower `max_idle` or a shorter timeout go at the next maintenance; each key pool's
    /// sizes apply to its next acquire. A higher `max_server_connections` lets waiting
    /// acquires through at once; a lower one takes the free places away now and the others as
    /// connections close (returned connections are closed meanwhile rather than pooled, and
    /// no acquire gets a place before the limit is met), so connections open over the new
    /// limit are never cut. `mode` needs a restart.
    pub fn reconfigure(self: &Arc<Self>, config: &PoolConfig) {
        // The config first: a key pool made meanwhile is in the list below if it still got
        // the old one.
        *locked(&self.config) = config.clone();
        for pool in self.key_pools() {
            let mut state = locked(&pool.state);
            state.sizes = Sizes::of(config, &pool.key);
            // A pool made larger makes room for those already in line at once: a client
            // opens a connection only when nobody is waiting before it.
            while !state.waiting.is_empty() && state.open < state.sizes.pool_size {
                state.open += 1;
                state.hand_room(&pool);
            }
        }
        let new_limits = Limits::of(config);
        self.lease_limits.set(&new_limits);
        let old = std::mem::replace(&mut *locked(&self.limits), new_limits).max_server_connections;
        let new = new_limits.max_server_connections;
        if new > old {
            for slots in &self.slots {
                slots.add_permits(new - old);
            }
            return;
        }
        for (index, slots) in self.slots.iter().enumerate() {
            let owed = (old - new) - slots.forget_permits(old - new);
            if owed > 0 {
                tokio::spawn(self.clone().take_places(BackendId::nth(index), owed));
            }
        }
    }

    /// Takes `count` places at `backend` out of use as its connections close: first in line,
    /// so that no acquire gets one before the lower limit holds. Later changes of the limit
    /// add or forget permits of their own, so this one always completes its count.
    async fn take_places(self: Arc<Self>, backend: BackendId, count: usize) {
        let _in_line = InLine::join(&self.waiting[backend.index()]);
        for _ in 0..count {
            self.close_oldest_idle(backend);
        }
        let slots = self.slots[backend.index()].clone();
        let count = u32::try_from(count).unwrap_or(u32::MAX);
        if let Ok(places) = slots.acquire_many_owned(count).await {
            places.forget();
        }
    }

    /// After `backend` was retired (a reload removed it): closes its idle connections; those
    /// leased now are closed when they come back.
    pub fn close_backend(&self, backend: BackendId) {
        let mut closed = Vec::new();
        for pool in self.key_pools() {
            if pool.key.backend == backend {
                closed.extend(locked(&pool.state).idle.drain(..).map(|(conn, _)| conn));
            }
        }
        closed.into_iter().for_each(close);
    }

    /// Closes every idle connection (at shutdown).
    pub fn close_idle(&self) {
        for pool in self.key_pools() {
            let idle = std::mem::take(&mut locked(&pool.state).idle);
            idle.into_iter().for_each(|(conn, _)| close(conn));
        }
    }
}

/// Worker index of a connection opened outside any session: whoever leases it first moves it.
pub const NO_WORKER: usize = usize::MAX;

/// A waiter's place in a key pool's line: left when the wait ends, however it ends.
struct Spot<'a> {
    pool: &'a KeyPool,
    id: u64,
}

impl Drop for Spot<'_> {
    fn drop(&mut self) {
        locked(&self.pool.state).waiting.leave(self.id);
    }
}

impl KeyPool {
    /// `backend/user/database`, as the admin console and errors name a pool.
    pub fn name(&self) -> String {
        format!(
            "{}/{}/{}",
            self.info.name, self.key.startup.user, self.key.startup.database
        )
    }
}

/// An idle connection as the admin console shows it.
#[derive(Debug, Clone)]
pub struct IdleServer {
    pub key: PoolKey,
    pub backend: Arc<BackendInfo>,
    /// The server process's id.
    pub pid: i32,
    pub local: Option<std::net::SocketAddr>,
    pub connected: std::time::SystemTime,
    /// Pooled since.
    pub since: Tick,
}

/// How long a connection may have been pooled before its liveness is asked of its socket
/// rather than its loop's readiness. Readiness answers without a system call, but only from
/// the events its loop has taken: a server that ended an idle connection during the loop's
/// current turn is not seen yet. Nearly every lease in transaction pooling takes a connection
/// pooled moments ago; one idle longer is the kind a server ends (a restart,
/// `idle_session_timeout`, `pg_terminate_backend`), and the `recv` is worth it there.
const ASK_IF_IDLE_FOR: Duration = Duration::from_secs(1);

/// An idle connection the server has closed (or written to unasked) is not reused; `ask`:
/// asked of the socket itself, not of what its loop has seen (see [`ASK_IF_IDLE_FOR`]).
fn is_alive(conn: &BackendConn, ask: bool) -> bool {
    let mut probe = [0u8; 1];
    let found = if ask {
        conn.rd.peek_now(&mut probe)
    } else {
        conn.rd.try_read(&mut probe)
    };
    matches!(found, Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}

/// Runs `DISCARD ALL` and checks the server is idle and error-free afterwards.
async fn reset(mut conn: Box<BackendConn>) -> io::Result<Box<BackendConn>> {
    let answer = apply::run(&mut conn, "DISCARD ALL").await?;
    if answer.error.is_some() {
        return Err(io::Error::other("reset failed"));
    }
    conn.prepared.clear();
    conn.closes_due.clear();
    conn.settings_seq = 0;
    conn.settings = super::SettingsMark::Startup;
    Ok(conn)
}
