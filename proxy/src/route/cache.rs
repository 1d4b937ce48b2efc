//! A bounded, sharded cache of statement analyses keyed by SQL text.
//!
//! Clients repeat the same statements constantly, and parsing is far more
//! expensive than a hash lookup, so the proxy classifies through this cache on
//! every statement. Sharding keeps lock contention low across tokio tasks.
//!
//! It keeps only what the text decides ([`Analysis`]); the part that depends
//! on a database's user functions is resolved on every use, so a change of
//! those functions never meets a stale entry.

use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};

use foldhash::fast::RandomState;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::analysis::Analysis;
use super::fingerprint::fingerprint_into;

thread_local! {
    /// Each thread's buffer for the fingerprint of the statement it looks up.
    static FINGERPRINT: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// Enough shards that tasks on different cores rarely share a lock.
const MAX_SHARDS: usize = 16;

/// SQL longer than this is classified but not cached, so a stream of huge
/// one-off statements (bulk INSERTs) cannot pin megabytes per entry.
const MAX_CACHED_SQL_LEN: usize = 16 * 1024;

/// Thread-safe cache of analyses; never holds more than its capacity. A full shard evicts its oldest insertion (FIFO: O(1), and a true
/// LRU is not worth the bookkeeping on this path).
pub struct ClassifyCache {
    shards: Box<[Shard]>,
    hasher: RandomState,
    counts: Arc<Counts>,
}

/// Look-ups answered from the cache, and not: shared with the caches a reload replaces this
/// one with, so that the counts run on.
#[derive(Default)]
struct Counts {
    hits: AtomicU64,
    misses: AtomicU64,
}

impl ClassifyCache {
    /// A cache holding at most `capacity` statements; 0 disables caching.
    pub fn new(capacity: usize) -> Self {
        Self::counting_into(capacity, Arc::default())
    }

    /// An empty cache of `capacity` that goes on counting where this one is.
    pub fn replacement(&self, capacity: usize) -> Self {
        Self::counting_into(capacity, self.counts.clone())
    }

    fn counting_into(capacity: usize, counts: Arc<Counts>) -> Self {
        let count = capacity.min(MAX_SHARDS);
        let shards = (0..count)
            .map(|i| Shard::new(capacity / count + usize::from(i < capacity % count)))
            .collect();
        Self {
            shards,
            hasher: RandomState::default(),
            counts,
        }
    }

    /// Applies `resolve` to the analysis of `sql`: an earlier one for the same
    /// text up to the values of its literals (see [`fingerprint`]), else the
    /// one `analyze` makes, which is then kept. None for text that is not UTF-8: only
    /// what is analyzed is checked, as nothing that is not UTF-8 is ever kept.
    pub(crate) fn resolve<R>(
        &self,
        sql: &[u8],
        analyze: impl FnOnce(&str) -> Analysis,
        resolve: impl FnOnce(&Analysis) -> R,
    ) -> Option<R> {
        if self.shards.is_empty() || sql.len() > MAX_CACHED_SQL_LEN {
            self.counts.misses.fetch_add(1, Ordering::Relaxed);
            let text = std::str::from_utf8(sql).ok()?;
            return Some(resolve(&analyze(text)));
        }
        // The fingerprint goes into this thread's buffer, taken out for the look-up (so that
        // nothing here can find it borrowed) and put back after: no allocation per statement.
        let mut buffer = FINGERPRINT.with(Cell::take);
        let normalized = fingerprint_into(sql, &mut buffer);
        let resolved = self.resolve_key(sql, normalized, &buffer, analyze, resolve);
        FINGERPRINT.with(|cell| cell.set(buffer));
        resolved
    }

    /// [`ClassifyCache::resolve`] with the key made: the fingerprint, when `normalized`.
    #[inline(always)]
    fn resolve_key<R>(
        &self,
        sql: &[u8],
        normalized: bool,
        fingerprint: &[u8],
        analyze: impl FnOnce(&str) -> Analysis,
        resolve: impl FnOnce(&Analysis) -> R,
    ) -> Option<R> {
        let key = Key {
            normalized,
            text: if normalized { fingerprint } else { sql },
        };
        // One hash picks the shard and is the shard's map key.
        let hash = self.hasher.hash_one(key);
        let shard = &self.shards[(hash >> 32) as usize % self.shards.len()];
        let resolve = match shard.get(hash, key, resolve) {
            Ok(hit) => {
                self.counts.hits.fetch_add(1, Ordering::Relaxed);
                return Some(hit);
            }
            Err(resolve) => resolve,
        };
        self.counts.misses.fetch_add(1, Ordering::Relaxed);
        let text = std::str::from_utf8(sql).ok()?;
        // Analyze outside the lock: parsing is the slow part.
        let analysis = analyze(text);
        let resolved = resolve(&analysis);
        shard.insert(hash, key, analysis);
        Some(resolved)
    }

    /// Number of cached statements.
    pub fn len(&self) -> usize {
        self.shards.iter().map(Shard::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn hits(&self) -> u64 {
        self.counts.hits.load(Ordering::Relaxed)
    }

    pub fn misses(&self) -> u64 {
        self.counts.misses.load(Ordering::Relaxed)
    }
}

/// Entries keyed by the 64-bit SQL hash; the text is kept to rule out
/// collisions, and a colliding statement simply replaces the entry.
type Entries = HashMap<u64, Entry, BuildHasherDefault<Prehashed>>;

/// Raw texts and fingerprints are kept apart, so no raw text can ever be
/// taken for another statement's fingerprint.
#[derive(Clone, Copy, Hash)]
struct Key<'a> {
    normalized: bool,
    text: &'a [u8],
}

struct Entry {
    normalized: bool,
    /// UTF-8: only analyzed text is kept.
    sql: Box<[u8]>,
    analysis: Analysis,
}

struct Shard {
    capacity: usize,
    state: Mutex<ShardState>,
}

/// `order` holds each key of `entries` exactly once, oldest first.
#[derive(Default)]
struct ShardState {
    entries: Entries,
    order: VecDeque<u64>,
}

impl Shard {
    fn new(capacity: usize) -> Self {
        Self {
            capacity,
            state: Mutex::new(ShardState::default()),
        }
    }

    /// The lock guards no invariant a panic could break, so poison is ignored.
    fn lock(&self) -> MutexGuard<'_, ShardState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `resolve` applied to the entry for `key` under the lock (no copy of the
    /// entry is made); `resolve` itself back when there is none.
    fn get<R, F: FnOnce(&Analysis) -> R>(
        &self,
        hash: u64,
        key: Key<'_>,
        resolve: F,
    ) -> Result<R, F> {
        let state = self.lock();
        let entry = state
            .entries
            .get(&hash)
            .filter(|entry| entry.normalized == key.normalized && &*entry.sql == key.text);
        match entry {
            Some(entry) => Ok(resolve(&entry.analysis)),
            None => Err(resolve),
        }
    }

    fn insert(&self, hash: u64, key: Key<'_>, analysis: Analysis) {
        let entry = Entry {
            normalized: key.normalized,
            sql: key.text.into(),
            analysis,
        };
        let mut state = self.lock();
        if state.entries.insert(hash, entry).is_some() {
            // Same key replaced (a racing insert or a hash collision).
            return;
        }
        state.order.push_back(hash);
        if state.order.len() > self.capacity {
            if let Some(oldest) = state.order.pop_front() {
                state.entries.remove(&oldest);
            }
        }
    }

    fn len(&self) -> usize {
        self.lock().entries.len()
    }
}

/// Passes an already computed hash through, so the SQL text is hashed once.
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u64(&mut self, hash: u64) {
        self.0 = hash;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::thread;

    use super::*;
    use crate::route::catalog::UserFunctions;
    use crate::route::classify::{analyze, classify};
    use crate::route::functions::Overrides;
    use crate::route::reason::{Classification, Reason, Route};

    impl ClassifyCache {
        /// Classification through the cache, offline.
        fn classify(&self, sql: &str) -> Classification {
            self.resolve(sql.as_bytes(), plain, |a| {
                a.resolve(&UserFunctions::offline())
            })
            .unwrap()
        }
    }

    fn plain(sql: &str) -> Analysis {
        analyze(sql, &Overrides::default())
    }

    /// The classification a shard holds for `key`, offline.
    fn held(shard: &Shard, hash: u64, key: Key<'_>) -> Option<Classification> {
        shard
            .get(hash, key, |a| a.resolve(&UserFunctions::offline()))
            .ok()
    }

    #[test]
    fn is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<ClassifyCache>();
    }

    #[test]
    fn a_replacement_starts_empty_and_goes_on_counting() {
        let cache = ClassifyCache::new(100);
        cache.classify("SELECT 1");
        cache.classify("SELECT 1");
        let replacement = cache.replacement(10);
        assert!(replacement.is_empty());
        replacement.classify("SELECT 1");
        assert_eq!((replacement.hits(), replacement.misses()), (1, 2));
        assert_eq!((cache.hits(), cache.misses()), (1, 2), "one count for both");
    }

    #[test]
    fn counts_hits_and_misses() {
        let cache = ClassifyCache::new(100);
        assert!(cache.is_empty());
        let first = cache.classify("SELECT 1");
        assert_eq!((cache.hits(), cache.misses()), (0, 1));
        assert_eq!(cache.classify("SELECT 1"), first);
        assert_eq!(cache.classify("SELECT 1"), first);
        assert_eq!((cache.hits(), cache.misses()), (2, 1));
        // Keyed by exact text: a different spelling is a separate entry.
        let write = cache.classify("insert into t values (1)");
        assert_eq!(write.to_string(), "primary: write (INSERT)");
        assert_eq!((cache.hits(), cache.misses(), cache.len()), (2, 2, 2));
        assert_eq!(cache.classify("insert into t values (1)"), write);
        assert_eq!(cache.hits(), 3);
    }

    #[test]
    fn never_exceeds_capacity() {
        for capacity in [1, 10, 16, 17, 100] {
            let cache = ClassifyCache::new(capacity);
            for i in 0..3_000 {
                let got = cache.classify(&format!("SELECT c{i} FROM t"));
                assert_eq!(got.route, Route::Replica);
                assert!(
                    cache.len() <= capacity,
                    "capacity {capacity}: {}",
                    cache.len()
                );
            }
            assert_eq!(cache.len(), capacity, "every shard fills up");
            assert_eq!(cache.misses(), 3_000);
        }
    }

    #[test]
    fn zero_capacity_disables_caching() {
        let cache = ClassifyCache::new(0);
        assert_eq!(cache.classify("BEGIN").reason, Reason::Transaction);
        assert_eq!(cache.classify("BEGIN").reason, Reason::Transaction);
        assert!(cache.is_empty());
        assert_eq!((cache.hits(), cache.misses()), (0, 2));
    }

    #[test]
    fn huge_statements_are_not_cached() {
        let cache = ClassifyCache::new(10);
        let sql = format!("SELECT '{}'", "x".repeat(MAX_CACHED_SQL_LEN));
        assert_eq!(cache.classify(&sql).reason, Reason::Read);
        assert_eq!(cache.classify(&sql).reason, Reason::Read);
        assert!(cache.is_empty());
        assert_eq!(cache.misses(), 2);
    }

    fn raw(text: &str) -> Key<'_> {
        Key {
            normalized: false,
            text: text.as_bytes(),
        }
    }

    #[test]
    fn literals_do_not_defeat_the_cache() {
        let cache = ClassifyCache::new(10);
        let first = cache.classify("SELECT abalance FROM pgbench_accounts WHERE aid = 1");
        let second = cache.classify("SELECT abalance FROM pgbench_accounts WHERE aid = 2");
        assert_eq!(first, second);
        assert_eq!((cache.hits(), cache.misses()), (1, 1));
        assert_eq!(cache.classify("SELECT nextval('a')").route, Route::Primary);
        assert_eq!(cache.classify("SELECT nextval('b')").route, Route::Primary);
        assert_eq!(cache.hits(), 2);
    }

    #[test]
    fn text_that_is_not_utf8_is_not_analyzed_nor_kept() {
        let cache = ClassifyCache::new(10);
        cache.classify("SELECT '\u{e9}', 1");
        let offline = |a: &Analysis| a.resolve(&UserFunctions::offline());
        for sql in [&b"SELECT '\xe9', 1"[..], b"SELECT \xe9, 1", b"SELECT \xe9"] {
            assert_eq!(cache.resolve(sql, plain, offline), None, "{sql:?}");
        }
        assert_eq!((cache.hits(), cache.misses(), cache.len()), (0, 4, 1));
    }

    #[test]
    fn raw_keys_never_match_fingerprints() {
        let shard = Shard::new(4);
        let fingerprinted = Key {
            normalized: true,
            text: b"SELECT \x01",
        };
        shard.insert(1, fingerprinted, plain("SELECT 1"));
        assert_eq!(held(&shard, 1, raw("SELECT \u{1}")), None);
        assert!(held(&shard, 1, fingerprinted).is_some());
    }

    #[test]
    fn shard_checks_text_on_hash_collision_and_evicts_oldest() {
        let shard = Shard::new(2);
        shard.insert(7, raw("SELECT 1"), plain("SELECT 1"));
        assert_eq!(held(&shard, 7, raw("SELECT 1")), Some(classify("SELECT 1")));
        assert_eq!(held(&shard, 7, raw("DELETE FROM t")), None);
        // A colliding statement replaces the entry without growing the shard.
        shard.insert(7, raw("DELETE FROM t"), plain("DELETE FROM t"));
        assert_eq!(held(&shard, 7, raw("SELECT 1")), None);
        assert_eq!(shard.len(), 1);
        shard.insert(8, raw("SELECT 8"), plain("SELECT 8"));
        shard.insert(9, raw("SELECT 9"), plain("SELECT 9"));
        assert_eq!(shard.len(), 2);
        assert_eq!(
            held(&shard, 7, raw("DELETE FROM t")),
            None,
            "oldest evicted"
        );
        assert!(held(&shard, 8, raw("SELECT 8")).is_some());
        assert!(held(&shard, 9, raw("SELECT 9")).is_some());
    }

    #[test]
    fn concurrent_use_is_consistent() {
        let cache = Arc::new(ClassifyCache::new(64));
        let statements: Vec<String> = (0..100)
            .map(|i| match i % 3 {
                0 => format!("SELECT {i}"),
                1 => format!("INSERT INTO t VALUES ({i})"),
                _ => format!("SELECT nextval('s{i}')"),
            })
            .collect();
        let statements = Arc::new(statements);
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let cache = Arc::clone(&cache);
                let statements = Arc::clone(&statements);
                thread::spawn(move || {
                    for round in 0..500 {
                        let sql = &statements[(t * 31 + round * 7) % statements.len()];
                        assert_eq!(cache.classify(sql), classify(sql), "{sql}");
                        assert!(cache.len() <= 64);
                    }
                })
            })
            .collect();
        for handle in threads {
            assert!(handle.join().is_ok());
        }
        assert_eq!(cache.hits() + cache.misses(), 8 * 500);
        assert!(cache.hits() > 0);
        assert!(cache.len() <= 64);
    }
}
