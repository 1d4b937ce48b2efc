//! postgresql.conf settings for the test nodes.

use std::path::Path;

/// Settings appended to a node's postgresql.conf; later lines override the
/// defaults initdb wrote above them.
///
/// Durability is switched off because test data is disposable and start-up
/// and write speed matter more. Connections are logged, with the
/// authentication method used, to show what the proxy did on the backends.
pub(crate) fn server_settings(name: &str, port: u16, socket_dir: &Path) -> String {
    format!(
        "\n# pgrepl test harness\n\
         listen_addresses = '127.0.0.1'\n\
         port = {port}\n\
         unix_socket_directories = '{socket_dir}'\n\
         cluster_name = '{name}'\n\
         wal_level = replica\n\
         max_wal_senders = 10\n\
         max_replication_slots = 10\n\
         hot_standby = on\n\
         hot_standby_feedback = on\n\
         fsync = off\n\
         synchronous_commit = off\n\
         full_page_writes = off\n\
         max_connections = 300\n\
         password_encryption = 'scram-sha-256'\n\
         log_connections = on\n",
        socket_dir = socket_dir.display()
    )
}

/// What the replica overrides in the configuration it copied from the primary.
pub(crate) fn replica_overrides(name: &str, port: u16) -> String {
    format!("\n# pgrepl test harness: replica\nport = {port}\ncluster_name = '{name}'\n")
}
