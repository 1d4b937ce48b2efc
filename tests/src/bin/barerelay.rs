//! A byte relay that understands nothing: each client connection gets its own connection to
//! the backend, and bytes are copied both ways as they come. It is the floor of what a proxy
//! built on an event loop costs per query, for `bench/pgbench.sh` (`RELAYS=1`) to set against
//! the proxy and PgBouncer under callgrind: on tokio's current-thread runtime (I/O driver only,
//! as the proxy's workers run) or on a bare mio loop.
//!
//! `barerelay tokio|mio LISTEN_ADDR BACKEND_ADDR` relays until it is killed; a connection
//! pair ends when either side closes or fails. Exits with 2 on bad arguments.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::process::ExitCode;

const USAGE: &str = "usage: barerelay tokio|mio LISTEN_ADDR BACKEND_ADDR";
/// Read buffer per direction (the proxy's read chunk).
const CHUNK: usize = 16 * 1024;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let parsed = match args.as_slice() {
        [runtime, listen, backend] => listen
            .parse::<SocketAddr>()
            .ok()
            .zip(backend.parse::<SocketAddr>().ok())
            .map(|(listen, backend)| (runtime.as_str(), listen, backend)),
        _ => None,
    };
    let result = match parsed {
        Some(("tokio", listen, backend)) => on_tokio(listen, backend),
        Some(("mio", listen, backend)) => on_mio(listen, backend),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("barerelay: {error}");
            ExitCode::FAILURE
        }
    }
}

/// One task per connection pair on a current-thread runtime with only the I/O driver, both
/// sockets' reads polled by hand in one future (as the proxy's sessions do).
fn on_tokio(listen: SocketAddr, backend: SocketAddr) -> std::io::Result<()> {
    use tokio::net::{TcpListener, TcpStream};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(listen).await?;
        loop {
            let (client, _) = listener.accept().await?;
            let server = TcpStream::connect(backend).await?;
            client.set_nodelay(true)?;
            server.set_nodelay(true)?;
            tokio::spawn(relay_pair(client, server));
        }
    })
}

/// Copies both ways until either side ends.
async fn relay_pair(mut client: tokio::net::TcpStream, mut server: tokio::net::TcpStream) {
    let mut up = vec![0; CHUNK];
    let mut down = vec![0; CHUNK];
    std::future::poll_fn(|cx| loop {
        let up_moved = match poll_copy(cx, &mut client, &mut server, &mut up) {
            std::task::Poll::Ready(false) => return std::task::Poll::Ready(()),
            polled => polled.is_ready(),
        };
        let down_moved = match poll_copy(cx, &mut server, &mut client, &mut down) {
            std::task::Poll::Ready(false) => return std::task::Poll::Ready(()),
            polled => polled.is_ready(),
        };
        if !up_moved && !down_moved {
            return std::task::Poll::Pending;
        }
    })
    .await
}

/// One read from `from`, written whole to `to`: Ready(true) when bytes moved, Ready(false)
/// when the pair is over, Pending when `from` has nothing.
fn poll_copy(
    cx: &mut std::task::Context<'_>,
    from: &mut tokio::net::TcpStream,
    to: &mut tokio::net::TcpStream,
    buf: &mut [u8],
) -> std::task::Poll<bool> {
    use std::pin::Pin;
    use std::task::Poll;
    use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
    let mut read = ReadBuf::new(buf);
    match Pin::new(&mut *from).poll_read(cx, &mut read) {
        Poll::Pending => return Poll::Pending,
        Poll::Ready(Err(_)) => return Poll::Ready(false),
        Poll::Ready(Ok(())) if read.filled().is_empty() => return Poll::Ready(false),
        Poll::Ready(Ok(())) => {}
    }
    let mut bytes = read.filled();
    while !bytes.is_empty() {
        // Small answers: the socket takes them at once; a full one ends the pair (this
        // relay is for measuring, not for results larger than the socket's buffer).
        match Pin::new(&mut *to).poll_write(cx, bytes) {
            Poll::Ready(Ok(n)) if n > 0 => bytes = &bytes[n..],
            _ => return Poll::Ready(false),
        }
    }
    Poll::Ready(true)
}

/// One mio loop, edge-triggered: each ready socket is read until it has nothing, each read
/// written whole to its peer.
fn on_mio(listen: SocketAddr, backend: SocketAddr) -> std::io::Result<()> {
    use mio::net::{TcpListener, TcpStream};
    use mio::{Events, Interest, Poll, Token};
    const LISTENER: Token = Token(0);
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(1024);
    let mut listener = TcpListener::bind(listen)?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    // Pair n's client is token 2n, its server 2n + 1.
    let mut pairs: HashMap<usize, [TcpStream; 2]> = HashMap::new();
    let mut next_pair = 1;
    let mut buf = vec![0; CHUNK];
    loop {
        match poll.poll(&mut events, None) {
            Ok(()) => {}
            // callgrind_control's signals interrupt the wait.
            Err(error) if error.kind() == ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        }
        for event in &events {
            if event.token() == LISTENER {
                while let Ok((mut client, _)) = listener.accept() {
                    let server = std::net::TcpStream::connect(backend)?;
                    server.set_nonblocking(true)?;
                    let mut server = TcpStream::from_std(server);
                    client.set_nodelay(true)?;
                    server.set_nodelay(true)?;
                    let registry = poll.registry();
                    registry.register(&mut client, Token(2 * next_pair), Interest::READABLE)?;
                    registry.register(&mut server, Token(2 * next_pair + 1), Interest::READABLE)?;
                    pairs.insert(next_pair, [client, server]);
                    next_pair += 1;
                }
                continue;
            }
            let (pair, side) = (event.token().0 / 2, event.token().0 % 2);
            let Some([client, server]) = pairs.get_mut(&pair) else {
                continue;
            };
            let open = match side {
                0 => drain(client, server, &mut buf),
                _ => drain(server, client, &mut buf),
            };
            if !open {
                pairs.remove(&pair);
            }
        }
    }
}

/// Reads `from` until a read comes back short (the socket is drained then: a later arrival
/// is a new edge), each read written whole to `to`; false when the pair is over.
fn drain(from: &mut mio::net::TcpStream, to: &mut mio::net::TcpStream, buf: &mut [u8]) -> bool {
    loop {
        match from.read(buf) {
            Ok(0) => return false,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    return false;
                }
                if n < buf.len() {
                    return true;
                }
            }
            Err(error) if error.kind() == ErrorKind::WouldBlock => return true,
            Err(error) if error.kind() == ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}
