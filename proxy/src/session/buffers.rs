//! The client buffers of a session that waits on an idle client go back to its worker, so that
//! thousands of idle clients hold none: the read buffer to a short per-thread stack the next
//! reading session of the worker takes it from (no allocation either way), a large write
//! buffer (a big result's) to the allocator. A small write buffer stays: answers to small
//! queries then need no allocation.

use std::cell::RefCell;

use bytes::BytesMut;

/// Read buffers kept per worker thread; more are freed.
const KEPT: usize = 64;
/// Write buffers up to this stay with an idle session.
const KEPT_OUT: usize = 1024;

thread_local! {
    static SPARE: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
}

/// Room in `cin` for a read of `chunk` bytes: a kept buffer (room for half a chunk at
/// least) if it has none, else more of its own. Out of line, like `release_idle`: the
/// session's hot loop stays as the compiler laid it out before.
#[inline(never)]
pub(super) fn room_to_read(cin: &mut BytesMut, chunk: usize) {
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
    if cout.capacity() > KEPT_OUT {
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
        let mut reader = BytesMut::new();
        room_to_read(&mut reader, 16 * 1024);
        assert_eq!(reader.as_ptr(), kept_at, "the kept buffer, not a new one");
        assert!(reader.capacity() >= 16 * 1024);
        // None kept: a new one.
        let mut another = BytesMut::new();
        room_to_read(&mut another, 16 * 1024);
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
