//! A byte relay that understands nothing: each client connection gets its own connection to
//! the backend, and bytes are copied both ways as they come. It is the floor of what a proxy
//! built on an event loop costs per query, for `bench/pgbench.sh` (`RELAYS=1`) to set against
//! the proxy and PgBouncer under callgrind: on tokio's current-thread runtime (I/O driver only,
//! as the proxy's workers run) or on a bare mio loop.
//!
//! `barerelay tokio|mio LISTEN_ADDR BACKEND_ADDR` relays until it is killed; a connection
//! pair ends when either side closes or fails. Exits with 2 on bad arguments.

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

/// Two tasks per connection pair, one per direction, on a current-thread runtime with only
/// the I/O driver (as the proxy's workers run). Each task is woken by its own socket only and
/// reads until a read finds nothing: two read polls per direction and query, four per query,
/// as the proxy's sessions make (one task polling both sockets would poll the idle one at
/// every wake-up too).
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
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            tokio::spawn(copy_one_way(client_read, server_write));
            tokio::spawn(copy_one_way(server_read, client_write));
        }
    })
}

/// Copies `from` to `to` until `from` ends or either fails; dropping the write half then
/// shuts its socket down for writing, so the peer's task ends too.
async fn copy_one_way(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0; CHUNK];
    while let Ok(n @ 1..) = from.read(&mut buf).await {
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// One mio loop, edge-triggered: each ready socket drained (see [`drain`]) into its peer.
fn on_mio(listen: SocketAddr, backend: SocketAddr) -> std::io::Result<()> {
    use mio::net::{TcpListener, TcpStream};
    use mio::{Events, Interest, Poll, Token};
    const LISTENER: Token = Token(0);
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(1024);
    let mut listener = TcpListener::bind(listen)?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    // Pair n's client is token 2n, its server 2n + 1; pair n is at pairs[n - 1] until it ends.
    let mut pairs: Vec<Option<[TcpStream; 2]>> = Vec::new();
    let mut buf = vec![0; CHUNK];
    loop {
        match poll.poll(&mut events, None) {
            Ok(()) => {}
            // callgrind_control (through valgrind's gdbserver, by ptrace) interrupts the wait.
            Err(error) if error.kind() == ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        }
        for event in &events {
            if event.token() == LISTENER {
                loop {
                    let mut client = match listener.accept() {
                        Ok((client, _)) => client,
                        Err(error) if error.kind() == ErrorKind::WouldBlock => break,
                        // Edge-triggered: the queue must be emptied, whatever one entry did.
                        Err(error)
                            if matches!(
                                error.kind(),
                                ErrorKind::Interrupted | ErrorKind::ConnectionAborted
                            ) =>
                        {
                            continue
                        }
                        Err(error) => return Err(error),
                    };
                    let server = std::net::TcpStream::connect(backend)?;
                    server.set_nonblocking(true)?;
                    let mut server = TcpStream::from_std(server);
                    client.set_nodelay(true)?;
                    server.set_nodelay(true)?;
                    let registry = poll.registry();
                    let pair = pairs.len() + 1;
                    registry.register(&mut client, Token(2 * pair), Interest::READABLE)?;
                    registry.register(&mut server, Token(2 * pair + 1), Interest::READABLE)?;
                    pairs.push(Some([client, server]));
                }
                continue;
            }
            let (pair, side) = (event.token().0 / 2, event.token().0 % 2);
            let Some(Some([client, server])) = pairs.get_mut(pair - 1) else {
                continue;
            };
            let open = match side {
                0 => drain(client, server, &mut buf),
                _ => drain(server, client, &mut buf),
            };
            if !open {
                pairs[pair - 1] = None;
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
