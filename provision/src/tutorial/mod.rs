//! The tutorial's names and the text of the files its steps write.

pub mod conf;
pub mod hba;
pub mod password;
pub mod pgpass;
pub mod sql;

/// The primary's container (step 1).
pub const PRIMARY: &str = "db01";
/// The replica's container (step 2).
pub const REPLICA: &str = "db02";
/// The role pg_basebackup and the walreceiver log in as (step 4).
pub const REPLICATION_USER: &str = "replication_user";
/// The physical replication slot (step 5); the name comes from the "Rideshare" demo app.
pub const SLOT: &str = "rideshare_slot";
/// Where the official image keeps its data directory, and so the tutorial's files.
pub const PGDATA: &str = "/var/lib/postgresql/data";
/// Where step 4 puts the replica's password file.
pub const PGPASS_PATH: &str = "/var/lib/postgresql/.pgpass";
