use std::path::Path;
use std::time::Duration;

use super::{from_env, from_file, ONE_USER};
use crate::{
    AuthMethod, BackendConfig, Balance, Config, Named, ReadYourWrites, RuntimeKind, TlsConfig,
    UserConfig,
};

fn backend(name: &str, host: &str, port: u16) -> BackendConfig {
    BackendConfig {
        name: name.into(),
        host: host.into(),
        port,
        weight: 1,
        promotable: name == "db01",
    }
}

#[test]
fn defaults_match_the_documented_values() {
    let config = Config::defaults();
    assert_eq!(config.proxy.listen, "127.0.0.1:6432");
    assert_eq!(config.proxy.max_client_connections, 1000);
    assert_eq!(config.proxy.max_pending_logins, 10_000);
    assert_eq!(
        config.proxy.max_pending_logins_per_address, 0,
        "no per-address bound"
    );
    assert_eq!(config.proxy.connect_timeout, Duration::from_secs(5));
    assert_eq!(config.proxy.startup_timeout, Duration::from_secs(5));
    assert_eq!(config.proxy.shutdown_timeout, Duration::from_secs(30));
    assert_eq!(config.proxy.max_message_size, 256 << 20);
    assert_eq!(config.proxy.workers, 0, "one worker per CPU by default");
    assert_eq!(config.primary, backend("db01", "127.0.0.1", 5432));
    assert_eq!(config.replicas, vec![backend("db02", "127.0.0.1", 5433)]);
    assert!(config.users.is_empty());
    assert_eq!(config.pool.max_idle, 50);
    assert_eq!(config.pool.server_idle_timeout, Duration::from_secs(300));
    assert_eq!(config.pool.max_server_connections, 90);
    assert_eq!(config.routing.max_replica_lag, Duration::from_secs(1));
    assert_eq!(config.routing.classify_cache_size, 10_000);
    assert_eq!(config.metrics.listen, "127.0.0.1:9187");
    assert_eq!(config.health.interval, Duration::from_secs(1));
    assert_eq!(config.tls, None);
    assert_eq!(config.admin.database, "pgrepl");
    assert!(
        config.admin.users.is_empty(),
        "nobody on the console by default"
    );
    assert_eq!(config.admin.pause_timeout, Duration::from_secs(30));
    assert_eq!(Config::default(), config);
}

#[test]
fn the_design_example_loads() {
    let text = r#"
[proxy]
listen = "127.0.0.1:6432"

[primary]
name = "db01"
host = "127.0.0.1"
port = 5432

[[replicas]]
name = "db02"
host = "127.0.0.1"
port = 5433

[[users]]            # clients authenticate to the proxy with these
name = "app"
password = "app-pass"

[routing]
max_replica_lag = "1s"

[metrics]
listen = "127.0.0.1:9187"
"#;
    let config = from_file(text).unwrap();
    let expected = Config {
        users: vec![UserConfig {
            name: "app".into(),
            password: Some("app-pass".into()),
            auth: AuthMethod::ScramSha256,
        }],
        ..Config::defaults()
    };
    assert_eq!(config, expected);
}

#[test]
fn file_values_override_defaults_key_by_key() {
    let text = format!(
        r#"{ONE_USER}
[proxy]
listen = "0.0.0.0:7000"
max_message_size = 65536
connect_timeout = "250ms"
[primary]
host = "10.0.0.1"
[pool]
server_idle_timeout = "1m 30s"
[health]
interval = "500ms"
"#
    );
    let config = from_file(&text).unwrap();
    assert_eq!(config.proxy.listen, "0.0.0.0:7000");
    assert_eq!(config.proxy.max_message_size, 65536);
    assert_eq!(config.proxy.connect_timeout, Duration::from_millis(250));
    assert_eq!(config.proxy.startup_timeout, Duration::from_secs(5));
    assert_eq!(config.primary, backend("db01", "10.0.0.1", 5432));
    assert_eq!(config.pool.server_idle_timeout, Duration::from_secs(90));
    assert_eq!(config.health.interval, Duration::from_millis(500));
}

#[test]
fn sizes_accept_integers_and_units() {
    for (written, bytes) in [
        ("1024", 1024),
        ("\"64MiB\"", 64 << 20),
        ("\"512kB\"", 512_000),
        ("\"1GiB\"", 1 << 30),
        ("\"2048 B\"", 2048),
    ] {
        let text = format!("{ONE_USER}[proxy]\nmax_message_size = {written}\n");
        let config = from_file(&text).unwrap();
        assert_eq!(config.proxy.max_message_size, bytes, "{written}");
    }
}

#[test]
fn replicas_key_absent_keeps_default_but_empty_array_means_none() {
    assert_eq!(from_file(ONE_USER).unwrap().replicas.len(), 1);
    let text = format!("replicas = []\n{ONE_USER}");
    assert!(from_file(&text).unwrap().replicas.is_empty());
}

#[test]
fn several_replicas_and_auth_methods() {
    let text = r#"
[[replicas]]
name = "r1"
host = "10.0.0.2"
port = 5432
[[replicas]]
name = "r2"
host = "replica.internal"
port = 6543
[[users]]
name = "md5user"
password = "x"
auth = "md5"
[[users]]
name = "local"
auth = "trust"
"#;
    let config = from_file(text).unwrap();
    assert_eq!(
        config.replicas,
        vec![
            backend("r1", "10.0.0.2", 5432),
            backend("r2", "replica.internal", 6543)
        ]
    );
    assert_eq!(config.users[0].auth, AuthMethod::Md5);
    assert_eq!(config.users[1].auth, AuthMethod::Trust);
    assert_eq!(config.users[1].password, None);
}

#[test]
fn auth_methods_display_their_toml_names() {
    let names: Vec<String> = AuthMethod::ALL.iter().map(ToString::to_string).collect();
    assert_eq!(names, ["scram-sha-256", "md5", "trust"]);
}

#[test]
fn tls_with_existing_files_loads() {
    let dir = std::env::temp_dir().join(format!("pgrepl-config-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, "cert").unwrap();
    std::fs::write(&key, "key").unwrap();
    let text = format!(
        "{ONE_USER}[tls]\ncert = {:?}\nkey = {:?}\n",
        cert.display().to_string(),
        key.display().to_string()
    );
    let config = from_file(&text);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(config.unwrap().tls, Some(TlsConfig { cert, key }));
}

#[test]
fn load_reads_the_file_and_names_it_when_missing() {
    let path = std::env::temp_dir().join(format!("pgrepl-config-load-{}.toml", std::process::id()));
    std::fs::write(&path, ONE_USER).unwrap();
    let loaded = Config::load(Some(&path));
    std::fs::remove_file(&path).unwrap();
    assert_eq!(loaded.unwrap().users[0].name, "app");

    let err = Config::load(Some(Path::new("/nonexistent/pgrepl.toml"))).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("config file /nonexistent/pgrepl.toml: cannot read:"),
        "{err}"
    );
}

#[test]
fn provision_defaults_follow_the_tutorial_and_can_be_overridden() {
    let config = Config::defaults();
    let p = &config.provision;
    assert_eq!(p.runtime, RuntimeKind::Docker);
    assert_eq!(p.image, "postgres:16.1");
    assert_eq!(p.network, "rideshare-net");
    assert_eq!((p.primary_port, p.replica_port), (54321, 54322));
    assert_eq!(p.replication_password, None);
    assert_eq!(
        (p.replicas, p.sync),
        (1, false),
        "the tutorial's one asynchronous replica"
    );
    let config = from_file(&format!(
        "[provision]\nruntime = \"local\"\nimage = \"pg:x\"\nreplication_password = \"s3cret\"\n{ONE_USER}"
    ))
    .unwrap();
    assert_eq!(config.provision.runtime, RuntimeKind::Local);
    assert_eq!(config.provision.image, "pg:x");
    assert_eq!(
        config.provision.replication_password.as_deref(),
        Some("s3cret")
    );
    assert_eq!(
        config.provision.primary_port, 54321,
        "unset keys keep their defaults"
    );
}

#[test]
fn replicas_and_sync_are_read_and_bounded() {
    let config = from_file(&format!(
        "[provision]\nreplicas = 3\nsync = true\n{ONE_USER}"
    ))
    .unwrap();
    assert_eq!(
        (config.provision.replicas, config.provision.sync),
        (3, true)
    );
    for bad in ["0", "99", "-1", "\"two\""] {
        let err = super::file_error(&format!("[provision]\nreplicas = {bad}\n{ONE_USER}"));
        assert!(
            err.contains("[provision] replicas") && err.contains("from 1 to 98"),
            "{bad}: {err}"
        );
    }
}

#[test]
fn unknown_runtime_lists_the_choices() {
    let err = super::file_error(&format!("[provision]\nruntime = \"podman\"\n{ONE_USER}"));
    assert!(
        err.contains("[provision] runtime") && err.contains("\"docker\", \"local\""),
        "{err}"
    );
}

#[test]
fn routing_guarantees_default_on_and_can_be_set() {
    let routing = Config::defaults().routing;
    assert_eq!(routing.read_your_writes, ReadYourWrites::Session);
    assert_eq!(routing.balance, Balance::LeastConnections);
    assert!(routing.write_functions.is_empty() && routing.read_only_functions.is_empty());
    let config = from_file(&format!(
        "[routing]\nread_your_writes = \"global\"\nbalance = \"random\"\n\
         write_functions = [\"audit.log_it\"]\nread_only_functions = [\"my_random\"]\n\
         [[replicas]]\nname = \"db02\"\nhost = \"h\"\nport = 1\nweight = 3\n{ONE_USER}"
    ))
    .unwrap();
    assert_eq!(config.routing.read_your_writes, ReadYourWrites::Global);
    assert_eq!(config.routing.balance, Balance::Random);
    assert_eq!(config.routing.write_functions, ["audit.log_it"]);
    assert_eq!(config.routing.read_only_functions, ["my_random"]);
    assert_eq!(config.replicas[0].weight, 3);
}

#[test]
fn function_lists_come_from_the_environment_comma_separated() {
    let env = [(
        "PGREPL_ROUTING__WRITE_FUNCTIONS".to_owned(),
        "a.f, g".to_owned(),
    )];
    let config = Config::from_sources(None, &env).unwrap();
    assert_eq!(config.routing.write_functions, ["a.f", "g"]);
    let err = super::file_error(&format!(
        "[[replicas]]\nname = \"x\"\nhost = \"h\"\nport = 1\nweight = 0\n{ONE_USER}"
    ));
    assert!(err.contains("weight: expected a weight from 1"), "{err}");
}

#[test]
fn admin_users_come_from_the_file_or_the_environment() {
    let file = format!("{ONE_USER}\n[admin]\ndatabase = \"console\"\nusers = [\"app\"]\n");
    let config = from_file(&file).unwrap();
    assert_eq!(config.admin.database, "console");
    assert_eq!(config.admin.users, ["app"]);
    let config = from_env(Some(ONE_USER), &[("PGREPL_ADMIN__USERS", "app")]).unwrap();
    assert_eq!(config.admin.users, ["app"]);
}
