//! Which of a session's sockets woke it.
//!
//! A wake-up of the session's task used to poll every socket for input: the one that fired,
//! and the others, each finding nothing at a cost of ~200 instructions (tokio's readiness
//! check, its coop budget, the lock of the socket's waker slot), three times per query. Each
//! socket's reads are polled under a waker of its own instead, which notes that the socket
//! fired before it wakes the task; a socket is polled again only once it fired, or while it
//! has not yet said it has nothing (a read that gave bytes is followed by one more read).
//!
//! Sound as long as the session's socket reads are all polled through [`Wakes::poll_read`]:
//! a socket whose read was last polled under another waker (a connection just leased, which
//! the login or the pool read) is marked due ([`Wakes::due`]) before its first poll here.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

use super::Slot;

/// A socket of the session whose reads have a waker of their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Source {
    Client,
    Lease(Slot),
}

/// How many sources a session has.
const SOURCES: usize = 3;

impl Source {
    /// Its place among the wakers, and its bit is `1 << index`.
    fn index(self) -> usize {
        match self {
            Source::Client => 0,
            Source::Lease(Slot::Primary) => 1,
            Source::Lease(Slot::Replica) => 2,
        }
    }

    fn bit(self) -> u8 {
        1 << self.index()
    }
}

/// What the sockets' wakers share: which fired, and the task to wake.
struct Fired {
    bits: AtomicU8,
    task: Mutex<Waker>,
}

/// The waker one socket's reads are polled under.
struct SourceWaker {
    bit: u8,
    fired: Arc<Fired>,
}

impl Wake for SourceWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.fired.bits.fetch_or(self.bit, Ordering::AcqRel);
        self.fired
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .wake_by_ref();
    }
}

pub(super) struct Wakes {
    fired: Arc<Fired>,
    /// The task's waker as last handed to `fired` (compared, not cloned, on every poll).
    task: Waker,
    /// Each source's own waker, by [`Source::index`].
    wakers: [Waker; SOURCES],
    /// The sources to poll: fired, or not yet found with nothing since they last gave bytes.
    due: u8,
}

impl Wakes {
    /// Every source starts due: nothing is known of them yet.
    pub(super) fn new() -> Wakes {
        let fired = Arc::new(Fired {
            bits: AtomicU8::new(0),
            task: Mutex::new(Waker::noop().clone()),
        });
        let wakers = std::array::from_fn(|index| {
            Waker::from(Arc::new(SourceWaker {
                bit: 1 << index,
                fired: fired.clone(),
            }))
        });
        Wakes {
            wakers,
            task: Waker::noop().clone(),
            fired,
            due: u8::MAX,
        }
    }

    /// At the start of every poll of the session: follows the task's waker, and makes the
    /// sources that fired since the last poll due. (A source firing after this is due at the
    /// next poll, which its waker asks for.) True when the task's waker is new: what holds
    /// the old one must be polled again.
    #[inline]
    pub(super) fn begin(&mut self, cx: &Context<'_>) -> bool {
        let new_task = !self.task.will_wake(cx.waker());
        if new_task {
            self.task = cx.waker().clone();
            *self
                .fired
                .task
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = self.task.clone();
        }
        if self.fired.bits.load(Ordering::Relaxed) != 0 {
            self.due |= self.fired.bits.swap(0, Ordering::AcqRel);
        }
        new_task
    }

    /// `source` must be polled at the next chance: its socket is new to the session, or was
    /// read under another waker.
    pub(super) fn due(&mut self, source: Source) {
        self.due |= source.bit();
    }

    /// Polls `read` of `source` under the source's own waker if the source is due; Pending
    /// without polling if not. It stays due until a poll finds nothing.
    #[inline]
    pub(super) fn poll_read<T>(
        &mut self,
        source: Source,
        read: impl FnOnce(&mut Context<'_>) -> Poll<T>,
    ) -> Poll<T> {
        let bit = source.bit();
        if self.due & bit == 0 {
            return Poll::Pending;
        }
        let polled = read(&mut Context::from_waker(&self.wakers[source.index()]));
        if polled.is_pending() {
            self.due &= !bit;
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// A task waker that counts its wakes.
    struct Counting(AtomicUsize);

    impl Wake for Counting {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn a_source_is_polled_when_it_fired_or_last_gave_something() {
        let counting = Arc::new(Counting(AtomicUsize::new(0)));
        let task = Waker::from(counting.clone());
        let cx = Context::from_waker(&task);
        let mut wakes = Wakes::new();
        let client = Source::Client;
        let replica = Source::Lease(Slot::Replica);
        // Everything is due at first; a poll that finds nothing keeps the source's waker.
        assert!(wakes.begin(&cx), "the task's first waker is new");
        let mut kept = None;
        let polled = wakes.poll_read(client, |cx| {
            kept = Some(cx.waker().clone());
            Poll::<()>::Pending
        });
        assert!(polled.is_pending());
        assert!(wakes
            .poll_read(replica, |_| Poll::<()>::Pending)
            .is_pending());
        // Not due now: not polled.
        assert!(!wakes.begin(&cx), "the same task");
        assert!(wakes
            .poll_read(client, |_| -> Poll<()> { panic!("polled") })
            .is_pending());
        // Its socket fires: the task is woken, and the client (only) is due.
        kept.unwrap().wake();
        assert_eq!(counting.0.load(Ordering::Relaxed), 1);
        wakes.begin(&cx);
        assert!(wakes
            .poll_read(replica, |_| -> Poll<()> { panic!("polled") })
            .is_pending());
        assert_eq!(wakes.poll_read(client, |_| Poll::Ready(7)), Poll::Ready(7));
        // It gave bytes: polled again until it has nothing.
        assert_eq!(wakes.poll_read(client, |_| Poll::Ready(8)), Poll::Ready(8));
        assert!(wakes
            .poll_read(client, |_| Poll::<()>::Pending)
            .is_pending());
        assert!(wakes
            .poll_read(client, |_| -> Poll<()> { panic!("polled") })
            .is_pending());
        // A socket new to the session is due.
        wakes.due(replica);
        assert_eq!(wakes.poll_read(replica, |_| Poll::Ready(1)), Poll::Ready(1));
    }

    #[test]
    fn a_new_task_waker_is_the_one_woken() {
        let first = Arc::new(Counting(AtomicUsize::new(0)));
        let second = Arc::new(Counting(AtomicUsize::new(0)));
        let mut wakes = Wakes::new();
        let mut kept = None;
        for task in [Waker::from(first.clone()), Waker::from(second.clone())] {
            let cx = Context::from_waker(&task);
            wakes.begin(&cx);
            let _ = wakes.poll_read(Source::Client, |cx| {
                kept = Some(cx.waker().clone());
                Poll::<()>::Pending
            });
        }
        kept.unwrap().wake();
        assert_eq!(first.0.load(Ordering::Relaxed), 0);
        assert_eq!(second.0.load(Ordering::Relaxed), 1);
    }
}
