//! Which node is the primary and which are its replicas: given for a provisioning run
//! (db01 and the replicas asked for), or found from the servers for the commands that look
//! at what exists (`status`, `verify`).

use anyhow::{bail, Result};

use crate::psql::sql;
use crate::runtime::{NodeId, NodeState, Runtime};

/// Whether the node is in recovery and, out of recovery, its timeline: the first 8 hex
/// digits of the current WAL file's name, right as soon as a promotion ends (the control
/// file's timeline changes only at the next checkpoint).
const TIMELINE_SQL: &str = "SELECT CASE WHEN pg_is_in_recovery() THEN 't|' ELSE 'f|' || \
     ('x' || substr(pg_walfile_name(pg_current_wal_insert_lsn()), 1, 8))::bit(32)::int END";

/// The primary, then its replicas in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    pub primary: NodeId,
    pub replicas: Vec<NodeId>,
}

impl Topology {
    /// db01 as the primary of db02..db(replicas+1), as a first `provision` builds them.
    pub fn tutorial(replicas: u8) -> Topology {
        let mut nodes = NodeId::first(replicas);
        let primary = nodes.remove(0);
        Topology {
            primary,
            replicas: nodes,
        }
    }

    /// db01 and `replicas` replicas as `provision` finds them: the primary is the running
    /// node out of recovery on the highest timeline (db01 on a tie, as a replica not yet made
    /// a standby is out of recovery on timeline 1 too), else db01. So after a failover,
    /// `provision` builds and checks the replicas from the promoted node.
    pub async fn current<R: Runtime>(rt: &R, replicas: u8) -> Result<Topology> {
        let nodes = NodeId::first(replicas);
        let mut best: Option<(u32, NodeId)> = None;
        for &node in &nodes {
            if rt.state(node).await? != NodeState::Running {
                continue;
            }
            let row = sql(rt, node, TIMELINE_SQL).await?;
            if let Some(timeline) = row.strip_prefix("f|").and_then(|t| t.parse().ok()) {
                if best.is_none_or(|(highest, _)| timeline > highest) {
                    best = Some((timeline, node));
                }
            }
        }
        let primary = best.map_or(NodeId::DB01, |(_, node)| node);
        Ok(Topology {
            primary,
            replicas: nodes.into_iter().filter(|&n| n != primary).collect(),
        })
    }

    /// Every node, the primary first.
    pub fn nodes(&self) -> Vec<NodeId> {
        let mut nodes = vec![self.primary];
        nodes.extend(&self.replicas);
        nodes
    }

    /// The replicas' names, `db02, db03`, for titles and messages.
    pub fn replica_list(&self) -> String {
        list(&self.replicas)
    }

    /// What the servers that exist say: the running node out of recovery is the primary,
    /// every other node a replica. Fails when none or several are out of recovery.
    pub async fn discover<R: Runtime>(rt: &R) -> Result<Topology> {
        let nodes = rt.nodes().await?;
        let mut primaries = Vec::new();
        for &node in &nodes {
            if rt.state(node).await? == NodeState::Running
                && sql(rt, node, "SELECT pg_is_in_recovery()").await? == "f"
            {
                primaries.push(node);
            }
        }
        match primaries[..] {
            [primary] => Ok(Topology {
                primary,
                replicas: nodes.into_iter().filter(|&n| n != primary).collect(),
            }),
            [] if nodes.is_empty() => bail!("no node exists: run `pgrepl-proxy provision`"),
            [] => bail!("no running node is out of recovery: there is no primary"),
            _ => bail!(
                "{} are all out of recovery: which is the primary?",
                list(&primaries)
            ),
        }
    }
}

/// `db02, db03`.
pub fn list(nodes: &[NodeId]) -> String {
    let names: Vec<String> = nodes.iter().map(|n| n.name()).collect();
    names.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tutorials_topology_and_more_replicas() {
        let one = Topology::tutorial(1);
        assert_eq!(one.primary, NodeId::DB01);
        assert_eq!(one.replicas, [NodeId::DB02]);
        assert_eq!(one.replica_list(), "db02");
        let three = Topology::tutorial(3);
        assert_eq!(three.replica_list(), "db02, db03, db04");
        assert_eq!(list(&three.nodes()), "db01, db02, db03, db04");
    }
}
