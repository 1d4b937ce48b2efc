//! Configuration for pgrepl-proxy: built-in defaults, then a TOML file, then `PGREPL_*`
//! environment variables, then validation. Every error names its source (file or variable),
//! the key in TOML terms, what was expected and what was found.

mod address;
mod decode;
mod env;
mod error;
mod file;
mod layers;
mod listing;
mod model;
mod origin;
mod path;
mod pool;
mod reader;
mod units;
mod validate;

#[cfg(test)]
mod tests;

use std::path::Path;

pub use error::ConfigError;
pub use listing::Setting;
pub use model::{
    AdminConfig, AuthMethod, BackendConfig, Balance, Config, HealthConfig, LogConfig, LogFormat,
    MetricsConfig, Named, NodeSettings, NodesForm, PoolConfig, PoolMode, PoolOverride,
    ProvisionConfig, ProxyConfig, ReadYourWrites, RoutingConfig, RuntimeKind, TlsConfig,
    TransactionReads, UserConfig,
};
pub use pool::PoolSettings;

impl Config {
    /// Defaults + optional TOML file + the process environment, then validation.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let text = path.map(file::read).transpose()?;
        let env = env::from_process()?;
        Self::from_sources(path.zip(text.as_deref()), &env)
    }

    /// Same as `load` with explicit inputs: `file` is (path shown in errors, TOML text).
    pub fn from_sources(
        file: Option<(&Path, &str)>,
        env: &[(String, String)],
    ) -> Result<Config, ConfigError> {
        let mut origins = origin::Origins::new(file.map(|(path, _)| path));
        let mut tree = layers::defaults();
        if let Some((path, text)) = file {
            let table = file::parse(path, text)?;
            origins.record_file(&table);
            layers::overlay(&mut tree, table);
        }
        env::overlay(&mut tree, env, &mut origins)?;
        let config = decode::decode(&tree, &origins)?;
        validate::validate(&config, &origins)?;
        Ok(config)
    }

    /// Serving needs someone to log in as; provisioning does not, so this is checked by the
    /// commands that serve rather than when loading.
    pub fn require_users(&self) -> Result<(), ConfigError> {
        if self.users.is_empty() {
            return Err(ConfigError::new(
                None,
                "at least one [[users]] entry is required to serve \
                 (e.g. PGREPL_USERS__0__NAME and PGREPL_USERS__0__PASSWORD)",
            ));
        }
        Ok(())
    }

    /// Every node in `BackendId` order: the first (`[primary]`), then the others.
    pub fn nodes(&self) -> impl Iterator<Item = &BackendConfig> {
        std::iter::once(&self.primary).chain(&self.replicas)
    }

    /// All defaults, with no users and no validation; for commands that need no file.
    pub fn defaults() -> Config {
        decode::decode(&layers::defaults(), &origin::Origins::default())
            .expect("defaults.toml decodes (covered by tests)")
    }
}

impl Default for Config {
    fn default() -> Self {
        Self::defaults()
    }
}
