//! The tutorial's names and the text of the files its steps write.

pub mod conf;
pub mod hba;
pub mod password;
pub mod pgpass;
pub mod sql;

use crate::runtime::NodeId;

/// The tutorial's primary's container (step 1): [`NodeId::DB01`]'s name.
pub const PRIMARY: &str = "db01";
/// The tutorial's replica's container (step 2): [`NodeId::DB02`]'s name.
pub const REPLICA: &str = "db02";
/// The role pg_basebackup and the walreceiver log in as (step 4).
pub const REPLICATION_USER: &str = "replication_user";
/// db02's physical replication slot (step 5); the name comes from the "Rideshare" demo app.
pub const SLOT: &str = "rideshare_slot";

/// The slot `replica` streams through on the primary: the tutorial's for db02,
/// `rideshare_slot_dbNN` for the others (db01 too, once it has become a replica).
pub fn slot_name(replica: NodeId) -> String {
    if replica == NodeId::DB02 {
        SLOT.to_owned()
    } else {
        format!("{SLOT}_{replica}")
    }
}

/// Where the official image keeps its data directory, and so the tutorial's files.
pub const PGDATA: &str = "/var/lib/postgresql/data";
/// Where step 4 puts every node's password file.
pub const PGPASS_PATH: &str = "/var/lib/postgresql/.pgpass";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn db02_keeps_the_tutorials_slot_and_the_others_are_named_after_their_node() {
        assert_eq!(slot_name(NodeId::DB02), "rideshare_slot");
        assert_eq!(slot_name(NodeId::new(3).unwrap()), "rideshare_slot_db03");
        assert_eq!(slot_name(NodeId::DB01), "rideshare_slot_db01");
        assert_eq!(
            (NodeId::DB01.name(), NodeId::DB02.name()),
            (PRIMARY.into(), REPLICA.into())
        );
    }
}
