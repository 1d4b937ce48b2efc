//! The part of a classification the SQL text decides, which is what the cache keeps, and
//! the last step that needs the session's database: its functions and sequences.

use std::sync::Arc;

use super::catalog::UserFunctions;
use super::ddl::CatalogChanges;
use super::effects::Effects;
use super::hint::CausalHint;
use super::name::CatalogName;
use super::reason::{Classification, Reason, Route};

/// What the text of a SQL string says about its route.
#[derive(Debug)]
pub struct Analysis {
    /// The route by the text and the configuration alone.
    pub(super) classification: Classification,
    /// What its reads name that the catalog or a hint decides.
    pub(super) reads: Reads,
    /// A leading `/* pgrepl:... */` comment.
    pub(super) hint: Option<Route>,
    /// A read's own mode and staleness bound, from leading comments.
    pub(super) causal: CausalHint,
    /// What the string changes in the catalog look-up's view.
    pub(super) changes: CatalogChanges,
    /// What it does to the session's state.
    pub(super) effects: Effects,
}

/// What the reads of a string name that the text alone does not settle.
#[derive(Debug, Default)]
pub(super) struct Reads {
    /// User functions called, for the catalog to judge.
    pub(super) calls: Vec<CatalogName>,
    /// Relations read, which the catalog may know as sequences.
    pub(super) relations: Vec<CatalogName>,
    /// The first node-local view, function or setting read (see `node_local`).
    pub(super) node_local: Option<Arc<str>>,
}

impl Analysis {
    pub fn effects(&self) -> Effects {
        self.effects
    }

    pub fn causal_hint(&self) -> CausalHint {
        self.causal
    }

    /// sqlparser could not parse the text (or it was too complex to try).
    pub fn unparseable(&self) -> bool {
        self.classification.reason == Reason::Unparseable
    }

    /// The classification for a session whose database's catalog is `functions`.
    ///
    /// Everything that needs the primary keeps its reason; a read calling a volatile user
    /// function becomes `function`; then a hint chooses among the routes a read may take;
    /// without one, a read of node-local information or of a sequence becomes `node_local`.
    pub fn resolve(&self, functions: &UserFunctions) -> Classification {
        if !self.changes.is_empty() {
            functions.note_change(&self.changes);
        }
        if self.classification.route == Route::Primary {
            return self.classification.clone();
        }
        // Also under a `/* pgrepl:primary */` hint: a read that calls a volatile function
        // is a write whatever the hint says, and later reads must wait for it.
        if let Some(call) = functions.first_volatile(&self.reads.calls) {
            return primary(Reason::Function, call.detail());
        }
        if let Some(route) = self.hint {
            return Classification {
                route,
                reason: Reason::Hint,
                detail: None,
            };
        }
        if let Some(detail) = &self.reads.node_local {
            return primary(Reason::NodeLocal, Arc::clone(detail));
        }
        if let Some(sequence) = functions.first_sequence(&self.reads.relations) {
            return primary(Reason::NodeLocal, sequence.detail());
        }
        self.classification.clone()
    }
}

fn primary(reason: Reason, detail: Arc<str>) -> Classification {
    Classification {
        route: Route::Primary,
        reason,
        detail: Some(detail),
    }
}
