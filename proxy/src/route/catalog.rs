//! The volatile user functions of each database, read from the primary's catalog.
//!
//! A function the built-in lists do not know may write (a plpgsql function doing an INSERT
//! looks like any other call), so a read calling a volatile user function goes to the
//! primary. Volatility lives in `pg_proc` of the client's database, so the proxy keeps one
//! set per database, loaded by a background task with a connection of its own: classifying
//! never waits for the catalog. Until a database's set is known, and for a moment after a
//! statement changed functions there, every user function counts as volatile.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::time::{Duration, Instant};

use anyhow::Context;
use foldhash::fast::RandomState;
use pgrepl_config::{BackendConfig, UserConfig};
use tokio::sync::{watch, Notify};
use tokio_postgres::{NoTls, SimpleQueryMessage};

use super::functions::FunctionName;

/// How often a database's set is reloaded, to see functions changed without the proxy.
const REFRESH: Duration = Duration::from_secs(30);
/// How soon a failed load is tried again.
const RETRY: Duration = Duration::from_secs(5);
/// How long after a statement that changes functions a load is trusted to see the change:
/// the statement is classified before it runs, and must have committed first.
const SETTLE_MS: u64 = 1000;
/// Bound on the catalog query, on top of the connect timeout.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// Volatile functions outside the built-in schemas, whose calls the built-in lists cover.
const VOLATILE_USER_FUNCTIONS: &str = "SELECT DISTINCT n.nspname, p.proname \
     FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace \
     WHERE p.provolatile = 'v' AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
     ORDER BY 1, 2";

/// Where the sets come from, and the set of each database in use.
pub struct Catalog {
    /// Login to the primary, without the database.
    login: tokio_postgres::Config,
    /// Bound on a session's wait for its database's first load: the connect timeout.
    ready_wait: Duration,
    databases: Mutex<HashMap<String, Arc<Entry>>>,
}

impl Catalog {
    /// Reads the catalog on `primary` as `user` (with its configured password).
    pub fn new(primary: &BackendConfig, user: &UserConfig, connect_timeout: Duration) -> Catalog {
        let mut login = tokio_postgres::Config::new();
        login
            .host(&primary.host)
            .port(primary.port)
            .user(&user.name)
            .application_name("pgrepl-proxy catalog")
            .connect_timeout(connect_timeout);
        if let Some(password) = &user.password {
            login.password(password);
        }
        Catalog {
            login,
            ready_wait: connect_timeout,
            databases: Mutex::new(HashMap::new()),
        }
    }

    /// The handle a session of `database` classifies with; the first for a database starts
    /// the task that loads and refreshes its set (on the current tokio runtime).
    pub fn user_functions(self: &Arc<Self>, database: &str) -> UserFunctions {
        let mut databases = self
            .databases
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = databases.get(database) {
            return UserFunctions(Some(Arc::clone(entry)));
        }
        let entry = Arc::new(Entry::new(database, self.ready_wait));
        databases.insert(database.to_owned(), Arc::clone(&entry));
        tokio::spawn(keep_fresh(Arc::downgrade(self), Arc::clone(&entry)));
        UserFunctions(Some(entry))
    }

    async fn load(&self, database: &str) -> anyhow::Result<FunctionSet> {
        let mut login = self.login.clone();
        login.dbname(database);
        let load = async {
            let (client, connection) = login.connect(NoTls).await?;
            // Ends when the client is dropped.
            tokio::spawn(connection);
            let messages = client.simple_query(VOLATILE_USER_FUNCTIONS).await?;
            Ok::<_, tokio_postgres::Error>(FunctionSet::from_rows(messages.iter().filter_map(
                |message| match message {
                    SimpleQueryMessage::Row(row) => Some((row.get(0)?, row.get(1)?)),
                    _ => None,
                },
            )))
        };
        tokio::time::timeout(self.ready_wait + QUERY_TIMEOUT, load)
            .await
            .context("timed out")?
            .map_err(Into::into)
    }

    /// Drops the entry of a database no session uses any more (its only other holder is
    /// its task); true if it did. A later session starts afresh.
    fn forget_if_unused(&self, entry: &Arc<Entry>) -> bool {
        let mut databases = self
            .databases
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let unused = Arc::strong_count(entry) <= 2;
        if unused {
            databases.remove(&*entry.database);
        }
        unused
    }
}

/// Loads the set of `entry`'s database now, then every [`REFRESH`], and soon after a
/// statement changed functions there; ends when no session uses the database.
async fn keep_fresh(catalog: Weak<Catalog>, entry: Arc<Entry>) {
    let mut failing = false;
    loop {
        entry.settle().await;
        let Some(source) = catalog.upgrade() else {
            return;
        };
        let started = entry.now_ms();
        let pause = match source.load(&entry.database).await {
            Ok(set) => {
                if failing {
                    tracing::info!(database = %entry.database, "user functions looked up again");
                    failing = false;
                }
                entry.store(set, started);
                REFRESH
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(database = %entry.database, error = %format!("{e:#}"),
                        "cannot look up user functions; reads calling them go to the primary");
                    failing = true;
                }
                RETRY
            }
        };
        entry.tried.send_replace(true);
        drop(source);
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = entry.wake.notified() => {}
        }
        match catalog.upgrade() {
            Some(source) if !source.forget_if_unused(&entry) => {}
            _ => return,
        }
    }
}

/// Volatile user functions: each name with the schemas that have one by that name.
#[derive(Debug, Default, PartialEq, Eq)]
struct FunctionSet(HashMap<Box<str>, Vec<Box<str>>, RandomState>);

impl FunctionSet {
    /// From (schema, name) rows sorted by schema.
    fn from_rows<'a>(rows: impl Iterator<Item = (&'a str, &'a str)>) -> FunctionSet {
        let mut set = FunctionSet::default();
        for (schema, name) in rows {
            let schemas = set.0.entry(name.into()).or_default();
            if schemas.last().is_none_or(|last| **last != *schema) {
                schemas.push(schema.into());
            }
        }
        set
    }

    /// An unqualified call counts if any schema has a volatile function of that name: the
    /// search path is not known here. Overloads are not told apart either.
    fn is_volatile(&self, call: &FunctionName) -> bool {
        let Some(schemas) = self.0.get(call.name()) else {
            return false;
        };
        call.schema()
            .is_none_or(|schema| schemas.iter().any(|s| **s == *schema))
    }
}

/// One database's set, shared by its sessions and its task.
struct Entry {
    database: Box<str>,
    born: Instant,
    /// None until the first load succeeds.
    volatile: RwLock<Option<FunctionSet>>,
    /// 1 + [`Entry::now_ms`] of the latest statement that changed functions and that no load
    /// has been trusted to see yet; 0 when there is none.
    unsettled_change: AtomicU64,
    /// Changes whenever a decision based on this entry may change.
    generation: AtomicU64,
    /// Wakes the task early after a change.
    wake: Notify,
    /// Whether the first load has been tried.
    tried: watch::Sender<bool>,
    /// Bound on a session's wait for the first load.
    ready_wait: Duration,
}

impl Entry {
    fn new(database: &str, ready_wait: Duration) -> Entry {
        Entry {
            database: database.into(),
            born: Instant::now(),
            volatile: RwLock::new(None),
            unsettled_change: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            wake: Notify::new(),
            tried: watch::Sender::new(false),
            ready_wait,
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Waits until the latest change is [`SETTLE_MS`] old.
    async fn settle(&self) {
        loop {
            let change = self.unsettled_change.load(Ordering::Acquire);
            let now = self.now_ms();
            let settled_at = change.saturating_sub(1) + SETTLE_MS;
            if change == 0 || now >= settled_at {
                return;
            }
            tokio::time::sleep(Duration::from_millis(settled_at - now)).await;
        }
    }

    /// Keeps a loaded set; the load began at `started` (ms) and is trusted to show the latest
    /// change if it began [`SETTLE_MS`] after it.
    fn store(&self, set: FunctionSet, started: u64) {
        let mut changed = false;
        {
            let mut current = self
                .volatile
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            if current.as_ref() != Some(&set) {
                *current = Some(set);
                changed = true;
            }
        }
        let change = self.unsettled_change.load(Ordering::Acquire);
        if change != 0 && started >= change - 1 + SETTLE_MS {
            // Fails if another change came meanwhile: that one is not covered.
            changed |= self
                .unsettled_change
                .compare_exchange(change, 0, Ordering::AcqRel, Ordering::Acquire)
                .is_ok();
        }
        if changed {
            self.generation.fetch_add(1, Ordering::Release);
        }
    }
}

/// What a session knows of its database's user functions; cheap to clone.
#[derive(Clone, Default)]
pub struct UserFunctions(Option<Arc<Entry>>);

impl UserFunctions {
    /// No catalog (the `classify` command, or nobody to log in as): user functions are
    /// judged by the configuration alone.
    pub fn offline() -> UserFunctions {
        UserFunctions(None)
    }

    /// Waits until the first load of the database's set has been tried, so a new session's
    /// first reads calling user functions do not all go to the primary; bounded by the
    /// connect timeout. Only the first session of a database waits.
    pub async fn ready(&self) {
        let Some(entry) = &self.0 else {
            return;
        };
        let mut tried = entry.tried.subscribe();
        let _ = tokio::time::timeout(entry.ready_wait, tried.wait_for(|&tried| tried)).await;
    }

    /// A number that changes whenever classifying with this handle may give another answer
    /// for the same SQL: a cheap check for anyone remembering a route.
    pub fn generation(&self) -> u64 {
        self.0
            .as_ref()
            .map_or(0, |entry| entry.generation.load(Ordering::Acquire))
    }

    /// A statement that changes functions passed: until a later load sees it, every user
    /// function counts as volatile, and the task reloads once the statement has had time
    /// to commit.
    pub(super) fn note_change(&self) {
        let Some(entry) = &self.0 else {
            return;
        };
        entry
            .unsettled_change
            .fetch_max(entry.now_ms() + 1, Ordering::AcqRel);
        entry.generation.fetch_add(1, Ordering::Release);
        entry.wake.notify_one();
    }

    /// The first of `calls` that may be volatile: any of them while the set is not known.
    pub(super) fn first_volatile<'a>(&self, calls: &'a [FunctionName]) -> Option<&'a FunctionName> {
        let first = calls.first()?;
        let entry = self.0.as_ref()?;
        if entry.unsettled_change.load(Ordering::Acquire) != 0 {
            return Some(first);
        }
        match &*entry
            .volatile
            .read()
            .unwrap_or_else(PoisonError::into_inner)
        {
            None => Some(first),
            Some(set) => calls.iter().find(|call| set.is_volatile(call)),
        }
    }
}

/// Handles in a given state, for the classifier's tests.
#[cfg(test)]
impl UserFunctions {
    /// A database whose set is not loaded yet.
    pub(super) fn unloaded() -> UserFunctions {
        UserFunctions(Some(Arc::new(Entry::new("db", Duration::from_millis(50)))))
    }

    /// A database whose volatile user functions are these (schema, name) pairs.
    pub(super) fn loaded(rows: &[(&str, &str)]) -> UserFunctions {
        let functions = UserFunctions::unloaded();
        if let Some(entry) = &functions.0 {
            entry.store(FunctionSet::from_rows(rows.iter().copied()), 0);
        }
        functions
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(text: &str) -> FunctionName {
        FunctionName::parse(text)
    }

    fn set(rows: &[(&str, &str)]) -> FunctionSet {
        FunctionSet::from_rows(rows.iter().copied())
    }

    fn online() -> (UserFunctions, Arc<Entry>) {
        let functions = UserFunctions::unloaded();
        let entry = functions.0.clone().unwrap();
        (functions, entry)
    }

    #[test]
    fn matches_calls_by_name_and_schema() {
        let set = set(&[
            ("app", "bump"),
            ("app", "bump"),
            ("audit", "log_it"),
            ("public", "bump"),
        ]);
        assert_eq!(set.0["bump"], ["app".into(), "public".into()]);
        for (call, volatile) in [
            ("bump", true),
            ("app.bump", true),
            ("public.bump", true),
            ("other.bump", false),
            ("log_it", true),
            ("audit.log_it", true),
            ("app.log_it", false),
            ("stable_one", false),
        ] {
            assert_eq!(set.is_volatile(&name(call)), volatile, "{call}");
        }
    }

    #[test]
    fn offline_judges_nothing_volatile() {
        let offline = UserFunctions::offline();
        assert_eq!(offline.first_volatile(&[name("f")]), None);
        offline.note_change();
        assert_eq!(offline.generation(), 0);
    }

    #[test]
    fn every_call_is_volatile_until_the_set_is_loaded() {
        let (functions, entry) = online();
        let calls = [name("f"), name("g")];
        assert_eq!(functions.first_volatile(&calls), Some(&calls[0]));
        assert_eq!(functions.first_volatile(&[]), None);
        entry.store(set(&[("public", "g")]), 0);
        assert_eq!(functions.first_volatile(&calls), Some(&calls[1]));
        assert_eq!(functions.first_volatile(&calls[..1]), None);
    }

    #[test]
    fn a_change_counts_until_a_load_that_began_after_it_settled() {
        let (functions, entry) = online();
        let calls = [name("new_writer")];
        entry.store(set(&[]), 0);
        let before = functions.generation();
        assert_eq!(functions.first_volatile(&calls), None);

        functions.note_change();
        assert_ne!(
            functions.generation(),
            before,
            "remembered routes must be dropped"
        );
        assert_eq!(functions.first_volatile(&calls), Some(&calls[0]));
        let change = entry.unsettled_change.load(Ordering::Acquire) - 1;
        // A load that may have run before the statement committed is not trusted...
        entry.store(set(&[]), change + SETTLE_MS - 1);
        assert_eq!(functions.first_volatile(&calls), Some(&calls[0]));
        // ...one that began once it settled is.
        let generation = functions.generation();
        entry.store(set(&[]), change + SETTLE_MS);
        assert_eq!(functions.first_volatile(&calls), None);
        assert_ne!(functions.generation(), generation);
    }

    #[test]
    fn generation_moves_only_when_the_set_changes() {
        let (functions, entry) = online();
        entry.store(set(&[("public", "f")]), 0);
        let generation = functions.generation();
        entry.store(set(&[("public", "f")]), 0);
        assert_eq!(functions.generation(), generation);
        entry.store(set(&[("public", "f"), ("public", "g")]), 0);
        assert_ne!(functions.generation(), generation);
    }

    #[tokio::test]
    async fn ready_waits_for_the_first_load_within_a_bound() {
        let (functions, entry) = online();
        let started = Instant::now();
        functions.ready().await;
        assert!(
            started.elapsed() >= Duration::from_millis(50),
            "waits its bound"
        );
        entry.tried.send_replace(true);
        let started = Instant::now();
        functions.ready().await;
        assert!(started.elapsed() < Duration::from_millis(50));
        UserFunctions::offline().ready().await;
    }

    #[tokio::test]
    async fn settle_waits_until_the_change_is_old_enough() {
        let (functions, entry) = online();
        entry.settle().await;
        functions.note_change();
        let started = Instant::now();
        entry.settle().await;
        assert!(started.elapsed() >= Duration::from_millis(SETTLE_MS - 5));
    }
}
