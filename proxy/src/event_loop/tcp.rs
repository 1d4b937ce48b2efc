//! TCP sockets on a worker's loop, as tokio's `AsyncRead`/`AsyncWrite` (the sessions, TLS and
//! the protocol code are written against those).

use std::io::{self, IoSlice};
use std::mem::ManuallyDrop;
use std::net::{Shutdown, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::reactor::{Direction, Registration};
use super::sys;

/// A connected socket registered with the loop of the thread that made it.
pub struct LoopTcp {
    socket: ManuallyDrop<std::net::TcpStream>,
    registration: ManuallyDrop<Registration>,
}

impl LoopTcp {
    /// Registers `socket` with this thread's loop; an error off the workers.
    pub fn from_std(socket: std::net::TcpStream) -> io::Result<LoopTcp> {
        let reactor = super::reactor_here()
            .ok_or_else(|| io::Error::other("not on a worker's event loop"))?;
        socket.set_nonblocking(true)?;
        let registration = reactor.register(socket.as_raw_fd())?;
        Ok(LoopTcp {
            socket: ManuallyDrop::new(socket),
            registration: ManuallyDrop::new(registration),
        })
    }

    /// True on a worker's thread, where [`LoopTcp::from_std`] can register.
    pub fn can_register_here() -> bool {
        super::reactor_here().is_some()
    }

    /// The socket, out of the loop (to register it elsewhere).
    pub fn into_std(self) -> std::net::TcpStream {
        let mut this = ManuallyDrop::new(self);
        // SAFETY: `this` is never dropped or used again.
        unsafe { this.leave_loop() }
    }

    /// Deregisters the socket and takes it out.
    ///
    /// # Safety
    /// Once only, and `self` is not used after (nor dropped as a `LoopTcp`).
    unsafe fn leave_loop(&mut self) -> std::net::TcpStream {
        // SAFETY: the caller takes each field out once.
        let (socket, registration) = unsafe {
            (
                ManuallyDrop::take(&mut self.socket),
                ManuallyDrop::take(&mut self.registration),
            )
        };
        // Before the socket can close: its number may be reused at once.
        registration.deregister(socket.as_raw_fd());
        socket
    }

    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        self.socket.set_nodelay(on)
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Splits it into halves that each side of a session owns.
    pub fn into_split(self) -> (LoopRead, LoopWrite) {
        let shared = Arc::new(self);
        (LoopRead(shared.clone()), LoopWrite(Some(shared)))
    }

    fn fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }

    /// Runs `attempt` when the socket is ready `way`, until it does not find it not ready.
    /// An attempt that moved less than `len` bytes (but some) found the socket's buffer
    /// emptied (or filled): readiness is cleared without another system call to learn it;
    /// the kernel signals the next data (or room) as a new event. (TCP's exceptions, a read
    /// stopping at an urgent mark and the kernel's 2 GiB cap on one call, do not arise here:
    /// no client's out-of-band byte is ever read, and no buffer is that large.)
    fn poll_io(
        &self,
        way: Direction,
        cx: &mut Context<'_>,
        len: usize,
        mut attempt: impl FnMut(RawFd) -> io::Result<usize>,
    ) -> Poll<io::Result<usize>> {
        let readiness = &self.registration.readiness;
        loop {
            let seen = ready!(readiness.poll_ready(way, cx));
            match self.attempt(way, seen, len, &mut attempt) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                done => return Poll::Ready(done),
            }
        }
    }

    /// One attempt `way` after readiness `seen`, which it updates by what it found.
    fn attempt(
        &self,
        way: Direction,
        seen: u64,
        len: usize,
        attempt: impl FnOnce(RawFd) -> io::Result<usize>,
    ) -> io::Result<usize> {
        let readiness = &self.registration.readiness;
        let done = attempt(self.fd());
        match &done {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => readiness.blocked(way, seen),
            Ok(n) if *n > 0 && *n < len => readiness.clear(way, seen),
            _ => {}
        }
        done
    }

    /// An attempt now if the socket may be ready `way`; WouldBlock without a system call if
    /// it is known not to be (a pooled connection's liveness check, every lease).
    fn try_io(
        &self,
        way: Direction,
        len: usize,
        attempt: impl FnOnce(RawFd) -> io::Result<usize>,
    ) -> io::Result<usize> {
        match self.registration.readiness.ready_now(way) {
            Some(seen) => self.attempt(way, seen, len, attempt),
            None => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn poll_read_into(&self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let len = buf.remaining();
        let n = ready!(self.poll_io(Direction::Read, cx, len, |fd| {
            // SAFETY: recv only writes into the buffer, and `assume_init` below covers
            // exactly what it wrote.
            let unfilled = unsafe { &mut *(buf.unfilled_mut() as *mut _ as *mut [u8]) };
            sys::recv(fd, unfilled)
        }))?;
        // SAFETY: `n` bytes were written by recv.
        unsafe { buf.assume_init(n) };
        buf.advance(n);
        Poll::Ready(Ok(()))
    }

    /// Reads without waiting: WouldBlock when nothing is there, or when the loop has not seen
    /// yet what came.
    pub fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.try_io(Direction::Read, buf.len(), |fd| sys::recv(fd, buf))
    }

    /// Writes without waiting: WouldBlock when the socket is full, or when the loop has not
    /// seen yet that it has room again.
    pub fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        self.try_io(Direction::Write, buf.len(), |fd| sys::send(fd, buf))
    }

    fn poll_write_from(&self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.poll_io(Direction::Write, cx, buf.len(), |fd| sys::send(fd, buf))
    }

    fn poll_write_vectored_from(
        &self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        // What one sendmsg can take; the caller writes the rest again.
        let bufs = &bufs[..bufs.len().min(sys::MAX_SLICES)];
        let len = bufs.iter().map(|b| b.len()).sum();
        self.poll_io(Direction::Write, cx, len, |fd| sys::send_vectored(fd, bufs))
    }

    fn shutdown_write(&self) -> io::Result<()> {
        match self.socket.shutdown(Shutdown::Write) {
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
            other => other,
        }
    }
}

impl Drop for LoopTcp {
    fn drop(&mut self) {
        // SAFETY: drop runs once; neither field is used after.
        drop(unsafe { self.leave_loop() });
    }
}

impl AsyncRead for LoopTcp {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.poll_read_into(cx, buf)
    }
}

impl AsyncWrite for LoopTcp {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_from(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored_from(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.shutdown_write())
    }
}

/// The reading half of a [`LoopTcp`].
pub struct LoopRead(Arc<LoopTcp>);

/// The writing half; dropping it shuts the socket's sending side (as tokio's halves do).
pub struct LoopWrite(Option<Arc<LoopTcp>>);

impl LoopRead {
    /// The socket again, from both its halves; an error if they are not of one socket.
    pub fn reunite(self, mut write: LoopWrite) -> io::Result<LoopTcp> {
        let other = write
            .0
            .take()
            .expect("a write half holds its socket until dropped");
        if !Arc::ptr_eq(&self.0, &other) {
            return Err(io::Error::other("halves of two different sockets"));
        }
        drop(other);
        Arc::try_unwrap(self.0).map_err(|_| io::Error::other("a half is still shared"))
    }

    pub fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buf)
    }

    /// Peeks at the socket itself (a system call), whatever its readiness says; its data
    /// stays to be read.
    pub fn peek_now(&self, buf: &mut [u8]) -> io::Result<usize> {
        sys::peek(self.0.fd(), buf)
    }
}

impl LoopWrite {
    fn socket(&self) -> &LoopTcp {
        self.0
            .as_ref()
            .expect("a write half holds its socket until dropped")
    }

    pub fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        self.socket().try_write(buf)
    }
}

impl Drop for LoopWrite {
    fn drop(&mut self) {
        if let Some(socket) = self.0.take() {
            let _ = socket.shutdown_write();
        }
    }
}

impl AsyncRead for LoopRead {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.0.poll_read_into(cx, buf)
    }
}

impl AsyncWrite for LoopWrite {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.socket().poll_write_from(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.socket().poll_write_vectored_from(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.socket().shutdown_write())
    }
}
