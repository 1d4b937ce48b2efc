//! Which input a value came from, so an error can point at the file or the variable to fix.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use crate::path::{KeyPath, Seg};

/// The input to blame for a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Origin {
    File(PathBuf),
    Env(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File(path) => write!(f, "config file {}", path.display()),
            Origin::Env(var) => write!(f, "environment variable {var}"),
        }
    }
}

/// Records the paths the environment set; everything else is blamed on the file (if any).
///
/// Built-in defaults are valid on their own, so a problem with a value nobody set is caused by
/// what the file added around it; with no file there is nobody to blame.
#[derive(Debug, Default)]
pub(crate) struct Origins {
    file: Option<PathBuf>,
    /// The top-level keys the file sets.
    file_keys: BTreeSet<String>,
    env: BTreeMap<Vec<Seg>, String>,
}

impl Origins {
    pub(crate) fn new(file: Option<&Path>) -> Self {
        Self {
            file: file.map(Path::to_path_buf),
            file_keys: BTreeSet::new(),
            env: BTreeMap::new(),
        }
    }

    /// The file sets the top-level keys of `table`.
    pub(crate) fn record_file(&mut self, table: &toml::Table) {
        self.file_keys.extend(table.keys().cloned());
    }

    /// Who set top-level key `key` (or something in it), the environment first; None when
    /// only the built-in defaults did.
    pub(crate) fn setter(&self, key: &str) -> Option<Origin> {
        let seg = Seg::Key(key.to_owned());
        let var = self
            .env
            .iter()
            .find(|(path, _)| path.first() == Some(&seg))
            .map(|(_, var)| Origin::Env(var.clone()));
        var.or_else(|| {
            self.file
                .clone()
                .filter(|_| self.file_keys.contains(key))
                .map(Origin::File)
        })
    }

    pub(crate) fn record_env(&mut self, path: &KeyPath, var: &str) {
        self.env
            .entry(path.segments().to_vec())
            .or_insert_with(|| var.to_owned());
    }

    /// The origin of `path`: the variable that set it or its nearest enclosing table, else the file.
    pub(crate) fn blame(&self, path: &KeyPath) -> Option<Origin> {
        let segs = path.segments();
        (0..=segs.len())
            .rev()
            .find_map(|len| self.env.get(&segs[..len]))
            .map(|var| Origin::Env(var.clone()))
            .or_else(|| self.file.clone().map(Origin::File))
    }

    pub(crate) fn is_env(&self, path: &KeyPath) -> bool {
        matches!(self.blame(path), Some(Origin::Env(_)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blames_the_nearest_variable_then_the_file() {
        let mut origins = Origins::new(Some(Path::new("x.toml")));
        let user = KeyPath::root().key("users").index(0);
        origins.record_env(&user, "PGREPL_USERS__0__NAME");
        assert_eq!(
            origins.blame(&user.key("password")),
            Some(Origin::Env("PGREPL_USERS__0__NAME".into()))
        );
        assert_eq!(
            origins.blame(&KeyPath::root().key("proxy")),
            Some(Origin::File("x.toml".into()))
        );
        assert_eq!(Origins::new(None).blame(&user), None);
    }

    #[test]
    fn a_top_level_key_is_set_by_the_environment_or_the_file_never_by_the_defaults() {
        let mut origins = Origins::new(Some(Path::new("x.toml")));
        origins.record_file(&"[primary]\nport = 1\n".parse().unwrap());
        origins.record_env(
            &KeyPath::root().key("nodes").index(0).key("host"),
            "PGREPL_NODES__0__HOST",
        );
        assert_eq!(
            origins.setter("primary"),
            Some(Origin::File("x.toml".into()))
        );
        assert_eq!(
            origins.setter("nodes"),
            Some(Origin::Env("PGREPL_NODES__0__HOST".into()))
        );
        assert_eq!(origins.setter("replicas"), None);
    }
}
