//! `pgrepl-proxy up`: the nodes, provisioned if needed, and the proxy serving in front of
//! them, following the primary, from a checkout with no config file.

use std::process::ExitCode;

use anyhow::Context;

use pgrepl_config::{AuthMethod, BackendConfig, Config, UserConfig};
use pgrepl_provision::app_roles::{new_app_password, DEFAULT_APP_USER};
use pgrepl_provision::runtime::{Endpoint, NodeId};
use pgrepl_proxy::reload::Loader;

use crate::provisioning::{prepare_nodes, Shape, Target};
use crate::{current_thread_runtime, exit_code, serve, LogFormatArg};

pub fn up(
    target: &Target,
    image: Option<&str>,
    log_format: Option<LogFormatArg>,
    shape: &Shape,
) -> ExitCode {
    match prepare(target, image, shape) {
        Ok(mut config) => {
            LogFormatArg::apply(log_format, &mut config);
            let load = reload(target, image, shape, &config, log_format);
            serve(config, load)
        }
        Err(e) => exit_code(Err(e)),
    }
}

/// How a reload reads the configuration under `up`: as at start, with the backends pointed
/// at the nodes provisioned then, and the generated user while the configuration names none.
fn reload(
    target: &Target,
    image: Option<&str>,
    shape: &Shape,
    served: &Config,
    log_format: Option<LogFormatArg>,
) -> Loader {
    let (target, image, shape) = (target.clone(), image.map(str::to_owned), shape.clone());
    let (primary, replicas) = (served.primary.clone(), served.replicas.clone());
    let generated = served.users.clone();
    Box::new(move || {
        let mut config = shape.apply(target.config(image.as_deref())?);
        if config.users.is_empty() {
            config.users.clone_from(&generated);
        }
        serve_nodes(&mut config, primary.clone(), replicas.clone());
        LogFormatArg::apply(log_format, &mut config);
        Ok(config)
    })
}

/// Points `config` at these nodes, every one of them promotable: with two or more, the
/// proxy follows the primary, so a `failover` or `switchover` moves writes with it.
fn serve_nodes(config: &mut Config, primary: BackendConfig, replicas: Vec<BackendConfig>) {
    config.routing.follow_primary = !replicas.is_empty();
    config.primary = primary;
    config.replicas = replicas;
}

/// The config to serve with: backends pointed at the provisioned pair, and, when the config
/// names no users, a role `app` with a fresh password (set anew on every `up`, so it can be
/// printed without being stored anywhere).
fn prepare(target: &Target, image: Option<&str>, shape: &Shape) -> anyhow::Result<Config> {
    let mut config = shape.apply(target.config(image)?);
    let generated = config.users.is_empty();
    if generated {
        config.users.push(UserConfig {
            name: DEFAULT_APP_USER.to_owned(),
            password: Some(new_app_password()?),
            auth: AuthMethod::ScramSha256,
        });
    }
    let runtime = current_thread_runtime()?;
    let nodes = runtime.block_on(prepare_nodes(&config, target.adopt, generated))?;
    let mut backends = nodes
        .iter()
        .map(|(node, endpoint)| backend(*node, endpoint));
    let primary = backends.next().context("provisioning left no node")?;
    serve_nodes(&mut config, primary, backends.collect());
    print_how_to_connect(&config, generated);
    Ok(config)
}

fn backend(node: NodeId, endpoint: &Endpoint) -> BackendConfig {
    BackendConfig {
        name: node.name(),
        host: endpoint.host.clone(),
        port: endpoint.port,
        weight: 1,
        promotable: true,
    }
}

fn print_how_to_connect(config: &Config, generated: bool) {
    let at = |b: &BackendConfig| format!("{} ({}:{})", b.name, b.host, b.port);
    let replicas: Vec<String> = config.replicas.iter().map(at).collect();
    println!(
        "proxy on {}: writes to {}, reads to {}{}",
        config.proxy.listen,
        at(&config.primary),
        replicas.join(", "),
        if config.routing.follow_primary {
            "; writes follow the primary"
        } else {
            ""
        }
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
