use super::{file_error, ONE_USER};

/// `extra` followed by one user (so top-level keys stay top-level), whose error message must equal `expected`.
fn assert_error(extra: &str, expected: &str) {
    let text = format!("{extra}{ONE_USER}");
    assert_eq!(file_error(&text), format!("config file x.toml: {expected}"));
}

#[test]
fn toml_syntax_errors_keep_the_position() {
    let err = file_error("[proxy]\nlisten = \"a\"\nmax_client_connections = = 3\n");
    assert!(err.starts_with("config file x.toml: line 3: "), "{err}");
    assert!(err.ends_with("(column 26)"), "{err}");
    let err = file_error("[proxy]\nlisten = \"a\"\nlisten = \"b\"\n");
    assert!(err.starts_with("config file x.toml: line 3: "), "{err}");
    assert!(err.contains("duplicate key"), "{err}");
}

#[test]
fn unknown_keys_are_named() {
    assert_error(
        "[routing]\nmax_replica_lagg = \"1s\"\n",
        "[routing] max_replica_lagg: unknown key (known in [routing]: max_replica_lag, \
         classify_cache_size, read_your_writes, causal_wait, \
         transaction_reads, balance, write_functions, read_only_functions, follow_primary, \
         writer_confirmations, writer_wait)",
    );
    assert_error(
        "[[replicas]]\nname = \"r\"\nhost = \"h\"\nport = 1\nhots = \"h\"\n",
        "[[replicas]][0] hots: unknown key (known in [[replicas]][0]: name, host, port, weight, promotable)",
    );
    assert_error(
        "[metric]\nlisten = \"x\"\n",
        "unknown top-level key \"metric\" (known: proxy, primary, replicas, nodes, users, pool, \
         routing, metrics, log, health, tls, provision, admin)",
    );
}

#[test]
fn wrong_types_say_what_was_expected_and_found() {
    assert_error(
        "[routing]\nmax_replica_lag = \"fast\"\n",
        "[routing] max_replica_lag: expected a duration like \"1s\" or \"250ms\", found \"fast\"",
    );
    assert_error(
        "[routing]\nmax_replica_lag = \"10ms\"\ncausal_wait = \"20ms\"\n",
        "[routing] causal_wait: expected at most [routing] max_replica_lag, found \"20ms\"",
    );
    assert_error(
        "[admin]\nusers = [\"ops\"]\n",
        "[admin] users: expected names of [[users]] entries, found \"ops\"",
    );
    assert_error(
        "[admin]\ndatabase = \" \"\n",
        "[admin] database: expected a non-empty string, found \" \"",
    );
    assert_error(
        "[health]\ninterval = 5\n",
        "[health] interval: expected a duration like \"1s\" or \"250ms\", found 5",
    );
    assert_error(
        "[proxy]\nmax_message_size = \"lots\"\n",
        "[proxy] max_message_size: expected a size in bytes like 1048576, \"64MiB\" or \
         \"512kB\", found \"lots\"",
    );
    assert_error(
        "[[replicas]]\nname = \"r\"\nhost = \"h\"\nport = 5432\n[[replicas]]\nname = \"s\"\n\
         host = \"h\"\nport = 70000\n",
        "[[replicas]][1] port: expected a port number from 1 to 65535, found 70000",
    );
    assert_error(
        "[primary]\nport = 0\n",
        "[primary] port: expected a port number from 1 to 65535, found 0",
    );
    assert_error(
        "[primary]\nport = \"5432\"\n",
        "[primary] port: expected a port number from 1 to 65535, found \"5432\"",
    );
    assert_error(
        "[pool]\nmax_idle = -1\n",
        "[pool] max_idle: expected a non-negative integer, found -1",
    );
    assert_error(
        "[metrics]\nlisten = 9187\n",
        "[metrics] listen: expected a string, found 9187",
    );
    assert_error(
        "[metrics]\nenabled = \"yes\"\n",
        "[metrics] enabled: expected true or false, found \"yes\"",
    );
    assert_error(
        "[log]\nformat = \"xml\"\n",
        "[log] format: expected one of \"text\", \"json\", found \"xml\"",
    );
    assert_error("proxy = 1\n", "[proxy]: expected a table, found 1");
    assert_error(
        "[replicas]\nname = \"r\"\n",
        "[replicas]: expected an array of tables, found a table",
    );
    assert_error(
        "[[replicas]]\nname = \"r\"\nport = 5432\n",
        "[[replicas]][0]: missing required key \"host\"",
    );
}

#[test]
fn unknown_auth_method_lists_the_choices() {
    let text = "[[users]]\nname = \"app\"\npassword = \"p\"\nauth = \"plain\"\n";
    assert_eq!(
        file_error(text),
        "config file x.toml: [[users]][0] auth: expected one of \"scram-sha-256\", \"md5\", \
         \"trust\", found \"plain\""
    );
}

#[test]
fn users_are_required_and_need_passwords_unless_trusted() {
    let no_users = crate::Config::from_sources(None, &[]).expect("provisioning needs no users");
    assert_eq!(
        no_users.require_users().unwrap_err().to_string(),
        "at least one [[users]] entry is required to serve \
         (e.g. PGREPL_USERS__0__NAME and PGREPL_USERS__0__PASSWORD)"
    );
    assert_eq!(
        file_error("[[users]]\nname = \"app\"\nauth = \"md5\"\n"),
        "config file x.toml: [[users]][0] (app): password is required unless auth = \"trust\""
    );
    assert_eq!(
        file_error("[[users]]\nname = \"app\"\npassword = \"a\"\n[[users]]\nname = \"app\"\nauth = \"trust\"\n"),
        "config file x.toml: [[users]][1] name \"app\" is used twice (also [[users]][0] name)"
    );
    assert_eq!(
        file_error("[[users]]\nname = \" \"\npassword = \"a\"\n"),
        "config file x.toml: [[users]][0] name: expected a non-empty string, found \" \""
    );
}

#[test]
fn backend_names_are_unique_and_fields_non_empty() {
    assert_error(
        "[[replicas]]\nname = \"db01\"\nhost = \"h\"\nport = 5433\n",
        "[[replicas]][0] name \"db01\" is used twice (also [primary] name)",
    );
    assert_error(
        "[primary]\nname = \"db02\"\n",
        "[[replicas]][0] name \"db02\" is used twice (also [primary] name)",
    );
    assert_error(
        "[primary]\nname = \"\"\n",
        "[primary] name: expected a non-empty string, found \"\"",
    );
    assert_error(
        "[[replicas]]\nname = \"r\"\nhost = \"\"\nport = 1\n",
        "[[replicas]][0] host: expected a non-empty string, found \"\"",
    );
}

#[test]
fn listen_addresses_must_be_host_port() {
    assert_error(
        "[proxy]\nlisten = \"localhost\"\n",
        "[proxy] listen: expected host:port like \"127.0.0.1:6432\" or \"localhost:6432\", \
         found \"localhost\"",
    );
    assert_error(
        "[metrics]\nlisten = \"0.0.0.0:99999\"\n",
        "[metrics] listen: expected host:port like \"127.0.0.1:6432\" or \"localhost:6432\", \
         found \"0.0.0.0:99999\"",
    );
}

#[test]
fn limits_and_durations_are_range_checked() {
    assert_error(
        "[proxy]\nmax_client_connections = 0\n",
        "[proxy] max_client_connections: expected at least 1, found 0",
    );
    assert_error(
        "[proxy]\nmax_pending_logins = 0\n",
        "[proxy] max_pending_logins: expected at least 1, found 0",
    );
    assert_error(
        "[proxy]\nmax_pending_logins = 100\nmax_pending_logins_per_address = 101\n",
        "[proxy] max_pending_logins_per_address: expected 0 (no bound) or at most \
         [proxy] max_pending_logins, found 101",
    );
    assert_error(
        "[pool]\nmax_server_connections = 0\n",
        "[pool] max_server_connections: expected at least 1, found 0",
    );
    assert_error(
        "[pool]\nmax_prepared_statements = 1\n",
        "[pool] max_prepared_statements: expected 0 (no bound) or at least 2 (a batch binds the statement it parsed last), found 1",
    );
    assert_error(
        "[pool]\nreserve_pool_size = 2\nreserve_pool_timeout = \"3m\"\n",
        "[pool] reserve_pool_timeout: expected at most [pool] query_wait_timeout when there is a reserve, found \"3m\"",
    );
    assert_error(
        "[pool]\nmin_pool_size = 5\ndefault_pool_size = 4\n",
        "[pool] min_pool_size: expected at most the pool's size (default_pool_size, or [pool] max_server_connections), found 5",
    );
    assert_error(
        "[proxy]\nmax_message_size = \"1kB\"\n",
        "[proxy] max_message_size: expected at least 1024 bytes, found 1000",
    );
    for (section, key) in [
        ("proxy", "connect_timeout"),
        ("proxy", "startup_timeout"),
        ("pool", "server_idle_timeout"),
        ("health", "interval"),
    ] {
        assert_error(
            &format!("[{section}]\n{key} = \"0s\"\n"),
            &format!("[{section}] {key}: expected a duration above zero, found \"0s\""),
        );
    }
}

#[test]
fn tls_needs_both_files_and_they_must_exist() {
    assert_error(
        "[tls]\ncert = \"/nonexistent/cert.pem\"\n",
        "[tls]: missing required key \"key\"",
    );
    let err = file_error(&format!(
        "{ONE_USER}[tls]\ncert = \"/nonexistent/cert.pem\"\nkey = \"/nonexistent/key.pem\"\n"
    ));
    assert!(
        err.starts_with(
            "config file x.toml: [tls] cert: expected an existing file, found \
             \"/nonexistent/cert.pem\" ("
        ),
        "{err}"
    );
    let dir = std::env::temp_dir().display().to_string();
    let err = file_error(&format!(
        "{ONE_USER}[tls]\ncert = {dir:?}\nkey = \"/nonexistent/key.pem\"\n"
    ));
    assert!(
        err.ends_with(&format!(
            "[tls] cert: expected an existing file, found {dir:?} (not a regular file)"
        )),
        "{err}"
    );
}
