//! `[[nodes]]` and the older `[primary]` + `[[replicas]]`: one list of servers either way,
//! and whether the proxy follows the primary.

use std::time::Duration;

use super::{env_error, file_error, from_env, from_file, ONE_USER};
use crate::{Config, NodesForm};

/// `(name, promotable)` of every node, first node first.
fn nodes(config: &Config) -> Vec<(&str, bool)> {
    config
        .nodes()
        .map(|n| (n.name.as_str(), n.promotable))
        .collect()
}

fn node(name: &str, port: u16, extra: &str) -> String {
    format!("[[nodes]]\nname = \"{name}\"\nhost = \"10.0.0.1\"\nport = {port}\n{extra}")
}

#[test]
fn both_forms_give_one_list_and_decide_follow_primary() {
    // (file after the user, nodes as (name, promotable), follow_primary, form)
    type Case = (String, &'static [(&'static str, bool)], bool, NodesForm);
    let cases: &[Case] = &[
        (
            String::new(),
            &[("db01", true), ("db02", false)],
            false,
            NodesForm::PrimaryReplicas,
        ),
        (
            "[[replicas]]\nname = \"r\"\nhost = \"h\"\nport = 1\npromotable = true\n".into(),
            &[("db01", true), ("r", true)],
            true,
            NodesForm::PrimaryReplicas,
        ),
        (
            node("a", 1, "") + &node("b", 2, ""),
            &[("a", true), ("b", true)],
            true,
            NodesForm::Nodes,
        ),
        (
            node("a", 1, "") + &node("b", 2, "promotable = false\n"),
            &[("a", true), ("b", false)],
            false,
            NodesForm::Nodes,
        ),
        (node("a", 1, ""), &[("a", true)], false, NodesForm::Nodes),
        (
            node("a", 1, "") + &node("b", 2, "") + "[routing]\nfollow_primary = false\n",
            &[("a", true), ("b", true)],
            false,
            NodesForm::Nodes,
        ),
        (
            "[routing]\nfollow_primary = true\n".into(),
            &[("db01", true), ("db02", false)],
            true,
            NodesForm::PrimaryReplicas,
        ),
    ];
    for (i, (extra, expected, follow, form)) in cases.iter().enumerate() {
        let config =
            from_file(&format!("{ONE_USER}{extra}")).unwrap_or_else(|e| panic!("case {i}: {e}"));
        assert_eq!(nodes(&config), *expected, "case {i}");
        assert_eq!(config.routing.follow_primary, *follow, "case {i}");
        assert_eq!(config.nodes_form, *form, "case {i}");
    }
}

#[test]
fn nodes_keep_their_order_and_fields() {
    let text = format!(
        "{ONE_USER}{}{}",
        node("db01", 5432, ""),
        node("db02", 5433, "weight = 3\n")
    );
    let config = from_file(&text).unwrap();
    assert_eq!(config.primary.name, "db01");
    assert_eq!(config.primary.port, 5432);
    assert_eq!(config.replicas.len(), 1);
    assert_eq!(config.replicas[0].name, "db02");
    assert_eq!(config.replicas[0].weight, 3);
    assert_eq!(config.replicas[0].host, "10.0.0.1");
}

#[test]
fn writer_keys_have_defaults_and_are_checked() {
    let config = from_file(ONE_USER).unwrap();
    assert_eq!(config.routing.writer_confirmations, 3);
    assert_eq!(config.routing.writer_wait, Duration::from_secs(10));
    let config = from_file(&format!(
        "{ONE_USER}[routing]\nwriter_confirmations = 1\nwriter_wait = \"250ms\"\n"
    ))
    .unwrap();
    assert_eq!(config.routing.writer_confirmations, 1);
    assert_eq!(config.routing.writer_wait, Duration::from_millis(250));
    // (file after the user, error contains)
    let cases = [
        (
            "[routing]\nwriter_confirmations = 0\n",
            "[routing] writer_confirmations: expected at least 1, found 0",
        ),
        (
            "[routing]\nwriter_wait = \"0s\"\n",
            "[routing] writer_wait: expected a duration above zero",
        ),
        (
            "[routing]\nfollow_primary = \"maybe\"\n",
            "[routing] follow_primary: expected",
        ),
        (
            "nodes = []\n",
            "[[nodes]]: expected at least one node, found none",
        ),
        (
            "[[nodes]]\nname = \"a\"\nhost = \"h\"\nport = 1\nrole = \"primary\"\n",
            "unknown key",
        ),
    ];
    for (extra, expected) in cases {
        // Top-level keys go before the first table.
        let err = file_error(&if extra.starts_with('[') {
            format!("{ONE_USER}{extra}")
        } else {
            format!("{extra}{ONE_USER}")
        });
        assert!(err.contains(expected), "{extra:?}: {err}");
    }
}

#[test]
fn setting_both_forms_is_an_error_naming_both() {
    let both = format!("{ONE_USER}{}[primary]\nport = 7\n", node("a", 1, ""));
    let err = file_error(&both);
    assert_eq!(
        err,
        "config file x.toml: [[nodes]] and [primary] are both set: list the servers in one form"
    );
    let err = env_error(
        Some(&format!("{ONE_USER}{}", node("a", 1, ""))),
        &[("PGREPL_REPLICAS__0__HOST", "h")],
    );
    assert_eq!(
        err,
        "config file x.toml: [[nodes]] and [[replicas]] are both set \
         ([[replicas]] by environment variable PGREPL_REPLICAS__0__HOST): \
         list the servers in one form"
    );
    let err = env_error(
        Some(&format!("{ONE_USER}[primary]\nport = 7\n")),
        &[
            ("PGREPL_NODES__0__NAME", "a"),
            ("PGREPL_NODES__0__HOST", "h"),
            ("PGREPL_NODES__0__PORT", "1"),
        ],
    );
    assert!(
        err.starts_with("environment variable PGREPL_NODES__0__")
            && err
                .contains("[[nodes]] and [primary] are both set ([primary] by config file x.toml)"),
        "{err}"
    );
}

#[test]
fn nodes_come_from_the_environment_too() {
    let config = from_env(
        Some(ONE_USER),
        &[
            ("PGREPL_NODES__0__NAME", "a"),
            ("PGREPL_NODES__0__HOST", "10.0.0.1"),
            ("PGREPL_NODES__0__PORT", "5432"),
            ("PGREPL_NODES__1__NAME", "b"),
            ("PGREPL_NODES__1__HOST", "10.0.0.2"),
            ("PGREPL_NODES__1__PORT", "5432"),
            ("PGREPL_NODES__1__PROMOTABLE", "false"),
        ],
    )
    .unwrap();
    assert_eq!(nodes(&config), [("a", true), ("b", false)]);
    assert!(!config.routing.follow_primary);
    let listed = config.settings();
    let value = |key: &str| listed.iter().find(|s| s.key == key).map(|s| &*s.value);
    assert_eq!(value("nodes.1.host"), Some("10.0.0.2"));
    assert_eq!(value("nodes.1.promotable"), Some("false"));
    assert_eq!(value("primary.host"), None);
    assert_eq!(value("routing.follow_primary"), Some("false"));
}

#[test]
fn node_names_are_unique_under_nodes() {
    let err = file_error(&format!(
        "{ONE_USER}{}{}",
        node("a", 1, ""),
        node("a", 2, "")
    ));
    assert_eq!(
        err,
        "config file x.toml: [[nodes]][1] name \"a\" is used twice (also [[nodes]][0] name)"
    );
}
