//! Settings a reload replaces while sessions run. Each is published whole, as an `Arc`, with a
//! generation number: a session keeps its own copy and, at an idle point, compares the
//! generation (one relaxed load) and takes the new copy only when it changed. A statement
//! never takes a lock to read them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use pgrepl_config::{Config, ReadYourWrites, TransactionReads};

use crate::route::Classifier;

/// A value replaced whole, numbered by generation.
pub struct Published<T> {
    generation: AtomicU64,
    current: Mutex<Arc<T>>,
}

impl<T> Published<T> {
    pub fn new(value: T) -> Published<T> {
        Published {
            generation: AtomicU64::new(1),
            current: Mutex::new(Arc::new(value)),
        }
    }

    /// The generation now; a copy taken at another one is out of date. Relaxed: a session
    /// that sees a change late takes it at its next idle point.
    #[inline]
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// The value now, with its generation.
    pub fn load(&self) -> (u64, Arc<T>) {
        let current = self.locked();
        (self.generation(), current.clone())
    }

    /// The value now.
    pub fn get(&self) -> Arc<T> {
        self.locked().clone()
    }

    /// Replaces the value: copies taken before are out of date.
    pub fn publish(&self, value: T) {
        let mut current = self.locked();
        *current = Arc::new(value);
        self.generation.fetch_add(1, Ordering::Relaxed);
    }

    fn locked(&self) -> MutexGuard<'_, Arc<T>> {
        // Replaced whole under the lock: a panic cannot leave half a value.
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The `[routing]` settings a session reads per statement.
pub struct RoutingSettings {
    /// `read_your_writes`: a session's mode unless it sets its own.
    pub read_your_writes: ReadYourWrites,
    pub causal_wait: Duration,
    pub transaction_reads: TransactionReads,
    /// Built from `write_functions`, `read_only_functions` and `classify_cache_size`.
    pub classifier: Arc<Classifier>,
}

impl RoutingSettings {
    pub fn new(config: &Config) -> RoutingSettings {
        RoutingSettings::with_classifier(config, Arc::new(Classifier::new(config)))
    }

    /// The settings of `config` (a reload's): the classifier is replaced only when the
    /// function lists or the cache size changed, so the cache is kept otherwise.
    pub fn reloaded(&self, before: &Config, config: &Config) -> RoutingSettings {
        let (old, new) = (&before.routing, &config.routing);
        let same_classifier = old.write_functions == new.write_functions
            && old.read_only_functions == new.read_only_functions
            && old.classify_cache_size == new.classify_cache_size;
        let classifier = if same_classifier {
            self.classifier.clone()
        } else {
            Arc::new(self.classifier.reconfigured(new))
        };
        RoutingSettings::with_classifier(config, classifier)
    }

    fn with_classifier(config: &Config, classifier: Arc<Classifier>) -> RoutingSettings {
        RoutingSettings {
            read_your_writes: config.routing.read_your_writes,
            causal_wait: config.routing.causal_wait,
            transaction_reads: config.routing.transaction_reads,
            classifier,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_publication_dates_earlier_copies() {
        let published = Published::new("first");
        let (generation, first) = published.load();
        assert_eq!(*first, "first");
        assert_eq!(published.generation(), generation);
        published.publish("second");
        assert_ne!(published.generation(), generation);
        assert_eq!(*published.get(), "second");
        assert_eq!(*first, "first", "a copy taken stays as it was");
    }

    #[test]
    fn the_classifier_is_rebuilt_only_for_the_settings_it_is_built_from() {
        let config = Config::default();
        let settings = RoutingSettings::new(&config);
        let mut changed = config.clone();
        changed.routing.read_your_writes = ReadYourWrites::Off;
        changed.routing.causal_wait = Duration::from_millis(5);
        let reloaded = settings.reloaded(&config, &changed);
        assert!(Arc::ptr_eq(&reloaded.classifier, &settings.classifier));
        assert_eq!(reloaded.read_your_writes, ReadYourWrites::Off);
        assert_eq!(reloaded.causal_wait, Duration::from_millis(5));
        for change in [
            |c: &mut Config| c.routing.write_functions = vec!["f".into()],
            |c: &mut Config| c.routing.read_only_functions = vec!["f".into()],
            |c: &mut Config| c.routing.classify_cache_size = 7,
        ] {
            let mut changed = config.clone();
            change(&mut changed);
            let reloaded = settings.reloaded(&config, &changed);
            assert!(!Arc::ptr_eq(&reloaded.classifier, &settings.classifier));
        }
    }
}
