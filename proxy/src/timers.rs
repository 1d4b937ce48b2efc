//! Timers that work on the workers, whose runtimes have no time driver.
//!
//! A time driver costs every park of its runtime whether or not a timer is set: the wheel's
//! next expiry, a clock read and the wheel's poll, about 900 instructions per query (two
//! parks) of the ~9,300 a query costs a session in all (callgrind). Sessions rarely hold a
//! timer, so a worker registers the few it needs with the runtime that accepts the clients
//! (whose driver wakes the worker when one fires), and its own parks skip the wheel.
//!
//! Everything in this crate takes its timers from here (clippy refuses tokio's own
//! constructors); off the workers they are tokio's, on the current runtime.

use std::cell::RefCell;
use std::future::{Future, IntoFuture};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::task::JoinHandle;
use tokio::time::{Instant, Interval, Sleep, Timeout};

thread_local! {
    /// On a worker's thread: the runtime its timers live on.
    static TIMER_RUNTIME: RefCell<Option<Handle>> = const { RefCell::new(None) };
}

/// Makes `runtime` the home of the timers created on this thread (a worker's, at its start).
pub fn host_on(runtime: Handle) {
    TIMER_RUNTIME.with(|home| *home.borrow_mut() = Some(runtime));
}

/// `make` run where this thread's timers live.
#[allow(clippy::disallowed_methods)]
fn at_home<T>(make: impl FnOnce() -> T) -> T {
    TIMER_RUNTIME.with(|home| match &*home.borrow() {
        Some(runtime) => {
            let _entered = runtime.enter();
            make()
        }
        None => make(),
    })
}

#[allow(clippy::disallowed_methods)]
pub fn sleep(duration: Duration) -> Sleep {
    at_home(|| tokio::time::sleep(duration))
}

#[allow(clippy::disallowed_methods)]
pub fn sleep_until(deadline: Instant) -> Sleep {
    at_home(|| tokio::time::sleep_until(deadline))
}

#[allow(clippy::disallowed_methods)]
pub fn timeout<F: IntoFuture>(duration: Duration, future: F) -> Timeout<F::IntoFuture> {
    at_home(|| tokio::time::timeout(duration, future))
}

#[allow(clippy::disallowed_methods)]
pub fn timeout_at<F: IntoFuture>(deadline: Instant, future: F) -> Timeout<F::IntoFuture> {
    at_home(|| tokio::time::timeout_at(deadline, future))
}

#[allow(clippy::disallowed_methods)]
pub fn interval(period: Duration) -> Interval {
    at_home(|| tokio::time::interval(period))
}

/// Spawns `task` where this thread's timers live: for work whose libraries set tokio timers
/// of their own (tokio-postgres's connect timeout), which a worker could not host.
#[allow(clippy::disallowed_methods)]
pub fn spawn_with_timers<F>(task: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    at_home(|| tokio::spawn(task))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A runtime without a time driver, as the workers are.
    fn worker() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .unwrap()
    }

    #[test]
    fn a_worker_sleeps_and_times_out_on_its_home_runtime() {
        let home = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let handle = home.handle().clone();
        let outcome = std::thread::spawn(move || {
            host_on(handle);
            worker().block_on(async {
                let started = Instant::now();
                sleep(Duration::from_millis(20)).await;
                let slept = started.elapsed();
                let timed_out = timeout(Duration::from_millis(10), std::future::pending::<()>())
                    .await
                    .is_err();
                let mut tick = interval(Duration::from_millis(5));
                tick.tick().await;
                tick.tick().await;
                let spawned = spawn_with_timers(async {
                    timeout_at(
                        Instant::now() + Duration::from_millis(5),
                        sleep_until(Instant::now() + Duration::from_secs(60)),
                    )
                    .await
                    .is_err()
                })
                .await
                .unwrap();
                (slept, timed_out, spawned)
            })
        })
        .join()
        .unwrap();
        assert!(outcome.0 >= Duration::from_millis(20), "{outcome:?}");
        assert!(outcome.1 && outcome.2, "{outcome:?}");
    }

    #[test]
    #[should_panic(expected = "timers are disabled")]
    fn tokio_timers_on_a_worker_without_a_home_panic() {
        // Why everything takes its timers from here.
        worker().block_on(async { sleep(Duration::from_millis(1)).await });
    }
}
