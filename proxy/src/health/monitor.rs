//! The monitor: one task per backend, sampling it every `[health] interval` and publishing
//! the results into `Health`. A nudge brings the next sample forward, and a replica known to
//! lack a primary position is rechecked sooner than its interval, so a healthy replica does not
//! look stale for a whole interval after each write. Only changes of state are logged.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use pgrepl_config::Config;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::{sleep_until, timeout, Instant};

use super::probe::{Probe, ProbeError, Sample};
use super::{position, replay, Health, PRIMARY};
use crate::backend::BackendInfo;

/// The shortest gap between two samples of one backend, however often it is nudged.
const MIN_GAP: Duration = Duration::from_millis(5);

/// The running monitor tasks; dropping it stops them too.
pub struct Monitor {
    tasks: JoinSet<()>,
    /// Backends not sampled yet.
    unsampled: watch::Receiver<usize>,
}

impl Monitor {
    /// Starts sampling every backend of `backends` (the primary first, as in
    /// `Pool::backends()`), logged in as the first `[[users]]` entry.
    pub fn start(
        health: &Arc<Health>,
        backends: &[Arc<BackendInfo>],
        config: &Config,
    ) -> anyhow::Result<Monitor> {
        let login = config.users.first().context(
            "[[users]]: the health monitor logs in to the servers as the first user, and none is configured",
        )?;
        let every = config.health.interval;
        let timing = Timing {
            every,
            recheck: (config.routing.max_replica_lag / 4).max(MIN_GAP).min(every),
        };
        // A sample that hangs counts as a failure after about an interval, and never later
        // than a backend connection would.
        let query_timeout = every.min(config.proxy.connect_timeout);
        let (sampled, unsampled) = watch::channel(backends.len());
        let mut tasks = JoinSet::new();
        for backend in backends {
            let probe = Probe::new(
                backend,
                login,
                config.proxy.connect_timeout,
                query_timeout,
                "health",
            )?;
            let watcher = Watcher {
                health: health.clone(),
                backend: backend.clone(),
                probe,
                timing,
                first: Some(sampled.clone()),
            };
            tasks.spawn(watcher.run());
            let close_watch = Probe::new(
                backend,
                login,
                config.proxy.connect_timeout,
                query_timeout,
                if backend.id == PRIMARY {
                    "positions"
                } else {
                    "replay watch"
                },
            )?;
            if backend.id == PRIMARY {
                tasks.spawn(position::serve(health.clone(), close_watch));
            } else {
                tasks.spawn(replay::watch(health.clone(), backend.id, close_watch));
            }
        }
        Ok(Monitor { tasks, unsampled })
    }

    /// Waits until every backend has been sampled once, or `limit` has passed, so the first
    /// sessions route on what the monitor found rather than on its initial guesses.
    pub async fn first_round(&mut self, limit: Duration) {
        let _ = timeout(limit, self.unsampled.wait_for(|&left| left == 0)).await;
    }

    pub async fn stop(mut self) {
        self.tasks.shutdown().await;
    }
}

#[derive(Debug, Clone, Copy)]
struct Timing {
    every: Duration,
    /// How soon a replica that lacks a primary position is sampled again.
    recheck: Duration,
}

/// The monitor task of one backend.
struct Watcher {
    health: Arc<Health>,
    backend: Arc<BackendInfo>,
    probe: Probe,
    timing: Timing,
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
                report(&self.backend, &result);
                last = Some(found);
            }
            if let Some(first) = self.first.take() {
                first.send_modify(|left| *left -= 1);
            }
            self.pause(sent_at).await;
        }
    }

    /// Until the next sample is due: an interval after the last one (a recheck for a replica
    /// that is behind), or shortly after it when nudged.
    async fn pause(&self, sent_at: Instant) {
        let index = self.backend.id;
        let wait = if self.health.is_behind(index) {
            self.timing.recheck
        } else {
            self.timing.every
        };
        tokio::select! {
            _ = sleep_until(sent_at + wait) => {}
            _ = self.health.nudge(index).requested() => sleep_until(sent_at + MIN_GAP).await,
        }
    }
}

/// Logs a backend's new state: down, up, or up in a role other than its configured one.
fn report(backend: &BackendInfo, result: &Result<Sample, ProbeError>) {
    let is_primary = backend.id == PRIMARY;
    let role = if is_primary { "primary" } else { "replica" };
    match result {
        Err(error) => tracing::warn!(%backend, role, %error, "backend down"),
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
