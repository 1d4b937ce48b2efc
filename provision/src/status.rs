//! `pgrepl-proxy status`: what each node is, where it is in the WAL, how far each replica
//! lags and the state of its slot, read from the servers themselves.

use anyhow::Result;

use crate::psql::sql;
use crate::runtime::{NodeId, NodeState, Runtime};
use crate::tutorial::slot_name;
use crate::verify::streaming_sql;

/// One line per node, then, from the primary, a slot line and a stream line per replica.
pub async fn status<R: Runtime>(rt: &R) -> Result<()> {
    println!("runtime  {}", rt.describe());
    let nodes = rt.nodes().await?;
    let mut primary = None;
    for &node in &nodes {
        let endpoint = rt.host_endpoint(node);
        let state = rt.state(node).await?;
        if state != NodeState::Running {
            println!("{node}     {}  {endpoint}", state_name(state));
            continue;
        }
        let line = node_line(rt, node).await?;
        if line.starts_with("primary") && primary.is_none() {
            primary = Some(node);
        }
        println!("{node}     running  {endpoint}  {line}");
    }
    let Some(primary) = primary else {
        return Ok(());
    };
    for &replica in nodes.iter().filter(|&&n| n != primary) {
        println!("slot     {}", slot_line(rt, primary, replica).await?);
        let state = sql(rt, primary, &streaming_sql(replica)).await?;
        println!(
            "stream   {replica}  {state}  {}",
            lag_line(rt, primary, replica).await?
        );
    }
    Ok(())
}

fn state_name(state: NodeState) -> &'static str {
    match state {
        NodeState::Missing => "missing",
        NodeState::Stopped => "stopped",
        NodeState::Running => "running",
    }
}

/// Role and WAL position: the primary's current LSN, a standby's received and replayed LSNs.
async fn node_line<R: Runtime>(rt: &R, node: NodeId) -> Result<String> {
    let row = sql(
        rt,
        node,
        "SELECT CASE WHEN pg_is_in_recovery() \
           THEN 'standby  received ' || coalesce(pg_last_wal_receive_lsn()::text, '-') \
             || '  replayed ' || coalesce(pg_last_wal_replay_lsn()::text, '-') \
           ELSE 'primary  current ' || pg_current_wal_lsn()::text END",
    )
    .await?;
    Ok(row)
}

async fn slot_line<R: Runtime>(rt: &R, primary: NodeId, replica: NodeId) -> Result<String> {
    let slot = slot_name(replica);
    let row = sql(
        rt,
        primary,
        &format!(
            "SELECT coalesce(max(slot_name || CASE WHEN active THEN '  active' ELSE '  inactive' END \
               || '  restart_lsn ' || coalesce(restart_lsn::text, '-')), '{slot}  missing') \
             FROM pg_replication_slots WHERE slot_name = '{slot}'"
        ),
    )
    .await?;
    Ok(row)
}

/// Bytes `replica` has yet to replay and the replay delay the primary measures, when
/// streaming.
async fn lag_line<R: Runtime>(rt: &R, primary: NodeId, replica: NodeId) -> Result<String> {
    let row = sql(
        rt,
        primary,
        &format!(
            "SELECT coalesce(max('lag ' || pg_wal_lsn_diff(pg_current_wal_lsn(), r.replay_lsn) \
               || ' bytes, replay_lag ' || coalesce(r.replay_lag::text, '0')), '') \
             FROM pg_stat_replication r JOIN pg_replication_slots s ON s.active_pid = r.pid \
             WHERE s.slot_name = '{}'",
            slot_name(replica)
        ),
    )
    .await?;
    Ok(row)
}
