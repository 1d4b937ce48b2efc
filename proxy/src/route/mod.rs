//! Statement routing: decides whether a client statement can run on the
//! hot-standby replica or must go to the primary, and caches the decision.

mod analysis;
pub mod cache;
mod catalog;
pub mod classifier;
pub mod classify;
mod ddl;
pub mod effects;
pub mod fingerprint;
mod functions;
mod hint;
pub mod reason;

pub use catalog::UserFunctions;
pub use classifier::Classifier;
pub use classify::classify;
pub use effects::Effects;
pub use reason::{Classification, Reason, Route};
