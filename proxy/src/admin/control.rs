//! The admin console's commands that act: `PAUSE`, `RESUME`, `KILL`, `RELOAD`, `SHUTDOWN`.
//! Each answers with its command tag, or an error the session goes on after.

use std::time::{Duration, Instant};

use super::show::servers_in_use;
use crate::backend::PauseConflict;
use crate::clients::ClientEntry;
use crate::protocol::sqlstate;
use crate::protocol::write::ProxyError;
use crate::shared::Shared;

/// How often a waiting command looks again.
const POLL: Duration = Duration::from_millis(20);
/// How long `KILL` waits for the session to be gone before it answers anyway.
const KILL_WAIT: Duration = Duration::from_secs(5);

fn conflict(err: PauseConflict) -> ProxyError {
    ProxyError::error(sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE, err.to_string())
}

/// The console's own session ends (killed, or the proxy shuts down): waits stop.
fn ending(shared: &Shared, me: &ClientEntry) -> bool {
    me.kill.is_fired() || shared.shutdown.is_set()
}

/// `PAUSE [database]`: new units of the database (of every one) wait before taking a server
/// connection; answers once none of its server connections is in use, as PgBouncer does,
/// or fails after `[admin] pause_timeout` (the pause stays in force either way).
pub async fn pause(
    shared: &Shared,
    me: &ClientEntry,
    database: Option<&str>,
) -> Result<&'static str, ProxyError> {
    let config = shared.config();
    if database == Some(config.admin.database.as_str()) {
        return Err(ProxyError::error(
            sqlstate::FEATURE_NOT_SUPPORTED,
            "the admin console's database cannot be paused",
        ));
    }
    shared.pause.pause(database).map_err(conflict)?;
    tracing::info!(database = database.unwrap_or("(all)"), "PAUSE");
    let limit = config.admin.pause_timeout;
    let deadline = Instant::now() + limit;
    loop {
        let in_use = servers_in_use(shared, database);
        if in_use == 0 {
            return Ok("PAUSE");
        }
        if Instant::now() >= deadline || ending(shared, me) {
            let whose = database.map_or("of any database".to_owned(), |db| {
                format!("of database \"{db}\"")
            });
            return Err(ProxyError::error(
                sqlstate::OBJECT_IN_USE,
                format!(
                    "{in_use} server connection(s) {whose} still in use after {} \
                     ([admin] pause_timeout)",
                    humantime::format_duration(limit)
                ),
            )
            .with_detail(
                "The pause stays in force: new units wait until RESUME. Sessions keep their \
                 server connection until they end.",
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// `RESUME [database]`: units waiting at the gate go on.
pub fn resume(shared: &Shared, database: Option<&str>) -> Result<&'static str, ProxyError> {
    shared.pause.resume(database).map_err(conflict)?;
    tracing::info!(database = database.unwrap_or("(all)"), "RESUME");
    Ok("RESUME")
}

/// `KILL id`: ends that client's session with FATAL 57P01; what it runs on its servers is
/// cancelled as it goes. Answers once the session is gone (or after a few seconds).
pub async fn kill(shared: &Shared, me: &ClientEntry, id: u64) -> Result<&'static str, ProxyError> {
    let Some(target) = shared.registry.get(id) else {
        return Err(ProxyError::error(
            sqlstate::UNDEFINED_OBJECT,
            format!("no client with id {id}"),
        )
        .with_detail("SHOW CLIENTS lists the clients connected now, with their id."));
    };
    tracing::info!(
        client_id = id,
        user = %target.who.user,
        database = %target.who.database,
        "KILL"
    );
    target.kill.fire();
    drop(target);
    let deadline = Instant::now() + KILL_WAIT;
    while shared.registry.get(id).is_some()
        && id != me.id
        && Instant::now() < deadline
        && !ending(shared, me)
    {
        tokio::time::sleep(POLL).await;
    }
    Ok("KILL")
}

/// `RELOAD`: re-reads the configuration as SIGHUP does and answers once it is applied, or
/// with why nothing changed.
pub async fn reload(shared: &Shared) -> Result<&'static str, ProxyError> {
    tracing::info!("RELOAD");
    let Some(reloader) = shared.reloader() else {
        return Err(ProxyError::error(
            sqlstate::FEATURE_NOT_SUPPORTED,
            "RELOAD is not available: this proxy was started without a configuration to re-read",
        ));
    };
    match reloader.reload().await {
        Ok(_) => Ok("RELOAD"),
        Err(reason) => Err(ProxyError::error(
            sqlstate::CONFIG_FILE_ERROR,
            format!("RELOAD failed: {reason}"),
        )
        .with_detail("The configuration in force is unchanged.")),
    }
}

/// `SHUTDOWN`: the graceful shutdown SIGTERM starts; sessions end as they become idle.
pub fn shutdown(shared: &Shared) -> &'static str {
    tracing::info!("SHUTDOWN");
    shared.shutdown.begin();
    "SHUTDOWN"
}
