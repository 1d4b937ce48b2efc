//! The client-facing edge: SSL/GSS negotiation, the startup packet, authentication, and what a
//! client is told before its session starts.

pub mod auth;
pub mod logins;
pub mod params;
pub mod startup;
pub mod tls;

pub use startup::{negotiate, ClientStream, Hello, NegotiateError};
