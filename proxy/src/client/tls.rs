//! TLS for clients, with rustls, from the `[tls]` cert and key PEM files.

use std::sync::Arc;

use anyhow::Context;
use pgrepl_config::TlsConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

pub fn acceptor(cfg: &TlsConfig) -> anyhow::Result<TlsAcceptor> {
    let certs = CertificateDer::pem_file_iter(&cfg.cert)
        .with_context(|| format!("[tls] cert: cannot read {}", cfg.cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("[tls] cert: invalid PEM in {}", cfg.cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(&cfg.key).with_context(|| {
        format!(
            "[tls] key: cannot read a private key from {}",
            cfg.key.display()
        )
    })?;
    let config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("[tls]: the certificate and key do not form a usable pair")?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}
