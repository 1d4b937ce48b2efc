//! Test harness for pgrepl-proxy: a real PostgreSQL primary (`db01`) with a
//! streaming replica (`db02`) on loopback ports (or, for the partition suite,
//! each in a network namespace of its own: [`netns`]), plus helpers to run the
//! proxy binary against it.
//!
//! Integration tests normally use [`Cluster::shared`], which starts one cluster
//! per test process and removes it at exit, so suites pay the start-up cost once.

mod auth;
pub mod checker;
pub mod checkload;
mod client;
mod cluster;
pub mod drivers;
pub mod endpoint;
mod local;
mod net;
pub mod netns;
mod node;
mod poll;
mod process;
pub mod program;
pub mod provisioning;
mod proxy;
pub mod regress;
pub mod rigged;
pub mod roles;
mod shared;
pub mod suite;
pub mod throttle;
pub mod tls_engine;
pub mod traffic;

pub use client::{connect, conninfo};
pub use cluster::{Cluster, OwnCluster};
pub use local::block_on;
pub use net::{free_port, free_ports};
pub use node::Node;
pub use pgrepl_provision::local::pg_bin_dir;
pub use poll::wait_until;
pub use proxy::{nodes_config, proxy_bin, proxy_command, proxy_config, users_toml, ProxyProcess};
pub use shared::run_dir;
