//! End-to-end tests through `Config::from_sources`, the way the proxy loads its config.

mod env;
mod errors;
mod nodes;
mod overrides;
mod provision_nodes;
mod sources;

use std::path::Path;

use crate::{Config, ConfigError};

/// The smallest file that validates: one user.
const ONE_USER: &str = "[[users]]\nname = \"app\"\npassword = \"app-pass\"\n";

fn from_file(text: &str) -> Result<Config, ConfigError> {
    Config::from_sources(Some((Path::new("x.toml"), text)), &[])
}

fn from_env(file: Option<&str>, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let env: Vec<(String, String)> = vars
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect();
    Config::from_sources(file.map(|text| (Path::new("x.toml"), text)), &env)
}

/// The error message for a file that must fail.
fn file_error(text: &str) -> String {
    match from_file(text) {
        Ok(config) => panic!("expected an error, got {config:?}"),
        Err(err) => err.to_string(),
    }
}

fn env_error(file: Option<&str>, vars: &[(&str, &str)]) -> String {
    match from_env(file, vars) {
        Ok(config) => panic!("expected an error, got {config:?}"),
        Err(err) => err.to_string(),
    }
}
