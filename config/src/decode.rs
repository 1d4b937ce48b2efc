//! Turns the merged tree into typed sections; each section lists the keys it allows.

use std::collections::BTreeMap;

use toml::Table;

use crate::error::ConfigError;
use crate::model::{
    AdminConfig, AuthMethod, BackendConfig, Config, HealthConfig, LogConfig, MetricsConfig,
    NodeSettings, NodesForm, PoolConfig, PoolOverride, ProvisionConfig, ProxyConfig, RoutingConfig,
    TlsConfig, UserConfig,
};
use crate::origin::Origins;
use crate::reader::{Field, Section};

const TOP: &[&str] = &[
    "proxy",
    "primary",
    "replicas",
    "nodes",
    "users",
    "pool",
    "routing",
    "metrics",
    "log",
    "health",
    "tls",
    "provision",
    "admin",
];

/// Decodes `tree`, which must already hold the built-in defaults.
pub(crate) fn decode(tree: &Table, origins: &Origins) -> Result<Config, ConfigError> {
    let top = Section::root(tree, origins, TOP)?;
    let (primary, replicas, nodes_form) = nodes(&top, origins)?;
    let promotable = std::iter::once(&primary)
        .chain(&replicas)
        .filter(|node| node.promotable)
        .count();
    Ok(Config {
        proxy: proxy(&top.require("proxy")?)?,
        primary,
        replicas,
        nodes_form,
        users: each(&top.require("users")?, user)?,
        pool: pool(&top.require("pool")?)?,
        routing: routing(&top.require("routing")?, promotable)?,
        metrics: metrics(&top.require("metrics")?)?,
        log: log(&top.require("log")?)?,
        health: health(&top.require("health")?)?,
        tls: top.get("tls").map(|field| tls(&field)).transpose()?,
        provision: provision(&top.require("provision")?)?,
        admin: admin(&top.require("admin")?)?,
    })
}

fn each<T>(
    field: &Field<'_>,
    decode: impl Fn(&Field<'_>) -> Result<T, ConfigError>,
) -> Result<Vec<T>, ConfigError> {
    field.elements()?.iter().map(decode).collect()
}

fn proxy(field: &Field<'_>) -> Result<ProxyConfig, ConfigError> {
    let s = field.section(&[
        "listen",
        "max_client_connections",
        "max_pending_logins",
        "max_pending_logins_per_address",
        "connect_timeout",
        "server_tcp_user_timeout",
        "startup_timeout",
        "shutdown_timeout",
        "max_message_size",
        "workers",
    ])?;
    Ok(ProxyConfig {
        listen: s.require("listen")?.string()?,
        max_client_connections: s.require("max_client_connections")?.count()?,
        max_pending_logins: s.require("max_pending_logins")?.count()?,
        max_pending_logins_per_address: s.require("max_pending_logins_per_address")?.count()?,
        connect_timeout: s.require("connect_timeout")?.duration()?,
        server_tcp_user_timeout: s.require("server_tcp_user_timeout")?.duration()?,
        startup_timeout: s.require("startup_timeout")?.duration()?,
        shutdown_timeout: s.require("shutdown_timeout")?.duration()?,
        max_message_size: s.require("max_message_size")?.size()?,
        workers: s.require("workers")?.count()?,
    })
}

/// The servers, the first node apart: `[[nodes]]` if the file or the environment sets it,
/// else `[primary]` and `[[replicas]]` (the defaults have those, and do not count as setting
/// them). Setting both forms is an error naming where each was set.
fn nodes(
    top: &Section<'_>,
    origins: &Origins,
) -> Result<(BackendConfig, Vec<BackendConfig>, NodesForm), ConfigError> {
    let Some(field) = top.get("nodes") else {
        return Ok((
            backend(&top.require("primary")?, true)?,
            each(&top.require("replicas")?, |f| backend(f, false))?,
            NodesForm::PrimaryReplicas,
        ));
    };
    let legacy = [("[primary]", "primary"), ("[[replicas]]", "replicas")]
        .into_iter()
        .find_map(|(name, key)| origins.setter(key).map(|origin| (name, origin)));
    let set_by = origins.setter("nodes");
    if let Some((name, origin)) = legacy {
        let other = if set_by.as_ref() == Some(&origin) {
            String::new()
        } else {
            format!(" ({name} by {origin})")
        };
        return Err(ConfigError::new(
            set_by,
            format!("[[nodes]] and {name} are both set{other}: list the servers in one form"),
        ));
    }
    let mut nodes = each(&field, |f| backend(f, true))?;
    if nodes.is_empty() {
        return Err(ConfigError::new(
            set_by,
            "[[nodes]]: expected at least one node, found none",
        ));
    }
    let first = nodes.remove(0);
    Ok((first, nodes, NodesForm::Nodes))
}

/// One server; `promotable` unless it says otherwise.
fn backend(field: &Field<'_>, promotable: bool) -> Result<BackendConfig, ConfigError> {
    let s = field.section(&["name", "host", "port", "weight", "promotable"])?;
    Ok(BackendConfig {
        name: s.require("name")?.string()?,
        host: s.require("host")?.string()?,
        port: s.require("port")?.port()?,
        weight: s
            .get("weight")
            .map(|f| f.weight())
            .transpose()?
            .unwrap_or(1),
        promotable: s
            .get("promotable")
            .map(|f| f.boolean())
            .transpose()?
            .unwrap_or(promotable),
    })
}

fn user(field: &Field<'_>) -> Result<UserConfig, ConfigError> {
    let s = field.section(&["name", "password", "auth"])?;
    Ok(UserConfig {
        name: s.require("name")?.string()?,
        password: s.get("password").map(|f| f.string()).transpose()?,
        auth: match s.get("auth") {
            Some(f) => f.one_of()?,
            None => AuthMethod::default(),
        },
    })
}

fn pool(field: &Field<'_>) -> Result<PoolConfig, ConfigError> {
    let s = field.section(&[
        "mode",
        "default_pool_size",
        "min_pool_size",
        "reserve_pool_size",
        "reserve_pool_timeout",
        "max_server_connections",
        "query_wait_timeout",
        "max_idle",
        "server_idle_timeout",
        "server_lifetime",
        "max_prepared_statements",
        "databases",
        "users",
    ])?;
    Ok(PoolConfig {
        mode: s.require("mode")?.one_of()?,
        default_pool_size: s.require("default_pool_size")?.count()?,
        min_pool_size: s.require("min_pool_size")?.count()?,
        reserve_pool_size: s.require("reserve_pool_size")?.count()?,
        reserve_pool_timeout: s.require("reserve_pool_timeout")?.duration()?,
        max_server_connections: s.require("max_server_connections")?.count()?,
        query_wait_timeout: s.require("query_wait_timeout")?.duration()?,
        max_idle: s.require("max_idle")?.count()?,
        server_idle_timeout: s.require("server_idle_timeout")?.duration()?,
        server_lifetime: s.require("server_lifetime")?.duration()?,
        max_prepared_statements: s.require("max_prepared_statements")?.count()?,
        databases: overrides(&s.require("databases")?)?,
        users: overrides(&s.require("users")?)?,
    })
}

/// `[pool.databases]` or `[pool.users]`: a table of overrides by database or user name.
fn overrides(field: &Field<'_>) -> Result<BTreeMap<String, PoolOverride>, ConfigError> {
    field
        .entries()?
        .into_iter()
        .map(|(name, field)| {
            let s = field.section(&[
                "mode",
                "default_pool_size",
                "min_pool_size",
                "reserve_pool_size",
            ])?;
            let count = |key| s.get(key).map(|f| f.count()).transpose();
            let over = PoolOverride {
                mode: s.get("mode").map(|f| f.one_of()).transpose()?,
                default_pool_size: count("default_pool_size")?,
                min_pool_size: count("min_pool_size")?,
                reserve_pool_size: count("reserve_pool_size")?,
            };
            Ok((name.to_owned(), over))
        })
        .collect()
}

/// `promotable`: how many nodes may be the writer, which decides `follow_primary`'s default.
fn routing(field: &Field<'_>, promotable: usize) -> Result<RoutingConfig, ConfigError> {
    let s = field.section(&[
        "max_replica_lag",
        "classify_cache_size",
        "read_your_writes",
        "causal_wait",
        "transaction_reads",
        "balance",
        "write_functions",
        "read_only_functions",
        "follow_primary",
        "writer_confirmations",
        "writer_wait",
    ])?;
    Ok(RoutingConfig {
        max_replica_lag: s.require("max_replica_lag")?.duration()?,
        classify_cache_size: s.require("classify_cache_size")?.count()?,
        read_your_writes: s.require("read_your_writes")?.one_of()?,
        causal_wait: s.require("causal_wait")?.duration()?,
        transaction_reads: s.require("transaction_reads")?.one_of()?,
        balance: s.require("balance")?.one_of()?,
        write_functions: s.require("write_functions")?.string_list()?,
        read_only_functions: s.require("read_only_functions")?.string_list()?,
        follow_primary: s
            .get("follow_primary")
            .map(|f| f.boolean())
            .transpose()?
            .unwrap_or(promotable >= 2),
        writer_confirmations: s.require("writer_confirmations")?.count()?,
        writer_wait: s.require("writer_wait")?.duration()?,
    })
}

fn metrics(field: &Field<'_>) -> Result<MetricsConfig, ConfigError> {
    let s = field.section(&["listen", "enabled"])?;
    Ok(MetricsConfig {
        listen: s.require("listen")?.string()?,
        enabled: s.require("enabled")?.boolean()?,
    })
}

fn log(field: &Field<'_>) -> Result<LogConfig, ConfigError> {
    let s = field.section(&["level", "format", "slow_statement", "statement_text"])?;
    Ok(LogConfig {
        level: s.require("level")?.string()?,
        format: s.require("format")?.one_of()?,
        slow_statement: s.require("slow_statement")?.duration()?,
        statement_text: s.require("statement_text")?.boolean()?,
    })
}

fn health(field: &Field<'_>) -> Result<HealthConfig, ConfigError> {
    let s = field.section(&["interval"])?;
    Ok(HealthConfig {
        interval: s.require("interval")?.duration()?,
    })
}

fn tls(field: &Field<'_>) -> Result<TlsConfig, ConfigError> {
    let s = field.section(&["cert", "key"])?;
    Ok(TlsConfig {
        cert: s.require("cert")?.file_path()?,
        key: s.require("key")?.file_path()?,
    })
}

fn provision(field: &Field<'_>) -> Result<ProvisionConfig, ConfigError> {
    let s = field.section(&[
        "runtime",
        "image",
        "network",
        "primary_port",
        "replica_port",
        "replication_password",
        "data_dir",
        "replicas",
        "sync",
        "nodes",
    ])?;
    Ok(ProvisionConfig {
        runtime: s.require("runtime")?.one_of()?,
        image: s.require("image")?.string()?,
        network: s.require("network")?.string()?,
        primary_port: s.require("primary_port")?.port()?,
        replica_port: s.require("replica_port")?.port()?,
        replication_password: s
            .get("replication_password")
            .map(|f| f.string())
            .transpose()?,
        data_dir: s.require("data_dir")?.file_path()?,
        replicas: s.require("replicas")?.replica_count()?,
        sync: s.require("sync")?.boolean()?,
        nodes: node_settings(&s.require("nodes")?)?,
    })
}

/// `[provision.nodes]`: a table of per-node settings by node name.
fn node_settings(field: &Field<'_>) -> Result<BTreeMap<String, NodeSettings>, ConfigError> {
    field
        .entries()?
        .into_iter()
        .map(|(name, field)| {
            field.node_name(name)?;
            let s = field.section(&["docker_host", "network", "peer_address", "listen"])?;
            let settings = NodeSettings {
                docker_host: s.get("docker_host").map(|f| f.docker_host()).transpose()?,
                network: s.get("network").map(|f| f.string()).transpose()?,
                peer_address: s.get("peer_address").map(|f| f.ipv4()).transpose()?,
                listen: s.get("listen").map(|f| f.socket_address()).transpose()?,
            };
            Ok((name.to_owned(), settings))
        })
        .collect()
}

fn admin(field: &Field<'_>) -> Result<AdminConfig, ConfigError> {
    let s = field.section(&["database", "users", "pause_timeout"])?;
    Ok(AdminConfig {
        database: s.require("database")?.string()?,
        users: s.require("users")?.string_list()?,
        pause_timeout: s.require("pause_timeout")?.duration()?,
    })
}
