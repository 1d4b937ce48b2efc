//! Pools of authenticated backend connections. A session leases at most one connection per
//! backend; a returned connection is reset with `DISCARD ALL` before anyone else gets it, or
//! closed when its state is not known to be clean.
//!
//! A backend has at most `[pool] max_server_connections` connections open, leased and idle
//! together: past that, an acquire closes an idle connection another key holds there, else
//! waits its turn (first come, first served) up to the connect timeout, then fails with
//! 53300. Before a database is dropped or renamed, the idle connections to it are closed, so
//! that the proxy's own connections do not hold it.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::apply;
use super::connect::connect;
use super::{BackendConn, BackendError, BackendId, Backends, ServerParams, StartupInfo};

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

/// Startup settings a client's connections get on lease (see `client::params`).
type Settings = Vec<(String, String)>;

/// Taken by whoever asks a server about one key and its settings.
type Gate = Arc<tokio::sync::Mutex<()>>;

/// A Terminate message: a connection closed with it ends its server process at once.
const TERMINATE: [u8; 5] = [b'X', 0, 0, 0, 4];

/// The idle connections, and the databases whose connections are not pooled now.
#[derive(Default)]
struct Idle {
    conns: HashMap<PoolKey, Vec<(BackendConn, Instant)>>,
    /// Database names, with until when.
    closing: Vec<(String, Instant)>,
}

pub struct Pool {
    backends: Arc<Backends>,
    /// Per backend id (every id the registry may hand out): one permit per connection it may
    /// have open.
    slots: Vec<Arc<Semaphore>>,
    /// Per backend: acquires waiting for a permit. While some wait, returned connections
    /// are closed rather than pooled, so the permit goes to the first in line.
    waiting: Vec<AtomicUsize>,
    idle: Mutex<Idle>,
    /// ParameterStatus values per key and startup settings, remembered from the last
    /// connection opened for the key with the settings applied, so a client can be told them
    /// at startup without a backend connection of its own.
    params: Mutex<HashMap<(PoolKey, Settings), Arc<ServerParams>>>,
    /// Per key and settings being asked about now: held while a server is asked for
    /// ParameterStatus values not remembered yet.
    asking: Mutex<HashMap<(PoolKey, Settings), Gate>>,
    /// `[pool]` settings, which a reload may change (see `reconfigure`).
    max_idle: AtomicUsize,
    max_server_connections: AtomicUsize,
    /// In nanoseconds.
    idle_timeout: AtomicU64,
    connect_timeout: Duration,
}

impl Idle {
    /// Takes out the idle connections of the keys `matches` picks.
    fn take(&mut self, matches: impl Fn(&PoolKey) -> bool) -> Vec<BackendConn> {
        let keys: Vec<PoolKey> = self.conns.keys().filter(|k| matches(k)).cloned().collect();
        keys.iter()
            .filter_map(|key| self.conns.remove(key))
            .flatten()
            .map(|(conn, _)| conn)
            .collect()
    }
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks leaves plain data behind; keep serving.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Closes a connection the pool gives up, telling its server first (best effort: a full
/// socket buffer just closes it).
fn close(conn: BackendConn) {
    let _ = conn.wr.try_write(&TERMINATE);
}

/// Counts an acquire in its backend's line while it waits.
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

impl Pool {
    pub fn new(
        backends: Arc<Backends>,
        config: &pgrepl_config::PoolConfig,
        connect_timeout: Duration,
    ) -> Arc<Pool> {
        let max = config.max_server_connections;
        let ids = 0..Backends::CAPACITY;
        Arc::new(Pool {
            slots: ids.clone().map(|_| Arc::new(Semaphore::new(max))).collect(),
            waiting: ids.map(|_| AtomicUsize::new(0)).collect(),
            backends,
            idle: Mutex::default(),
            params: Mutex::new(HashMap::new()),
            asking: Mutex::default(),
            max_idle: AtomicUsize::new(config.max_idle),
            max_server_connections: AtomicUsize::new(max),
            idle_timeout: AtomicU64::new(crate::health::nanos(config.idle_timeout)),
            connect_timeout,
        })
    }

    pub fn backends(&self) -> &Backends {
        &self.backends
    }

    /// `[pool] idle_timeout` now.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_nanos(self.idle_timeout.load(Ordering::Relaxed))
    }

    /// An idle connection for `key` that is still alive, or a new one.
    pub async fn acquire(
        &self,
        key: &PoolKey,
        password: Option<&str>,
    ) -> Result<BackendConn, BackendError> {
        loop {
            let candidate = locked(&self.idle).conns.get_mut(key).and_then(|v| v.pop());
            match candidate {
                Some((conn, _)) if is_alive(&conn) => match conn.adopt() {
                    Ok(conn) => return Ok(conn),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot move a pooled connection to this worker")
                    }
                },
                Some(_) => continue,
                None => break,
            }
        }
        let slot = self.slot(key.backend).await?;
        let info = self.backends[key.backend.index()].clone();
        let conn = connect(info, key.clone(), password, self.connect_timeout, slot).await?;
        self.remember((key.clone(), Vec::new()), conn.params.clone());
        Ok(conn)
    }

    fn remember(&self, key: (PoolKey, Settings), params: Arc<ServerParams>) {
        let mut remembered = locked(&self.params);
        if remembered.len() >= MAX_REMEMBERED_PARAMS {
            remembered.clear();
        }
        remembered.insert(key, params);
    }

    /// A place for one more connection to `backend`: free at once, or made by closing an
    /// idle connection there, or the first to come free within the connect timeout.
    async fn slot(&self, backend: BackendId) -> Result<OwnedSemaphorePermit, BackendError> {
        let slots = &self.slots[backend.index()];
        if let Ok(slot) = slots.clone().try_acquire_owned() {
            return Ok(slot);
        }
        let _in_line = InLine::join(&self.waiting[backend.index()]);
        self.close_oldest_idle(backend);
        match tokio::time::timeout(self.connect_timeout, slots.clone().acquire_owned()).await {
            Ok(Ok(slot)) => Ok(slot),
            _ => Err(BackendError::Full {
                backend: self.backends[backend.index()].to_string(),
                reason: format!(
                    "sorry, too many clients already: {} connections are open there \
                     ([pool] max_server_connections) and none came free within {}ms \
                     (connect_timeout)",
                    self.max_server_connections.load(Ordering::Relaxed),
                    self.connect_timeout.as_millis()
                ),
            }),
        }
    }

    /// Closes the idle connection to `backend` unused the longest, if there is one.
    fn close_oldest_idle(&self, backend: BackendId) {
        let mut idle = locked(&self.idle);
        let oldest = idle
            .conns
            .iter()
            .filter(|(key, list)| key.backend == backend && !list.is_empty())
            .min_by_key(|(_, list)| list[0].1)
            .map(|(key, _)| key.clone());
        let Some(key) = oldest else { return };
        let list = idle.conns.get_mut(&key).expect("found above");
        let (conn, _) = list.remove(0);
        if list.is_empty() {
            idle.conns.remove(&key);
        }
        drop(idle);
        tracing::debug!(backend = %conn.info, "closing an idle connection to make room for another");
        close(conn);
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
        let mut conn = self.acquire(key, password).await?;
        let Some(sql) = apply::set_config_sql(settings.iter().map(|(n, v)| (&**n, &**v))) else {
            let params = conn.params.clone();
            self.put_idle(conn);
            return Ok(params);
        };
        let answer = apply::run(&mut conn, &sql)
            .await
            .map_err(|e| BackendError::Unreachable {
                backend: conn.info.to_string(),
                reason: e.to_string(),
            })?;
        let params = Arc::new(apply::overlay(&conn.params, &answer.reported));
        self.release(conn);
        match answer.error {
            Some(fields) => Err(BackendError::Server { fields }),
            None => Ok(params),
        }
    }

    /// Takes a connection back: reset in the background and pooled, or closed if its state is
    /// not clean or its backend was removed from the configuration.
    pub fn release(self: &Arc<Self>, conn: BackendConn) {
        if !conn.is_quiet() {
            return;
        }
        if conn.info.is_retired() {
            close(conn);
            return;
        }
        let pool = self.clone();
        tokio::spawn(async move {
            if let Ok(Ok(conn)) = tokio::time::timeout(RESET_TIMEOUT, reset(conn)).await {
                pool.put_idle(conn);
            }
        });
    }

    /// Pools a clean connection, unless others wait for a place at its backend (it closes,
    /// and the first in line gets its place), its database is being dropped, its backend was
    /// removed from the configuration, or enough connections for its key are idle already.
    fn put_idle(&self, conn: BackendConn) {
        let now = Instant::now();
        let mut idle = locked(&self.idle);
        idle.closing.retain(|(_, until)| *until > now);
        let closing = idle
            .closing
            .iter()
            .any(|(name, _)| *name == conn.key.startup.database);
        let waited_for = self.waiting[conn.key.backend.index()].load(Ordering::Acquire) > 0;
        // Checked under the lock `close_backend` takes after retiring the backend.
        if closing || waited_for || conn.info.is_retired() {
            drop(idle);
            close(conn);
            return;
        }
        let list = idle.conns.entry(conn.key.clone()).or_default();
        if list.len() < self.max_idle.load(Ordering::Relaxed) {
            list.push((conn, now));
        } else {
            drop(idle);
            close(conn);
        }
    }

    /// Closes connections idle for longer than the idle timeout.
    pub fn reap_idle(&self) {
        let now = Instant::now();
        let idle_timeout = self.idle_timeout();
        let mut expired = Vec::new();
        let mut idle = locked(&self.idle);
        for list in idle.conns.values_mut() {
            let keep = list
                .iter()
                .take_while(|(_, since)| now.duration_since(*since) >= idle_timeout)
                .count();
            expired.extend(list.drain(..keep).map(|(conn, _)| conn));
        }
        idle.conns.retain(|_, list| !list.is_empty());
        drop(idle);
        expired.into_iter().for_each(close);
    }

    /// Before `DROP DATABASE` or `ALTER DATABASE ... RENAME` of `database`: closes the idle
    /// connections to it on every backend, and for a while closes those returned instead of
    /// pooling them (a client that just left may still be handing its connection back).
    fn close_database(&self, database: &str) {
        let mut idle = locked(&self.idle);
        idle.closing
            .push((database.to_owned(), Instant::now() + CLOSING_GRACE));
        let closed = idle.take(|key| key.startup.database == database);
        drop(idle);
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

    /// Pooled connections per backend (by index), for the status page and gauges.
    pub fn idle_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.backends.len()];
        for (key, list) in locked(&self.idle).conns.iter() {
            counts[key.backend.index()] += list.len();
        }
        counts
    }

    /// Closes every idle connection (at shutdown).
    pub fn close_idle(&self) {
        let conns = std::mem::take(&mut locked(&self.idle).conns);
        conns
            .into_values()
            .flatten()
            .for_each(|(conn, _)| close(conn));
    }

    /// Applies `[pool]` settings a reload changed. Idle connections beyond a lower `max_idle`
    /// go as they are reaped or reused; a lower `idle_timeout` applies at the next reaping. A
    /// higher `max_server_connections` lets waiting acquires through at once; a lower one takes
    /// the free places away now and the others as connections close (returned connections
    /// are closed meanwhile rather than pooled, and no acquire gets a place before the limit
    /// is met), so connections open over the new limit are never cut.
    pub fn reconfigure(self: &Arc<Self>, config: &pgrepl_config::PoolConfig) {
        self.max_idle.store(config.max_idle, Ordering::Relaxed);
        self.idle_timeout
            .store(crate::health::nanos(config.idle_timeout), Ordering::Relaxed);
        let new = config.max_server_connections;
        let old = self.max_server_connections.swap(new, Ordering::Relaxed);
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
        let closed = locked(&self.idle).take(|key| key.backend == backend);
        closed.into_iter().for_each(close);
    }
}

/// An idle connection the server has closed (or written to unasked) is not reused.
fn is_alive(conn: &BackendConn) -> bool {
    let mut probe = [0u8; 1];
    matches!(conn.rd.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}

/// Runs `DISCARD ALL` and checks the server is idle and error-free afterwards.
async fn reset(mut conn: BackendConn) -> io::Result<BackendConn> {
    let answer = apply::run(&mut conn, "DISCARD ALL").await?;
    if answer.error.is_some() {
        return Err(io::Error::other("reset failed"));
    }
    conn.prepared.clear();
    conn.closes_due.clear();
    conn.settings_seq = 0;
    Ok(conn)
}
