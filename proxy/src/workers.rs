//! Event-loop threads. Each runs a current-thread tokio runtime; a session lives on the worker
//! it was handed to, so the wake-ups of a query never cross threads and the scheduler does no
//! work-stealing bookkeeping on the hot path. Their runtimes have no time driver (see
//! [`crate::timers`]): their timers live on the runtime that starts them.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;

use tokio::runtime::{Builder, Handle};
use tokio::sync::oneshot;

/// sqlparser recurses on nested SQL; give it room beyond the 2 MiB default.
const STACK_SIZE: usize = 8 << 20;

pub struct Workers {
    handles: Vec<Handle>,
    stops: Vec<oneshot::Sender<()>>,
    threads: Vec<JoinHandle<()>>,
    next: AtomicUsize,
}

impl Workers {
    /// Starts `count` workers (at least one), their timers hosted by the current runtime.
    pub fn start(count: usize) -> io::Result<Workers> {
        let timers = Handle::current();
        let mut workers = Workers {
            handles: Vec::new(),
            stops: Vec::new(),
            threads: Vec::new(),
            next: AtomicUsize::new(0),
        };
        for i in 0..count.max(1) {
            let runtime = Builder::new_current_thread().enable_io().build()?;
            let timers = timers.clone();
            let (stop, stopped) = oneshot::channel::<()>();
            workers.handles.push(runtime.handle().clone());
            workers.stops.push(stop);
            let thread = std::thread::Builder::new()
                .name(format!("pgrepl-worker-{i}"))
                .stack_size(STACK_SIZE)
                .spawn(move || {
                    crate::timers::host_on(timers);
                    let _ = runtime.block_on(stopped);
                })?;
            workers.threads.push(thread);
        }
        Ok(workers)
    }

    /// The runtime for the next session, round robin, with its index (0..count).
    pub fn next(&self) -> (usize, &Handle) {
        let n = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        (n, &self.handles[n])
    }

    /// Stops the runtimes (dropping whatever still runs on them) and joins the threads.
    pub fn stop(self) {
        drop(self);
    }
}

/// Also when the serving future is dropped or unwinds: the workers' timers live on the
/// runtime that started them, so the workers must be gone before it is.
impl Drop for Workers {
    fn drop(&mut self) {
        for stop in self.stops.drain(..) {
            let _ = stop.send(());
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
