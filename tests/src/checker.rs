//! A consistency checker for "causal reads" on histories of counter operations.
//!
//! Every write is `UPDATE counters SET v = v + 1 WHERE id = $1 RETURNING v`, so counters only
//! grow and each write knows the exact value it produced; a read that returns less than some
//! bound has missed that write (or that earlier read). [`check`] walks a history recorded by
//! [`crate::checkload`] (or built by hand) and reports each read that broke a [`Rule`].
//!
//! Pure: no I/O, no clock reads; O(n log n) in the length of the history.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

/// One operation on a counter, with its outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// An acknowledged increment of `key` that produced `value`.
    Write { session: u32, key: u32, value: i64 },
    /// A read of `key` that returned `value`, answered by the server whose `cluster_name` is `node`.
    Read {
        session: u32,
        key: u32,
        value: i64,
        node: String,
    },
}

impl Op {
    pub fn session(&self) -> u32 {
        match self {
            Op::Write { session, .. } | Op::Read { session, .. } => *session,
        }
    }

    pub fn key(&self) -> u32 {
        match self {
            Op::Write { key, .. } | Op::Read { key, .. } => *key,
        }
    }

    pub fn value(&self) -> i64 {
        match self {
            Op::Write { value, .. } | Op::Read { value, .. } => *value,
        }
    }

    pub fn is_write(&self) -> bool {
        matches!(self, Op::Write { .. })
    }
}

/// An operation and when the client sent it (`invoked`) and had its answer (`completed`),
/// both from one monotonic clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub op: Op,
    pub invoked: Instant,
    pub completed: Instant,
}

/// The guarantee a history is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Read-your-writes and monotonic reads, within each session: a read of a key returns at
    /// least the session's earlier acknowledged writes and earlier reads of that key.
    Session,
    /// [`Rule::Session`], plus: a read invoked after a write of the key completed (in any
    /// session) returns at least that write's value.
    Global,
    /// The same condition as [`Rule::Global`]; the history may also hold writes made straight
    /// on the primary, which the proxy never saw.
    Linearizable,
}

impl Rule {
    pub const ALL: [Rule; 3] = [Rule::Session, Rule::Global, Rule::Linearizable];

    pub fn name(self) -> &'static str {
        match self {
            Rule::Session => "session",
            Rule::Global => "global",
            Rule::Linearizable => "linearizable",
        }
    }

    /// Whether writes of other sessions bind reads invoked after they completed.
    fn cross_session(self) -> bool {
        !matches!(self, Rule::Session)
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Rule {
    type Err = String;

    fn from_str(s: &str) -> Result<Rule, String> {
        Rule::ALL
            .into_iter()
            .find(|rule| rule.name() == s)
            .ok_or_else(|| format!("unknown rule {s:?}: expected session, global or linearizable"))
    }
}

/// Which part of a rule a read broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Part {
    /// Below an earlier acknowledged write of the same session (read-your-writes).
    OwnWrite,
    /// Below an earlier read of the same session (monotonic reads).
    OwnRead,
    /// Below a write, of any session, that completed before the read was invoked
    /// ([`Rule::Global`] and [`Rule::Linearizable`] only).
    CompletedWrite,
}

impl Part {
    pub fn name(self) -> &'static str {
        match self {
            Part::OwnWrite => "read-your-writes",
            Part::OwnRead => "monotonic-reads",
            Part::CompletedWrite => "completed-write",
        }
    }
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A read that returned less than the rule demands. Each read is reported at most once, with
/// the highest bound it broke (on a tie: own write, then own read, then completed write).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Index of the read in the checked history.
    pub event: usize,
    pub session: u32,
    pub key: u32,
    /// Where the read ran (`cluster_name`).
    pub node: String,
    pub part: Part,
    /// The value the read had to reach, at least.
    pub expected: i64,
    /// The value the read returned.
    pub got: i64,
    /// Index in the history of the write or read that set `expected`.
    pub cause: usize,
    /// The session of that event.
    pub cause_session: u32,
    /// How long before the read was invoked that event completed (zero if it did not).
    pub after: Duration,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cause = if self.part == Part::OwnRead {
            "read"
        } else {
            "write"
        };
        write!(
            f,
            "violation {}: event {} session {} read key {} on {} got {}, expected at least {} \
             ({} event {} of session {}, completed {:.3} ms before the read)",
            self.part,
            self.event,
            self.session,
            self.key,
            self.node,
            self.got,
            self.expected,
            cause,
            self.cause,
            self.cause_session,
            self.after.as_secs_f64() * 1e3,
        )
    }
}

/// A lower bound on a read and the event that set it.
#[derive(Debug, Clone, Copy)]
struct Bound {
    value: i64,
    event: usize,
}

impl Bound {
    fn raise(slot: &mut Option<Bound>, value: i64, event: usize) {
        if slot.is_none_or(|b| value > b.value) {
            *slot = Some(Bound { value, event });
        }
    }
}

/// Writes of one key ordered by completion, each with the highest value completed so far.
struct CompletedWrites {
    /// (completed, prefix maximum of values up to here).
    entries: Vec<(Instant, Bound)>,
}

impl CompletedWrites {
    fn new(mut writes: Vec<(Instant, i64, usize)>) -> CompletedWrites {
        writes.sort_unstable_by_key(|&(completed, _, event)| (completed, event));
        let mut best: Option<Bound> = None;
        let entries = writes
            .into_iter()
            .map(|(completed, value, event)| {
                Bound::raise(&mut best, value, event);
                (completed, best.expect("just raised"))
            })
            .collect();
        CompletedWrites { entries }
    }

    /// The highest value of the writes that completed strictly before `invoked`.
    fn before(&self, invoked: Instant) -> Option<Bound> {
        let n = self
            .entries
            .partition_point(|&(completed, _)| completed < invoked);
        n.checked_sub(1).map(|i| self.entries[i].1)
    }
}

/// What one session has seen of one key so far.
#[derive(Default)]
struct Seen {
    write: Option<Bound>,
    read: Option<Bound>,
}

/// Every read in `history` that breaks `rule`, in the order of the history's indices.
///
/// A session's operations are taken to be sequential and are ordered by `invoked` (then by
/// `completed`, then by index), whatever their order in the slice. A write binds reads of
/// other sessions only once it has completed: a read invoked at or before the write's
/// `completed` overlaps it and may return either value.
pub fn check(history: &[Event], rule: Rule) -> Vec<Violation> {
    let mut sessions: HashMap<u32, Vec<usize>> = HashMap::new();
    let mut writes: HashMap<u32, Vec<(Instant, i64, usize)>> = HashMap::new();
    for (i, event) in history.iter().enumerate() {
        sessions.entry(event.op.session()).or_default().push(i);
        if rule.cross_session() {
            if let Op::Write { key, value, .. } = event.op {
                writes
                    .entry(key)
                    .or_default()
                    .push((event.completed, value, i));
            }
        }
    }
    let completed: HashMap<u32, CompletedWrites> = writes
        .into_iter()
        .map(|(key, writes)| (key, CompletedWrites::new(writes)))
        .collect();

    let mut violations = Vec::new();
    for (_, mut order) in sessions {
        order.sort_unstable_by_key(|&i| (history[i].invoked, history[i].completed, i));
        let mut seen: HashMap<u32, Seen> = HashMap::new();
        for i in order {
            let event = &history[i];
            match &event.op {
                Op::Write { key, value, .. } => {
                    Bound::raise(&mut seen.entry(*key).or_default().write, *value, i);
                }
                Op::Read {
                    session,
                    key,
                    value,
                    node,
                } => {
                    let mine = seen.entry(*key).or_default();
                    let global = completed.get(key).and_then(|w| w.before(event.invoked));
                    // Highest bound wins; on a tie the first in this order.
                    let worst =
                        [
                            (Part::OwnWrite, mine.write),
                            (Part::OwnRead, mine.read),
                            (Part::CompletedWrite, global),
                        ]
                        .into_iter()
                        .filter_map(|(part, bound)| bound.map(|b| (part, b)))
                        .fold(None::<(Part, Bound)>, |best, (part, b)| match best {
                            Some((_, top)) if top.value >= b.value => best,
                            _ => Some((part, b)),
                        });
                    if let Some((part, bound)) = worst {
                        if *value < bound.value {
                            let cause = &history[bound.event];
                            violations.push(Violation {
                                event: i,
                                session: *session,
                                key: *key,
                                node: node.clone(),
                                part,
                                expected: bound.value,
                                got: *value,
                                cause: bound.event,
                                cause_session: cause.op.session(),
                                after: event.invoked.saturating_duration_since(cause.completed),
                            });
                        }
                    }
                    Bound::raise(&mut mine.read, *value, i);
                }
            }
        }
    }
    violations.sort_unstable_by_key(|v| v.event);
    violations
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkload::XorShift;

    /// Builds histories on a fake clock: times are microseconds after `t0`.
    struct History {
        t0: Instant,
        events: Vec<Event>,
    }

    impl History {
        fn new() -> History {
            History {
                t0: Instant::now(),
                events: Vec::new(),
            }
        }

        fn at(&self, us: u64) -> Instant {
            self.t0 + Duration::from_micros(us)
        }

        /// Session `s` wrote `value` to `key` between `from` and `to` µs. Returns the index.
        fn write(&mut self, s: u32, key: u32, value: i64, from: u64, to: u64) -> usize {
            self.push(
                Op::Write {
                    session: s,
                    key,
                    value,
                },
                from,
                to,
            )
        }

        /// Session `s` read `value` from `key` on db02 between `from` and `to` µs.
        fn read(&mut self, s: u32, key: u32, value: i64, from: u64, to: u64) -> usize {
            self.push(
                Op::Read {
                    session: s,
                    key,
                    value,
                    node: "db02".into(),
                },
                from,
                to,
            )
        }

        fn push(&mut self, op: Op, from: u64, to: u64) -> usize {
            assert!(from <= to);
            self.events.push(Event {
                op,
                invoked: self.at(from),
                completed: self.at(to),
            });
            self.events.len() - 1
        }

        fn check(&self, rule: Rule) -> Vec<Violation> {
            check(&self.events, rule)
        }

        /// (event, part, expected, got) of each violation under `rule`.
        fn summary(&self, rule: Rule) -> Vec<(usize, Part, i64, i64)> {
            self.check(rule)
                .iter()
                .map(|v| (v.event, v.part, v.expected, v.got))
                .collect()
        }
    }

    #[test]
    fn a_clean_history_has_no_violations_under_any_rule() {
        let mut h = History::new();
        // Two sessions on keys 1 and 2; reads return the latest completed value or one that
        // overlaps them.
        h.write(0, 1, 1, 0, 10);
        h.read(0, 1, 1, 11, 20);
        h.read(1, 1, 1, 12, 15);
        h.write(1, 1, 2, 16, 30);
        h.read(0, 1, 1, 21, 25); // overlaps write 2 (16..30): the old value is fine
        h.read(0, 1, 2, 26, 28); // overlaps it too: so is the new one
        h.read(1, 1, 2, 31, 35);
        h.write(0, 2, 7, 29, 40);
        h.read(1, 2, 7, 41, 45);
        h.read(0, 2, 7, 41, 50);
        h.read(0, 1, 2, 51, 55);
        for rule in Rule::ALL {
            assert_eq!(h.check(rule), vec![], "{rule}");
        }
    }

    #[test]
    fn an_empty_history_and_reads_without_writes_are_clean() {
        assert!(check(&[], Rule::Global).is_empty());
        let mut h = History::new();
        h.read(0, 1, 5, 0, 1);
        h.read(1, 1, 3, 2, 3); // another session may be behind the first one's read
        h.read(0, 2, 0, 4, 5);
        for rule in Rule::ALL {
            assert_eq!(h.check(rule), vec![], "{rule}");
        }
    }

    #[test]
    fn a_read_below_the_sessions_own_write_breaks_every_rule() {
        let mut h = History::new();
        let w = h.write(0, 1, 5, 0, 10);
        let r = h.read(0, 1, 4, 11, 12);
        h.read(0, 1, 5, 13, 14);
        for rule in Rule::ALL {
            let found = h.check(rule);
            assert_eq!(found.len(), 1, "{rule}: {found:?}");
            let v = &found[0];
            assert_eq!(
                (v.event, v.part, v.expected, v.got, v.cause, v.session, v.key),
                (r, Part::OwnWrite, 5, 4, w, 0, 1),
                "{rule}"
            );
            assert_eq!(v.after, Duration::from_micros(1));
            assert_eq!(v.node, "db02");
        }
    }

    #[test]
    fn a_read_below_the_sessions_own_earlier_read_breaks_every_rule() {
        let mut h = History::new();
        // Another session's write, still in flight during both reads: no global bound.
        h.write(1, 1, 5, 0, 100);
        let first = h.read(0, 1, 5, 10, 20);
        let second = h.read(0, 1, 3, 21, 30);
        let third = h.read(0, 1, 4, 31, 40); // still below the first read
        for rule in Rule::ALL {
            assert_eq!(
                h.summary(rule),
                vec![(second, Part::OwnRead, 5, 3), (third, Part::OwnRead, 5, 4)],
                "{rule}"
            );
            assert!(h.check(rule).iter().all(|v| v.cause == first));
        }
    }

    #[test]
    fn a_read_below_another_sessions_completed_write_breaks_global_rules_only() {
        let mut h = History::new();
        let w = h.write(1, 1, 5, 0, 10);
        let r = h.read(0, 1, 4, 11, 12);
        h.read(0, 2, 0, 13, 14); // another key is not bound by it
        assert_eq!(h.summary(Rule::Session), vec![]);
        for rule in [Rule::Global, Rule::Linearizable] {
            let found = h.check(rule);
            assert_eq!(
                h.summary(rule),
                vec![(r, Part::CompletedWrite, 5, 4)],
                "{rule}"
            );
            assert_eq!((found[0].cause, found[0].cause_session), (w, 1));
        }
    }

    #[test]
    fn a_read_overlapping_a_write_may_miss_it() {
        let mut h = History::new();
        h.write(1, 1, 5, 0, 10);
        h.read(0, 1, 4, 5, 6); // inside the write
        h.read(2, 1, 4, 10, 11); // invoked the instant the write completed
        h.read(3, 1, 4, 9, 20); // overlapping its end
        for rule in Rule::ALL {
            assert_eq!(h.summary(rule), vec![], "{rule}");
        }
        // One nanosecond later the write has completed before the read.
        let late = h.events.len();
        h.events.push(Event {
            op: Op::Read {
                session: 4,
                key: 1,
                value: 4,
                node: "db02".into(),
            },
            invoked: h.at(10) + Duration::from_nanos(1),
            completed: h.at(12),
        });
        assert_eq!(h.summary(Rule::Session), vec![]);
        for rule in [Rule::Global, Rule::Linearizable] {
            assert_eq!(
                h.summary(rule),
                vec![(late, Part::CompletedWrite, 5, 4)],
                "{rule}"
            );
        }
    }

    #[test]
    fn the_highest_bound_is_reported_once_per_read() {
        let mut h = History::new();
        h.write(0, 1, 3, 0, 10);
        h.write(1, 1, 7, 5, 15);
        let r = h.read(0, 1, 2, 20, 21);
        assert_eq!(h.summary(Rule::Session), vec![(r, Part::OwnWrite, 3, 2)]);
        assert_eq!(
            h.summary(Rule::Global),
            vec![(r, Part::CompletedWrite, 7, 2)]
        );
        // Equal bounds: the session's own part is named.
        let mut h = History::new();
        h.write(0, 1, 7, 0, 10);
        h.read(1, 1, 7, 11, 12);
        h.read(0, 1, 7, 13, 14);
        let r = h.read(0, 1, 6, 15, 16);
        assert_eq!(
            h.summary(Rule::Linearizable),
            vec![(r, Part::OwnWrite, 7, 6)]
        );
    }

    #[test]
    fn completed_writes_bind_by_their_maximum_not_by_the_last_to_complete() {
        let mut h = History::new();
        // Value 5 committed first but its answer came last.
        h.write(1, 1, 5, 0, 60);
        h.write(2, 1, 6, 10, 50);
        let a = h.read(0, 1, 5, 55, 56); // after 6 completed
        h.read(3, 1, 6, 61, 62); // after both: 6 is enough
        let b = h.read(4, 1, 5, 61, 62); // after both: 5 is not
        h.read(5, 1, 4, 45, 46); // before either completed
        assert_eq!(h.summary(Rule::Session), vec![]);
        assert_eq!(
            h.summary(Rule::Global),
            vec![
                (a, Part::CompletedWrite, 6, 5),
                (b, Part::CompletedWrite, 6, 5)
            ]
        );
    }

    #[test]
    fn sessions_are_ordered_by_invocation_not_by_position_in_the_history() {
        let mut h = History::new();
        let r = h.read(0, 1, 1, 20, 21);
        h.read(0, 1, 2, 10, 11);
        h.write(0, 1, 2, 0, 5);
        assert_eq!(h.summary(Rule::Session), vec![(r, Part::OwnWrite, 2, 1)]);
        // In invocation order the same values are clean.
        let mut h = History::new();
        h.read(0, 1, 2, 20, 21);
        h.read(0, 1, 1, 10, 11);
        h.write(0, 1, 1, 0, 5);
        assert_eq!(h.summary(Rule::Session), vec![]);
    }

    #[test]
    fn violations_of_each_kind_are_counted_exactly() {
        let mut h = History::new();
        // Session 0 writes key 1 then reads a stale replica: read-your-writes.
        h.write(0, 1, 10, 0, 10);
        let ryw = h.read(0, 1, 9, 11, 12);
        // Session 1 reads key 2 forward then backward: monotonic reads.
        h.write(2, 2, 20, 0, 100);
        h.read(1, 2, 20, 20, 21);
        let mono = h.read(1, 2, 19, 22, 23);
        // Session 3 misses session 0's completed write of key 1: global only.
        let other = h.read(3, 1, 8, 30, 31);
        // Clean reads in between.
        h.read(3, 1, 10, 32, 33);
        h.read(4, 2, 19, 40, 41); // overlaps the write of 20
        assert_eq!(
            h.summary(Rule::Session),
            vec![(ryw, Part::OwnWrite, 10, 9), (mono, Part::OwnRead, 20, 19)]
        );
        for rule in [Rule::Global, Rule::Linearizable] {
            assert_eq!(
                h.summary(rule),
                vec![
                    (ryw, Part::OwnWrite, 10, 9),
                    (mono, Part::OwnRead, 20, 19),
                    (other, Part::CompletedWrite, 10, 8)
                ],
                "{rule}"
            );
        }
    }

    /// A linearizable history: each operation takes effect at a random instant between its
    /// invocation and its completion, on one store.
    fn linearizable_history(sessions: u32, keys: u32, per_session: usize) -> History {
        let mut h = History::new();
        let mut rng = XorShift::new(7);
        // (effect time, index)
        let mut effects = Vec::new();
        for s in 0..sessions {
            let mut now = rng.below(50);
            for _ in 0..per_session {
                let from = now;
                let to = from + 1 + rng.below(200);
                let at = from + rng.below(to - from + 1);
                let key = rng.below(u64::from(keys)) as u32;
                let i = if rng.unit() < 0.2 {
                    h.write(s, key, 0, from, to)
                } else {
                    h.read(s, key, 0, from, to)
                };
                effects.push((at, i));
                now = to + rng.below(30);
            }
        }
        effects.sort_unstable();
        let mut store = vec![0i64; keys as usize];
        for (_, i) in effects {
            match &mut h.events[i].op {
                Op::Write { key, value, .. } => {
                    store[*key as usize] += 1;
                    *value = store[*key as usize];
                }
                Op::Read { key, value, .. } => *value = store[*key as usize],
            }
        }
        h
    }

    #[test]
    fn a_large_linearizable_history_is_clean_and_one_stale_read_is_found() {
        let mut h = linearizable_history(16, 8, 6250);
        assert_eq!(h.events.len(), 100_000);
        for rule in Rule::ALL {
            assert_eq!(h.check(rule), vec![], "{rule}");
        }
        // A new session reading key 3 after everything, below the last write: stale.
        let last = h
            .events
            .iter()
            .filter(|e| e.op.is_write() && e.op.key() == 3)
            .map(|e| e.op.value())
            .max()
            .unwrap();
        let end = h.events.iter().map(|e| e.completed).max().unwrap();
        let r = h.events.len();
        h.events.push(Event {
            op: Op::Read {
                session: 99,
                key: 3,
                value: last - 1,
                node: "db02".into(),
            },
            invoked: end + Duration::from_micros(1),
            completed: end + Duration::from_micros(2),
        });
        assert_eq!(h.summary(Rule::Session), vec![]);
        for rule in [Rule::Global, Rule::Linearizable] {
            assert_eq!(
                h.summary(rule),
                vec![(r, Part::CompletedWrite, last, last - 1)],
                "{rule}"
            );
        }
    }

    #[test]
    fn rules_parse_and_violations_print() {
        for rule in Rule::ALL {
            assert_eq!(rule.to_string().parse::<Rule>(), Ok(rule));
        }
        assert!("causal".parse::<Rule>().is_err());
        let mut h = History::new();
        h.write(0, 1, 5, 0, 10);
        h.read(0, 1, 4, 12, 13);
        let text = h.check(Rule::Session)[0].to_string();
        assert_eq!(
            text,
            "violation read-your-writes: event 1 session 0 read key 1 on db02 got 4, \
             expected at least 5 (write event 0 of session 0, completed 0.002 ms before the read)"
        );
    }
}
