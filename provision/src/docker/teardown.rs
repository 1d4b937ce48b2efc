//! Removing the pair: containers first (a volume or network in use cannot go), then the data
//! volumes, then the network. Only what provision made, unless adopting.

use std::collections::HashMap;

use anyhow::{Context, Result};
use bollard::query_parameters::{ListContainersOptionsBuilder, ListVolumesOptionsBuilder};

use bollard::Docker;

use super::names::{Resource, NODE_LABEL};
use super::objects::Owner;
use super::placement::{engine_of, network_of};
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
        // Each node's network once per engine, after every container that may be on it.
        let mut networks: Vec<(NodeId, Resource)> = Vec::new();
        for &node in &nodes {
            let network = Resource::network(&network_of(&self.config, node));
            let engine = engine_of(&self.config, node, &self.default);
            if !networks.iter().any(|(other, n)| {
                *n == network && engine_of(&self.config, *other, &self.default) == engine
            }) {
                networks.push((node, network));
            }
        }
        let objects = nodes
            .iter()
            .flat_map(|&node| {
                [
                    (node, Resource::offline(node)),
                    (node, Resource::container(node)),
                ]
            })
            .chain(nodes.iter().map(|&node| (node, Resource::volume(node))))
            .chain(networks);
        let mut removed = Vec::new();
        for (node, object) in objects {
            match self.lookup(node, &object).await? {
                None => {}
                Some(Owner::Other(what)) if !self.adopt => eprintln!(
                    "teardown: kept {object} ({what}): pgrepl-proxy provision did not create \
                     it (--adopt removes it too)"
                ),
                Some(_) => {
                    self.remove(node, &object).await?;
                    removed.push(object.to_string());
                }
            }
        }
        Ok(removed)
    }

    /// The nodes whose containers (the one-shots too) or volumes carry provision's label on
    /// any of the engines, stopped ones included, in order.
    pub(super) async fn labelled_nodes(&self) -> Result<Vec<NodeId>> {
        let mut nodes = Vec::new();
        for engine in &self.engines {
            nodes.extend(labelled_on(&engine.docker).await?);
        }
        nodes.sort();
        nodes.dedup();
        Ok(nodes)
    }
}

/// The nodes labelled on one engine.
async fn labelled_on(docker: &Docker) -> Result<Vec<NodeId>> {
    let filter = HashMap::from([("label", vec![NODE_LABEL])]);
    let containers = ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&filter)
        .build();
    let containers = docker
        .list_containers(Some(containers))
        .await
        .context("cannot list containers")?;
    let volumes = ListVolumesOptionsBuilder::new().filters(&filter).build();
    let volumes = docker
        .list_volumes(Some(volumes))
        .await
        .context("cannot list volumes")?;
    let container_labels = containers.into_iter().filter_map(|c| c.labels);
    let volume_labels = volumes
        .volumes
        .unwrap_or_default()
        .into_iter()
        .map(|v| v.labels);
    Ok(container_labels
        .chain(volume_labels)
        .filter_map(|labels| NodeId::parse(labels.get(NODE_LABEL)?))
        .collect())
}
