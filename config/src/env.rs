//! `PGREPL_<SECTION>__<KEY>` variables, merged over the file so deployments can override any key.
//!
//! Values go into the tree as strings; the decoder types them by their key (see `Field::integer`).
//! Names nobody recognises are left in the tree and rejected by the decoder, blamed on the variable.

use toml::{Table, Value};

use crate::error::ConfigError;
use crate::origin::{Origin, Origins};
use crate::path::{KeyPath, Seg};

const PREFIX: &str = "PGREPL_";

/// The process's `PGREPL_*` variables; other variables are ignored, even when not UTF-8.
pub(crate) fn from_process() -> Result<Vec<(String, String)>, ConfigError> {
    std::env::vars_os()
        .filter_map(|(name, value)| {
            let name = name.to_string_lossy().into_owned();
            has_prefix(&name).then(|| match value.into_string() {
                Ok(value) => Ok((name, value)),
                Err(_) => Err(ConfigError::new(
                    Some(Origin::Env(name)),
                    "value is not valid UTF-8",
                )),
            })
        })
        .collect()
}

/// Sets every `PGREPL_*` variable in `env` into `tree`, recording which paths each one set.
pub(crate) fn overlay(
    tree: &mut Table,
    env: &[(String, String)],
    origins: &mut Origins,
) -> Result<(), ConfigError> {
    let mut vars = env
        .iter()
        .filter(|(name, _)| has_prefix(name))
        .map(|(name, value)| Ok((key_path(name)?, name.as_str(), value.as_str())))
        .collect::<Result<Vec<_>, ConfigError>>()?;
    // Index order, so USERS__0__* is in place before USERS__1__* appends after it.
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    for pair in vars.windows(2) {
        if pair[0].0 == pair[1].0 {
            return Err(ConfigError::new(
                Some(Origin::Env(pair[1].1.to_owned())),
                format!("sets the same key as {}", pair[0].1),
            ));
        }
    }
    let mut root = Value::Table(std::mem::take(tree));
    let result = vars.iter().try_for_each(|(segs, name, value)| {
        let mut setter = Setter {
            var: name,
            origins: &mut *origins,
        };
        setter.assign(&mut root, &KeyPath::root(), segs, value)
    });
    if let Value::Table(table) = root {
        *tree = table;
    }
    result
}

fn has_prefix(name: &str) -> bool {
    name.get(..PREFIX.len())
        .is_some_and(|start| start.eq_ignore_ascii_case(PREFIX))
}

/// `PGREPL_REPLICAS__0__HOST` -> `replicas`, `0`, `host`.
fn key_path(name: &str) -> Result<Vec<Seg>, ConfigError> {
    let parts: Vec<&str> = name[PREFIX.len()..].split("__").collect();
    if parts.iter().any(|part| part.is_empty()) {
        return Err(ConfigError::new(
            Some(Origin::Env(name.to_owned())),
            "is not a config key; expected PGREPL_<SECTION>__<KEY>, e.g. PGREPL_PROXY__LISTEN",
        ));
    }
    parts
        .into_iter()
        .map(|part| {
            if !part.bytes().all(|b| b.is_ascii_digit()) {
                return Ok(Seg::Key(part.to_ascii_lowercase()));
            }
            part.parse().map(Seg::Index).map_err(|_| {
                ConfigError::new(
                    Some(Origin::Env(name.to_owned())),
                    format!("index {part} is too large"),
                )
            })
        })
        .collect()
}

/// Walks one variable's path into the tree, creating what is missing.
struct Setter<'a> {
    var: &'a str,
    origins: &'a mut Origins,
}

impl Setter<'_> {
    fn assign(
        &mut self,
        node: &mut Value,
        at: &KeyPath,
        rest: &[Seg],
        text: &str,
    ) -> Result<(), ConfigError> {
        let Some((seg, tail)) = rest.split_first() else {
            // A list of plain values (e.g. function names) is given as one comma-separated
            // variable; tables and arrays of tables are set key by key.
            let holds_tables = match node {
                Value::Table(_) => true,
                Value::Array(items) => items.iter().any(Value::is_table),
                _ => false,
            };
            if holds_tables {
                return Err(self.fail(format!(
                    "{at} is not a single value; set one of its keys, e.g. {}__<KEY>",
                    at.env_name()
                )));
            }
            *node = Value::String(text.to_owned());
            self.origins.record_env(at, self.var);
            return Ok(());
        };
        let child_path = at.with(seg.clone());
        let empty = match tail.first() {
            Some(Seg::Index(_)) => Value::Array(Vec::new()),
            Some(Seg::Key(_)) => Value::Table(Table::new()),
            None => Value::String(text.to_owned()),
        };
        let (child, created) = match (node, seg) {
            (Value::Table(table), Seg::Key(key)) => {
                let created = !table.contains_key(key);
                (table.entry(key.clone()).or_insert(empty), created)
            }
            (Value::Array(items), Seg::Index(index)) if *index < items.len() => {
                (&mut items[*index], false)
            }
            (Value::Array(items), Seg::Index(index)) if *index == items.len() => {
                items.push(empty);
                (&mut items[*index], true)
            }
            (Value::Array(items), Seg::Index(index)) => {
                return Err(self.fail(format!(
                    "index {index} is past the end of {at}; the next new entry is index {}",
                    items.len()
                )));
            }
            (Value::Array(_), Seg::Key(_)) => {
                return Err(self.fail(format!(
                    "{at} is a list; choose an entry by index, e.g. {}",
                    at.index(0).with(seg.clone()).env_name()
                )));
            }
            (Value::Table(_), Seg::Index(_)) => {
                return Err(self.fail(format!("{at} is a table, not a list; remove the index")));
            }
            (_, _) => {
                return Err(self.fail(format!(
                    "{at} is a single value; it has no part {}",
                    child_path.env_name()
                )));
            }
        };
        if created {
            self.origins.record_env(&child_path, self.var);
        }
        self.assign(child, &child_path, tail, text)
    }

    fn fail(&self, message: String) -> ConfigError {
        ConfigError::new(Some(Origin::Env(self.var.to_owned())), message)
    }
}
