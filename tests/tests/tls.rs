//! TLS at the client edge: with `[tls]` configured, SSLRequest is answered with a rustls
//! handshake and the whole session (authentication included) runs encrypted.

use std::process::Command;

use pgrepl_tests::suite::{free_addr, psql_env};
use pgrepl_tests::{proxy_config, run_dir, Cluster, ProxyProcess};

/// A self-signed certificate and key for 127.0.0.1, made with openssl.
fn self_signed() -> (String, String) {
    let dir = run_dir();
    let cert = dir.join("tls-cert.pem");
    let key = dir.join("tls-key.pem");
    let status = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=127.0.0.1", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl runs");
    assert!(
        status.status.success(),
        "openssl failed: {}",
        String::from_utf8_lossy(&status.stderr)
    );
    (cert.display().to_string(), key.display().to_string())
}

#[test]
fn ssl_request_gets_tls_when_configured() {
    let cluster = Cluster::shared();
    let (cert, key) = self_signed();
    let addr = free_addr();
    let config = format!(
        "{}\n[tls]\ncert = \"{cert}\"\nkey = \"{key}\"\n",
        proxy_config(cluster, addr)
    );
    let _proxy = ProxyProcess::start(&config, addr).expect("proxy with TLS starts");

    let run = psql_env(
        addr,
        "app",
        &[
            "-At",
            "-c",
            "\\conninfo",
            "-c",
            "SELECT current_setting('cluster_name')",
        ],
        "",
        &[("PGSSLMODE", "require")],
    )
    .into_text();
    assert!(run.success, "psql over TLS failed: {}", run.stderr);
    assert!(
        run.stdout.contains("SSL connection (protocol: TLSv1."),
        "{}",
        run.stdout
    );
    assert!(run.stdout.trim_end().ends_with("db02"), "{}", run.stdout);
}

#[test]
fn without_tls_sslmode_require_fails_cleanly_and_prefer_works() {
    let cluster = Cluster::shared();
    let addr = free_addr();
    let _proxy = ProxyProcess::start(&proxy_config(cluster, addr), addr).expect("proxy starts");
    let required = psql_env(
        addr,
        "app",
        &["-c", "SELECT 1"],
        "",
        &[("PGSSLMODE", "require")],
    )
    .into_text();
    assert!(!required.success);
    assert!(
        required.stderr.contains("server does not support SSL"),
        "{}",
        required.stderr
    );
    let preferred = psql_env(
        addr,
        "app",
        &["-At", "-c", "SELECT 1"],
        "",
        &[("PGSSLMODE", "prefer")],
    )
    .into_text();
    assert!(preferred.success, "{}", preferred.stderr);
    assert_eq!(preferred.stdout.trim(), "1");
}
