//! Loopback port helpers.

use std::net::{Ipv4Addr, TcpListener};
use std::sync::atomic::{AtomicU32, Ordering};

/// Where the ports handed out start; they end below the kernel's ephemeral range.
const LOWEST: u32 = 10_000;

/// A TCP port on 127.0.0.1 that was free a moment ago, for a server a test starts.
///
/// Not one the kernel picks (bind to port 0): that comes from the ephemeral range, where the
/// source ports of outgoing connections come from too, and under load a connection took
/// such a port before the server meant to listen on it had bound it. These come from below
/// that range, in turn within the process (so its concurrent tests never get the same one),
/// from a start that depends on the process id (so neither do other test processes, mostly).
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let span = ephemeral_start().saturating_sub(LOWEST).max(1_000);
    let start = std::process::id().wrapping_mul(7_919) % span;
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = u16::try_from(LOWEST + (start + n) % span).expect("a port under 65536");
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return port;
        }
    }
    panic!(
        "no free loopback TCP port between {LOWEST} and {}",
        LOWEST + span
    );
}

/// The first port of the kernel's ephemeral range (Linux's default when it cannot be read).
fn ephemeral_start() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}
