//! The loop's epoll instance, edge-triggered, and the eventfd other threads wake it with.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::sys;

/// What an event says of its socket: data to read, room to write, and the ends (the peer
/// closed its side, or the connection is gone or failed), which last.
pub const DATA: u32 = (libc::EPOLLIN | libc::EPOLLPRI) as u32;
pub const ROOM: u32 = libc::EPOLLOUT as u32;
pub const READ_END: u32 = (libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32;
pub const WRITE_END: u32 = (libc::EPOLLHUP | libc::EPOLLERR) as u32;

/// One epoll instance. Registering and deregistering work from any thread.
pub struct Epoll(OwnedFd);

fn fd_or_error(fd: libc::c_int) -> io::Result<OwnedFd> {
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor this call owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn ok_or_error(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

impl Epoll {
    pub fn new() -> io::Result<Epoll> {
        // SAFETY: no pointers.
        fd_or_error(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) }).map(Epoll)
    }

    /// Watches `fd` both ways, edge-triggered; its events carry `token`.
    pub fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let mut event = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32,
            u64: token,
        };
        // SAFETY: `event` is valid for the call.
        ok_or_error(unsafe {
            libc::epoll_ctl(self.0.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut event)
        })
    }

    /// Stops watching `fd`: waits that start after this no longer report it.
    pub fn delete(&self, fd: RawFd) -> io::Result<()> {
        // SAFETY: DEL takes no event (a null one is allowed since Linux 2.6.9).
        ok_or_error(unsafe {
            libc::epoll_ctl(
                self.0.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                fd,
                std::ptr::null_mut(),
            )
        })
    }

    /// Waits for events into `events` (up to its capacity), forever or `timeout_ms`.
    pub fn wait(&self, events: &mut Vec<libc::epoll_event>, timeout_ms: i32) -> io::Result<()> {
        events.clear();
        let n = sys::epoll_wait(self.0.as_raw_fd(), events.spare_capacity_mut(), timeout_ms)?;
        // SAFETY: the kernel wrote `n` events.
        unsafe { events.set_len(n) };
        Ok(())
    }
}

/// An eventfd registered with a loop's epoll: a write wakes the loop.
pub struct Wakeup(OwnedFd);

impl Wakeup {
    pub fn new() -> io::Result<Wakeup> {
        // SAFETY: no pointers.
        fd_or_error(unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) }).map(Wakeup)
    }

    pub fn fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }

    /// Wakes the loop: each write is a new edge, so the counter is never read, unless it
    /// would overflow.
    pub fn wake(&self) {
        if self.add_one().is_err() {
            self.reset();
            let _ = self.add_one();
        }
    }

    fn add_one(&self) -> io::Result<()> {
        let one = 1u64.to_ne_bytes();
        // SAFETY: eight bytes from a valid buffer.
        let written = unsafe { libc::write(self.fd(), one.as_ptr().cast(), one.len()) };
        ok_or_error(written as libc::c_int)
    }

    fn reset(&self) {
        let mut count = [0u8; 8];
        // SAFETY: eight bytes into a valid buffer; nonblocking.
        let _ = unsafe { libc::read(self.fd(), count.as_mut_ptr().cast(), count.len()) };
    }
}
