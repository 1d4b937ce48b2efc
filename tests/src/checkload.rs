//! The workload behind the causal-reads checks: sessions through the proxy that increment and
//! read counters, recording each operation as an [`Event`] for [`crate::checker::check`].
//!
//! Each operation picks a key at random (a per-session deterministic PRNG). A write is
//! `UPDATE counters SET v = v + 1 WHERE id = $1 RETURNING v`, a read
//! `SELECT v, current_setting('cluster_name') FROM counters WHERE id = $1`. Even-numbered
//! sessions send literal SQL with `simple_query`; odd-numbered ones use the extended protocol
//! with statements prepared once per session. All times come from [`Instant`].

use crate::checker::{Event, Op};
use crate::client::connect;
use crate::roles::{APP, DATABASE};
use anyhow::{bail, ensure, Context, Result};
use pgrepl_provision::tutorial::PRIMARY;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, SimpleQueryMessage, Statement};

const CREATE_SQL: &str =
    "CREATE TABLE IF NOT EXISTS counters (id int PRIMARY KEY, v bigint NOT NULL)";
const WRITE_SQL: &str = "UPDATE counters SET v = v + 1 WHERE id = $1 RETURNING v";
const READ_SQL: &str = "SELECT v, current_setting('cluster_name') FROM counters WHERE id = $1";

/// How long one operation may take before its session gives up (and stops).
const OP_TIMEOUT: Duration = Duration::from_secs(30);
/// A pause after a failed operation, so a failing proxy is not hammered in a tight loop.
const ERROR_PAUSE: Duration = Duration::from_millis(5);
/// The direct writer starts at most one write per this interval.
const DIRECT_WRITER_PACE: Duration = Duration::from_millis(2);
/// How long [`prepare`] waits for a fresh session to see the prepared table.
const PREPARE_VISIBLE: Duration = Duration::from_secs(30);

/// What [`run`] does.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadOptions {
    /// Sessions through the proxy, numbered from 0 (even: simple protocol, odd: extended).
    pub sessions: usize,
    /// Keys 0..keys of `counters` (see [`prepare`]).
    pub keys: u32,
    /// The probability that an operation is a write, in 0..=1.
    pub write_share: f64,
    /// How long each session keeps starting operations.
    pub duration: Duration,
    /// Run once per session (the direct writer too) right after it connects,
    /// e.g. `SET synchronous_commit = off`.
    pub setup_sql: Option<String>,
    /// Also one session writing straight to this address (the primary), with session id
    /// `sessions`, at most one write every 2 ms: writes the proxy never sees, for the
    /// linearizable checks.
    pub direct_writer: Option<SocketAddr>,
}

impl Default for LoadOptions {
    fn default() -> LoadOptions {
        LoadOptions {
            sessions: 8,
            keys: 100,
            write_share: 0.02,
            duration: Duration::from_secs(3),
            setup_sql: None,
            direct_writer: None,
        }
    }
}

/// What [`run`] recorded.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// Every successful operation of every session, ordered by `invoked`.
    pub history: Vec<Event>,
    /// Reads in `history`.
    pub reads: usize,
    /// Reads in `history` that ran elsewhere than on the primary (`cluster_name` not `db01`).
    pub replica_reads: usize,
    /// Writes in `history` (the direct writer's included).
    pub writes: usize,
    /// From the start of the load (all sessions connected) until the last session stopped.
    pub elapsed: Duration,
    /// Latency of each read that directly followed a successful write in the same session.
    pub read_after_write: Vec<Duration>,
    /// One line per failed operation (`session N (protocol) op key K: error`); those
    /// operations are not in `history`.
    pub errors: Vec<String>,
}

impl LoadReport {
    /// The share of reads that ran on a replica; 0 without reads.
    pub fn replica_share(&self) -> f64 {
        if self.reads == 0 {
            0.0
        } else {
            self.replica_reads as f64 / self.reads as f64
        }
    }

    /// Successful operations (reads and writes, the direct writer's included) per second.
    pub fn ops_per_second(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs == 0.0 {
            0.0
        } else {
            self.history.len() as f64 / secs
        }
    }

    /// The `p`th percentile (`p` in 0..=100, nearest rank) of `durations`; `None` if empty.
    pub fn percentile(durations: &[Duration], p: f64) -> Option<Duration> {
        if durations.is_empty() {
            return None;
        }
        let mut sorted = durations.to_vec();
        sorted.sort_unstable();
        let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
        Some(sorted[rank.clamp(1, sorted.len()) - 1])
    }

    /// One line of figures for a bench script, e.g. `checkload sessions=8 write_share=0.020
    /// ops=12345 ops_per_s=4115.0 reads=12000 replica_share=0.973 raw_p50_ms=0.41
    /// raw_p99_ms=2.10 violations=0 errors=0` (`raw_*`: read-after-write latency, `NaN` when
    /// no read followed a write).
    pub fn summary(&self, opts: &LoadOptions, violations: usize) -> String {
        let ms = |p| {
            LoadReport::percentile(&self.read_after_write, p)
                .map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
        };
        format!(
            "checkload sessions={} write_share={:.3} ops={} ops_per_s={:.1} reads={} \
             replica_share={:.3} raw_p50_ms={:.2} raw_p99_ms={:.2} violations={} errors={}",
            opts.sessions,
            opts.write_share,
            self.history.len(),
            self.ops_per_second(),
            self.reads,
            self.replica_share(),
            ms(50.0),
            ms(99.0),
            violations,
            self.errors.len(),
        )
    }
}

/// Creates `counters` through the proxy at `addr` with keys `0..keys` (existing rows keep
/// their values), then waits until a session that never wrote can read all of them (on a
/// replica, if the proxy sends it there), so a load started next does not fail on a replica
/// that has not replayed the table yet.
pub async fn prepare(addr: SocketAddr, keys: u32) -> Result<()> {
    ensure!(keys > 0, "at least one key");
    let client = connect(addr, APP.name, DATABASE).await?;
    client
        .batch_execute(CREATE_SQL)
        .await
        .context("creating counters")?;
    let insert = format!(
        "INSERT INTO counters (id, v) SELECT g, 0 FROM generate_series(0, {}) g \
         ON CONFLICT (id) DO NOTHING",
        keys - 1
    );
    client
        .batch_execute(&insert)
        .await
        .context("inserting counters")?;
    drop(client);

    let sql = format!("SELECT count(*) FROM counters WHERE id < {keys}");
    let give_up = Instant::now() + PREPARE_VISIBLE;
    loop {
        let reader = connect(addr, APP.name, DATABASE).await?;
        let seen = match reader.query_one(sql.as_str(), &[]).await {
            Ok(row) => row.try_get::<_, i64>(0).map_err(anyhow::Error::from),
            Err(e) => Err(e.into()),
        };
        match seen {
            Ok(n) if n == i64::from(keys) => return Ok(()),
            Ok(n) if Instant::now() >= give_up => {
                bail!("a new session still sees {n} of {keys} counters")
            }
            Err(e) if Instant::now() >= give_up => {
                return Err(e.context("a new session cannot read counters"))
            }
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// Runs the load through the proxy at `addr`: connects every session (failing if one cannot
/// connect, run its setup SQL or prepare its statements), then lets each run operations for
/// `opts.duration`. Failed operations go to [`LoadReport::errors`] and the session goes on,
/// unless its connection closed or an operation took over 30 s, which stop that session.
pub async fn run(addr: SocketAddr, opts: &LoadOptions) -> Result<LoadReport> {
    ensure!(opts.keys > 0, "at least one key");
    ensure!(
        (0.0..=1.0).contains(&opts.write_share),
        "write share {} is not in 0..=1",
        opts.write_share
    );
    let sessions = u32::try_from(opts.sessions).context("too many sessions")?;

    let mut connecting: Vec<JoinHandle<Result<Session>>> = Vec::new();
    for id in 0..sessions {
        let protocol = if id % 2 == 0 {
            Protocol::Simple
        } else {
            Protocol::Extended
        };
        connecting.push(tokio::spawn(Session::open(
            id,
            addr,
            protocol,
            opts.setup_sql.clone(),
        )));
    }
    if let Some(primary) = opts.direct_writer {
        connecting.push(tokio::spawn(Session::open(
            sessions,
            primary,
            Protocol::Extended,
            opts.setup_sql.clone(),
        )));
    }
    let mut ready = Vec::new();
    for handle in connecting {
        ready.push(handle.await.context("connecting task")??);
    }

    let start = Instant::now();
    let deadline = start + opts.duration;
    let mut running: Vec<JoinHandle<SessionLog>> = Vec::new();
    for session in ready {
        let direct = session.id == sessions;
        let plan = Plan {
            keys: opts.keys,
            write_share: if direct { 1.0 } else { opts.write_share },
            deadline,
            pace: direct.then_some(DIRECT_WRITER_PACE),
        };
        running.push(tokio::spawn(session.drive(plan)));
    }
    let mut report = LoadReport::default();
    for handle in running {
        let log = handle.await.context("session task")?;
        report.history.extend(log.history);
        report.read_after_write.extend(log.read_after_write);
        report.errors.extend(log.errors);
    }
    report.elapsed = start.elapsed();
    report.history.sort_by_key(|e| e.invoked);
    for event in &report.history {
        match &event.op {
            Op::Write { .. } => report.writes += 1,
            Op::Read { node, .. } => {
                report.reads += 1;
                if node != PRIMARY {
                    report.replica_reads += 1;
                }
            }
        }
    }
    Ok(report)
}

/// A small deterministic PRNG (xorshift64*), seeded from a session number.
#[derive(Debug, Clone)]
pub(crate) struct XorShift(u64);

impl XorShift {
    pub(crate) fn new(seed: u64) -> XorShift {
        // splitmix64 of the seed, so that nearby seeds give unrelated streams; never zero.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        XorShift(if z == 0 { 0x2545_F491_4F6C_DD1D } else { z })
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in 0..n (n > 0; the modulo bias is negligible for small n).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in [0, 1).
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    /// Literal SQL with `simple_query`.
    Simple,
    /// Parse/Bind/Execute with statements prepared once.
    Extended,
}

impl Protocol {
    fn name(self) -> &'static str {
        match self {
            Protocol::Simple => "simple",
            Protocol::Extended => "extended",
        }
    }
}

/// One connected session.
struct Session {
    id: u32,
    client: Client,
    /// (write, read), for [`Protocol::Extended`].
    statements: Option<(Statement, Statement)>,
}

/// How a session runs.
#[derive(Debug, Clone, Copy)]
struct Plan {
    keys: u32,
    write_share: f64,
    deadline: Instant,
    /// At most one operation started per this interval.
    pace: Option<Duration>,
}

/// What one session recorded.
#[derive(Default)]
struct SessionLog {
    history: Vec<Event>,
    read_after_write: Vec<Duration>,
    errors: Vec<String>,
}

impl Session {
    async fn open(
        id: u32,
        addr: SocketAddr,
        protocol: Protocol,
        setup_sql: Option<String>,
    ) -> Result<Session> {
        let what = || format!("session {id} ({}) on {addr}", protocol.name());
        let client = connect(addr, APP.name, DATABASE).await.with_context(what)?;
        if let Some(sql) = &setup_sql {
            client
                .batch_execute(sql)
                .await
                .with_context(|| format!("{}: setup SQL {sql:?}", what()))?;
        }
        let statements = match protocol {
            Protocol::Simple => None,
            Protocol::Extended => {
                let write = client.prepare_typed(WRITE_SQL, &[Type::INT4]).await;
                let read = client.prepare_typed(READ_SQL, &[Type::INT4]).await;
                Some((
                    write.with_context(|| format!("{}: preparing the write", what()))?,
                    read.with_context(|| format!("{}: preparing the read", what()))?,
                ))
            }
        };
        Ok(Session {
            id,
            client,
            statements,
        })
    }

    fn protocol(&self) -> Protocol {
        if self.statements.is_some() {
            Protocol::Extended
        } else {
            Protocol::Simple
        }
    }

    /// Starts operations until the deadline.
    async fn drive(self, plan: Plan) -> SessionLog {
        let mut rng = XorShift::new(u64::from(self.id));
        let mut log = SessionLog::default();
        let mut after_write = false;
        while Instant::now() < plan.deadline {
            let key = rng.below(u64::from(plan.keys)) as u32;
            let write = rng.unit() < plan.write_share;
            let invoked = Instant::now();
            let outcome = if write {
                tokio::time::timeout(OP_TIMEOUT, self.write(key))
                    .await
                    .map(|r| r.map(|value| (value, None)))
            } else {
                tokio::time::timeout(OP_TIMEOUT, self.read(key))
                    .await
                    .map(|r| r.map(|(value, node)| (value, Some(node))))
            };
            let completed = Instant::now();
            let session = self.id;
            match outcome {
                Ok(Ok((value, None))) => {
                    log.history.push(Event {
                        op: Op::Write {
                            session,
                            key,
                            value,
                        },
                        invoked,
                        completed,
                    });
                    after_write = true;
                }
                Ok(Ok((value, Some(node)))) => {
                    log.history.push(Event {
                        op: Op::Read {
                            session,
                            key,
                            value,
                            node,
                        },
                        invoked,
                        completed,
                    });
                    if after_write {
                        log.read_after_write.push(completed - invoked);
                    }
                    after_write = false;
                }
                Ok(Err(e)) => {
                    after_write = false;
                    log.errors
                        .push(self.describe(write, key, &format!("{e:#}")));
                    if self.client.is_closed() {
                        log.errors
                            .push(format!("session {session}: connection closed, stopping"));
                        break;
                    }
                    tokio::time::sleep(ERROR_PAUSE).await;
                    continue;
                }
                Err(_) => {
                    log.errors.push(self.describe(
                        write,
                        key,
                        &format!("no answer in {OP_TIMEOUT:?}, stopping the session"),
                    ));
                    break;
                }
            }
            if let Some(pace) = plan.pace {
                tokio::time::sleep_until((invoked + pace).into()).await;
            }
        }
        log
    }

    fn describe(&self, write: bool, key: u32, error: &str) -> String {
        format!(
            "session {} ({}) {} key {key}: {error}",
            self.id,
            self.protocol().name(),
            if write { "write" } else { "read" },
        )
    }

    /// The counter's value after this increment.
    async fn write(&self, key: u32) -> Result<i64> {
        match &self.statements {
            Some((write, _)) => {
                let rows = self.client.query(write, &[&key_param(key)?]).await?;
                one_row(rows.len())?;
                Ok(rows[0].try_get(0)?)
            }
            None => {
                let sql = format!("UPDATE counters SET v = v + 1 WHERE id = {key} RETURNING v");
                let messages = self.client.simple_query(&sql).await?;
                let row = simple_row(&messages)?;
                parse_value(row.try_get(0)?)
            }
        }
    }

    /// The counter's value and the `cluster_name` of the server that answered.
    async fn read(&self, key: u32) -> Result<(i64, String)> {
        match &self.statements {
            Some((_, read)) => {
                let rows = self.client.query(read, &[&key_param(key)?]).await?;
                one_row(rows.len())?;
                Ok((rows[0].try_get(0)?, rows[0].try_get(1)?))
            }
            None => {
                let sql = format!(
                    "SELECT v, current_setting('cluster_name') FROM counters WHERE id = {key}"
                );
                let messages = self.client.simple_query(&sql).await?;
                let row = simple_row(&messages)?;
                let node = row.try_get(1)?.context("NULL cluster_name")?;
                Ok((parse_value(row.try_get(0)?)?, node.to_owned()))
            }
        }
    }
}

fn key_param(key: u32) -> Result<i32> {
    i32::try_from(key).context("key out of int range")
}

fn one_row(rows: usize) -> Result<()> {
    ensure!(rows == 1, "{rows} rows instead of 1 (is the key prepared?)");
    Ok(())
}

/// The only data row of a simple query's answer.
fn simple_row(messages: &[SimpleQueryMessage]) -> Result<&tokio_postgres::SimpleQueryRow> {
    let mut rows = messages.iter().filter_map(|m| match m {
        SimpleQueryMessage::Row(row) => Some(row),
        _ => None,
    });
    let first = rows.next();
    one_row(usize::from(first.is_some()) + rows.count())?;
    Ok(first.expect("one row"))
}

fn parse_value(text: Option<&str>) -> Result<i64> {
    let text = text.context("NULL counter")?;
    text.parse()
        .with_context(|| format!("counter {text:?} is not a number"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn checkload_percentiles_use_the_nearest_rank() {
        assert_eq!(LoadReport::percentile(&[], 50.0), None);
        let d: Vec<Duration> = (1..=100).rev().map(ms).collect();
        assert_eq!(LoadReport::percentile(&d, 50.0), Some(ms(50)));
        assert_eq!(LoadReport::percentile(&d, 99.0), Some(ms(99)));
        assert_eq!(LoadReport::percentile(&d, 100.0), Some(ms(100)));
        assert_eq!(LoadReport::percentile(&d, 0.0), Some(ms(1)));
        assert_eq!(LoadReport::percentile(&[ms(7)], 99.0), Some(ms(7)));
        assert_eq!(LoadReport::percentile(&[ms(3), ms(1)], 50.0), Some(ms(1)));
    }

    #[test]
    fn checkload_summary_has_the_bench_format() {
        let t = Instant::now();
        let read = |node: &str| Event {
            op: Op::Read {
                session: 0,
                key: 0,
                value: 0,
                node: node.into(),
            },
            invoked: t,
            completed: t,
        };
        let report = LoadReport {
            history: vec![read("db02"), read("db02"), read("db02"), read("db01")],
            reads: 4,
            replica_reads: 3,
            writes: 0,
            elapsed: ms(2000),
            read_after_write: vec![ms(1), Duration::from_micros(410)],
            errors: vec!["x".into()],
        };
        assert_eq!(report.replica_share(), 0.75);
        assert_eq!(report.ops_per_second(), 2.0);
        assert_eq!(
            report.summary(&LoadOptions::default(), 3),
            "checkload sessions=8 write_share=0.020 ops=4 ops_per_s=2.0 reads=4 \
             replica_share=0.750 raw_p50_ms=0.41 raw_p99_ms=1.00 violations=3 errors=1"
        );
        let empty = LoadReport::default();
        assert_eq!(empty.replica_share(), 0.0);
        assert!(empty
            .summary(&LoadOptions::default(), 0)
            .contains("raw_p50_ms=NaN raw_p99_ms=NaN"));
    }

    #[test]
    fn checkload_prng_is_deterministic_per_seed_and_spreads_keys() {
        let draw = |seed| {
            let mut rng = XorShift::new(seed);
            (0..1000).map(|_| rng.below(10)).collect::<Vec<_>>()
        };
        assert_eq!(draw(3), draw(3));
        assert_ne!(draw(0), draw(1));
        let keys = draw(0);
        for k in 0..10 {
            let n = keys.iter().filter(|&&x| x == k).count();
            assert!((50..150).contains(&n), "key {k} drawn {n} times");
        }
        let mut rng = XorShift::new(5);
        let writes = (0..10_000).filter(|_| rng.unit() < 0.2).count();
        assert!((1800..2200).contains(&writes), "{writes}");
    }
}
