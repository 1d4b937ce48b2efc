//! pgrepl-proxy: a PostgreSQL wire-protocol proxy that sends writes to the primary and reads
//! to streaming replicas, deciding per statement with sqlparser.

pub mod admin;
pub mod backend;
pub mod balance;
pub mod cancel;
pub mod client;
pub mod clients;
pub mod event_loop;
pub mod fd_limit;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod health;
pub mod live;
pub mod logging;
pub mod protocol;
pub mod reload;
pub mod route;
pub mod server;
pub mod session;
pub mod shared;
pub mod telemetry;
pub mod workers;

pub use server::Proxy;
