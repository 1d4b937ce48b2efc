//! The admin console's commands that act: `PAUSE`, `RESUME`, `HOLD WRITES`, `RELEASE
//! WRITES`, `KILL`, `RELOAD`, `SHUTDOWN`.
//! Each answers with its command tag, or an error the session goes on after.

use std::time::{Duration, Instant};

use pgrepl_config::Config;

use super::show::servers_in_use;
use crate::backend::{BackendId, PauseConflict};
use crate::clients::ClientEntry;
use crate::health::{column, Probe, ProbeError};
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

/// `HOLD WRITES`: units on the write lease outside a transaction wait at the writer pointer
/// (up to `[routing] writer_wait`); units inside one pass, so that it can finish. Answers
/// once none of the sessions' connections to the writer runs a statement or holds a
/// transaction open (as the writer's `pg_stat_activity` says), or with 55006 after
/// [`hold_limit`], the hold staying in force. The hold is this console session's.
pub async fn hold_writes(shared: &Shared, me: &ClientEntry) -> Result<&'static str, ProxyError> {
    shared.health.hold_writes(me.id).map_err(|holder| {
        ProxyError::error(
            sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE,
            format!("writes are held by console session {holder} already"),
        )
    })?;
    tracing::warn!(
        console = me.id,
        "HOLD WRITES: writes outside a transaction wait"
    );
    let config = shared.config();
    let limit = hold_limit(config.admin.pause_timeout, config.routing.writer_wait);
    let deadline = Instant::now() + limit;
    let mut asker = None;
    loop {
        let open = open_on_writer(shared, &config, &mut asker).await;
        if open == Some(0) {
            return Ok("HOLD WRITES");
        }
        if Instant::now() >= deadline || ending(shared, me) {
            let open = open.map_or("an unknown number of".to_owned(), |n| n.to_string());
            return Err(ProxyError::error(
                sqlstate::OBJECT_IN_USE,
                format!(
                    "{open} transaction(s) or statement(s) still open on the writer after {} \
                     ([admin] pause_timeout, at most half [routing] writer_wait)",
                    humantime::format_duration(limit)
                ),
            )
            .with_detail(
                "The hold stays in force: new writes wait until RELEASE WRITES, open \
                 transactions may finish.",
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// How long `HOLD WRITES` waits for open transactions: `[admin] pause_timeout`, but at most
/// half of `[routing] writer_wait`, so that the tool switching over gets its answer, and
/// goes on, while the writes waiting at the hold still have time left: waiting the whole
/// pause would fail them with 08006 instead.
fn hold_limit(pause_timeout: Duration, writer_wait: Duration) -> Duration {
    pause_timeout.min(writer_wait / 2)
}

/// How many of the sessions' connections to the writer run a statement or hold a
/// transaction open; None when the writer cannot tell (unreachable). `asker` keeps the
/// connection the question goes over, to the writer it was opened to.
async fn open_on_writer(
    shared: &Shared,
    config: &Config,
    asker: &mut Option<(BackendId, Probe)>,
) -> Option<usize> {
    let Some(writer) = shared.health.writer().backend else {
        // No writer: nothing can be written anywhere.
        return Some(0);
    };
    let pids: Vec<String> = shared
        .registry
        .clients()
        .iter()
        .flat_map(|c| c.servers())
        .filter(|link| link.backend.id == writer)
        .map(|link| link.pid.to_string())
        .collect();
    if pids.is_empty() {
        return Some(0);
    }
    if asker.as_ref().is_none_or(|(on, _)| *on != writer) {
        let login = config.users.first()?;
        let info = &shared.pool.backends()[writer.index()];
        let timeout = config.proxy.connect_timeout;
        let probe = Probe::new(info, login, timeout, timeout, "hold writes").ok()?;
        *asker = Some((writer, probe));
    }
    let (_, probe) = asker.as_ref()?;
    // Sessions of other users show no state to a login without pg_read_all_stats: they
    // count as open.
    let sql = format!(
        "SELECT count(*) FROM pg_catalog.pg_stat_activity WHERE pid IN ({}) \
         AND state IS DISTINCT FROM 'idle'",
        pids.join(",")
    );
    let count = |row: &_| {
        column(row, 0)?
            .and_then(|n| n.parse().ok())
            .ok_or(ProbeError::Answer)
    };
    probe.ask(&sql, count).await.ok()
}

/// `RELEASE WRITES`: lifts this console session's hold; waiting units go on.
pub fn release_writes(shared: &Shared, me: &ClientEntry) -> Result<&'static str, ProxyError> {
    if !shared.health.release_writes(me.id) {
        return Err(ProxyError::error(
            sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE,
            "this console session holds no writes",
        ));
    }
    tracing::warn!(console = me.id, "RELEASE WRITES");
    Ok("RELEASE WRITES")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hold_waits_at_most_half_the_writer_wait() {
        let s = Duration::from_secs;
        let table = [
            (s(30), s(10), s(5)),
            (s(2), s(10), s(2)),
            (s(30), s(60), s(30)),
            (s(1), Duration::ZERO, Duration::ZERO),
        ];
        for (pause, wait, want) in table {
            assert_eq!(hold_limit(pause, wait), want, "{pause:?} {wait:?}");
        }
    }
}
