//! Builds the tree to decode: built-in defaults with a config file merged over them.

use toml::{Table, Value};

/// The built-in defaults as a tree, so the file and the environment override them uniformly.
pub(crate) fn defaults() -> Table {
    include_str!("defaults.toml")
        .parse()
        .expect("defaults.toml is valid TOML (covered by tests)")
}

/// Merges `top` over `base`: tables key by key, anything else (arrays included) replaced whole.
pub(crate) fn overlay(base: &mut Table, top: Table) {
    for (key, value) in top {
        match (base.get_mut(&key), value) {
            (Some(Value::Table(below)), Value::Table(above)) => overlay(below, above),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_tables_by_key_and_replaces_arrays() {
        let mut base: Table = "list = [1, 2]\n[t]\na = 1\nb = 2\n".parse().unwrap();
        let top: Table = "list = []\n[t]\nb = 3\n[new]\nc = 4\n".parse().unwrap();
        overlay(&mut base, top);
        let expected: Table = "list = []\n[t]\na = 1\nb = 3\n[new]\nc = 4\n"
            .parse()
            .unwrap();
        assert_eq!(base, expected);
    }
}
