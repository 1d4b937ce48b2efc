//! The settings one pool runs with: `[pool]`, with its database's override over it and its
//! user's over that, key by key. One rule for the proxy's pools, the admin console's answers
//! and validation, so that they never disagree.

use crate::model::{PoolConfig, PoolMode, PoolOverride};

/// The keys of `[pool]` a database or user may override, as they apply to one pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSettings {
    pub mode: PoolMode,
    /// 0: bounded only by `[pool] max_server_connections`.
    pub default_pool_size: usize,
    pub min_pool_size: usize,
    pub reserve_pool_size: usize,
}

impl PoolSettings {
    /// Server connections per (backend, user, database) at most, with 0 spelt out.
    pub fn pool_size(&self, max_server_connections: usize) -> usize {
        match self.default_pool_size {
            0 => max_server_connections,
            size => size,
        }
    }
}

impl PoolOverride {
    /// `below` with the keys this override sets replaced.
    fn over(&self, below: PoolSettings) -> PoolSettings {
        PoolSettings {
            mode: self.mode.unwrap_or(below.mode),
            default_pool_size: self.default_pool_size.unwrap_or(below.default_pool_size),
            min_pool_size: self.min_pool_size.unwrap_or(below.min_pool_size),
            reserve_pool_size: self.reserve_pool_size.unwrap_or(below.reserve_pool_size),
        }
    }
}

impl PoolConfig {
    /// The settings of the pools of `user` and `database`: each key from the user's
    /// override if it sets it, else from the database's, else from `[pool]`. None leaves
    /// that level out (the admin console's per-database view, validation).
    pub fn settings_for(&self, user: Option<&str>, database: Option<&str>) -> PoolSettings {
        let base = PoolSettings {
            mode: self.mode,
            default_pool_size: self.default_pool_size,
            min_pool_size: self.min_pool_size,
            reserve_pool_size: self.reserve_pool_size,
        };
        let database = database.and_then(|name| self.databases.get(name));
        let user = user.and_then(|name| self.users.get(name));
        [database, user]
            .into_iter()
            .flatten()
            .fold(base, |below, over| over.over(below))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Config;

    fn over(
        mode: Option<PoolMode>,
        size: Option<usize>,
        min: Option<usize>,
        reserve: Option<usize>,
    ) -> PoolOverride {
        PoolOverride {
            mode,
            default_pool_size: size,
            min_pool_size: min,
            reserve_pool_size: reserve,
        }
    }

    fn settings(mode: PoolMode, size: usize, min: usize, reserve: usize) -> PoolSettings {
        PoolSettings {
            mode,
            default_pool_size: size,
            min_pool_size: min,
            reserve_pool_size: reserve,
        }
    }

    #[test]
    fn a_user_wins_over_a_database_which_wins_over_pool_key_by_key() {
        use PoolMode::{Session, Transaction};
        let mut pool = Config::defaults().pool;
        pool.default_pool_size = 20;
        pool.min_pool_size = 2;
        pool.databases = [
            (
                "busy".into(),
                over(Some(Transaction), Some(5), None, Some(1)),
            ),
            ("sized".into(), over(None, Some(8), Some(4), None)),
        ]
        .into();
        pool.users = [
            ("admin".into(), over(Some(Session), None, None, None)),
            ("batch".into(), over(None, Some(3), None, Some(0))),
        ]
        .into();
        // (user, database, expected)
        let cases = [
            (None, None, settings(Session, 20, 2, 0)),
            (Some("app"), Some("other"), settings(Session, 20, 2, 0)),
            (Some("app"), Some("busy"), settings(Transaction, 5, 2, 1)),
            (None, Some("sized"), settings(Session, 8, 4, 0)),
            (Some("admin"), Some("busy"), settings(Session, 5, 2, 1)),
            (Some("admin"), None, settings(Session, 20, 2, 0)),
            (Some("batch"), Some("busy"), settings(Transaction, 3, 2, 0)),
            (Some("batch"), Some("sized"), settings(Session, 3, 4, 0)),
            // Names are matched exactly, as PostgreSQL matches them.
            (Some("Admin"), Some("BUSY"), settings(Session, 20, 2, 0)),
        ];
        for (user, database, expected) in cases {
            assert_eq!(
                pool.settings_for(user, database),
                expected,
                "{user:?} {database:?}"
            );
        }
    }

    #[test]
    fn a_pool_size_of_zero_is_the_backends_bound() {
        let sized = settings(PoolMode::Session, 7, 0, 0);
        assert_eq!(sized.pool_size(90), 7);
        assert_eq!(
            PoolSettings {
                default_pool_size: 0,
                ..sized
            }
            .pool_size(90),
            90
        );
    }
}
