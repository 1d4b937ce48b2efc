//! Which node is the primary and which are its replicas: given for a provisioning run
//! (db01 and the replicas asked for), or found from the servers for the commands that look
//! at what exists (`status`, `verify`).

use anyhow::{bail, Result};

use crate::psql::sql;
use crate::runtime::{NodeId, NodeState, Runtime};

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
