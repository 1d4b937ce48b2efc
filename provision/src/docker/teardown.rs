//! Removing the pair: containers first (a volume or network in use cannot go), then the data
//! volumes, then the network. Only what provision made, unless adopting.

use std::collections::HashMap;

use anyhow::{Context, Result};
use bollard::query_parameters::{ListContainersOptionsBuilder, ListVolumesOptionsBuilder};

use super::names::{Resource, NODE_LABEL};
use super::objects::Owner;
use super::DockerRuntime;
use crate::runtime::NodeId;

impl DockerRuntime {
    /// Removes each object that exists and is provision's (or any, when adopting); returns
    /// them as "container db01", "volume db01-data", "network rideshare-net". Others with
    /// those names are kept and named on stderr.
    pub(super) async fn remove_all(&self) -> Result<Vec<String>> {
        let mut nodes = self.labelled_nodes().await?;
        // An adopted pair carries no labels: the tutorial's names are always looked at.
        nodes.extend([NodeId::DB01, NodeId::DB02]);
        nodes.sort();
        nodes.dedup();
        nodes.reverse();
        let objects = nodes
            .iter()
            .flat_map(|&node| [Resource::offline(node), Resource::container(node)])
            .chain(nodes.iter().copied().map(Resource::volume))
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

    /// The nodes whose containers (the one-shots too) or volumes carry provision's label,
    /// stopped ones included, in order.
    pub(super) async fn labelled_nodes(&self) -> Result<Vec<NodeId>> {
        let filter = HashMap::from([("label", vec![NODE_LABEL])]);
        let containers = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filter)
            .build();
        let containers = self
            .docker
            .list_containers(Some(containers))
            .await
            .context("cannot list containers")?;
        let volumes = ListVolumesOptionsBuilder::new().filters(&filter).build();
        let volumes = self
            .docker
            .list_volumes(Some(volumes))
            .await
            .context("cannot list volumes")?;
        let container_labels = containers.into_iter().filter_map(|c| c.labels);
        let volume_labels = volumes
            .volumes
            .unwrap_or_default()
            .into_iter()
            .map(|v| v.labels);
        let mut nodes: Vec<NodeId> = container_labels
            .chain(volume_labels)
            .filter_map(|labels| NodeId::parse(labels.get(NODE_LABEL)?))
            .collect();
        nodes.sort();
        nodes.dedup();
        Ok(nodes)
    }
}
