//! What a reload changes: the configuration loaded anew compared with the one in force, key
//! by key, user by user and replica by replica. Pure: the reloader applies it.

use std::collections::BTreeMap;

use pgrepl_config::{BackendConfig, Config, PoolOverride, UserConfig};

use crate::backend::BackendId;

/// A key a reload compares: its name as the README spells it, whether two configurations
/// differ in it, and how to keep the value in force.
struct Key {
    name: &'static str,
    differs: fn(&Config, &Config) -> bool,
    keep: fn(&mut Config, &Config),
}

macro_rules! key {
    ($name:literal, $($field:ident).+) => {
        Key {
            name: $name,
            differs: |a, b| a.$($field).+ != b.$($field).+,
            keep: |new, old| new.$($field).+ = old.$($field).+.clone(),
        }
    };
}

/// One key of the `[pool.databases.*]` or `[pool.users.*]` tables, compared over every
/// table that sets it, and kept table by table.
macro_rules! override_key {
    ($name:literal, $tables:ident . $field:ident) => {
        Key {
            name: $name,
            differs: |a, b| {
                overridden(&a.pool.$tables, |o| &mut o.$field)
                    != overridden(&b.pool.$tables, |o| &mut o.$field)
            },
            keep: |new, old| {
                keep_overridden(&mut new.pool.$tables, &old.pool.$tables, |o| &mut o.$field)
            },
        }
    };
}

/// One key of a pool override.
type OverrideKey<T> = fn(&mut PoolOverride) -> &mut Option<T>;

/// The tables of `overrides` that set `key`, with its value.
fn overridden<T: Copy>(
    overrides: &BTreeMap<String, PoolOverride>,
    key: OverrideKey<T>,
) -> Vec<(&str, T)> {
    overrides
        .iter()
        .filter_map(|(name, over)| {
            let mut over = *over;
            key(&mut over).map(|value| (name.as_str(), value))
        })
        .collect()
}

/// Sets `key` in `new`'s tables as `old`'s have it.
fn keep_overridden<T: Copy>(
    new: &mut BTreeMap<String, PoolOverride>,
    old: &BTreeMap<String, PoolOverride>,
    key: OverrideKey<T>,
) {
    for over in new.values_mut() {
        *key(over) = None;
    }
    for (name, value) in overridden(old, key) {
        *key(new.entry(name.to_owned()).or_default()) = Some(value);
    }
}

/// Keys a running proxy cannot change: a reload names them in a warning and keeps the values
/// in force until a restart.
const NEEDS_RESTART: &[Key] = &[
    key!("[proxy] listen", proxy.listen),
    key!("[proxy] workers", proxy.workers),
    key!("[proxy] connect_timeout", proxy.connect_timeout),
    key!(
        "[proxy] server_tcp_user_timeout",
        proxy.server_tcp_user_timeout
    ),
    key!("[proxy] startup_timeout", proxy.startup_timeout),
    key!("[proxy] shutdown_timeout", proxy.shutdown_timeout),
    key!("[proxy] max_pending_logins", proxy.max_pending_logins),
    key!(
        "[proxy] max_pending_logins_per_address",
        proxy.max_pending_logins_per_address
    ),
    key!("[primary] name", primary.name),
    key!("[primary] host", primary.host),
    key!("[primary] port", primary.port),
    key!("[primary] promotable", primary.promotable),
    key!("[routing] follow_primary", routing.follow_primary),
    key!(
        "[routing] writer_confirmations",
        routing.writer_confirmations
    ),
    key!("[routing] writer_wait", routing.writer_wait),
    key!("[metrics] listen", metrics.listen),
    key!("[metrics] enabled", metrics.enabled),
    key!("[log] format", log.format),
    key!("[log] slow_statement", log.slow_statement),
    key!("[log] statement_text", log.statement_text),
    key!("[health] interval", health.interval),
    key!("[tls]", tls),
    key!("[pool] mode", pool.mode),
    override_key!("[pool.databases.*] mode", databases.mode),
    override_key!("[pool.users.*] mode", users.mode),
];

/// `[log] level`: applied, unless `RUST_LOG` was set at start.
const LOG_LEVEL: Key = key!("[log] level", log.level);

/// Keys a reload applies, besides `[[users]]` and `[[replicas]]`.
const APPLIED: &[Key] = &[
    key!(
        "[proxy] max_client_connections",
        proxy.max_client_connections
    ),
    key!("[proxy] max_message_size", proxy.max_message_size),
    key!("[pool] default_pool_size", pool.default_pool_size),
    key!("[pool] min_pool_size", pool.min_pool_size),
    key!("[pool] reserve_pool_size", pool.reserve_pool_size),
    override_key!(
        "[pool.databases.*] default_pool_size",
        databases.default_pool_size
    ),
    override_key!("[pool.databases.*] min_pool_size", databases.min_pool_size),
    override_key!(
        "[pool.databases.*] reserve_pool_size",
        databases.reserve_pool_size
    ),
    override_key!("[pool.users.*] default_pool_size", users.default_pool_size),
    override_key!("[pool.users.*] min_pool_size", users.min_pool_size),
    override_key!("[pool.users.*] reserve_pool_size", users.reserve_pool_size),
    key!("[pool] reserve_pool_timeout", pool.reserve_pool_timeout),
    key!("[pool] max_server_connections", pool.max_server_connections),
    key!("[pool] query_wait_timeout", pool.query_wait_timeout),
    key!("[pool] max_idle", pool.max_idle),
    key!("[pool] server_idle_timeout", pool.server_idle_timeout),
    key!("[pool] server_lifetime", pool.server_lifetime),
    key!(
        "[pool] max_prepared_statements",
        pool.max_prepared_statements
    ),
    key!("[admin] database", admin.database),
    key!("[admin] users", admin.users),
    key!("[admin] pause_timeout", admin.pause_timeout),
    key!("[routing] max_replica_lag", routing.max_replica_lag),
    key!("[routing] classify_cache_size", routing.classify_cache_size),
    key!("[routing] read_your_writes", routing.read_your_writes),
    key!("[routing] causal_wait", routing.causal_wait),
    key!("[routing] transaction_reads", routing.transaction_reads),
    key!("[routing] balance", routing.balance),
    key!("[routing] write_functions", routing.write_functions),
    key!("[routing] read_only_functions", routing.read_only_functions),
];

/// The name of what stays as it is when the first `[[users]]` entry changes.
const MONITOR_LOGIN: &str = "the first [[users]] entry (the health monitor's and catalog's login)";

/// What the reload does.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// What the proxy runs with afterwards: the loaded configuration, except that the keys
    /// that need a restart keep the values in force.
    pub config: Config,
    /// Keys the loaded configuration changes that need a restart.
    pub needs_restart: Vec<&'static str>,
    /// Keys it changes that apply now (not counting users and replicas).
    pub keys: Vec<&'static str>,
    pub users: UserChanges,
}

impl Plan {
    /// `in_force` is what the proxy runs with, `loaded` what the configuration says now.
    /// `login` is the user the monitor logs in as; `log_level_fixed`: `RUST_LOG` was set at
    /// start and decides the log level.
    pub fn new(
        in_force: &Config,
        loaded: Config,
        login: &UserConfig,
        log_level_fixed: bool,
    ) -> Plan {
        let mut config = loaded;
        let mut needs_restart = Vec::new();
        let fixed = NEEDS_RESTART
            .iter()
            .chain(log_level_fixed.then_some(&LOG_LEVEL));
        for key in fixed {
            if (key.differs)(in_force, &config) {
                needs_restart.push(key.name);
                (key.keep)(&mut config, in_force);
            }
        }
        let first = config.users.first();
        if first.is_none_or(|u| u.name != login.name || u.password != login.password) {
            needs_restart.push(MONITOR_LOGIN);
        }
        let applied = APPLIED
            .iter()
            .chain((!log_level_fixed).then_some(&LOG_LEVEL));
        let keys = applied
            .filter(|key| (key.differs)(in_force, &config))
            .map(|key| key.name)
            .collect();
        Plan {
            users: UserChanges::between(&in_force.users, &config.users),
            config,
            needs_restart,
            keys,
        }
    }

    /// Whether it changes `key` (a name from the tables above).
    pub fn changes(&self, key: &str) -> bool {
        self.keys.contains(&key)
    }

    /// Whether it changes any `[routing]` key but `max_replica_lag` and `balance` (those
    /// live in the monitor's state and the balancer, not in the sessions' copy).
    pub fn changes_session_routing(&self) -> bool {
        self.keys.iter().any(|key| {
            key.starts_with("[routing]")
                && !matches!(*key, "[routing] max_replica_lag" | "[routing] balance")
        })
    }

    /// Whether it changes any `[pool]` key, overrides included.
    pub fn changes_pool(&self) -> bool {
        self.keys.iter().any(|key| key.starts_with("[pool"))
    }
}

/// Users by name: added, removed, and those whose password or method changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserChanges {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
}

impl UserChanges {
    fn between(old: &[UserConfig], new: &[UserConfig]) -> UserChanges {
        let find = |list: &'_ [UserConfig], name: &str| list.iter().position(|u| u.name == name);
        let names = |list: &[UserConfig], keep: &dyn Fn(&UserConfig) -> bool| {
            list.iter()
                .filter(|u| keep(u))
                .map(|u| u.name.clone())
                .collect()
        };
        UserChanges {
            added: names(new, &|u| find(old, &u.name).is_none()),
            removed: names(old, &|u| find(new, &u.name).is_none()),
            changed: names(new, &|u| find(old, &u.name).is_some_and(|i| old[i] != *u)),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

/// A replica the proxy has now, as the registry knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Running<'a> {
    pub id: BackendId,
    pub name: &'a str,
    pub host: &'a str,
    pub port: u16,
    pub promotable: bool,
}

/// The replicas of a reloaded `[[replicas]]` (or `[[nodes]]` after the first) against those
/// running. A replica is the same one when its name, address and `promotable` are: a name at
/// another address, or made (not) promotable, is a new replica (it gets a new id, and the
/// one before is retired).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplicaChanges<'a> {
    /// Running replicas that stay, with their weights from now on.
    pub kept: Vec<(BackendId, u32)>,
    /// Configured replicas not running: each gets a new id.
    pub added: Vec<&'a BackendConfig>,
    /// Running replicas no longer configured.
    pub retired: Vec<BackendId>,
}

impl<'a> ReplicaChanges<'a> {
    pub fn between(running: &[Running<'_>], wanted: &'a [BackendConfig]) -> ReplicaChanges<'a> {
        let same = |r: &Running<'_>, b: &BackendConfig| {
            r.name == b.name && r.host == b.host && r.port == b.port && r.promotable == b.promotable
        };
        let mut changes = ReplicaChanges::default();
        for replica in wanted {
            match running.iter().find(|r| same(r, replica)) {
                Some(r) => changes.kept.push((r.id, replica.weight)),
                None => changes.added.push(replica),
            }
        }
        changes.retired = running
            .iter()
            .filter(|r| !wanted.iter().any(|b| same(r, b)))
            .map(|r| r.id)
            .collect();
        changes
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use pgrepl_config::{AuthMethod, Balance, LogFormat, PoolMode, ReadYourWrites, TlsConfig};

    use super::*;

    fn user(name: &str, password: &str) -> UserConfig {
        UserConfig {
            name: name.to_owned(),
            password: Some(password.to_owned()),
            auth: AuthMethod::ScramSha256,
        }
    }

    fn in_force() -> Config {
        Config {
            users: vec![user("app", "secret"), user("reporting", "r")],
            ..Config::default()
        }
    }

    type Change = fn(&mut Config);

    #[test]
    fn keys_that_need_a_restart_are_named_and_kept_the_others_apply() {
        // (change, keys needing a restart, keys applied)
        let cases: &[(Change, &[&str], &[&str])] = &[
            (|_| {}, &[], &[]),
            (
                |c| c.proxy.listen = "127.0.0.1:7000".into(),
                &["[proxy] listen"],
                &[],
            ),
            (
                |c| {
                    c.metrics.listen = "127.0.0.1:9999".into();
                    c.proxy.workers = 3;
                },
                &["[proxy] workers", "[metrics] listen"],
                &[],
            ),
            (|c| c.primary.port = 6000, &["[primary] port"], &[]),
            (|c| c.primary.weight = 9, &[], &[]),
            (
                |c| {
                    c.primary.promotable = false;
                    c.routing.follow_primary = true;
                },
                &["[primary] promotable", "[routing] follow_primary"],
                &[],
            ),
            (
                |c| {
                    c.tls = Some(TlsConfig {
                        cert: "c.pem".into(),
                        key: "k.pem".into(),
                    })
                },
                &["[tls]"],
                &[],
            ),
            (|c| c.log.format = LogFormat::Json, &["[log] format"], &[]),
            (|c| c.log.level = "debug".into(), &[], &["[log] level"]),
            (
                |c| {
                    c.routing.read_your_writes = ReadYourWrites::Off;
                    c.routing.balance = Balance::Random;
                    c.pool.max_idle = 3;
                    c.proxy.max_client_connections = 5;
                },
                &[],
                &[
                    "[proxy] max_client_connections",
                    "[pool] max_idle",
                    "[routing] read_your_writes",
                    "[routing] balance",
                ],
            ),
            (
                |c| {
                    c.proxy.listen = "127.0.0.1:7000".into();
                    c.routing.causal_wait = Duration::from_millis(1);
                },
                &["[proxy] listen"],
                &["[routing] causal_wait"],
            ),
            (
                |c| c.users[0].password = Some("new".into()),
                &[MONITOR_LOGIN],
                &[],
            ),
            (|c| c.users.reverse(), &[MONITOR_LOGIN], &[]),
            (|c| c.users[1].password = Some("changed".into()), &[], &[]),
        ];
        let old = in_force();
        for (i, (change, restart, applied)) in cases.iter().enumerate() {
            let mut loaded = old.clone();
            change(&mut loaded);
            let plan = Plan::new(&old, loaded.clone(), &old.users[0], false);
            assert_eq!(plan.needs_restart, *restart, "case {i}");
            assert_eq!(plan.keys, *applied, "case {i}");
            // What needs a restart is kept; the rest is what was loaded.
            let mut expected = loaded;
            for key in NEEDS_RESTART {
                (key.keep)(&mut expected, &old);
            }
            assert_eq!(plan.config, expected, "case {i}");
        }
    }

    #[test]
    fn override_modes_are_kept_until_a_restart_their_sizes_apply() {
        let over = |mode, size, min| PoolOverride {
            mode,
            default_pool_size: size,
            min_pool_size: min,
            reserve_pool_size: None,
        };
        let (session, transaction) = (Some(PoolMode::Session), Some(PoolMode::Transaction));
        let mut old = in_force();
        old.pool.databases = [("a".into(), over(transaction, None, None))].into();
        old.pool.users = [("app".into(), over(session, Some(3), None))].into();
        let mut loaded = old.clone();
        loaded.pool.databases = [("b".into(), over(transaction, None, Some(1)))].into();
        loaded.pool.users = [("app".into(), over(None, Some(5), None))].into();
        let plan = Plan::new(&old, loaded, &old.users[0], false);
        assert_eq!(
            plan.needs_restart,
            ["[pool.databases.*] mode", "[pool.users.*] mode"]
        );
        assert_eq!(
            plan.keys,
            [
                "[pool.databases.*] min_pool_size",
                "[pool.users.*] default_pool_size"
            ]
        );
        assert!(plan.changes_pool());
        let pool = &plan.config.pool;
        let databases = [
            ("a".into(), over(transaction, None, None)),
            ("b".into(), over(None, None, Some(1))),
        ];
        assert_eq!(pool.databases, databases.into());
        assert_eq!(
            pool.users,
            [("app".into(), over(session, Some(5), None))].into()
        );
    }

    #[test]
    fn with_rust_log_set_the_log_level_needs_a_restart() {
        let old = in_force();
        let mut loaded = old.clone();
        loaded.log.level = "debug".into();
        let plan = Plan::new(&old, loaded, &old.users[0], true);
        assert_eq!(plan.needs_restart, ["[log] level"]);
        assert!(plan.keys.is_empty());
        assert_eq!(plan.config.log.level, "info");
    }

    #[test]
    fn routing_keys_split_between_the_sessions_copy_and_the_shared_state() {
        // (key changed, sessions' copy, pool)
        let cases: &[(Change, bool, bool)] = &[
            (
                |c| c.routing.max_replica_lag = Duration::from_secs(9),
                false,
                false,
            ),
            (|c| c.routing.balance = Balance::Random, false, false),
            (
                |c| c.routing.transaction_reads = pgrepl_config::TransactionReads::Replica,
                true,
                false,
            ),
            (|c| c.routing.classify_cache_size = 1, true, false),
            (
                |c| c.routing.write_functions = vec!["f".into()],
                true,
                false,
            ),
            (
                |c| c.pool.server_idle_timeout = Duration::from_secs(1),
                false,
                true,
            ),
            (|c| c.pool.max_server_connections = 1, false, true),
        ];
        let old = in_force();
        for (i, (change, sessions, pool)) in cases.iter().enumerate() {
            let mut loaded = old.clone();
            change(&mut loaded);
            let plan = Plan::new(&old, loaded, &old.users[0], false);
            assert_eq!(plan.changes_session_routing(), *sessions, "case {i}");
            assert_eq!(plan.changes_pool(), *pool, "case {i}");
        }
    }

    #[test]
    fn users_are_compared_by_name() {
        let old = vec![user("a", "1"), user("b", "2"), user("c", "3")];
        let mut new = vec![user("c", "3"), user("b", "two"), user("d", "4")];
        new[0].auth = AuthMethod::Md5;
        let changes = UserChanges::between(&old, &new);
        assert_eq!(changes.added, ["d"]);
        assert_eq!(changes.removed, ["a"]);
        assert_eq!(changes.changed, ["c", "b"]);
        assert!(UserChanges::between(&old, &old).is_empty());
    }

    #[test]
    fn replicas_are_the_same_by_name_and_address() {
        let replica = |name: &str, port: u16, weight: u32| BackendConfig {
            name: name.to_owned(),
            host: "10.0.0.1".to_owned(),
            port,
            weight,
            promotable: false,
        };
        let running = |id: usize, name: &'static str, port: u16| Running {
            id: BackendId::nth(id),
            name,
            host: "10.0.0.1",
            port,
            promotable: false,
        };
        let now = [
            running(1, "r1", 5432),
            running(2, "r2", 5432),
            running(4, "r3", 5432),
        ];
        let wanted = [
            replica("r2", 5432, 3),
            replica("r3", 6543, 1),
            replica("r4", 5432, 1),
        ];
        let changes = ReplicaChanges::between(&now, &wanted);
        assert_eq!(changes.kept, [(BackendId::nth(2), 3)], "reweighted");
        let added: Vec<&str> = changes.added.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(added, ["r3", "r4"], "moved, and new");
        assert_eq!(changes.retired, [BackendId::nth(1), BackendId::nth(4)]);
        let mut promoted = wanted[..1].to_vec();
        promoted[0].promotable = true;
        let changes = ReplicaChanges::between(&now[1..2], &promoted);
        assert_eq!(
            changes.retired,
            [BackendId::nth(2)],
            "made promotable: anew"
        );
        assert_eq!(changes.added.len(), 1);
        let same = ReplicaChanges::between(&now[..1], &wanted[..0]);
        assert_eq!(same.retired, [BackendId::nth(1)]);
        assert!(ReplicaChanges::between(&[], &[]).kept.is_empty());
    }
}
