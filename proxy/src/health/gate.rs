//! A value that only grows (a replica's replay position, the number of primary look-ups
//! done) that sessions wait on: each waiter names the value it needs and is woken once it
//! is reached, and only then; a wake-up per change for every waiter would cost each of many
//! waiting sessions a look at every poll. Whoever makes the value grow parks on
//! [`LsnGate::demanded`] while nobody waits, so it costs nothing then.

use std::sync::atomic::Ordering::{Acquire, Relaxed, Release, SeqCst};
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use tokio::sync::Notify;

/// See the module documentation.
#[derive(Default)]
pub struct LsnGate {
    reached: AtomicU64,
    /// Waiters: the value each needs, its id, and how to wake it.
    waiting: Mutex<Vec<Waiter>>,
    /// `waiting.len()`, readable without the lock.
    waiters: AtomicUsize,
    /// Signalled when the first waiter arrives.
    demand: Notify,
    /// The first value wanted and not reached yet (0: none), and since when (nanoseconds,
    /// the caller's clock); a later want does not move it, reaching it ends it: how long the
    /// oldest unmet want has waited, across waits that gave up, tells a source that is stuck
    /// from one that is merely behind.
    oldest_want: AtomicU64,
    wanted_since: AtomicU64,
    /// When its source was last asked.
    asked_at: AtomicU64,
}

struct Waiter {
    target: u64,
    id: u64,
    waker: Waker,
}

impl LsnGate {
    /// The value reached so far.
    #[inline]
    pub fn reached(&self) -> u64 {
        self.reached.load(Acquire)
    }

    /// Raises the value to `to` (never lowers it) and wakes the waiters it satisfies.
    pub fn advance(&self, to: u64) {
        if self.reached.fetch_max(to, SeqCst) >= to {
            return;
        }
        let oldest = self.oldest_want.load(Relaxed);
        if oldest != 0 && oldest <= to {
            let _ = self
                .oldest_want
                .compare_exchange(oldest, 0, Relaxed, Relaxed);
        }
        // SeqCst with `poll_reach`'s store-then-check: either this sees its waiter, or it
        // sees this value.
        if self.waiters.load(SeqCst) == 0 {
            return;
        }
        let mut waiting = locked(&self.waiting);
        waiting.retain(|w| {
            if w.target <= to {
                w.waker.wake_by_ref();
                false
            } else {
                true
            }
        });
        self.waiters.store(waiting.len(), Release);
    }

    /// Ready once the value is at least `target`; otherwise waiter `id` is registered (or its
    /// target and waker updated) and woken when it is.
    pub fn poll_reach(&self, target: u64, id: u64, cx: &mut Context<'_>) -> Poll<()> {
        if self.reached() >= target {
            return Poll::Ready(());
        }
        let mut waiting = locked(&self.waiting);
        match waiting.iter_mut().find(|w| w.id == id) {
            Some(w) => {
                w.target = target;
                w.waker.clone_from(cx.waker());
            }
            None => waiting.push(Waiter {
                target,
                id,
                waker: cx.waker().clone(),
            }),
        }
        let first = self.waiters.swap(waiting.len(), SeqCst) == 0;
        // Checked again once registered: an `advance` since the first check either sees
        // this waiter (and waits for this lock to wake it) or is seen here.
        if self.reached.load(SeqCst) >= target {
            waiting.retain(|w| w.id != id);
            self.waiters.store(waiting.len(), SeqCst);
            return Poll::Ready(());
        }
        drop(waiting);
        if first {
            self.demand.notify_one();
        }
        Poll::Pending
    }

    /// Waiter `id` no longer waits.
    pub fn forget(&self, id: u64) {
        if self.waiters.load(Acquire) == 0 {
            return;
        }
        let mut waiting = locked(&self.waiting);
        waiting.retain(|w| w.id != id);
        self.waiters.store(waiting.len(), Release);
    }

    /// Wakes every waiter without satisfying it: its source failed, and each decides anew.
    pub fn wake_all(&self) {
        let mut waiting = locked(&self.waiting);
        for w in waiting.drain(..) {
            w.waker.wake();
        }
        self.waiters.store(0, Release);
    }

    /// Starts over from nothing (a replica that restarted may have replayed less than it
    /// had), waking every waiter to decide anew.
    pub fn restart(&self) {
        self.reached.store(0, Release);
        self.oldest_want.store(0, Relaxed);
        self.wake_all();
    }

    pub fn has_waiters(&self) -> bool {
        self.waiters.load(Acquire) > 0
    }

    /// The smallest value a waiter needs.
    pub fn min_target(&self) -> Option<u64> {
        locked(&self.waiting).iter().map(|w| w.target).min()
    }

    /// Resolves once someone waits (at once if someone does).
    pub async fn demanded(&self) {
        while !self.has_waiters() {
            self.demand.notified().await;
        }
    }

    /// Someone wants `target` as of `now` (before waiting for it): the start of an unmet
    /// want, unless one is open already.
    pub fn want(&self, target: u64, now: u64) {
        if target <= self.reached() || self.oldest_want.load(Relaxed) != 0 {
            return;
        }
        if self
            .oldest_want
            .compare_exchange(0, target, Relaxed, Relaxed)
            .is_ok()
        {
            self.wanted_since.store(now, Relaxed);
        }
    }

    /// The source was asked at `now`.
    pub fn asked(&self, now: u64) {
        self.asked_at.store(now, Relaxed);
    }

    /// How long the oldest unmet want has waited as of `now`, if the source was asked within
    /// `recent` (else 0: what the gate says may be old, as nobody asked).
    pub fn stalled_for(&self, now: u64, recent: u64) -> u64 {
        let asked = self.asked_at.load(Relaxed);
        if asked == 0 || now.saturating_sub(asked) > recent {
            return 0;
        }
        let oldest = self.oldest_want.load(Relaxed);
        if oldest == 0 || oldest <= self.reached() {
            return 0;
        }
        now.saturating_sub(self.wanted_since.load(Relaxed))
    }
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain data: a panic while holding it leaves nothing half-done that matters.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;
    use std::task::Wake;

    use super::*;

    /// A waker that counts its wake-ups.
    #[derive(Default)]
    struct Counter(AtomicUsize);

    impl Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Relaxed);
        }
    }

    fn waker() -> (Arc<Counter>, Waker) {
        let counter = Arc::new(Counter::default());
        (counter.clone(), Waker::from(counter))
    }

    fn wakes(c: &Counter) -> usize {
        c.0.load(Relaxed)
    }

    #[test]
    fn a_reached_target_is_ready_at_once_and_registers_nothing() {
        let gate = LsnGate::default();
        gate.advance(10);
        let (_, w) = waker();
        let mut cx = Context::from_waker(&w);
        assert!(gate.poll_reach(10, 1, &mut cx).is_ready());
        assert!(!gate.has_waiters());
    }

    #[test]
    fn only_the_waiters_a_change_satisfies_are_woken() {
        let gate = LsnGate::default();
        let (low, w1) = waker();
        let (high, w2) = waker();
        assert!(gate
            .poll_reach(5, 1, &mut Context::from_waker(&w1))
            .is_pending());
        assert!(gate
            .poll_reach(9, 2, &mut Context::from_waker(&w2))
            .is_pending());
        assert_eq!(gate.min_target(), Some(5));
        gate.advance(6);
        assert_eq!((wakes(&low), wakes(&high)), (1, 0));
        assert_eq!(gate.min_target(), Some(9));
        gate.advance(4);
        assert_eq!(gate.reached(), 6, "never goes back");
        gate.advance(9);
        assert_eq!((wakes(&low), wakes(&high)), (1, 1));
        assert!(!gate.has_waiters());
    }

    #[test]
    fn a_waiter_polled_again_is_updated_not_duplicated_and_can_leave() {
        let gate = LsnGate::default();
        let (c, w) = waker();
        let mut cx = Context::from_waker(&w);
        assert!(gate.poll_reach(5, 7, &mut cx).is_pending());
        assert!(gate.poll_reach(8, 7, &mut cx).is_pending());
        assert_eq!(gate.min_target(), Some(8));
        gate.forget(7);
        assert!(!gate.has_waiters());
        gate.advance(8);
        assert_eq!(wakes(&c), 0);
    }

    #[test]
    fn the_first_waiter_signals_demand_and_wake_all_releases_everyone() {
        let gate = Arc::new(LsnGate::default());
        let (c, w) = waker();
        let parked = {
            let gate = gate.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(gate.demanded())
            })
        };
        assert!(gate
            .poll_reach(3, 1, &mut Context::from_waker(&w))
            .is_pending());
        parked.join().unwrap();
        gate.wake_all();
        assert_eq!(wakes(&c), 1);
        assert!(!gate.has_waiters());
    }

    #[test]
    fn the_oldest_unmet_want_tells_how_long_the_source_has_been_stuck() {
        let gate = LsnGate::default();
        gate.advance(10);
        gate.want(5, 100);
        assert_eq!(
            gate.stalled_for(120, 50),
            0,
            "wanted what is reached; never asked"
        );
        gate.want(20, 100);
        gate.asked(110);
        assert_eq!(gate.stalled_for(130, 50), 30);
        gate.want(40, 125);
        assert_eq!(
            gate.stalled_for(140, 50),
            40,
            "a later want does not move it"
        );
        gate.advance(30);
        assert_eq!(
            gate.stalled_for(140, 50),
            0,
            "reaching the oldest want ends it"
        );
        gate.want(40, 150);
        gate.asked(150);
        assert_eq!(gate.stalled_for(170, 50), 20);
        assert_eq!(gate.stalled_for(500, 50), 0, "not asked lately");
        gate.restart();
        gate.asked(510);
        assert_eq!(gate.stalled_for(520, 50), 0, "a restart forgets the wants");
    }
}
