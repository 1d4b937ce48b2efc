//! Docker's answers turned into what the steps act on (a 404 is "not there") and into
//! messages that say what to do.

use anyhow::anyhow;
use bollard::errors::Error;

use super::names::{Kind, Resource, LOOPBACK};
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

/// The setting `node`'s port comes from: db01's `primary_port`, the replicas' `replica_port`
/// (db02 on it, the others on the ports after it).
fn port_setting(node: NodeId) -> &'static str {
    match node {
        NodeId::DB01 => "primary_port",
        _ => "replica_port",
    }
}

/// How to choose another host port for `node`.
fn choose_port(node: NodeId) -> String {
    let key = port_setting(node);
    format!(
        "set `[provision] {key}` in the config file or PGREPL_PROVISION__{}",
        key.to_uppercase()
    )
}

/// `node` could not start because its host port is taken.
pub(super) fn port_in_use(node: NodeId, port: u16) -> anyhow::Error {
    anyhow!(
        "{node} cannot publish PostgreSQL on {LOOPBACK}:{port}: that address is already in use \
         on this machine. Stop what listens there, or choose another port: {}",
        choose_port(node)
    )
}

/// `node`'s existing container publishes another port than the configured one, so the
/// endpoints provision reports would be wrong.
pub(super) fn port_changed(node: NodeId, published: Option<u16>, port: u16) -> anyhow::Error {
    let published = published.map_or("no port".to_owned(), |p| format!("port {p}"));
    anyhow!(
        "container {node} already exists and publishes {published}, but the configured port is \
         {port}. Put the setting back ({}), or remove the container (`docker rm -f {node}`; \
         its data volume stays) so it is created with the new port",
        choose_port(node)
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
        let text = port_in_use(NodeId::DB02, 54322).to_string();
        assert!(text.contains("127.0.0.1:54322"), "{text}");
        assert!(text.contains("[provision] replica_port"), "{text}");
        assert!(text.contains("PGREPL_PROVISION__REPLICA_PORT"), "{text}");
        let text = port_changed(NodeId::DB01, Some(54321), 6000).to_string();
        assert!(text.contains("54321") && text.contains("6000"), "{text}");
        assert!(text.contains("PGREPL_PROVISION__PRIMARY_PORT"), "{text}");
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
