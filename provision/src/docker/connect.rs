//! Reaching the Docker engines the way the docker CLI does without a context: DOCKER_HOST, or
//! the default socket, and each node's own `docker_host`. One client per distinct engine;
//! when one is not there, the error says where it looked and what to do.

use std::time::Duration;

use anyhow::{anyhow, Result};
use bollard::Docker;
use pgrepl_config::ProvisionConfig;

use super::placement::{check_reachable, default_engine, engine_of, nodes_of};
use super::DockerRuntime;
use crate::runtime::NodeId;

/// A daemon that does not answer the handshake within this is as good as absent; later
/// requests keep bollard's longer default.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);

/// One Docker engine and where it was reached.
pub(super) struct Engine {
    pub docker: Docker,
    /// Its endpoint, as DOCKER_HOST or `docker_host` gave it.
    pub location: String,
}

impl DockerRuntime {
    /// Connects to every engine a node runs on (DOCKER_HOST or the default socket, and each
    /// node's `docker_host`), agreeing on an API version and pinging each. `adopt` lets
    /// provision use and remove same-named objects it did not create.
    pub async fn connect(config: &ProvisionConfig, adopt: bool) -> Result<DockerRuntime> {
        check_reachable(config)?;
        let (default, default_source) = default_engine(std::env::var("DOCKER_HOST").ok());
        let mut engines: Vec<Engine> = Vec::new();
        for node in nodes_of(config) {
            let location = engine_of(config, node, &default);
            if engines.iter().any(|e| e.location == location) {
                continue;
            }
            let source = if location == default {
                default_source.to_owned()
            } else {
                format!("[provision.nodes.{node}] docker_host")
            };
            refuse_unverified_tls(&location, &source, unverified_tls_asked())?;
            let docker = handshake(&location)
                .await
                .map_err(|e| unreachable(&location, &source, e))?;
            engines.push(Engine { docker, location });
        }
        Ok(DockerRuntime {
            engines,
            default,
            config: config.clone(),
            adopt,
        })
    }

    /// The engine `node` runs on. A node none of whose settings were reached at connect (one
    /// found by its labels beyond the configured ones) is looked for on the first engine.
    pub(super) fn engine(&self, node: NodeId) -> &Docker {
        let location = engine_of(&self.config, node, &self.default);
        self.engines
            .iter()
            .find(|e| e.location == location)
            .map_or(&self.engines[0].docker, |e| &e.docker)
    }

    /// Where the engines are, for messages: one, or several with the nodes on each.
    pub(super) fn locations(&self) -> String {
        if let [only] = &self.engines[..] {
            return only.location.clone();
        }
        let on = |engine: &Engine| {
            let nodes: Vec<String> = nodes_of(&self.config)
                .into_iter()
                .filter(|&n| engine_of(&self.config, n, &self.default) == engine.location)
                .map(|n| n.name())
                .collect();
            format!("{} on {}", nodes.join(", "), engine.location)
        };
        let all: Vec<String> = self.engines.iter().map(on).collect();
        all.join("; ")
    }
}

/// Whether the environment asks for TLS without verifying the engine's certificate, as the
/// docker CLI reads it: DOCKER_TLS set, DOCKER_TLS_VERIFY not. (With DOCKER_TLS_VERIFY set,
/// bollard speaks TLS to tcp:// engines as the CLI does: DOCKER_CERT_PATH's ca.pem,
/// cert.pem and key.pem, or ~/.docker's.)
fn unverified_tls_asked() -> bool {
    let set = |var: &str| std::env::var_os(var).is_some_and(|v| !v.is_empty());
    set("DOCKER_TLS") && std::env::var_os("DOCKER_TLS_VERIFY").is_none()
}

/// TLS without verification is not supported: bollard would speak plain HTTP instead, so a
/// tcp:// engine is refused rather than sent requests in clear.
fn refuse_unverified_tls(location: &str, source: &str, asked: bool) -> Result<()> {
    if asked && location.starts_with("tcp://") {
        return Err(anyhow!(
            "the Docker engine at {location} ({source}) is to be reached with TLS without \
             verifying its certificate (DOCKER_TLS is set, DOCKER_TLS_VERIFY is not), which \
             pgrepl-proxy does not do: set DOCKER_TLS_VERIFY=1 with the engine's CA, the client \
             certificate and key in DOCKER_CERT_PATH (ca.pem, cert.pem, key.pem)"
        ));
    }
    Ok(())
}

async fn handshake(location: &str) -> Result<Docker, bollard::errors::Error> {
    let docker = Docker::connect_with_host(location)?;
    let usual = docker.timeout();
    let docker = docker
        .with_timeout(HANDSHAKE_TIMEOUT)
        .negotiate_version()
        .await?;
    docker.ping().await?;
    Ok(docker.with_timeout(usual))
}

fn unreachable(location: &str, source: &str, err: bollard::errors::Error) -> anyhow::Error {
    anyhow!(
        "cannot reach the Docker daemon at {location} ({source}): {:#}\n\
         Start the Docker daemon (and make sure this user may use its socket), point DOCKER_HOST \
         or [provision.nodes.dbNN] docker_host at a running one (docker CLI contexts are not \
         read), or run the pair without Docker: --runtime local ([provision] runtime = \"local\")",
        anyhow::Error::from(err)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docker::placement::DEFAULT_HOST;

    #[test]
    fn the_error_says_where_it_looked_and_what_to_do() {
        let err = bollard::errors::Error::SocketNotFoundError("/var/run/docker.sock".into());
        let (location, source) = default_engine(None);
        let text = unreachable(&location, source, err).to_string();
        assert!(
            text.contains(&format!("{DEFAULT_HOST} (the default")),
            "{text}"
        );
        assert!(text.contains("Socket not found"), "{text}");
        assert!(text.contains("DOCKER_HOST"), "{text}");
        assert!(text.contains("--runtime local"), "{text}");
    }

    #[test]
    fn unverified_tls_is_refused_rather_than_spoken_in_clear() {
        let tcp = "tcp://10.0.0.12:2376";
        let source = "[provision.nodes.db02] docker_host";
        let text = refuse_unverified_tls(tcp, source, true)
            .unwrap_err()
            .to_string();
        assert!(
            text.contains(tcp) && text.contains("DOCKER_TLS_VERIFY=1"),
            "{text}"
        );
        assert!(refuse_unverified_tls(tcp, "x", false).is_ok());
        assert!(
            refuse_unverified_tls(DEFAULT_HOST, "x", true).is_ok(),
            "a socket needs no TLS"
        );
    }
}
