//! A snapshot of the running proxy: what `/status` serves as JSON, `/readyz` and the gauges are
//! derived from, and `pgrepl-proxy status` prints as a table.

use serde::{Deserialize, Serialize};

use crate::backend::BackendId;
use crate::health::format_lsn;
use crate::shared::Shared;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Status {
    pub version: String,
    /// The client listener.
    pub listen: String,
    pub uptime_seconds: f64,
    /// The proxy is shutting down: it accepts no more clients.
    pub shutting_down: bool,
    pub clients: Clients,
    /// The primary first, then the replicas configured now, in the order they were added.
    pub backends: Vec<BackendStatus>,
    #[serde(default)]
    pub causal: CausalStatus,
    /// The node writes go to, and whether it takes them now.
    #[serde(default)]
    pub writer: WriterStatus,
}

/// The writer pointer (`[routing] follow_primary`; without it, always the first node).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct WriterStatus {
    /// None when no node may be the writer (two primaries).
    pub name: Option<String>,
    /// Its timeline when it was chosen or last seen (0: not known).
    pub timeline: u32,
    /// Writers chosen since the proxy started.
    pub epoch: u64,
    /// serving, down, read_only, confirming, conflict, no_candidate or fenced.
    pub state: String,
    /// Following the primary.
    pub follows: bool,
}

/// Causal reads: the mode, and the positions reads wait for.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct CausalStatus {
    /// `[routing] read_your_writes` (sessions may set their own).
    pub mode: String,
    /// `[routing] causal_wait`.
    pub wait_seconds: f64,
    /// A session committed asynchronously: positions cover insert positions.
    pub async_commits: bool,
    /// The highest flush position the proxy has seen on the primary.
    pub primary_flush_lsn: String,
    /// Shared look-ups of the primary's position run, and those that flushed.
    pub position_rounds: u64,
    pub flushes: u64,
    /// By replica, in config order: the replay position as closely as known, and whether
    /// reads wait for it now.
    pub replicas: Vec<ReplayStatus>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ReplayStatus {
    pub name: String,
    pub replay_lsn: String,
    pub reads_waiting: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Clients {
    /// Authenticated clients connected now.
    pub connected: usize,
    /// `[proxy] max_client_connections`.
    pub max: usize,
    /// Connections accepted and not yet authenticated (`[proxy] max_pending_logins`).
    #[serde(default)]
    pub logging_in: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BackendStatus {
    pub name: String,
    /// As configured: "primary" or "replica".
    pub role: String,
    /// host:port.
    pub address: String,
    /// The monitor's last check succeeded.
    pub up: bool,
    /// What the server said at the last successful check (None before one).
    pub in_recovery: Option<bool>,
    /// The server is not what it is configured as (a primary in recovery, a replica not).
    pub role_mismatch: bool,
    /// What the proxy makes of it: "ok", or why it gets no traffic of its kind
    /// ("down", "lagging", "in recovery", "not in recovery").
    pub state: String,
    /// Write position (primary) or replay position (replica), as PostgreSQL prints a pg_lsn.
    pub lsn: Option<String>,
    /// Replicas: primary position minus replay position, both as last sampled.
    pub lag_bytes: Option<u64>,
    /// Replicas: time since the proxy first saw a primary position not yet replayed here.
    pub staleness_seconds: Option<f64>,
    /// Replicas: sessions that read from it.
    pub readers: Option<usize>,
    /// Backend connections leased by sessions now.
    pub active_connections: usize,
    /// Backend connections pooled now.
    pub idle_connections: usize,
    /// Its timeline at the last successful check, if known.
    #[serde(default)]
    pub timeline: Option<u32>,
    /// It takes writes (the writer).
    #[serde(default)]
    pub writer: bool,
    /// Out of recovery on an older timeline than another node's: no reads, no writes.
    #[serde(default)]
    pub fenced: bool,
}

impl Status {
    /// The proxy can serve something: the primary or at least one replica is reachable.
    pub fn ready(&self) -> bool {
        !self.shutting_down && self.backends.iter().any(|b| b.up)
    }

    pub fn primary(&self) -> Option<&BackendStatus> {
        self.backends.iter().find(|b| b.role == "primary")
    }
}

/// The snapshot now.
pub fn snapshot(shared: &Shared) -> Status {
    let health = &shared.health;
    let backends = shared.pool.backends();
    let idle = shared.pool.idle_counts();
    let writer = health.writer().backend;
    let primary = health.view(writer.unwrap_or(BackendId::FIRST));
    let statuses = backends
        .iter()
        .zip(idle)
        .filter(|(info, _)| !info.is_retired())
        .map(|(info, idle)| {
            let is_primary = Some(info.id) == writer;
            let view = health.view(info.id);
            let known_recovery = view.sampled.then_some(view.in_recovery);
            // Following the primary, roles are what the servers say.
            let role_mismatch =
                !health.follows() && known_recovery.is_some_and(|r| r == is_primary);
            let usable = if is_primary {
                health.write_state()
            } else {
                health.readable(info.id)
            };
            let lag_bytes = match (is_primary, primary.lsn, view.lsn) {
                (false, Some(p), Some(r)) => Some(p.saturating_sub(r)),
                _ => None,
            };
            let open = info.open_connections();
            BackendStatus {
                name: info.name.clone(),
                role: if is_primary { "primary" } else { "replica" }.to_owned(),
                address: format!("{}:{}", info.host, info.port),
                up: view.up,
                in_recovery: known_recovery,
                role_mismatch,
                state: usable.map_or_else(|why| why.to_string(), |()| "ok".to_owned()),
                lsn: view.lsn.map(format_lsn),
                lag_bytes,
                staleness_seconds: view.staleness.map(|d| d.as_secs_f64()),
                readers: (!is_primary).then(|| shared.balancer.readers(info.id)),
                active_connections: open.saturating_sub(idle),
                idle_connections: idle,
                timeline: view.timeline,
                writer: is_primary,
                fenced: view.fenced,
            }
        })
        .collect();
    let current = health.writer();
    Status {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        listen: shared.listen.clone(),
        uptime_seconds: shared.started.elapsed().as_secs_f64(),
        shutting_down: shared.shutdown.is_set(),
        clients: Clients {
            connected: shared.clients.count(),
            max: shared.clients.max(),
            logging_in: shared.logins.count(),
        },
        backends: statuses,
        causal: causal_status(shared),
        writer: WriterStatus {
            name: current.backend.map(|b| backends[b.index()].name.clone()),
            timeline: current
                .backend
                .and_then(|b| health.view(b).timeline)
                .unwrap_or(0),
            epoch: current.epoch,
            state: current.state.as_str().to_owned(),
            follows: health.follows(),
        },
    }
}

fn causal_status(shared: &Shared) -> CausalStatus {
    use pgrepl_config::Named;
    use std::sync::atomic::Ordering::Relaxed;
    let health = &shared.health;
    let positions = &health.positions;
    let replicas = shared
        .pool
        .backends()
        .active()
        .filter(|b| Some(b.id) != shared.health.writer().backend);
    let routing = shared.routing.get();
    CausalStatus {
        mode: routing.read_your_writes.as_str().to_owned(),
        wait_seconds: routing.causal_wait.as_secs_f64(),
        async_commits: positions.async_commits(),
        primary_flush_lsn: format_lsn(positions.flushed()),
        position_rounds: positions.rounds_run.load(Relaxed),
        flushes: positions.flushes_run.load(Relaxed),
        replicas: replicas
            .map(|info| {
                let gate = health.replay_gate(info.id);
                ReplayStatus {
                    name: info.name.clone(),
                    replay_lsn: format_lsn(gate.reached()),
                    reads_waiting: gate.has_waiters(),
                }
            })
            .collect(),
    }
}

/// `/readyz`'s body: whether each backend is reachable.
#[derive(Debug, Serialize)]
pub struct Readiness<'a> {
    pub ready: bool,
    pub primary: Option<Reachable<'a>>,
    pub replicas: Vec<Reachable<'a>>,
}

#[derive(Debug, Serialize)]
pub struct Reachable<'a> {
    pub name: &'a str,
    pub reachable: bool,
}

impl Status {
    pub fn readiness(&self) -> Readiness<'_> {
        Readiness {
            ready: self.ready(),
            primary: self.primary().map(reachable),
            replicas: self
                .backends
                .iter()
                .filter(|b| b.role == "replica")
                .map(reachable)
                .collect(),
        }
    }
}

fn reachable(backend: &BackendStatus) -> Reachable<'_> {
    Reachable {
        name: &backend.name,
        reachable: backend.up,
    }
}
