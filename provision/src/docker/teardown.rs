//! Removing the pair: containers first (a volume or network in use cannot go), then the data
//! volumes, then the network. Only what provision made, unless adopting.

use anyhow::Result;

use super::names::Resource;
use super::objects::Owner;
use super::DockerRuntime;
use crate::runtime::Node;

impl DockerRuntime {
    /// Removes each object that exists and is provision's (or any, when adopting); returns
    /// them as "container db01", "volume db01-data", "network rideshare-net". Others with
    /// those names are kept and named on stderr.
    pub(super) async fn remove_all(&self) -> Result<Vec<String>> {
        let nodes = [Node::Replica, Node::Primary];
        let objects = nodes
            .iter()
            .flat_map(|&node| [Resource::offline(node), Resource::container(node)])
            .chain(nodes.map(Resource::volume))
            .chain([Resource::network(&self.config.network)]);
        let mut removed = Vec::new();
        for object in objects {
            match self.lookup(&object).await? {
                None => {}
                Some(Owner::Other(what)) if !self.adopt => eprintln!(
                    "teardown: kept {object} ({what}): pgrepl-proxy provision did not create \
                     it (--adopt removes it too)"
                ),
                Some(_) => {
                    self.remove(&object).await?;
                    removed.push(object.to_string());
                }
            }
        }
        Ok(removed)
    }
}
