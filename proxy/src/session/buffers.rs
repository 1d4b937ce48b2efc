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

/// Room in `cin` for a read of `chunk` bytes: a kept buffer if it has none, else more of its
/// own.
#[inline]
pub(super) fn room_to_read(cin: &mut BytesMut, chunk: usize) {
    if cin.capacity() == 0 {
        if let Some(kept) = SPARE.with(|spare| spare.borrow_mut().pop()) {
            *cin = kept;
            if cin.capacity() >= chunk / 2 {
                return;
            }
        }
    }
    cin.reserve(chunk);
}

/// Gives an idle session's empty buffers up: `cin` to the worker's stack, `cout` to the
/// allocator if it is large.
#[inline]
pub(super) fn release_idle(cin: &mut BytesMut, cout: &mut BytesMut) {
    debug_assert!(cin.is_empty() && cout.is_empty());
    if cout.capacity() > KEPT_OUT {
        *cout = BytesMut::new();
    }
    if cin.capacity() == 0 {
        return;
    }
    let cin = std::mem::take(cin);
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
        release_idle(&mut idle, &mut out);
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
        release_idle(&mut cin, &mut out);
        assert_eq!(out.capacity(), 0);
        for _ in 0..KEPT + 10 {
            let mut cin = BytesMut::with_capacity(64);
            release_idle(&mut cin, &mut BytesMut::new());
        }
        assert_eq!(SPARE.with(|s| s.borrow().len()), KEPT);
    }

    #[test]
    fn a_kept_buffer_too_small_for_a_chunk_grows() {
        let mut small = BytesMut::with_capacity(100);
        release_idle(&mut small, &mut BytesMut::new());
        let mut reader = BytesMut::new();
        room_to_read(&mut reader, 16 * 1024);
        assert!(reader.capacity() >= 16 * 1024);
    }
}
