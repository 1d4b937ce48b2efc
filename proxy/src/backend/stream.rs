//! A server connection's socket: on the worker's loop that uses it, or, opened off the
//! workers (a pool's warm-up), on tokio's until a worker adopts it.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use crate::event_loop::tcp::{LoopRead, LoopTcp, LoopWrite};

pub enum ServerRead {
    Loop(LoopRead),
    Tokio(OwnedReadHalf),
}

pub enum ServerWrite {
    Loop(LoopWrite),
    Tokio(OwnedWriteHalf),
}

/// The halves of `stream`, moved to this thread's loop if it runs one.
pub fn split(stream: TcpStream) -> io::Result<(ServerRead, ServerWrite)> {
    if !LoopTcp::can_register_here() {
        let (rd, wr) = stream.into_split();
        return Ok((ServerRead::Tokio(rd), ServerWrite::Tokio(wr)));
    }
    here(stream.into_std()?)
}

/// The halves of `rd` and `wr`'s socket, registered with this thread's loop (off the loops,
/// with tokio's reactor).
pub fn adopt(rd: ServerRead, wr: ServerWrite) -> io::Result<(ServerRead, ServerWrite)> {
    let socket = match (rd, wr) {
        (ServerRead::Loop(rd), ServerWrite::Loop(wr)) => rd.reunite(wr)?.into_std(),
        (ServerRead::Tokio(rd), ServerWrite::Tokio(wr)) => {
            rd.reunite(wr).map_err(io::Error::other)?.into_std()?
        }
        _ => return Err(io::Error::other("halves of two different sockets")),
    };
    here(socket)
}

fn here(socket: std::net::TcpStream) -> io::Result<(ServerRead, ServerWrite)> {
    if !LoopTcp::can_register_here() {
        let (rd, wr) = TcpStream::from_std(socket)?.into_split();
        return Ok((ServerRead::Tokio(rd), ServerWrite::Tokio(wr)));
    }
    let (rd, wr) = LoopTcp::from_std(socket)?.into_split();
    Ok((ServerRead::Loop(rd), ServerWrite::Loop(wr)))
}

impl ServerRead {
    /// Peeks without waiting, asking the socket (a system call) even when readiness says
    /// nothing came: WouldBlock only when nothing is there.
    pub fn peek_now(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            ServerRead::Loop(rd) => rd.peek_now(buf),
            ServerRead::Tokio(rd) => rd.try_read(buf),
        }
    }

    /// Reads without waiting: WouldBlock when nothing is there, or when the loop has not seen
    /// yet what came.
    pub fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            ServerRead::Loop(rd) => rd.try_read(buf),
            ServerRead::Tokio(rd) => rd.try_read(buf),
        }
    }
}

impl ServerWrite {
    /// Writes without waiting: WouldBlock when the socket is full, or when the loop has not
    /// seen yet that it has room again.
    pub fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        match self {
            ServerWrite::Loop(wr) => wr.try_write(buf),
            ServerWrite::Tokio(wr) => wr.try_write(buf),
        }
    }
}

impl AsyncRead for ServerRead {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServerRead::Loop(rd) => Pin::new(rd).poll_read(cx, buf),
            ServerRead::Tokio(rd) => Pin::new(rd).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ServerWrite {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ServerWrite::Loop(wr) => Pin::new(wr).poll_write(cx, buf),
            ServerWrite::Tokio(wr) => Pin::new(wr).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ServerWrite::Loop(wr) => Pin::new(wr).poll_write_vectored(cx, bufs),
            ServerWrite::Tokio(wr) => Pin::new(wr).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServerWrite::Loop(wr) => Pin::new(wr).poll_flush(cx),
            ServerWrite::Tokio(wr) => Pin::new(wr).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServerWrite::Loop(wr) => Pin::new(wr).poll_shutdown(cx),
            ServerWrite::Tokio(wr) => Pin::new(wr).poll_shutdown(cx),
        }
    }
}
