//! What the Docker runtime calls things: the containers, volumes and network it creates, the
//! labels that mark them as provision's, and where the tutorial's files are in the image. In
//! one place so the runtime and the dry-run plan say the same.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use crate::runtime::{NodeFile, NodeId};
use crate::tutorial::{PGDATA, PGPASS_PATH};

/// Marks containers and volumes provision made, with the node they belong to as the value, so
/// re-runs and teardown never take a stranger's `db01` for ours.
pub(super) const NODE_LABEL: &str = "io.pgrepl-proxy.node";
/// Marks the network provision made (the value is its name).
pub(super) const NETWORK_LABEL: &str = "io.pgrepl-proxy.network";

/// The server's user in the image: it runs `exec`s and the offline script, and owns uploads.
pub(super) const SERVER_USER: &str = "postgres";
/// The port the server listens on inside its container.
pub(super) const PG_PORT: u16 = 5432;
/// Where the published ports listen on the host: never on other interfaces.
pub(super) const LOOPBACK: &str = "127.0.0.1";
/// Fast shutdown, what the official image's STOPSIGNAL says; a locally imported image cannot
/// carry a STOPSIGNAL, so every container gets it.
pub(super) const STOP_SIGNAL: &str = "SIGINT";
/// Seconds a stop waits for the server to exit before Docker kills it (the default 10 s can
/// cut a shutdown checkpoint short).
pub(super) const STOP_TIMEOUT_SECS: i32 = 60;

/// Ready means answering on TCP: the image's first-start temporary server listens on the Unix
/// socket only, and must not count.
pub(super) const PG_ISREADY: &[&str] = &[
    "pg_isready",
    "-q",
    "-h",
    LOOPBACK,
    "-p",
    "5432",
    "-U",
    "postgres",
];

/// The port key of Docker's port maps.
pub(super) fn port_key() -> String {
    format!("{PG_PORT}/tcp")
}

/// The server user's home: where `.pgpass` lives.
pub(super) fn home_dir() -> &'static str {
    Path::new(PGPASS_PATH)
        .parent()
        .and_then(Path::to_str)
        .unwrap_or("/")
}

/// Where `file` is inside the node's container.
pub(super) fn container_path(file: NodeFile) -> String {
    match file {
        NodeFile::Data(name) => format!("{PGDATA}/{name}"),
        NodeFile::Pgpass => PGPASS_PATH.to_owned(),
        NodeFile::Script(name) => format!("/{name}"),
    }
}

/// What kind of Docker object a [`Resource`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Container,
    Volume,
    Network,
}

/// One Docker object provision creates, under a fixed name, with the label that says it is
/// provision's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Resource {
    pub kind: Kind,
    pub name: String,
    label: (&'static str, String),
}

impl Resource {
    /// The node's container, named as the tutorial names it.
    pub fn container(node: NodeId) -> Resource {
        Resource::of_node(Kind::Container, node.name(), node)
    }

    /// The one-shot container step 7 runs on the node's data volume.
    pub fn offline(node: NodeId) -> Resource {
        Resource::of_node(Kind::Container, format!("{node}-basebackup"), node)
    }

    /// The named volume holding the node's data directory.
    pub fn volume(node: NodeId) -> Resource {
        Resource::of_node(Kind::Volume, format!("{node}-data"), node)
    }

    /// The user-defined network both containers are on.
    pub fn network(name: &str) -> Resource {
        Resource {
            kind: Kind::Network,
            name: name.to_owned(),
            label: (NETWORK_LABEL, name.to_owned()),
        }
    }

    fn of_node(kind: Kind, name: String, node: NodeId) -> Resource {
        Resource {
            kind,
            name,
            label: (NODE_LABEL, node.name()),
        }
    }

    /// The labels to create it with.
    pub fn labels(&self) -> HashMap<String, String> {
        HashMap::from([(self.label.0.to_owned(), self.label.1.clone())])
    }

    /// `key=value`, as the docker CLI's `--label` takes it.
    pub fn label_arg(&self) -> String {
        format!("{}={}", self.label.0, self.label.1)
    }

    /// Whether an object found under its name carries its label, i.e. provision made it.
    pub fn is_marked(&self, labels: Option<&HashMap<String, String>>) -> bool {
        labels.and_then(|l| l.get(self.label.0)) == Some(&self.label.1)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Container => "container",
            Kind::Volume => "volume",
            Kind::Network => "network",
        })
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_where_the_tutorial_puts_them() {
        assert_eq!(
            container_path(NodeFile::Data("pg_hba.conf")),
            "/var/lib/postgresql/data/pg_hba.conf"
        );
        assert_eq!(
            container_path(NodeFile::Pgpass),
            "/var/lib/postgresql/.pgpass"
        );
        assert_eq!(
            container_path(NodeFile::Script("replication_user.sql")),
            "/replication_user.sql"
        );
        assert_eq!(home_dir(), "/var/lib/postgresql");
    }

    #[test]
    fn pg_isready_asks_the_port_the_server_listens_on() {
        let port = PG_ISREADY.iter().skip_while(|a| **a != "-p").nth(1);
        assert_eq!(port, Some(&PG_PORT.to_string().as_str()));
    }

    #[test]
    fn names_and_labels() {
        assert_eq!(
            Resource::container(NodeId::DB01).to_string(),
            "container db01"
        );
        assert_eq!(
            Resource::volume(NodeId::DB02).to_string(),
            "volume db02-data"
        );
        assert_eq!(Resource::offline(NodeId::DB02).name, "db02-basebackup");
        let net = Resource::network("rideshare-net");
        assert_eq!(net.label_arg(), "io.pgrepl-proxy.network=rideshare-net");
        assert!(net.is_marked(Some(&net.labels())));
    }

    #[test]
    fn only_our_label_with_the_right_node_marks_it_ours() {
        let db01 = Resource::container(NodeId::DB01);
        assert!(db01.is_marked(Some(&db01.labels())));
        assert!(!db01.is_marked(None));
        assert!(!db01.is_marked(Some(&HashMap::new())));
        let db02_labels = Resource::container(NodeId::DB02).labels();
        assert!(!db01.is_marked(Some(&db02_labels)));
    }
}
