//! Loopback port helpers.

use std::net::{Ipv4Addr, TcpListener};
use std::sync::atomic::{AtomicU32, Ordering};

/// Where the ports handed out below the kernel's ephemeral range start.
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
    let (low, span) = outside_ephemeral_range();
    let start = std::process::id().wrapping_mul(7_919) % span;
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed) % span;
        let port = u16::try_from(low + (start + n) % span).expect("a port under 65536");
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback TCP port between {low} and {}", low + span);
}

/// The first of `count` consecutive free loopback ports, for `provision --replicas N`, whose
/// replicas take `replica_port` and the ports after it. They are taken from [`free_port`]'s
/// turn, so it hands none of them out again.
pub fn free_ports(count: u16) -> u16 {
    for _ in 0..1000 {
        let first = free_port();
        let consecutive = (1..count).all(|i| Some(free_port()) == first.checked_add(i));
        if consecutive {
            return first;
        }
    }
    panic!("no {count} consecutive free loopback TCP ports");
}

/// The first port and the number of ports to hand out: below the kernel's ephemeral range
/// (Linux's default 32768-60999 when it cannot be read), or above it when it starts too low.
fn outside_ephemeral_range() -> (u32, u32) {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok();
    let bounds: Vec<u32> = range
        .iter()
        .flat_map(|r| r.split_whitespace())
        .filter_map(|n| n.parse().ok())
        .collect();
    let (first, last) = match bounds[..] {
        [first, last] => (first, last),
        _ => (32_768, 60_999),
    };
    if first >= LOWEST + 1_000 {
        (LOWEST, first - LOWEST)
    } else if last <= 64_000 {
        (last + 1, 65_535 - last)
    } else {
        // No room outside it: ports inside it, handed out in turn all the same.
        (LOWEST, 1_000)
    }
}
