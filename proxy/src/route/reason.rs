//! The outcome of classifying a statement: where it goes and why.
//!
//! The reason is kept separate from the route so metrics and logs can say
//! *why* a statement went to the primary, not just that it did.

use std::fmt;

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

/// Why a statement got its route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
    /// A read that calls a function with side effects.
    Function,
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
}

impl Reason {
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
            Reason::Function => "function",
            Reason::Lock => "lock",
            Reason::Cte => "cte",
            Reason::Into => "into",
            Reason::Utility => "utility",
            Reason::ExplainAnalyze => "explain_analyze",
            Reason::Unparseable => "unparseable",
        }
    }
}

/// A routing decision with its reason and an optional detail for logs
/// (statement keyword, function name, lock clause...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classification {
    pub route: Route,
    pub reason: Reason,
    pub detail: Option<Box<str>>,
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
        let all = [
            Reason::Read,
            Reason::Show,
            Reason::Explain,
            Reason::Empty,
            Reason::Write,
            Reason::Ddl,
            Reason::Transaction,
            Reason::Function,
            Reason::Lock,
            Reason::Cte,
            Reason::Into,
            Reason::Utility,
            Reason::ExplainAnalyze,
            Reason::Unparseable,
        ];
        for reason in all {
            let label = reason.as_str();
            assert!(
                label.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{label}"
            );
        }
        assert_eq!(Reason::ExplainAnalyze.as_str(), "explain_analyze");
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
