//! Bounded property tests of the fuzzing entry points: a seeded generator makes random bytes,
//! valid input and mutations of it; each input must return without panicking, within a time
//! bound, and without its thread holding more memory at any moment than a bound linear in the
//! input's size (measured by a counting allocator).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{classify, frames, startup};
use crate::protocol::frame::typed_message;

/// Counts the bytes each thread holds, and their peak.
struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn note(delta: isize) {
    let _ = LIVE.try_with(|live| {
        let now = live.get() + delta;
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

// SAFETY: every call is passed on to the system allocator unchanged; only counted.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            note(layout.size() as isize);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            note(layout.size() as isize);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        note(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            note(new_size as isize - layout.size() as isize);
        }
        new
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

/// Runs `f` and returns how long it took and the most memory it held beyond what the thread
/// held before.
fn measure(f: impl FnOnce()) -> (Duration, usize) {
    let before = LIVE.with(Cell::get);
    PEAK.with(|peak| peak.set(before));
    let started = Instant::now();
    f();
    let elapsed = started.elapsed();
    let peak = PEAK.with(Cell::get);
    (elapsed, usize::try_from(peak - before).unwrap_or(0))
}

/// Runs `target` on every input and checks its bounds: at most `fixed` bytes plus `per_byte`
/// per input byte, and at most a second of work (far above what any input takes, even in a
/// debug build on a busy machine; a hang or a blow-up is orders of magnitude more).
fn check(
    name: &str,
    target: fn(&[u8]),
    inputs: impl Iterator<Item = Vec<u8>>,
    fixed: usize,
    per_byte: usize,
) {
    let mut worst_time = (Duration::ZERO, 0);
    let mut worst_memory = (0, 0);
    // Warm-up: one-off allocations (runtime, shared classifier) are not the input's.
    target(b"");
    let mut count = 0;
    for input in inputs {
        count += 1;
        let (elapsed, memory) = measure(|| target(&input));
        let bound = fixed + per_byte * input.len();
        assert!(
            memory <= bound,
            "{name}: {memory} bytes held for a {}-byte input (bound {bound}): {:?}",
            input.len(),
            String::from_utf8_lossy(&input[..input.len().min(200)])
        );
        assert!(
            elapsed < Duration::from_secs(1),
            "{name}: {elapsed:?} for a {}-byte input: {:?}",
            input.len(),
            String::from_utf8_lossy(&input[..input.len().min(200)])
        );
        worst_time = worst_time.max((elapsed, input.len()));
        worst_memory = worst_memory.max((memory, input.len()));
    }
    eprintln!(
        "{name}: {count} inputs; slowest {:?} ({} bytes); most memory {} bytes ({} bytes)",
        worst_time.0, worst_time.1, worst_memory.0, worst_memory.1
    );
}

/// A seeded source of inputs: random bytes, and mutations of valid ones.
struct Gen(StdRng);

impl Gen {
    fn new(seed: u64) -> Gen {
        Gen(StdRng::seed_from_u64(seed))
    }

    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let len = self.0.random_range(0..=max);
        (0..len).map(|_| self.0.random()).collect()
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.0.random_range(0..items.len())]
    }

    /// A few random edits: flipped, inserted and removed bytes, repeated ranges, and length
    /// words set to values at the edges.
    fn mutate(&mut self, mut input: Vec<u8>) -> Vec<u8> {
        for _ in 0..self.0.random_range(1..=4) {
            let at = self.0.random_range(0..=input.len());
            match self.0.random_range(0..6) {
                0 if at < input.len() => input[at] ^= 1 << self.0.random_range(0..8),
                1 => input.insert(at, self.0.random()),
                2 if at < input.len() => {
                    let end = self.0.random_range(at..=input.len());
                    input.drain(at..end);
                }
                3 if at < input.len() => {
                    let end = self.0.random_range(at..=input.len().min(at + 64));
                    let copy = input[at..end].to_vec();
                    let times = self.0.random_range(1..=16);
                    for _ in 0..times {
                        input.splice(at..at, copy.iter().copied());
                    }
                }
                4 if at + 4 <= input.len() => {
                    let word: u32 = match self.0.random_range(0..5) {
                        0 => 0,
                        1 => 4,
                        2 => u32::MAX,
                        3 => 0x8000_0000,
                        _ => (input.len() - at) as u32,
                    };
                    input[at..at + 4].copy_from_slice(&word.to_be_bytes());
                }
                _ => input.truncate(at),
            }
        }
        input
    }

    /// SQL made of fragments that steer the classifier into its branches.
    fn sql(&mut self) -> String {
        let mut sql = String::new();
        // Mostly short, sometimes long enough for the classifier's complexity limit.
        let max = if self.0.random_range(0..20) == 0 {
            6000
        } else {
            60
        };
        for _ in 0..self.0.random_range(1..=max) {
            sql.push_str(self.pick(SQL_FRAGMENTS));
            sql.push(' ');
        }
        sql
    }

    fn startup_packets(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        for _ in 0..self.0.random_range(0..=2) {
            let code: u32 = if self.0.random() {
                80_877_103
            } else {
                80_877_104
            };
            packet(&mut out, &code.to_be_bytes());
        }
        if self.0.random_range(0..4) == 0 {
            let mut body = 80_877_102u32.to_be_bytes().to_vec();
            body.extend_from_slice(&self.0.random::<u64>().to_be_bytes());
            packet(&mut out, &body);
        } else {
            let mut body = 196_608u32.to_be_bytes().to_vec();
            for _ in 0..self.0.random_range(0..=6) {
                let key = self.pick(&["user", "database", "options", "application_name", "", "x"]);
                let value = self.pick(&["app", "appdb", "-c a=b", "", "é", "\u{1}"]);
                body.extend_from_slice(key.as_bytes());
                body.push(0);
                body.extend_from_slice(value.as_bytes());
                body.push(0);
            }
            body.push(0);
            packet(&mut out, &body);
        }
        out
    }

    fn messages(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        for _ in 0..self.0.random_range(1..=8) {
            let ty = self.pick(&["Q", "P", "B", "D", "C", "E", "N", "S", "H", "X", "d"]);
            let sql = self.sql();
            let name = self.pick(&["", "s1", "stmt_000042"]);
            let body: Vec<u8> = match ty {
                "Q" => [sql.as_bytes(), b"\0"].concat(),
                "P" => [
                    name.as_bytes(),
                    b"\0",
                    sql.as_bytes(),
                    b"\0\0\x01\0\0\0\x17",
                ]
                .concat(),
                "B" => [b"\0", name.as_bytes(), b"\0\0\0\0\x01\0\0\0\x01x\0\0"].concat(),
                "D" | "C" => [b"S", name.as_bytes(), b"\0"].concat(),
                "E" | "N" => b"SERROR\0VFATAL\0C25006\0Mcannot\0\0".to_vec(),
                _ => self.bytes(16),
            };
            out.extend(typed_message(ty.as_bytes()[0], &body));
        }
        out
    }
}

/// An untyped packet: length word (counting itself), then `body`.
fn packet(out: &mut Vec<u8>, body: &[u8]) {
    out.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    out.extend_from_slice(body);
}

const SQL_FRAGMENTS: &[&str] = &[
    "SELECT",
    "FROM",
    "WHERE",
    "INSERT INTO",
    "VALUES",
    "UPDATE",
    "SET",
    "DELETE",
    "WITH",
    "AS",
    "(",
    ")",
    ",",
    ";",
    "*",
    "1",
    "$1",
    "'x'",
    "E'\\'",
    "U&'\\0041'",
    "$$",
    "$a$",
    "/*",
    "*/",
    "--",
    "\n",
    "\"q\"",
    "t",
    "s.t",
    "pg_stat_activity",
    "pg_locks",
    "nextval(",
    "pg_is_in_recovery()",
    "writer()",
    "my_random()",
    "audit.log_it(",
    "TABLE",
    "UNION",
    "FOR UPDATE",
    "INTO",
    "BEGIN",
    "READ ONLY",
    "COMMIT",
    "AND CHAIN",
    "EXPLAIN",
    "ANALYZE",
    "SHOW",
    "transaction_read_only",
    "CREATE",
    "SEQUENCE",
    "IF NOT EXISTS",
    "TEMP",
    "ALTER",
    "RENAME TO",
    "FUNCTION",
    "OR REPLACE",
    "TABLE",
    "serial",
    "GENERATED",
    "IDENTITY",
    "DROP",
    "/* pgrepl:replica */",
    "/* pgrepl:primary */",
    "SET pgrepl.route",
    "->",
    "::int",
    "[1]",
    "||",
    "+",
    "CASE WHEN",
    "END",
    "LATERAL",
    "JOIN",
    "ON",
    "DEALLOCATE",
    "PREPARE",
    "EXECUTE",
    "LISTEN",
    "COPY",
    "TO",
    "STDOUT",
    "\u{feff}",
    "é",
    "\0",
];

/// Each target's inputs: `n` of random bytes, of valid input and of mutated valid input.
fn inputs(seed: u64, n: usize, valid: fn(&mut Gen) -> Vec<u8>) -> impl Iterator<Item = Vec<u8>> {
    let mut gen = Gen::new(seed);
    (0..n).map(move |i| match i % 3 {
        0 => gen.bytes(512),
        1 => valid(&mut gen),
        _ => {
            let input = valid(&mut gen);
            gen.mutate(input)
        }
    })
}

#[test]
fn startup_never_panics_hangs_or_balloons() {
    let known = [
        vec![0, 0, 0, 8, 4, 210, 22, 47],
        vec![0, 0, 0, 8, 0, 3, 0, 0],
        vec![0, 0, 39, 16, 0, 3, 0, 0],
        vec![0xff; 8],
    ];
    check("startup", startup, known.into_iter(), 64 * 1024, 0);
    // A packet is at most 10000 bytes, whatever the input says.
    check(
        "startup",
        startup,
        inputs(1, 10_000, Gen::startup_packets),
        64 * 1024,
        0,
    );
}

#[test]
fn framing_never_panics_hangs_or_balloons() {
    let huge_length = [b'Q', 0xff, 0xff, 0xff, 0xff, b'S'].to_vec();
    check("frames", frames, std::iter::once(huge_length), 16 * 1024, 0);
    check(
        "frames",
        frames,
        inputs(2, 3000, Gen::messages),
        1 << 20,
        1024,
    );
}

#[test]
fn classifying_never_panics_hangs_or_balloons() {
    check(
        "classify",
        classify,
        inputs(3, 3000, |gen| gen.sql().into_bytes()),
        1 << 20,
        1024,
    );
}
