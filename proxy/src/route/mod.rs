//! Statement routing: decides whether a client statement can run on the
//! hot-standby replica or must go to the primary, and caches the decision.

pub mod cache;
pub mod classify;
pub mod fingerprint;
pub mod reason;

pub use cache::ClassifyCache;
pub use classify::classify;
pub use reason::{Classification, Reason, Route};
