//! Catalog views, functions and settings whose answer is the server's own rather than the
//! database's: a standby answers them for itself (its own sessions, locks, WAL position,
//! statistics counters, files), so a client would see another server than the one it thinks
//! it talks to, the primary. Reads of them go to the primary (reason `node_local`).
//!
//! What every node answers alike stays on the replica: catalogs (`pg_class`, `pg_statistic`,
//! `pg_stats`, `pg_settings`), relation sizes (a physical replica has the same files), and
//! information about the backend process that runs the statement (`pg_backend_pid()`,
//! `pg_backend_memory_contexts`, `inet_server_addr()`): no server answers those for another.
//! Settings such as `current_setting('cluster_name')` are kept too: they are how a client sees
//! where a read ran, and literal arguments never decide a route (see `fingerprint`).

/// Views (and the functions under them) a standby answers for itself. Sorted.
const RELATIONS: &[&str] = &[
    // Objects of the sessions: SQL `PREPARE` and `DECLARE` run on the primary.
    "pg_cursors",
    "pg_file_settings",
    "pg_hba_file_rules",
    "pg_ident_file_mappings",
    "pg_locks",
    "pg_prepared_statements",
    "pg_prepared_xacts",
    "pg_replication_origin_status",
    "pg_replication_slots",
    // Has `last_value`, which a standby shows as far as the WAL logged it (up to 32 ahead).
    "pg_sequences",
    "pg_shmem_allocations",
];

/// Prefixes of views of cumulative statistics and server activity (`pg_stat_activity`,
/// `pg_stat_replication`, `pg_stat_wal_receiver`, `pg_stat_progress_*`, `pg_stat_user_tables`,
/// `pg_statio_*`, `pg_stat_statements` ...): every counter is the server's own, table counters
/// included (a standby does not count the rows its replay writes). `pg_statistic` and
/// `pg_stats`, the planner's statistics, are catalogs and match neither.
const RELATION_PREFIXES: &[&str] = &["pg_stat_", "pg_statio_"];

/// Functions a standby answers for itself, or refuses in recovery. Sorted.
const FUNCTIONS: &[&str] = &[
    "pg_blocking_pids",
    "pg_conf_load_time",
    "pg_current_logfile",
    "pg_cursor",
    "pg_get_shmem_allocations",
    "pg_get_wal_replay_pause_state",
    "pg_hba_file_rules",
    "pg_ident_file_mappings",
    "pg_is_in_recovery",
    "pg_is_wal_replay_paused",
    "pg_isolation_test_session_is_blocked",
    "pg_last_committed_xact",
    "pg_last_xact_replay_timestamp",
    "pg_listening_channels",
    "pg_lock_status",
    "pg_log_backend_memory_contexts",
    "pg_notification_queue_usage",
    "pg_postmaster_start_time",
    "pg_prepared_statement",
    "pg_prepared_xact",
    "pg_read_binary_file",
    "pg_read_file",
    "pg_safe_snapshot_blocking_pids",
    "pg_sequence_last_value",
    "pg_show_all_file_settings",
    "pg_show_replication_origin_status",
];

/// Prefixes of function families: statistics (`pg_stat_get_*`, `pg_stat_file`,
/// `pg_stat_statements`), WAL positions (`pg_current_wal_*`, `pg_last_wal_*`,
/// `pg_walfile_name*`), replay control, `pg_control_*` and the directory listings.
const FUNCTION_PREFIXES: &[&str] = &[
    "pg_control_",
    "pg_current_wal_",
    "pg_last_wal_",
    "pg_ls_",
    "pg_stat_",
    "pg_wal_replay_",
    "pg_walfile_name",
];

/// Settings that tell a standby from the primary: `SHOW transaction_read_only` is how pgjdbc's
/// `targetServerType=primary` and libpq's `target_session_attrs=read-write` (before
/// PostgreSQL 14) recognize a primary.
const SETTINGS: &[&str] = &["in_hot_standby", "transaction_read_only"];

/// Whether reading the relation `name` (catalog spelling, in any schema: extensions such as
/// `pg_stat_statements` live where they were installed) needs the primary's answer.
pub(super) fn relation(name: &str) -> bool {
    RELATIONS.binary_search(&name).is_ok() || RELATION_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// Whether calling `name` (lower-cased, in any schema) needs the primary's answer.
pub(super) fn function(name: &str) -> bool {
    FUNCTIONS.binary_search(&name).is_ok() || FUNCTION_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// Whether `SHOW name` needs the primary's answer.
pub(super) fn setting(name: &str) -> bool {
    SETTINGS.iter().any(|s| s.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_sorted_for_binary_search() {
        assert!(RELATIONS.windows(2).all(|w| w[0] < w[1]));
        assert!(FUNCTIONS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn tells_node_local_names_from_the_database_s_own() {
        for (name, want) in [
            ("pg_stat_activity", true),
            ("pg_stat_wal_receiver", true),
            ("pg_stat_user_tables", true),
            ("pg_statio_user_indexes", true),
            ("pg_stat_statements", true),
            ("pg_locks", true),
            ("pg_replication_slots", true),
            ("pg_sequences", true),
            ("pg_statistic", false),
            ("pg_stats", false),
            ("pg_stats_ext", false),
            ("pg_class", false),
            ("pg_settings", false),
            ("pg_backend_memory_contexts", false),
            ("orders", false),
        ] {
            assert_eq!(relation(name), want, "{name}");
        }
        for (name, want) in [
            ("pg_current_wal_lsn", true),
            ("pg_last_wal_replay_lsn", true),
            ("pg_stat_get_activity", true),
            ("pg_stat_file", true),
            ("pg_walfile_name_offset", true),
            ("pg_is_in_recovery", true),
            ("pg_ls_waldir", true),
            ("pg_sequence_last_value", true),
            ("pg_backend_pid", false),
            ("pg_wal_lsn_diff", false),
            ("pg_relation_size", false),
            ("current_setting", false),
            ("inet_server_addr", false),
        ] {
            assert_eq!(function(name), want, "{name}");
        }
        assert!(setting("TRANSACTION_READ_ONLY"));
        assert!(setting("in_hot_standby"));
        assert!(!setting("search_path"));
    }
}
