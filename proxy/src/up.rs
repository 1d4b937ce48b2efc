//! `pgrepl-proxy up`: the pair, provisioned if needed, and the proxy serving in front of it,
//! from a checkout with no config file.

use std::process::ExitCode;

use pgrepl_config::{AuthMethod, BackendConfig, Config, UserConfig};
use pgrepl_provision::app_roles::{new_app_password, DEFAULT_APP_USER};
use pgrepl_provision::runtime::{Endpoint, NodeId};
use pgrepl_proxy::reload::Loader;

use crate::provisioning::{prepare_pair, Target};
use crate::{current_thread_runtime, exit_code, serve, LogFormatArg};

pub fn up(target: &Target, image: Option<&str>, log_format: Option<LogFormatArg>) -> ExitCode {
    match prepare(target, image) {
        Ok(mut config) => {
            LogFormatArg::apply(log_format, &mut config);
            let load = reload(target, image, &config, log_format);
            serve(config, load)
        }
        Err(e) => exit_code(Err(e)),
    }
}

/// How a reload reads the configuration under `up`: as at start, with the backends pointed
/// at the pair provisioned then, and the generated user while the configuration names none.
fn reload(
    target: &Target,
    image: Option<&str>,
    served: &Config,
    log_format: Option<LogFormatArg>,
) -> Loader {
    let (target, image) = (target.clone(), image.map(str::to_owned));
    let (primary, replicas) = (served.primary.clone(), served.replicas.clone());
    let generated = served.users.clone();
    Box::new(move || {
        let mut config = target.config(image.as_deref())?;
        if config.users.is_empty() {
            config.users.clone_from(&generated);
        }
        config.primary = primary.clone();
        config.replicas = replicas.clone();
        LogFormatArg::apply(log_format, &mut config);
        Ok(config)
    })
}

/// The config to serve with: backends pointed at the provisioned pair, and, when the config
/// names no users, a role `app` with a fresh password (set anew on every `up`, so it can be
/// printed without being stored anywhere).
fn prepare(target: &Target, image: Option<&str>) -> anyhow::Result<Config> {
    let mut config = target.config(image)?;
    let generated = config.users.is_empty();
    if generated {
        config.users.push(UserConfig {
            name: DEFAULT_APP_USER.to_owned(),
            password: Some(new_app_password()?),
            auth: AuthMethod::ScramSha256,
        });
    }
    let (primary, replica) =
        current_thread_runtime()?.block_on(prepare_pair(&config, target.adopt, generated))?;
    config.primary = backend(NodeId::DB01, &primary);
    config.replicas = vec![backend(NodeId::DB02, &replica)];
    print_how_to_connect(&config, generated);
    Ok(config)
}

fn backend(node: NodeId, endpoint: &Endpoint) -> BackendConfig {
    BackendConfig {
        name: node.name(),
        host: endpoint.host.clone(),
        port: endpoint.port,
        weight: 1,
        // As `[primary]` and `[[replicas]]` would say: writes stay on db01.
        promotable: node == NodeId::DB01,
    }
}

fn print_how_to_connect(config: &Config, generated: bool) {
    println!(
        "proxy on {}: writes to db01 ({}:{}), reads to db02 ({}:{})",
        config.proxy.listen,
        config.primary.host,
        config.primary.port,
        config.replicas[0].host,
        config.replicas[0].port
    );
    let (host, port) = config
        .proxy
        .listen
        .rsplit_once(':')
        .unwrap_or((&config.proxy.listen, "6432"));
    for user in &config.users {
        let password = match (&user.password, generated) {
            (Some(password), true) => password.as_str(),
            _ => "<its password in the config>",
        };
        println!(
            "connect: psql \"host={host} port={port} user={} dbname={} password={password}\"",
            user.name, user.name
        );
    }
    println!("stop with Ctrl-C; the pair keeps running (`pgrepl-proxy teardown` removes it)");
}
