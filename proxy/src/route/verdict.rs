//! The classifier's one answer about a statement, as the session routes it: where it may
//! run, why, and what it does to the session.

use super::{CausalHint, Classifier, Effects, Reason, Route, UserFunctions};

/// What classifying a statement's SQL gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub route: Route,
    pub reason: Reason,
    pub effects: Effects,
    /// A read's own causal-reads mode and staleness bound (`/* pgrepl:max_staleness=... */`).
    pub hint: CausalHint,
}

impl Verdict {
    /// For messages that are no statement, or SQL the proxy could not read: the primary,
    /// and it may do anything the server allows.
    pub const UNKNOWN: Verdict = Verdict {
        route: Route::Primary,
        reason: Reason::Unparseable,
        effects: Effects::NONE,
        hint: CausalHint::NONE,
    };

    /// Whether the statement may change data that later reads must see: it goes to the
    /// primary for any reason but transaction control (which by itself writes nothing), a
    /// hint (a read the client sent there) or settings (which change only the session).
    pub fn may_write(self) -> bool {
        self.route == Route::Primary
            && !matches!(
                self.reason,
                Reason::Transaction | Reason::Hint | Reason::NodeLocal
            )
            && !self
                .effects
                .intersects(Effects::ONLY_SETS | Effects::ONLY_SETTINGS)
    }

    /// How strongly the statement binds its unit to the primary: a replica read, then what
    /// the primary runs without writing, then writes.
    pub fn rank(self) -> u8 {
        match self.route {
            Route::Replica => 0,
            Route::Primary if self.may_write() => 2,
            Route::Primary => 1,
        }
    }

    /// The verdict on SQL text. Text that is not UTF-8 cannot be parsed: it goes to the
    /// primary, and may do anything.
    pub fn of(classifier: &Classifier, functions: &UserFunctions, sql: &[u8]) -> Verdict {
        match classifier.decide(sql, functions) {
            Some((classification, effects, hint)) => Verdict {
                route: classification.route,
                reason: classification.reason,
                effects,
                hint,
            },
            None => Verdict {
                effects: Effects::OPAQUE,
                ..Verdict::UNKNOWN
            },
        }
    }
}
