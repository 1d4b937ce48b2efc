//! Online reload: SIGHUP, or the admin console's RELOAD, reads the configuration again (the
//! file the proxy was started with and the `PGREPL_*` environment) and applies what changed
//! without dropping a client: users, `[routing]`, `[pool]`, the replica list, `[log] level`
//! and the client limits. Keys that need a restart keep their values in force and are named
//! in a warning. A configuration that does not load or validate changes nothing.
//!
//! Everything that can fail is checked before anything is applied, so a reload applies
//! whole or not at all. One reload runs at a time.

mod plan;

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use pgrepl_config::Config;

use crate::backend::{BackendId, BackendInfo, Backends};
use crate::health::Monitor;
use crate::logging::{self, LogLevel};
use crate::shared::Shared;
use crate::telemetry::Timing;
use plan::{Plan, ReplicaChanges, Running};

/// Reads the configuration anew, as the proxy was started: the same file, the environment,
/// and the command line's choices over them.
pub type Loader = Box<dyn Fn() -> anyhow::Result<Config> + Send + Sync>;

/// What a reload did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadReport {
    /// What changed and applies now: keys (`[routing] read_your_writes`), users
    /// (`user alice added`) and replicas (`replica db03 added`).
    pub applied: Vec<String>,
    /// Keys the configuration changes that need a restart: their values in force are kept.
    pub needs_restart: Vec<&'static str>,
}

impl fmt::Display for ReloadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.applied.is_empty() {
            f.write_str("nothing changed")?;
        } else {
            write!(f, "applied: {}", self.applied.join(", "))?;
        }
        if !self.needs_restart.is_empty() {
            write!(
                f,
                "; kept until a restart: {}",
                self.needs_restart.join(", ")
            )?;
        }
        Ok(())
    }
}

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The configuration does not load or validate.
    #[error("{0}")]
    Config(String),
    /// Not enough backend ids are left for the replicas it adds.
    #[error(
        "[[replicas]]: cannot add {adding} replica(s): {room} more can be added to this proxy \
         process (a removed replica's number is not reused); restart it to add more"
    )]
    Full { adding: usize, room: usize },
    /// It removes (or moves, or makes not promotable) the node that is the writer now.
    #[error(
        "[[nodes]]: {0} is the writer now and cannot be removed or changed by a reload; \
         switch over first"
    )]
    RemovesWriter(String),
    /// Preparing the users' keys failed.
    #[error("[[users]]: {0}")]
    Users(String),
}

/// Applies a changed configuration to a running proxy (see the module documentation).
pub struct Reloader {
    shared: Arc<Shared>,
    monitor: Arc<Monitor>,
    load: Loader,
    log: LogLevel,
    /// How the statements of a replica added later are timed (`[log] slow_statement` and
    /// `[metrics] enabled` need a restart).
    timing: Option<Timing>,
    /// The configuration in force; held for the whole of a reload.
    in_force: tokio::sync::Mutex<Config>,
}

impl Reloader {
    pub(crate) fn new(
        shared: Arc<Shared>,
        monitor: Arc<Monitor>,
        in_force: Config,
        load: Loader,
        log: LogLevel,
        timing: Option<Timing>,
    ) -> Reloader {
        Reloader {
            shared,
            monitor,
            load,
            log,
            timing,
            in_force: tokio::sync::Mutex::new(in_force),
        }
    }

    /// Reads the configuration again and applies it; logs and counts the outcome.
    pub async fn reload(&self) -> Result<ReloadReport, ReloadError> {
        let mut in_force = self.in_force.lock().await;
        match self.reload_over(&mut in_force).await {
            Ok(report) => {
                self.shared.reload_meters.applied();
                tracing::info!(%report, "configuration reloaded");
                if !report.needs_restart.is_empty() {
                    tracing::warn!(
                        keys = %report.needs_restart.join(", "),
                        "configuration reload: these changes need a restart; the values in force are kept"
                    );
                }
                Ok(report)
            }
            Err(error) => {
                self.shared.reload_meters.rejected();
                tracing::error!(
                    %error,
                    "configuration reload rejected; the configuration in force is kept"
                );
                Err(error)
            }
        }
    }

    async fn reload_over(&self, in_force: &mut Config) -> Result<ReloadReport, ReloadError> {
        let loaded = (self.load)().map_err(|e| ReloadError::Config(format!("{e:#}")))?;
        let login = self.monitor.login();
        let plan = Plan::new(in_force, loaded, login, !self.log.follows_config());
        // What may fail, before anything changes.
        let filter = plan
            .changes("[log] level")
            .then(|| logging::level_filter(&plan.config.log.level))
            .transpose()
            .map_err(|e| ReloadError::Config(format!("{e:#}")))?;
        let backends = self.shared.pool.backends();
        let running: Vec<Running<'_>> = backends
            .active()
            .filter(|b| !b.id.is_first())
            .map(|b| Running {
                id: b.id,
                name: &b.name,
                host: &b.host,
                port: b.port,
                promotable: b.promotable,
            })
            .collect();
        let replicas = ReplicaChanges::between(&running, &plan.config.replicas);
        let writer = self.shared.health.writer().backend;
        if let Some(writer) = writer.filter(|w| replicas.retired.contains(w)) {
            return Err(ReloadError::RemovesWriter(
                backends[writer.index()].name.clone(),
            ));
        }
        if replicas.added.len() > backends.room() {
            return Err(ReloadError::Full {
                adding: replicas.added.len(),
                room: backends.room(),
            });
        }
        let users = if plan.users.is_empty() {
            None
        } else {
            Some(self.users(&plan).await?)
        };
        // Nothing fails from here on.
        let mut applied: Vec<String> = plan.keys.iter().map(|k| k.to_string()).collect();
        if let Some(users) = users {
            self.shared.users.publish(users);
            describe_users(&plan, &mut applied);
        }
        self.apply_settings(in_force, &plan);
        if let Some(filter) = filter {
            if let Err(e) = self.log.apply(filter) {
                tracing::warn!(error = %e, "[log] level: cannot change the log filter");
            }
        }
        self.apply_replicas(in_force, &plan, replicas, backends, &mut applied)
            .await;
        let report = ReloadReport {
            applied,
            needs_restart: plan.needs_restart,
        };
        *self
            .shared
            .config
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Arc::new(plan.config.clone());
        *in_force = plan.config;
        Ok(report)
    }

    /// The reloaded users, their keys salted off the runtime's thread (PBKDF2 is slow on
    /// purpose).
    async fn users(&self, plan: &Plan) -> Result<crate::client::auth::Users, ReloadError> {
        let before = self.shared.users.get();
        let list = plan.config.users.clone();
        tokio::task::spawn_blocking(move || before.reloaded(&list))
            .await
            .map_err(|e| ReloadError::Users(e.to_string()))
    }

    /// `[routing]`, `[pool]` and the client limits.
    fn apply_settings(&self, in_force: &Config, plan: &Plan) {
        let (shared, config) = (&self.shared, &plan.config);
        if plan.changes("[proxy] max_client_connections") {
            shared.clients.set_max(config.proxy.max_client_connections);
        }
        if plan.changes("[proxy] max_message_size") {
            shared
                .max_message_size
                .store(config.proxy.max_message_size, Ordering::Relaxed);
        }
        if plan.changes("[routing] max_replica_lag") {
            shared
                .health
                .set_max_replica_lag(config.routing.max_replica_lag);
        }
        if plan.changes_session_routing() {
            let settings = shared.routing.get().reloaded(in_force, config);
            shared.routing.publish(settings);
        }
        if plan.changes_pool() {
            shared.pool.reconfigure(&config.pool);
        }
    }

    /// Adds the replicas configured anew (each watched by the monitor, unusable until its
    /// first sample), gives the balancer the new list and weights, then retires the replicas
    /// no longer configured: no new sessions pick them, their monitor stops, sessions reading
    /// from them move at their next read, and their connections close as they come back.
    async fn apply_replicas(
        &self,
        in_force: &Config,
        plan: &Plan,
        replicas: ReplicaChanges<'_>,
        backends: &Backends,
        applied: &mut Vec<String>,
    ) {
        let shared = &self.shared;
        let mut members = replicas.kept.clone();
        if crate::server::reads_from(&plan.config, BackendId::FIRST) {
            members.push((BackendId::FIRST, plan.config.primary.weight));
        }
        for config in &replicas.added {
            let id = backends
                .add(|id| {
                    BackendInfo::new(id, config, &plan.config.primary.name, self.timing.clone())
                })
                .expect("room for the added replicas was checked under the reload lock");
            shared.health.admit(id, &config.name, config.promotable);
            if let Err(e) = self.monitor.watch(&backends[id.index()]) {
                tracing::error!(
                    backend = %backends[id.index()], error = %e,
                    "cannot monitor an added replica: it gets no reads"
                );
            }
            members.push((id, config.weight));
        }
        shared
            .balancer
            .configure(plan.config.routing.balance, &members);
        for &id in &replicas.retired {
            let info = &backends[id.index()];
            info.retire();
            self.monitor.unwatch(id).await;
            shared.health.retire(id);
            shared.pool.close_backend(id);
            tracing::info!(
                backend = %info,
                "replica removed: sessions reading from it move at their next read"
            );
        }
        let retired: Vec<&BackendInfo> = replicas
            .retired
            .iter()
            .map(|id| &*backends[id.index()])
            .collect();
        for config in &replicas.added {
            let at = format!("{}:{}", config.host, config.port);
            if retired.iter().any(|b| b.name == config.name) {
                applied.push(format!("replica {} moved to {at}", config.name));
            } else {
                applied.push(format!("replica {} added ({at})", config.name));
            }
        }
        for info in retired {
            if !replicas.added.iter().any(|b| b.name == info.name) {
                applied.push(format!("replica {} removed", info.name));
            }
        }
        for (id, weight) in &replicas.kept {
            let name = &backends[id.index()].name;
            let before = in_force.replicas.iter().find(|b| b.name == *name);
            if let Some(before) = before.filter(|b| b.weight != *weight) {
                applied.push(format!(
                    "replica {name} weight {} -> {weight}",
                    before.weight
                ));
            }
        }
    }
}

fn describe_users(plan: &Plan, applied: &mut Vec<String>) {
    let users = &plan.users;
    let lists = [
        (&users.added, "added"),
        (&users.removed, "removed"),
        (&users.changed, "changed"),
    ];
    for (names, what) in lists {
        applied.extend(names.iter().map(|name| format!("user {name} {what}")));
    }
}
