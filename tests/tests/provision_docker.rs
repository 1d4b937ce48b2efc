//! `pgrepl-proxy provision` through the real Docker engine, with the locally built PostgreSQL
//! image: the tutorial's pair checked from outside with `docker exec psql`, the proxy serving
//! over it (`up`), a second provision that changes nothing, teardown that leaves nothing, and
//! the errors a user meets. Fails when Docker is unreachable (see `SKIP_DOCKER_TESTS`).

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use pgrepl_tests::provisioning::{
    assert_healthy_status, docker, docker_psql, docker_suite_enabled, engine_turn, pgrepl,
    pgrepl_ok, step_lines, step_outcomes, EngineTurn, LOCAL_IMAGE,
};
use pgrepl_tests::{free_port, free_ports};
use pgrepl_tests::{proxy_command, wait_until};
use tokio_postgres::NoTls;

/// Ports for db01 and db02 that nothing else uses, as `[provision]` overrides.
fn port_env() -> Vec<(String, String)> {
    vec![
        (
            "PGREPL_PROVISION__PRIMARY_PORT".into(),
            free_port().to_string(),
        ),
        (
            "PGREPL_PROVISION__REPLICA_PORT".into(),
            free_port().to_string(),
        ),
    ]
}

fn as_refs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// The engine's turn with nothing of provision's on it, or `None` when the Docker suites are
/// skipped (see `SKIP_DOCKER_TESTS`).
fn fresh_engine() -> Option<EngineTurn> {
    if !docker_suite_enabled() {
        return None;
    }
    let turn = engine_turn();
    teardown();
    Some(turn)
}

fn teardown() -> String {
    let run = pgrepl(&["teardown"], &[]);
    assert!(run.success, "teardown failed: {}", run.stderr);
    run.stdout
}

#[test]
fn provision_verify_serve_reprovision_teardown() {
    let Some(_turn) = fresh_engine() else {
        return;
    };
    let env = port_env();
    let env = as_refs(&env);

    let first = pgrepl(&["provision", "--image", LOCAL_IMAGE], &env);
    assert!(
        first.success,
        "provision failed:\n{}{}",
        first.stdout, first.stderr
    );
    let outcomes = step_outcomes(&first.stdout);
    assert!(
        outcomes.iter().all(|already| !already),
        "a fresh pair has every step to do:\n{}",
        first.stdout
    );
    assert!(
        !first.stdout.contains("password ") || first.stdout.contains("password in db02's .pgpass"),
        "the replication password is not printed unless asked:\n{}",
        first.stdout
    );

    tutorial_checks_from_outside();
    containers_follow_the_issue(&env);

    let second = pgrepl(&["provision", "--image", LOCAL_IMAGE], &env);
    assert!(
        second.success,
        "second provision failed:\n{}{}",
        second.stdout, second.stderr
    );
    assert!(
        step_outcomes(&second.stdout).iter().all(|already| *already),
        "a provisioned pair is left as it is:\n{}",
        second.stdout
    );
    let rows = docker_psql(
        "db02",
        "SELECT string_agg(id::text, ',' ORDER BY id) FROM riders",
    );
    assert_eq!(rows.stdout.trim(), "1,2", "no data lost by re-provisioning");

    let verify = pgrepl(&["verify"], &env);
    assert!(
        verify.success,
        "verify failed:\n{}{}",
        verify.stdout, verify.stderr
    );
    for check in [
        "refuses writes",
        "seen on db02",
        "is active",
        "is streaming",
    ] {
        assert!(
            verify.stdout.contains(check),
            "verify did not report {check:?}:\n{}",
            verify.stdout
        );
    }
    assert_healthy_status(&pgrepl(&["status", "--pair"], &env));

    proxy_serves(&env, &["db01", "db02"]);

    let removed = teardown();
    for item in ["db01", "db02", "db01-data", "db02-data", "rideshare-net"] {
        assert!(
            removed.contains(item),
            "teardown did not report {item}:\n{removed}"
        );
    }
    nothing_left();
}

/// Step 11 as the tutorial does it, from outside: db02 refuses CREATE TABLE as read-only, a
/// row written on db01 appears on db02; plus the files and slot the steps made.
fn tutorial_checks_from_outside() {
    let refused = docker_psql("db02", "CREATE TABLE nope (id INT)");
    assert!(!refused.success, "db02 accepted a write");
    assert!(
        refused
            .stderr
            .contains("cannot execute CREATE TABLE in a read-only transaction"),
        "{}",
        refused.stderr
    );
    let insert = docker_psql("db01", "INSERT INTO riders (id) VALUES (2)");
    assert!(insert.success, "{}", insert.stderr);
    wait_until("the row on db02", Duration::from_secs(30), || {
        Ok(
            docker_psql("db02", "SELECT count(*) FROM riders WHERE id = 2")
                .stdout
                .trim()
                == "1",
        )
    })
    .unwrap();
    let pgpass = docker(&[
        "exec",
        "db02",
        "stat",
        "-c",
        "%U:%G %a",
        "/var/lib/postgresql/.pgpass",
    ]);
    assert_eq!(pgpass.stdout.trim(), "postgres:root 600");
    let slot = docker_psql(
        "db01",
        "SELECT active FROM pg_replication_slots WHERE slot_name = 'rideshare_slot'",
    );
    assert_eq!(slot.stdout.trim(), "t");
    let hba = docker(&[
        "exec",
        "db01",
        "cat",
        "/var/lib/postgresql/data/pg_hba.conf",
    ]);
    let db02_ip = docker(&[
        "inspect",
        "-f",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        "db02",
    ]);
    let line = format!("replication_user  {}/32  md5", db02_ip.stdout.trim());
    assert!(
        hba.stdout.contains(&line),
        "pg_hba.conf lacks {line:?}:\n{}",
        hba.stdout
    );
}

/// No restart policy, ports on 127.0.0.1 only, named volumes, the user-defined network.
fn containers_follow_the_issue(env: &[(&str, &str)]) {
    for (name, port_key) in [
        ("db01", "PGREPL_PROVISION__PRIMARY_PORT"),
        ("db02", "PGREPL_PROVISION__REPLICA_PORT"),
    ] {
        let port = env.iter().find(|(k, _)| *k == port_key).unwrap().1;
        let inspect = docker(&[
            "inspect",
            "-f",
            "{{.HostConfig.RestartPolicy.Name}}|{{json .NetworkSettings.Ports}}|\
             {{range .Mounts}}{{.Name}}{{end}}|{{range $k, $v := .NetworkSettings.Networks}}{{$k}}{{end}}",
            name,
        ]);
        let fields: Vec<&str> = inspect.stdout.trim().split('|').collect();
        assert!(
            fields[0].is_empty() || fields[0] == "no",
            "{name} has restart policy {}",
            fields[0]
        );
        assert!(
            fields[1].contains(&format!("\"HostIp\":\"127.0.0.1\",\"HostPort\":\"{port}\"")),
            "{name} is not published on 127.0.0.1:{port} only: {}",
            fields[1]
        );
        assert!(
            !fields[1].contains("0.0.0.0"),
            "{name} published beyond loopback"
        );
        assert_eq!(fields[2], format!("{name}-data"));
        assert_eq!(fields[3], "rideshare-net");
    }
}

/// `up` on the provisioned `nodes`: it names them all, following the primary, prints how
/// to connect, and through it a read lands on a standby and a write on the primary.
fn proxy_serves(env: &[(&str, &str)], nodes: &[&str]) {
    let listen = format!("127.0.0.1:{}", free_port());
    let mut cmd = proxy_command();
    cmd.args(["up", "--image", LOCAL_IMAGE])
        .env("PGREPL_PROXY__LISTEN", &listen)
        .env(
            "PGREPL_METRICS__LISTEN",
            format!("127.0.0.1:{}", free_port()),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("cannot start pgrepl-proxy up");
    // Drained as it comes, so a full pipe never stalls the proxy's logging; shown on failure.
    let log = {
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default())
    };
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let (printed, conninfo) = connect_line(&mut child);
        let served = printed
            .lines()
            .find(|line| line.starts_with("proxy on "))
            .unwrap_or_else(|| panic!("up did not say where it sends traffic:\n{printed}"));
        assert!(
            served.contains("writes to db01")
                && served.ends_with("writes follow the primary")
                && nodes.iter().all(|node| served.contains(node)),
            "up does not serve {nodes:?} following the primary:\n{printed}"
        );
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(reads_and_writes(&conninfo));
    }));
    // SIGTERM: the proxy's graceful shutdown.
    // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().expect("cannot wait for up");
    let log = log.join().unwrap_or_default();
    if let Err(panic) = result {
        let what = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("a panic");
        panic!("{what}\npgrepl-proxy up logged:\n{log}");
    }
    assert!(
        status.success(),
        "up did not exit cleanly on SIGTERM: {status}"
    );
}

/// Reads `up`'s stdout until its `connect: psql "..."` line: what it printed before, and
/// the conninfo in that line.
fn connect_line(child: &mut Child) -> (String, String) {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = String::new();
    loop {
        match rx.recv_timeout(Duration::from_secs(300)) {
            Ok(line) => {
                if let Some(rest) = line.strip_prefix("connect: psql \"") {
                    return (seen, rest.trim_end_matches('"').to_owned());
                }
                seen += &line;
                seen.push('\n');
            }
            Err(_) => panic!("up printed no connect line; it printed:\n{seen}"),
        }
    }
}

async fn reads_and_writes(conninfo: &str) {
    let (client, connection) = bounded_connect(conninfo).await;
    tokio::spawn(connection);
    // pg_is_in_recovery() is node-local (the proxy asks the primary); a setting is not, and
    // a standby runs every transaction read-only.
    let read = client
        .query_one(
            "SELECT current_setting('transaction_read_only') = 'on'",
            &[],
        )
        .await
        .unwrap();
    assert!(
        read.get::<_, bool>(0),
        "a read through the proxy ran on the primary"
    );
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS up_check (id INT); INSERT INTO up_check VALUES (7)",
        )
        .await
        .expect("a write through the proxy failed");
    let tx_read = client
        .simple_query("BEGIN; SELECT current_setting('transaction_read_only') = 'on'; COMMIT")
        .await
        .unwrap();
    let in_tx = pgrepl_tests::suite::last_first(&tx_read[..tx_read.len() - 1]);
    assert_eq!(
        in_tx.as_deref(),
        Some("f"),
        "a read in a transaction stays on the primary"
    );
    let on_primary = docker(&[
        "exec",
        "db01",
        "psql",
        "-XAtq",
        "-U",
        "postgres",
        "-d",
        "app",
        "-c",
        "SELECT count(*) FROM up_check WHERE id = 7",
    ]);
    assert_eq!(
        on_primary.stdout.trim(),
        "1",
        "the write went to db01: {}",
        on_primary.stderr
    );
}

async fn bounded_connect(
    conninfo: &str,
) -> (
    tokio_postgres::Client,
    tokio_postgres::Connection<tokio_postgres::Socket, tokio_postgres::tls::NoTlsStream>,
) {
    for _ in 0..50 {
        if let Ok(pair) = tokio_postgres::connect(conninfo, NoTls).await {
            return pair;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("cannot connect through the proxy with {conninfo}");
}

/// Nothing of the pair is left: containers, volumes, network.
fn nothing_left() {
    let containers = docker(&["ps", "-a", "--format", "{{.Names}}"]);
    for name in containers.stdout.lines() {
        assert!(!name.starts_with("db0"), "container {name} left behind");
    }
    let volumes = docker(&["volume", "ls", "--format", "{{.Name}}"]);
    assert!(
        !volumes
            .stdout
            .lines()
            .any(|v| v.starts_with("db0") && v.ends_with("-data")),
        "volumes left behind: {}",
        volumes.stdout
    );
    let networks = docker(&["network", "ls", "--format", "{{.Name}}"]);
    assert!(
        !networks.stdout.lines().any(|n| n == "rideshare-net"),
        "network left behind"
    );
}

/// `provision --replicas 3` twice: db02..db04 stream through their own slots, each on its
/// own port, and the second run changes nothing (every step already done, the same
/// containers, none restarted); teardown removes all four.
#[test]
fn three_replicas_provision_twice_and_tear_down() {
    let Some(_turn) = fresh_engine() else {
        return;
    };
    let began = Instant::now();
    let replica_port = free_ports(3);
    let env = [
        ("PGREPL_PROVISION__PRIMARY_PORT", free_port().to_string()),
        ("PGREPL_PROVISION__REPLICA_PORT", replica_port.to_string()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let args = ["provision", "--image", LOCAL_IMAGE, "--replicas", "3"];
    let first = pgrepl(&args, &env);
    assert!(
        first.success,
        "provision failed:\n{}{}",
        first.stdout, first.stderr
    );
    let lines = step_lines(&first.stdout);
    assert_eq!(lines.len(), 5 + 6 * 3, "{}", first.stdout);
    assert!(
        lines.iter().all(|(_, already)| !already),
        "{}",
        first.stdout
    );

    let nodes = ["db01", "db02", "db03", "db04"];
    let containers = ids_and_start_times(&nodes);
    let streams = docker_psql(
        "db01",
        "SELECT string_agg(s.slot_name || '=' || r.application_name || ':' || r.state, ',' \
         ORDER BY s.slot_name) FROM pg_replication_slots s \
         JOIN pg_stat_replication r ON r.pid = s.active_pid",
    );
    assert_eq!(
        streams.stdout.trim(),
        "rideshare_slot=db02:streaming,rideshare_slot_db03=db03:streaming,\
         rideshare_slot_db04=db04:streaming",
        "{}",
        streams.stderr
    );
    let port = docker(&["port", "db04", "5432/tcp"]);
    assert_eq!(
        port.stdout.trim(),
        format!("127.0.0.1:{}", replica_port + 2)
    );
    for node in &nodes[1..] {
        let refused = docker_psql(node, "CREATE TABLE nope (id INT)");
        assert!(
            refused.stderr.contains("read-only transaction"),
            "{node}: {}",
            refused.stderr
        );
        assert_eq!(
            docker_psql(node, "SHOW wal_log_hints").stdout.trim(),
            "on",
            "{node}"
        );
    }

    let second = pgrepl(&args, &env);
    assert!(
        second.success,
        "second provision failed:\n{}{}",
        second.stdout, second.stderr
    );
    assert!(
        step_lines(&second.stdout)
            .iter()
            .all(|(_, already)| *already),
        "a provisioned set is left as it is:\n{}",
        second.stdout
    );
    assert_eq!(
        ids_and_start_times(&nodes),
        containers,
        "the second run replaced or restarted a container"
    );
    // The standbys replay the login role `up` creates only 2 s after db01 has it: `up`
    // waits for them before serving, so its first read still lands on one.
    let standbys = ["db02", "db03", "db04"];
    for node in standbys {
        let paused = docker_psql(node, "SELECT pg_wal_replay_pause()");
        assert!(paused.success, "{node}: {}", paused.stderr);
    }
    let app_password = || {
        docker_psql(
            "db01",
            "SELECT rolpassword FROM pg_authid WHERE rolname = 'app'",
        )
        .stdout
    };
    let before = app_password();
    let resume = std::thread::spawn(move || {
        let set = wait_until(
            "up to set app's password on db01",
            Duration::from_secs(120),
            || Ok(app_password() != before),
        );
        std::thread::sleep(Duration::from_secs(2));
        for node in standbys {
            let resumed = docker_psql(node, "SELECT pg_wal_replay_resume()");
            assert!(resumed.success, "{node}: {}", resumed.stderr);
        }
        set.unwrap();
    });
    proxy_serves(&env, &nodes);
    resume.join().unwrap();

    let removed = teardown();
    for item in ["db03", "db04", "db03-data", "db04-data"] {
        assert!(
            removed.contains(item),
            "teardown did not report {item}:\n{removed}"
        );
    }
    nothing_left();
    assert!(
        began.elapsed() < Duration::from_secs(180),
        "three replicas took {:?}, more than 180 s",
        began.elapsed()
    );
}

/// failover, rejoin and switchover on containers: db01 killed (`docker kill`), the most
/// advanced replica promoted with every acknowledged write, db01 rewound back in, then a
/// switchover back to db01 without a proxy; every rerun only "already done".
#[test]
fn failover_rejoin_and_switchover_on_containers() {
    let Some(_turn) = fresh_engine() else {
        return;
    };
    let began = Instant::now();
    let env = [
        ("PGREPL_PROVISION__PRIMARY_PORT", free_port().to_string()),
        ("PGREPL_PROVISION__REPLICA_PORT", free_ports(2).to_string()),
        ("PGREPL_PROVISION__REPLICAS", "2".to_owned()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let run = |args: &[&str]| pgrepl_ok(args, &env);
    let all_already = |stdout: &str| {
        for line in stdout.lines().filter(|l| l.starts_with('[')) {
            assert!(
                line.ends_with("... already done"),
                "a rerun changed something: {line}"
            );
        }
    };
    run(&["provision", "--image", LOCAL_IMAGE, "--sync"]);
    let create = docker_psql("db01", "CREATE TABLE acked (id int PRIMARY KEY)");
    assert!(create.success, "{}", create.stderr);
    for id in 1..=20 {
        let insert = docker_psql("db01", &format!("INSERT INTO acked VALUES ({id})"));
        assert!(insert.success, "{}", insert.stderr);
    }
    let killed = docker(&["kill", "db01"]);
    assert!(killed.success, "{}", killed.stderr);

    let out = run(&["failover"]);
    let promoted = if out.contains("promote db02") {
        "db02"
    } else {
        "db03"
    };
    let count = docker_psql(promoted, "SELECT count(*) FROM acked");
    assert_eq!(
        count.stdout.trim(),
        "20",
        "acknowledged writes on {promoted}"
    );
    all_already(&run(&["failover"]));

    let out = run(&["rejoin", "db01"]);
    assert!(out.contains("(rewound with pg_rewind)"), "{out}");
    assert_eq!(
        docker_psql("db01", "SELECT pg_is_in_recovery()")
            .stdout
            .trim(),
        "t"
    );
    all_already(&run(&["rejoin", "db01"]));

    run(&["switchover", "--to", "db01", "--without-proxy"]);
    assert_eq!(
        docker_psql("db01", "SELECT pg_is_in_recovery()")
            .stdout
            .trim(),
        "f"
    );
    assert_eq!(
        docker_psql("db01", "SELECT count(*) FROM acked")
            .stdout
            .trim(),
        "20"
    );
    all_already(&run(&["switchover", "--to", "db01", "--without-proxy"]));
    let verify = run(&["verify"]);
    assert_eq!(
        verify.lines().filter(|l| l.starts_with("ok  ")).count(),
        8,
        "{verify}"
    );

    teardown();
    nothing_left();
    assert!(
        began.elapsed() < Duration::from_secs(300),
        "took {:?}",
        began.elapsed()
    );
}

/// Each container's id and when it last started.
fn ids_and_start_times(names: &[&str]) -> Vec<String> {
    names
        .iter()
        .map(|name| {
            let run = docker(&["inspect", "-f", "{{.Id}} {{.State.StartedAt}}", name]);
            assert!(run.success, "{name}: {}", run.stderr);
            run.stdout.trim().to_owned()
        })
        .collect()
}

#[test]
fn dry_run_prints_docker_commands_and_changes_nothing() {
    let Some(_turn) = fresh_engine() else {
        return;
    };
    let run = pgrepl(&["provision", "--dry-run", "--image", LOCAL_IMAGE], &[]);
    assert!(run.success, "{}", run.stderr);
    for part in [
        "docker network create --driver bridge",
        "rideshare-net",
        "-p 127.0.0.1:54321:5432",
        "--slot=rideshare_slot",
        "# [11/11]",
    ] {
        assert!(
            run.stdout.contains(part),
            "dry run lacks {part:?}:\n{}",
            run.stdout
        );
    }
    nothing_left();
}

#[test]
fn a_foreign_db01_is_left_alone() {
    let Some(_turn) = fresh_engine() else {
        return;
    };
    let created = docker(&["create", "--name", "db01", LOCAL_IMAGE]);
    assert!(created.success, "{}", created.stderr);
    let env = port_env();
    let run = pgrepl(&["provision", "--image", LOCAL_IMAGE], &as_refs(&env));
    let still_there = docker(&["inspect", "-f", "{{.State.Status}}", "db01"]);
    docker(&["rm", "-f", "db01"]);
    teardown();
    assert!(!run.success, "provision used a db01 it did not create");
    assert!(
        run.stderr.contains("db01") && run.stderr.contains("--adopt"),
        "{}",
        run.stderr
    );
    assert_eq!(
        still_there.stdout.trim(),
        "created",
        "the foreign db01 was touched"
    );
}

#[test]
fn a_port_in_use_is_named() {
    let Some(_turn) = fresh_engine() else {
        return;
    };
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port().to_string();
    let env = [
        ("PGREPL_PROVISION__PRIMARY_PORT", port.as_str()),
        ("PGREPL_PROVISION__REPLICA_PORT", &free_port().to_string()),
    ];
    let run = pgrepl(&["provision", "--image", LOCAL_IMAGE], &env);
    teardown();
    assert!(!run.success);
    assert!(
        run.stderr.contains(&format!("127.0.0.1:{port}")) && run.stderr.contains("primary_port"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_missing_image_is_named() {
    if !docker_suite_enabled() {
        return;
    }
    let run = pgrepl(&["provision", "--image", "pgrepl/no-such-image:0"], &[]);
    assert!(!run.success);
    assert!(
        run.stderr.contains("pgrepl/no-such-image:0") && run.stderr.contains("--image"),
        "{}",
        run.stderr
    );
}

#[test]
fn an_unreachable_engine_says_where_it_looked() {
    let run = pgrepl(
        &["provision"],
        &[("DOCKER_HOST", "unix:///nonexistent/docker.sock")],
    );
    assert!(!run.success);
    assert!(
        run.stderr.contains("unix:///nonexistent/docker.sock"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("DOCKER_HOST"), "{}", run.stderr);
}

/// The across-hosts rig on one engine: each node on a network of its own (its "host"), and
/// a shared "wan" network where each has a fixed address, its `peer_address`. Removed when
/// dropped, passed or not.
struct WanRig {
    env: Vec<(String, String)>,
    wan: String,
    /// The wan's subnet, `10.213.N.0/24`.
    subnet: String,
    /// The wan addresses of db01 and db02.
    ips: [String; 2],
    /// The published addresses (`listen`) of db01 and db02.
    listen: [String; 2],
}

impl WanRig {
    /// Networks named `pgrepl-<test>-...`; the wan gets a /24 of 10.213.0.0/16 picked from
    /// the pid (another one if Docker finds it in use).
    fn new(test: &str) -> WanRig {
        let wan = format!("pgrepl-{test}-wan");
        docker(&["network", "rm", &wan]);
        let mut third = std::process::id() % 250;
        let subnet = loop {
            let subnet = format!("10.213.{third}");
            let made = docker(&[
                "network",
                "create",
                "--subnet",
                &format!("{subnet}.0/24"),
                &wan,
            ]);
            if made.success {
                break subnet;
            }
            assert!(
                made.stderr.contains("overlap") && third < 500,
                "cannot create {wan}: {}",
                made.stderr
            );
            third = (third + 1) % 250;
        };
        let ips = [format!("{subnet}.11"), format!("{subnet}.12")];
        let listen = [
            format!("127.0.0.1:{}", free_port()),
            format!("127.0.0.1:{}", free_port()),
        ];
        let mut env = Vec::new();
        for (i, node) in ["DB01", "DB02"].iter().enumerate() {
            let key = |k: &str| format!("PGREPL_PROVISION__NODES__{node}__{k}");
            env.push((
                key("NETWORK"),
                format!("pgrepl-{test}-{}", node.to_lowercase()),
            ));
            env.push((key("PEER_ADDRESS"), ips[i].clone()));
            env.push((key("LISTEN"), listen[i].clone()));
        }
        // The same engine through another path: a second client, as a second host would get.
        env.push((
            "PGREPL_PROVISION__NODES__DB02__DOCKER_HOST".into(),
            "unix:///run/docker.sock".into(),
        ));
        WanRig {
            env,
            wan,
            subnet: format!("{subnet}.0/24"),
            ips,
            listen,
        }
    }

    fn run(&self, args: &[&str]) -> pgrepl_tests::suite::PsqlRun {
        pgrepl(args, &as_refs(&self.env))
    }
}

impl Drop for WanRig {
    fn drop(&mut self) {
        let run = self.run(&["teardown"]);
        if !run.success {
            eprintln!("teardown of the wan rig failed: {}", run.stderr);
        }
        docker(&["network", "rm", &self.wan]);
    }
}

/// A cut of `node` from the wan, healed when dropped, passed or not, by connecting it again
/// with the same address. `docker network disconnect` alone would leave the node a default
/// route to the wan's addresses through its own network: a connection opened during the cut
/// would take that network's source address and stay unanswered after the heal, for as long
/// as its SYN retries last (about 2 minutes), which no real partition does. So while cut the
/// wan's subnet is a blackhole inside the node's network namespace: packets to it vanish, as
/// in a partition, and new connections fail at once.
struct WanCut<'a> {
    rig: &'a WanRig,
    node: &'static str,
    ip: String,
}

impl<'a> WanCut<'a> {
    fn new(rig: &'a WanRig, node: &'static str, ip: &str) -> WanCut<'a> {
        let cut = WanCut {
            rig,
            node,
            ip: ip.to_owned(),
        };
        let off = docker(&["network", "disconnect", &rig.wan, node]);
        assert!(off.success, "cannot cut {node}: {}", off.stderr);
        let blackhole = cut.route("add");
        assert!(
            blackhole.success,
            "cannot blackhole the wan in {node}: {}",
            blackhole.stderr
        );
        cut
    }

    /// `ip route add|del blackhole <wan subnet>` in the node's network namespace.
    fn route(&self, action: &str) -> pgrepl_tests::suite::PsqlRun {
        let pid = docker(&["inspect", "-f", "{{.State.Pid}}", self.node]);
        let mut cmd = std::process::Command::new("nsenter");
        cmd.args([
            "-t",
            pid.stdout.trim(),
            "-n",
            "ip",
            "route",
            action,
            "blackhole",
        ])
        .arg(&self.rig.subnet);
        pgrepl_tests::suite::run_with_timeout(cmd, b"", Duration::from_secs(30))
            .expect("cannot run nsenter")
            .into_text()
    }
}

impl Drop for WanCut<'_> {
    fn drop(&mut self) {
        let unrouted = self.route("del");
        if !unrouted.success {
            eprintln!(
                "cannot remove the blackhole in {}: {}",
                self.node, unrouted.stderr
            );
        }
        let healed = docker(&[
            "network",
            "connect",
            "--ip",
            &self.ip,
            &self.rig.wan,
            self.node,
        ]);
        if !healed.success {
            eprintln!("cannot heal the cut of {}: {}", self.node, healed.stderr);
        }
    }
}

/// Whether a PostgreSQL server answers at `address` (an SSLRequest gets its one-byte answer):
/// the proxy's path to a node, which no wan cut touches.
fn server_answers(address: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(address) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let ssl_request = [0, 0, 0, 8, 4, 210, 22, 47];
    let mut answer = [0u8; 1];
    stream.write_all(&ssl_request).is_ok()
        && stream.read_exact(&mut answer).is_ok()
        && matches!(&answer, b"N" | b"S")
}

/// db02's row in db01's pg_stat_replication: `client_addr|state`, or empty.
fn replication_row() -> String {
    docker_psql(
        "db01",
        "SELECT host(client_addr) || '|' || state FROM pg_stat_replication \
         WHERE application_name = 'db02'",
    )
    .stdout
    .trim()
    .to_owned()
}

/// Whether db01 shows db02 streaming from `ip`.
fn streams_from(ip: &str) -> bool {
    replication_row() == format!("{ip}|streaming")
}

/// How many copies of the row written during the cut db02 has.
fn cut_rows_on_db02() -> String {
    docker_psql("db02", "SELECT count(*) FROM riders WHERE id = 42")
        .stdout
        .trim()
        .to_owned()
}

/// Nodes on several "hosts" (`[provision.nodes.dbNN]`): db01 and db02 each on a network of
/// its own, replicating over a shared wan where each has a fixed `peer_address`, published
/// where `listen` says, db02 through a second engine client. A cut of db02 from the wan stops
/// its replication (lag grows) while its published port still answers; healed, it streams
/// again through its slot, from the same address.
#[test]
fn nodes_on_their_own_networks_replicate_over_the_wan_and_survive_a_cut() {
    if !docker_suite_enabled() {
        return;
    }
    let _turn = engine_turn();
    teardown();
    let began = Instant::now();
    let rig = WanRig::new("hosts");
    let first = rig.run(&["provision", "--image", LOCAL_IMAGE]);
    assert!(
        first.success,
        "provision failed:\n{}{}",
        first.stdout, first.stderr
    );
    assert!(
        step_outcomes(&first.stdout).iter().all(|already| !already),
        "{}",
        first.stdout
    );
    assert!(
        first
            .stdout
            .contains(&format!("db02 listens on {}", rig.listen[1])),
        "{}",
        first.stdout
    );
    assert!(
        first.stdout.contains("unix:///run/docker.sock"),
        "two engine clients are named: {}",
        first.stdout
    );
    for (i, node) in ["db01", "db02"].iter().enumerate() {
        let networks = docker(&[
            "inspect",
            "-f",
            "{{range $k, $v := .NetworkSettings.Networks}}{{$k}}={{$v.IPAddress}} {{end}}",
            node,
        ]);
        let networks = networks.stdout.trim();
        assert!(
            networks.contains(&format!("{}={}", rig.wan, rig.ips[i]))
                && networks.contains(&format!("pgrepl-hosts-{node}=")),
            "{node} is not on its own network and the wan: {networks}"
        );
        assert!(!networks.contains("rideshare-net"), "{networks}");
        let port = docker(&["port", node, "5432/tcp"]);
        assert_eq!(port.stdout.trim(), rig.listen[i], "{node}");
    }
    assert!(
        streams_from(&rig.ips[1]),
        "db02 streams from its wan address: {}",
        replication_row()
    );
    let conninfo = docker_psql("db02", "SHOW primary_conninfo").stdout;
    assert!(
        conninfo.contains(&format!("host={}", rig.ips[0])),
        "db02 reaches db01 at its wan address: {conninfo}"
    );
    let hba = docker(&[
        "exec",
        "db01",
        "cat",
        "/var/lib/postgresql/data/pg_hba.conf",
    ])
    .stdout;
    assert!(hba.contains(&format!("{}/32", rig.ips[1])), "{hba}");

    let second = rig.run(&["provision", "--image", LOCAL_IMAGE]);
    assert!(
        second.success && step_outcomes(&second.stdout).iter().all(|already| *already),
        "a second provision changes nothing:\n{}{}",
        second.stdout,
        second.stderr
    );

    // The cut: db02 off the wan (see WanCut). Its packets to db01 vanish, as in a real
    // partition, so the stream is found dead by the replication timeouts (60 s by default,
    // 5 s here). Writes on db01 stop reaching db02, and the proxy's path (the published port,
    // through db02's own network) still answers.
    for node in ["db01", "db02"] {
        for sql in [
            "ALTER SYSTEM SET wal_receiver_timeout = '5s'",
            "ALTER SYSTEM SET wal_sender_timeout = '5s'",
            "SELECT pg_reload_conf()",
        ] {
            let set = docker_psql(node, sql);
            assert!(set.success, "{node}: {}", set.stderr);
        }
    }
    let cut_at = Instant::now();
    let cut = WanCut::new(&rig, "db02", &rig.ips[1]);
    assert!(docker_psql("db01", "INSERT INTO riders (id) VALUES (42)").success);
    let receiving = || {
        docker_psql(
            "db02",
            "SELECT count(*) FROM pg_stat_wal_receiver WHERE status = 'streaming'",
        )
        .stdout
        .trim()
            == "1"
    };
    wait_until(
        "db02's receiver or db01's sender to drop the stream",
        Duration::from_secs(30),
        || Ok(!receiving() || replication_row().is_empty()),
    )
    .unwrap();
    let dropped_after = cut_at.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        cut_rows_on_db02(),
        "0",
        "a write made during the cut reached db02"
    );
    let primary_at = docker_psql("db01", "SELECT pg_current_wal_lsn()").stdout;
    let behind = docker_psql(
        "db02",
        &format!(
            "SELECT pg_wal_lsn_diff('{}', pg_last_wal_replay_lsn())",
            primary_at.trim()
        ),
    );
    let lag_bytes: f64 = behind.stdout.trim().parse().unwrap_or(0.0);
    assert!(lag_bytes > 0.0, "db02 is not behind db01: {behind:?}");
    assert!(
        server_answers(&rig.listen[1]),
        "db02's published port stopped answering during a wan cut"
    );

    let healed_at = Instant::now();
    drop(cut);
    let streams_again = wait_until("db02 to stream again", Duration::from_secs(60), || {
        Ok(streams_from(&rig.ips[1]))
    });
    if let Err(e) = streams_again {
        let networks = docker(&[
            "inspect",
            "-f",
            "{{json .NetworkSettings.Networks}}",
            "db02",
        ]);
        let log = docker(&["logs", "--tail", "15", "db02"]);
        panic!(
            "{e:#}: db01 shows {:?}; db02 is on {}; db02's log:\n{}{}",
            replication_row(),
            networks.stdout.trim(),
            log.stdout,
            log.stderr
        );
    }
    let streaming_after = healed_at.elapsed();
    wait_until(
        "the write made during the cut on db02",
        Duration::from_secs(30),
        || Ok(cut_rows_on_db02() == "1"),
    )
    .unwrap();
    let active = docker_psql(
        "db01",
        "SELECT active FROM pg_replication_slots WHERE slot_name = 'rideshare_slot'",
    );
    assert_eq!(active.stdout.trim(), "t");
    eprintln!(
        "wan cut: stream dropped {:.2} s after the cut, db02 {lag_bytes} bytes behind; \
         streaming again {:.2} s after the heal",
        dropped_after.as_secs_f64(),
        streaming_after.as_secs_f64()
    );

    let removed = rig.run(&["teardown"]);
    assert!(removed.success, "{}", removed.stderr);
    for item in [
        "network pgrepl-hosts-db01",
        "network pgrepl-hosts-db02",
        "db02-data",
    ] {
        assert!(
            removed.stdout.contains(item),
            "teardown did not report {item}:\n{}",
            removed.stdout
        );
    }
    drop(rig);
    nothing_left();
    eprintln!("wan rig: {:.1} s in all", began.elapsed().as_secs_f64());
    assert!(
        began.elapsed() < Duration::from_secs(240),
        "the wan rig took {:?}",
        began.elapsed()
    );
}

/// A command, its extra environment, and words its error must contain.
type Refusal<'a> = (&'a [&'a str], Vec<(&'a str, &'a str)>, &'a [&'a str]);

/// Per-node settings that cannot apply are refused before anything is touched: on the local
/// runtime, in a dry run, nodes on different networks with no peer addresses, and TLS without
/// verification to a tcp:// engine (not supported, so never spoken in clear).
#[test]
fn per_node_settings_are_refused_where_they_cannot_apply() {
    let network = ("PGREPL_PROVISION__NODES__DB02__NETWORK", "elsewhere");
    // (arguments, extra environment, words the error must contain)
    let cases: [Refusal; 4] = [
        (
            &["provision", "--runtime", "local"],
            vec![network],
            &["[provision.nodes.db02]", "--runtime docker"],
        ),
        (
            &["provision", "--dry-run"],
            vec![network],
            &["--dry-run", "[provision.nodes.*]"],
        ),
        (
            &["provision"],
            vec![network],
            &[
                "db01 on rideshare-net, db02 on elsewhere",
                "[provision.nodes.db01] peer_address, [provision.nodes.db02] peer_address",
            ],
        ),
        (
            &["status"],
            vec![
                (
                    "PGREPL_PROVISION__NODES__DB02__DOCKER_HOST",
                    "tcp://127.0.0.1:9",
                ),
                ("DOCKER_TLS", "1"),
            ],
            &[
                "tcp://127.0.0.1:9",
                "[provision.nodes.db02] docker_host",
                "DOCKER_TLS_VERIFY=1",
            ],
        ),
    ];
    for (args, env, words) in cases {
        let run = pgrepl(args, &env);
        assert!(!run.success, "{args:?} {env:?} succeeded:\n{}", run.stdout);
        for word in words {
            assert!(
                run.stderr.contains(word),
                "{args:?} {env:?}: {}",
                run.stderr
            );
        }
    }
}

/// A node's engine reached over TLS as the docker CLI does (`DOCKER_TLS_VERIFY`, the
/// certificates in `DOCKER_CERT_PATH`): the local engine behind a forwarder that requires a
/// client certificate. `status` lists through it; without TLS the same engine is unreachable.
/// (The engine's turn: `status --pair` looks into db01 and db02, which another test may be
/// building meanwhile.)
#[test]
fn a_nodes_engine_is_reached_over_tls() {
    let Some(_turn) = fresh_engine() else {
        return;
    };
    let dir = pgrepl_tests::provisioning::scratch_dir("tls-engine");
    let engine = pgrepl_tests::tls_engine::TlsEngine::start(&dir);
    let cert_path = engine.cert_path.to_string_lossy().into_owned();
    let metrics = format!("127.0.0.1:{}", free_port());
    let base = [
        (
            "PGREPL_PROVISION__NODES__DB02__DOCKER_HOST",
            engine.location.as_str(),
        ),
        ("PGREPL_METRICS__LISTEN", metrics.as_str()),
    ];
    let mut tls = base.to_vec();
    tls.extend([
        ("DOCKER_TLS_VERIFY", "1"),
        ("DOCKER_CERT_PATH", cert_path.as_str()),
    ]);
    let run = pgrepl(&["status", "--pair"], &tls);
    assert!(run.success, "{}{}", run.stdout, run.stderr);
    let described = format!("db02 on {}", engine.location);
    assert!(run.stdout.contains(&described), "{}", run.stdout);

    let clear = pgrepl(&["status", "--pair"], &base);
    assert!(
        !clear.success,
        "plain HTTP reached a TLS engine:\n{}",
        clear.stdout
    );
    assert!(
        clear.stderr.contains(&engine.location) && clear.stderr.contains("docker_host"),
        "{}",
        clear.stderr
    );
}
