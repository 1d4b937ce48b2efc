//! Query cancellation. Clients get BackendKeyData made up by the proxy; a CancelRequest with
//! those keys is forwarded to whichever backend runs the client's statement right now.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use postgres_protocol::message::frontend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::backend::BackendInfo;

/// Where and how to cancel a statement on a backend: one per server connection, made when
/// it opens, and shared (a session points its client's cancel key at it for every unit of
/// transaction pooling).
#[derive(Debug)]
pub struct BackendCancel {
    pub backend: Arc<BackendInfo>,
    pub pid: i32,
    pub secret: i32,
    /// The cancels forwarded to this connection and not yet delivered: while one is, the
    /// connection must not serve another session, whose statement the late cancel would end.
    pub in_flight: AtomicUsize,
}

/// A cancel on its way to a backend, counted there until it is dropped.
struct Forwarding(Arc<BackendCancel>);

impl Drop for Forwarding {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The backend a session is running a statement on, updated by the session.
#[derive(Debug, Default)]
pub struct CancelTarget(Mutex<Option<Arc<BackendCancel>>>);

impl CancelTarget {
    pub fn set(&self, target: Option<Arc<BackendCancel>>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = target;
    }

    /// The target, counted as a cancel in flight there: under the lock, so that once a
    /// session has cleared its target (`set(None)`), every cancel that got it is counted.
    fn forwarding(&self) -> Option<Forwarding> {
        let target = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let target = target.as_ref()?;
        target.in_flight.fetch_add(1, Ordering::AcqRel);
        Some(Forwarding(target.clone()))
    }
}

/// Live sessions by the keys their clients were given.
#[derive(Default)]
pub struct CancelRegistry {
    sessions: Mutex<HashMap<(i32, i32), Arc<CancelTarget>>>,
}

impl CancelRegistry {
    /// New random keys for a session, unique among live sessions.
    pub fn register(&self) -> ((i32, i32), Arc<CancelTarget>) {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let pid = (rand::random::<u32>() >> 1) as i32;
            let key = (pid.max(1), rand::random::<i32>());
            if let std::collections::hash_map::Entry::Vacant(slot) = sessions.entry(key) {
                let target = Arc::new(CancelTarget::default());
                slot.insert(target.clone());
                return (key, target);
            }
        }
    }

    pub fn unregister(&self, key: (i32, i32)) {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key);
    }

    /// Forwards a client's CancelRequest; unknown keys are ignored, as PostgreSQL does.
    pub async fn cancel(&self, pid: i32, secret: i32) {
        let forwarding = {
            let sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
            sessions.get(&(pid, secret)).and_then(|t| t.forwarding())
        };
        if let Some(Forwarding(target)) = &forwarding {
            if let Err(e) = send_cancel(target).await {
                tracing::warn!(backend = %target.backend, error = %e, "cancel request failed");
            }
        }
    }
}

/// Sends a CancelRequest to a backend and waits for it to close the connection.
pub async fn send_cancel(target: &BackendCancel) -> std::io::Result<()> {
    let attempt = async {
        let mut stream =
            TcpStream::connect((target.backend.host.as_str(), target.backend.port)).await?;
        let mut buf = BytesMut::new();
        frontend::cancel_request(target.pid, target.secret, &mut buf);
        stream.write_all(&buf).await?;
        let mut sink = [0u8; 64];
        while stream.read(&mut sink).await? > 0 {}
        Ok(())
    };
    tokio::time::timeout(Duration::from_secs(5), attempt)
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::BackendId;

    #[test]
    fn a_cancel_on_its_way_is_counted_on_its_connection_until_dropped() {
        let target = CancelTarget::default();
        let config = pgrepl_config::BackendConfig {
            name: "db01".into(),
            host: "127.0.0.1".into(),
            port: 5432,
            weight: 1,
            promotable: true,
        };
        let connection = Arc::new(BackendCancel {
            backend: Arc::new(BackendInfo::new(BackendId::FIRST, &config, "db01", None)),
            pid: 7,
            secret: 9,
            in_flight: AtomicUsize::new(0),
        });
        target.set(Some(connection.clone()));
        let forwarding = target.forwarding().expect("a target");
        assert_eq!(
            connection.in_flight.load(Ordering::Acquire),
            1,
            "counted while on its way"
        );
        target.set(None);
        assert!(
            target.forwarding().is_none(),
            "a cleared target takes no cancel"
        );
        drop(forwarding);
        assert_eq!(connection.in_flight.load(Ordering::Acquire), 0, "delivered");
    }
}
