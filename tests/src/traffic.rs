//! Clients reading and writing through the proxy in loops while a test breaks nodes. Each
//! read is noted with when it was sent, how long it took and where it ran (or its error): the
//! fault suites assert that no autocommit read fails, and where the reads went meanwhile.

use crate::client::connect;
use crate::roles::{APP, DATABASE};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// How long one read may take before it counts as an error: past the bounds the proxy puts
/// on a read a fault holds up (`[proxy] connect_timeout`, 5 s by default, for one whose
/// replica cannot be reached; the rig's `server_tcp_user_timeout` for one sent to a replica
/// cut off), so that only a read held beyond them is one.
const READ_DEADLINE: Duration = Duration::from_secs(8);
/// The pause between one reader's reads.
const PAUSE: Duration = Duration::from_millis(10);

/// One read through the proxy.
#[derive(Debug, Clone)]
pub struct Read {
    /// Which of the sessions sent it, from 0.
    pub reader: usize,
    pub sent: Instant,
    pub took: Duration,
    /// The `cluster_name` of the node it ran on, or the error.
    pub got: Result<String, String>,
}

/// Sessions reading `current_setting('cluster_name')` in a loop until stopped.
pub struct Readers {
    reads: Arc<Mutex<Vec<Read>>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Readers {
    /// Logs `count` sessions in through the proxy at `addr` (as `app` on `appdb`) and starts
    /// their loops. Each gets its replica when it logs in, by `[routing] balance`.
    pub async fn start(addr: SocketAddr, count: usize) -> Readers {
        let reads = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for reader in 0..count {
            let client = connect(addr, APP.name, DATABASE).await.unwrap();
            let (reads, stop) = (reads.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let sent = Instant::now();
                    let read = client.query_one("SELECT current_setting('cluster_name')", &[]);
                    let got = match tokio::time::timeout(READ_DEADLINE, read).await {
                        Ok(Ok(row)) => Ok(row.get::<_, String>(0)),
                        Ok(Err(e)) => Err(format!("{e:?}")),
                        Err(_) => Err(format!("no answer within {READ_DEADLINE:?}")),
                    };
                    let failed = got.is_err();
                    let took = sent.elapsed();
                    reads.lock().unwrap().push(Read {
                        reader,
                        sent,
                        took,
                        got,
                    });
                    if failed && client.is_closed() {
                        break; // no spinning on a dead connection
                    }
                    tokio::time::sleep(PAUSE).await;
                }
            }));
        }
        Readers { reads, stop, tasks }
    }

    /// The reads sent at or after `since`, in the order they ended.
    pub fn reads_since(&self, since: Instant) -> Vec<Read> {
        let reads = self.reads.lock().unwrap();
        reads.iter().filter(|r| r.sent >= since).cloned().collect()
    }

    /// Where the reads sent at or after `since` ran, in the order they ended.
    pub fn since(&self, since: Instant) -> Vec<Result<String, String>> {
        let reads = self.reads_since(since);
        reads.into_iter().map(|r| r.got).collect()
    }

    /// How many of the reads sent at or after `since` ran on each node.
    pub fn count_by_node(&self, since: Instant) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for node in self.since(since).into_iter().flatten() {
            *counts.entry(node).or_default() += 1;
        }
        counts
    }

    /// How long after `at` the sessions reading on `node` then (the last read each had
    /// answered before `at` ran there) had all left it: for each, when its first read
    /// answered elsewhere ended; the latest of those. None when one has not had such a read
    /// yet, or when no session read there.
    pub fn left(&self, node: &str, at: Instant) -> Option<Duration> {
        let reads = self.reads.lock().unwrap();
        let ended = |r: &Read| r.sent + r.took;
        let on_node = |r: &Read| r.got.as_deref() == Ok(node);
        // Reads are noted as they end, so each session's last one before `at` comes last.
        let mut sessions: Vec<usize> = Vec::new();
        for read in reads.iter().filter(|r| ended(r) < at) {
            sessions.retain(|&s| s != read.reader);
            if on_node(read) {
                sessions.push(read.reader);
            }
        }
        let mut latest = None;
        for session in sessions {
            let elsewhere = reads
                .iter()
                .find(|r| r.reader == session && ended(r) >= at && r.got.is_ok() && !on_node(r))?;
            latest = latest.max(Some(ended(elsewhere) - at));
        }
        latest
    }

    /// Waits until a read sent at or after `since` ran on `node`; returns when it was sent.
    pub async fn first_on(&self, node: &str, since: Instant, within: Duration) -> Instant {
        let deadline = since + within;
        loop {
            let found =
                self.reads.lock().unwrap().iter().find_map(|r| {
                    (r.sent >= since && r.got.as_deref() == Ok(node)).then_some(r.sent)
                });
            if let Some(sent) = found {
                return sent;
            }
            assert!(
                Instant::now() < deadline,
                "no read ran on {node} within {within:?}; reads: {:?}",
                self.since(since)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the readers; fails if any read failed. Returns how many reads ran.
    pub async fn stop_without_errors(self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.unwrap();
        }
        let reads = self.reads.lock().unwrap();
        let errors: Vec<&String> = reads.iter().filter_map(|r| r.got.as_ref().err()).collect();
        assert!(
            errors.is_empty(),
            "{} of {} autocommit reads failed; first: {}",
            errors.len(),
            reads.len(),
            errors[0]
        );
        reads.len()
    }
}

/// One session writing a row into table `w` (`id bigint`) every 20 ms through the proxy,
/// noting every error.
pub struct Writer {
    stop: Arc<AtomicBool>,
    task: JoinHandle<(usize, Vec<String>)>,
}

impl Writer {
    /// Logs a session in through the proxy at `addr` and starts its loop.
    pub async fn start(addr: SocketAddr) -> Writer {
        let client = connect(addr, APP.name, DATABASE).await.unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let mut errors = Vec::new();
            let mut writes = 0;
            for id in 0i64.. {
                if stopped.load(Ordering::Relaxed) {
                    break;
                }
                match client.execute("INSERT INTO w VALUES ($1)", &[&id]).await {
                    Ok(_) => writes += 1,
                    Err(e) => errors.push(format!("{e:?}")),
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (writes, errors)
        });
        Writer { stop, task }
    }

    /// Stops writing; fails if a write failed. Returns how many committed.
    pub async fn stop_without_errors(self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        let (writes, errors) = self.task.await.unwrap();
        assert!(errors.is_empty(), "writes failed: {errors:?}");
        writes
    }
}
