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
mod name;
mod node_local;
pub mod reason;
mod verdict;

pub use catalog::UserFunctions;
pub use classifier::Classifier;
pub use classify::classify;
pub use ddl::database_ddl_target_sql;
pub use effects::{set_config_template, Effects, SetConfigArg};
pub use hint::{mode_named, staleness_bound, CausalHint};
pub use reason::{Classification, Reason, Route};
pub use verdict::Verdict;

/// SQL as the classifier's token scans see it, for their unit tests.
#[cfg(test)]
fn test_tokens(sql: &str) -> Vec<sqlparser::tokenizer::TokenWithSpan> {
    sqlparser::tokenizer::Tokenizer::new(&sqlparser::dialect::PostgreSqlDialect {}, sql)
        .tokenize_with_location()
        .unwrap()
}
