//! The socket calls of the loop's hot path, made through `syscall(2)`.
//!
//! glibc's `recv`, `send` and `sendmsg` are thread cancellation points: each call switches
//! asynchronous cancellation on and off around the system call, about 60 instructions of
//! the ~90 a call costs in user space (callgrind), four calls per query. Nothing here
//! cancels threads, so the loop's sockets skip that.

use std::io::{self, IoSlice};
use std::os::fd::RawFd;

fn result(returned: libc::c_long) -> io::Result<usize> {
    if returned < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(returned as usize)
    }
}

/// `recv(fd, buf, 0)`.
pub fn recv(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    recv_with(fd, buf, 0)
}

/// `recv(fd, buf, MSG_PEEK | MSG_DONTWAIT)`: what is there, left there.
pub fn peek(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    recv_with(fd, buf, libc::MSG_PEEK | libc::MSG_DONTWAIT)
}

fn recv_with(fd: RawFd, buf: &mut [u8], flags: libc::c_int) -> io::Result<usize> {
    // SAFETY: the buffer is valid for writes of its length; no address is asked for.
    result(unsafe {
        libc::syscall(
            libc::SYS_recvfrom,
            fd,
            buf.as_mut_ptr(),
            buf.len(),
            flags,
            std::ptr::null_mut::<libc::sockaddr>(),
            std::ptr::null_mut::<libc::socklen_t>(),
        )
    })
}

/// `send(fd, buf, MSG_NOSIGNAL)`: a closed peer is an error, not a SIGPIPE.
pub fn send(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: the buffer is valid for reads of its length; no address is given.
    result(unsafe {
        libc::syscall(
            libc::SYS_sendto,
            fd,
            buf.as_ptr(),
            buf.len(),
            libc::MSG_NOSIGNAL,
            std::ptr::null::<libc::sockaddr>(),
            0 as libc::socklen_t,
        )
    })
}

/// The most slices one `sendmsg` takes.
pub const MAX_SLICES: usize = libc::UIO_MAXIOV as usize;

/// `sendmsg` of `bufs` (at most [`MAX_SLICES`]) with MSG_NOSIGNAL.
pub fn send_vectored(fd: RawFd, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
    // SAFETY: an all-zero msghdr is valid (no address, no control data).
    let mut message: libc::msghdr = unsafe { std::mem::zeroed() };
    // IoSlice is ABI-compatible with iovec on Unix.
    message.msg_iov = bufs.as_ptr() as *mut libc::iovec;
    message.msg_iovlen = bufs.len().min(MAX_SLICES) as _;
    // SAFETY: `message` points at `bufs`, valid for reads while the call runs.
    result(unsafe {
        libc::syscall(
            libc::SYS_sendmsg,
            fd,
            &message as *const libc::msghdr,
            libc::MSG_NOSIGNAL,
        )
    })
}

/// `epoll_pwait` without a signal mask (`epoll_wait` is not on every architecture) into
/// `events`; the number written. Interrupted is an error the caller retries.
pub fn epoll_wait(
    epoll: RawFd,
    events: &mut [std::mem::MaybeUninit<libc::epoll_event>],
    timeout_ms: i32,
) -> io::Result<usize> {
    let capacity = libc::c_int::try_from(events.len()).unwrap_or(libc::c_int::MAX);
    // SAFETY: the kernel writes at most `capacity` events into the buffer.
    result(unsafe {
        libc::syscall(
            libc::SYS_epoll_pwait,
            epoll,
            events.as_mut_ptr(),
            capacity,
            timeout_ms,
            std::ptr::null::<libc::sigset_t>(),
            8usize,
        )
    })
}
