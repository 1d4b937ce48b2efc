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

use std::mem::ManuallyDrop;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};

use super::Slot;

/// A socket of the session whose reads have a waker of their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Source {
    Client,
    Lease(Slot),
}

impl Source {
    /// Its bit among the fired and the due, and the tag of its waker.
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

/// What the sources' wakers share: which fired, and the task they wake. One allocation per
/// task waker (a session's task keeps one for life on the workers' loops): a source's waker
/// is its address tagged with the source, so a wake is an OR and the task's own wake, with
/// no lock and no allocation of its own.
struct Fired {
    bits: AtomicU8,
    task: Waker,
    /// Set when the session's task waker changed while sockets still held wakers of this
    /// one: they wake the new one too (a socket the session does not poll again at once, a
    /// stalled client, keeps the waker it has).
    forward: OnceLock<Arc<Fired>>,
}

impl Fired {
    fn new(task: Waker) -> Arc<Fired> {
        Arc::new(Fired {
            bits: AtomicU8::new(0),
            task,
            forward: OnceLock::new(),
        })
    }
}

/// The tag of a source's waker lives in the low bits of `Fired`'s address, which its
/// alignment leaves clear.
const TAG: usize = 0b11;
const _: () = assert!(std::mem::align_of::<Fired>() > TAG);

/// A source's waker data: `fired` tagged with the source.
fn tag(fired: *const Fired, source: Source) -> *const () {
    fired.map_addr(|addr| addr | source.index()).cast()
}

/// Splits a source waker's data into its `Fired` and its source's bit.
fn untag(data: *const ()) -> (*const Fired, u8) {
    (
        data.map_addr(|addr| addr & !TAG).cast(),
        1 << (data.addr() & TAG),
    )
}

static SOURCE_WAKER: RawWakerVTable = RawWakerVTable::new(clone, wake, wake_by_ref, drop_waker);

// SAFETY (the four below): a source waker's data is an `Arc<Fired>` pointer (tagged) holding
// one strong count, made by `Wakes::poll_read` (borrowed, never dropped) and `clone`.
unsafe fn clone(data: *const ()) -> RawWaker {
    Arc::increment_strong_count(untag(data).0);
    RawWaker::new(data, &SOURCE_WAKER)
}

unsafe fn wake(data: *const ()) {
    wake_by_ref(data);
    drop_waker(data);
}

unsafe fn wake_by_ref(data: *const ()) {
    let (fired, bit) = untag(data);
    let mut fired = &*fired;
    loop {
        fired.bits.fetch_or(bit, Ordering::AcqRel);
        fired.task.wake_by_ref();
        match fired.forward.get() {
            Some(next) => fired = next,
            None => return,
        }
    }
}

unsafe fn drop_waker(data: *const ()) {
    Arc::decrement_strong_count(untag(data).0);
}

pub(super) struct Wakes {
    fired: Arc<Fired>,
    /// The sources to poll: fired, or not yet found with nothing since they last gave bytes.
    due: u8,
}

impl Wakes {
    /// Every source starts due: nothing is known of them yet.
    pub(super) fn new() -> Wakes {
        Wakes {
            fired: Fired::new(Waker::noop().clone()),
            due: u8::MAX,
        }
    }

    /// At the start of every poll of the session: follows the task's waker, and makes the
    /// sources that fired since the last poll due. (A source firing after this is due at the
    /// next poll, which its waker asks for.) True when the task's waker is new: what holds
    /// the old one must be polled again.
    #[inline]
    pub(super) fn begin(&mut self, cx: &Context<'_>) -> bool {
        if !self.fired.task.will_wake(cx.waker()) {
            self.follow(cx.waker());
            return true;
        }
        if self.fired.bits.load(Ordering::Relaxed) != 0 {
            self.due |= self.fired.bits.swap(0, Ordering::AcqRel);
        }
        false
    }

    /// A new task waker: every source is due (each takes a waker of the new one when it is
    /// polled). With no source waker held anywhere (as at the first poll) the task is just
    /// replaced; otherwise those held wake the new one too, through `forward`.
    #[cold]
    fn follow(&mut self, task: &Waker) {
        self.due = u8::MAX;
        if let Some(fired) = Arc::get_mut(&mut self.fired) {
            fired.task = task.clone();
            return;
        }
        let next = Fired::new(task.clone());
        // Set once: this `Fired` is left now.
        let _ = self.fired.forward.set(next.clone());
        self.fired = next;
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
        let data = tag(Arc::as_ptr(&self.fired), source);
        // SAFETY: borrowed, not owned: `ManuallyDrop` keeps the count `self.fired` holds, and
        // `self.fired` outlives the poll; whoever keeps the waker clones it (a count of its
        // own).
        let waker =
            ManuallyDrop::new(unsafe { Waker::from_raw(RawWaker::new(data, &SOURCE_WAKER)) });
        let polled = read(&mut Context::from_waker(&waker));
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
    use std::task::Wake;

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

    #[test]
    fn each_source_waker_marks_its_own_source_and_outlives_the_session() {
        let counting = Arc::new(Counting(AtomicUsize::new(0)));
        let task = Waker::from(counting.clone());
        let cx = Context::from_waker(&task);
        let sources = [
            Source::Client,
            Source::Lease(Slot::Primary),
            Source::Lease(Slot::Replica),
        ];
        let mut wakes = Wakes::new();
        wakes.begin(&cx);
        let mut kept = Vec::new();
        for source in sources {
            let _ = wakes.poll_read(source, |cx| {
                kept.push(cx.waker().clone());
                Poll::<()>::Pending
            });
        }
        for (source, waker) in sources.into_iter().zip(&kept) {
            waker.wake_by_ref();
            wakes.begin(&cx);
            for other in sources {
                let polled = wakes.poll_read(other, |_| Poll::Ready(()));
                assert_eq!(
                    polled.is_ready(),
                    other == source,
                    "{other:?} after {source:?}"
                );
            }
            // Back to not due.
            let _ = wakes.poll_read(source, |_| Poll::<()>::Pending);
        }
        assert_eq!(counting.0.load(Ordering::Relaxed), 3);
        // The session ends; its sockets may still hold and use its wakers.
        drop(wakes);
        let clone = kept[1].clone();
        drop(kept);
        clone.wake();
        assert_eq!(counting.0.load(Ordering::Relaxed), 4);
    }

    #[test]
    fn a_waker_kept_from_an_old_task_wakes_the_new_one() {
        let first = Arc::new(Counting(AtomicUsize::new(0)));
        let second = Arc::new(Counting(AtomicUsize::new(0)));
        let (first_task, second_task) = (Waker::from(first.clone()), Waker::from(second.clone()));
        let mut wakes = Wakes::new();
        wakes.begin(&Context::from_waker(&first_task));
        let mut kept = None;
        let _ = wakes.poll_read(Source::Client, |cx| {
            kept = Some(cx.waker().clone());
            Poll::<()>::Pending
        });
        // The session moves to another task, and its client is not polled there yet (it is
        // stalled, say): the socket still holds the old task's waker.
        let cx = Context::from_waker(&second_task);
        assert!(wakes.begin(&cx), "a new task waker");
        kept.unwrap().wake();
        assert_eq!(second.0.load(Ordering::Relaxed), 1, "the new task is woken");
        wakes.begin(&cx);
        assert!(wakes
            .poll_read(Source::Client, |_| Poll::Ready(()))
            .is_ready());
        // With no waker held anywhere, a new task waker is taken in place.
        let before = Arc::as_ptr(&wakes.fired);
        let _ = wakes.poll_read(Source::Client, |_| Poll::<()>::Pending);
        wakes.begin(&Context::from_waker(&first_task));
        assert_eq!(Arc::as_ptr(&wakes.fired), before);
    }
}
