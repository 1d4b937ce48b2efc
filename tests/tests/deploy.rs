//! The operator files in `deploy/` are valid and agree with the proxy: promtool accepts the
//! alert rules and the scrape configuration, the rules cover what they must, the Grafana
//! dashboard parses and every metric it and the rules use is one a running proxy exports, and
//! docker-compose's monitoring profile mounts those files.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use pgrepl_tests::endpoint::Metrics;
use pgrepl_tests::suite::{bounded, eventually, start_proxy};
use serde_json::Value as Json;
use serde_yaml::Value as Yaml;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn yaml(path: &str) -> Yaml {
    serde_yaml::from_str(&read(path)).unwrap_or_else(|e| panic!("{path} is not YAML: {e}"))
}

fn promtool(args: &[&str]) {
    let output = Command::new("promtool")
        .args(args)
        .current_dir(repo())
        .output()
        .expect("promtool is missing: scripts/install-deps.sh installs Debian's prometheus");
    assert!(
        output.status.success(),
        "promtool {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn promtool_accepts_the_rules_and_the_scrape_configuration() {
    promtool(&["check", "rules", "deploy/prometheus/alerts.yml"]);
    promtool(&["check", "config", "deploy/prometheus/prometheus.yml"]);
}

/// Every alert rule as (name, expression, severity).
fn alert_rules() -> Vec<(String, String, String)> {
    let rules = yaml("deploy/prometheus/alerts.yml");
    let groups = rules["groups"].as_sequence().expect("groups");
    let mut alerts = Vec::new();
    for rule in groups
        .iter()
        .flat_map(|g| g["rules"].as_sequence().expect("rules"))
    {
        let name = rule["alert"].as_str().expect("an alerting rule").to_owned();
        for annotation in ["summary", "description"] {
            assert!(
                rule["annotations"][annotation].as_str().is_some(),
                "{name} has no {annotation}"
            );
        }
        alerts.push((
            name,
            rule["expr"].as_str().expect("expr").to_owned(),
            rule["labels"]["severity"]
                .as_str()
                .expect("severity")
                .to_owned(),
        ));
    }
    alerts
}

#[test]
fn the_rules_alert_on_backends_down_lag_role_mismatch_and_the_client_limit() {
    let alerts = alert_rules();
    let using = |metric: &str| -> Vec<&(String, String, String)> {
        alerts
            .iter()
            .filter(|(_, expr, _)| expr.contains(metric))
            .collect()
    };
    let down = using("pgrepl_backend_up");
    assert!(
        down.iter()
            .any(|(_, expr, severity)| expr.contains("primary") && severity == "critical"),
        "a critical alert for the primary down: {down:?}"
    );
    assert!(down.iter().any(|(_, expr, _)| expr.contains("replica")));
    assert!(!using("pgrepl_replica_staleness_seconds").is_empty());
    assert!(!using("pgrepl_replica_lag_bytes").is_empty());
    assert!(!using("pgrepl_backend_role_mismatch").is_empty());
    assert!(using("pgrepl_client_connections")
        .iter()
        .any(|(_, expr, _)| expr.contains("pgrepl_client_connections_max")));
    for (name, _, severity) in &alerts {
        assert!(
            ["critical", "warning"].contains(&severity.as_str()),
            "{name}: {severity}"
        );
    }
}

#[test]
fn prometheus_scrapes_the_proxy_and_loads_the_rules() {
    let config = yaml("deploy/prometheus/prometheus.yml");
    let files: Vec<&str> = config["rule_files"]
        .as_sequence()
        .expect("rule_files")
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    assert_eq!(files, ["alerts.yml"]);
    let job = config["scrape_configs"]
        .as_sequence()
        .expect("scrape_configs")
        .iter()
        .find(|job| job["job_name"] == "pgrepl-proxy")
        .expect("a pgrepl-proxy job");
    let targets = &job["static_configs"][0]["targets"];
    assert_eq!(targets[0], "proxy:9187", "the compose service's endpoint");
}

/// The dashboard's panels (rows excluded), and the PromQL of each.
fn dashboard() -> (Json, Vec<(String, Vec<String>)>) {
    let text = read("deploy/grafana/dashboards/pgrepl-proxy.json");
    let dashboard: Json = serde_json::from_str(&text).expect("the dashboard is JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    let mut queries = Vec::new();
    for panel in panels {
        let title = panel["title"].as_str().expect("a title").to_owned();
        assert!(
            ids.insert(panel["id"].as_u64().expect("an id")),
            "{title}: id used twice"
        );
        assert!(
            panel["gridPos"]["w"].as_u64().is_some(),
            "{title}: no gridPos"
        );
        if panel["type"] == "row" {
            continue;
        }
        let exprs: Vec<String> = panel["targets"]
            .as_array()
            .unwrap_or_else(|| panic!("{title} has no targets"))
            .iter()
            .map(|t| t["expr"].as_str().expect("expr").to_owned())
            .collect();
        assert!(!exprs.is_empty(), "{title} queries nothing");
        queries.push((title, exprs));
    }
    (dashboard, queries)
}

#[test]
fn the_dashboard_shows_the_split_reasons_latency_lag_staleness_and_connections() {
    let (dashboard, panels) = dashboard();
    assert_eq!(dashboard["uid"], "pgrepl-proxy");
    let all: Vec<&String> = panels.iter().flat_map(|(_, exprs)| exprs).collect();
    let any = |needle: &str| all.iter().any(|e| e.contains(needle));
    assert!(
        any("sum by (route) (rate(pgrepl_queries_total"),
        "routing split"
    );
    assert!(any("reason"), "routing reasons");
    assert!(any("histogram_quantile(0.99") && any("pgrepl_query_duration_seconds_bucket"));
    assert!(any("pgrepl_replica_lag_bytes") && any("pgrepl_replica_staleness_seconds"));
    assert!(
        any("pgrepl_read_staleness_seconds_bucket"),
        "the staleness reads got"
    );
    assert!(any("pgrepl_client_connections") && any("pgrepl_backend_connections"));
}

/// The `pgrepl_...` metric names in `expr`, histogram series folded into their base name.
fn metrics_in(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("pgrepl_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(name);
        names.push(base.to_owned());
        rest = &tail[end..];
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rules_and_the_dashboard_use_only_metrics_the_proxy_exports() {
    bounded(async {
        let proxy = start_proxy("");
        // Lag needs a sample of both servers: the first round of the monitor.
        let endpoint = proxy.endpoint();
        eventually(
            "the replica's lag to be known",
            Duration::from_secs(10),
            || async { Metrics::scrape(endpoint).has("pgrepl_replica_lag_bytes", &[]) },
        )
        .await
        .unwrap();
        let exported: BTreeSet<String> = Metrics::scrape(endpoint).names().into_iter().collect();
        let (_, panels) = dashboard();
        let exprs = panels
            .into_iter()
            .flat_map(|(title, exprs)| exprs.into_iter().map(move |e| (title.clone(), e)))
            .chain(
                alert_rules()
                    .into_iter()
                    .map(|(name, expr, _)| (name, expr)),
            );
        let mut used = 0;
        for (owner, expr) in exprs {
            for metric in metrics_in(&expr) {
                used += 1;
                assert!(
                    exported.contains(&metric),
                    "{owner} uses {metric}, which the proxy does not export"
                );
            }
        }
        assert!(used > 20, "only {used} metric uses found");
    })
    .await
}

#[test]
fn the_monitoring_profile_runs_prometheus_and_grafana_from_these_files() {
    let compose = yaml("docker-compose.yml");
    for service in ["prometheus", "grafana"] {
        let spec = &compose["services"][service];
        assert_eq!(spec["profiles"][0], "monitoring", "{service}");
        for port in spec["ports"].as_sequence().expect("ports") {
            let port = port.as_str().expect("a port string");
            assert!(port.starts_with("127.0.0.1:"), "{service} publishes {port}");
        }
        for volume in spec["volumes"].as_sequence().expect("volumes") {
            let source = volume
                .as_str()
                .expect("a volume")
                .split(':')
                .next()
                .unwrap();
            if let Some(path) = source.strip_prefix("./") {
                assert!(
                    repo().join(path).exists(),
                    "{service} mounts missing {source}"
                );
            }
        }
    }
    for service in ["db01", "db02", "provision", "proxy"] {
        assert!(
            compose["services"][service]["profiles"].is_null(),
            "{service} runs without a profile"
        );
    }
}
