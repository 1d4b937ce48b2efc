//! Writing out what a session has for a socket (its client's or a server's), as far as the
//! socket takes it now: one place for both directions of the hot path.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::AsyncWrite;

/// Writes `out` to `w` until it is empty or `w` would block (its waker is then registered);
/// the bytes written. A write that takes nothing is an error, as `write_all` has it.
#[inline(always)]
pub(super) fn write_out<W: AsyncWrite + Unpin>(
    cx: &mut Context<'_>,
    w: &mut W,
    out: &mut BytesMut,
) -> io::Result<usize> {
    let mut written = 0;
    while !out.is_empty() {
        match Pin::new(&mut *w).poll_write(cx, out) {
            Poll::Ready(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
            Poll::Ready(Ok(n)) => {
                out.advance(n);
                written += n;
            }
            Poll::Ready(Err(e)) => return Err(e),
            Poll::Pending => break,
        }
    }
    Ok(written)
}
