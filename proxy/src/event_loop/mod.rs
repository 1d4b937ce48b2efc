//! The workers' own event loop: one thread runs the sessions it was handed, polling their
//! futures when their sockets are ready, parking in one `epoll_wait` when nothing is.
//!
//! Why not tokio's current-thread runtime, which it replaces: with one client, callgrind put
//! ~2,100 instructions per query in that scheduler outside the session (two parks with their
//! busy-time clock reads, the task harness, the I/O driver's dispatch) and ~600 more in its
//! socket readiness, against 4,300 for all of PgBouncer's work per query. This loop does only
//! what the sessions need: a run queue of task indices in a thread-local for wakes from its
//! own thread (one atomic swap per wake, no lock), an inbox for the rare wakes and new
//! sessions from other threads, and readiness per socket ([`reactor`]).
//!
//! The thread stays inside the accepting runtime's tokio context: what a session spawns,
//! its timers and the sockets of its side work (cancel requests, resets) live there and wake
//! the session through its waker like any other thread's.

mod epoll;
mod reactor;
mod sys;
mod tasks;
pub mod tcp;

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::Notify;

use epoll::{Epoll, Wakeup};
use reactor::Reactor;
use tasks::Tasks;

/// A future the loop runs to completion.
pub type Job = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Tasks polled before the loop looks at its sockets again, when tasks keep waking each
/// other: sockets that became ready meanwhile are not starved.
const POLLS_PER_TURN: usize = 256;
/// Readiness events taken per `epoll_wait`.
const EVENTS: usize = 256;
/// The token of the inbox's wake-up (socket tokens are addresses).
const INBOX: u64 = u64::MAX;

/// What other threads hand a loop.
enum Mail {
    Spawn(Job),
    Wake(usize),
}

/// How many jobs the loops sharing it have not finished, and a signal when none is left.
#[derive(Default)]
pub struct Running {
    count: AtomicUsize,
    none_left: Notify,
}

impl Running {
    pub fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Returns once every job spawned so far has ended (or was dropped with its loop).
    pub async fn all_ended(&self) {
        loop {
            // Made before the check: notify_waiters wakes it from here on.
            let none_left = self.none_left.notified();
            if self.count() == 0 {
                return;
            }
            none_left.await;
        }
    }

    fn ended(&self) {
        if self.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.none_left.notify_waiters();
        }
    }
}

/// A loop's side that other threads use: its inbox and the means to wake it.
pub struct Remote {
    mail: Mutex<Vec<Mail>>,
    /// Set once mail waits and the loop has been woken for it, until the loop takes it: a
    /// burst of mail costs one wake-up.
    signalled: AtomicBool,
    stopping: AtomicBool,
    wakeup: Wakeup,
    running: Arc<Running>,
}

impl Remote {
    fn post(&self, mail: Mail) {
        self.mail
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(mail);
        if !self.signalled.swap(true, Ordering::AcqRel) {
            self.wakeup.wake();
        }
    }

    /// Runs `job` on the loop; it counts as running until it ends or is dropped.
    pub fn spawn(&self, job: Job) {
        self.running.count.fetch_add(1, Ordering::AcqRel);
        self.post(Mail::Spawn(job));
    }

    /// Ends the loop: it drops the tasks it still has and returns.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        self.wakeup.wake();
    }

    /// The mail waiting, if any (one load when there is none).
    #[inline]
    fn take_mail(&self) -> Option<Vec<Mail>> {
        if !self.signalled.load(Ordering::Acquire) || !self.signalled.swap(false, Ordering::AcqRel)
        {
            return None;
        }
        Some(std::mem::take(
            &mut *self.mail.lock().unwrap_or_else(PoisonError::into_inner),
        ))
    }
}

/// One worker's loop, run by [`EventLoop::run`] on the thread that made it.
pub struct EventLoop {
    events: Vec<libc::epoll_event>,
    reactor: Arc<Reactor>,
    remote: Arc<Remote>,
    tasks: Tasks,
    /// The woken tasks being polled, swapped with the thread's queue a batch at a time.
    batch: Vec<usize>,
}

thread_local! {
    /// On a loop's thread: the tasks its own wakes queue, and what its sockets register with.
    static HERE: std::cell::RefCell<Option<Here>> = const { std::cell::RefCell::new(None) };
}

/// What a loop's thread knows of its loop.
struct Here {
    remote: *const Remote,
    reactor: Arc<Reactor>,
    queue: Vec<usize>,
}

impl EventLoop {
    /// A loop whose jobs count in `running`.
    pub fn new(running: Arc<Running>) -> io::Result<EventLoop> {
        let reactor = Arc::new(Reactor::new(Epoll::new()?));
        let wakeup = Wakeup::new()?;
        reactor.epoll().add(wakeup.fd(), INBOX)?;
        let remote = Arc::new(Remote {
            mail: Mutex::new(Vec::new()),
            signalled: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            wakeup,
            running,
        });
        Ok(EventLoop {
            events: Vec::with_capacity(EVENTS),
            reactor,
            remote: remote.clone(),
            tasks: Tasks::new(remote),
            batch: Vec::new(),
        })
    }

    /// How other threads reach this loop.
    pub fn remote(&self) -> Arc<Remote> {
        self.remote.clone()
    }

    /// Runs tasks as they are woken until [`Remote::stop`]; then drops the tasks left, on
    /// this thread, while their sockets can still deregister.
    pub fn run(mut self) {
        HERE.with(|here| {
            *here.borrow_mut() = Some(Here {
                remote: Arc::as_ptr(&self.remote),
                reactor: self.reactor.clone(),
                queue: Vec::new(),
            })
        });
        while !self.remote.stopping.load(Ordering::Acquire) {
            self.take_mail();
            let more = self.run_tasks();
            self.park(more);
        }
        self.tasks.clear();
        for mail in self.remote.take_mail().into_iter().flatten() {
            if let Mail::Spawn(job) = mail {
                drop(job);
                self.remote.running.ended();
            }
        }
        HERE.with(|here| here.borrow_mut().take());
    }

    fn take_mail(&mut self) {
        let Some(mail) = self.remote.take_mail() else {
            return;
        };
        for mail in mail {
            match mail {
                Mail::Spawn(job) => {
                    let index = self.tasks.insert(job);
                    queue_here(index);
                }
                Mail::Wake(index) => queue_here(index),
            }
        }
    }

    /// Polls the woken tasks, and those they wake, up to about a turn's worth; true if some
    /// are still queued.
    fn run_tasks(&mut self) -> bool {
        let mut polled = 0;
        while polled < POLLS_PER_TURN {
            HERE.with(|here| {
                if let Some(here) = here.borrow_mut().as_mut() {
                    std::mem::swap(&mut here.queue, &mut self.batch);
                }
            });
            if self.batch.is_empty() {
                return false;
            }
            polled += self.batch.len();
            for index in self.batch.drain(..) {
                self.tasks.poll(index);
            }
        }
        true
    }

    /// Waits for readiness (or only looks, when tasks are queued) and wakes whose sockets it
    /// finds ready.
    fn park(&mut self, busy: bool) {
        let timeout_ms = if busy { 0 } else { -1 };
        self.reactor.free_released();
        if let Err(e) = self.reactor.epoll().wait(&mut self.events, timeout_ms) {
            if e.kind() != io::ErrorKind::Interrupted {
                // Not a condition of the sockets (a bug): say so, without spinning.
                tracing::error!(error = %e, "a worker's epoll_wait failed");
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            return;
        }
        for event in &self.events {
            // A copy: the kernel's struct is packed on some architectures.
            let (token, what) = (event.u64, event.events);
            if token != INBOX {
                self.reactor.dispatch(token, what);
            }
        }
    }
}

/// Queues task `index` of this thread's loop.
fn queue_here(index: usize) {
    HERE.with(|here| {
        if let Some(here) = here.borrow_mut().as_mut() {
            here.queue.push(index);
        }
    });
}

/// Queues task `index` of the loop behind `remote`: directly when this is its thread, else
/// through its inbox.
fn wake_task(remote: &Arc<Remote>, index: usize) {
    let local = HERE.with(|here| match here.borrow_mut().as_mut() {
        Some(here) if std::ptr::eq(here.remote, Arc::as_ptr(remote)) => {
            here.queue.push(index);
            true
        }
        _ => false,
    });
    if !local {
        remote.post(Mail::Wake(index));
    }
}

/// The reactor of the loop this thread runs, if it runs one.
fn reactor_here() -> Option<Arc<Reactor>> {
    HERE.with(|here| here.borrow().as_ref().map(|here| here.reactor.clone()))
}

#[cfg(test)]
mod tests;
