//! The classifier a running proxy shares among its sessions: the cache, the configured
//! function lists, and the catalog look-up of user functions. A reload that changes the
//! function lists or the cache size replaces it (see [`Classifier::reconfigured`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use pgrepl_config::{Config, RoutingConfig};

use super::cache::ClassifyCache;
use super::catalog::{Catalog, UserFunctions};
use super::classify::analyze;
use super::effects::Effects;
use super::functions::Overrides;
use super::hint::CausalHint;
use super::reason::{Classification, Route};

pub struct Classifier {
    cache: ClassifyCache,
    overrides: Overrides,
    /// None when there is nobody to log in to the catalog as.
    catalog: Option<Arc<Catalog>>,
    /// Texts sqlparser could not parse (counted when analyzed, not per cached use); shared
    /// with the classifiers that replace this one.
    parse_failures: Arc<AtomicU64>,
}

impl Classifier {
    /// From `[routing]`; the catalog is read on the primary as the first `[[users]]` entry.
    pub fn new(config: &Config) -> Classifier {
        let routing = &config.routing;
        Classifier {
            cache: ClassifyCache::new(routing.classify_cache_size),
            overrides: Overrides::new(&routing.write_functions, &routing.read_only_functions),
            catalog: config.users.first().map(|user| {
                Arc::new(Catalog::new(
                    &config.primary,
                    user,
                    config.proxy.connect_timeout,
                ))
            }),
            parse_failures: Arc::default(),
        }
    }

    /// A classifier for the `[routing]` settings a reload brought: the new function lists
    /// and an empty cache of the new size (what was cached was analyzed with the old lists),
    /// the same catalog look-ups, and counts that go on from this one's.
    pub fn reconfigured(&self, routing: &RoutingConfig) -> Classifier {
        Classifier {
            cache: self.cache.replacement(routing.classify_cache_size),
            overrides: Overrides::new(&routing.write_functions, &routing.read_only_functions),
            catalog: self.catalog.clone(),
            parse_failures: self.parse_failures.clone(),
        }
    }

    /// What a session of `database` classifies with; call once per session, in a tokio
    /// context (the first session of a database starts the look-up of its functions), and
    /// await [`UserFunctions::ready`] before the first statement.
    pub fn user_functions(&self, database: &str) -> UserFunctions {
        match &self.catalog {
            Some(catalog) => catalog.user_functions(database),
            None => UserFunctions::offline(),
        }
    }

    /// Where `sql` goes and why, for a session whose database's functions are `functions`,
    /// what the statement does to the session's state, and a read's own causal-reads mode
    /// and staleness bound; None for text that is not UTF-8, which cannot be parsed. A
    /// statement that creates, changes or drops functions makes the look-up refresh.
    pub fn decide(
        &self,
        sql: &[u8],
        functions: &UserFunctions,
    ) -> Option<(Classification, Effects, CausalHint)> {
        self.cache.resolve(
            sql,
            |sql| {
                let analysis = analyze(sql, &self.overrides);
                if analysis.unparseable() {
                    self.parse_failures.fetch_add(1, Ordering::Relaxed);
                }
                analysis
            },
            |analysis| {
                let classification = analysis.resolve(functions);
                // A hint of a read that the catalog sends to the primary means nothing.
                let hint = match classification.route {
                    Route::Replica => analysis.causal_hint(),
                    Route::Primary => CausalHint::NONE,
                };
                (classification, analysis.effects(), hint)
            },
        )
    }

    /// Classification cache look-ups answered from the cache, and those that were not.
    pub fn cache_hits_misses(&self) -> (u64, u64) {
        (self.cache.hits(), self.cache.misses())
    }

    /// Statements sqlparser could not parse (they went to the primary).
    pub fn parse_failures(&self) -> u64 {
        self.parse_failures.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Classifier {
        /// Where `sql` goes and why.
        fn classify(&self, sql: &str, functions: &UserFunctions) -> Classification {
            self.decide(sql.as_bytes(), functions).unwrap().0
        }
    }

    /// Configured: `audit.log_it` writes, `my_random` and `util.pick` are read-only.
    fn classifier() -> Classifier {
        let mut config = Config::default();
        config.routing.write_functions = vec!["audit.log_it".into()];
        config.routing.read_only_functions = vec!["my_random".into(), "util.pick".into()];
        Classifier::new(&config)
    }

    /// A database where `writer`, `public.my_random`, `util.pick` and `app.bump` are volatile,
    /// `reader`, `stable_one` and the built-in `abs` are not, and `order_seq` is a sequence.
    fn database() -> UserFunctions {
        UserFunctions::loaded(
            &[
                ("app", "bump"),
                ("public", "my_random"),
                ("public", "writer"),
                ("util", "pick"),
            ],
            &[
                ("pg_catalog", "abs"),
                ("public", "reader"),
                ("public", "stable_one"),
            ],
            &[("public", "order_seq")],
        )
    }

    #[test]
    fn user_functions_by_catalog_and_configuration() {
        let classifier = classifier();
        let loaded = database();
        let unloaded = UserFunctions::unloaded();
        let offline = UserFunctions::offline();
        // (sql, functions, expected)
        let cases: &[(&str, &UserFunctions, &str)] = &[
            ("SELECT writer()", &loaded, "primary: function (writer)"),
            (
                "SELECT public.writer()",
                &loaded,
                "primary: function (public.writer)",
            ),
            (
                "SELECT x FROM t WHERE y = writer(x)",
                &loaded,
                "primary: function (writer)",
            ),
            (
                "SELECT * FROM writer()",
                &loaded,
                "primary: function (writer)",
            ),
            (
                "SELECT lower(a), bump(1) FROM t",
                &loaded,
                "primary: function (bump)",
            ),
            (
                "SELECT app.bump(1)",
                &loaded,
                "primary: function (app.bump)",
            ),
            ("SELECT reader(), stable_one(2)", &loaded, "replica: read"),
            ("SELECT abs(a) FROM t", &loaded, "replica: read"),
            // A function the look-up has not seen is volatile (created without the proxy).
            (
                "SELECT other.bump(1)",
                &loaded,
                "primary: function (other.bump)",
            ),
            ("SELECT \"Writer\"()", &loaded, "primary: function (Writer)"),
            (
                "SELECT created_since()",
                &loaded,
                "primary: function (created_since)",
            ),
            (
                "SELECT public.reader(), app.reader()",
                &loaded,
                "primary: function (app.reader)",
            ),
            // Sequences read as relations answer for the server that reads them.
            (
                "SELECT last_value FROM order_seq",
                &loaded,
                "primary: node_local (order_seq)",
            ),
            (
                "SELECT * FROM t JOIN public.order_seq s ON true",
                &loaded,
                "primary: node_local (public.order_seq)",
            ),
            (
                "SELECT 1 UNION ALL TABLE order_seq",
                &loaded,
                "primary: node_local (order_seq)",
            ),
            ("SELECT * FROM app.order_seq", &loaded, "replica: read"),
            ("SELECT * FROM orders", &loaded, "replica: read"),
            ("SELECT * FROM order_seq", &unloaded, "replica: read"),
            (
                "/* pgrepl:replica */ SELECT * FROM order_seq",
                &loaded,
                "replica: hint",
            ),
            (
                "SELECT * FROM pg_stat_activity, order_seq",
                &loaded,
                "primary: node_local (pg_stat_activity)",
            ),
            (
                "SELECT nextval('order_seq') FROM order_seq",
                &loaded,
                "primary: function (nextval)",
            ),
            (
                "SELECT 1; SELECT writer()",
                &loaded,
                "primary: function (writer)",
            ),
            (
                "EXPLAIN SELECT writer()",
                &loaded,
                "primary: function (writer)",
            ),
            (
                "SELECT writer(); INSERT INTO t VALUES (1)",
                &loaded,
                "primary: write (INSERT)",
            ),
            // Until the set is loaded, any user function may be volatile...
            ("SELECT reader()", &unloaded, "primary: function (reader)"),
            // ...but built-ins are known without it.
            (
                "SELECT count(*), lower(a), now(), random() FROM t",
                &unloaded,
                "replica: read",
            ),
            (
                "SELECT pg_catalog.anything(a) FROM t",
                &unloaded,
                "replica: read",
            ),
            ("SELECT 1", &unloaded, "replica: read"),
            // Without a catalog only the configuration judges.
            ("SELECT writer()", &offline, "replica: read"),
            // read_only_functions keep a volatile function a read; a qualified entry only in
            // its schema.
            ("SELECT my_random()", &loaded, "replica: read"),
            ("SELECT util.pick()", &loaded, "replica: read"),
            ("SELECT pick()", &loaded, "primary: function (pick)"),
            // write_functions send it to the primary whatever the catalog says.
            (
                "SELECT audit.log_it('x')",
                &offline,
                "primary: function (audit.log_it)",
            ),
            ("SELECT log_it('x')", &loaded, "primary: function (log_it)"),
            ("SELECT other.log_it('x')", &offline, "replica: read"),
            // A hint cannot send a volatile call to the replica.
            (
                "/* pgrepl:replica */ SELECT writer()",
                &loaded,
                "primary: function (writer)",
            ),
            (
                "/* pgrepl:replica */ SELECT reader()",
                &loaded,
                "replica: hint",
            ),
            // Nor hide that a call under a primary hint writes: later reads must wait for it.
            (
                "/* pgrepl:primary */ SELECT writer()",
                &loaded,
                "primary: function (writer)",
            ),
            (
                "/* pgrepl:primary */ SELECT reader()",
                &unloaded,
                "primary: function (reader)",
            ),
            (
                "/* pgrepl:primary */ SELECT reader()",
                &loaded,
                "primary: hint",
            ),
        ];
        let mut failures = Vec::new();
        // Twice: the second round comes from the cache.
        for round in 0..2 {
            for (sql, functions, want) in cases {
                let got = classifier.classify(sql, functions).to_string();
                if got != *want {
                    failures.push(format!("round {round}: {sql:?}: got {got}, want {want}"));
                }
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn sequences_created_through_the_proxy_count_at_once() {
        let classifier = classifier();
        let functions = database();
        let read = "SELECT last_value, log_cnt FROM fresh";
        assert_eq!(
            classifier.classify(read, &functions).to_string(),
            "replica: read"
        );
        assert_eq!(
            classifier
                .classify("CREATE SEQUENCE app.fresh", &functions)
                .to_string(),
            "primary: ddl (CREATE SEQUENCE)"
        );
        assert_eq!(
            classifier.classify(read, &functions).to_string(),
            "primary: node_local (fresh)"
        );
        classifier.classify("CREATE TABLE items (id serial)", &functions);
        assert_eq!(
            classifier
                .classify("SELECT * FROM items_id_seq", &functions)
                .to_string(),
            "primary: node_local (items_id_seq)"
        );
        assert_eq!(
            classifier
                .classify("SELECT reader()", &functions)
                .to_string(),
            "replica: read",
            "making sequences changes no function"
        );
    }

    #[test]
    fn a_reconfigured_classifier_judges_by_the_new_lists_and_counts_on() {
        let classifier = classifier();
        let offline = UserFunctions::offline();
        let judge = |c: &Classifier, sql| c.classify(sql, &offline).to_string();
        assert_eq!(
            judge(&classifier, "SELECT audit.log_it(1)"),
            "primary: function (audit.log_it)"
        );
        assert_eq!(judge(&classifier, "SELECT now_log(1)"), "replica: read");
        let mut routing = Config::default().routing;
        routing.write_functions = vec!["now_log".into()];
        let reloaded = classifier.reconfigured(&routing);
        assert_eq!(judge(&reloaded, "SELECT audit.log_it(1)"), "replica: read");
        assert_eq!(
            judge(&reloaded, "SELECT now_log(1)"),
            "primary: function (now_log)",
            "not the old cached analysis"
        );
        judge(&reloaded, "SELECT (");
        assert_eq!(classifier.cache_hits_misses(), (0, 5));
        assert_eq!(classifier.parse_failures(), 1, "counted by both");
    }

    #[test]
    fn the_cache_is_shared_across_databases() {
        let classifier = classifier();
        let (loaded, offline) = (database(), UserFunctions::offline());
        assert_eq!(
            classifier
                .classify("SELECT writer(1)", &offline)
                .to_string(),
            "replica: read"
        );
        let got = classifier.classify("SELECT writer(2)", &loaded);
        assert_eq!(got.to_string(), "primary: function (writer)");
        assert_eq!((classifier.cache.hits(), classifier.cache.misses()), (1, 1));
    }

    #[test]
    fn changing_functions_marks_them_unknown_even_from_the_cache() {
        let classifier = classifier();
        let create = "CREATE OR REPLACE FUNCTION reader() RETURNS int VOLATILE \
                      LANGUAGE sql AS 'SELECT 1'";
        for round in 0..2 {
            let functions = database();
            let generation = functions.generation();
            assert_eq!(
                classifier
                    .classify("SELECT reader()", &functions)
                    .to_string(),
                "replica: read"
            );
            assert_eq!(
                classifier.classify(create, &functions).to_string(),
                "primary: ddl (CREATE FUNCTION)"
            );
            assert_ne!(functions.generation(), generation, "round {round}");
            assert_eq!(
                classifier
                    .classify("SELECT reader()", &functions)
                    .to_string(),
                "primary: function (reader)",
                "round {round}"
            );
        }
        assert!(classifier.cache.hits() >= 3);
    }

    #[test]
    fn no_users_means_no_catalog() {
        let classifier = classifier();
        assert!(classifier.catalog.is_none());
        assert_eq!(classifier.user_functions("appdb").generation(), 0);
    }
}
