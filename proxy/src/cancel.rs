//! Query cancellation. Clients get BackendKeyData made up by the proxy; a CancelRequest with
//! those keys is forwarded to whichever backend runs the client's statement right now.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use postgres_protocol::message::frontend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Where and how to cancel a statement on a backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendCancel {
    pub host: String,
    pub port: u16,
    pub pid: i32,
    pub secret: i32,
}

/// The backend a session is running a statement on, updated by the session.
#[derive(Debug, Default)]
pub struct CancelTarget(Mutex<Option<BackendCancel>>);

impl CancelTarget {
    pub fn set(&self, target: Option<BackendCancel>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = target;
    }

    fn get(&self) -> Option<BackendCancel> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
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
        let target = {
            let sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
            sessions.get(&(pid, secret)).and_then(|t| t.get())
        };
        if let Some(target) = target {
            if let Err(e) = send_cancel(&target).await {
                tracing::warn!(host = %target.host, port = target.port, error = %e, "cancel request failed");
            }
        }
    }
}

/// Sends a CancelRequest to a backend and waits for it to close the connection.
pub async fn send_cancel(target: &BackendCancel) -> std::io::Result<()> {
    let attempt = async {
        let mut stream = TcpStream::connect((target.host.as_str(), target.port)).await?;
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
