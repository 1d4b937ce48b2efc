//! `pgrepl-proxy failover`, `rejoin` and `switchover` on the local runtime, on db01 with two
//! replicas built by `provision`: the primary killed with SIGKILL under a write load and the
//! most advanced replica promoted with no acknowledged write lost (synchronous replication),
//! the other replica following the new timeline, the old primary fenced and brought back by
//! `rejoin`; a planned switchover under a direct write load losing nothing; every command run
//! again printing only "already done".

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use pgrepl_provision::local::LocalRuntime;
use pgrepl_provision::psql::try_sql;
use pgrepl_provision::runtime::{NodeId, Runtime};
use pgrepl_tests::provisioning::LocalSet;
use pgrepl_tests::{block_on, wait_until};

const DB03: NodeId = match NodeId::new(3) {
    Some(node) => node,
    None => panic!("db03 is a node"),
};

/// Each `[n/M] ...` line of a command's output, and whether it was already done; every line
/// must end in an outcome.
fn step_lines(stdout: &str) -> Vec<(String, bool)> {
    let lines: Vec<(String, bool)> = stdout
        .lines()
        .filter(|l| l.starts_with('['))
        .map(|l| {
            let already = l.ends_with("... already done");
            assert!(already || l.contains("... done in "), "no outcome: {l}");
            (l.to_owned(), already)
        })
        .collect();
    assert!(!lines.is_empty(), "no step lines in:\n{stdout}");
    lines
}

fn all_already_done(stdout: &str) {
    eprintln!("{stdout}");
    for (line, already) in step_lines(stdout) {
        assert!(already, "a rerun changed something: {line}\n{stdout}");
    }
}

/// The running node out of recovery.
fn primary_of(set: &LocalSet) -> NodeId {
    let primaries: Vec<NodeId> = NodeId::first(2)
        .into_iter()
        .filter(|&n| set.sql(n, "SELECT pg_is_in_recovery()").ok().as_deref() == Some("f"))
        .collect();
    assert_eq!(primaries.len(), 1, "primaries: {primaries:?}");
    primaries[0]
}

/// Writes numbered rows one commit at a time, to whichever of `targets` takes them, until
/// told to stop or `limit` rows were acknowledged; returns the acknowledged numbers.
fn write_load(rt: &LocalRuntime, targets: &[NodeId], stop: &AtomicBool, limit: u32) -> Vec<u32> {
    let mut acknowledged = Vec::new();
    let mut next = 1;
    while !stop.load(Ordering::Relaxed) && acknowledged.len() < limit as usize {
        let insert = format!("INSERT INTO acked (id) VALUES ({next})");
        for &node in targets {
            let ok = block_on(try_sql(rt, node, &insert)).is_ok_and(|out| out.success());
            if ok {
                acknowledged.push(next);
                break;
            }
        }
        next += 1;
        std::thread::sleep(Duration::from_millis(10));
    }
    acknowledged
}

/// Whether every number in `ids` is in `acked` on `node`.
fn has_all(set: &LocalSet, node: NodeId, ids: &[u32]) -> bool {
    let list: Vec<String> = ids.iter().map(u32::to_string).collect();
    let missing = format!(
        "SELECT count(*) FROM unnest(ARRAY[{}]::int[]) AS a(id) \
         WHERE NOT EXISTS (SELECT 1 FROM acked WHERE acked.id = a.id)",
        list.join(",")
    );
    set.sql(node, &missing).unwrap() == "0"
}

/// Waits until `replica` streams from `primary` (its row in the primary's view).
fn wait_streaming(set: &LocalSet, primary: NodeId, replica: NodeId) {
    let sql = format!(
        "SELECT count(*) FROM pg_stat_replication \
         WHERE application_name = '{replica}' AND state = 'streaming'"
    );
    wait_until(
        &format!("{replica} to stream from {primary}"),
        Duration::from_secs(30),
        || Ok(set.sql(primary, &sql)? == "1"),
    )
    .unwrap();
}

#[test]
fn kill_the_primary_fail_over_then_rejoin_it() {
    let began = Instant::now();
    let set = LocalSet::new("failover", 2);
    set.expect(&["provision", "--sync"]);
    set.sql(NodeId::DB01, "CREATE TABLE acked (id int PRIMARY KEY)")
        .unwrap();
    let rt = set.runtime();

    let stop = AtomicBool::new(false);
    let acknowledged = std::thread::scope(|scope| {
        let writer = scope.spawn(|| write_load(&rt, &[NodeId::DB01], &stop, u32::MAX));
        std::thread::sleep(Duration::from_secs(2));
        block_on(rt.kill(NodeId::DB01)).unwrap();
        stop.store(true, Ordering::Relaxed);
        writer.join().unwrap()
    });
    assert!(acknowledged.len() > 10, "too few writes before the kill");

    let out = set.expect(&["failover"]);
    eprintln!("{out}");
    let lines = step_lines(&out);
    // The last step verifies, changing nothing.
    assert!(
        lines[..lines.len() - 1].iter().all(|(_, already)| !already),
        "{out}"
    );
    assert!(out.contains("fence the old primary db01"), "{out}");
    let new_primary = primary_of(&set);
    assert_ne!(new_primary, NodeId::DB01);
    let other = if new_primary == NodeId::DB02 {
        DB03
    } else {
        NodeId::DB02
    };
    assert!(
        has_all(&set, new_primary, &acknowledged),
        "an acknowledged write is missing on {new_primary}"
    );
    wait_streaming(&set, new_primary, other);
    let timeline = set
        .sql(other, "SELECT received_tli FROM pg_stat_wal_receiver")
        .unwrap();
    assert_eq!(timeline, "2", "{other} follows the new timeline");
    let auto_conf =
        std::fs::read_to_string(set.dir.join("db01/data/postgresql.auto.conf")).unwrap();
    assert!(
        auto_conf.contains("default_transaction_read_only = 'on'"),
        "db01 is fenced:\n{auto_conf}"
    );
    all_already_done(&set.expect(&["failover"]));

    let out = set.expect(&["rejoin", "db01"]);
    eprintln!("{out}");
    assert!(
        out.contains("db01 follows") && (out.contains("pg_rewind") || out.contains("base backup")),
        "rejoin says how db01 came back:\n{out}"
    );
    wait_streaming(&set, new_primary, NodeId::DB01);
    assert_eq!(
        set.sql(NodeId::DB01, "SELECT pg_is_in_recovery()").unwrap(),
        "t"
    );
    assert!(has_all(&set, NodeId::DB01, &acknowledged));
    let auto_conf =
        std::fs::read_to_string(set.dir.join("db01/data/postgresql.auto.conf")).unwrap();
    assert!(
        !auto_conf.contains("default_transaction_read_only"),
        "{auto_conf}"
    );
    all_already_done(&set.expect(&["rejoin", "db01"]));

    // provision finds the promoted primary and has nothing left to do.
    let out = set.expect(&["provision", "--sync"]);
    assert!(
        out.contains(&format!(
            "[1/11] run the primary {new_primary} ... already done"
        )),
        "{out}"
    );
    all_already_done(&out);
    assert!(
        began.elapsed() < Duration::from_secs(120),
        "took {:?}",
        began.elapsed()
    );
}

#[test]
fn switchover_without_proxy_loses_no_acknowledged_write() {
    let began = Instant::now();
    let set = LocalSet::new("switchover", 2);
    set.expect(&["provision"]);
    set.sql(NodeId::DB01, "CREATE TABLE acked (id int PRIMARY KEY)")
        .unwrap();

    let refused = set.run(&["switchover", "--to", "db02"]);
    assert!(
        !refused.success,
        "switchover went on without holding writes"
    );
    assert!(
        refused.stderr.contains("--without-proxy"),
        "{}",
        refused.stderr
    );
    assert_eq!(
        primary_of(&set),
        NodeId::DB01,
        "the refusal changed nothing"
    );

    let rt = set.runtime();
    let stop = AtomicBool::new(false);
    let (acknowledged, out) = std::thread::scope(|scope| {
        let writer =
            scope.spawn(|| write_load(&rt, &[NodeId::DB01, NodeId::DB02], &stop, u32::MAX));
        std::thread::sleep(Duration::from_secs(1));
        let out = set.run(&["switchover", "--to", "db02", "--without-proxy"]);
        std::thread::sleep(Duration::from_secs(1));
        stop.store(true, Ordering::Relaxed);
        (writer.join().unwrap(), out)
    });
    assert!(
        out.success,
        "switchover failed:\n{}{}",
        out.stdout, out.stderr
    );
    eprintln!("{}", out.stdout);
    assert!(
        out.stdout.contains("going on without a proxy"),
        "{}",
        out.stdout
    );
    assert_eq!(primary_of(&set), NodeId::DB02);
    assert!(
        has_all(&set, NodeId::DB02, &acknowledged),
        "an acknowledged write is missing on db02"
    );
    assert!(acknowledged.len() > 10, "too few writes");
    for replica in [NodeId::DB01, DB03] {
        wait_streaming(&set, NodeId::DB02, replica);
    }
    let last = acknowledged.last().copied().unwrap_or(0);
    wait_until(
        "db01 to replay every write",
        Duration::from_secs(30),
        || Ok(has_all(&set, NodeId::DB01, &[last])),
    )
    .unwrap();
    assert!(has_all(&set, NodeId::DB01, &acknowledged));

    all_already_done(&set.expect(&["switchover", "--to", "db02", "--without-proxy"]));
    assert!(
        began.elapsed() < Duration::from_secs(90),
        "took {:?}",
        began.elapsed()
    );
}
