//! Checks of the harness itself against the shared cluster, so a broken
//! environment shows up here rather than as puzzling proxy test failures.

use pgrepl_tests::roles::{DATABASE, LOGIN_ROLES, SUPERUSER};
use pgrepl_tests::{connect, conninfo, Cluster};

#[test]
fn nodes_report_their_cluster_names() {
    let cluster = Cluster::shared();
    for (node, name) in [(&cluster.primary, "db01"), (&cluster.replica, "db02")] {
        let out = node
            .psql("app", DATABASE, "SELECT current_setting('cluster_name')")
            .unwrap();
        assert_eq!(out.trim(), name);
        assert_eq!(node.name, name);
    }
}

#[test]
fn replica_sees_primary_writes_after_catching_up() {
    let cluster = Cluster::shared();
    cluster
        .primary
        .psql(
            "app",
            DATABASE,
            "CREATE TABLE harness_replication (v int); INSERT INTO harness_replication VALUES (42);",
        )
        .unwrap();
    cluster.wait_replica_caught_up().unwrap();
    let out = cluster
        .replica
        .psql("app", DATABASE, "SELECT v FROM harness_replication")
        .unwrap();
    assert_eq!(out.trim(), "42");
}

#[test]
fn replica_refuses_writes() {
    let err = Cluster::shared()
        .replica
        .psql("app", DATABASE, "CREATE TABLE harness_refused (v int)")
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("read-only transaction"),
        "unexpected error: {err:#}"
    );
}

#[test]
fn superuser_uses_the_socket() {
    let out = Cluster::shared()
        .primary
        .psql(SUPERUSER, "postgres", "SELECT inet_server_addr() IS NULL")
        .unwrap();
    assert_eq!(out.trim(), "t");
}

/// Each role logs in on both nodes, a wrong password is refused where one is
/// checked, and the server log names the expected method.
#[tokio::test]
async fn roles_log_in_with_their_auth_methods() {
    let cluster = Cluster::shared();
    for node in [&cluster.primary, &cluster.replica] {
        for role in LOGIN_ROLES {
            let client = connect(node.addr(), role.name, DATABASE).await.unwrap();
            let row = client
                .query_one("SELECT current_user::text", &[])
                .await
                .unwrap();
            assert_eq!(row.get::<_, String>(0), role.name);

            let wrong = format!(
                "{} password=wrong",
                conninfo(node.addr(), role.name, DATABASE)
            );
            let refused = tokio_postgres::connect(&wrong, tokio_postgres::NoTls)
                .await
                .is_err();
            assert_eq!(
                refused,
                role.password.is_some(),
                "{} on {}",
                role.name,
                node.name
            );
        }
        let log = std::fs::read_to_string(&node.log_file).unwrap();
        for (user, method) in [
            ("app", "scram-sha-256"),
            ("md5user", "md5"),
            ("plainuser", "password"),
        ] {
            let line = format!("identity=\"{user}\" method={method}");
            assert!(log.contains(&line), "{} log lacks {line}", node.name);
        }
    }
}
