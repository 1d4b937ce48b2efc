//! A forwarder between a client and a proxy that can stop passing on what the proxy sends:
//! a client that stops reading, as slow consumers of large results do.

use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A TCP forwarder to a proxy whose proxy-to-client direction can be held: while it
/// is, nothing of what the proxy sends is read, so the proxy's writes to the client stop once
/// the sockets' buffers are full.
pub struct Throttle {
    pub addr: SocketAddr,
    release: watch::Sender<bool>,
}

impl Throttle {
    /// Listens on a free port; forwards one connection to `target`, both ways until
    /// [`hold`](Self::hold).
    pub async fn start(target: SocketAddr) -> Throttle {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (release, mut released) = watch::channel(true);
        tokio::spawn(async move {
            let (client, _) = listener.accept().await.unwrap();
            let proxy = TcpStream::connect(target).await.unwrap();
            let (mut client_r, mut client_w) = client.into_split();
            let (mut proxy_r, mut proxy_w) = proxy.into_split();
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut client_r, &mut proxy_w).await;
                let _ = proxy_w.shutdown().await;
            });
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                // Reads from the proxy only while released.
                while !*released.borrow() {
                    if released.changed().await.is_err() {
                        return;
                    }
                }
                let n = match proxy_r.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                if client_w.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        });
        Throttle { addr, release }
    }

    /// Holds (or lets through) what the proxy sends.
    pub fn hold(&self, held: bool) {
        self.release.send_replace(!held);
    }
}
