//! The login roles `pgrepl-proxy up` serves: each `[[users]]` entry must exist on db01 (and
//! so, by replication, on db02) with the password the proxy logs in with, and a database of its
//! own to create tables in.

use std::time::Duration;

use anyhow::{Context, Result};

use crate::psql::{sql, wait_until};
use crate::runtime::{NodeId, NodeState, Runtime};
use crate::tutorial::password::random_password;
use crate::tutorial::sql::literal;

/// The role `up` creates when the config names no users.
pub const DEFAULT_APP_USER: &str = "app";

/// What `ensure_login_role` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleChange {
    Created,
    PasswordSet,
    Unchanged,
}

/// Makes sure `name` can log in on `primary` with `password` and owns a database of the same name.
/// `reset_password` sets the password on an existing role too; otherwise an existing role
/// is left as it is (its password is the user's business).
pub async fn ensure_login_role<R: Runtime>(
    rt: &R,
    primary: NodeId,
    name: &str,
    password: &str,
    reset_password: bool,
) -> Result<RoleChange> {
    let (ident, lit) = (identifier(name), literal(name));
    let exists = sql(
        rt,
        primary,
        &format!("SELECT count(*) FROM pg_roles WHERE rolname = {lit}"),
    )
    .await?
        == "1";
    let change = match (exists, reset_password) {
        (false, _) => {
            let create = format!("CREATE ROLE {ident} LOGIN PASSWORD {}", literal(password));
            sql(rt, primary, &create).await?;
            RoleChange::Created
        }
        (true, true) => {
            let alter = format!("ALTER ROLE {ident} PASSWORD {}", literal(password));
            sql(rt, primary, &alter).await?;
            RoleChange::PasswordSet
        }
        (true, false) => RoleChange::Unchanged,
    };
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
    Ok(change)
}

/// Waits, up to `timeout`, until every running one of `replicas` has replayed what
/// `primary` has written so far: a role or password just set there (`ensure_login_role`)
/// lets the proxy log in on a standby only once it has replayed it.
pub async fn replicas_replayed<R: Runtime>(
    rt: &R,
    primary: NodeId,
    replicas: &[NodeId],
    timeout: Duration,
) -> Result<()> {
    let written = sql(rt, primary, "SELECT pg_current_wal_lsn()").await?;
    let replayed = format!(
        "SELECT coalesce(pg_last_wal_replay_lsn() >= {}::pg_lsn, false)",
        literal(&written)
    );
    for &replica in replicas {
        if rt.state(replica).await? != NodeState::Running {
            continue;
        }
        let what = format!("{replica} to replay the login roles (to {written})");
        wait_until(&what, timeout, || async {
            Ok(sql(rt, replica, &replayed).await? == "t")
        })
        .await?;
    }
    Ok(())
}

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
