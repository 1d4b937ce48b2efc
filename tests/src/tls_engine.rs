//! The local Docker engine behind TLS, as a remote engine listening on `tcp://` with
//! `--tlsverify` would be: a CA, a server certificate for 127.0.0.1 and a client certificate
//! made with openssl (named as DOCKER_CERT_PATH wants them), and a forwarder that accepts
//! only clients with a certificate of that CA and passes their bytes to the engine's socket.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;

/// The engine's own socket, which the forwarder passes connections to.
const ENGINE_SOCKET: &str = "/var/run/docker.sock";

/// A TLS endpoint for the local engine; it serves until the test process ends.
pub struct TlsEngine {
    /// `tcp://127.0.0.1:PORT`, for DOCKER_HOST or `docker_host`.
    pub location: String,
    /// DOCKER_CERT_PATH: ca.pem, cert.pem and key.pem for the client.
    pub cert_path: PathBuf,
}

impl TlsEngine {
    /// Makes the certificates in `dir` and starts the forwarder on a free port.
    pub fn start(dir: &Path) -> TlsEngine {
        std::fs::create_dir_all(dir).unwrap();
        make_certificates(dir);
        let acceptor = acceptor(dir);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(forward(listener, acceptor));
        });
        TlsEngine {
            location: format!("tcp://127.0.0.1:{port}"),
            cert_path: dir.to_owned(),
        }
    }
}

/// Accepts TLS clients and joins each to a fresh connection to the engine's socket.
async fn forward(listener: std::net::TcpListener, acceptor: TlsAcceptor) {
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    while let Ok((tcp, _)) = listener.accept().await {
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let Ok(mut tls) = acceptor.accept(tcp).await else {
                return;
            };
            let Ok(mut engine) = tokio::net::UnixStream::connect(ENGINE_SOCKET).await else {
                return;
            };
            let _ = tokio::io::copy_bidirectional(&mut tls, &mut engine).await;
        });
    }
}

/// A server config that presents `server-cert.pem` and requires a client certificate
/// signed by `ca.pem`.
fn acceptor(dir: &Path) -> TlsAcceptor {
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(dir.join("server-cert.pem"))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
    let key = PrivateKeyDer::from_pem_file(dir.join("server-key.pem")).unwrap();
    let mut roots = RootCertStore::empty();
    for ca in CertificateDer::pem_file_iter(dir.join("ca.pem")).unwrap() {
        roots.add(ca.unwrap()).unwrap();
    }
    let verifier = WebPkiClientVerifier::builder(Arc::new(roots))
        .build()
        .unwrap();
    let config = ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .unwrap();
    TlsAcceptor::from(Arc::new(config))
}

/// ca.pem (and its key), server-cert.pem/server-key.pem for IP 127.0.0.1, and the client's
/// cert.pem/key.pem, all signed by the CA.
fn make_certificates(dir: &Path) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let days = ["-days", "2"];
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca-key.pem",
        "-out",
        "ca.pem",
        "-subj",
        "/CN=pgrepl test CA",
        days[0],
        days[1],
    ]);
    for (name, subject, extension) in [
        ("server", "/CN=127.0.0.1", "subjectAltName=IP:127.0.0.1"),
        ("client", "/CN=pgrepl client", "extendedKeyUsage=clientAuth"),
    ] {
        let key = format!("{name}-key.pem");
        let request = format!("{name}.csr");
        let cert = format!("{name}-cert.pem");
        let ext_file = format!("{name}.ext");
        std::fs::write(dir.join(&ext_file), format!("{extension}\n")).unwrap();
        run(&[
            "req", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &request, "-subj",
            subject,
        ]);
        run(&[
            "x509",
            "-req",
            "-in",
            &request,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca-key.pem",
            "-CAcreateserial",
            "-out",
            &cert,
            "-extfile",
            &ext_file,
            days[0],
            days[1],
        ]);
    }
    std::fs::rename(dir.join("client-cert.pem"), dir.join("cert.pem")).unwrap();
    std::fs::rename(dir.join("client-key.pem"), dir.join("key.pem")).unwrap();
}
