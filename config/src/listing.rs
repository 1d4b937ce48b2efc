//! The configuration as a flat list of keys and values, as the admin console's `SHOW CONFIG`
//! prints it: every key a file may set, named `section.key` (`replicas.0.host` for array
//! elements), secrets left out.

use std::time::Duration;

use crate::model::{Config, Named, NodesForm};

/// One key and its value, written as a config file would set it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub key: String,
    pub value: String,
}

/// Keys whose values are never listed.
const SECRETS: &[&str] = &["password", "replication_password"];

/// Collects the settings of one section after another.
struct Listing(Vec<Setting>);

impl Listing {
    fn add(&mut self, section: &str, key: &str, value: impl ToString) -> &mut Self {
        self.0.push(Setting {
            key: format!("{section}.{key}"),
            value: value.to_string(),
        });
        self
    }
}

fn duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

impl Config {
    /// Every setting in force, in the order of the configuration reference; passwords are
    /// left out.
    pub fn settings(&self) -> Vec<Setting> {
        let mut l = Listing(Vec::new());
        let p = &self.proxy;
        l.add("proxy", "listen", &p.listen)
            .add("proxy", "max_client_connections", p.max_client_connections)
            .add("proxy", "connect_timeout", duration(p.connect_timeout))
            .add(
                "proxy",
                "server_tcp_user_timeout",
                duration(p.server_tcp_user_timeout),
            )
            .add("proxy", "startup_timeout", duration(p.startup_timeout))
            .add("proxy", "shutdown_timeout", duration(p.shutdown_timeout))
            .add("proxy", "max_message_size", p.max_message_size)
            .add("proxy", "workers", p.workers)
            .add("proxy", "max_pending_logins", p.max_pending_logins)
            .add(
                "proxy",
                "max_pending_logins_per_address",
                p.max_pending_logins_per_address,
            );
        for (i, b) in self.nodes().enumerate() {
            let section = match (self.nodes_form, i) {
                (NodesForm::Nodes, i) => format!("nodes.{i}"),
                (NodesForm::PrimaryReplicas, 0) => "primary".to_owned(),
                (NodesForm::PrimaryReplicas, i) => format!("replicas.{}", i - 1),
            };
            l.add(&section, "name", &b.name)
                .add(&section, "host", &b.host)
                .add(&section, "port", b.port);
            if section != "primary" {
                l.add(&section, "weight", b.weight);
            }
            l.add(&section, "promotable", b.promotable);
        }
        for (i, u) in self.users.iter().enumerate() {
            let section = format!("users.{i}");
            l.add(&section, "name", &u.name)
                .add(&section, "auth", u.auth.as_str());
        }
        let pool = &self.pool;
        l.add("pool", "mode", pool.mode.as_str())
            .add("pool", "default_pool_size", pool.default_pool_size)
            .add("pool", "min_pool_size", pool.min_pool_size)
            .add("pool", "reserve_pool_size", pool.reserve_pool_size)
            .add(
                "pool",
                "reserve_pool_timeout",
                duration(pool.reserve_pool_timeout),
            )
            .add(
                "pool",
                "max_server_connections",
                pool.max_server_connections,
            )
            .add(
                "pool",
                "query_wait_timeout",
                duration(pool.query_wait_timeout),
            )
            .add("pool", "max_idle", pool.max_idle)
            .add(
                "pool",
                "server_idle_timeout",
                duration(pool.server_idle_timeout),
            )
            .add("pool", "server_lifetime", duration(pool.server_lifetime))
            .add(
                "pool",
                "max_prepared_statements",
                pool.max_prepared_statements,
            );
        for (kind, table) in [("databases", &pool.databases), ("users", &pool.users)] {
            for (name, over) in table {
                let section = format!("pool.{kind}.{name}");
                if let Some(mode) = over.mode {
                    l.add(&section, "mode", mode.as_str());
                }
                for (key, size) in [
                    ("default_pool_size", over.default_pool_size),
                    ("min_pool_size", over.min_pool_size),
                    ("reserve_pool_size", over.reserve_pool_size),
                ] {
                    if let Some(size) = size {
                        l.add(&section, key, size);
                    }
                }
            }
        }
        let r = &self.routing;
        l.add("routing", "max_replica_lag", duration(r.max_replica_lag))
            .add("routing", "classify_cache_size", r.classify_cache_size)
            .add("routing", "read_your_writes", r.read_your_writes.as_str())
            .add("routing", "causal_wait", duration(r.causal_wait))
            .add("routing", "transaction_reads", r.transaction_reads.as_str())
            .add("routing", "balance", r.balance.as_str())
            .add("routing", "write_functions", r.write_functions.join(","))
            .add(
                "routing",
                "read_only_functions",
                r.read_only_functions.join(","),
            )
            .add("routing", "follow_primary", r.follow_primary)
            .add("routing", "writer_confirmations", r.writer_confirmations)
            .add("routing", "writer_wait", duration(r.writer_wait));
        l.add("metrics", "listen", &self.metrics.listen).add(
            "metrics",
            "enabled",
            self.metrics.enabled,
        );
        let log = &self.log;
        l.add("log", "level", &log.level)
            .add("log", "format", log.format.as_str())
            .add("log", "slow_statement", duration(log.slow_statement))
            .add("log", "statement_text", log.statement_text);
        l.add("health", "interval", duration(self.health.interval));
        if let Some(tls) = &self.tls {
            l.add("tls", "cert", tls.cert.display())
                .add("tls", "key", tls.key.display());
        }
        let pr = &self.provision;
        l.add("provision", "runtime", pr.runtime.as_str())
            .add("provision", "image", &pr.image)
            .add("provision", "network", &pr.network)
            .add("provision", "primary_port", pr.primary_port)
            .add("provision", "replica_port", pr.replica_port)
            .add("provision", "data_dir", pr.data_dir.display())
            .add("provision", "replicas", pr.replicas)
            .add("provision", "sync", pr.sync);
        for (name, node) in &pr.nodes {
            let section = format!("provision.nodes.{name}");
            let keys = [
                ("docker_host", node.docker_host.clone()),
                ("network", node.network.clone()),
                ("peer_address", node.peer_address.map(|a| a.to_string())),
                ("listen", node.listen.map(|a| a.to_string())),
            ];
            for (key, value) in keys {
                if let Some(value) = value {
                    l.add(&section, key, value);
                }
            }
        }
        let a = &self.admin;
        l.add("admin", "database", &a.database)
            .add("admin", "users", a.users.join(","))
            .add("admin", "pause_timeout", duration(a.pause_timeout));
        debug_assert!(l.0.iter().all(|s| !is_secret(&s.key)));
        l.0
    }
}

fn is_secret(key: &str) -> bool {
    key.rsplit('.').next().is_some_and(|k| SECRETS.contains(&k))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers;
    use toml::Value;

    /// `section.key` paths of every leaf of `value` (array elements by index; arrays of
    /// plain values are leaves).
    fn leaves(prefix: &str, value: &Value, out: &mut Vec<String>) {
        let join = |key: &str| {
            if prefix.is_empty() {
                key.to_owned()
            } else {
                format!("{prefix}.{key}")
            }
        };
        match value {
            Value::Table(table) => {
                for (key, value) in table {
                    leaves(&join(key), value, out);
                }
            }
            Value::Array(items) if items.iter().all(Value::is_table) && !items.is_empty() => {
                for (i, item) in items.iter().enumerate() {
                    leaves(&join(&i.to_string()), item, out);
                }
            }
            _ => out.push(prefix.to_owned()),
        }
    }

    #[test]
    fn every_key_with_a_default_is_listed_with_its_default_value() {
        let mut keys = Vec::new();
        leaves("", &Value::Table(layers::defaults()), &mut keys);
        let listed = Config::defaults().settings();
        let missing: Vec<&String> = keys
            .iter()
            .filter(|k| *k != "users" && !listed.iter().any(|s| s.key == **k))
            .collect();
        assert!(missing.is_empty(), "not listed: {missing:?}");
        let value = |key: &str| {
            listed
                .iter()
                .find(|s| s.key == key)
                .map(|s| s.value.as_str())
        };
        assert_eq!(value("proxy.connect_timeout"), Some("5s"));
        assert_eq!(value("pool.server_idle_timeout"), Some("5m"));
        assert_eq!(value("admin.database"), Some("pgrepl"));
        assert_eq!(value("replicas.0.host"), Some("127.0.0.1"));
        assert_eq!(value("metrics.enabled"), Some("true"));
    }

    #[test]
    fn overrides_are_listed_with_the_keys_they_set() {
        let text = "[[users]]\nname = \"app\"\npassword = \"p\"\n\n\
                    [pool.databases.reports]\nmode = \"transaction\"\n\n\
                    [pool.users.app]\ndefault_pool_size = 3\n";
        let config =
            Config::from_sources(Some((std::path::Path::new("x.toml"), text)), &[]).unwrap();
        let listed: Vec<(String, String)> = config
            .settings()
            .into_iter()
            .filter(|s| s.key.starts_with("pool.databases.") || s.key.starts_with("pool.users."))
            .map(|s| (s.key, s.value))
            .collect();
        let expected = [
            ("pool.databases.reports.mode", "transaction"),
            ("pool.users.app.default_pool_size", "3"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        assert_eq!(listed, expected);
    }

    #[test]
    fn passwords_are_never_listed() {
        let text = "[[users]]\nname = \"app\"\npassword = \"s3cret\"\n\n\
                    [provision]\nreplication_password = \"r3pl\"\n";
        let config =
            Config::from_sources(Some((std::path::Path::new("x.toml"), text)), &[]).unwrap();
        let listed = config.settings();
        assert!(listed
            .iter()
            .any(|s| s.key == "users.0.name" && s.value == "app"));
        assert!(
            listed
                .iter()
                .all(|s| !is_secret(&s.key) && s.value != "s3cret" && s.value != "r3pl"),
            "{listed:?}"
        );
    }
}
