//! The clients connected now, for the admin console: who each is, the server connections it
//! holds, whether it waits for one, what it counted, and a switch that ends its session.
//!
//! The statement path pays nothing for this: a session touches its entry when it takes or
//! gives back a server connection (rare: once per session with session pooling), and copies
//! its counters in with relaxed stores only when it goes to sleep waiting for I/O.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{
    AtomicBool, AtomicU64, Ordering::Acquire, Ordering::Relaxed, Ordering::Release,
};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use futures_util::task::AtomicWaker;

use crate::backend::{BackendConn, BackendInfo};
use crate::telemetry::clock::coarse_wall_micros;

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain data: a panic while holding the lock leaves nothing half-done that matters.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Microseconds since the Unix epoch, never 0 (0 means "not set" in the entries' atomics).
fn now_micros() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// A time kept as [`now_micros`].
pub fn from_micros(micros: u64) -> SystemTime {
    UNIX_EPOCH + std::time::Duration::from_micros(micros)
}

/// What a client (or all clients of a database) counted. Queries are the units the proxy
/// routed (a simple query, or an extended-protocol batch up to Sync).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub queries: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Server connections taken from the pool.
    pub assignments: u64,
    /// Time spent waiting for them (a PAUSE, a full backend, connecting), in microseconds.
    pub wait_micros: u64,
    /// Clients that connected.
    pub connects: u64,
}

impl Counters {
    fn add(&mut self, other: &Counters) {
        self.queries += other.queries;
        self.bytes_in += other.bytes_in;
        self.bytes_out += other.bytes_out;
        self.assignments += other.assignments;
        self.wait_micros += other.wait_micros;
        self.connects += other.connects;
    }

    /// What was counted since `earlier`.
    pub fn since(&self, earlier: &Counters) -> Counters {
        Counters {
            queries: self.queries.saturating_sub(earlier.queries),
            bytes_in: self.bytes_in.saturating_sub(earlier.bytes_in),
            bytes_out: self.bytes_out.saturating_sub(earlier.bytes_out),
            assignments: self.assignments.saturating_sub(earlier.assignments),
            wait_micros: self.wait_micros.saturating_sub(earlier.wait_micros),
            connects: self.connects.saturating_sub(earlier.connects),
        }
    }
}

/// Ends a session from outside: fired once, seen by the session when it next waits.
#[derive(Default)]
pub struct KillSwitch {
    fired: AtomicBool,
    waker: AtomicWaker,
}

impl KillSwitch {
    pub fn fire(&self) {
        self.fired.store(true, Release);
        self.waker.wake();
    }

    pub fn is_fired(&self) -> bool {
        self.fired.load(Relaxed)
    }

    /// Ready once fired. The waker is registered before the second look, so a fire in
    /// between still wakes the task.
    #[inline]
    pub fn poll_fired(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.is_fired() {
            return Poll::Ready(());
        }
        self.waker.register(cx.waker());
        if self.fired.load(std::sync::atomic::Ordering::Acquire) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    pub async fn fired(&self) {
        std::future::poll_fn(|cx| self.poll_fired(cx)).await
    }
}

/// What a client does now, in PgBouncer's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientState {
    /// Holds a server connection.
    Active,
    /// Holds none and waits for none.
    Idle,
    /// Waits to be given a server connection (a PAUSE, a full backend, connecting).
    Waiting,
}

impl ClientState {
    pub fn as_str(self) -> &'static str {
        match self {
            ClientState::Active => "active",
            ClientState::Idle => "idle",
            ClientState::Waiting => "waiting",
        }
    }
}

/// A server connection a client holds.
#[derive(Debug, Clone)]
pub struct ServerLink {
    pub backend: Arc<BackendInfo>,
    /// The server process's id (from its BackendKeyData).
    pub pid: i32,
    pub local: Option<SocketAddr>,
    pub connected: SystemTime,
}

impl ServerLink {
    pub fn of(conn: &BackendConn) -> ServerLink {
        ServerLink {
            backend: conn.info.clone(),
            pid: conn.cancel.pid,
            local: conn.local,
            connected: conn.connected,
        }
    }
}

/// Who a new client is.
#[derive(Debug, Clone)]
pub struct NewClient {
    pub user: String,
    pub database: String,
    pub peer: SocketAddr,
    pub local: Option<SocketAddr>,
    pub application_name: String,
    pub tls: bool,
    /// A session of the admin console, not of a database.
    pub console: bool,
}

/// One connected client.
pub struct ClientEntry {
    /// Unique for the life of the proxy; what `KILL` takes.
    pub id: u64,
    pub who: NewClient,
    pub connected: SystemTime,
    pub kill: KillSwitch,
    /// When it started waiting for a server connection; 0 when it does not wait.
    waiting_since: AtomicU64,
    /// When it last took, gave back or started waiting for a server connection.
    changed: AtomicU64,
    queries: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    assignments: AtomicU64,
    wait_micros: AtomicU64,
    /// By slot (the primary's, the replica's): the server connection it last held there,
    /// kept once given back, so that taking the same one again (as nearly every transaction
    /// in transaction pooling does) takes no lock; `holds` says whether it holds it now.
    servers: Mutex<[Option<ServerLink>; 2]>,
    /// The serial number of the connection of `servers[slot]` (`BackendConn::serial`, never
    /// 0); 0 for none.
    linked: [AtomicU64; 2],
    holds: [AtomicBool; 2],
}

/// Adds to a counter only its session writes: a relaxed load and store, no locked add.
fn bump(counter: &AtomicU64, by: u64) {
    counter.store(counter.load(Relaxed).wrapping_add(by), Relaxed);
}

impl ClientEntry {
    /// The session's own totals so far (queries, bytes from and to the client).
    #[inline]
    pub fn publish(&self, queries: u64, bytes_in: u64, bytes_out: u64) {
        self.queries.store(queries, Relaxed);
        self.bytes_in.store(bytes_in, Relaxed);
        self.bytes_out.store(bytes_out, Relaxed);
    }

    /// It starts waiting for a server connection.
    pub fn waiting(&self) {
        let now = now_micros();
        self.waiting_since.store(now, Relaxed);
        self.changed.store(now, Relaxed);
    }

    /// It holds a connection in `slot` now (whether it had to wait or not), or stopped
    /// waiting without one.
    pub fn waited(&self, slot: usize, got: Option<&BackendConn>) {
        let since = self.waiting_since.swap(0, Relaxed);
        if let Some(conn) = got {
            bump(&self.assignments, 1);
            if since != 0 {
                bump(&self.wait_micros, now_micros().saturating_sub(since));
            }
            self.link(slot, conn.serial, || ServerLink::of(conn));
        }
        self.changed_now();
    }

    /// Shows the connection numbered `serial` as held in `slot`; `link` describes it, made
    /// only when it is not the one last held there. (Only the session writes these; the
    /// admin console reads `holds` under the lock, after the link it stands for.)
    fn link(&self, slot: usize, serial: u64, link: impl FnOnce() -> ServerLink) {
        if self.linked[slot].load(Relaxed) != serial {
            let mut servers = locked(&self.servers);
            servers[slot] = Some(link());
            self.linked[slot].store(serial, Relaxed);
        }
        self.holds[slot].store(true, Release);
    }

    /// It gave back the connection in `slot`.
    pub fn released(&self, slot: usize) {
        if self.holds[slot].swap(false, Release) {
            self.changed_now();
        }
    }

    /// Notes a change now by the coarse wall clock: it happens on every lease and give-back
    /// in transaction pooling.
    fn changed_now(&self) {
        self.changed.store(coarse_wall_micros(), Relaxed);
    }

    pub fn state(&self) -> ClientState {
        if self.waiting_since.load(Relaxed) != 0 {
            ClientState::Waiting
        } else if self.holds.iter().any(|holds| holds.load(Acquire)) {
            ClientState::Active
        } else {
            ClientState::Idle
        }
    }

    /// How long it has waited for a server connection, if it waits.
    pub fn waited_for(&self) -> Option<std::time::Duration> {
        match self.waiting_since.load(Relaxed) {
            0 => None,
            since => Some(std::time::Duration::from_micros(
                now_micros().saturating_sub(since),
            )),
        }
    }

    /// When it last took, gave back or started waiting for a server connection (its connect
    /// time before that, and never before it: the coarse clock of a change can be up to a
    /// tick behind the precise one of the connect).
    pub fn last_change(&self) -> SystemTime {
        match self.changed.load(Relaxed) {
            0 => self.connected,
            at => from_micros(at).max(self.connected),
        }
    }

    /// The server connections it holds.
    pub fn servers(&self) -> Vec<ServerLink> {
        let servers = locked(&self.servers);
        let held = servers.iter().zip(&self.holds);
        held.filter(|(_, holds)| holds.load(Acquire))
            .filter_map(|(link, _)| link.clone())
            .collect()
    }

    pub fn counters(&self) -> Counters {
        Counters {
            queries: self.queries.load(Relaxed),
            bytes_in: self.bytes_in.load(Relaxed),
            bytes_out: self.bytes_out.load(Relaxed),
            assignments: self.assignments.load(Relaxed),
            wait_micros: self.wait_micros.load(Relaxed),
            connects: 1,
        }
    }
}

/// Every connected client by id, and what clients that left counted, by database.
#[derive(Default)]
pub struct ClientRegistry {
    next_id: AtomicU64,
    live: Mutex<BTreeMap<u64, Arc<ClientEntry>>>,
    ended: Mutex<HashMap<String, Counters>>,
}

impl ClientRegistry {
    /// Lists a client until the returned guard is dropped.
    pub fn register(self: &Arc<Self>, who: NewClient) -> Listed {
        let id = self.next_id.fetch_add(1, Relaxed) + 1;
        let entry = Arc::new(ClientEntry {
            id,
            who,
            connected: SystemTime::now(),
            kill: KillSwitch::default(),
            waiting_since: AtomicU64::new(0),
            changed: AtomicU64::new(0),
            queries: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            assignments: AtomicU64::new(0),
            wait_micros: AtomicU64::new(0),
            servers: Mutex::default(),
            linked: Default::default(),
            holds: Default::default(),
        });
        locked(&self.live).insert(id, entry.clone());
        Listed {
            registry: self.clone(),
            entry,
        }
    }

    pub fn get(&self, id: u64) -> Option<Arc<ClientEntry>> {
        locked(&self.live).get(&id).cloned()
    }

    /// Every connected client, by id.
    pub fn clients(&self) -> Vec<Arc<ClientEntry>> {
        locked(&self.live).values().cloned().collect()
    }

    /// What every client counted, connected or gone, by database.
    /// Both lists are read under the lock of `ended`, which a leaving client holds while it
    /// moves from one to the other: it is counted once, and totals never go back.
    pub fn totals(&self) -> BTreeMap<String, Counters> {
        let ended = locked(&self.ended);
        let mut totals: BTreeMap<String, Counters> =
            ended.iter().map(|(db, c)| (db.clone(), *c)).collect();
        for entry in locked(&self.live).values() {
            totals
                .entry(entry.who.database.clone())
                .or_default()
                .add(&entry.counters());
        }
        totals
    }

    fn unlist(&self, entry: &ClientEntry) {
        let mut ended = locked(&self.ended);
        ended
            .entry(entry.who.database.clone())
            .or_default()
            .add(&entry.counters());
        locked(&self.live).remove(&entry.id);
    }
}

/// A client's place in the registry, given up when dropped.
pub struct Listed {
    registry: Arc<ClientRegistry>,
    entry: Arc<ClientEntry>,
}

impl Listed {
    pub fn entry(&self) -> &Arc<ClientEntry> {
        &self.entry
    }
}

impl Drop for Listed {
    fn drop(&mut self) {
        self.registry.unlist(&self.entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(database: &str) -> NewClient {
        NewClient {
            user: "app".into(),
            database: database.into(),
            peer: "127.0.0.1:5000".parse().unwrap(),
            local: None,
            application_name: String::new(),
            tls: false,
            console: false,
        }
    }

    #[test]
    fn totals_keep_what_clients_that_left_counted() {
        let registry = Arc::new(ClientRegistry::default());
        let a = registry.register(client("appdb"));
        let b = registry.register(client("appdb"));
        let c = registry.register(client("other"));
        assert_ne!(a.entry().id, b.entry().id);
        a.entry().publish(3, 100, 200);
        b.entry().publish(1, 10, 20);
        c.entry().publish(5, 0, 0);
        let before = registry.totals()["appdb"];
        assert_eq!(
            (before.queries, before.bytes_in, before.connects),
            (4, 110, 2)
        );
        drop(a);
        assert!(registry.get(1).is_none());
        assert_eq!(
            registry.totals()["appdb"],
            before,
            "unchanged when a client leaves"
        );
        assert_eq!(registry.clients().len(), 2);
        assert_eq!(registry.totals()["other"].queries, 5);
    }

    #[test]
    fn state_follows_waits_and_links() {
        let registry = Arc::new(ClientRegistry::default());
        let listed = registry.register(client("appdb"));
        let entry = listed.entry();
        assert_eq!(entry.state(), ClientState::Idle);
        entry.waiting();
        assert_eq!(entry.state(), ClientState::Waiting);
        assert!(entry.waited_for().is_some());
        entry.waited(0, None);
        assert_eq!(entry.state(), ClientState::Idle);
        assert_eq!(
            entry.counters().assignments,
            0,
            "no connection, no assignment"
        );
        entry.released(0);
        assert_eq!(entry.state(), ClientState::Idle);
    }

    #[test]
    fn a_server_link_is_made_once_per_connection_and_shown_while_held() {
        let registry = Arc::new(ClientRegistry::default());
        let listed = registry.register(client("appdb"));
        let entry = listed.entry();
        let config = pgrepl_config::BackendConfig {
            name: "db02".to_owned(),
            host: "127.0.0.1".to_owned(),
            port: 5432,
            weight: 1,
            promotable: true,
        };
        let info = Arc::new(BackendInfo::new(
            crate::backend::BackendId::FIRST,
            &config,
            "db01",
            None,
        ));
        let link = |pid| ServerLink {
            backend: info.clone(),
            pid,
            local: None,
            connected: SystemTime::UNIX_EPOCH,
        };
        let pids = |entry: &ClientEntry| entry.servers().iter().map(|l| l.pid).collect::<Vec<_>>();
        entry.link(1, 1, || link(7));
        assert_eq!(pids(entry), [7]);
        assert_eq!(entry.state(), ClientState::Active);
        entry.released(1);
        assert_eq!(pids(entry), Vec::<i32>::new(), "given back: not shown");
        assert_eq!(entry.state(), ClientState::Idle);
        // The same connection again: the link kept is shown, none made.
        entry.link(1, 1, || panic!("made again"));
        assert_eq!(pids(entry), [7]);
        entry.released(1);
        // Another connection: a new link.
        entry.link(1, 2, || link(8));
        assert_eq!(pids(entry), [8]);
        entry.released(1);
        entry.link(1, 3, || link(9));
        entry.link(0, 3, || link(10));
        assert_eq!(pids(entry), [10, 9], "both slots, the primary's first");
    }

    #[test]
    fn a_fired_switch_is_seen_and_wakes() {
        let switch = Arc::new(KillSwitch::default());
        let waiter = switch.clone();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let task = tokio::spawn(async move { waiter.fired().await });
            tokio::task::yield_now().await;
            switch.fire();
            tokio::time::timeout(std::time::Duration::from_secs(5), task)
                .await
                .expect("woken")
                .unwrap();
            assert!(switch.is_fired());
        });
    }
}
