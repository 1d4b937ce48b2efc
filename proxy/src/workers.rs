//! Event-loop threads. Each runs an [`EventLoop`] of its own; a session lives on the worker
//! it was handed to, so the wake-ups of a query never cross threads. The threads stay inside
//! the tokio context of the runtime that starts them: timers, spawned side work and the
//! sockets that side work opens live there.

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::runtime::Handle;

use crate::event_loop::{EventLoop, Remote, Running};

/// sqlparser recurses on nested SQL; give it room beyond the 2 MiB default.
const STACK_SIZE: usize = 8 << 20;

pub struct Workers {
    remotes: Vec<Arc<Remote>>,
    threads: Vec<JoinHandle<()>>,
    next: AtomicUsize,
    running: Arc<Running>,
}

impl Workers {
    /// Starts `count` workers (at least one), inside the current runtime's context.
    pub fn start(count: usize) -> io::Result<Workers> {
        let context = Handle::current();
        let mut workers = Workers {
            remotes: Vec::new(),
            threads: Vec::new(),
            next: AtomicUsize::new(0),
            running: Arc::default(),
        };
        for i in 0..count.max(1) {
            let event_loop = EventLoop::new(workers.running.clone())?;
            workers.remotes.push(event_loop.remote());
            let context = context.clone();
            let thread = std::thread::Builder::new()
                .name(format!("pgrepl-worker-{i}"))
                .stack_size(STACK_SIZE)
                .spawn(move || {
                    let _entered = context.enter();
                    event_loop.run();
                })?;
            workers.threads.push(thread);
        }
        Ok(workers)
    }

    /// Runs `job(worker)` on the next worker, round robin (`worker` is its index, 0..count).
    pub fn spawn<F: Future<Output = ()> + Send + 'static>(&self, job: impl FnOnce(usize) -> F) {
        let n = self.next.fetch_add(1, Ordering::Relaxed) % self.remotes.len();
        self.remotes[n].spawn(Box::pin(job(n)));
    }

    /// How many spawned jobs have not ended.
    pub fn running(&self) -> usize {
        self.running.count()
    }

    /// Returns once every spawned job has ended.
    pub async fn all_ended(&self) {
        self.running.all_ended().await
    }

    /// Stops the loops (dropping whatever still runs on them) and joins the threads.
    pub fn stop(self) {
        drop(self);
    }
}

/// Also when the serving future is dropped or unwinds: the workers live in the context of
/// the runtime that started them, so they must be gone before it is.
impl Drop for Workers {
    fn drop(&mut self) {
        for remote in &self.remotes {
            remote.stop();
        }
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// One worker per CPU unless configured.
pub fn default_count(configured: usize) -> usize {
    if configured > 0 {
        return configured;
    }
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
