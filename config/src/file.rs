//! Reads and parses the config file, keeping TOML's position info in syntax errors.

use std::path::Path;

use toml::Table;

use crate::error::ConfigError;
use crate::origin::Origin;

/// Reads the file at `path`.
pub(crate) fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|err| {
        ConfigError::new(
            Some(Origin::File(path.to_owned())),
            format!("cannot read: {err}"),
        )
    })
}

/// Parses `text` (read from `path`) into a tree; errors say `line N: ... (column M)`.
pub(crate) fn parse(path: &Path, text: &str) -> Result<Table, ConfigError> {
    text.parse::<Table>().map_err(|err| {
        let reason = err.message().trim_end();
        let message = match err.span() {
            Some(span) => {
                let (line, column) = line_and_column(text, span.start);
                format!("line {line}: {reason} (column {column})")
            }
            None => reason.to_owned(),
        };
        ConfigError::new(Some(Origin::File(path.to_owned())), message)
    })
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let mut position = (1, 1);
    for (_, c) in text.char_indices().take_while(|(i, _)| *i < offset) {
        position = if c == '\n' {
            (position.0 + 1, 1)
        } else {
            (position.0, position.1 + 1)
        };
    }
    position
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_lines_and_columns() {
        let text = "a = 1\nbé = 2\n";
        assert_eq!(line_and_column(text, 0), (1, 1));
        assert_eq!(line_and_column(text, 6), (2, 1));
        assert_eq!(line_and_column(text, 10), (2, 4));
    }
}
