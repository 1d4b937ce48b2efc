//! The monitor: one task per backend, sampling it every `[health] interval` and publishing
//! the results into `Health`. A nudge brings the next sample forward, and a replica known to
//! lack a primary position is rechecked sooner than its interval, so a healthy replica does not
//! look stale for a whole interval after each write. Only changes of state are logged.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context;
use pgrepl_config::{Config, UserConfig};
use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio::time::{sleep_until, timeout};

use super::probe::{Probe, ProbeError, Sample};
use super::{position, replay, Health, WriterState};
use crate::backend::{BackendId, BackendInfo, Backends};

/// The shortest gap between two samples of one backend, however often it is nudged.
const MIN_GAP: Duration = Duration::from_millis(5);

/// The shortest time a sample may take before it counts as a failure.
const QUERY_TIMEOUT_FLOOR: Duration = Duration::from_secs(1);

/// The longest gap between two samples while a new writer is being confirmed: writes wait
/// for it.
const CONFIRMING_GAP: Duration = Duration::from_millis(100);

/// The position service's connections, one per node: it asks the writer's.
#[derive(Default)]
pub struct WriterProbes(Mutex<HashMap<BackendId, Arc<Probe>>>);

impl WriterProbes {
    /// The probe of the writer now; None when there is none.
    pub fn writer(&self, health: &Health) -> Option<Arc<Probe>> {
        let writer = health.writer().backend?;
        self.locked().get(&writer).cloned()
    }

    fn locked(&self) -> MutexGuard<'_, HashMap<BackendId, Arc<Probe>>> {
        // A map of handles: a panic while holding it leaves nothing half-done.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The running monitor tasks, by backend; a reload starts those of a replica it adds and
/// stops those of one it removes.
pub struct Monitor {
    health: Arc<Health>,
    /// Per backend: its sampler and its replay watch.
    tasks: Mutex<HashMap<BackendId, JoinSet<()>>>,
    /// The position service, which asks whichever node is the writer.
    service: Mutex<JoinSet<()>>,
    positions: Arc<WriterProbes>,
    /// Backends of the first round not sampled yet.
    unsampled: watch::Receiver<usize>,
    /// Where the tasks run, whoever starts them: the runtime that started the monitor.
    runtime: Handle,
    /// The first `[[users]]` entry when the monitor started: later reloads do not change it.
    login: UserConfig,
    every: Duration,
    connect_timeout: Duration,
    query_timeout: Duration,
}

impl Monitor {
    /// Starts sampling every backend of `backends`, logged in as the first `[[users]]`
    /// entry, on the current runtime.
    pub fn start(
        health: &Arc<Health>,
        backends: &Backends,
        config: &Config,
    ) -> anyhow::Result<Monitor> {
        let login = config.users.first().context(
            "[[users]]: the health monitor logs in to the servers as the first user, and none is configured",
        )?;
        let every = config.health.interval;
        let (sampled, unsampled) = watch::channel(backends.len());
        let monitor = Monitor {
            health: health.clone(),
            tasks: Mutex::default(),
            service: Mutex::default(),
            positions: Arc::default(),
            unsampled,
            runtime: Handle::current(),
            login: login.clone(),
            every,
            // A sample that hangs counts as a failure after about an interval, but not before
            // QUERY_TIMEOUT_FLOOR (with a short interval, a busy machine's slow answer is not
            // a server down), and never later than a backend connection would.
            query_timeout: every
                .max(QUERY_TIMEOUT_FLOOR)
                .min(config.proxy.connect_timeout),
            connect_timeout: config.proxy.connect_timeout,
        };
        for backend in backends.iter() {
            health.describe(backend.id, &backend.name, backend.promotable);
            monitor.start_watching(backend, Some(sampled.clone()))?;
        }
        let service = position::serve(health.clone(), monitor.positions.clone());
        lock(&monitor.service).spawn_on(service, &monitor.runtime);
        Ok(monitor)
    }

    /// The user the monitor logs in as.
    pub fn login(&self) -> &UserConfig {
        &self.login
    }

    /// Starts the tasks of a replica a reload added.
    pub fn watch(&self, backend: &Arc<BackendInfo>) -> anyhow::Result<()> {
        self.start_watching(backend, None)
    }

    /// Starts `backend`'s tasks; `first` is told when its first sample is in.
    fn start_watching(
        &self,
        backend: &Arc<BackendInfo>,
        first: Option<watch::Sender<usize>>,
    ) -> anyhow::Result<()> {
        let probe = |purpose| {
            Probe::new(
                backend,
                &self.login,
                self.connect_timeout,
                self.query_timeout,
                purpose,
            )
        };
        let watcher = Watcher {
            health: self.health.clone(),
            backend: backend.clone(),
            probe: probe("health")?,
            every: self.every,
            first,
        };
        let positions = Arc::new(probe("positions")?);
        let mut tasks = JoinSet::new();
        tasks.spawn_on(watcher.run(), &self.runtime);
        // Following the primary, any node may be the writer or a standby one day: each has
        // both connections, used only in that role (the position service's is opened at its
        // first round there). Otherwise the first node is never read from as a standby.
        if self.health.follows() || !backend.id.is_first() {
            let watch = replay::watch(self.health.clone(), backend.id, probe("replay watch")?);
            tasks.spawn_on(watch, &self.runtime);
        }
        self.positions.locked().insert(backend.id, positions);
        lock(&self.tasks).insert(backend.id, tasks);
        Ok(())
    }

    /// Stops the tasks of a replica a reload removed; once this returns, none of them
    /// publishes anything more about it.
    pub async fn unwatch(&self, backend: BackendId) {
        self.positions.locked().remove(&backend);
        let tasks = lock(&self.tasks).remove(&backend);
        if let Some(mut tasks) = tasks {
            tasks.shutdown().await;
        }
    }

    /// Waits until every backend has been sampled once, or `limit` has passed, so the first
    /// sessions route on what the monitor found rather than on its initial guesses. Says so
    /// when the limit passed: until then, reads go to the primary.
    pub async fn first_round(&self, limit: Duration) {
        let mut unsampled = self.unsampled.clone();
        if timeout(limit, unsampled.wait_for(|&left| left == 0))
            .await
            .is_err()
        {
            let left = *unsampled.borrow();
            tracing::warn!(
                unsampled = left,
                ?limit,
                "serving before every backend answered its first health check: \
                 no reads go to a replica until it has"
            );
        }
    }

    pub async fn stop(&self) {
        let all = std::mem::take(&mut *lock(&self.tasks));
        for (_, mut tasks) in all {
            tasks.shutdown().await;
        }
        let mut service = std::mem::take(&mut *lock(&self.service));
        service.shutdown().await;
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Task handles: a panic while holding them leaves nothing half-done.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The monitor task of one backend.
struct Watcher {
    health: Arc<Health>,
    backend: Arc<BackendInfo>,
    probe: Probe,
    /// `[health] interval`.
    every: Duration,
    /// Told once the first sample is in.
    first: Option<watch::Sender<usize>>,
}

/// What a sample showed, as far as logging goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Found {
    Down,
    Up { in_recovery: bool },
}

impl Watcher {
    async fn run(mut self) {
        let index = self.backend.id;
        let mut last = None;
        loop {
            let sent_at = Instant::now();
            self.health.nudge(index).answering();
            let sent = self.health.nanos_at(sent_at.into_std());
            let result = self.probe.sample().await;
            match result {
                Ok(sample) => {
                    let seen = self.health.now_nanos();
                    self.health.record(index, sample, sent, seen);
                }
                Err(_) => self.health.record_failure(index),
            }
            let found = match &result {
                Ok(sample) => Found::Up {
                    in_recovery: sample.in_recovery,
                },
                Err(_) => Found::Down,
            };
            if last != Some(found) {
                report(&self.backend, &result, !self.health.follows());
                last = Some(found);
            }
            if let Some(first) = self.first.take() {
                first.send_modify(|left| *left -= 1);
            }
            self.pause(sent_at).await;
        }
    }

    /// Until the next sample is due: an interval after the last one (a recheck for a replica
    /// that is behind: a quarter of `[routing] max_replica_lag`, within the interval), or
    /// shortly after it when nudged.
    async fn pause(&self, sent_at: Instant) {
        let index = self.backend.id;
        let wait = if self.health.is_behind(index) {
            Duration::from_nanos(self.health.max_lag() / 4)
                .max(MIN_GAP)
                .min(self.every)
        } else if self.health.writer().state == WriterState::Confirming {
            self.every.min(CONFIRMING_GAP)
        } else {
            self.every
        };
        tokio::select! {
            _ = sleep_until(sent_at + wait) => {}
            _ = self.health.nudge(index).requested() => sleep_until(sent_at + MIN_GAP).await,
        }
    }
}

/// Logs a backend's new state: down, up, or (with `fixed` roles: the first node the writer)
/// up in a role other than its configured one. Following the primary, the role is what the
/// node says, and the writer's changes are logged where they are decided.
fn report(backend: &BackendInfo, result: &Result<Sample, ProbeError>, fixed: bool) {
    let is_primary = backend.id.is_first();
    let role = match (fixed, is_primary) {
        (false, _) => "node",
        (true, true) => "primary",
        (true, false) => "replica",
    };
    match result {
        Err(error) => tracing::warn!(%backend, role, %error, "backend down"),
        Ok(sample) if !fixed => {
            tracing::info!(%backend, role, in_recovery = sample.in_recovery, "backend up")
        }
        Ok(sample) if sample.in_recovery == is_primary => {
            let problem = if is_primary {
                "the primary is in recovery (a standby?): writes to it fail"
            } else {
                "the replica is not in recovery (promoted?): no reads go to it"
            };
            tracing::warn!(%backend, role, "{problem}")
        }
        Ok(_) => tracing::info!(%backend, role, "backend up"),
    }
}
