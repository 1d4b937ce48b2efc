//! The one error type users see: which input, which key, what was expected and what was found.

use std::fmt;

use crate::origin::Origin;

/// A configuration problem, e.g.
/// `config file /etc/pgrepl.toml: [routing] max_replica_lag: expected a duration like "1s" or "250ms", found "fast"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    origin: Option<Origin>,
    message: String,
}

impl ConfigError {
    pub(crate) fn new(origin: Option<Origin>, message: impl Into<String>) -> Self {
        Self {
            origin,
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.origin {
            Some(origin) => write!(f, "{origin}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for ConfigError {}
