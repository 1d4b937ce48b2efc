//! The Docker objects provision makes, looked up by name and told apart from someone else's by
//! their label; the network and the data volumes are created here, containers in `container`.

use std::collections::HashMap;

use std::net::Ipv4Addr;

use anyhow::{bail, Context, Result};
use bollard::models::{ContainerInspectResponse, NetworkCreateRequest, VolumeCreateRequest};
use bollard::query_parameters::{RemoveContainerOptionsBuilder, RemoveVolumeOptionsBuilder};

use super::error::{foreign, optional};
use super::names::{Kind, Resource};
use super::placement::{network_of, subnet_contains};
use super::DockerRuntime;
use crate::runtime::NodeId;

/// Who made an object found under one of provision's names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Owner {
    Provision,
    /// Someone else; the text says what it is, for the refusal.
    Other(String),
}

impl Owner {
    /// Provision when the object carries `resource`'s label; `what` describes it otherwise.
    pub fn of(
        resource: &Resource,
        labels: Option<&HashMap<String, String>>,
        what: String,
    ) -> Owner {
        if resource.is_marked(labels) {
            Owner::Provision
        } else {
            Owner::Other(what)
        }
    }

    /// [`Owner::of`] a container, described by its image.
    pub fn of_container(resource: &Resource, info: &ContainerInspectResponse) -> Owner {
        let config = info.config.as_ref();
        let image = config.and_then(|c| c.image.as_deref()).unwrap_or("");
        let labels = config.and_then(|c| c.labels.as_ref());
        Owner::of(resource, labels, format!("image {image}"))
    }
}

impl DockerRuntime {
    /// Who made `resource` on `node`'s engine, or `None` when nothing there has its name.
    pub(super) async fn lookup(&self, node: NodeId, resource: &Resource) -> Result<Option<Owner>> {
        let name = resource.name.as_str();
        let docker = self.engine(node);
        let found = match resource.kind {
            Kind::Container => optional(docker.inspect_container(name, None).await)?
                .map(|info| Owner::of_container(resource, &info)),
            Kind::Volume => optional(docker.inspect_volume(name).await)?
                .map(|v| Owner::of(resource, Some(&v.labels), format!("driver {}", v.driver))),
            Kind::Network => optional(docker.inspect_network(name, None).await)?.map(|n| {
                let driver = n.driver.unwrap_or_default();
                Owner::of(resource, n.labels.as_ref(), format!("driver {driver}"))
            }),
        };
        Ok(found)
    }

    /// Refuses an object provision did not make, unless adopting.
    pub(super) fn claim(&self, resource: &Resource, owner: &Owner) -> Result<()> {
        match owner {
            Owner::Other(what) if !self.adopt => Err(foreign(resource, what)),
            _ => Ok(()),
        }
    }

    /// Removes `resource` from `node`'s engine (a container even while it runs).
    pub(super) async fn remove(&self, node: NodeId, resource: &Resource) -> Result<()> {
        let name = resource.name.as_str();
        let docker = self.engine(node);
        let removed = match resource.kind {
            Kind::Container => {
                // With its anonymous volumes, which an adopted container may have.
                let force = RemoveContainerOptionsBuilder::new()
                    .force(true)
                    .v(true)
                    .build();
                docker.remove_container(name, Some(force)).await
            }
            Kind::Volume => {
                let options = RemoveVolumeOptionsBuilder::new().build();
                docker.remove_volume(name, Some(options)).await
            }
            Kind::Network => docker.remove_network(name).await,
        };
        removed.with_context(|| format!("cannot remove {resource}"))
    }

    /// `node`'s user-defined bridge network on its engine (the tutorial's, where the
    /// containers find each other by name, unless the node has its own). One that is already
    /// there (say, the user's own `docker network create`) is joined as it is; teardown
    /// removes it only when provision made it or adopting.
    pub(super) async fn ensure_network(&self, node: NodeId) -> Result<()> {
        let network = Resource::network(&network_of(&self.config, node));
        if self.lookup(node, &network).await?.is_some() {
            return Ok(());
        }
        let request = NetworkCreateRequest {
            name: network.name.clone(),
            driver: Some("bridge".to_owned()),
            labels: Some(network.labels()),
            ..Default::default()
        };
        self.engine(node)
            .create_network(request)
            .await
            .with_context(|| format!("cannot create {network}"))?;
        Ok(())
    }

    /// The named volume for `node`'s data directory, so the data outlives its container.
    pub(super) async fn ensure_volume(&self, node: NodeId) -> Result<()> {
        let volume = Resource::volume(node);
        if let Some(owner) = self.lookup(node, &volume).await? {
            return self.claim(&volume, &owner);
        }
        let request = VolumeCreateRequest {
            name: Some(volume.name.clone()),
            labels: Some(volume.labels()),
            ..Default::default()
        };
        self.engine(node)
            .create_volume(request)
            .await
            .with_context(|| format!("cannot create {volume}"))?;
        Ok(())
    }

    /// The network of `node`'s engine whose subnet holds `ip`, if any: where a peer address
    /// that belongs to no host is the container's own.
    pub(super) async fn network_holding(
        &self,
        node: NodeId,
        ip: Ipv4Addr,
    ) -> Result<Option<String>> {
        let networks = self
            .engine(node)
            .list_networks(None)
            .await
            .context("cannot list networks")?;
        let holding: Vec<String> = networks
            .into_iter()
            .filter(|n| {
                let subnets = n.ipam.as_ref().and_then(|i| i.config.as_ref());
                subnets
                    .into_iter()
                    .flatten()
                    .any(|c| c.subnet.as_deref().is_some_and(|s| subnet_contains(s, ip)))
            })
            .filter_map(|n| n.name)
            .collect();
        match &holding[..] {
            [] => Ok(None),
            [one] => Ok(Some(one.clone())),
            several => bail!(
                "{node}'s peer_address {ip} is in the subnets of several networks ({}): which \
                 one should it join?",
                several.join(", ")
            ),
        }
    }
}
