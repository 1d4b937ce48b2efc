//! `[provision.nodes.dbNN]`: per-node engines, networks and addresses, from a file or the
//! environment, checked and listed; absent, nothing changes.

use std::net::{Ipv4Addr, SocketAddr};

use super::{env_error, file_error, from_env, from_file, ONE_USER};
use crate::{Config, NodeSettings};

#[test]
fn none_by_default_so_every_node_keeps_the_single_host_places() {
    let config = Config::defaults();
    assert!(config.provision.nodes.is_empty());
    assert_eq!(config.provision.node("db02"), NodeSettings::default());
    assert!(!config
        .settings()
        .iter()
        .any(|s| s.key.starts_with("provision.nodes")));
}

#[test]
fn every_key_is_read_from_a_file_and_listed() {
    let config = from_file(&format!(
        "[provision.nodes.db02]\n\
         docker_host = \"tcp://10.0.0.12:2376\"\n\
         network = \"db02-net\"\n\
         peer_address = \"10.0.0.12\"\n\
         listen = \"10.0.0.12:5432\"\n\
         [provision.nodes.db03]\n\
         listen = \"127.0.0.1:6000\"\n\
         {ONE_USER}"
    ))
    .unwrap();
    let db02 = config.provision.node("db02");
    assert_eq!(db02.docker_host.as_deref(), Some("tcp://10.0.0.12:2376"));
    assert_eq!(db02.network.as_deref(), Some("db02-net"));
    assert_eq!(db02.peer_address, Some(Ipv4Addr::new(10, 0, 0, 12)));
    assert_eq!(db02.listen, Some("10.0.0.12:5432".parse().unwrap()));
    let db03 = config.provision.node("db03");
    assert_eq!(
        (db03.docker_host, db03.network, db03.peer_address),
        (None, None, None),
        "unset keys stay unset"
    );
    let listed: Vec<(String, String)> = config
        .settings()
        .into_iter()
        .filter(|s| s.key.starts_with("provision.nodes."))
        .map(|s| (s.key, s.value))
        .collect();
    let expected = [
        ("provision.nodes.db02.docker_host", "tcp://10.0.0.12:2376"),
        ("provision.nodes.db02.network", "db02-net"),
        ("provision.nodes.db02.peer_address", "10.0.0.12"),
        ("provision.nodes.db02.listen", "10.0.0.12:5432"),
        ("provision.nodes.db03.listen", "127.0.0.1:6000"),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()));
    assert_eq!(listed, expected);
}

#[test]
fn the_environment_sets_them_too() {
    let config = from_env(
        Some(ONE_USER),
        &[
            (
                "PGREPL_PROVISION__NODES__DB02__DOCKER_HOST",
                "unix:///run/docker.sock",
            ),
            ("PGREPL_PROVISION__NODES__DB02__LISTEN", "[::1]:5433"),
        ],
    )
    .unwrap();
    let db02 = config.provision.node("db02");
    assert_eq!(db02.docker_host.as_deref(), Some("unix:///run/docker.sock"));
    assert_eq!(
        db02.listen,
        Some(SocketAddr::from(([0u16, 0, 0, 0, 0, 0, 0, 1], 5433)))
    );
    let err = env_error(
        Some(ONE_USER),
        &[("PGREPL_PROVISION__NODES__DB02__PEER_ADDRESS", "db02.lan")],
    );
    assert!(
        err.contains("PGREPL_PROVISION__NODES__DB02__PEER_ADDRESS")
            && err.contains("an IPv4 address"),
        "{err}"
    );
}

#[test]
fn bad_values_name_the_key_and_what_was_expected() {
    // (table body, words the error must contain)
    let cases = [
        ("[provision.nodes.db1]\nnetwork = \"n\"", "db01 to db99"),
        ("[provision.nodes.db00]\nnetwork = \"n\"", "db01 to db99"),
        ("[provision.nodes.primary]\nnetwork = \"n\"", "db01 to db99"),
        ("[provision.nodes.db02]\nhost = \"x\"", "unknown key"),
        (
            "[provision.nodes.db02]\ndocker_host = \"ssh://me@host\"",
            "docker_host: expected a Docker engine",
        ),
        (
            "[provision.nodes.db02]\ndocker_host = \"unix://\"",
            "docker_host: expected a Docker engine",
        ),
        (
            "[provision.nodes.db02]\npeer_address = \"10.0.0.300\"",
            "peer_address: expected an IPv4 address",
        ),
        (
            "[provision.nodes.db02]\nlisten = \"localhost:5432\"",
            "listen: expected an address and port",
        ),
        (
            "[provision.nodes.db02]\nlisten = \"0.0.0.0:5432\"",
            "not 0.0.0.0",
        ),
        (
            "[provision.nodes.db02]\nlisten = \"127.0.0.1:0\"",
            "not port 0",
        ),
        (
            "[provision.nodes.db02]\nnetwork = \" \"",
            "a non-empty string",
        ),
    ];
    for (table, expected) in cases {
        let err = file_error(&format!("{table}\n{ONE_USER}"));
        assert!(
            err.contains("[provision] nodes.") && err.contains(expected),
            "{table}: {err}"
        );
    }
}
