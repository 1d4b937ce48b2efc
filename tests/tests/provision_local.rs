//! `pgrepl-proxy provision --runtime local`: the same 11 steps with the installed PostgreSQL's
//! programs, a second run that changes nothing, a lost replica rebuilt by re-running, verify,
//! status and teardown.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use std::time::{Duration, Instant};

use pgrepl_provision::psql::try_sql;
use pgrepl_provision::runtime::{NodeId, Runtime};
use pgrepl_tests::provisioning::{assert_healthy_status, step_lines, step_outcomes, LocalSet};
use pgrepl_tests::{block_on, wait_until};

#[test]
fn local_pair_provisions_reprovisions_and_tears_down() {
    let pair = LocalSet::new("local-pair", 1);
    let first = pair.expect(&["provision"]);
    assert!(
        step_outcomes(&first).iter().all(|already| !already),
        "{first}"
    );

    let pgpass = std::fs::metadata(pair.dir.join("db02/.pgpass")).expect("no .pgpass for db02");
    assert_eq!(pgpass.mode() & 0o777, 0o600, ".pgpass must be private");
    assert!(pair.dir.join("db02/data/standby.signal").exists());

    let second = pair.expect(&["provision"]);
    assert!(
        step_outcomes(&second).iter().all(|already| *already),
        "a provisioned pair is left as it is:\n{second}"
    );

    let verify = pair.run(&["verify"]);
    assert!(
        verify.success,
        "verify failed:\n{}{}",
        verify.stdout, verify.stderr
    );
    assert_eq!(
        verify
            .stdout
            .lines()
            .filter(|l| l.starts_with("ok  "))
            .count(),
        4
    );

    // No proxy answers: `status` says so and shows the pair as seen directly.
    let status = pair.run(&["status"]);
    assert!(
        status
            .stdout
            .starts_with("no proxy answering on 127.0.0.1:"),
        "{}",
        status.stdout
    );
    assert_healthy_status(&status);
    assert_healthy_status(&pair.run(&["status", "--pair"]));

    let removed = pair.run(&["teardown"]);
    assert!(removed.success, "{}", removed.stderr);
    assert!(!pair.dir.join("db01").exists() && !pair.dir.join("db02").exists());
}

#[test]
fn a_lost_replica_is_rebuilt_by_running_provision_again() {
    let pair = LocalSet::new("lost-replica", 1);
    pair.provision();
    stop_and_remove(&pair.dir.join("db02"));

    let outcomes = step_outcomes(&pair.expect(&["provision"]));
    // The primary's steps (1, 3, 5) and the tutorial's table (11) are there already; the
    // replica is created again, gets db01's copy of .pgpass, the pg_hba.conf every node has
    // and a fresh base backup.
    let redone: Vec<usize> = (1..=11).filter(|n| !outcomes[n - 1]).collect();
    assert_eq!(redone, vec![2, 4, 6, 7, 8, 9, 10], "{outcomes:?}");
    let verify = pair.run(&["verify"]);
    assert!(
        verify.success,
        "verify failed:\n{}{}",
        verify.stdout, verify.stderr
    );
}

/// Stops the server in `node_dir` at once and deletes the node, as a lost machine would.
fn stop_and_remove(node_dir: &Path) {
    let pid_file = node_dir.join("data/postmaster.pid");
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .expect("db02 is not running")
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .expect("no pid in postmaster.pid");
    // SAFETY: kill(2) has no memory-safety preconditions. SIGQUIT: immediate shutdown.
    unsafe { libc::kill(pid, libc::SIGQUIT) };
    for _ in 0..100 {
        if !pid_file.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    std::fs::remove_dir_all(node_dir).expect("cannot remove db02");
}

/// `provision --replicas 3`: db02..db04, each with its slot, port and .pgpass, the same
/// pg_hba.conf and wal_log_hints on every node, the tutorial's check on each replica; a
/// second run finds everything done and restarts nothing.
#[test]
fn three_replicas_provision_and_reprovision_without_restarts() {
    let set = LocalSet::new("three-replicas", 3);
    let first = set.provision();
    let mut lines_per_step = HashMap::new();
    for (step, already) in &first {
        assert!(!already, "a fresh set has every step to do: step {step}");
        *lines_per_step.entry(*step).or_insert(0) += 1;
    }
    for step in 1..=11 {
        let wanted = if [2, 5, 7, 8, 9, 10].contains(&step) {
            3
        } else {
            1
        };
        assert_eq!(lines_per_step[&step], wanted, "lines of step {step}");
    }

    let nodes = NodeId::first(3);
    let started = start_times(&set, &nodes);
    let hba = std::fs::read(set.dir.join("db01/data/pg_hba.conf")).unwrap();
    for &node in &nodes {
        let home = set.dir.join(node.name());
        let pgpass = std::fs::metadata(home.join(".pgpass")).expect("no .pgpass");
        assert_eq!(
            pgpass.mode() & 0o777,
            0o600,
            "{node}'s .pgpass must be private"
        );
        assert_eq!(
            std::fs::read(home.join("data/pg_hba.conf")).unwrap(),
            hba,
            "{node} has the same pg_hba.conf as db01"
        );
        assert_eq!(set.sql(node, "SHOW wal_log_hints").unwrap(), "on", "{node}");
        let grants = "SELECT has_function_privilege('replication_user', \
                      'pg_catalog.pg_read_binary_file(text, bigint, bigint, boolean)', 'EXECUTE')";
        assert_eq!(set.sql(node, grants).unwrap(), "t", "{node}");
    }
    assert!(String::from_utf8_lossy(&hba).contains("replication_user  127.0.0.1/32  md5"));
    let streams = set
        .sql(
            NodeId::DB01,
            "SELECT string_agg(s.slot_name || '=' || r.application_name || ':' || r.state, ',' \
             ORDER BY s.slot_name) FROM pg_replication_slots s \
             JOIN pg_stat_replication r ON r.pid = s.active_pid",
        )
        .unwrap();
    assert_eq!(
        streams,
        "rideshare_slot=db02:streaming,rideshare_slot_db03=db03:streaming,\
         rideshare_slot_db04=db04:streaming"
    );

    let second = set.provision();
    assert_eq!(second.len(), first.len());
    assert!(
        second.iter().all(|(_, already)| *already),
        "a provisioned set is left as it is: {second:?}"
    );
    assert_eq!(
        start_times(&set, &nodes),
        started,
        "the second run restarted a node"
    );

    let verify = set.expect(&["verify"]);
    let oks = verify.lines().filter(|l| l.starts_with("ok  ")).count();
    assert_eq!(oks, 12, "four checks per replica:\n{verify}");
    let status = set.expect(&["status", "--pair"]);
    for part in [
        "db04     running",
        "rideshare_slot_db04  active",
        "stream   db04  streaming",
    ] {
        assert!(status.contains(part), "status lacks {part:?}:\n{status}");
    }

    let removed = set.expect(&["teardown"]);
    for &node in &nodes {
        assert!(
            !set.dir.join(node.name()).exists(),
            "{node} left:\n{removed}"
        );
    }
}

/// When each node's postmaster started.
fn start_times(set: &LocalSet, nodes: &[NodeId]) -> Vec<String> {
    nodes
        .iter()
        .map(|&node| set.sql(node, "SELECT pg_postmaster_start_time()").unwrap())
        .collect()
}

/// `provision --sync`: `synchronous_standby_names` naming every node on every node, each
/// replica known by its name; a commit then waits while every replica is down (seen in
/// `pg_stat_activity` as the `SyncRep` wait, then cancelled, which ends the wait with
/// PostgreSQL's warning: `statement_timeout` cannot bound it, as PostgreSQL disables that
/// timer before committing), and no longer once they are back.
#[test]
fn sync_sets_every_node_and_commits_wait_for_a_replica() {
    let set = LocalSet::new("sync", 2);
    let first = set.expect(&["provision", "--sync"]);
    let sync_line = first
        .lines()
        .find(|l| l.starts_with("[10/11] synchronous replication: "))
        .unwrap_or_else(|| panic!("no synchronous replication line:\n{first}"));
    assert!(
        sync_line.contains("ANY 1 (db01, db02, db03) on every node ... done in"),
        "{sync_line}"
    );
    let nodes = NodeId::first(2);
    for &node in &nodes {
        let names = set.sql(node, "SHOW synchronous_standby_names").unwrap();
        assert_eq!(names, "ANY 1 (db01, db02, db03)", "{node}");
    }
    let standbys = set
        .sql(
            NodeId::DB01,
            "SELECT string_agg(application_name || ':' || sync_state, ',' ORDER BY application_name) \
             FROM pg_stat_replication",
        )
        .unwrap();
    assert_eq!(standbys, "db02:quorum,db03:quorum");
    let again = set.expect(&["provision", "--sync"]);
    assert!(
        step_lines(&again).iter().all(|(_, already)| *already),
        "{again}"
    );

    let rt = set.runtime();
    for &replica in &nodes[1..] {
        block_on(rt.stop(replica)).unwrap();
    }
    let insert = "INSERT INTO riders (id) VALUES (100)";
    let waited = std::thread::scope(|scope| {
        let commit = scope.spawn(|| block_on(try_sql(&rt, NodeId::DB01, insert)));
        let waiting = "SELECT pid FROM pg_stat_activity \
                       WHERE wait_event = 'SyncRep' AND query LIKE 'INSERT INTO riders%'";
        let mut pid = String::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while pid.is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
            pid = set.sql(NodeId::DB01, waiting).unwrap();
        }
        // Ends the wait whether it was seen or not, so the test never hangs.
        let cancel = "SELECT count(pg_cancel_backend(pid)) FROM pg_stat_activity \
                      WHERE query LIKE 'INSERT INTO riders%' AND pid <> pg_backend_pid()";
        set.sql(NodeId::DB01, cancel).unwrap();
        assert!(!pid.is_empty(), "the commit never waited for a replica");
        commit.join().unwrap().unwrap()
    });
    assert!(
        waited
            .stderr
            .contains("canceling wait for synchronous replication"),
        "{waited:?}"
    );

    for &replica in &nodes[1..] {
        block_on(rt.start(replica)).unwrap();
    }
    // Back and streaming (bounded) before the commit that must not wait.
    let quorum = "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'quorum'";
    wait_until(
        "the replicas to stream again",
        Duration::from_secs(30),
        || Ok(set.sql(NodeId::DB01, quorum)? == "2"),
    )
    .unwrap();
    let began = Instant::now();
    let committed = block_on(try_sql(
        &rt,
        NodeId::DB01,
        "INSERT INTO riders (id) VALUES (101)",
    ))
    .unwrap();
    assert!(
        committed.success() && committed.stderr.is_empty(),
        "with the replicas back a commit is acknowledged: {committed:?}"
    );
    assert!(began.elapsed() < Duration::from_secs(30));
}
