//! The outcome of classifying a statement: where it goes and why.
//!
//! The reason is kept separate from the route so metrics and logs can say
//! *why* a statement went to the primary, not just that it did.

use std::fmt;
use std::sync::Arc;

/// The backend a statement must run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    /// The read-write primary; the safe default.
    Primary,
    /// The hot-standby replica, which rejects any write.
    Replica,
}

impl Route {
    /// Lower-case label, cheap enough for a metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Route::Primary => "primary",
            Route::Replica => "replica",
        }
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a statement got its route: one type for the classifier and the session, so logs and
/// metrics name every decision the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Reason {
    /// Plain read query (SELECT/VALUES/TABLE...).
    Read,
    /// SHOW.
    Show,
    /// EXPLAIN without ANALYZE.
    Explain,
    /// Empty query string, or only comments/semicolons.
    Empty,
    /// INSERT/UPDATE/DELETE/MERGE/COPY FROM/TRUNCATE...
    Write,
    /// CREATE/ALTER/DROP/COMMENT/GRANT/REVOKE...
    Ddl,
    /// BEGIN/START TRANSACTION/COMMIT/ROLLBACK/SAVEPOINT/RELEASE...
    Transaction,
    /// BEGIN/START TRANSACTION ... READ ONLY: a replica can run the whole transaction.
    ReadOnlyTransaction,
    /// A read that calls a function with side effects, a configured write function, or a
    /// volatile user function.
    Function,
    /// A read of what only the primary's own server can answer for the database the client
    /// thinks it talks to: activity, locks, WAL and replication state, cumulative statistics,
    /// server files, a sequence's current state.
    NodeLocal,
    /// SELECT ... FOR UPDATE/SHARE, or LOCK TABLE.
    Lock,
    /// A data-modifying CTE at any depth.
    Cte,
    /// SELECT ... INTO.
    Into,
    /// SET, LISTEN, PREPARE, VACUUM, CALL, COPY TO, and anything not listed.
    Utility,
    /// EXPLAIN ANALYZE, which executes the statement.
    ExplainAnalyze,
    /// sqlparser could not parse it (or it was too complex to parse safely).
    Unparseable,
    /// A read whose leading `/* pgrepl:primary */` or `/* pgrepl:replica */` comment chose.
    Hint,
    // The session's reasons for sending a read to the primary after all.
    /// The session must stay on the primary (session state a replica does not have).
    SessionPinned,
    /// The replica may not have replayed the writes this read must see yet.
    ReadYourWrites,
    /// The replica lags more than `[routing] max_replica_lag`.
    Lag,
    /// The replica is unreachable or failing its health checks.
    ReplicaDown,
    /// No replica is configured.
    NoReplica,
}

impl Reason {
    /// Every reason, in declaration order: `ALL[r.index()] == r`.
    pub const ALL: [Reason; 22] = [
        Reason::Read,
        Reason::Show,
        Reason::Explain,
        Reason::Empty,
        Reason::Write,
        Reason::Ddl,
        Reason::Transaction,
        Reason::ReadOnlyTransaction,
        Reason::Function,
        Reason::NodeLocal,
        Reason::Lock,
        Reason::Cte,
        Reason::Into,
        Reason::Utility,
        Reason::ExplainAnalyze,
        Reason::Unparseable,
        Reason::Hint,
        Reason::SessionPinned,
        Reason::ReadYourWrites,
        Reason::Lag,
        Reason::ReplicaDown,
        Reason::NoReplica,
    ];

    /// Position in [`Reason::ALL`], for tables indexed by reason (the metrics' counters). The
    /// declaration order is the index: keep `NoReplica` last (checked below at compile time).
    #[inline]
    pub fn index(self) -> usize {
        self as usize
    }

    /// snake_case label; static so it can be a metrics label without allocating.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Read => "read",
            Reason::Show => "show",
            Reason::Explain => "explain",
            Reason::Empty => "empty",
            Reason::Write => "write",
            Reason::Ddl => "ddl",
            Reason::Transaction => "transaction",
            Reason::ReadOnlyTransaction => "read_only_transaction",
            Reason::Function => "function",
            Reason::NodeLocal => "node_local",
            Reason::Lock => "lock",
            Reason::Cte => "cte",
            Reason::Into => "into",
            Reason::Utility => "utility",
            Reason::ExplainAnalyze => "explain_analyze",
            Reason::Unparseable => "unparseable",
            Reason::Hint => "hint",
            Reason::SessionPinned => "session_pinned",
            Reason::ReadYourWrites => "read_your_writes",
            Reason::Lag => "lag",
            Reason::ReplicaDown => "replica_down",
            Reason::NoReplica => "no_replica",
        }
    }
}

const _: () = assert!(Reason::ALL.len() == Reason::NoReplica as usize + 1);

/// A routing decision with its reason and an optional detail for logs
/// (statement keyword, function name, lock clause...). The detail is shared, so
/// handing out a cached decision never allocates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classification {
    pub route: Route,
    pub reason: Reason,
    pub detail: Option<Arc<str>>,
}

impl fmt::Display for Classification {
    /// `primary: write (INSERT)`, or `replica: read` when there is no detail.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.route, self.reason.as_str())?;
        if let Some(detail) = &self.detail {
            write!(f, " ({detail})")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_snake_case() {
        let mut labels = std::collections::HashSet::new();
        for (index, reason) in Reason::ALL.into_iter().enumerate() {
            assert_eq!(reason.index(), index, "{reason:?}");
            let label = reason.as_str();
            assert!(
                label.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{label}"
            );
            assert!(labels.insert(label), "{label} is used twice");
        }
        assert_eq!(Reason::ExplainAnalyze.as_str(), "explain_analyze");
        assert_eq!(
            Reason::ReadOnlyTransaction.as_str(),
            "read_only_transaction"
        );
        assert_eq!(Reason::NodeLocal.as_str(), "node_local");
    }

    /// The README names every reason (its routing table and the paragraph on the session's
    /// reasons), so a new one cannot go undocumented.
    #[test]
    fn the_readme_names_every_reason() {
        let readme = include_str!("../../../README.md");
        let missing: Vec<&str> = Reason::ALL
            .iter()
            .map(|reason| reason.as_str())
            .filter(|label| {
                !readme.contains(&format!("`{label}`")) && !readme.contains(&format!("`{label} ("))
            })
            .collect();
        assert!(missing.is_empty(), "not in the README: {missing:?}");
    }

    #[test]
    fn display_includes_detail_only_when_present() {
        let read = Classification {
            route: Route::Replica,
            reason: Reason::Read,
            detail: None,
        };
        assert_eq!(read.to_string(), "replica: read");
        let write = Classification {
            route: Route::Primary,
            reason: Reason::Write,
            detail: Some("INSERT".into()),
        };
        assert_eq!(write.to_string(), "primary: write (INSERT)");
    }
}
