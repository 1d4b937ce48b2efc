//! `[pool.databases.<name>]` and `[pool.users.<name>]`: read from the file and the
//! environment, checked by the rules of the `[pool]` keys they override.

use super::{env_error, file_error, from_env, from_file, ONE_USER};
use crate::{PoolMode, PoolOverride};

#[test]
fn overrides_are_read_by_name_from_the_file() {
    let text = format!(
        "{ONE_USER}[pool]\nmode = \"session\"\n\n\
         [pool.databases.analytics]\nmode = \"transaction\"\ndefault_pool_size = 5\n\n\
         [pool.users.app]\nmin_pool_size = 1\nreserve_pool_size = 2\n"
    );
    let pool = from_file(&text).unwrap().pool;
    assert_eq!(
        pool.databases["analytics"],
        PoolOverride {
            mode: Some(PoolMode::Transaction),
            default_pool_size: Some(5),
            ..PoolOverride::default()
        }
    );
    assert_eq!(
        pool.users["app"],
        PoolOverride {
            min_pool_size: Some(1),
            reserve_pool_size: Some(2),
            ..PoolOverride::default()
        }
    );
    let effective = pool.settings_for(Some("app"), Some("analytics"));
    assert_eq!(
        (effective.mode, effective.default_pool_size),
        (PoolMode::Transaction, 5)
    );
    assert!(from_file(ONE_USER).unwrap().pool.databases.is_empty());
}

#[test]
fn overrides_are_set_from_the_environment() {
    let config = from_env(
        Some(ONE_USER),
        &[
            ("PGREPL_POOL__DATABASES__REPORTS__MODE", "transaction"),
            ("PGREPL_POOL__DATABASES__REPORTS__DEFAULT_POOL_SIZE", "3"),
            ("PGREPL_POOL__USERS__APP__MODE", "session"),
        ],
    )
    .unwrap();
    let reports = config.pool.databases["reports"];
    assert_eq!(reports.mode, Some(PoolMode::Transaction));
    assert_eq!(reports.default_pool_size, Some(3));
    assert_eq!(config.pool.users["app"].mode, Some(PoolMode::Session));
    assert_eq!(
        env_error(
            Some(ONE_USER),
            &[("PGREPL_POOL__USERS__APP__MAX_IDLE", "1")]
        ),
        "environment variable PGREPL_POOL__USERS__APP__MAX_IDLE: [pool] users.app.max_idle: \
         unknown key (known in [pool] users.app: mode, default_pool_size, min_pool_size, \
         reserve_pool_size)"
    );
}

#[test]
fn overrides_follow_the_rules_of_the_keys_they_override() {
    let error = |extra: &str| file_error(&format!("{ONE_USER}{extra}"));
    // (file after one user, error after "config file x.toml: ")
    let cases = [
        (
            "[pool.databases.a]\nmax_idle = 3\n",
            "[pool] databases.a.max_idle: unknown key (known in [pool] databases.a: mode, \
             default_pool_size, min_pool_size, reserve_pool_size)",
        ),
        (
            "[pool.databases.a]\nmode = \"statement\"\n",
            "[pool] databases.a.mode: expected one of \"session\", \"transaction\", found \
             \"statement\"",
        ),
        (
            "[pool.users.app]\ndefault_pool_size = -1\n",
            "[pool] users.app.default_pool_size: expected a non-negative integer, found -1",
        ),
        (
            "[pool]\ndatabases = 3\n",
            "[pool] databases: expected a table, found 3",
        ),
        (
            "[pool.databases]\na = 1\n",
            "[pool] databases.a: expected a table, found 1",
        ),
        (
            "[pool.users.nobody]\nmode = \"session\"\n",
            "[pool] users.nobody: expected the name of a [[users]] entry, found \"nobody\"",
        ),
        (
            "[pool.databases.a]\ndefault_pool_size = 2\nmin_pool_size = 3\n",
            "[pool] databases.a.min_pool_size: expected at most the pool's size \
             (default_pool_size, or [pool] max_server_connections), found 3",
        ),
        (
            // The override's min_pool_size against [pool]'s size.
            "[pool]\ndefault_pool_size = 4\n[pool.users.app]\nmin_pool_size = 5\n",
            "[pool] users.app.min_pool_size: expected at most the pool's size \
             (default_pool_size, or [pool] max_server_connections), found 5",
        ),
        (
            // A reserve anywhere needs a reserve_pool_timeout the wait can reach.
            "[pool]\nreserve_pool_timeout = \"3m\"\n[pool.databases.a]\nreserve_pool_size = 1\n",
            "[pool] reserve_pool_timeout: expected at most [pool] query_wait_timeout when \
             there is a reserve, found \"3m\"",
        ),
    ];
    for (extra, expected) in cases {
        assert_eq!(
            error(extra),
            format!("config file x.toml: {expected}"),
            "{extra}"
        );
    }
}
