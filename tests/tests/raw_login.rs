//! The raw-protocol client's login (`RawClient::login`, which `idleclients` uses to hold
//! thousands of authenticated connections for the pooling benchmark): every harness role logs
//! in with the method its server or the proxy asks for (SCRAM-SHA-256, md5, cleartext, trust),
//! directly and through the proxy, and gets a working session; a wrong password is refused
//! with the server's error.

use pgrepl_tests::roles::{DATABASE, LOGIN_ROLES};
use pgrepl_tests::suite::raw::{query, summary, RawClient};
use pgrepl_tests::suite::{bounded, shared_proxy};
use pgrepl_tests::Cluster;
use std::net::SocketAddr;

/// The targets: the primary directly, and the proxy in front of the pair.
fn targets() -> [(&'static str, SocketAddr); 2] {
    [
        ("the primary", Cluster::shared().primary.addr()),
        ("the proxy", shared_proxy()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_logs_in_and_gets_a_working_session() {
    bounded(async {
        for (target, addr) in targets() {
            for role in LOGIN_ROLES {
                let mut client = RawClient::login(addr, role.name, DATABASE, role.password)
                    .await
                    .unwrap_or_else(|e| panic!("{} through {target}: {e:#}", role.name));
                client.send(&query("SELECT current_user")).await.unwrap();
                let messages = client.recv_until(b'Z').await.unwrap();
                let row = messages.iter().find(|m| m.ty == b'D').unwrap_or_else(|| {
                    panic!(
                        "{} through {target}: no row in {:?}",
                        role.name,
                        summary(&messages)
                    )
                });
                assert!(
                    row.body.ends_with(role.name.as_bytes()),
                    "{} through {target}: current_user row {:?}",
                    role.name,
                    String::from_utf8_lossy(&row.body)
                );
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_refused_with_28p01() {
    bounded(async {
        for (target, addr) in targets() {
            for role in LOGIN_ROLES.iter().filter(|r| r.password.is_some()) {
                let refusal = RawClient::login(addr, role.name, DATABASE, Some("not-the-password"))
                    .await
                    .err()
                    .unwrap_or_else(|| {
                        panic!("{} through {target}: a wrong password logged in", role.name)
                    });
                let text = format!("{refusal:#}");
                assert!(
                    text.contains("login refused") && text.contains("28P01"),
                    "{} through {target}: {text}",
                    role.name
                );
            }
        }
    })
    .await;
}
