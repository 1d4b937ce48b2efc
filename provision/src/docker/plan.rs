//! `provision --dry-run`: the docker CLI commands that do what the 11 steps do through the
//! API, for reading or for running by hand. Passwords appear only as shell variables.

use std::iter;
use std::net::Ipv4Addr;

use pgrepl_config::ProvisionConfig;

use super::names::{
    container_path, home_dir, Resource, PG_ISREADY, PG_PORT, SERVER_USER, STOP_SIGNAL,
    STOP_TIMEOUT_SECS,
};
use super::placement::listen_of;
use crate::runtime::{NodeFile, NodeId};
use crate::steps::{base_backup_script, title, STEPS};
use crate::text::quote;
use crate::topology::Topology;
use crate::tutorial::conf::WAL_SETTINGS;
use crate::tutorial::hba::pg_hba;
use crate::tutorial::pgpass::pgpass;
use crate::tutorial::sql::{replication_user_sql, rewind_grants_sql};
use crate::tutorial::{PGDATA, SLOT};

/// The tutorial's pair: the plan shows it, not more replicas.
const PRIMARY: NodeId = NodeId::DB01;
const REPLICA: NodeId = NodeId::DB02;

/// The permission every file the steps write gets (they are all server configuration or
/// secrets).
const FILE_MODE: &str = "0600";
/// What psql is run with: the superuser, stopping at the first error.
const PSQL: &str = "psql -v ON_ERROR_STOP=1 -U postgres";
/// A fresh random password, as long as provision's own.
const RANDOM_PASSWORD: &str = "$(openssl rand -hex 24)";

/// Each step as a `# [n/11] title` line followed by its commands, for the tutorial's pair
/// (more replicas repeat the replica's steps with their own names, slots and ports).
pub fn docker_commands(config: &ProvisionConfig) -> Vec<String> {
    let pair = Topology::tutorial(1);
    let steps: [Vec<String>; STEPS] = [
        [network(config), run_node(config, PRIMARY)].concat(),
        run_node(config, REPLICA),
        enable_wal(),
        replication_user(config),
        vec![format!(
            "docker exec {PRIMARY} {PSQL} -c \"SELECT PG_CREATE_PHYSICAL_REPLICATION_SLOT('{SLOT}')\""
        )],
        allow_replication(config),
        base_backup(config),
        vec![recovery_setting("primary_conninfo = .*user=replication_user")],
        vec![recovery_setting(&format!("primary_slot_name = '{SLOT}'"))],
        vec![format!("docker start {REPLICA}"), wait_ready(REPLICA)],
        verify(),
    ];
    steps
        .into_iter()
        .enumerate()
        .flat_map(|(i, commands)| {
            let title = title(i + 1, &pair, Some(REPLICA));
            iter::once(format!("# [{}/{STEPS}] {title}", i + 1)).chain(commands)
        })
        .collect()
}

fn network(config: &ProvisionConfig) -> Vec<String> {
    let network = Resource::network(&config.network);
    vec![format!(
        "docker network create --driver bridge --label {} {}",
        network.label_arg(),
        network.name
    )]
}

/// Steps 1 and 2: the node's volume and container, then a wait until it accepts connections.
fn run_node(config: &ProvisionConfig, node: NodeId) -> Vec<String> {
    let container = Resource::container(node);
    let volume = Resource::volume(node);
    vec![
        format!(
            "docker volume create --label {} {}",
            volume.label_arg(),
            volume.name
        ),
        format!("POSTGRES_PASSWORD={RANDOM_PASSWORD}"),
        format!(
            "docker run -d --name {node} --hostname {node} --label {label} \
             --network {network} --network-alias {node} -p {listen}:{PG_PORT} \
             -v {volume}:{PGDATA} -e POSTGRES_PASSWORD=\"$POSTGRES_PASSWORD\" \
             --stop-signal {STOP_SIGNAL} --stop-timeout {STOP_TIMEOUT_SECS} {image}",
            label = container.label_arg(),
            network = config.network,
            listen = listen_of(config, node),
            volume = volume.name,
            image = config.image,
        ),
        wait_ready(node),
    ]
}

fn wait_ready(node: NodeId) -> String {
    format!(
        "until docker exec -u {SERVER_USER} {node} {}; do sleep 1; done",
        PG_ISREADY.join(" ")
    )
}

/// Writes `text` to a local file; the heredoc expands the password variables in it.
fn write_local(file: &str, text: &str) -> String {
    format!("cat > {file} <<EOF\n{text}EOF")
}

/// `docker cp` of a local file into a node, then the owner and permission the steps give it.
fn copy_in(node: NodeId, local: &str, file: NodeFile) -> Vec<String> {
    let path = container_path(file);
    vec![
        format!("docker cp {local} {node}:{path}"),
        format!("docker exec {node} chown {SERVER_USER}:root {path}"),
        format!("docker exec {node} chmod {FILE_MODE} {path}"),
    ]
}

/// Step 3. Appending is enough: in postgresql.conf the last assignment wins.
fn enable_wal() -> Vec<String> {
    let file = NodeFile::Data("postgresql.conf");
    let settings: Vec<String> = WAL_SETTINGS
        .iter()
        .map(|(name, value)| format!("\"{name} = '{value}'\""))
        .collect();
    [
        vec![
            format!(
                "docker cp {PRIMARY}:{} postgresql.conf",
                container_path(file)
            ),
            format!("printf '%s\\n' {} >> postgresql.conf", settings.join(" ")),
        ],
        copy_in(PRIMARY, "postgresql.conf", file),
        vec![format!("docker restart {PRIMARY}"), wait_ready(PRIMARY)],
    ]
    .concat()
}

/// Step 4: the tutorial's SQL file run on db01, the password in both nodes' .pgpass, and
/// the grants pg_rewind needs.
fn replication_user(config: &ProvisionConfig) -> Vec<String> {
    let password = match config.replication_password {
        Some(_) => "read -rs REP_USER_PASSWORD  # type [provision] replication_password".to_owned(),
        None => format!("REP_USER_PASSWORD={RANDOM_PASSWORD}"),
    };
    let script = NodeFile::Script("replication_user.sql");
    [
        vec![
            password,
            write_local(
                "replication_user.sql",
                &replication_user_sql("$REP_USER_PASSWORD"),
            ),
        ],
        copy_in(PRIMARY, "replication_user.sql", script),
        vec![
            format!("docker exec {PRIMARY} {PSQL} -f {}", container_path(script)),
            write_local("rewind_grants.sql", &rewind_grants_sql()),
        ],
        copy_in(
            PRIMARY,
            "rewind_grants.sql",
            NodeFile::Script("rewind_grants.sql"),
        ),
        vec![
            format!("docker exec {PRIMARY} {PSQL} -f /rewind_grants.sql"),
            write_local(".pgpass", &pgpass("$REP_USER_PASSWORD")),
        ],
        copy_in(PRIMARY, ".pgpass", NodeFile::Pgpass),
        copy_in(REPLICA, ".pgpass", NodeFile::Pgpass),
    ]
    .concat()
}

/// Step 6: both nodes' addresses on the network, the tutorial's pg_hba.conf with a line for
/// each, the same file on both, a reload.
fn allow_replication(config: &ProvisionConfig) -> Vec<String> {
    // pg_hba takes addresses; the placeholders' /32 are swapped for the shell variables.
    let placeholders = [Ipv4Addr::new(0, 0, 0, 1), Ipv4Addr::new(0, 0, 0, 2)];
    let hba = pg_hba(&placeholders)
        .replace("0.0.0.1/32", "$DB01_IP/32")
        .replace("0.0.0.2/32", "$DB02_IP/32");
    let address = |node: NodeId| {
        format!(
            "{}_IP=$(docker inspect -f '{{{{(index .NetworkSettings.Networks \"{}\").IPAddress}}}}' {node})",
            node.name().to_uppercase(),
            config.network
        )
    };
    let file = NodeFile::Data("pg_hba.conf");
    let reload = |node: NodeId| format!("docker exec {node} {PSQL} -c \"SELECT pg_reload_conf()\"");
    [
        vec![
            address(PRIMARY),
            address(REPLICA),
            write_local("pg_hba.conf", &hba),
        ],
        copy_in(PRIMARY, "pg_hba.conf", file),
        vec![reload(PRIMARY)],
        copy_in(REPLICA, "pg_hba.conf", file),
        vec![reload(REPLICA)],
    ]
    .concat()
}

/// Step 7: db02 stopped, then a one-shot container on its volume, as postgres, with its
/// .pgpass (piped as a tar, so owner and mode survive), empties it and takes the backup.
fn base_backup(config: &ProvisionConfig) -> Vec<String> {
    let one_shot = Resource::offline(REPLICA);
    let pgpass = container_path(NodeFile::Pgpass);
    let script = base_backup_script(&PRIMARY.name(), PG_PORT, REPLICA);
    vec![
        format!("docker stop {REPLICA}"),
        format!(
            "docker create --name {name} --label {label} --user {SERVER_USER} \
             --network {network} -v {volume}:{PGDATA} -e PGDATA={PGDATA} -e HOME={home} \
             --entrypoint sh {image} -c {script}",
            name = one_shot.name,
            label = one_shot.label_arg(),
            network = config.network,
            volume = Resource::volume(REPLICA).name,
            home = home_dir(),
            image = config.image,
            script = quote(&script),
        ),
        format!(
            "docker cp {REPLICA}:{pgpass} - | docker cp - {}:{}",
            one_shot.name,
            home_dir()
        ),
        format!("docker start -a {}", one_shot.name),
        format!("docker rm {}", one_shot.name),
    ]
}

/// Steps 8 and 9: a line pg_basebackup wrote into db02's postgresql.auto.conf (db02 is
/// stopped, so it is copied out rather than read with exec).
fn recovery_setting(pattern: &str) -> String {
    format!(
        "docker cp {REPLICA}:{} - | tar -xO | grep \"^{pattern}\"",
        container_path(NodeFile::Data("postgresql.auto.conf"))
    )
}

/// Step 11, as the tutorial shows it.
fn verify() -> Vec<String> {
    vec![
        format!(
            "docker exec {REPLICA} {PSQL} -c \"CREATE TABLE riders (id INT)\"  \
             # fails: cannot execute CREATE TABLE in a read-only transaction"
        ),
        format!(
            "docker exec {PRIMARY} {PSQL} -c \"CREATE TABLE riders (id INT); INSERT INTO riders (id) VALUES (1);\""
        ),
        format!("docker exec {REPLICA} {PSQL} -c \"SELECT * FROM riders\""),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docker::container::tests::config;

    fn plan() -> Vec<String> {
        docker_commands(&config())
    }

    fn find<'a>(plan: &'a [String], start: &str) -> &'a str {
        plan.iter()
            .find(|line| line.starts_with(start))
            .unwrap_or_else(|| panic!("no line starts with {start:?}:\n{}", plan.join("\n")))
    }

    #[test]
    fn every_step_is_announced_in_order_before_its_commands() {
        let plan = plan();
        let steps: Vec<&String> = plan.iter().filter(|l| l.starts_with("# [")).collect();
        assert_eq!(steps.len(), STEPS);
        for (i, line) in steps.iter().enumerate() {
            assert!(line.starts_with(&format!("# [{}/11] ", i + 1)), "{line}");
        }
        assert!(plan[0].starts_with("# [1/11]"));
    }

    #[test]
    fn the_containers_are_the_tutorials_published_on_loopback_only() {
        let plan = plan();
        let db01 = find(&plan, "docker run -d --name db01 ");
        for part in [
            "--hostname db01",
            "--network rideshare-net",
            "-p 127.0.0.1:54321:5432",
            "-v db01-data:/var/lib/postgresql/data",
            "-e POSTGRES_PASSWORD=\"$POSTGRES_PASSWORD\"",
            "--stop-signal SIGINT",
            "--label io.pgrepl-proxy.node=db01",
        ] {
            assert!(db01.contains(part), "{part} missing: {db01}");
        }
        assert!(db01.ends_with(" postgres:16.1"), "{db01}");
        let db02 = find(&plan, "docker run -d --name db02 ");
        assert!(db02.contains("-p 127.0.0.1:54322:5432"), "{db02}");
        assert!(!plan.join("\n").contains("--restart"), "no restart policy");
        for run in plan.iter().filter(|l| l.starts_with("docker run")) {
            let published: Vec<&str> = run.split(" -p ").skip(1).collect();
            assert_eq!(published.len(), 1, "{run}");
            assert!(published[0].starts_with("127.0.0.1:"), "{run}");
        }
    }

    #[test]
    fn the_tutorials_files_and_commands_are_there() {
        let plan = plan();
        let all = plan.join("\n");
        for part in [
            "docker network create --driver bridge",
            "docker cp replication_user.sql db01:/replication_user.sql",
            "docker exec db01 psql -v ON_ERROR_STOP=1 -U postgres -f /replication_user.sql",
            "*:*:*:replication_user:$REP_USER_PASSWORD",
            "docker cp .pgpass db02:/var/lib/postgresql/.pgpass",
            "docker exec db02 chown postgres:root /var/lib/postgresql/.pgpass",
            "docker exec db02 chmod 0600 /var/lib/postgresql/.pgpass",
            "PG_CREATE_PHYSICAL_REPLICATION_SLOT('rideshare_slot')",
            "host    replication  replication_user  $DB02_IP/32  md5",
            "host    replication  replication_user  $DB01_IP/32  md5",
            "docker cp .pgpass db01:/var/lib/postgresql/.pgpass",
            "GRANT EXECUTE ON FUNCTION pg_catalog.pg_ls_dir(text, boolean, boolean) TO replication_user;",
            "wal_log_hints = 'on'",
            "SELECT pg_reload_conf()",
            "wal_level = 'replica'",
            "docker restart db01",
        ] {
            assert!(all.contains(part), "{part} missing:\n{all}");
        }
    }

    #[test]
    fn the_base_backup_runs_as_postgres_on_the_stopped_replicas_volume() {
        let plan = plan();
        let stop = plan.iter().position(|l| l == "docker stop db02").unwrap();
        let create = plan
            .iter()
            .position(|l| l.starts_with("docker create --name db02-basebackup "))
            .unwrap();
        let start = plan.iter().position(|l| l == "docker start db02").unwrap();
        assert!(stop < create && create < start);
        let one_shot = &plan[create];
        for part in [
            "--user postgres",
            "--network rideshare-net",
            "-v db02-data:/var/lib/postgresql/data",
            "rm -rf \"$PGDATA\"/* && pg_basebackup --host db01",
            "--username replication_user",
            "--wal-method stream --write-recovery-conf --slot=rideshare_slot --checkpoint=fast",
        ] {
            assert!(one_shot.contains(part), "{part} missing: {one_shot}");
        }
    }

    #[test]
    fn no_secret_is_printed() {
        let all = plan().join("\n");
        assert!(
            !all.contains("s3cret-rep"),
            "the configured password leaked"
        );
        assert!(all.contains("read -rs REP_USER_PASSWORD"));
        let random = docker_commands(&ProvisionConfig {
            replication_password: None,
            ..config()
        })
        .join("\n");
        assert!(random.contains("REP_USER_PASSWORD=$(openssl rand -hex 24)"));
    }
}
