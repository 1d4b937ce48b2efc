//! Key paths into the config tree, printed the way a user would find the key in a TOML file.

use std::fmt;

/// One step of a key path: a table key or an array element index.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Seg {
    Key(String),
    Index(usize),
}

/// Where a value lives, e.g. `[routing] max_replica_lag` or `[[replicas]][1] port`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct KeyPath(Vec<Seg>);

impl KeyPath {
    pub(crate) fn root() -> Self {
        Self::default()
    }

    pub(crate) fn key(&self, key: &str) -> Self {
        self.with(Seg::Key(key.to_owned()))
    }

    pub(crate) fn index(&self, index: usize) -> Self {
        self.with(Seg::Index(index))
    }

    pub(crate) fn with(&self, seg: Seg) -> Self {
        let mut segs = self.0.clone();
        segs.push(seg);
        Self(segs)
    }

    pub(crate) fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn segments(&self) -> &[Seg] {
        &self.0
    }

    /// The environment variable that addresses this path, e.g. `PGREPL_REPLICAS__0__HOST`.
    pub(crate) fn env_name(&self) -> String {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|seg| match seg {
                Seg::Key(key) => key.to_ascii_uppercase(),
                Seg::Index(index) => index.to_string(),
            })
            .collect();
        format!("PGREPL_{}", parts.join("__"))
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rest = match self.0.as_slice() {
            [] => return f.write_str("top level"),
            [Seg::Key(section), Seg::Index(index), rest @ ..] => {
                write!(f, "[[{section}]][{index}]")?;
                rest
            }
            [Seg::Key(section), rest @ ..] => {
                write!(f, "[{section}]")?;
                rest
            }
            [Seg::Index(index), rest @ ..] => {
                write!(f, "[{index}]")?;
                rest
            }
        };
        for (i, seg) in rest.iter().enumerate() {
            match seg {
                Seg::Key(key) if i == 0 => write!(f, " {key}")?,
                Seg::Key(key) => write!(f, ".{key}")?,
                Seg::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_sections_keys_and_array_elements_toml_style() {
        let root = KeyPath::root();
        assert_eq!(root.to_string(), "top level");
        assert_eq!(root.key("proxy").to_string(), "[proxy]");
        assert_eq!(
            root.key("routing").key("max_replica_lag").to_string(),
            "[routing] max_replica_lag"
        );
        assert_eq!(root.key("replicas").index(1).to_string(), "[[replicas]][1]");
        assert_eq!(
            root.key("replicas").index(1).key("port").to_string(),
            "[[replicas]][1] port"
        );
        assert_eq!(root.key("a").key("b").key("c").to_string(), "[a] b.c");
    }

    #[test]
    fn names_the_matching_environment_variable() {
        let path = KeyPath::root().key("replicas").index(0).key("host");
        assert_eq!(path.env_name(), "PGREPL_REPLICAS__0__HOST");
    }
}
