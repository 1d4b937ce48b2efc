//! Rules that need more than one key's type: ranges, uniqueness, files that must exist.

use std::fmt::Display;
use std::time::Duration;

use crate::address::is_host_port;
use crate::error::ConfigError;
use crate::model::{AuthMethod, BackendConfig, Config, NodesForm, TlsConfig, UserConfig};
use crate::origin::Origins;
use crate::path::KeyPath;

const MIN_MESSAGE_SIZE: usize = 1024;

/// Checks a decoded config; errors are blamed on whichever input set the offending key.
pub(crate) fn validate(config: &Config, origins: &Origins) -> Result<(), ConfigError> {
    let rules = Rules { origins };
    let root = KeyPath::root();
    let proxy = root.key("proxy");
    rules.listen(&proxy.key("listen"), &config.proxy.listen)?;
    rules.at_least(
        &proxy.key("max_client_connections"),
        config.proxy.max_client_connections,
        1,
        "",
    )?;
    rules.at_least(
        &proxy.key("max_pending_logins"),
        config.proxy.max_pending_logins,
        1,
        "",
    )?;
    let per_address = config.proxy.max_pending_logins_per_address;
    rules.expect(
        per_address <= config.proxy.max_pending_logins,
        &proxy.key("max_pending_logins_per_address"),
        "0 (no bound) or at most [proxy] max_pending_logins",
        per_address,
    )?;
    rules.nonzero(&proxy.key("connect_timeout"), config.proxy.connect_timeout)?;
    rules.nonzero(&proxy.key("startup_timeout"), config.proxy.startup_timeout)?;
    rules.at_least(
        &proxy.key("max_message_size"),
        config.proxy.max_message_size,
        MIN_MESSAGE_SIZE,
        " bytes",
    )?;
    rules.backends(config)?;
    rules.users(&config.users)?;
    rules.pool(config)?;
    let routing = &config.routing;
    rules.expect(
        routing.causal_wait <= routing.max_replica_lag,
        &root.key("routing").key("causal_wait"),
        "at most [routing] max_replica_lag",
        format_args!("\"{}\"", humantime::format_duration(routing.causal_wait)),
    )?;
    rules.at_least(
        &root.key("routing").key("writer_confirmations"),
        routing.writer_confirmations,
        1,
        "",
    )?;
    rules.nonzero(&root.key("routing").key("writer_wait"), routing.writer_wait)?;
    rules.listen(&root.key("metrics").key("listen"), &config.metrics.listen)?;
    rules.nonzero(&root.key("health").key("interval"), config.health.interval)?;
    if let Some(tls) = &config.tls {
        rules.tls(tls)?;
    }
    rules.admin(config)?;
    rules.provision_nodes(config)?;
    Ok(())
}

struct Rules<'a> {
    origins: &'a Origins,
}

impl Rules<'_> {
    /// `<path>: expected <expected>, found <found>`, blamed on whoever set `path`.
    fn expect(
        &self,
        ok: bool,
        path: &KeyPath,
        expected: &str,
        found: impl Display,
    ) -> Result<(), ConfigError> {
        if ok {
            return Ok(());
        }
        Err(self.mismatch(path, expected, found))
    }

    fn mismatch(&self, path: &KeyPath, expected: &str, found: impl Display) -> ConfigError {
        self.fail(path, format!("{path}: expected {expected}, found {found}"))
    }

    fn fail(&self, path: &KeyPath, message: String) -> ConfigError {
        ConfigError::new(self.origins.blame(path), message)
    }

    fn listen(&self, path: &KeyPath, listen: &str) -> Result<(), ConfigError> {
        self.expect(
            is_host_port(listen),
            path,
            r#"host:port like "127.0.0.1:6432" or "localhost:6432""#,
            format_args!("{listen:?}"),
        )
    }

    fn at_least(
        &self,
        path: &KeyPath,
        value: usize,
        min: usize,
        unit: &str,
    ) -> Result<(), ConfigError> {
        self.expect(value >= min, path, &format!("at least {min}{unit}"), value)
    }

    fn nonzero(&self, path: &KeyPath, value: Duration) -> Result<(), ConfigError> {
        self.expect(
            !value.is_zero(),
            path,
            "a duration above zero",
            format_args!("\"{}\"", humantime::format_duration(value)),
        )
    }

    fn non_empty(&self, path: &KeyPath, value: &str) -> Result<(), ConfigError> {
        self.expect(
            !value.trim().is_empty(),
            path,
            "a non-empty string",
            format_args!("{value:?}"),
        )
    }

    /// Durations a pool waits or keeps connections for, and sizes that must fit together,
    /// in `[pool]` and in each override over it.
    fn pool(&self, config: &Config) -> Result<(), ConfigError> {
        let pool = &config.pool;
        let section = KeyPath::root().key("pool");
        for (key, value) in [
            ("reserve_pool_timeout", pool.reserve_pool_timeout),
            ("query_wait_timeout", pool.query_wait_timeout),
            ("server_idle_timeout", pool.server_idle_timeout),
            ("server_lifetime", pool.server_lifetime),
        ] {
            self.nonzero(&section.key(key), value)?;
        }
        self.at_least(
            &section.key("max_server_connections"),
            pool.max_server_connections,
            1,
            "",
        )?;
        self.expect(
            pool.max_prepared_statements != 1,
            &section.key("max_prepared_statements"),
            "0 (no bound) or at least 2 (a batch binds the statement it parsed last)",
            pool.max_prepared_statements,
        )?;
        // Each table over [pool] alone; where a user's and a database's overrides meet, the
        // pool caps min_pool_size at its size.
        let mut levels = vec![(section.clone(), pool.settings_for(None, None))];
        for name in pool.databases.keys() {
            let settings = pool.settings_for(None, Some(name));
            levels.push((section.key("databases").key(name), settings));
        }
        for name in pool.users.keys() {
            let path = section.key("users").key(name);
            self.expect(
                config.users.iter().any(|u| u.name == *name),
                &path,
                "the name of a [[users]] entry",
                format_args!("{name:?}"),
            )?;
            levels.push((path, pool.settings_for(Some(name), None)));
        }
        self.expect(
            levels.iter().all(|(_, s)| s.reserve_pool_size == 0)
                || pool.reserve_pool_timeout <= pool.query_wait_timeout,
            &section.key("reserve_pool_timeout"),
            "at most [pool] query_wait_timeout when there is a reserve",
            format_args!(
                "\"{}\"",
                humantime::format_duration(pool.reserve_pool_timeout)
            ),
        )?;
        for (path, settings) in &levels {
            self.expect(
                settings.min_pool_size <= settings.pool_size(pool.max_server_connections),
                &path.key("min_pool_size"),
                "at most the pool's size (default_pool_size, or [pool] max_server_connections)",
                settings.min_pool_size,
            )?;
        }
        Ok(())
    }

    /// Names identify backends in logs and metrics, so they must be unique.
    fn backends(&self, config: &Config) -> Result<(), ConfigError> {
        let all: Vec<(KeyPath, &BackendConfig)> = config
            .nodes()
            .enumerate()
            .map(|(i, b)| (node_path(config.nodes_form, i), b))
            .collect();
        for (i, (path, backend)) in all.iter().enumerate() {
            self.non_empty(&path.key("name"), &backend.name)?;
            self.non_empty(&path.key("host"), &backend.host)?;
            if let Some((first, _)) = all[..i].iter().find(|(_, b)| b.name == backend.name) {
                return Err(self.duplicate(&path.key("name"), &first.key("name"), &backend.name));
            }
        }
        Ok(())
    }

    fn users(&self, users: &[UserConfig]) -> Result<(), ConfigError> {
        let list = KeyPath::root().key("users");
        for (i, user) in users.iter().enumerate() {
            let path = list.index(i);
            self.non_empty(&path.key("name"), &user.name)?;
            if let Some(first) = users[..i].iter().position(|u| u.name == user.name) {
                let first = list.index(first).key("name");
                return Err(self.duplicate(&path.key("name"), &first, &user.name));
            }
            if user.password.is_none() && user.auth != AuthMethod::Trust {
                return Err(self.fail(
                    &path.key("password"),
                    format!(
                        "{path} ({}): password is required unless auth = \"{}\"",
                        user.name,
                        AuthMethod::Trust
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The console's database must be a name clients can give, and its users must log in
    /// through `[[users]]`, which is what authenticates them.
    fn admin(&self, config: &Config) -> Result<(), ConfigError> {
        let section = KeyPath::root().key("admin");
        self.non_empty(&section.key("database"), &config.admin.database)?;
        self.nonzero(&section.key("pause_timeout"), config.admin.pause_timeout)?;
        for name in &config.admin.users {
            self.expect(
                config.users.iter().any(|u| u.name == *name),
                &section.key("users"),
                "names of [[users]] entries",
                format_args!("{name:?}"),
            )?;
        }
        Ok(())
    }

    /// A node's network must be named, and its published address must be one the proxy can
    /// connect to: a real interface (not 0.0.0.0) and a fixed port (not 0).
    fn provision_nodes(&self, config: &Config) -> Result<(), ConfigError> {
        let nodes = KeyPath::root().key("provision").key("nodes");
        for (name, node) in &config.provision.nodes {
            let path = nodes.key(name);
            if let Some(network) = &node.network {
                self.non_empty(&path.key("network"), network)?;
            }
            if let Some(listen) = node.listen {
                self.expect(
                    !listen.ip().is_unspecified() && listen.port() != 0,
                    &path.key("listen"),
                    "the address and port the proxy connects to (not 0.0.0.0, not port 0)",
                    format_args!("\"{listen}\""),
                )?;
            }
        }
        Ok(())
    }

    fn duplicate(&self, path: &KeyPath, first: &KeyPath, name: &str) -> ConfigError {
        self.fail(
            path,
            format!("{path} {name:?} is used twice (also {first})"),
        )
    }

    fn tls(&self, tls: &TlsConfig) -> Result<(), ConfigError> {
        let section = KeyPath::root().key("tls");
        for (key, file) in [("cert", &tls.cert), ("key", &tls.key)] {
            let problem = match std::fs::metadata(file) {
                Ok(meta) if meta.is_file() => continue,
                Ok(_) => "not a regular file".to_owned(),
                Err(err) => err.to_string(),
            };
            return Err(self.mismatch(
                &section.key(key),
                "an existing file",
                format_args!("{:?} ({problem})", file.display().to_string()),
            ));
        }
        Ok(())
    }
}

/// Where node `i` (in `Config::nodes` order) is configured.
fn node_path(form: NodesForm, i: usize) -> KeyPath {
    let root = KeyPath::root();
    match (form, i) {
        (NodesForm::Nodes, i) => root.key("nodes").index(i),
        (NodesForm::PrimaryReplicas, 0) => root.key("primary"),
        (NodesForm::PrimaryReplicas, i) => root.key("replicas").index(i - 1),
    }
}
