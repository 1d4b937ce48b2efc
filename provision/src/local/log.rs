//! The end of a log file, for errors about a process that wrote its reasons there.

use std::path::Path;

use crate::text::last_lines;

/// The last `lines` lines of the file at `path`, or why it could not be read.
pub fn tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => last_lines(&String::from_utf8_lossy(&bytes), lines),
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_lines_and_explains_a_missing_file() {
        let path = std::env::temp_dir().join(format!("pgrepl-log-tail-{}", std::process::id()));
        std::fs::write(&path, "a\nb\nc\n").unwrap();
        assert_eq!(tail(&path, 2), "b\nc");
        assert_eq!(tail(&path, 9), "a\nb\nc");
        std::fs::remove_file(&path).unwrap();
        assert!(tail(&path, 2).starts_with("(cannot read "));
    }
}
