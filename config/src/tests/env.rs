use std::time::Duration;

use super::{env_error, from_env, ONE_USER};
use crate::AuthMethod;

#[test]
fn section_keys_are_overridden_with_typed_values() {
    let config = from_env(
        Some(ONE_USER),
        &[
            ("PGREPL_PROXY__LISTEN", "0.0.0.0:6432"),
            ("PGREPL_ROUTING__MAX_REPLICA_LAG", "250ms"),
            ("PGREPL_PRIMARY__PORT", "6000"),
            ("PGREPL_PROXY__MAX_CLIENT_CONNECTIONS", "20"),
            ("PGREPL_PROXY__MAX_MESSAGE_SIZE", "64MiB"),
            ("PGREPL_POOL__MAX_IDLE", "0"),
        ],
    )
    .unwrap();
    assert_eq!(config.proxy.listen, "0.0.0.0:6432");
    assert_eq!(config.routing.max_replica_lag, Duration::from_millis(250));
    assert_eq!(config.primary.port, 6000);
    assert_eq!(config.proxy.max_client_connections, 20);
    assert_eq!(config.proxy.max_message_size, 64 << 20);
    assert_eq!(config.pool.max_idle, 0);
}

#[test]
fn environment_wins_over_the_file() {
    let text = format!("{ONE_USER}[routing]\nmax_replica_lag = \"5s\"\n");
    let config = from_env(Some(&text), &[("PGREPL_ROUTING__MAX_REPLICA_LAG", "2s")]).unwrap();
    assert_eq!(config.routing.max_replica_lag, Duration::from_secs(2));
}

#[test]
fn names_are_case_insensitive_and_other_variables_ignored() {
    let config = from_env(
        Some(ONE_USER),
        &[
            ("pgrepl_metrics__Listen", "0.0.0.0:9000"),
            ("PATH", "/usr/bin"),
            ("PGREPLICA_HOST", "elsewhere"),
        ],
    )
    .unwrap();
    assert_eq!(config.metrics.listen, "0.0.0.0:9000");
}

#[test]
fn array_elements_are_overridden_by_index() {
    let text = format!(
        "{ONE_USER}[[replicas]]\nname = \"r1\"\nhost = \"a\"\nport = 1\n[[replicas]]\nname = \"r2\"\nhost = \"b\"\nport = 2\n"
    );
    let config = from_env(
        Some(&text),
        &[
            ("PGREPL_REPLICAS__1__HOST", "10.0.0.2"),
            ("PGREPL_USERS__0__PASSWORD", "secret"),
        ],
    )
    .unwrap();
    assert_eq!(config.replicas[0].host, "a");
    assert_eq!(config.replicas[1].host, "10.0.0.2");
    assert_eq!(config.users[0].password.as_deref(), Some("secret"));
}

#[test]
fn default_replica_is_overridden_without_a_file() {
    let config = from_env(
        None,
        &[
            ("PGREPL_REPLICAS__0__HOST", "10.0.0.2"),
            ("PGREPL_USERS__0__NAME", "app"),
            ("PGREPL_USERS__0__PASSWORD", "pw"),
        ],
    )
    .unwrap();
    assert_eq!(config.replicas.len(), 1);
    assert_eq!(config.replicas[0].name, "db02");
    assert_eq!(config.replicas[0].host, "10.0.0.2");
}

#[test]
fn an_index_one_past_the_end_appends() {
    let config = from_env(
        Some(ONE_USER),
        &[
            // Deliberately out of order: index 2 needs index 1 in place first.
            ("PGREPL_USERS__2__NAME", "third"),
            ("PGREPL_USERS__2__AUTH", "trust"),
            ("PGREPL_USERS__1__NAME", "second"),
            ("PGREPL_USERS__1__PASSWORD", "pw2"),
            ("PGREPL_USERS__1__AUTH", "md5"),
        ],
    )
    .unwrap();
    let users: Vec<(&str, Option<&str>, AuthMethod)> = config
        .users
        .iter()
        .map(|u| (u.name.as_str(), u.password.as_deref(), u.auth))
        .collect();
    assert_eq!(
        users,
        [
            ("app", Some("app-pass"), AuthMethod::ScramSha256),
            ("second", Some("pw2"), AuthMethod::Md5),
            ("third", None, AuthMethod::Trust),
        ]
    );
}

#[test]
fn a_whole_user_and_tls_section_can_come_from_the_environment() {
    let config = from_env(
        None,
        &[
            ("PGREPL_USERS__0__NAME", "app"),
            ("PGREPL_USERS__0__PASSWORD", "12345"),
        ],
    )
    .unwrap();
    assert_eq!(config.users.len(), 1);
    assert_eq!(config.users[0].name, "app");
    // A digits-only password stays a string: env values are typed by their key.
    assert_eq!(config.users[0].password.as_deref(), Some("12345"));

    let err = env_error(
        Some(ONE_USER),
        &[("PGREPL_TLS__CERT", "/nonexistent/cert.pem")],
    );
    assert_eq!(
        err,
        "environment variable PGREPL_TLS__CERT: [tls]: missing required key \"key\""
    );
}

#[test]
fn unknown_variables_are_named() {
    assert_eq!(
        env_error(Some(ONE_USER), &[("PGREPL_PROXY__LISTNE", "x")]),
        "environment variable PGREPL_PROXY__LISTNE: [proxy] listne: unknown key (known in [proxy]: \
         listen, max_client_connections, max_pending_logins, max_pending_logins_per_address, \
         connect_timeout, server_tcp_user_timeout, startup_timeout, shutdown_timeout, max_message_size, workers)"
    );
    let err = env_error(Some(ONE_USER), &[("PGREPL_CONFIG", "/etc/x.toml")]);
    assert!(
        err.starts_with(
            "environment variable PGREPL_CONFIG: unknown top-level key \"config\" (known: proxy,"
        ),
        "{err}"
    );
    let err = env_error(Some(ONE_USER), &[("PGREPL_USERS__0__PASWORD", "x")]);
    assert!(
        err.starts_with(
            "environment variable PGREPL_USERS__0__PASWORD: [[users]][0] pasword: unknown key"
        ),
        "{err}"
    );
}

#[test]
fn malformed_names_are_rejected() {
    for name in ["PGREPL_", "PGREPL_PROXY____LISTEN", "PGREPL_PROXY__"] {
        let err = env_error(Some(ONE_USER), &[(name, "x")]);
        assert_eq!(
            err,
            format!(
                "environment variable {name}: is not a config key; expected \
                 PGREPL_<SECTION>__<KEY>, e.g. PGREPL_PROXY__LISTEN"
            )
        );
    }
}

#[test]
fn structural_mistakes_are_explained() {
    assert_eq!(
        env_error(Some(ONE_USER), &[("PGREPL_USERS__3__NAME", "x")]),
        "environment variable PGREPL_USERS__3__NAME: index 3 is past the end of [users]; the \
         next new entry is index 1"
    );
    assert_eq!(
        env_error(Some(ONE_USER), &[("PGREPL_REPLICAS__HOST", "x")]),
        "environment variable PGREPL_REPLICAS__HOST: [replicas] is a list; choose an entry by \
         index, e.g. PGREPL_REPLICAS__0__HOST"
    );
    assert_eq!(
        env_error(Some(ONE_USER), &[("PGREPL_PROXY__0__LISTEN", "x")]),
        "environment variable PGREPL_PROXY__0__LISTEN: [proxy] is a table, not a list; remove \
         the index"
    );
    assert_eq!(
        env_error(Some(ONE_USER), &[("PGREPL_PROXY", "x")]),
        "environment variable PGREPL_PROXY: [proxy] is not a single value; set one of its keys, \
         e.g. PGREPL_PROXY__<KEY>"
    );
    assert_eq!(
        env_error(Some(ONE_USER), &[("PGREPL_PROXY__LISTEN__HOST", "x")]),
        "environment variable PGREPL_PROXY__LISTEN__HOST: [proxy] listen is a single value; it \
         has no part PGREPL_PROXY__LISTEN__HOST"
    );
}

#[test]
fn the_same_key_twice_is_an_error() {
    let err = env_error(
        Some(ONE_USER),
        &[
            ("PGREPL_PROXY__LISTEN", "127.0.0.1:1"),
            ("pgrepl_proxy__listen", "127.0.0.1:2"),
        ],
    );
    assert!(err.contains(": sets the same key as "), "{err}");
    assert!(err.contains("PGREPL_PROXY__LISTEN") && err.contains("pgrepl_proxy__listen"));
}

#[test]
fn bad_values_name_the_variable_and_key() {
    assert_eq!(
        env_error(Some(ONE_USER), &[("PGREPL_PRIMARY__PORT", "abc")]),
        "environment variable PGREPL_PRIMARY__PORT: [primary] port: expected a port number from \
         1 to 65535, found \"abc\""
    );
    assert_eq!(
        env_error(
            Some(ONE_USER),
            &[("PGREPL_ROUTING__MAX_REPLICA_LAG", "fast")]
        ),
        "environment variable PGREPL_ROUTING__MAX_REPLICA_LAG: [routing] max_replica_lag: \
         expected a duration like \"1s\" or \"250ms\", found \"fast\""
    );
    assert_eq!(
        env_error(Some(ONE_USER), &[("PGREPL_REPLICAS__0__NAME", "db01")]),
        "environment variable PGREPL_REPLICAS__0__NAME: [[replicas]][0] name \"db01\" is used \
         twice (also [primary] name)"
    );
    assert_eq!(
        env_error(None, &[("PGREPL_USERS__0__PASSWORD", "pw")]),
        "environment variable PGREPL_USERS__0__PASSWORD: [[users]][0]: missing required key \
         \"name\""
    );
}

#[test]
fn switches_and_log_settings_come_from_the_environment_too() {
    let config = from_env(
        Some(ONE_USER),
        &[
            ("PGREPL_METRICS__ENABLED", "off"),
            ("PGREPL_LOG__FORMAT", "JSON"),
            ("PGREPL_LOG__SLOW_STATEMENT", "250ms"),
            ("PGREPL_LOG__STATEMENT_TEXT", "yes"),
        ],
    )
    .unwrap();
    assert!(!config.metrics.enabled);
    assert_eq!(config.log.format, crate::LogFormat::Json);
    assert_eq!(config.log.slow_statement, Duration::from_millis(250));
    assert!(config.log.statement_text);
    let err = from_env(Some(ONE_USER), &[("PGREPL_LOG__STATEMENT_TEXT", "maybe")]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "environment variable PGREPL_LOG__STATEMENT_TEXT: [log] statement_text: expected true or false, found \"maybe\""
    );
}
