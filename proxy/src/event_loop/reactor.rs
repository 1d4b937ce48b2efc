//! Socket readiness for one loop: which sockets may read or write without blocking, and which
//! task to wake when one becomes ready.
//!
//! Registrations are edge-triggered, so readiness is remembered here from the event
//! until an attempt finds the socket empty (or full). A socket starts ready both ways: the
//! first attempt finds out. A socket's state is atomic, not thread-bound: a pooled server
//! connection registered here may be used by a session of another loop.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;

use std::os::fd::RawFd;

use super::epoll::{self, Epoll};

/// One way of a socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Read = 1,
    Write = 2,
}

/// The readiness word: `Direction` bits, which an attempt that finds nothing clears (only if
/// no event came since it saw them: the count of events is above them), and the ends, which
/// last: a read after the peer's FIN returns 0 at once, however often it is tried, and the
/// FIN may come with the last data, in one event.
const READ_END: u64 = 4;
const WRITE_END: u64 = 8;
const BOTH: u64 = Direction::Read as u64 | Direction::Write as u64;
const TICK: u64 = 1 << 8;

impl Direction {
    /// The bits of the word that let `self` proceed.
    fn mask(self) -> u64 {
        match self {
            Direction::Read => Direction::Read as u64 | READ_END,
            Direction::Write => Direction::Write as u64 | WRITE_END,
        }
    }
}

/// One socket's readiness, shared by the reactor and the socket's owner. Lock-free on the
/// hot path: a ready check is one load; only a task about to wait touches a waker slot.
/// One task at a time polls each way of a socket (its owner: a session, or the task closing
/// or resetting a server connection it was handed): a waker slot holds one waker.
pub struct Readiness {
    word: AtomicU64,
    reader: AtomicWaker,
    writer: AtomicWaker,
}

impl Readiness {
    fn slot(&self, way: Direction) -> &AtomicWaker {
        match way {
            Direction::Read => &self.reader,
            Direction::Write => &self.writer,
        }
    }

    /// Ready: the word to pass to [`Readiness::clear`]. Pending: `cx`'s task is woken when an
    /// event makes it ready.
    pub fn poll_ready(&self, way: Direction, cx: &mut Context<'_>) -> Poll<u64> {
        if let Some(word) = self.ready_now(way) {
            return Poll::Ready(word);
        }
        self.slot(way).register(cx.waker());
        // An event between the load and the registration woke nobody: look again.
        match self.ready_now(way) {
            Some(word) => Poll::Ready(word),
            None => Poll::Pending,
        }
    }

    /// The word, if the socket may proceed `way` now.
    pub fn ready_now(&self, way: Direction) -> Option<u64> {
        let word = self.word.load(Ordering::Acquire);
        (word & way.mask() != 0).then_some(word)
    }

    /// An attempt moved less than it could `way`, after [`Readiness::poll_ready`] gave
    /// `seen`: the socket is emptied (or full), but an end that came stays.
    pub fn clear(&self, way: Direction, seen: u64) {
        self.clear_bits(way as u64, seen);
    }

    /// An attempt found the socket not ready `way` (it would block), after `seen`: an end is
    /// cleared too (a TCP socket past its end never blocks, but one that did would otherwise
    /// be tried forever).
    pub fn blocked(&self, way: Direction, seen: u64) {
        self.clear_bits(way.mask(), seen);
    }

    fn clear_bits(&self, bits: u64, seen: u64) {
        let _ = self
            .word
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |word| {
                (word / TICK == seen / TICK).then_some(word & !bits)
            });
    }

    /// An event: the socket may proceed `ready` ways; their tasks are woken.
    fn set(&self, ready: u64) {
        let _ = self
            .word
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |word| {
                Some(word.wrapping_add(TICK) | ready)
            });
        if ready & Direction::Read.mask() != 0 {
            self.reader.wake();
        }
        if ready & Direction::Write.mask() != 0 {
            self.writer.wake();
        }
    }
}

/// The sockets registered with one loop. A socket's token is the address of its
/// [`Readiness`], which the slab keeps alive while it may still be reported: a socket
/// deregistered (from any thread) is freed by the loop before its next `epoll_wait`, as
/// waits that start after `EPOLL_CTL_DEL` no longer report it.
pub struct Reactor {
    epoll: Epoll,
    sockets: Mutex<Slab>,
    /// Slab entries deregistered and not yet freed.
    released: Mutex<Vec<usize>>,
    any_released: AtomicBool,
}

#[derive(Default)]
struct Slab {
    entries: Vec<Option<Arc<Readiness>>>,
    free: Vec<usize>,
}

/// A socket's place in a reactor, given back by [`Registration::deregister`].
pub struct Registration {
    reactor: Arc<Reactor>,
    /// Its entry in the slab.
    entry: usize,
    pub readiness: Arc<Readiness>,
}

impl Reactor {
    pub fn new(epoll: Epoll) -> Reactor {
        Reactor {
            epoll,
            sockets: Mutex::new(Slab::default()),
            released: Mutex::new(Vec::new()),
            any_released: AtomicBool::new(false),
        }
    }

    pub(super) fn epoll(&self) -> &Epoll {
        &self.epoll
    }

    fn slab(&self) -> MutexGuard<'_, Slab> {
        self.sockets.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers socket `fd` for both ways, ready both ways until an attempt says otherwise.
    pub fn register(self: &Arc<Self>, fd: RawFd) -> std::io::Result<Registration> {
        let readiness = Arc::new(Readiness {
            word: AtomicU64::new(BOTH),
            reader: AtomicWaker::new(),
            writer: AtomicWaker::new(),
        });
        let entry = {
            let mut slab = self.slab();
            let entry = slab.free.pop().unwrap_or(slab.entries.len());
            if entry == slab.entries.len() {
                slab.entries.push(None);
            }
            slab.entries[entry] = Some(readiness.clone());
            entry
        };
        let token = Arc::as_ptr(&readiness) as u64;
        if let Err(e) = self.epoll.add(fd, token) {
            self.free(entry);
            return Err(e);
        }
        Ok(Registration {
            reactor: self.clone(),
            entry,
            readiness,
        })
    }

    fn free(&self, entry: usize) {
        let mut slab = self.slab();
        slab.entries[entry] = None;
        slab.free.push(entry);
    }

    /// Frees the sockets deregistered since the last call (the loop's, before it waits).
    #[inline]
    pub(super) fn free_released(&self) {
        if !self.any_released.load(Ordering::Acquire)
            || !self.any_released.swap(false, Ordering::AcqRel)
        {
            return;
        }
        let released =
            std::mem::take(&mut *self.released.lock().unwrap_or_else(PoisonError::into_inner));
        for entry in released {
            self.free(entry);
        }
    }

    /// Hands an event (`what`, epoll's bits) of this loop's last wait to its socket.
    pub(super) fn dispatch(&self, token: u64, what: u32) {
        // SAFETY: the token is the address of a Readiness the slab holds until the loop's
        // next wait (see [`Reactor`]); this event is of the wait just ended.
        let readiness = unsafe { &*(token as *const Readiness) };
        let has = |bits: u32, then: u64| if what & bits != 0 { then } else { 0 };
        readiness.set(
            has(epoll::DATA, Direction::Read as u64)
                | has(epoll::ROOM, Direction::Write as u64)
                | has(epoll::READ_END, READ_END)
                | has(epoll::WRITE_END, WRITE_END),
        );
    }
}

impl Registration {
    /// Takes socket `fd` out of the reactor (from any thread).
    pub fn deregister(self, fd: RawFd) {
        let _ = self.reactor.epoll.delete(fd);
        self.reactor
            .released
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(self.entry);
        self.reactor.any_released.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh() -> Readiness {
        Readiness {
            word: AtomicU64::new(BOTH),
            reader: AtomicWaker::new(),
            writer: AtomicWaker::new(),
        }
    }

    fn seen(readiness: &Readiness) -> u64 {
        readiness.word.load(Ordering::Acquire)
    }

    fn ready(readiness: &Readiness, way: Direction) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        readiness.poll_ready(way, &mut cx).is_ready()
    }

    /// What each step leaves ready, (read, write), from a fresh socket.
    #[test]
    fn readiness_steps() {
        use Direction::{Read, Write};
        type Step = fn(&Readiness);
        let cases: &[(&str, &[Step], (bool, bool))] = &[
            ("new: both ways tried", &[], (true, true)),
            ("a short read", &[|r| r.clear(Read, seen(r))], (false, true)),
            (
                "a blocked write",
                &[|r| r.blocked(Write, seen(r))],
                (true, false),
            ),
            (
                "a short read, then data",
                &[|r| r.clear(Read, seen(r)), |r| r.set(Read as u64)],
                (true, true),
            ),
            (
                "data came between the attempt and its clear",
                &[|r| {
                    let before = seen(r);
                    r.set(Read as u64);
                    r.clear(Read, before);
                }],
                (true, true),
            ),
            (
                "the FIN with the last data, then a short read",
                &[
                    |r| r.set(Read as u64 | READ_END),
                    |r| r.clear(Read, seen(r)),
                ],
                (true, true),
            ),
            (
                "past the end, a read that would block",
                &[|r| r.set(READ_END), |r| r.blocked(Read, seen(r))],
                (false, true),
            ),
            (
                "a hang-up ends both ways",
                &[
                    |r| r.blocked(Read, seen(r)),
                    |r| r.blocked(Write, seen(r)),
                    |r| r.set(READ_END | WRITE_END),
                ],
                (true, true),
            ),
        ];
        for (name, steps, expected) in cases {
            let readiness = fresh();
            for step in *steps {
                step(&readiness);
            }
            let got = (ready(&readiness, Read), ready(&readiness, Write));
            assert_eq!(got, *expected, "{name}");
        }
    }
}
