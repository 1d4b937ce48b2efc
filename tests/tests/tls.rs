//! TLS at the client edge: with `[tls]` configured, SSLRequest is answered with a rustls
//! handshake and the whole session (authentication included) runs encrypted.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use pgrepl_tests::roles::DATABASE;
use pgrepl_tests::suite::{bounded, free_addr, psql_env, raw};
use pgrepl_tests::throttle::Throttle;
use pgrepl_tests::{proxy_config, run_dir, Cluster, ProxyProcess};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::{
    self,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider},
    ClientConfig, DigitallySignedStruct, SignatureScheme,
};
use tokio_rustls::TlsConnector;

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

/// A proxy for the shared cluster with `[tls]` set to a fresh self-signed certificate.
fn proxy_with_tls() -> (ProxyProcess, SocketAddr) {
    let (cert, key) = self_signed();
    let addr = free_addr();
    let config = format!(
        "{}\n[tls]\ncert = \"{cert}\"\nkey = \"{key}\"\n",
        proxy_config(Cluster::shared(), addr)
    );
    let proxy = ProxyProcess::start(&config, addr).expect("proxy with TLS starts");
    (proxy, addr)
}

#[test]
fn ssl_request_gets_tls_when_configured() {
    let (_proxy, addr) = proxy_with_tls();

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

/// Accepts the proxy's self-signed certificate: this test is about the bytes, not the trust.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The messages up to and including the next ReadyForQuery: how many DataRows, and the
/// types of the others in order.
async fn until_ready<S: AsyncRead + Unpin>(stream: &mut S) -> (usize, Vec<u8>) {
    let (mut rows, mut others) = (0, Vec::new());
    loop {
        let message = raw::read_message(stream).await.unwrap();
        match message.expect("the proxy keeps the connection open") {
            raw::RawMessage { ty: b'D', .. } => rows += 1,
            raw::RawMessage { ty, body } => {
                assert_ne!(ty, b'E', "error: {}", String::from_utf8_lossy(&body));
                others.push(ty);
                if ty == b'Z' {
                    return (rows, others);
                }
            }
        }
    }
}

/// A TLS client that stops reading a large result gets all of it once it reads again, and
/// then the answer to its next statement: what the proxy's TLS stream took into its own
/// buffer while the socket was full is flushed out to it.
#[test]
fn a_large_result_over_tls_to_a_client_that_stops_reading_arrives_whole() {
    let (_proxy, addr) = proxy_with_tls();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(bounded(async move {
        let throttle = Throttle::start(addr).await;
        let mut tcp = TcpStream::connect(throttle.addr).await.unwrap();
        tcp.write_all(&raw::ssl_request()).await.unwrap();
        let mut answer = [0u8; 1];
        tcp.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"S", "the proxy accepts TLS");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls_config = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth();
        let server = ServerName::try_from("127.0.0.1").unwrap();
        let mut tls = TlsConnector::from(Arc::new(tls_config))
            .connect(server, tcp)
            .await
            .expect("TLS handshake");
        let startup = raw::startup_packet(&[("user", "trustuser"), ("database", DATABASE)]);
        tls.write_all(&startup).await.unwrap();
        until_ready(&mut tls).await;

        throttle.hold(true);
        // 61 MB: past the sockets' buffers and the proxy's 1 MiB mark for the client's output.
        let sql = "SELECT i, repeat('x', 1000) FROM generate_series(1, 60000) AS i";
        tls.write_all(&raw::query(sql)).await.unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        throttle.hold(false);
        let (rows, others) = until_ready(&mut tls).await;
        assert_eq!(rows, 60000, "every row arrives");
        assert_eq!(
            others, b"TCZ",
            "RowDescription, CommandComplete, ReadyForQuery"
        );
        tls.write_all(&raw::query("SELECT 'after'")).await.unwrap();
        let (rows, _) = until_ready(&mut tls).await;
        assert_eq!(rows, 1, "the session goes on");
    }));
}
