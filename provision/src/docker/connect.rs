//! Reaching the Docker daemon the way the docker CLI does without a context: DOCKER_HOST, or
//! the default socket. When it is not there, the error says where it looked and what to do.

use std::time::Duration;

use anyhow::anyhow;
use bollard::Docker;
use pgrepl_config::ProvisionConfig;

use super::DockerRuntime;

/// bollard's default when DOCKER_HOST is unset.
const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";
/// A daemon that does not answer the handshake within this is as good as absent; later
/// requests keep bollard's longer default.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);

impl DockerRuntime {
    /// Connects (DOCKER_HOST or the default socket), agrees on an API version and pings.
    /// `adopt` lets provision use and remove same-named objects it did not create.
    pub async fn connect(config: &ProvisionConfig, adopt: bool) -> anyhow::Result<DockerRuntime> {
        let from_env = std::env::var("DOCKER_HOST").ok();
        let location = from_env.clone().unwrap_or_else(|| DEFAULT_HOST.to_owned());
        let docker = handshake()
            .await
            .map_err(|e| unreachable(&location, from_env.is_some(), e))?;
        Ok(DockerRuntime {
            docker,
            config: config.clone(),
            adopt,
            location,
        })
    }
}

async fn handshake() -> Result<Docker, bollard::errors::Error> {
    let docker = Docker::connect_with_defaults()?;
    let usual = docker.timeout();
    let docker = docker
        .with_timeout(HANDSHAKE_TIMEOUT)
        .negotiate_version()
        .await?;
    docker.ping().await?;
    Ok(docker.with_timeout(usual))
}

fn unreachable(location: &str, from_env: bool, err: bollard::errors::Error) -> anyhow::Error {
    let source = if from_env {
        "from DOCKER_HOST"
    } else {
        "the default; DOCKER_HOST is not set"
    };
    anyhow!(
        "cannot reach the Docker daemon at {location} ({source}): {:#}\n\
         Start the Docker daemon (and make sure this user may use its socket), point DOCKER_HOST \
         at a running one (docker CLI contexts are not read), or run the pair without Docker: \
         --runtime local ([provision] runtime = \"local\")",
        anyhow::Error::from(err)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_says_where_it_looked_and_what_to_do() {
        let err = bollard::errors::Error::SocketNotFoundError("/var/run/docker.sock".into());
        let text = unreachable(DEFAULT_HOST, false, err).to_string();
        assert!(
            text.contains("unix:///var/run/docker.sock (the default"),
            "{text}"
        );
        assert!(text.contains("Socket not found"), "{text}");
        assert!(text.contains("DOCKER_HOST"), "{text}");
        assert!(text.contains("--runtime local"), "{text}");
    }
}
