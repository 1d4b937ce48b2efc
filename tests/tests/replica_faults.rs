//! Three replicas, one killed and one cut off: db01 and db02..db04, each on a "host" of its own
//! (a network namespace of the partition rig), a proxy in front with all three replicas,
//! sessions reading in autocommit and one writing. db03 is killed with SIGKILL (postmaster and children)
//! and the network between the proxy and db04 is cut silently (packets dropped), both for a
//! few seconds; then db03 is started again and the cut healed, each by a guard, so a failing
//! test leaves neither behind. Design §10, the part that needs no failover.
//!
//! No autocommit read fails: a read lost on a replica before any answer is re-run on the
//! primary, a replica that cannot be reached gives its read to the primary, and once the
//! monitor finds them down every read runs on db02; until then a session may also read on
//! the primary because read-your-writes cannot see the cut-off replica replay. Writes go on.
//! Once db03 runs again and the cut is healed, new sessions read on both. Figures are printed
//! (`--nocapture` shows them).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use pgrepl_tests::endpoint::Metrics;
use pgrepl_tests::netns::Side;
use pgrepl_tests::rigged::Rigged;
use pgrepl_tests::suite::{bounded_for, eventually, PRIMARY, REPLICA};
use pgrepl_tests::traffic::{Readers, Writer};
use pgrepl_tests::Node;

/// db02 (the one left), db03 (killed), db04 (cut off).
const REPLICAS: u8 = 3;
const KILLED: &str = "db03";
const CUT_OFF: &str = "db04";
/// Two sessions on each replica (`least_connections` spreads them).
const READERS: usize = 6;
/// How long the monitor may take to find a replica down: the 1 s floor of its sample
/// timeout (for the cut-off one; the killed one refuses at once), one interval, and slack
/// for a busy 2-core machine.
const DOWN_WITHIN: Duration = Duration::from_millis(2000);
/// How long the faults last, from the cut: past `[proxy] connect_timeout` (5 s, the
/// default), so that a connection attempt to db04 begun before the monitor found it down
/// has given up, and its read gone to the primary, while db04 is still cut off.
const FAULT: Duration = Duration::from_secs(6);
/// How long the recovered replicas may take to be found readable again: db03's crash
/// recovery and catch-up, and db04's lag samples.
const BACK_WITHIN: Duration = Duration::from_secs(20);
/// The longest a read may take while the faults last: one sent on a pooled connection to
/// db04 is re-run once the rig's `server_tcp_user_timeout` (2 s) ends that connection, one
/// waiting for a connection to db04 once `connect_timeout` (5 s) gives up; plus slack.
const SLOWEST_READ: Duration = Duration::from_secs(5 + 1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_killed_and_one_cut_off_leave_reads_on_the_third() {
    bounded_for(Duration::from_secs(90), async {
        let rigged = Rigged::start("replica-faults", REPLICAS, "");
        let addr = rigged.proxy.addr;
        let replicas = &rigged.cluster.replicas;
        let names: Vec<&str> = replicas.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, [REPLICA, KILLED, CUT_OFF]);
        let readers = Readers::start(addr, READERS).await;
        let start = Instant::now();
        for node in [REPLICA, KILLED, CUT_OFF] {
            readers.first_on(node, start, Duration::from_secs(10)).await;
        }
        let writer = Writer::start(addr).await;

        let before = Metrics::scrape(rigged.proxy.endpoint());
        let kill_at = Instant::now();
        let killed = Killed::kill(&replicas[1]).await;
        let cut = rigged.rig.cut(Side::Proxy, Side::Node(CUT_OFF)).unwrap();
        let cut_at = Instant::now();
        let down = found_down(&rigged, &[KILLED, CUT_OFF]).await;
        let (killed_down, cut_down) = (down[KILLED] - kill_at, down[CUT_OFF] - cut_at);
        let settled = down.values().max().copied().unwrap();
        tokio::time::sleep_until((cut_at + FAULT).into()).await;
        // Once the monitor had found both down, every read ran on db02: none on a faulty
        // replica, none on the primary while a replica is readable.
        let late = readers.since(settled);
        assert!(
            !late.is_empty() && late.iter().all(|r| r.as_deref() == Ok(REPLICA)),
            "reads sent once db03 and db04 were found down: {late:?}"
        );
        // Before that, reads ran on the primary while a faulty replica was not found down
        // yet, by the proxy's rules: re-run there when their replica was lost before
        // answering (`pgrepl_read_retries_total`, counted on the replica), sent there when
        // connecting to the replica failed (`replica_down`), or when the replica picked
        // instead of db03 was db04, whose replay the session's read-your-writes floor could
        // not see (`read_your_writes`).
        let during = readers.count_by_node(kill_at);
        let on_primary = during.get(PRIMARY).copied().unwrap_or_default();
        let after = Metrics::scrape(rigged.proxy.endpoint());
        let added = |name: &str, labels: &[(&str, &str)]| {
            after.value(name, labels) - before.value(name, labels)
        };
        let reruns = added("pgrepl_read_retries_total", &[("to", PRIMARY)]);
        let reasons: BTreeMap<&str, f64> = ["replica_down", "read_your_writes", "lag"]
            .into_iter()
            .map(|reason| {
                let labels = [("backend", PRIMARY), ("reason", reason)];
                (reason, added("pgrepl_queries_total", &labels))
            })
            .collect();
        let left_killed = readers
            .left(KILLED, kill_at)
            .expect("db03's sessions moved");
        let left_cut = readers
            .left(CUT_OFF, cut_at)
            .expect("db04's sessions moved");
        // Reads in flight at the faults count too.
        let slowest = readers
            .reads_since(start)
            .iter()
            .filter(|r| r.sent + r.took >= kill_at)
            .map(|r| r.took)
            .max()
            .unwrap();
        assert!(slowest < SLOWEST_READ, "a read took {slowest:?}");

        let healed = Instant::now();
        killed.restart().await;
        cut.heal().unwrap();
        let back = found_readable(&rigged, &[KILLED, CUT_OFF]).await;
        // Sessions keep the replica they have while it is readable, so all six read on db02:
        // new sessions go to the replicas with the fewest readers, the two that came back.
        let fresh = Readers::start(addr, READERS).await;
        let fresh_at = Instant::now();
        for node in [KILLED, CUT_OFF] {
            fresh
                .first_on(node, fresh_at, Duration::from_secs(10))
                .await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let spread = fresh.count_by_node(fresh_at);
        assert!(
            spread
                .keys()
                .all(|node| [KILLED, CUT_OFF].contains(&node.as_str())),
            "new sessions read on db03 and db04 only: {spread:?}"
        );
        let writes = writer.stop_without_errors().await;
        let reads = readers.stop_without_errors().await + fresh.stop_without_errors().await;
        eprintln!(
            "3 replicas, {KILLED} killed, {CUT_OFF} cut off from the proxy: found down {:?} \
             after the kill and {:?} after the cut; reads left {KILLED} {:?} after the kill, \
             {CUT_OFF} {:?} after the cut; reads during the faults by node {during:?} \
             ({on_primary} on the primary: {reruns} re-run, routed there by reason \
             {reasons:?}), slowest {slowest:?}; back readable {:?} and {:?} \
             after the restart and heal; new sessions' reads {spread:?}; {reads} reads, \
             0 errors; {writes} writes, 0 errors",
            killed_down,
            cut_down,
            left_killed,
            left_cut,
            back[KILLED] - healed,
            back[CUT_OFF] - healed,
        );
    })
    .await
}

/// When `/status` first showed each of `nodes` down, polled every 20 ms up to
/// [`DOWN_WITHIN`].
async fn found_down<'a>(rigged: &Rigged, nodes: &[&'a str]) -> BTreeMap<&'a str, Instant> {
    found(rigged, nodes, DOWN_WITHIN, |state| state == "down").await
}

/// When `/status` first showed each of `nodes` readable ("ok") again, up to
/// [`BACK_WITHIN`].
async fn found_readable<'a>(rigged: &Rigged, nodes: &[&'a str]) -> BTreeMap<&'a str, Instant> {
    found(rigged, nodes, BACK_WITHIN, |state| state == "ok").await
}

async fn found<'a>(
    rigged: &Rigged,
    nodes: &[&'a str],
    within: Duration,
    is: impl Fn(&str) -> bool,
) -> BTreeMap<&'a str, Instant> {
    let mut seen = BTreeMap::new();
    eventually(&format!("/status to show {nodes:?}"), within, || {
        for &node in nodes {
            let state = rigged.status(node)["state"].clone();
            if !seen.contains_key(node) && state.as_str().is_some_and(&is) {
                seen.insert(node, Instant::now());
            }
        }
        let all = seen.len() == nodes.len();
        async move { all }
    })
    .await
    .unwrap();
    seen
}

/// A replica whose postmaster was killed; started again when restarted or dropped, so a
/// failing test leaves it running for the cluster's teardown.
struct Killed<'n> {
    node: Option<&'n Node>,
}

impl<'n> Killed<'n> {
    /// Kills the server, off the async runtime's thread (the runtime waits until its
    /// processes are gone).
    async fn kill(node: &'n Node) -> Killed<'n> {
        let owned = node.clone();
        tokio::task::spawn_blocking(move || owned.kill())
            .await
            .unwrap()
            .unwrap();
        Killed { node: Some(node) }
    }

    /// Starts the server again, off the async runtime's thread.
    async fn restart(mut self) {
        let node = self.node.take().unwrap().clone();
        tokio::task::spawn_blocking(move || start_after_kill(&node))
            .await
            .unwrap()
            .unwrap();
    }
}

impl Drop for Killed<'_> {
    fn drop(&mut self) {
        if let Some(node) = self.node.take() {
            if let Err(e) = start_after_kill(node) {
                eprintln!("{e:#}");
            }
        }
    }
}

/// Starts a killed server; its old backends may still be exiting (they hold its shared
/// memory, and a start fails while they do), so a failed start is retried for 10 s.
fn start_after_kill(node: &Node) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match node.start() {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() < deadline => {
                eprintln!("{} did not start yet: {e:#}", node.name);
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => return Err(e.context(format!("cannot start {} again", node.name))),
        }
    }
}
