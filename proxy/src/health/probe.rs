//! One sample of one backend over the monitor's own connection (deadpool-postgres, one
//! connection per backend, logged in as the first `[[users]]` entry on database `postgres`).
//! The replay watchers and the primary's position service use connections of the same kind,
//! each its own, so that none queues behind another.

use std::time::Duration;

use deadpool_postgres::{Manager, Object, Pool, PoolError};
use pgrepl_config::UserConfig;
use tokio::time::timeout;
use tokio_postgres::{NoTls, SimpleQueryMessage, SimpleQueryRow};

use super::lsn;
use crate::backend::BackendInfo;

/// The WAL position that says how far a server is: where a primary inserts WAL (its insert
/// position, not its write position: with `synchronous_commit = off` a commit is acknowledged
/// before its record is written), what a standby has replayed. Chosen by the server's actual
/// state, so a primary in recovery still answers.
const SQL: &str = "SELECT pg_is_in_recovery(), CASE WHEN pg_is_in_recovery() \
                   THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_insert_lsn() END";

/// The monitor's connections go to a database every server has.
const DATABASE: &str = "postgres";

/// What one sample found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    pub in_recovery: bool,
    /// The position as a byte count; 0 if a standby has replayed nothing yet.
    pub lsn: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("cannot connect: {0}")]
    Connect(PoolError),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Query(tokio_postgres::Error),
    #[error("unexpected answer to the health query")]
    Answer,
}

impl ProbeError {
    /// The server refused the query for want of a privilege (`42501`).
    pub fn is_refused(&self) -> bool {
        matches!(self, ProbeError::Query(e)
            if e.code() == Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE))
    }
}

pub struct Probe {
    pool: Pool,
    connect_timeout: Duration,
    query_timeout: Duration,
}

impl Probe {
    pub fn new(
        backend: &BackendInfo,
        login: &UserConfig,
        connect_timeout: Duration,
        query_timeout: Duration,
        purpose: &str,
    ) -> anyhow::Result<Probe> {
        let mut pg = tokio_postgres::Config::new();
        pg.host(&backend.host)
            .port(backend.port)
            .user(&login.name)
            .dbname(DATABASE)
            .application_name(format!("pgrepl-proxy {purpose}"));
        if let Some(password) = &login.password {
            pg.password(password);
        }
        let pool = Pool::builder(Manager::new(pg, NoTls)).max_size(1).build()?;
        Ok(Probe {
            pool,
            connect_timeout,
            query_timeout,
        })
    }

    /// Connects if needed (within the connect timeout) and runs the health query (within the
    /// query timeout, so a hung server counts as down). A connection that failed is dropped.
    pub async fn sample(&self) -> Result<Sample, ProbeError> {
        self.ask(SQL, read).await
    }

    /// Runs `sql` and reads its answer's last row with `read`, as `sample` does.
    pub async fn ask<T>(
        &self,
        sql: &str,
        read: impl FnOnce(&SimpleQueryRow) -> Result<T, ProbeError>,
    ) -> Result<T, ProbeError> {
        let client = timeout(self.connect_timeout, self.pool.get())
            .await
            .map_err(|_| ProbeError::Timeout(self.connect_timeout))?
            .map_err(ProbeError::Connect)?;
        let answer = match timeout(self.query_timeout, client.simple_query(sql)).await {
            Ok(Ok(answer)) => last_row(&answer).and_then(read),
            Ok(Err(e)) => Err(ProbeError::Query(e)),
            Err(_) => Err(ProbeError::Timeout(self.query_timeout)),
        };
        if answer.is_err() {
            drop(Object::take(client));
        }
        answer
    }
}

fn last_row(answer: &[SimpleQueryMessage]) -> Result<&SimpleQueryRow, ProbeError> {
    answer
        .iter()
        .rev()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(row),
            _ => None,
        })
        .ok_or(ProbeError::Answer)
}

/// Column `i` of `row` as text (None for NULL).
pub fn column(row: &SimpleQueryRow, i: usize) -> Result<Option<&str>, ProbeError> {
    row.try_get(i).map_err(|_| ProbeError::Answer)
}

/// Column `i` of `row` as a WAL position (0 for NULL).
pub fn lsn_column(row: &SimpleQueryRow, i: usize) -> Result<u64, ProbeError> {
    match column(row, i)? {
        Some(text) => lsn::parse(text).ok_or(ProbeError::Answer),
        None => Ok(0),
    }
}

fn read(row: &SimpleQueryRow) -> Result<Sample, ProbeError> {
    let column = |i| column(row, i);
    let in_recovery = match column(0)? {
        Some("t") => true,
        Some("f") => false,
        _ => return Err(ProbeError::Answer),
    };
    Ok(Sample {
        in_recovery,
        lsn: lsn_column(row, 1)?,
    })
}
