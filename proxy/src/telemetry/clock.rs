//! The clocks of the hot path. Statements are timed with CLOCK_MONOTONIC in plain
//! nanoseconds, read twice per statement; `std::time::Instant` adds checked timespec
//! arithmetic around the same call (about 40 instructions per statement more, measured with
//! callgrind). Ages that need no precision take the kernel's coarse clocks ([`Tick`]).

use std::time::{Duration, SystemTime};

/// Nanoseconds since an arbitrary fixed point (boot, on Linux); never goes backwards.
#[inline]
pub fn now_nanos() -> u64 {
    read(libc::CLOCK_MONOTONIC)
}

/// Nanoseconds on `clock`.
#[inline]
fn read(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clocks read here exist on every Linux
    // the proxy builds for, so the call cannot fail.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    (ts.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(ts.tv_nsec as u64)
}

/// A moment on the kernel's coarse monotonic clock: the time of its last tick (1-10 ms
/// behind), read without the hardware counter. For ages that need no precision, checked on
/// every lease and give-back of transaction pooling (a server connection's lifetime and idle
/// time): two precise reads and their checked arithmetic were ~400 of the ~9,700
/// instructions of a transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Tick(u64);

impl Tick {
    #[inline]
    pub fn now() -> Tick {
        Tick(read(libc::CLOCK_MONOTONIC_COARSE))
    }

    /// Time since this tick (zero if it is not past).
    #[inline]
    pub fn elapsed(self) -> Duration {
        Tick::now().since(self)
    }

    /// Time from `earlier` to this tick (zero if `earlier` is not before it).
    #[inline]
    pub fn since(self, earlier: Tick) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }

    /// This tick by the wall clock.
    pub fn wall_time(self) -> SystemTime {
        SystemTime::now() - self.elapsed()
    }
}

/// Microseconds since the epoch by the wall clock as of its last tick (see [`Tick`]): for
/// times the admin console shows, set on every lease and give-back.
#[inline]
pub fn coarse_wall_micros() -> u64 {
    read(libc::CLOCK_REALTIME_COARSE) / 1_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_coarse_clocks_keep_up_with_the_precise_ones() {
        let (tick, wall) = (Tick::now(), coarse_wall_micros());
        std::thread::sleep(std::time::Duration::from_millis(50));
        let aged = tick.elapsed();
        assert!(
            (Duration::from_millis(30)..Duration::from_secs(5)).contains(&aged),
            "{aged:?}"
        );
        let now = SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        let behind = u64::try_from(now.as_micros()).unwrap().saturating_sub(wall);
        assert!((30_000..5_000_000).contains(&behind), "{behind}");
        assert!(tick.wall_time() <= SystemTime::now());
    }

    #[test]
    fn moves_forward_with_time() {
        let before = now_nanos();
        std::thread::sleep(std::time::Duration::from_millis(5));
        let waited = now_nanos() - before;
        assert!((5_000_000..5_000_000_000).contains(&waited), "{waited}");
    }
}
