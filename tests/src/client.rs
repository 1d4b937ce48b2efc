//! Connecting to a node or a proxy as one of the harness roles.

use crate::roles;
use anyhow::{Context, Result};
use std::net::SocketAddr;
use tokio_postgres::{Client, NoTls};

/// A libpq-style connection string for `user` on `addr`, with the user's
/// harness password if it has one.
pub fn conninfo(addr: SocketAddr, user: &str, db: &str) -> String {
    let mut info = format!(
        "host={} port={} user={user} dbname={db} connect_timeout=10",
        addr.ip(),
        addr.port()
    );
    if let Some(password) = roles::password(user) {
        info += &format!(" password={password}");
    }
    info
}

/// Connects with tokio-postgres (no TLS) and drives the connection on a
/// spawned task, so the caller only holds the client.
pub async fn connect(addr: SocketAddr, user: &str, db: &str) -> Result<Client> {
    let (client, connection) = tokio_postgres::connect(&conninfo(addr, user, db), NoTls)
        .await
        .with_context(|| format!("cannot connect to {addr} as {user}"))?;
    tokio::spawn(async move {
        // Errors also reach the client as failed queries, so no report here.
        let _ = connection.await;
    });
    Ok(client)
}
