//! Asking a backend's monitor for a sample now instead of at its next tick.

use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;

#[derive(Default)]
pub struct Nudge {
    /// A request not yet answered by a sample: further requests are a single atomic swap.
    pending: AtomicBool,
    wake: Notify,
}

impl Nudge {
    /// Asks for a sample sent after this call.
    pub fn request(&self) {
        if !self.pending.swap(true, Ordering::AcqRel) {
            self.wake.notify_one();
        }
    }

    /// Resolves when a sample has been asked for (at once if one was asked for meanwhile).
    pub async fn requested(&self) {
        self.wake.notified().await
    }

    /// Called right before a sample is sent: it answers every request made so far.
    pub fn answering(&self) {
        self.pending.store(false, Ordering::Release);
    }
}
