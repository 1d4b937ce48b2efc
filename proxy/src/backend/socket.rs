//! How the proxy's server sockets notice a silent network cut. Without this a statement sent
//! to a server that a partition hides waits until the kernel gives up retransmitting (about 15
//! minutes on Linux), and a session waiting for a long result waits forever. With it the
//! connection fails within a bound, the session gets an error, and nothing is reused.

use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

/// The kernel settings for one server socket, from `[proxy] server_tcp_user_timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CutDetection {
    /// TCP_USER_TIMEOUT, in milliseconds: data unacknowledged this long ends the connection.
    user_timeout_ms: u32,
    /// TCP_KEEPIDLE, TCP_KEEPINTVL (seconds): an idle connection is probed after `idle`, then
    /// every `interval`, so a cut is found while the server is quiet too (a long query).
    idle: u32,
    interval: u32,
}

/// Keepalive probes sent before the connection is given up (the user timeout usually ends it
/// first).
const PROBES: u32 = 3;

impl CutDetection {
    /// The settings for a timeout, or `None` for zero: the operating system's defaults.
    pub fn for_timeout(timeout: Duration) -> Option<CutDetection> {
        if timeout.is_zero() {
            return None;
        }
        let secs = u32::try_from(timeout.as_secs()).unwrap_or(u32::MAX).max(1);
        Some(CutDetection {
            user_timeout_ms: u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX),
            idle: secs,
            interval: (secs / PROBES).max(1),
        })
    }

    /// Applies the settings to a connected socket.
    pub fn apply(&self, socket: &impl AsRawFd) -> io::Result<()> {
        let fd = socket.as_raw_fd();
        set(fd, libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1)?;
        set(fd, libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, self.idle)?;
        set(fd, libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, self.interval)?;
        set(fd, libc::IPPROTO_TCP, libc::TCP_KEEPCNT, PROBES)?;
        set(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_USER_TIMEOUT,
            self.user_timeout_ms,
        )
    }
}

fn set(fd: libc::c_int, level: libc::c_int, name: libc::c_int, value: u32) -> io::Result<()> {
    let value = libc::c_int::try_from(value).unwrap_or(libc::c_int::MAX);
    // SAFETY: `fd` is an open socket borrowed for the call, and the option value is a c_int
    // whose size is passed with it.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_follow_the_timeout() {
        let table = [
            (Duration::ZERO, None),
            (
                Duration::from_millis(500),
                Some(CutDetection {
                    user_timeout_ms: 500,
                    idle: 1,
                    interval: 1,
                }),
            ),
            (
                Duration::from_secs(10),
                Some(CutDetection {
                    user_timeout_ms: 10_000,
                    idle: 10,
                    interval: 3,
                }),
            ),
        ];
        for (timeout, want) in table {
            assert_eq!(CutDetection::for_timeout(timeout), want, "{timeout:?}");
        }
    }

    #[test]
    fn the_kernel_takes_them() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let cut = CutDetection::for_timeout(Duration::from_secs(10)).unwrap();
        cut.apply(&stream).unwrap();
        let mut value: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: reads one c_int option into a local of that size.
        let rc = unsafe {
            libc::getsockopt(
                stream.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_USER_TIMEOUT,
                (&mut value as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        assert_eq!(rc, 0);
        assert_eq!(value, 10_000);
    }
}
