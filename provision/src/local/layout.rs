//! Where each node's files live under the base directory. A node's directory plays the part
//! of the server user's home in the image (`/var/lib/postgresql`): it holds the data
//! directory, `.pgpass`, uploaded scripts, the Unix socket and the server log.

use std::path::{Path, PathBuf};

use crate::runtime::{Node, NodeFile};

/// The paths of both nodes under one base directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    base: PathBuf,
}

impl Layout {
    /// `base` should be absolute: its paths go into server options and other processes' cwd.
    pub fn new(base: PathBuf) -> Layout {
        Layout { base }
    }

    pub fn base(&self) -> &Path {
        &self.base
    }

    /// `<base>/db01`: the node's home, and its Unix socket directory.
    pub fn node_dir(&self, node: Node) -> PathBuf {
        self.base.join(node.name())
    }

    /// `PGDATA`.
    pub fn data_dir(&self, node: Node) -> PathBuf {
        self.node_dir(node).join("data")
    }

    /// Where pg_ctl sends the server's output; outside PGDATA so step 7 keeps it.
    pub fn log_file(&self, node: Node) -> PathBuf {
        self.node_dir(node).join("server.log")
    }

    /// The real path of one of the tutorial's files.
    pub fn file(&self, node: Node, file: NodeFile) -> PathBuf {
        match file {
            NodeFile::Data(name) => self.data_dir(node).join(name),
            NodeFile::Pgpass => self.node_dir(node).join(".pgpass"),
            NodeFile::Script(name) => self.node_dir(node).join(name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_node_has_its_own_home() {
        let layout = Layout::new(PathBuf::from("/srv/pg"));
        assert_eq!(layout.node_dir(Node::Primary), Path::new("/srv/pg/db01"));
        assert_eq!(
            layout.data_dir(Node::Replica),
            Path::new("/srv/pg/db02/data")
        );
        assert_eq!(
            layout.log_file(Node::Replica),
            Path::new("/srv/pg/db02/server.log")
        );
    }

    #[test]
    fn tutorial_files_map_into_the_node() {
        let layout = Layout::new(PathBuf::from("/srv/pg"));
        let cases = [
            (
                NodeFile::Data("pg_hba.conf"),
                "/srv/pg/db01/data/pg_hba.conf",
            ),
            (NodeFile::Pgpass, "/srv/pg/db01/.pgpass"),
            (
                NodeFile::Script("replication_user.sql"),
                "/srv/pg/db01/replication_user.sql",
            ),
        ];
        for (file, path) in cases {
            assert_eq!(layout.file(Node::Primary, file), Path::new(path));
        }
    }
}
