//! The client buffers of a session that waits on an idle client go back to its worker, so that
//! thousands of idle clients hold none: the read buffer to a short per-thread stack the next
//! reading session of the worker takes it from (no allocation either way), a large write
//! buffer (a big result's) to the allocator. A small write buffer (`OUT_CHUNK`) stays: answers
//! to small queries then need no allocation, nor the buffer's space reclaimed at every answer
//! (as a buffer just the size of one answer would).

use std::cell::RefCell;

use bytes::BytesMut;

/// Read buffers kept per worker thread; more are freed.
const KEPT: usize = 64;
/// The write buffer a session that has talked starts with, and keeps while idle.
const OUT_CHUNK: usize = 2048;

thread_local! {
    static SPARE: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
}

/// Whether a session that has talked needs [`room`] before it reads: less than half a `chunk`
/// free in `cin`, or no write buffer.
#[inline(always)]
pub(super) fn wants_room(cin: &BytesMut, cout: &BytesMut, chunk: usize) -> bool {
    cin.capacity() - cin.len() < chunk / 2 || cout.capacity() == 0
}

/// Room in `cin` for a read of `chunk` bytes (a kept buffer if it has none, else more of its
/// own), and a write buffer. Out of line, like `release_idle`: the session's hot loop stays as
/// the compiler laid it out before.
#[inline(never)]
pub(super) fn room(cin: &mut BytesMut, cout: &mut BytesMut, chunk: usize) {
    if cout.capacity() == 0 {
        cout.reserve(OUT_CHUNK);
    }
    if cin.capacity() - cin.len() >= chunk / 2 {
        return;
    }
    if cin.capacity() == 0 {
        if let Some(kept) = SPARE.with(|spare| spare.borrow_mut().pop()) {
            *cin = kept;
            return;
        }
    }
    cin.reserve(chunk);
}

/// Gives an idle session's empty buffers up: `cin` to the worker's stack if it has room for
/// a read of half a `chunk` (a smaller one is no use to the next reader: it is freed),
/// `cout` to the allocator if it is large.
#[inline(never)]
pub(super) fn release_idle(cin: &mut BytesMut, cout: &mut BytesMut, chunk: usize) {
    debug_assert!(cin.is_empty() && cout.is_empty());
    if cout.capacity() > OUT_CHUNK {
        *cout = BytesMut::new();
    }
    if cin.capacity() == 0 {
        return;
    }
    let cin = std::mem::take(cin);
    if cin.capacity() < chunk / 2 {
        return;
    }
    SPARE.with(|spare| {
        let mut spare = spare.borrow_mut();
        if spare.len() < KEPT {
            spare.push(cin);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_session_s_read_buffer_serves_the_next_reader() {
        let mut idle = BytesMut::with_capacity(16 * 1024);
        let mut out = BytesMut::with_capacity(512);
        let kept_at = idle.as_ptr();
        release_idle(&mut idle, &mut out, 16 * 1024);
        assert_eq!(idle.capacity(), 0, "the idle session holds no read buffer");
        assert_eq!(out.capacity(), 512, "a small write buffer stays");
        let (mut reader, mut out) = (BytesMut::new(), BytesMut::new());
        assert!(wants_room(&reader, &out, 16 * 1024));
        room(&mut reader, &mut out, 16 * 1024);
        assert_eq!(reader.as_ptr(), kept_at, "the kept buffer, not a new one");
        assert!(reader.capacity() >= 16 * 1024);
        assert_eq!(out.capacity(), OUT_CHUNK);
        assert!(!wants_room(&reader, &out, 16 * 1024));
        // None kept: a new one.
        let mut another = BytesMut::new();
        room(&mut another, &mut out, 16 * 1024);
        assert!(another.capacity() >= 16 * 1024);
    }

    #[test]
    fn a_large_write_buffer_is_freed_and_the_stack_is_bounded() {
        let mut out = BytesMut::with_capacity(1 << 20);
        let mut cin = BytesMut::new();
        release_idle(&mut cin, &mut out, 16 * 1024);
        assert_eq!(out.capacity(), 0);
        for _ in 0..KEPT + 10 {
            let mut cin = BytesMut::with_capacity(16 * 1024);
            release_idle(&mut cin, &mut BytesMut::new(), 16 * 1024);
        }
        assert_eq!(SPARE.with(|s| s.borrow().len()), KEPT);
    }

    #[test]
    fn a_buffer_with_little_room_left_is_not_kept() {
        let mut small = BytesMut::with_capacity(100);
        release_idle(&mut small, &mut BytesMut::new(), 16 * 1024);
        assert_eq!(small.capacity(), 0);
        assert_eq!(SPARE.with(|s| s.borrow().len()), 0);
    }
}
