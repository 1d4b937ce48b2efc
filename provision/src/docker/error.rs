//! Docker's answers turned into what the steps act on (a 404 is "not there") and into
//! messages that say what to do.

use anyhow::anyhow;
use bollard::errors::Error;

use std::net::SocketAddr;

use super::names::{Kind, Resource};
use crate::runtime::NodeId;

/// The HTTP status Docker answered with, when the error is an answer at all.
fn status(err: &Error) -> Option<u16> {
    match err {
        Error::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// `Ok(None)` for "no such object" (404), so lookups read as lookups.
pub(super) fn optional<T>(result: Result<T, Error>) -> Result<Option<T>, Error> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(e) if status(&e) == Some(404) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether Docker could not publish a port because something else holds it (the daemon's
/// own allocator, or the kernel refusing the userland proxy's bind).
pub(super) fn is_port_in_use(err: &Error) -> bool {
    let text = err.to_string();
    text.contains("port is already allocated") || text.contains("address already in use")
}

/// The setting `node`'s published address comes from: its `listen` when it has one, else
/// db01's `primary_port` or the replicas' `replica_port` (db02 on it, the others after it).
fn listen_setting(node: NodeId, own_listen: bool) -> (String, String) {
    let key = match node {
        _ if own_listen => {
            return (
                format!("[provision.nodes.{node}] listen"),
                format!(
                    "PGREPL_PROVISION__NODES__{}__LISTEN",
                    node.name().to_uppercase()
                ),
            )
        }
        NodeId::DB01 => "primary_port",
        _ => "replica_port",
    };
    (
        format!("[provision] {key}"),
        format!("PGREPL_PROVISION__{}", key.to_uppercase()),
    )
}

/// How to choose another published address for `node`.
fn choose_listen(node: NodeId, own_listen: bool) -> String {
    let (key, var) = listen_setting(node, own_listen);
    format!("set `{key}` in the config file or {var}")
}

/// `node` could not start because its published address is taken; `own_listen` says whether
/// it came from the node's `listen`.
pub(super) fn port_in_use(node: NodeId, listen: SocketAddr, own_listen: bool) -> anyhow::Error {
    anyhow!(
        "{node} cannot publish PostgreSQL on {listen}: that address is already in use on its          Docker host. Stop what listens there, or choose another port: {}",
        choose_listen(node, own_listen)
    )
}

/// `node`'s existing container publishes another address than the configured one, so the
/// endpoints provision reports would be wrong.
pub(super) fn port_changed(
    node: NodeId,
    published: Option<SocketAddr>,
    wanted: SocketAddr,
    own_listen: bool,
) -> anyhow::Error {
    let published = published.map_or("no port".to_owned(), |p| p.to_string());
    anyhow!(
        "container {node} already exists and publishes {published}, but the configured address          is {wanted}. Put the setting back ({}), or remove the container (`docker rm -f {node}`;          its data volume stays) so it is created with the new one",
        choose_listen(node, own_listen)
    )
}

/// Something provision would use or remove exists under its name, but provision did not make
/// it. `detail` says what it is (e.g. its image).
pub(super) fn foreign(resource: &Resource, detail: &str) -> anyhow::Error {
    let detail = if detail.is_empty() {
        String::new()
    } else {
        format!(" ({detail})")
    };
    let remove = match resource.kind {
        Kind::Container => format!(
            "`docker rm -f {0}`; or rename it: `docker rename {0} <new name>`",
            resource.name
        ),
        Kind::Volume => format!("`docker volume rm {}`", resource.name),
        Kind::Network => format!("`docker network rm {}`", resource.name),
    };
    anyhow!(
        "{resource}{detail} exists but was not created by pgrepl-proxy provision, so it is left \
         alone. Remove it ({remove}), or pass --adopt to use it as it is (teardown then removes \
         it too)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_error(status_code: u16, message: &str) -> Error {
        Error::DockerResponseServerError {
            status_code,
            message: message.to_owned(),
        }
    }

    #[test]
    fn not_found_is_none_and_other_errors_stay_errors() {
        assert_eq!(optional(Ok::<_, Error>(3)).unwrap(), Some(3));
        let missing = optional::<()>(Err(server_error(404, "No such container: db01")));
        assert!(missing.unwrap().is_none());
        assert!(optional::<()>(Err(server_error(500, "boom"))).is_err());
    }

    #[test]
    fn both_ways_docker_reports_a_taken_port_are_recognised() {
        let allocator = server_error(
            500,
            "driver failed programming external connectivity on endpoint db01 (0123): \
             Bind for 127.0.0.1:54321 failed: port is already allocated",
        );
        let proxy = server_error(
            500,
            "driver failed programming external connectivity on endpoint db01 (0123): Error \
             starting userland proxy: listen tcp4 127.0.0.1:54321: bind: address already in use",
        );
        assert!(is_port_in_use(&allocator));
        assert!(is_port_in_use(&proxy));
        assert!(!is_port_in_use(&server_error(404, "No such image")));
    }

    #[test]
    fn the_port_message_names_the_address_and_how_to_change_it() {
        let at = |text: &str| text.parse::<SocketAddr>().unwrap();
        let text = port_in_use(NodeId::DB02, at("127.0.0.1:54322"), false).to_string();
        assert!(text.contains("127.0.0.1:54322"), "{text}");
        assert!(text.contains("[provision] replica_port"), "{text}");
        assert!(text.contains("PGREPL_PROVISION__REPLICA_PORT"), "{text}");
        let text = port_changed(
            NodeId::DB01,
            Some(at("127.0.0.1:54321")),
            at("127.0.0.1:6000"),
            false,
        )
        .to_string();
        assert!(text.contains("54321") && text.contains("6000"), "{text}");
        assert!(text.contains("PGREPL_PROVISION__PRIMARY_PORT"), "{text}");
        let text = port_in_use(NodeId::DB02, at("10.0.0.12:5432"), true).to_string();
        assert!(text.contains("on 10.0.0.12:5432"), "{text}");
        assert!(text.contains("[provision.nodes.db02] listen"), "{text}");
        assert!(
            text.contains("PGREPL_PROVISION__NODES__DB02__LISTEN"),
            "{text}"
        );
    }

    #[test]
    fn a_foreign_object_is_named_with_what_to_do() {
        let text = foreign(&Resource::container(NodeId::DB01), "image postgres:15").to_string();
        assert!(
            text.starts_with("container db01 (image postgres:15) exists"),
            "{text}"
        );
        assert!(text.contains("docker rm -f db01"), "{text}");
        assert!(text.contains("--adopt"), "{text}");
    }
}
