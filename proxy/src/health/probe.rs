//! One sample of one backend over the monitor's own connection (deadpool-postgres, one
//! connection per backend, logged in as the first `[[users]]` entry on database `postgres`).
//! The replay watchers and the primary's position service use connections of the same kind,
//! each its own, so that none queues behind another.

use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use deadpool_postgres::{Manager, Object, Pool, PoolError};
use pgrepl_config::UserConfig;
use tokio::time::timeout;
use tokio_postgres::{NoTls, SimpleQueryMessage, SimpleQueryRow};

use super::lsn;
use crate::backend::BackendInfo;

/// What a sample asks, with `pg_is_in_recovery()` evaluated once (a server promoted between
/// two calls would mix the answers of both roles):
/// - the WAL position that says how far a server is: where a primary inserts WAL (its insert
///   position, not its write position: with `synchronous_commit = off` a commit is
///   acknowledged before its record is written), what a standby has replayed;
/// - its timeline: out of recovery, the first 8 hex digits of the current WAL file's name,
///   right as soon as `pg_promote()` returns (`pg_control_checkpoint()` would show the new
///   timeline only after the first checkpoint, which can take minutes); a standby's, from its
///   last restartpoint, a lower bound;
/// - its system identifier, the same on every node of one cluster.
const SQL: &str = "SELECT r, CASE WHEN r THEN pg_last_wal_replay_lsn() \
                   ELSE pg_current_wal_insert_lsn() END, \
                   CASE WHEN r THEN (SELECT timeline_id FROM pg_control_checkpoint()) \
                   ELSE ('x' || substr(pg_walfile_name(pg_current_wal_insert_lsn()), 1, 8))\
                   ::bit(32)::bigint END, \
                   (SELECT system_identifier FROM pg_control_system()) \
                   FROM pg_is_in_recovery() AS r";

/// The same for a login refused the `pg_control_*` functions (`42501`: a site revoked them):
/// the timeline of a standby and the system identifier stay unknown.
const SQL_WITHOUT_CONTROL: &str = "SELECT r, CASE WHEN r THEN pg_last_wal_replay_lsn() \
                   ELSE pg_current_wal_insert_lsn() END, \
                   CASE WHEN r THEN NULL \
                   ELSE ('x' || substr(pg_walfile_name(pg_current_wal_insert_lsn()), 1, 8))\
                   ::bit(32)::bigint END, NULL \
                   FROM pg_is_in_recovery() AS r";

/// The monitor's connections go to a database every server has.
const DATABASE: &str = "postgres";

/// What one sample found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    pub in_recovery: bool,
    /// The position as a byte count; 0 if a standby has replayed nothing yet.
    pub lsn: u64,
    /// Its timeline (see `SQL`); None when unknown.
    pub timeline: Option<u32>,
    /// Its system identifier; None when the login may not read it.
    pub sysid: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("cannot connect: {}", with_causes(.0))]
    Connect(PoolError),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("{}", with_causes(.0))]
    Query(tokio_postgres::Error),
    #[error("unexpected answer to the health query")]
    Answer,
}

/// An error and its causes, `a: b`: tokio-postgres says only "db error" itself, and the
/// server's reason (a login refused, a role missing) is its cause.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        let said = e.to_string();
        if !text.ends_with(&said) {
            text = format!("{text}: {said}");
        }
        cause = e.source();
    }
    text
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
    /// The server refused `pg_control_*` once: samples ask without them from then on.
    control_refused: AtomicBool,
}

impl Probe {
    pub fn new(
        backend: &BackendInfo,
        login: &UserConfig,
        connect_timeout: Duration,
        query_timeout: Duration,
        purpose: &str,
    ) -> anyhow::Result<Probe> {
        // Bounded by a timeout around each step (`ask`).
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
            control_refused: AtomicBool::new(false),
        })
    }

    /// Connects if needed (within the connect timeout) and runs the health query (within the
    /// query timeout, so a hung server counts as down). A connection that failed is dropped.
    pub async fn sample(&self) -> Result<Sample, ProbeError> {
        if !self.control_refused.load(Relaxed) {
            match self.ask(SQL, read).await {
                Err(e) if e.is_refused() => {
                    tracing::warn!(error = %e, "the monitor's login may not read pg_control_checkpoint() and pg_control_system(): standby timelines and system identifiers stay unknown");
                    self.control_refused.store(true, Relaxed);
                }
                done => return done,
            }
        }
        self.ask(SQL_WITHOUT_CONTROL, read).await
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
    parse([
        column(row, 0)?,
        column(row, 1)?,
        column(row, 2)?,
        column(row, 3)?,
    ])
}

/// The sample in the columns of `SQL`'s answer, as text.
fn parse(columns: [Option<&str>; 4]) -> Result<Sample, ProbeError> {
    let [recovery, lsn, timeline, sysid] = columns;
    let in_recovery = match recovery {
        Some("t") => true,
        Some("f") => false,
        _ => return Err(ProbeError::Answer),
    };
    let number =
        |text: Option<&str>| text.map(|t| t.parse::<i64>().map_err(|_| ProbeError::Answer));
    Ok(Sample {
        in_recovery,
        lsn: lsn.map_or(Some(0), lsn::parse).ok_or(ProbeError::Answer)?,
        timeline: number(timeline)
            .transpose()?
            .map(|t| u32::try_from(t).map_err(|_| ProbeError::Answer))
            .transpose()?,
        // A bigint in SQL, read back as the unsigned number PostgreSQL's tools print.
        sysid: number(sysid).transpose()?.map(|id| id as u64),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_read_from_text_columns() {
        let sample = |in_recovery, lsn, timeline, sysid| Sample {
            in_recovery,
            lsn,
            timeline,
            sysid,
        };
        let cases: [([Option<&str>; 4], Option<Sample>); 7] = [
            (
                [
                    Some("f"),
                    Some("0/3000060"),
                    Some("2"),
                    Some("7311234567890123456"),
                ],
                Some(sample(
                    false,
                    0x300_0060,
                    Some(2),
                    Some(7_311_234_567_890_123_456),
                )),
            ),
            (
                [Some("t"), None, Some("1"), Some("-5")],
                Some(sample(true, 0, Some(1), Some(u64::MAX - 4))),
            ),
            (
                [Some("t"), Some("0/10"), None, None],
                Some(sample(true, 0x10, None, None)),
            ),
            (
                [Some("f"), Some("0/10"), Some("4294967295"), None],
                Some(sample(false, 0x10, Some(u32::MAX), None)),
            ),
            ([None, Some("0/10"), Some("1"), None], None),
            ([Some("f"), Some("x"), Some("1"), None], None),
            ([Some("f"), Some("0/10"), Some("-1"), None], None),
        ];
        for (columns, expected) in cases {
            assert_eq!(parse(columns).ok(), expected, "{columns:?}");
        }
    }
}
