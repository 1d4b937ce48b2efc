//! Where each node's files live under the base directory. A node's directory plays the part
//! of the server user's home in the image (`/var/lib/postgresql`): it holds the data
//! directory, `.pgpass`, uploaded scripts, the Unix socket and the server log.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::runtime::{NodeFile, NodeId};

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
    pub fn node_dir(&self, node: NodeId) -> PathBuf {
        self.base.join(node.name())
    }

    /// The nodes with a directory under the base directory, in order.
    pub fn existing_nodes(&self) -> Result<Vec<NodeId>> {
        let entries = match std::fs::read_dir(&self.base) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(e).with_context(|| format!("cannot list {}", self.base.display()))
            }
        };
        let mut nodes: Vec<NodeId> = entries
            .flatten()
            .filter(|e| e.path().is_dir())
            .filter_map(|e| NodeId::parse(e.file_name().to_str()?))
            .collect();
        nodes.sort();
        Ok(nodes)
    }

    /// `PGDATA`.
    pub fn data_dir(&self, node: NodeId) -> PathBuf {
        self.node_dir(node).join("data")
    }

    /// Where pg_ctl sends the server's output; outside PGDATA so step 7 keeps it.
    pub fn log_file(&self, node: NodeId) -> PathBuf {
        self.node_dir(node).join("server.log")
    }

    /// The real path of one of the tutorial's files.
    pub fn file(&self, node: NodeId, file: NodeFile) -> PathBuf {
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
        assert_eq!(layout.node_dir(NodeId::DB01), Path::new("/srv/pg/db01"));
        assert_eq!(
            layout.data_dir(NodeId::DB02),
            Path::new("/srv/pg/db02/data")
        );
        assert_eq!(
            layout.log_file(NodeId::DB02),
            Path::new("/srv/pg/db02/server.log")
        );
    }

    #[test]
    fn existing_nodes_are_the_dbnn_directories() {
        let base = std::env::temp_dir().join(format!("pgrepl-layout-{}", std::process::id()));
        let layout = Layout::new(base.clone());
        assert!(
            layout.existing_nodes().unwrap().is_empty(),
            "no base directory yet"
        );
        for dir in ["db03", "db01", "other", "db1"] {
            std::fs::create_dir_all(base.join(dir)).unwrap();
        }
        std::fs::write(base.join("db02"), "a file, not a node").unwrap();
        let nodes = layout.existing_nodes().unwrap();
        std::fs::remove_dir_all(&base).unwrap();
        assert_eq!(nodes, [NodeId::DB01, NodeId::new(3).unwrap()]);
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
            assert_eq!(layout.file(NodeId::DB01, file), Path::new(path));
        }
    }
}
