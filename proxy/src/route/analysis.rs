//! The part of a classification the SQL text decides, which is what the cache keeps, and
//! the last step that needs the session's database: its user functions.

use super::catalog::UserFunctions;
use super::effects::Effects;
use super::functions::FunctionName;
use super::reason::{Classification, Reason, Route};

/// What the text of a SQL string says about its route.
#[derive(Debug)]
pub struct Analysis {
    /// The route by the text and the configuration alone.
    pub(super) classification: Classification,
    /// User functions a read calls, for the catalog to judge; empty for most statements.
    pub(super) calls: Box<[FunctionName]>,
    /// A leading `/* pgrepl:... */` comment.
    pub(super) hint: Option<Route>,
    /// The string creates, changes or drops functions.
    pub(super) changes_functions: bool,
    /// What it does to the session's state.
    pub(super) effects: Effects,
}

impl Analysis {
    pub fn effects(&self) -> Effects {
        self.effects
    }

    /// sqlparser could not parse the text (or it was too complex to try).
    pub fn unparseable(&self) -> bool {
        self.classification.reason == Reason::Unparseable
    }

    /// The classification for a session whose database's functions are `functions`.
    ///
    /// Everything that needs the primary keeps its reason; a read calling a volatile user
    /// function becomes `function`; then a hint chooses among the routes a read may take.
    pub fn resolve(&self, functions: &UserFunctions) -> Classification {
        if self.changes_functions {
            functions.note_change();
        }
        if self.classification.route == Route::Primary {
            return self.classification.clone();
        }
        if self.hint != Some(Route::Primary) && !self.calls.is_empty() {
            if let Some(call) = functions.first_volatile(&self.calls) {
                return Classification {
                    route: Route::Primary,
                    reason: Reason::Function,
                    detail: Some(call.detail()),
                };
            }
        }
        match self.hint {
            Some(route) => Classification {
                route,
                reason: Reason::Hint,
                detail: None,
            },
            None => self.classification.clone(),
        }
    }
}
