//! Which input a value came from, so an error can point at the file or the variable to fix.

use std::collections::BTreeMap;
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
    env: BTreeMap<Vec<Seg>, String>,
}

impl Origins {
    pub(crate) fn new(file: Option<&Path>) -> Self {
        Self {
            file: file.map(Path::to_path_buf),
            env: BTreeMap::new(),
        }
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
}
