//! The admin console's `SHOW` answers, built from one look at the registry of clients, the
//! pool's idle connections, the pause gate and the monitor. Columns keep PgBouncer's names
//! and order; those with no meaning here hold 0, an empty string or NULL, as PgBouncer shows
//! what it does not know (the README lists them).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use pgrepl_config::Config;

use super::result::{boolean, flag, num, text, time, Cell, ResultSet, Type};
use crate::backend::{IdleServer, Paused};
use crate::clients::{ClientEntry, ClientState};
use crate::route::Reason;
use crate::shared::Shared;
use crate::telemetry::status::snapshot;
use crate::telemetry::tally::Totals;
use pgrepl_config::Named;

/// What the console knows at one moment.
pub struct View {
    clients: Vec<Arc<ClientEntry>>,
    idle: Vec<IdleServer>,
    paused: Paused,
    config: Arc<Config>,
}

impl View {
    pub fn now(shared: &Shared) -> View {
        View {
            clients: shared.registry.clients(),
            idle: shared.pool.idle_snapshot(),
            paused: shared.pause.paused(),
            config: shared.config(),
        }
    }

    /// Clients of databases (not of the console).
    fn database_clients(&self) -> impl Iterator<Item = &Arc<ClientEntry>> {
        self.clients.iter().filter(|c| !c.who.console)
    }

    /// Every database the proxy knows of now: used by a client, pooled, or paused.
    fn databases(&self) -> BTreeSet<&str> {
        self.database_clients()
            .map(|c| c.who.database.as_str())
            .chain(self.idle.iter().map(|s| s.key.startup.database.as_str()))
            .chain(self.paused.databases.iter().map(String::as_str))
            .collect()
    }
}

/// Server connections held by a client of `database` (all when None): what `PAUSE` waits for.
pub fn servers_in_use(shared: &Shared, database: Option<&str>) -> usize {
    shared
        .registry
        .clients()
        .iter()
        .filter(|c| !c.who.console && database.is_none_or(|db| c.who.database == db))
        .map(|c| c.servers().len())
        .sum()
}

/// One line of `SHOW POOLS`.
#[derive(Default)]
struct PoolLine {
    cl_active: usize,
    cl_waiting: usize,
    sv_active: usize,
    sv_idle: usize,
    maxwait: Duration,
}

/// `SHOW POOLS`: one line per (database, user), the console's own clients included.
pub fn pools(view: &View) -> ResultSet {
    let mut lines: BTreeMap<(&str, &str), PoolLine> = BTreeMap::new();
    for client in &view.clients {
        let line = lines
            .entry((&client.who.database, &client.who.user))
            .or_default();
        match client.state() {
            ClientState::Waiting => {
                line.cl_waiting += 1;
                line.maxwait = line.maxwait.max(client.waited_for().unwrap_or_default());
            }
            ClientState::Active | ClientState::Idle => line.cl_active += 1,
        }
        line.sv_active += client.servers().len();
    }
    for server in &view.idle {
        let startup = &server.key.startup;
        lines
            .entry((&startup.database, &startup.user))
            .or_default()
            .sv_idle += 1;
    }
    let int = Type::Int4;
    let mut set = ResultSet::new(&[
        ("database", Type::Text),
        ("user", Type::Text),
        ("cl_active", int),
        ("cl_waiting", int),
        ("cl_active_cancel_req", int),
        ("cl_waiting_cancel_req", int),
        ("sv_active", int),
        ("sv_active_cancel", int),
        ("sv_being_canceled", int),
        ("sv_idle", int),
        ("sv_used", int),
        ("sv_tested", int),
        ("sv_login", int),
        ("maxwait", int),
        ("maxwait_us", int),
        ("pool_mode", Type::Text),
        ("load_balance_hosts", Type::Text),
    ]);
    for ((database, user), line) in lines {
        let mode = view
            .config
            .pool
            .settings_for(Some(user), Some(database))
            .mode;
        set.row(vec![
            text(database),
            text(user),
            num(line.cl_active),
            num(line.cl_waiting),
            num(0),
            num(0),
            num(line.sv_active),
            num(0),
            num(0),
            num(line.sv_idle),
            num(0),
            num(0),
            num(0),
            num(line.maxwait.as_secs()),
            num(line.maxwait.subsec_micros()),
            text(mode.as_str()),
            None,
        ]);
    }
    set
}

/// One line of `SHOW CLIENTS` or `SHOW SERVERS`.
struct Socket<'a> {
    kind: &'static str,
    user: &'a str,
    database: &'a str,
    state: &'static str,
    addr: String,
    port: u16,
    local: Option<SocketAddr>,
    connect_time: SystemTime,
    request_time: SystemTime,
    wait: Duration,
    /// The other end: the ids of a client's server connections (space-separated), the id of
    /// a server connection's client.
    link: String,
    remote_pid: i32,
    tls: bool,
    application_name: &'a str,
    id: u64,
}

fn sockets(lines: Vec<Socket<'_>>) -> ResultSet {
    let int = Type::Int4;
    let mut set = ResultSet::new(&[
        ("type", Type::Text),
        ("user", Type::Text),
        ("database", Type::Text),
        ("replication", Type::Text),
        ("state", Type::Text),
        ("addr", Type::Text),
        ("port", int),
        ("local_addr", Type::Text),
        ("local_port", int),
        ("connect_time", Type::Timestamptz),
        ("request_time", Type::Timestamptz),
        ("wait", int),
        ("wait_us", int),
        ("close_needed", int),
        ("ptr", Type::Text),
        ("link", Type::Text),
        ("remote_pid", int),
        ("tls", Type::Text),
        ("application_name", Type::Text),
        ("prepared_statements", int),
        ("id", Type::Int8),
    ]);
    for s in lines {
        set.row(vec![
            text(s.kind),
            text(s.user),
            text(s.database),
            text("none"),
            text(s.state),
            text(s.addr),
            num(s.port),
            text(s.local.map(|a| a.ip().to_string()).unwrap_or_default()),
            num(s.local.map_or(0, |a| a.port())),
            time(s.connect_time),
            time(s.request_time),
            num(s.wait.as_secs()),
            num(s.wait.subsec_micros()),
            num(0),
            text(""),
            text(s.link),
            num(s.remote_pid),
            text(if s.tls { "TLS" } else { "" }),
            text(s.application_name),
            num(0),
            num(s.id),
        ]);
    }
    set
}

/// `SHOW CLIENTS`: every client, the console's included.
pub fn clients(view: &View) -> ResultSet {
    let lines = view
        .clients
        .iter()
        .map(|c| Socket {
            kind: "C",
            user: &c.who.user,
            database: &c.who.database,
            state: c.state().as_str(),
            addr: c.who.peer.ip().to_string(),
            port: c.who.peer.port(),
            local: c.who.local,
            connect_time: c.connected,
            request_time: c.last_change(),
            wait: c.waited_for().unwrap_or_default(),
            link: c
                .servers()
                .iter()
                .map(|s| s.pid.to_string())
                .collect::<Vec<_>>()
                .join(" "),
            remote_pid: 0,
            tls: c.who.tls,
            application_name: &c.who.application_name,
            id: c.id,
        })
        .collect();
    sockets(lines)
}

/// `SHOW SERVERS`: the server connections clients hold (active), then the pooled ones (idle).
/// Their id is the server process's id.
pub fn servers(view: &View) -> ResultSet {
    let mut lines = Vec::new();
    for client in view.database_clients() {
        for server in client.servers() {
            lines.push(Socket {
                kind: "S",
                user: &client.who.user,
                database: &client.who.database,
                state: "active",
                addr: server.backend.host.clone(),
                port: server.backend.port,
                local: server.local,
                connect_time: server.connected,
                request_time: client.last_change(),
                wait: Duration::ZERO,
                link: client.id.to_string(),
                remote_pid: server.pid,
                tls: false,
                application_name: &client.who.application_name,
                id: server.pid as u64,
            });
        }
    }
    for server in &view.idle {
        lines.push(Socket {
            kind: "S",
            user: &server.key.startup.user,
            database: &server.key.startup.database,
            state: "idle",
            addr: server.backend.host.clone(),
            port: server.backend.port,
            local: server.local,
            connect_time: server.connected,
            request_time: server.since.wall_time(),
            wait: Duration::ZERO,
            link: String::new(),
            remote_pid: server.pid,
            tls: false,
            application_name: "",
            id: server.pid as u64,
        });
    }
    sockets(lines)
}

/// `SHOW DATABASES`: the console's database, then every database in use, paused or pooled,
/// with the primary's address (reads go to replicas too: `SHOW BACKENDS`).
pub fn databases(view: &View, shared: &Shared) -> ResultSet {
    let int = Type::Int4;
    let mut set = ResultSet::new(&[
        ("name", Type::Text),
        ("host", Type::Text),
        ("port", int),
        ("database", Type::Text),
        ("force_user", Type::Text),
        ("pool_size", int),
        ("min_pool_size", int),
        ("reserve_pool_size", int),
        ("server_lifetime", int),
        ("pool_mode", Type::Text),
        ("load_balance_hosts", Type::Text),
        ("max_connections", int),
        ("current_connections", int),
        ("max_client_connections", int),
        ("current_client_connections", int),
        ("paused", int),
        ("disabled", int),
    ]);
    let console = &view.config.admin.database;
    let listen_port = shared
        .listen
        .rsplit(':')
        .next()
        .and_then(|p| p.parse::<u16>().ok());
    let consoles = view.clients.iter().filter(|c| c.who.console).count();
    let primary = &shared.pool.backends()[0];
    let pool = &view.config.pool;
    let mut row = |name: &str, host: Cell, port: Cell, servers: usize, clients: usize| {
        // The database's own settings: a user's override shows in SHOW POOLS and SHOW USERS.
        let settings = pool.settings_for(None, Some(name));
        set.row(vec![
            text(name),
            host,
            port,
            text(name),
            None,
            num(settings.pool_size(pool.max_server_connections)),
            num(settings.min_pool_size),
            num(settings.reserve_pool_size),
            num(pool.server_lifetime.as_secs()),
            text(settings.mode.as_str()),
            None,
            num(0),
            num(servers),
            num(0),
            num(clients),
            flag(view.paused.covers(name)),
            num(0),
        ]);
    };
    row(console, None, listen_port.and_then(num), 0, consoles);
    for database in view.databases() {
        let clients = view
            .database_clients()
            .filter(|c| c.who.database == database);
        let (clients, held) =
            clients.fold((0, 0), |(n, held), c| (n + 1, held + c.servers().len()));
        let idle = view
            .idle
            .iter()
            .filter(|s| s.key.startup.database == database)
            .count();
        row(
            database,
            text(&primary.host),
            num(primary.port),
            held + idle,
            clients,
        );
    }
    set
}

/// `SHOW LISTS`: counts, one per row.
pub fn lists(view: &View, shared: &Shared) -> ResultSet {
    let pools = pools(view).rows().len();
    let used_clients = view.clients.len();
    let used_servers: usize = shared
        .pool
        .backends()
        .iter()
        .map(|b| b.open_connections())
        .sum();
    let mut set = ResultSet::new(&[("list", Type::Text), ("items", Type::Int4)]);
    for (list, items) in [
        ("databases", view.databases().len() + 1),
        ("users", view.config.users.len()),
        ("peers", 0),
        ("pools", pools),
        ("peer_pools", 0),
        ("free_clients", 0),
        ("used_clients", used_clients),
        (
            "login_clients",
            shared.clients.count().saturating_sub(used_clients),
        ),
        ("free_servers", 0),
        ("used_servers", used_servers),
        ("dns_names", 0),
        ("dns_zones", 0),
        ("dns_queries", 0),
        ("dns_pending", 0),
    ] {
        set.row(vec![text(list), num(items)]);
    }
    set
}

/// `SHOW USERS`: every `[[users]]` entry, with what its `[pool.users.<name>]` sets (empty or
/// NULL: nothing, as PgBouncer shows a user with no settings of its own); the proxy has no
/// per-user connection limits (0: none).
pub fn users(view: &View) -> ResultSet {
    let int = Type::Int4;
    let mut set = ResultSet::new(&[
        ("name", Type::Text),
        ("pool_size", Type::Text),
        ("reserve_pool_size", Type::Text),
        ("pool_mode", Type::Text),
        ("max_user_connections", int),
        ("current_connections", int),
        ("max_user_client_connections", int),
        ("current_client_connections", int),
    ]);
    for user in &view.config.users {
        let name = user.name.as_str();
        let clients = view.clients.iter().filter(|c| c.who.user == name);
        let held: usize = clients.clone().map(|c| c.servers().len()).sum();
        let idle = view
            .idle
            .iter()
            .filter(|s| s.key.startup.user == name)
            .count();
        let own = view
            .config
            .pool
            .users
            .get(name)
            .copied()
            .unwrap_or_default();
        let size = |size: Option<usize>| text(size.map(|n| n.to_string()).unwrap_or_default());
        set.row(vec![
            text(name),
            size(own.default_pool_size),
            size(own.reserve_pool_size),
            own.mode.and_then(|mode| text(mode.as_str())),
            num(0),
            num(held + idle),
            num(0),
            num(clients.count()),
        ]);
    }
    set
}

/// `SHOW STATE`: whether the proxy runs, is paused as a whole, or suspended (never).
pub fn state(view: &View) -> ResultSet {
    let mut set = ResultSet::new(&[("key", Type::Text), ("value", Type::Text)]);
    let yes = |on: bool| text(if on { "yes" } else { "no" });
    set.row(vec![text("active"), yes(!view.paused.all)]);
    set.row(vec![text("paused"), yes(view.paused.all)]);
    set.row(vec![text("suspended"), yes(false)]);
    set
}

/// `SHOW CONFIG`: every setting (`section.key`), its default, and whether a reload may
/// change it; then PgBouncer's names for the two settings its exporter reads.
pub fn config(view: &View) -> ResultSet {
    let mut set = ResultSet::new(&[
        ("key", Type::Text),
        ("value", Type::Text),
        ("default", Type::Text),
        ("changeable", Type::Text),
    ]);
    let defaults = Config::defaults().settings();
    let default_of = |key: &str| {
        defaults
            .iter()
            .find(|s| s.key == key)
            .map(|s| s.value.clone())
            .unwrap_or_default()
    };
    for setting in view.config.settings() {
        let default = default_of(&setting.key);
        set.row(vec![
            text(setting.key),
            text(setting.value),
            text(default),
            text("no"),
        ]);
    }
    let max_clients = view.config.proxy.max_client_connections.to_string();
    let default_max = default_of("proxy.max_client_connections");
    set.row(vec![
        text("max_client_conn"),
        text(max_clients),
        text(default_max),
        text("no"),
    ]);
    set.row(vec![
        text("max_user_connections"),
        text("0"),
        text("0"),
        text("no"),
    ]);
    set
}

/// `SHOW VERSION`.
pub fn version() -> ResultSet {
    let mut set = ResultSet::new(&[("version", Type::Text)]);
    set.row(vec![text(format!(
        "pgrepl-proxy {}",
        env!("CARGO_PKG_VERSION")
    ))]);
    set
}

/// `SHOW BACKENDS` (this proxy's own): each server as the monitor sees it, as `/status`
/// reports it.
pub fn backends(shared: &Shared) -> ResultSet {
    let int = Type::Int4;
    let mut set = ResultSet::new(&[
        ("name", Type::Text),
        ("role", Type::Text),
        ("host", Type::Text),
        ("port", int),
        ("state", Type::Text),
        ("up", Type::Bool),
        ("in_recovery", Type::Bool),
        ("role_mismatch", Type::Bool),
        ("lsn", Type::Text),
        ("lag_bytes", Type::Int8),
        ("staleness_seconds", Type::Numeric),
        ("readers", int),
        ("active_connections", int),
        ("idle_connections", int),
        ("timeline", Type::Int8),
        ("writer", Type::Bool),
        ("fenced", Type::Bool),
    ]);
    let status = snapshot(shared);
    for (backend, info) in status.backends.iter().zip(shared.pool.backends().active()) {
        set.row(vec![
            text(&backend.name),
            text(&backend.role),
            text(&info.host),
            num(info.port),
            text(&backend.state),
            boolean(backend.up),
            backend.in_recovery.and_then(boolean),
            boolean(backend.role_mismatch),
            backend.lsn.clone(),
            backend.lag_bytes.and_then(num),
            backend
                .staleness_seconds
                .and_then(|s| num(format!("{s:.3}"))),
            backend.readers.and_then(num),
            num(backend.active_connections),
            num(backend.idle_connections),
            backend.timeline.and_then(num),
            boolean(backend.writer),
            boolean(backend.fenced),
        ]);
    }
    set
}

/// `SHOW ROUTES` (this proxy's own): statements routed since start by backend and reason,
/// the `pgrepl_queries_total` counter; reasons with none are left out.
pub fn routes(shared: &Shared) -> ResultSet {
    let mut set = ResultSet::new(&[
        ("backend", Type::Text),
        ("role", Type::Text),
        ("reason", Type::Text),
        ("queries", Type::Numeric),
    ]);
    let totals = Totals::sum(shared.tallies.iter().map(|t| &**t));
    let writer = shared.health.writer().backend;
    for info in shared.pool.backends().active() {
        let role = if Some(info.id) == writer {
            "primary"
        } else {
            "replica"
        };
        for reason in Reason::ALL {
            let queries = totals.queries(info.id, reason);
            if queries > 0 {
                set.row(vec![
                    text(&info.name),
                    text(role),
                    text(reason.as_str()),
                    num(queries),
                ]);
            }
        }
    }
    set
}
