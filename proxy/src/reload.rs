//! Reload requests: the admin console's `RELOAD` asks whoever applies a new configuration
//! (the code that also answers SIGHUP) and waits for its outcome. That code takes the
//! receiving end once, with [`ReloadRequests::take`]; until it does, `RELOAD` is not available.

use std::sync::Mutex;

use tokio::sync::{mpsc, oneshot};

/// What a reload came to: done, or refused with the reason (the configuration in force
/// stays).
pub type ReloadOutcome = Result<(), String>;

/// One request: answer it on `reply` once the reload is done or refused.
pub struct ReloadRequest {
    pub reply: oneshot::Sender<ReloadOutcome>,
}

/// Nobody applies reloads in this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unavailable;

/// The channel between `RELOAD` and the code that reloads.
pub struct ReloadRequests {
    tx: mpsc::Sender<ReloadRequest>,
    rx: Mutex<Option<mpsc::Receiver<ReloadRequest>>>,
}

impl Default for ReloadRequests {
    fn default() -> Self {
        // A few at once is plenty: each waits for its own outcome.
        let (tx, rx) = mpsc::channel(8);
        ReloadRequests {
            tx,
            rx: Mutex::new(Some(rx)),
        }
    }
}

impl ReloadRequests {
    /// The requests, for the code that reloads; None after the first call.
    pub fn take(&self) -> Option<mpsc::Receiver<ReloadRequest>> {
        self.rx.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// Asks for a reload and waits for its outcome.
    pub async fn request(&self) -> Result<ReloadOutcome, Unavailable> {
        let untaken = self.rx.lock().unwrap_or_else(|p| p.into_inner()).is_some();
        if untaken {
            return Err(Unavailable);
        }
        let (reply, outcome) = oneshot::channel();
        self.tx
            .send(ReloadRequest { reply })
            .await
            .map_err(|_| Unavailable)?;
        outcome.await.map_err(|_| Unavailable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn requests_reach_the_reloader_and_bring_back_its_outcome() {
        let requests = std::sync::Arc::new(ReloadRequests::default());
        assert_eq!(requests.request().await, Err(Unavailable), "nobody reloads");
        let mut rx = requests.take().expect("the receiving end");
        assert!(requests.take().is_none(), "taken once");
        let reloader = tokio::spawn(async move {
            let first = rx.recv().await.unwrap();
            let _ = first.reply.send(Ok(()));
            let second = rx.recv().await.unwrap();
            let _ = second
                .reply
                .send(Err("[proxy] listen cannot change".into()));
        });
        assert_eq!(requests.request().await, Ok(Ok(())));
        assert_eq!(
            requests.request().await,
            Ok(Err("[proxy] listen cannot change".into()))
        );
        reloader.await.unwrap();
        assert_eq!(requests.request().await, Err(Unavailable), "reloader gone");
    }
}
