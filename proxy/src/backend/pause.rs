//! `PAUSE` and `RESUME` of the admin console: while a database (or every database) is paused,
//! a session's unit that needs a new server connection waits here before taking one, until
//! `RESUME`. Sessions already holding their connection go on. When nothing is paused, passing
//! costs one relaxed atomic load.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use tokio::sync::Notify;

use crate::clients::KillSwitch;
use crate::shared::Shutdown;

/// What is paused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Paused {
    /// Every database (`PAUSE` without a name).
    pub all: bool,
    /// Databases paused by name.
    pub databases: BTreeSet<String>,
}

/// Why a `PAUSE` or `RESUME` changes nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PauseConflict {
    /// `PAUSE` of what is paused already (None: the whole proxy).
    AlreadyPaused(Option<String>),
    /// `RESUME` of what is not paused.
    NotPaused(Option<String>),
    /// `RESUME db` while every database is paused: only `RESUME` lifts that.
    WholeProxyPaused(String),
}

impl std::fmt::Display for PauseConflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PauseConflict::AlreadyPaused(None) => f.write_str("the proxy is already paused"),
            PauseConflict::AlreadyPaused(Some(db)) => {
                write!(f, "database \"{db}\" is already paused")
            }
            PauseConflict::NotPaused(None) => f.write_str("the proxy is not paused"),
            PauseConflict::NotPaused(Some(db)) => write!(f, "database \"{db}\" is not paused"),
            PauseConflict::WholeProxyPaused(db) => write!(
                f,
                "every database is paused, not \"{db}\" alone: RESUME without a name lifts it"
            ),
        }
    }
}

impl Paused {
    /// Whether units of `database` wait.
    pub fn covers(&self, database: &str) -> bool {
        self.all || self.databases.contains(database)
    }

    pub fn is_empty(&self) -> bool {
        !self.all && self.databases.is_empty()
    }

    /// `PAUSE [database]`.
    pub fn pause(&mut self, database: Option<&str>) -> Result<(), PauseConflict> {
        match database {
            None if self.all => Err(PauseConflict::AlreadyPaused(None)),
            None => {
                self.all = true;
                Ok(())
            }
            Some(db) if self.covers(db) => Err(PauseConflict::AlreadyPaused(Some(db.to_owned()))),
            Some(db) => {
                self.databases.insert(db.to_owned());
                Ok(())
            }
        }
    }

    /// `RESUME [database]`: without a name, lifts every pause.
    pub fn resume(&mut self, database: Option<&str>) -> Result<(), PauseConflict> {
        match database {
            None if self.is_empty() => Err(PauseConflict::NotPaused(None)),
            None => {
                *self = Paused::default();
                Ok(())
            }
            Some(db) if self.databases.remove(db) => Ok(()),
            Some(db) if self.all => Err(PauseConflict::WholeProxyPaused(db.to_owned())),
            Some(db) => Err(PauseConflict::NotPaused(Some(db.to_owned()))),
        }
    }
}

/// Why a wait at the gate ended without passing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interrupted {
    /// The session was killed.
    Killed,
    /// The proxy is shutting down.
    ShuttingDown,
}

/// The gate sessions pass before taking a server connection.
#[derive(Default)]
pub struct PauseGate {
    /// Something is paused: the only thing passing looks at otherwise.
    any: AtomicBool,
    paused: Mutex<Paused>,
    resumed: Notify,
}

impl PauseGate {
    fn change(
        &self,
        apply: impl FnOnce(&mut Paused) -> Result<(), PauseConflict>,
    ) -> Result<(), PauseConflict> {
        let mut paused = self.paused.lock().unwrap_or_else(|p| p.into_inner());
        apply(&mut paused)?;
        self.any.store(!paused.is_empty(), Ordering::SeqCst);
        drop(paused);
        self.resumed.notify_waiters();
        Ok(())
    }

    pub fn pause(&self, database: Option<&str>) -> Result<(), PauseConflict> {
        self.change(|p| p.pause(database))
    }

    pub fn resume(&self, database: Option<&str>) -> Result<(), PauseConflict> {
        self.change(|p| p.resume(database))
    }

    pub fn paused(&self) -> Paused {
        self.paused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether anything is paused (a relaxed load: the caller passes through `wait` if so).
    #[inline]
    pub fn is_closed(&self) -> bool {
        self.any.load(Ordering::Relaxed)
    }

    /// Waits while `database` is paused; ends early if the session is killed or the proxy
    /// shuts down.
    pub async fn wait(
        &self,
        database: &str,
        kill: &KillSwitch,
        shutdown: &Shutdown,
    ) -> Result<(), Interrupted> {
        loop {
            let resumed = self.resumed.notified();
            let stopping = shutdown.wait();
            tokio::pin!(resumed, stopping);
            // Registered before the looks, so a RESUME or shutdown in between is not missed.
            resumed.as_mut().enable();
            stopping.as_mut().enable();
            if !self.paused().covers(database) {
                return Ok(());
            }
            if shutdown.is_set() {
                return Err(Interrupted::ShuttingDown);
            }
            tokio::select! {
                _ = &mut resumed => {}
                _ = kill.fired() => return Err(Interrupted::Killed),
                _ = &mut stopping => return Err(Interrupted::ShuttingDown),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn pause_and_resume_decisions() {
        use PauseConflict::*;
        let db = |name: &str| Some(name.to_owned());
        // (databases paused before, all paused before, the name given, RESUME rather than
        // PAUSE), the answer, (all paused after, databases paused after)
        type Case = (&'static [&'static str], bool, Option<&'static str>, bool);
        type After = (bool, &'static [&'static str]);
        type Row = (Case, Result<(), PauseConflict>, After);
        let cases: &[Row] = &[
            ((&[], false, Some("a"), false), Ok(()), (false, &["a"])),
            ((&[], false, None, false), Ok(()), (true, &[])),
            (
                (&["a"], false, Some("a"), false),
                Err(AlreadyPaused(db("a"))),
                (false, &["a"]),
            ),
            (
                (&[], true, Some("a"), false),
                Err(AlreadyPaused(db("a"))),
                (true, &[]),
            ),
            (
                (&[], true, None, false),
                Err(AlreadyPaused(None)),
                (true, &[]),
            ),
            ((&["a"], false, Some("a"), true), Ok(()), (false, &[])),
            (
                (&["a"], false, Some("b"), true),
                Err(NotPaused(db("b"))),
                (false, &["a"]),
            ),
            (
                (&[], true, Some("b"), true),
                Err(WholeProxyPaused("b".into())),
                (true, &[]),
            ),
            ((&["a"], true, None, true), Ok(()), (false, &[])),
            ((&[], false, None, true), Err(NotPaused(None)), (false, &[])),
        ];
        for ((before, all, target, resume), expected, (all_after, dbs_after)) in cases {
            let mut paused = Paused {
                all: *all,
                databases: before.iter().map(|s| s.to_string()).collect(),
            };
            let got = if *resume {
                paused.resume(*target)
            } else {
                paused.pause(*target)
            };
            let case = (before, all, target, resume);
            assert_eq!(&got, expected, "{case:?}");
            assert_eq!(paused.all, *all_after, "{case:?}");
            let dbs: Vec<&str> = paused.databases.iter().map(String::as_str).collect();
            assert_eq!(dbs, *dbs_after, "{case:?}");
        }
    }

    #[tokio::test]
    async fn a_wait_ends_at_resume_or_kill() {
        let gate = Arc::new(PauseGate::default());
        let shutdown = Arc::new(Shutdown::default());
        assert!(!gate.is_closed());
        gate.pause(Some("a")).unwrap();
        assert!(gate.is_closed());
        let kill = KillSwitch::default();
        assert_eq!(
            gate.wait("b", &kill, &shutdown).await,
            Ok(()),
            "b not paused"
        );

        let waiter = {
            let (gate, shutdown) = (gate.clone(), shutdown.clone());
            tokio::spawn(async move { gate.wait("a", &KillSwitch::default(), &shutdown).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "waits while paused");
        gate.resume(Some("a")).unwrap();
        let passed = tokio::time::timeout(Duration::from_secs(5), waiter).await;
        assert_eq!(passed.expect("woken by RESUME").unwrap(), Ok(()));
        assert!(!gate.is_closed());

        gate.pause(None).unwrap();
        let killed = async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            kill.fire();
        };
        let (waited, ()) = tokio::join!(gate.wait("a", &kill, &shutdown), killed);
        assert_eq!(waited, Err(Interrupted::Killed));
        shutdown.begin();
        let other = KillSwitch::default();
        assert_eq!(
            gate.wait("a", &other, &shutdown).await,
            Err(Interrupted::ShuttingDown)
        );
    }
}
