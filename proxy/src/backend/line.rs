//! The clients of one key pool waiting for a connection, first come first served, with one
//! bounded exception: a connection given back goes to the first client in line on its own
//! worker thread. Handing it to a client on another thread costs a cross-thread wake-up and
//! moving the socket to that thread's reactor (two `epoll_ctl`), about as much as the
//! statement itself. A client is passed over that way at most [`MAY_PASS`] times: nobody
//! waits more than that many hand-overs longer than strict order would make them.

use std::collections::VecDeque;
use std::time::Instant;

use tokio::sync::oneshot;

/// How often a waiting client may be passed over for one on the connection's worker.
const MAY_PASS: u8 = 8;

/// A client in line, handed a `T` when its turn comes.
pub struct Waiter<T> {
    pub id: u64,
    pub since: Instant,
    /// The worker thread its session runs on.
    pub worker: usize,
    /// Times a client behind it was served first.
    passed: u8,
    tx: oneshot::Sender<T>,
}

impl<T> Waiter<T> {
    pub fn new(id: u64, worker: usize, tx: oneshot::Sender<T>) -> Waiter<T> {
        Waiter {
            id,
            since: Instant::now(),
            worker,
            passed: 0,
            tx,
        }
    }
}

/// Waiters in order of arrival; ids grow with it.
pub struct Line<T>(VecDeque<Waiter<T>>);

impl<T> Default for Line<T> {
    fn default() -> Self {
        Line(VecDeque::new())
    }
}

impl<T> Line<T> {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The one waiting longest.
    pub fn first(&self) -> Option<&Waiter<T>> {
        self.0.front()
    }

    /// Joins at the end; `waiter.id` must be above every id in line.
    pub fn join(&mut self, waiter: Waiter<T>) {
        debug_assert!(self.0.back().is_none_or(|last| last.id < waiter.id));
        self.0.push_back(waiter);
    }

    /// Takes waiter `id` out; false if it was not there any more (handed something).
    pub fn leave(&mut self, id: u64) -> bool {
        match self.0.binary_search_by_key(&id, |w| w.id) {
            Ok(at) => {
                self.0.remove(at);
                true
            }
            Err(_) => false,
        }
    }

    /// Hands `item` to a waiter still there: the first, or, for a connection on worker
    /// `on` (`Some`), the one [`turn`] picks. Gives it back if nobody waits.
    pub fn hand_over(&mut self, mut item: T, on: Option<usize>) -> Option<T> {
        loop {
            let at = match on {
                Some(worker) => turn(self.0.iter().map(|w| (w.worker, w.passed)), worker),
                None => 0,
            };
            let Some(waiter) = self.0.remove(at) else {
                return Some(item);
            };
            match waiter.tx.send(item) {
                Ok(()) => {
                    for passed in self.0.range_mut(..at) {
                        passed.passed += 1;
                    }
                    return None;
                }
                // Its client went away meanwhile.
                Err(back) => item = back,
            }
        }
    }
}

/// Where in line (given as each waiter's worker and times passed over) the waiter stands
/// that a connection on `worker` goes to: the first on that worker, unless that would pass
/// over someone passed over [`MAY_PASS`] times already; then the first.
fn turn(line: impl Iterator<Item = (usize, u8)>, worker: usize) -> usize {
    for (at, (theirs, passed)) in line.enumerate() {
        if theirs == worker {
            return at;
        }
        if passed >= MAY_PASS {
            return 0;
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_goes_to_its_own_thread_unless_someone_has_waited_their_turns() {
        // (each waiter's worker and times passed over, the connection's worker, the turn)
        type Case = (&'static [(usize, u8)], usize, usize);
        let cases: &[Case] = &[
            (&[], 0, 0),
            (&[(0, 0)], 0, 0),
            (&[(1, 0)], 0, 0),
            (&[(1, 0), (0, 0)], 0, 1),
            (&[(1, MAY_PASS - 1), (1, MAY_PASS - 1), (0, 0)], 0, 2),
            (&[(1, MAY_PASS), (0, 0)], 0, 0),
            (&[(1, 0), (1, MAY_PASS), (0, 0)], 0, 0),
            (&[(1, 0), (1, 0)], 0, 0),
            (&[(0, 0), (1, 0)], 1, 1),
        ];
        for &(line, worker, want) in cases {
            assert_eq!(
                turn(line.iter().copied(), worker),
                want,
                "{line:?} on {worker}"
            );
        }
    }

    fn line_of(workers: &[usize]) -> (Line<u32>, Vec<oneshot::Receiver<u32>>) {
        let mut line = Line::default();
        let mut receivers = Vec::new();
        for (id, &worker) in workers.iter().enumerate() {
            let (tx, rx) = oneshot::channel();
            line.join(Waiter::new(id as u64, worker, tx));
            receivers.push(rx);
        }
        (line, receivers)
    }

    #[test]
    fn nobody_is_passed_over_more_than_may_pass_times() {
        let passes = usize::from(MAY_PASS);
        let mut workers = vec![1];
        workers.extend(std::iter::repeat_n(0, passes + 2));
        let (mut line, mut receivers) = line_of(&workers);
        for item in 0..=passes as u32 {
            assert!(line.hand_over(item, Some(0)).is_none());
        }
        let got: Vec<_> = receivers.iter_mut().map(|rx| rx.try_recv().ok()).collect();
        let mut want = vec![Some(passes as u32)];
        want.extend((0..passes as u32).map(Some));
        want.extend([None, None]);
        assert_eq!(
            got, want,
            "the worker-1 client served after {passes} passes"
        );
        assert_eq!(line.hand_over(90, None), None);
        assert_eq!(line.hand_over(91, Some(1)), None);
        let last: Vec<_> = receivers[passes + 1..]
            .iter_mut()
            .map(|rx| rx.try_recv().ok())
            .collect();
        assert_eq!(
            last,
            [Some(90), Some(91)],
            "first come, first served otherwise"
        );
        assert_eq!(line.hand_over(92, Some(0)), Some(92), "nobody left");
    }

    #[test]
    fn a_waiter_that_left_is_skipped_and_leaving_twice_is_noticed() {
        let (mut line, mut receivers) = line_of(&[0, 0, 0]);
        drop(receivers.remove(0));
        assert!(line.leave(1));
        assert!(!line.leave(1));
        assert!(line.hand_over(5, Some(0)).is_none());
        assert_eq!(receivers[1].try_recv(), Ok(5));
        assert!(line.is_empty());
    }
}
