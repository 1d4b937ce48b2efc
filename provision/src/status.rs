//! `pgrepl-proxy status`: what each node is, where it is in the WAL, how far db02 lags and
//! the state of the slot, read from the servers themselves.

use anyhow::Result;

use crate::psql::sql;
use crate::runtime::{Node, NodeState, Runtime};
use crate::tutorial::SLOT;
use crate::verify::STREAMING_SQL;

/// One line per node, then the slot and the replication link.
pub async fn status<R: Runtime>(rt: &R) -> Result<()> {
    println!("runtime  {}", rt.describe());
    let mut running = [false; 2];
    for (i, node) in [Node::Primary, Node::Replica].into_iter().enumerate() {
        let endpoint = rt.host_endpoint(node);
        let state = rt.state(node).await?;
        if state != NodeState::Running {
            println!("{node}     {}  {endpoint}", state_name(state));
            continue;
        }
        running[i] = true;
        println!(
            "{node}     running  {endpoint}  {}",
            node_line(rt, node).await?
        );
    }
    if running[0] {
        println!("slot     {}", slot_line(rt).await?);
        let state = sql(rt, Node::Primary, STREAMING_SQL).await?;
        println!("stream   {state}  {}", lag_line(rt).await?);
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
async fn node_line<R: Runtime>(rt: &R, node: Node) -> Result<String> {
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

async fn slot_line<R: Runtime>(rt: &R) -> Result<String> {
    let row = sql(
        rt,
        Node::Primary,
        &format!(
            "SELECT coalesce(max(slot_name || CASE WHEN active THEN '  active' ELSE '  inactive' END \
               || '  restart_lsn ' || coalesce(restart_lsn::text, '-')), '{SLOT}  missing') \
             FROM pg_replication_slots WHERE slot_name = '{SLOT}'"
        ),
    )
    .await?;
    Ok(row)
}

/// Bytes db02 has yet to replay and the replay delay the primary measures, when streaming.
async fn lag_line<R: Runtime>(rt: &R) -> Result<String> {
    let row = sql(
        rt,
        Node::Primary,
        "SELECT coalesce(max('lag ' || pg_wal_lsn_diff(pg_current_wal_lsn(), r.replay_lsn) \
           || ' bytes, replay_lag ' || coalesce(r.replay_lag::text, '0')), '') \
         FROM pg_stat_replication r JOIN pg_replication_slots s ON s.active_pid = r.pid \
         WHERE s.slot_name = 'rideshare_slot'",
    )
    .await?;
    Ok(row)
}
