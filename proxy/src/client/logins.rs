//! Connections still logging in: accepted, not yet authenticated. They do not count against
//! `[proxy] max_client_connections` (a client that cannot authenticate must not take a
//! place of one that can); they have their own, larger bound, `[proxy] max_pending_logins`,
//! and optionally one per source address, `[proxy] max_pending_logins_per_address`.
//!
//! A full bound closes the oldest pending login (of that address, for the per-address bound)
//! to make room for the new one. Refusing the newest instead would let whoever fills the
//! bound keep every later client out for as long as they keep refilling it, at no cost. With
//! the oldest closed, a flood only shuts out a real client if it opens `max_pending_logins`
//! connections within the time that client takes to authenticate (a few round trips): at
//! 10,000 places and a 100 ms login, 100,000 connections a second. And with the per-address
//! bound set, one source's flood only ever closes its own connections.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// Which bound closed a pending login to make room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evicted {
    /// `[proxy] max_pending_logins`.
    Overall,
    /// `[proxy] max_pending_logins_per_address`.
    PerAddress,
}

/// Where a new pending login finds room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Room {
    Free,
    /// Close this bound's oldest pending login first.
    Evict(Evicted),
}

/// `pending` logins in all, `from_address` of them from the new one's address; a bound of
/// 0 per address means none. The per-address bound goes first: a flood from one address
/// then closes its own connections, never another address's.
fn room(pending: usize, max: usize, from_address: usize, max_per_address: usize) -> Room {
    if max_per_address > 0 && from_address >= max_per_address {
        Room::Evict(Evicted::PerAddress)
    } else if pending >= max {
        Room::Evict(Evicted::Overall)
    } else {
        Room::Free
    }
}

/// How often at most the proxy warns that it closes pending logins to make room.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// The pending logins, oldest first.
#[derive(Default)]
struct Pending {
    next_id: u64,
    /// By entry order: ids only grow, so the first is the oldest.
    by_age: BTreeMap<u64, Entry>,
    /// Only kept with a per-address bound.
    by_address: HashMap<IpAddr, BTreeSet<u64>>,
    /// Logins closed to make room since the last warning, and when that was.
    evicted: u64,
    warned: Option<Instant>,
}

struct Entry {
    address: IpAddr,
    evict: oneshot::Sender<Evicted>,
}

pub struct Logins {
    pending: Mutex<Pending>,
    max: usize,
    max_per_address: usize,
}

impl Logins {
    pub fn new(max: usize, max_per_address: usize) -> Arc<Logins> {
        Arc::new(Logins {
            pending: Mutex::default(),
            max: max.max(1),
            max_per_address,
        })
    }

    fn locked(&self) -> MutexGuard<'_, Pending> {
        // Plain data: a panic while holding the lock leaves nothing half-done that matters.
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a connection just accepted from `address` as pending, closing the oldest
    /// pending login of a full bound first.
    pub fn enter(self: &Arc<Self>, address: IpAddr) -> LoginTicket {
        let (evict, evicted) = oneshot::channel();
        let mut pending = self.locked();
        let from_address = pending.by_address.get(&address).map_or(0, BTreeSet::len);
        if let Room::Evict(bound) = room(
            pending.by_age.len(),
            self.max,
            from_address,
            self.max_per_address,
        ) {
            let oldest = match bound {
                Evicted::Overall => pending.by_age.keys().next().copied(),
                Evicted::PerAddress => pending
                    .by_address
                    .get(&address)
                    .and_then(|ids| ids.first().copied()),
            };
            if let Some(entry) = oldest.and_then(|id| pending.remove(id)) {
                // Its task may be finishing right now; then it simply goes on.
                let _ = entry.evict.send(bound);
                pending.note_eviction(bound, self);
            }
        }
        let id = pending.next_id;
        pending.next_id += 1;
        pending.by_age.insert(id, Entry { address, evict });
        if self.max_per_address > 0 {
            pending.by_address.entry(address).or_default().insert(id);
        }
        LoginTicket {
            logins: self.clone(),
            id,
            evicted,
        }
    }

    /// Connections logging in now.
    pub fn count(&self) -> usize {
        self.locked().by_age.len()
    }
}

impl Pending {
    fn remove(&mut self, id: u64) -> Option<Entry> {
        let entry = self.by_age.remove(&id)?;
        if let Some(ids) = self.by_address.get_mut(&entry.address) {
            ids.remove(&id);
            if ids.is_empty() {
                self.by_address.remove(&entry.address);
            }
        }
        Some(entry)
    }

    /// Warns, at most every [`WARN_EVERY`], that logins are being closed to make room: a
    /// flood, or bounds too small for the load.
    fn note_eviction(&mut self, bound: Evicted, logins: &Logins) {
        self.evicted += 1;
        let now = Instant::now();
        if self.warned.is_some_and(|at| now < at + WARN_EVERY) {
            return;
        }
        let closed = std::mem::take(&mut self.evicted);
        self.warned = Some(now);
        match bound {
            Evicted::Overall => tracing::warn!(
                closed,
                max_pending_logins = logins.max,
                "[proxy] max_pending_logins reached: closing the oldest connections not yet \
                 authenticated to make room"
            ),
            Evicted::PerAddress => tracing::warn!(
                closed,
                max_pending_logins_per_address = logins.max_per_address,
                "[proxy] max_pending_logins_per_address reached: closing that address's oldest \
                 connections not yet authenticated to make room"
            ),
        }
    }
}

/// A connection's place among the pending logins; given back when dropped (it authenticated,
/// or the connection ended).
pub struct LoginTicket {
    logins: Arc<Logins>,
    id: u64,
    evicted: oneshot::Receiver<Evicted>,
}

impl LoginTicket {
    /// Resolves when the login is closed to make room for a newer one, with the bound that
    /// was full.
    pub async fn evicted(&mut self) -> Evicted {
        match (&mut self.evicted).await {
            Ok(bound) => bound,
            // Only a remove by this ticket's own drop takes the sender without sending.
            Err(_) => std::future::pending().await,
        }
    }
}

impl Drop for LoginTicket {
    fn drop(&mut self) {
        self.logins.locked().remove(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn room_is_decided_by_the_bounds() {
        use Evicted::*;
        // (pending, max, from the address, per-address bound) -> room
        let table = [
            ((0, 10, 0, 0), Room::Free),
            ((9, 10, 9, 0), Room::Free),
            ((10, 10, 0, 0), Room::Evict(Overall)),
            ((10, 10, 10, 0), Room::Evict(Overall)),
            ((5, 10, 2, 3), Room::Free),
            ((5, 10, 3, 3), Room::Evict(PerAddress)),
            // Both full: the address pays, not the others.
            ((10, 10, 3, 3), Room::Evict(PerAddress)),
            ((10, 10, 2, 3), Room::Evict(Overall)),
        ];
        for ((pending, max, from, per), expected) in table {
            assert_eq!(
                room(pending, max, from, per),
                expected,
                "pending {pending}/{max}, {from}/{per} from the address"
            );
        }
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
    }

    #[tokio::test]
    async fn a_full_bound_closes_the_oldest_login() {
        let logins = Logins::new(2, 0);
        let mut first = logins.enter(ip(1));
        let mut second = logins.enter(ip(1));
        assert_eq!(logins.count(), 2);
        let mut third = logins.enter(ip(2));
        assert_eq!(first.evicted().await, Evicted::Overall);
        assert_eq!(logins.count(), 2);
        // The survivors are not told anything.
        for ticket in [&mut second, &mut third] {
            let waited = tokio::time::timeout(Duration::from_millis(20), ticket.evicted()).await;
            assert!(waited.is_err(), "a newer login was closed");
        }
        drop(first);
        assert_eq!(logins.count(), 2, "the evicted login no longer counted");
        drop(second);
        drop(third);
        assert_eq!(logins.count(), 0);
    }

    #[tokio::test]
    async fn the_per_address_bound_closes_that_address_s_oldest() {
        let logins = Logins::new(10, 2);
        let mut other = logins.enter(ip(2));
        let mut first = logins.enter(ip(1));
        let _second = logins.enter(ip(1));
        let _third = logins.enter(ip(1));
        assert_eq!(first.evicted().await, Evicted::PerAddress);
        assert_eq!(logins.count(), 3);
        let waited = tokio::time::timeout(Duration::from_millis(20), other.evicted()).await;
        assert!(waited.is_err(), "another address's login was closed");
    }

    #[test]
    fn a_ticket_dropped_early_gives_its_place_back() {
        let logins = Logins::new(1, 1);
        for _ in 0..3 {
            drop(logins.enter(ip(1)));
        }
        assert_eq!(logins.count(), 0);
        assert!(logins.locked().by_address.is_empty());
    }
}
