//! The login roles `pgrepl-proxy up` serves: each `[[users]]` entry must exist on db01 (and
//! so, by replication, on db02) with the password the proxy logs in with, and a database of its
//! own to create tables in.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::psql::sql;
use crate::runtime::{NodeId, NodeState, Runtime};
use crate::tutorial::password::random_password;
use crate::tutorial::sql::literal;

/// The role `up` creates when the config names no users.
pub const DEFAULT_APP_USER: &str = "app";

/// Makes sure `name` can log in on `primary` with `password` and owns a database of the same name.
/// `reset_password` sets the password on an existing role too; otherwise an existing role
/// is left as it is (its password is the user's business).
pub async fn ensure_login_role<R: Runtime>(
    rt: &R,
    primary: NodeId,
    name: &str,
    password: &str,
    reset_password: bool,
) -> Result<()> {
    let (ident, lit) = (identifier(name), literal(name));
    let exists = sql(
        rt,
        primary,
        &format!("SELECT count(*) FROM pg_roles WHERE rolname = {lit}"),
    )
    .await?
        == "1";
    match (exists, reset_password) {
        (false, _) => {
            let create = format!("CREATE ROLE {ident} LOGIN PASSWORD {}", literal(password));
            sql(rt, primary, &create).await?;
        }
        (true, true) => {
            let alter = format!("ALTER ROLE {ident} PASSWORD {}", literal(password));
            sql(rt, primary, &alter).await?;
        }
        (true, false) => {}
    }
    let has_db = sql(
        rt,
        primary,
        &format!("SELECT count(*) FROM pg_database WHERE datname = {lit}"),
    )
    .await?
        == "1";
    if !has_db {
        // CREATE DATABASE cannot run in a transaction block, so on its own.
        sql(
            rt,
            primary,
            &format!("CREATE DATABASE {ident} OWNER {ident}"),
        )
        .await
        .with_context(|| format!("cannot create the database {name} for role {name}"))?;
    }
    Ok(())
}

/// Waits, up to `timeout` in all, until every running one of `replicas` has replayed what
/// `primary` has written so far: a role, password or database just made there
/// (`ensure_login_role`) lets the proxy log in on a standby only once it has replayed it.
/// A standby that cannot be asked meanwhile (restarting) is asked again; the error says the
/// last reason it could not.
pub async fn replicas_replayed<R: Runtime>(
    rt: &R,
    primary: NodeId,
    replicas: &[NodeId],
    timeout: Duration,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let written = sql(rt, primary, "SELECT pg_current_wal_lsn()").await?;
    let replayed = format!(
        "SELECT coalesce(pg_last_wal_replay_lsn() >= {}::pg_lsn, false)",
        literal(&written)
    );
    for &replica in replicas {
        if rt.state(replica).await? != NodeState::Running {
            continue;
        }
        loop {
            let last_error = match sql(rt, replica, &replayed).await {
                Ok(answer) if answer == "t" => break,
                Ok(_) => None,
                Err(e) => Some(e),
            };
            if Instant::now() >= deadline {
                let why = last_error
                    .map(|e| format!(" (last: {e:#})"))
                    .unwrap_or_default();
                bail!(
                    "{replica} had not replayed the login roles (to {written}) after {} s{why}",
                    timeout.as_secs()
                );
            }
            tokio::time::sleep(REPLAY_POLL).await;
        }
    }
    Ok(())
}

/// How often `replicas_replayed` asks a standby again.
const REPLAY_POLL: Duration = Duration::from_millis(200);

/// A fresh password for the default role.
pub fn new_app_password() -> Result<String> {
    random_password().context("cannot get random bytes for the app password")
}

/// A SQL identifier, quoted so any name is taken literally.
fn identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_quoted() {
        assert_eq!(identifier("ap\"p"), "\"ap\"\"p\"");
    }
}
