//! What each database's catalog on the primary says about its functions and sequences.
//!
//! A function the built-in lists do not know may write (a plpgsql function doing an INSERT
//! looks like any other call), so a read calling a volatile user function goes to the
//! primary. The look-up records which functions are *not* volatile: one it has not seen
//! (created without the proxy since the last look-up) counts as volatile. A sequence read as
//! a relation (`SELECT last_value FROM s`) answers for the server that reads it, so such a
//! read goes to the primary too.
//!
//! Both live in the catalogs of the client's database, so the proxy keeps one snapshot per
//! database, loaded by a background task with a connection of its own: classifying never
//! waits for the catalog. Until a database's snapshot is known, and for a moment after a
//! statement changed functions there, every user function counts as volatile; a sequence
//! created through the proxy counts at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::time::{Duration, Instant};

use anyhow::Context;
use foldhash::fast::RandomState;
use pgrepl_config::{BackendConfig, UserConfig};
use tokio::sync::{watch, Notify};
use tokio_postgres::{NoTls, SimpleQueryMessage};

use super::ddl::CatalogChanges;
use super::name::CatalogName;

/// How often a database's set is reloaded, to see functions changed without the proxy.
const REFRESH: Duration = Duration::from_secs(30);
/// How soon a failed load is tried again.
const RETRY: Duration = Duration::from_secs(5);
/// How long after a statement that changes functions a load is trusted to see the change:
/// the statement is classified before it runs, and must have committed first.
const SETTLE_MS: u64 = 1000;
/// Bound on the catalog query, on top of the connect timeout.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// Every function name per schema, `t` when none of its overloads there is volatile (built-in
/// schemas count as not volatile: the built-in lists judge their calls), and every sequence.
const CATALOG_QUERY: &str = "SELECT 'f', n.nspname, p.proname, \
     bool_and(p.provolatile <> 'v' OR n.nspname IN ('pg_catalog', 'information_schema')) \
     FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace \
     GROUP BY 2, 3 \
     UNION ALL SELECT 's', n.nspname, c.relname, true \
     FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
     WHERE c.relkind = 'S' \
     ORDER BY 1, 2, 3";

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
    /// the task that loads and refreshes its set.
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

    async fn load(&self, database: &str) -> anyhow::Result<Snapshot> {
        let mut login = self.login.clone();
        login.dbname(database);
        let load = async {
            let (client, connection) = login.connect(NoTls).await?;
            // Ends when the client is dropped.
            tokio::spawn(connection);
            let messages = client.simple_query(CATALOG_QUERY).await?;
            Ok::<_, tokio_postgres::Error>(Snapshot::from_rows(messages.iter().filter_map(
                |message| match message {
                    SimpleQueryMessage::Row(row) => Some(Row {
                        kind: row.get(0)?,
                        schema: row.get(1)?,
                        name: row.get(2)?,
                        flag: row.get(3)? == "t",
                    }),
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
                    tracing::info!(database = %entry.database, "catalog looked up again");
                    failing = false;
                }
                entry.store(set, started);
                REFRESH
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(database = %entry.database, error = %format!("{e:#}"),
                        "cannot look up user functions and sequences; reads calling user functions go to the primary");
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

/// A row of [`CATALOG_QUERY`].
struct Row<'a> {
    /// `f` (function) or `s` (sequence).
    kind: &'a str,
    schema: &'a str,
    name: &'a str,
    /// For a function: none of its overloads in the schema is volatile.
    flag: bool,
}

/// The schemas that have an object by some name, each with a flag.
type Schemas<T> = Vec<(Box<str>, T)>;

/// Names with the schemas that have one by that name.
#[derive(Debug, PartialEq, Eq)]
struct Names<T>(HashMap<Box<str>, Schemas<T>, RandomState>);

impl<T> Default for Names<T> {
    fn default() -> Self {
        Names(HashMap::default())
    }
}

impl<T> Names<T> {
    fn add(&mut self, schema: &str, name: &str, flag: T) {
        self.0
            .entry(name.into())
            .or_default()
            .push((schema.into(), flag));
    }

    /// The entries of the schemas a reference can mean: any schema when unqualified (the
    /// search path is not known here), `pg_temp` any session's temporary schema.
    fn candidates<'a>(&'a self, reference: &'a CatalogName) -> impl Iterator<Item = &'a T> + 'a {
        let schemas = self.0.get(reference.name()).map_or(&[][..], Vec::as_slice);
        schemas.iter().filter_map(move |(schema, flag)| {
            let meant = match reference.schema() {
                None => true,
                Some("pg_temp") => schema.starts_with("pg_temp_"),
                Some(wanted) => **schema == *wanted,
            };
            meant.then_some(flag)
        })
    }
}

/// A database's functions and sequences as one look-up saw them.
#[derive(Debug, Default, PartialEq, Eq)]
struct Snapshot {
    /// Every function, flagged when not volatile.
    functions: Names<bool>,
    sequences: Names<()>,
}

impl Snapshot {
    fn from_rows<'a>(rows: impl Iterator<Item = Row<'a>>) -> Snapshot {
        let mut snapshot = Snapshot::default();
        for row in rows {
            match row.kind {
                "f" => snapshot.functions.add(row.schema, row.name, row.flag),
                _ => snapshot.sequences.add(row.schema, row.name, ()),
            }
        }
        snapshot
    }

    /// A call is not volatile only if every function it may mean is known and not volatile:
    /// an unqualified call could reach any schema's, and overloads are not told apart.
    fn is_volatile(&self, call: &CatalogName) -> bool {
        let mut meant = self.functions.candidates(call).peekable();
        meant.peek().is_none() || meant.any(|&not_volatile| !not_volatile)
    }

    /// An unqualified name counts if any schema has a sequence by that name.
    fn is_sequence(&self, relation: &CatalogName) -> bool {
        self.sequences.candidates(relation).next().is_some()
    }
}

/// Changes made through the proxy that no trusted look-up has seen yet.
#[derive(Debug, Default)]
struct Pending {
    /// Functions changed: every user function counts as volatile.
    functions: bool,
    /// Sequences created or renamed by name: these names count as sequences in any schema.
    sequences: Vec<Box<str>>,
    /// Serial or identity columns created: PostgreSQL names their sequences
    /// `<table>_<column>_seq`, with digits after when taken, so such names count.
    implicit_sequences: bool,
}

impl Pending {
    fn may_name_sequences(&self) -> bool {
        self.implicit_sequences || !self.sequences.is_empty()
    }

    fn is_sequence(&self, relation: &CatalogName) -> bool {
        let name = relation.name();
        self.sequences.iter().any(|s| **s == *name)
            || (self.implicit_sequences
                && name
                    .trim_end_matches(|c: char| c.is_ascii_digit())
                    .ends_with("_seq"))
    }
}

/// What a session's classification reads, under one lock.
#[derive(Debug, Default)]
struct State {
    /// None until the first look-up succeeds.
    loaded: Option<Snapshot>,
    pending: Pending,
}

/// One database's snapshot, shared by its sessions and its task.
struct Entry {
    database: Box<str>,
    born: Instant,
    state: RwLock<State>,
    /// 1 + [`Entry::now_ms`] of the latest statement that changed the catalog and that no
    /// load has been trusted to see yet; 0 when there is none.
    unsettled_change: AtomicU64,
    /// Changes whenever a decision based on this entry may change.
    generation: AtomicU64,
    /// Whether the database may have a sequence at all: most reads name relations, and a
    /// database without sequences (or before any is known) spares them the lock.
    has_sequences: AtomicBool,
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
            state: RwLock::new(State::default()),
            unsettled_change: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            has_sequences: AtomicBool::new(false),
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

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps a loaded snapshot; the load began at `started` (ms) and is trusted to show the
    /// latest change if it began [`SETTLE_MS`] after it.
    fn store(&self, snapshot: Snapshot, started: u64) {
        let mut changed = false;
        let mut state = self.write();
        if state.loaded.as_ref() != Some(&snapshot) {
            state.loaded = Some(snapshot);
            changed = true;
        }
        // Changes are noted under the same lock: none can come between these two steps.
        let change = self.unsettled_change.load(Ordering::Acquire);
        if change != 0 && started >= change - 1 + SETTLE_MS {
            self.unsettled_change.store(0, Ordering::Release);
            state.pending = Pending::default();
            changed = true;
        }
        let has_sequences = state
            .loaded
            .as_ref()
            .is_some_and(|loaded| !loaded.sequences.0.is_empty())
            || state.pending.may_name_sequences();
        self.has_sequences.store(has_sequences, Ordering::Release);
        drop(state);
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

    /// A statement that changes the catalog passed: until a later load sees it, every user
    /// function counts as volatile if it changed functions, and the sequences it creates
    /// count as sequences; the task reloads once the statement has had time to commit.
    pub(super) fn note_change(&self, changes: &CatalogChanges) {
        let Some(entry) = &self.0 else {
            return;
        };
        {
            let mut state = entry.write();
            let pending = &mut state.pending;
            pending.functions |= changes.functions;
            pending.implicit_sequences |= changes.implicit_sequences;
            pending.sequences.extend(changes.sequences.iter().cloned());
            if pending.may_name_sequences() {
                entry.has_sequences.store(true, Ordering::Release);
            }
            entry
                .unsettled_change
                .fetch_max(entry.now_ms() + 1, Ordering::AcqRel);
        }
        entry.generation.fetch_add(1, Ordering::Release);
        entry.wake.notify_one();
    }

    /// A replica refused a read this handle judged free of writes: the catalog changed in a
    /// way the last load did not see. Until the next load sees it, every user function
    /// counts as volatile.
    pub fn refused_read(&self) {
        self.note_change(&CatalogChanges {
            functions: true,
            ..CatalogChanges::default()
        });
    }

    /// The first of `calls` that may be volatile: any of them while the functions are not
    /// known.
    /// Runs for every read: the test for no calls inline, the look-up out of line.
    #[inline]
    pub(super) fn first_volatile<'a>(&self, calls: &'a [CatalogName]) -> Option<&'a CatalogName> {
        if calls.is_empty() {
            return None;
        }
        self.first_volatile_of(calls)
    }

    #[inline(never)]
    fn first_volatile_of<'a>(&self, calls: &'a [CatalogName]) -> Option<&'a CatalogName> {
        let first = calls.first()?;
        let state = self.0.as_ref()?.read();
        match &state.loaded {
            Some(snapshot) if !state.pending.functions => {
                calls.iter().find(|call| snapshot.is_volatile(call))
            }
            _ => Some(first),
        }
    }

    /// The first of `relations` that may be a sequence. Until the first look-up, only the
    /// sequences created through the proxy are known: a sequence read on a replica answers
    /// an older state, which does not justify sending every read to the primary.
    /// Runs for every read that names a relation: the tests inline, the look-up out of line.
    #[inline]
    pub(super) fn first_sequence<'a>(
        &self,
        relations: &'a [CatalogName],
    ) -> Option<&'a CatalogName> {
        let entry = self.0.as_ref()?;
        if relations.is_empty() || !entry.has_sequences.load(Ordering::Acquire) {
            return None;
        }
        Self::sequence_among(entry, relations)
    }

    #[inline(never)]
    fn sequence_among<'a>(entry: &Entry, relations: &'a [CatalogName]) -> Option<&'a CatalogName> {
        let state = entry.read();
        relations.iter().find(|relation| {
            state.pending.is_sequence(relation)
                || state
                    .loaded
                    .as_ref()
                    .is_some_and(|snapshot| snapshot.is_sequence(relation))
        })
    }
}

/// Handles in a given state, for the classifier's tests.
#[cfg(test)]
impl UserFunctions {
    /// A database whose snapshot is not loaded yet.
    pub(super) fn unloaded() -> UserFunctions {
        UserFunctions(Some(Arc::new(Entry::new("db", Duration::from_millis(50)))))
    }

    /// A database with these volatile and these other functions, and these sequences, as
    /// (schema, name) pairs.
    pub(super) fn loaded(
        volatile: &[(&str, &str)],
        other: &[(&str, &str)],
        sequences: &[(&str, &str)],
    ) -> UserFunctions {
        let functions = UserFunctions::unloaded();
        if let Some(entry) = &functions.0 {
            entry.store(Snapshot::of(volatile, other, sequences), 0);
        }
        functions
    }
}

#[cfg(test)]
impl Snapshot {
    fn of(
        volatile: &[(&str, &str)],
        other: &[(&str, &str)],
        sequences: &[(&str, &str)],
    ) -> Snapshot {
        let mut rows = Vec::new();
        for (kind, flag, list) in [
            ("f", false, volatile),
            ("f", true, other),
            ("s", true, sequences),
        ] {
            rows.extend(list.iter().map(|&(schema, name)| Row {
                kind,
                schema,
                name,
                flag,
            }));
        }
        Snapshot::from_rows(rows.into_iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(text: &str) -> CatalogName {
        CatalogName::parse(text)
    }

    fn snapshot(volatile: &[(&str, &str)], other: &[(&str, &str)]) -> Snapshot {
        Snapshot::of(volatile, other, &[])
    }

    fn online() -> (UserFunctions, Arc<Entry>) {
        let functions = UserFunctions::unloaded();
        let entry = functions.0.clone().unwrap();
        (functions, entry)
    }

    fn functions_changed() -> CatalogChanges {
        CatalogChanges {
            functions: true,
            ..CatalogChanges::default()
        }
    }

    #[test]
    fn a_call_is_volatile_unless_everything_it_may_mean_is_known_not_to_be() {
        let snapshot = snapshot(
            &[("app", "bump"), ("audit", "log_it")],
            &[
                ("public", "bump"),
                ("public", "stable_one"),
                ("pg_catalog", "abs"),
                ("pg_catalog", "length"),
                ("public", "length"),
                ("app", "twin"),
                ("public", "twin"),
            ],
        );
        for (call, volatile) in [
            ("bump", true),
            ("app.bump", true),
            ("public.bump", false),
            ("other.bump", true),
            ("log_it", true),
            ("audit.log_it", true),
            ("stable_one", false),
            ("public.stable_one", false),
            ("app.stable_one", true),
            ("abs", false),
            ("length", false),
            ("twin", false),
            // Never seen: created without the proxy since the last look-up.
            ("created_since", true),
            ("public.created_since", true),
            ("pg_temp.f", true),
        ] {
            assert_eq!(snapshot.is_volatile(&name(call)), volatile, "{call}");
        }
    }

    #[test]
    fn sequences_match_by_name_and_schema() {
        let snapshot = Snapshot::of(
            &[],
            &[],
            &[("public", "s"), ("app", "t_id_seq"), ("pg_temp_3", "tmp")],
        );
        for (relation, sequence) in [
            ("s", true),
            ("public.s", true),
            ("app.s", false),
            ("t_id_seq", true),
            ("app.t_id_seq", true),
            ("public.t_id_seq", false),
            ("tmp", true),
            ("pg_temp.tmp", true),
            ("orders", false),
        ] {
            assert_eq!(
                snapshot.is_sequence(&name(relation)),
                sequence,
                "{relation}"
            );
        }
    }

    #[test]
    fn offline_judges_nothing() {
        let offline = UserFunctions::offline();
        assert_eq!(offline.first_volatile(&[name("f")]), None);
        assert_eq!(offline.first_sequence(&[name("s")]), None);
        offline.note_change(&functions_changed());
        assert_eq!(offline.generation(), 0);
    }

    #[test]
    fn every_call_is_volatile_until_the_functions_are_loaded() {
        let (functions, entry) = online();
        let calls = [name("f"), name("g")];
        assert_eq!(functions.first_volatile(&calls), Some(&calls[0]));
        assert_eq!(functions.first_volatile(&[]), None);
        entry.store(snapshot(&[("public", "g")], &[("public", "f")]), 0);
        assert_eq!(functions.first_volatile(&calls), Some(&calls[1]));
        assert_eq!(functions.first_volatile(&calls[..1]), None);
    }

    #[test]
    fn a_function_change_counts_until_a_load_that_began_after_it_settled() {
        let (functions, entry) = online();
        let calls = [name("was_stable")];
        entry.store(snapshot(&[], &[("public", "was_stable")]), 0);
        let before = functions.generation();
        assert_eq!(functions.first_volatile(&calls), None);

        functions.note_change(&functions_changed());
        assert_ne!(
            functions.generation(),
            before,
            "remembered routes must be dropped"
        );
        assert_eq!(functions.first_volatile(&calls), Some(&calls[0]));
        let change = entry.unsettled_change.load(Ordering::Acquire) - 1;
        // A load that may have run before the statement committed is not trusted...
        entry.store(
            snapshot(&[], &[("public", "was_stable")]),
            change + SETTLE_MS - 1,
        );
        assert_eq!(functions.first_volatile(&calls), Some(&calls[0]));
        // ...one that began once it settled is.
        let generation = functions.generation();
        entry.store(
            snapshot(&[], &[("public", "was_stable")]),
            change + SETTLE_MS,
        );
        assert_eq!(functions.first_volatile(&calls), None);
        assert_ne!(functions.generation(), generation);
    }

    #[test]
    fn sequences_created_through_the_proxy_count_at_once() {
        let (functions, entry) = online();
        let reads = [name("orders"), name("app.new_seq"), name("t_id_seq1")];
        // Not loaded yet: only what the proxy saw counts.
        assert_eq!(functions.first_sequence(&reads), None);
        functions.note_change(&CatalogChanges {
            sequences: vec!["new_seq".into()].into(),
            ..CatalogChanges::default()
        });
        assert_eq!(functions.first_sequence(&reads), Some(&reads[1]));
        assert_eq!(
            functions.first_volatile(&[name("f")]),
            Some(&name("f")),
            "still unloaded"
        );
        entry.store(snapshot(&[], &[("public", "f")]), 0);
        assert_eq!(
            functions.first_volatile(&[name("f")]),
            None,
            "a sequence is no reason to doubt functions"
        );
        functions.note_change(&CatalogChanges {
            implicit_sequences: true,
            ..CatalogChanges::default()
        });
        assert_eq!(functions.first_sequence(&reads[2..]), Some(&reads[2]));
        assert_eq!(functions.first_sequence(&reads[..1]), None);
        // A trusted load replaces what was pending.
        let change = entry.unsettled_change.load(Ordering::Acquire) - 1;
        entry.store(
            Snapshot::of(&[], &[], &[("app", "new_seq")]),
            change + SETTLE_MS,
        );
        assert_eq!(functions.first_sequence(&reads), Some(&reads[1]));
        assert_eq!(functions.first_sequence(&reads[2..]), None);
    }

    #[test]
    fn generation_moves_only_when_the_snapshot_changes() {
        let (functions, entry) = online();
        entry.store(snapshot(&[("public", "f")], &[]), 0);
        let generation = functions.generation();
        entry.store(snapshot(&[("public", "f")], &[]), 0);
        assert_eq!(functions.generation(), generation);
        entry.store(snapshot(&[("public", "f"), ("public", "g")], &[]), 0);
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
        functions.note_change(&functions_changed());
        let started = Instant::now();
        entry.settle().await;
        assert!(started.elapsed() >= Duration::from_millis(SETTLE_MS - 5));
    }
}
