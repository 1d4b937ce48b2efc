//! Pools of authenticated backend connections. A session leases at most one connection per
//! backend; a returned connection is reset with `DISCARD ALL` before anyone else gets it, or
//! closed when its state is not known to be clean.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Buf;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::connect::connect;
use super::{BackendConn, BackendError, BackendInfo, ServerParams, StartupInfo};
use crate::protocol::{peek_header, write};

/// Connections are interchangeable only for the same backend and the same startup request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    pub backend: usize,
    pub startup: Arc<StartupInfo>,
}

/// How long a reset may take before the connection is given up.
const RESET_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Pool {
    backends: Vec<Arc<BackendInfo>>,
    idle: Mutex<HashMap<PoolKey, Vec<(BackendConn, Instant)>>>,
    /// ParameterStatus values per key, remembered from the last connection opened for it, so a
    /// client can be told them at startup without a backend connection of its own.
    params: Mutex<HashMap<PoolKey, Arc<ServerParams>>>,
    max_idle: usize,
    idle_timeout: Duration,
    connect_timeout: Duration,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks leaves plain data behind; keep serving.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Pool {
    pub fn new(
        backends: Vec<Arc<BackendInfo>>,
        max_idle: usize,
        idle_timeout: Duration,
        connect_timeout: Duration,
    ) -> Arc<Pool> {
        Arc::new(Pool {
            backends,
            idle: Mutex::new(HashMap::new()),
            params: Mutex::new(HashMap::new()),
            max_idle,
            idle_timeout,
            connect_timeout,
        })
    }

    pub fn backends(&self) -> &[Arc<BackendInfo>] {
        &self.backends
    }

    /// An idle connection for `key` that is still alive, or a new one.
    pub async fn acquire(
        &self,
        key: &PoolKey,
        password: Option<&str>,
    ) -> Result<BackendConn, BackendError> {
        loop {
            let candidate = locked(&self.idle).get_mut(key).and_then(|v| v.pop());
            match candidate {
                Some((conn, _)) if is_alive(&conn) => match conn.adopt() {
                    Ok(conn) => return Ok(conn),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot move a pooled connection to this worker")
                    }
                },
                Some(_) => continue,
                None => break,
            }
        }
        let info = self.backends[key.backend].clone();
        let conn = connect(info, key.clone(), password, self.connect_timeout).await?;
        locked(&self.params).insert(key.clone(), conn.params.clone());
        Ok(conn)
    }

    /// The ParameterStatus values a connection for `key` reports, opening one only if no
    /// connection for that key was ever made.
    pub async fn server_params(
        &self,
        key: &PoolKey,
        password: Option<&str>,
    ) -> Result<Arc<ServerParams>, BackendError> {
        if let Some(params) = locked(&self.params).get(key) {
            return Ok(params.clone());
        }
        let conn = self.acquire(key, password).await?;
        let params = conn.params.clone();
        self.put_idle(conn);
        Ok(params)
    }

    /// Takes a connection back: reset in the background and pooled, or closed if its state is
    /// not clean.
    pub fn release(self: &Arc<Self>, conn: BackendConn) {
        if !conn.is_quiet() {
            return;
        }
        let pool = self.clone();
        tokio::spawn(async move {
            if let Ok(Ok(conn)) = tokio::time::timeout(RESET_TIMEOUT, reset(conn)).await {
                pool.put_idle(conn);
            }
        });
    }

    fn put_idle(&self, conn: BackendConn) {
        let mut idle = locked(&self.idle);
        let list = idle.entry(conn.key.clone()).or_default();
        if list.len() < self.max_idle {
            list.push((conn, Instant::now()));
        }
    }

    /// Closes connections idle for longer than the idle timeout.
    pub fn reap_idle(&self) {
        let now = Instant::now();
        let mut idle = locked(&self.idle);
        for list in idle.values_mut() {
            list.retain(|(_, since)| now.duration_since(*since) < self.idle_timeout);
        }
        idle.retain(|_, list| !list.is_empty());
    }

    /// Pooled connections per backend (by index), for the status page and gauges.
    pub fn idle_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.backends.len()];
        for (key, list) in locked(&self.idle).iter() {
            counts[key.backend] += list.len();
        }
        counts
    }

    /// Closes every idle connection (at shutdown).
    pub fn close_idle(&self) {
        locked(&self.idle).clear();
    }
}

/// An idle connection the server has closed (or written to unasked) is not reused.
fn is_alive(conn: &BackendConn) -> bool {
    let mut probe = [0u8; 1];
    matches!(conn.rd.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}

/// Runs `DISCARD ALL` and checks the server is idle and error-free afterwards.
async fn reset(mut conn: BackendConn) -> io::Result<BackendConn> {
    conn.out.clear();
    write::query("DISCARD ALL", &mut conn.out);
    conn.wr.write_all(&conn.out).await?;
    conn.out.clear();
    let mut failed = false;
    loop {
        while let Some((ty, total)) = peek_header(&conn.inbuf) {
            if conn.inbuf.len() < total {
                break;
            }
            match ty {
                b'E' => failed = true,
                b'Z' if !failed && conn.inbuf.get(5) == Some(&b'I') => {
                    conn.inbuf.advance(total);
                    conn.prepared.clear();
                    conn.closes_due.clear();
                    conn.settings_seq = 0;
                    return if conn.inbuf.is_empty() {
                        Ok(conn)
                    } else {
                        Err(io::Error::other("data after reset"))
                    };
                }
                b'Z' => return Err(io::Error::other("reset failed")),
                _ => {}
            }
            conn.inbuf.advance(total);
        }
        if conn.rd.read_buf(&mut conn.inbuf).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
}
