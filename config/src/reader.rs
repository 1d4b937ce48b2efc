//! Typed, path-aware access to the merged tree, so every decoding error names key and source.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use toml::{Table, Value};

use crate::error::ConfigError;
use crate::model::Named;
use crate::origin::Origins;
use crate::path::KeyPath;
use crate::units::parse_size;

const DURATION: &str = r#"a duration like "1s" or "250ms""#;
const SIZE: &str = r#"a size in bytes like 1048576, "64MiB" or "512kB""#;

/// A table whose keys have been checked against the keys its section allows.
pub(crate) struct Section<'a> {
    table: &'a Table,
    path: KeyPath,
    origins: &'a Origins,
    known: &'static [&'static str],
}

impl<'a> Section<'a> {
    /// Opens the root table; unknown keys are reported first, since they are usually typos.
    pub(crate) fn root(
        table: &'a Table,
        origins: &'a Origins,
        known: &'static [&'static str],
    ) -> Result<Self, ConfigError> {
        Self::open(table, KeyPath::root(), origins, known)
    }

    fn open(
        table: &'a Table,
        path: KeyPath,
        origins: &'a Origins,
        known: &'static [&'static str],
    ) -> Result<Self, ConfigError> {
        if let Some(key) = table.keys().find(|key| !known.contains(&key.as_str())) {
            let at = path.key(key);
            let message = if path.is_root() {
                format!(
                    "unknown top-level key \"{key}\" (known: {})",
                    known.join(", ")
                )
            } else {
                format!("{at}: unknown key (known in {path}: {})", known.join(", "))
            };
            return Err(ConfigError::new(origins.blame(&at), message));
        }
        Ok(Self {
            table,
            path,
            origins,
            known,
        })
    }

    pub(crate) fn get(&self, key: &str) -> Option<Field<'a>> {
        debug_assert!(self.known.contains(&key), "{key} is not in the known list");
        self.table.get(key).map(|value| Field {
            value,
            path: self.path.key(key),
            origins: self.origins,
        })
    }

    pub(crate) fn require(&self, key: &str) -> Result<Field<'a>, ConfigError> {
        self.get(key).ok_or_else(|| {
            ConfigError::new(
                self.origins.blame(&self.path),
                format!("{}: missing required key \"{key}\"", self.path),
            )
        })
    }
}

/// One value in the tree with its path, converted to the type its key expects.
pub(crate) struct Field<'a> {
    value: &'a Value,
    path: KeyPath,
    origins: &'a Origins,
}

impl<'a> Field<'a> {
    pub(crate) fn section(
        &self,
        known: &'static [&'static str],
    ) -> Result<Section<'a>, ConfigError> {
        match self.value {
            Value::Table(table) => Section::open(table, self.path.clone(), self.origins, known),
            _ => Err(self.mismatch("a table")),
        }
    }

    /// A table's entries by name, for tables keyed by names the user chooses (databases,
    /// users) rather than by a fixed list of keys.
    pub(crate) fn entries(&self) -> Result<Vec<(&'a str, Field<'a>)>, ConfigError> {
        match self.value {
            Value::Table(table) => Ok(table
                .iter()
                .map(|(name, value)| {
                    let field = Field {
                        value,
                        path: self.path.key(name),
                        origins: self.origins,
                    };
                    (name.as_str(), field)
                })
                .collect()),
            _ => Err(self.mismatch("a table")),
        }
    }

    pub(crate) fn elements(&self) -> Result<Vec<Field<'a>>, ConfigError> {
        match self.value {
            Value::Array(items) => Ok(items
                .iter()
                .enumerate()
                .map(|(index, value)| Field {
                    value,
                    path: self.path.index(index),
                    origins: self.origins,
                })
                .collect()),
            _ => Err(self.mismatch("an array of tables")),
        }
    }

    pub(crate) fn string(&self) -> Result<String, ConfigError> {
        match self.value {
            Value::String(text) => Ok(text.clone()),
            _ => Err(self.mismatch("a string")),
        }
    }

    /// An array of strings; from the environment, a comma-separated list.
    pub(crate) fn string_list(&self) -> Result<Vec<String>, ConfigError> {
        match self.value {
            Value::Array(items) => items
                .iter()
                .map(|item| item.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| self.mismatch("an array of strings")),
            Value::String(text) if self.origins.is_env(&self.path) => Ok(text
                .split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(str::to_owned)
                .collect()),
            _ => Err(self.mismatch("an array of strings")),
        }
    }

    pub(crate) fn file_path(&self) -> Result<PathBuf, ConfigError> {
        self.string().map(PathBuf::from)
    }

    pub(crate) fn duration(&self) -> Result<Duration, ConfigError> {
        match self.value {
            Value::String(text) => humantime::parse_duration(text.trim()).ok(),
            _ => None,
        }
        .ok_or_else(|| self.mismatch(DURATION))
    }

    pub(crate) fn size(&self) -> Result<usize, ConfigError> {
        match self.value {
            Value::Integer(n) => usize::try_from(*n).ok(),
            Value::String(text) => parse_size(text).and_then(|n| usize::try_from(n).ok()),
            _ => None,
        }
        .ok_or_else(|| self.mismatch(SIZE))
    }

    pub(crate) fn count(&self) -> Result<usize, ConfigError> {
        self.integer()
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| self.mismatch("a non-negative integer"))
    }

    /// A positive integer that fits in 32 bits, such as a replica's weight.
    pub(crate) fn weight(&self) -> Result<u32, ConfigError> {
        self.integer()
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| *n > 0)
            .ok_or_else(|| self.mismatch("a weight from 1 to 4294967295"))
    }

    /// How many replicas `provision` builds: db02..db99 at most, as nodes are named `dbNN`.
    pub(crate) fn replica_count(&self) -> Result<u8, ConfigError> {
        self.integer()
            .and_then(|n| u8::try_from(n).ok())
            .filter(|n| (1..=98).contains(n))
            .ok_or_else(|| self.mismatch("a replica count from 1 to 98"))
    }

    pub(crate) fn port(&self) -> Result<u16, ConfigError> {
        self.integer()
            .and_then(|n| u16::try_from(n).ok())
            .filter(|port| *port != 0)
            .ok_or_else(|| self.mismatch("a port number from 1 to 65535"))
    }

    /// A Docker engine's endpoint as DOCKER_HOST gives it: a Unix socket or a TCP address.
    pub(crate) fn docker_host(&self) -> Result<String, ConfigError> {
        let text = self.string()?.trim().to_owned();
        let known = ["unix:///", "tcp://"]
            .iter()
            .any(|scheme| text.len() > scheme.len() && text.starts_with(scheme));
        if !known {
            return Err(self.mismatch(
                r#"a Docker engine like "unix:///var/run/docker.sock" or "tcp://10.0.0.12:2376""#,
            ));
        }
        Ok(text)
    }

    /// An IPv4 address such as `10.0.0.12`.
    pub(crate) fn ipv4(&self) -> Result<Ipv4Addr, ConfigError> {
        self.parsed(r#"an IPv4 address like "10.0.0.12""#)
    }

    /// An address and port such as `127.0.0.1:54321` (IPv6 in brackets); no host name, as
    /// Docker publishes ports on addresses.
    pub(crate) fn socket_address(&self) -> Result<SocketAddr, ConfigError> {
        self.parsed(r#"an address and port like "127.0.0.1:54321""#)
    }

    fn parsed<T: std::str::FromStr>(&self, expected: &str) -> Result<T, ConfigError> {
        match self.value {
            Value::String(text) => text.trim().parse().ok(),
            _ => None,
        }
        .ok_or_else(|| self.mismatch(expected))
    }

    /// Checks that this table's own name, `name`, is a provisioned node's: `db01` to `db99`.
    pub(crate) fn node_name(&self, name: &str) -> Result<(), ConfigError> {
        let number = name
            .strip_prefix("db")
            .filter(|digits| digits.len() == 2 && digits.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|digits| digits.parse::<u8>().ok());
        match number {
            Some(1..=99) => Ok(()),
            _ => Err(ConfigError::new(
                self.origins.blame(&self.path),
                format!("{}: expected a node name from db01 to db99", self.path),
            )),
        }
    }

    /// One of a fixed set of names (case-insensitive), e.g. an auth method or a runtime.
    pub(crate) fn one_of<T: Named>(&self) -> Result<T, ConfigError> {
        let found = match self.value {
            Value::String(text) => T::ALL
                .iter()
                .copied()
                .find(|item| item.as_str().eq_ignore_ascii_case(text.trim())),
            _ => None,
        };
        found.ok_or_else(|| {
            let names: Vec<String> = T::ALL
                .iter()
                .map(|item| format!("\"{}\"", item.as_str()))
                .collect();
            self.mismatch(&format!("one of {}", names.join(", ")))
        })
    }

    /// true or false; from the environment also on/off, yes/no, 1/0.
    pub(crate) fn boolean(&self) -> Result<bool, ConfigError> {
        match self.value {
            Value::Boolean(b) => Some(*b),
            Value::String(text) if self.origins.is_env(&self.path) => {
                match text.trim().to_ascii_lowercase().as_str() {
                    "true" | "on" | "yes" | "1" => Some(true),
                    "false" | "off" | "no" | "0" => Some(false),
                    _ => None,
                }
            }
            _ => None,
        }
        .ok_or_else(|| self.mismatch("true or false"))
    }

    /// An integer; from the environment, where every value is text, a string of digits too.
    fn integer(&self) -> Option<i64> {
        match self.value {
            Value::Integer(n) => Some(*n),
            Value::String(text) if self.origins.is_env(&self.path) => text.trim().parse().ok(),
            _ => None,
        }
    }

    fn mismatch(&self, expected: &str) -> ConfigError {
        ConfigError::new(
            self.origins.blame(&self.path),
            format!(
                "{}: expected {expected}, found {}",
                self.path,
                describe(self.value)
            ),
        )
    }
}

/// A value as it would be written in TOML, or its kind when it is a container.
fn describe(value: &Value) -> String {
    match value {
        Value::String(text) => format!("{text:?}"),
        Value::Integer(n) => n.to_string(),
        Value::Float(x) => x.to_string(),
        Value::Boolean(b) => b.to_string(),
        Value::Datetime(when) => when.to_string(),
        Value::Array(_) => "an array".to_owned(),
        Value::Table(_) => "a table".to_owned(),
    }
}
