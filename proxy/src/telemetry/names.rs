//! The exported metric names (a contract: dashboards and alert rules use them) and their
//! help texts.

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};

pub const QUERIES: &str = "pgrepl_queries_total";
pub const QUERY_DURATION: &str = "pgrepl_query_duration_seconds";
pub const READ_STALENESS: &str = "pgrepl_read_staleness_seconds";
pub const CLIENT_CONNECTIONS: &str = "pgrepl_client_connections";
pub const CLIENT_CONNECTIONS_MAX: &str = "pgrepl_client_connections_max";
pub const CLIENT_CONNECTIONS_TOTAL: &str = "pgrepl_client_connections_total";
pub const CLIENT_REJECTED: &str = "pgrepl_client_rejected_total";
pub const CLIENT_LOGINS_PENDING: &str = "pgrepl_client_logins_pending";
pub const BACKEND_CONNECTIONS: &str = "pgrepl_backend_connections";
pub const BACKEND_UP: &str = "pgrepl_backend_up";
pub const BACKEND_ROLE_MISMATCH: &str = "pgrepl_backend_role_mismatch";
pub const REPLICA_LAG_BYTES: &str = "pgrepl_replica_lag_bytes";
pub const REPLICA_STALENESS: &str = "pgrepl_replica_staleness_seconds";
pub const READ_RETRIES: &str = "pgrepl_read_retries_total";
pub const PARSE_FAILURES: &str = "pgrepl_parse_failures_total";
pub const CACHE_HITS: &str = "pgrepl_classify_cache_hits_total";
pub const CACHE_MISSES: &str = "pgrepl_classify_cache_misses_total";
pub const BYTES: &str = "pgrepl_bytes_total";
pub const CAUSAL_WAIT: &str = "pgrepl_causal_wait_seconds";
pub const CAUSAL_WAITS: &str = "pgrepl_causal_waits_total";
pub const POSITION_QUERIES: &str = "pgrepl_primary_position_queries_total";
pub const POOL_WAIT_SECONDS: &str = "pgrepl_pool_wait_seconds";
pub const CLIENTS_WAITING: &str = "pgrepl_clients_waiting";
pub const PINNED_SESSIONS: &str = "pgrepl_pinned_sessions";
pub const CONFIG_RELOADS: &str = "pgrepl_config_reloads_total";
pub const CONFIG_LAST_RELOAD: &str = "pgrepl_config_last_reload_success_timestamp_seconds";
pub const BACKEND_FENCED: &str = "pgrepl_backend_fenced";
pub const BACKEND_TIMELINE: &str = "pgrepl_backend_timeline";
pub const BACKEND_WRITER: &str = "pgrepl_backend_writer";
pub const WRITER_CHANGES: &str = "pgrepl_writer_changes_total";
pub const WRITES_REFUSED: &str = "pgrepl_writes_refused_total";
pub const WRITER_LOST_TRANSACTIONS: &str = "pgrepl_writer_lost_transactions_total";

/// HELP of the histograms the proxy renders itself (see `tally`).
pub const QUERY_DURATION_HELP: &str =
    "Time from sending a statement to its backend to its ReadyForQuery, by route";
pub const READ_STALENESS_HELP: &str =
    "How far behind the primary a replica was when a read was sent to it";
pub const CAUSAL_WAIT_HELP: &str =
    "How long a read waited for its replica to replay what its session must see";

/// Why a client connection was turned away (`reason` of `pgrepl_client_rejected_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Wrong password, unknown user, or a method the user may not use.
    Auth,
    /// Authenticated, but `[proxy] max_client_connections` reached.
    Limit,
    /// A malformed or unsupported startup.
    Protocol,
    /// No backend accepted the client's user and database (down, or the database is missing).
    Backend,
    /// Not authenticated within `[proxy] startup_timeout`.
    Timeout,
    /// Still logging in, closed as the oldest when `[proxy] max_pending_logins` was reached.
    PendingLimit,
    /// Still logging in, closed as its address's oldest when
    /// `[proxy] max_pending_logins_per_address` was reached.
    AddressLimit,
}

impl Rejection {
    pub const ALL: [Rejection; 7] = [
        Rejection::Auth,
        Rejection::Limit,
        Rejection::Protocol,
        Rejection::Backend,
        Rejection::Timeout,
        Rejection::PendingLimit,
        Rejection::AddressLimit,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::Auth => "auth",
            Rejection::Limit => "limit",
            Rejection::Protocol => "protocol",
            Rejection::Backend => "backend",
            Rejection::Timeout => "timeout",
            Rejection::PendingLimit => "pending_limit",
            Rejection::AddressLimit => "address_limit",
        }
    }
}

/// Gives every metric the facade exports its HELP text (the README's metrics table says the
/// same).
pub fn describe_all() {
    describe_counter!(
        QUERIES,
        "Statements (simple queries or extended-protocol batches) routed, by route, backend and reason"
    );
    describe_gauge!(
        CLIENT_CONNECTIONS,
        "Authenticated client connections open now"
    );
    describe_gauge!(
        CLIENT_LOGINS_PENDING,
        "Client connections accepted and not yet authenticated"
    );
    describe_gauge!(CLIENT_CONNECTIONS_MAX, "[proxy] max_client_connections");
    describe_counter!(CLIENT_CONNECTIONS_TOTAL, "Client connections accepted");
    describe_counter!(
        CLIENT_REJECTED,
        "Client connections turned away, by reason (auth, limit, protocol, backend, timeout, pending_limit, address_limit)"
    );
    describe_gauge!(
        BACKEND_CONNECTIONS,
        "Backend connections, leased by a session (active) or pooled (idle)"
    );
    describe_gauge!(
        BACKEND_UP,
        "1 when the monitor's last check of the backend succeeded"
    );
    describe_gauge!(
        BACKEND_ROLE_MISMATCH,
        "1 when the primary is in recovery or a replica is not"
    );
    describe_gauge!(
        REPLICA_LAG_BYTES,
        Unit::Bytes,
        "Primary WAL position minus the replica's replay position, as last sampled"
    );
    describe_gauge!(
        REPLICA_STALENESS,
        Unit::Seconds,
        "Time since the proxy first saw a primary WAL position the replica has not replayed (0 when caught up)"
    );
    describe_counter!(
        READ_RETRIES,
        "Reads a replica lost before answering, re-run on the primary"
    );
    describe_counter!(PARSE_FAILURES, "Statements sqlparser could not parse");
    describe_counter!(
        CACHE_HITS,
        "Classification cache look-ups answered from the cache"
    );
    describe_counter!(
        CACHE_MISSES,
        "Classification cache look-ups that parsed the SQL"
    );
    describe_counter!(
        BYTES,
        Unit::Bytes,
        "Bytes received from clients (client_to_backend) and sent to them (backend_to_client)"
    );
    describe_counter!(
        CAUSAL_WAITS,
        "Reads that waited for a replica to replay what their session must see, by where they then ran (replica, primary)"
    );
    describe_histogram!(
        POOL_WAIT_SECONDS,
        Unit::Seconds,
        "How long a client that found no server connection free waited in its pool's line"
    );
    describe_gauge!(
        CLIENTS_WAITING,
        "Clients waiting in a pool's line for a server connection now"
    );
    describe_gauge!(
        PINNED_SESSIONS,
        "Sessions keeping their primary connection because they hold state only it has (transaction pooling)"
    );
    describe_counter!(
        POSITION_QUERIES,
        "Queries the proxy added on the primary to learn WAL positions, by kind (commit, round, flush)"
    );
    describe_counter!(
        CONFIG_RELOADS,
        "Configuration reloads (SIGHUP or the admin console), by result (ok, rejected)"
    );
    describe_gauge!(
        BACKEND_FENCED,
        "1 when the backend is out of recovery on a timeline older than another node's: it gets no reads and no writes"
    );
    describe_gauge!(
        BACKEND_TIMELINE,
        "The backend's timeline at the monitor's last check (a standby's: its last restartpoint's)"
    );
    describe_gauge!(BACKEND_WRITER, "1 for the backend that takes writes now");
    describe_counter!(
        WRITER_CHANGES,
        "Times the proxy chose a new writer (following the primary)"
    );
    describe_counter!(
        WRITES_REFUSED,
        "Statements for the primary refused by the proxy, by reason (down, read_only, conflict, fenced, no_candidate, wait_timeout)"
    );
    describe_counter!(
        WRITER_LOST_TRANSACTIONS,
        "Transactions lost with their writer, by outcome (not_committed: 40001, unknown: 08007)"
    );
    describe_gauge!(
        CONFIG_LAST_RELOAD,
        Unit::Seconds,
        "Unix time of the last successful configuration load: the start, then each reload that applied"
    );
}
