//! Small text helpers shared by the steps and the runtimes.

/// The last `n` lines of `text`: where a tool says why it failed.
pub fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `s` as one word for a POSIX shell: as is when it holds only characters no shell treats
/// specially, else in single quotes with embedded single quotes closed, escaped and reopened.
/// pg_ctl hands its `-o` options to `/bin/sh`, the base backup runs as `sh -c`, and scripts
/// that print variables for a shell to `eval` must quote their values.
pub fn quote(s: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "._/:=@%+-,".contains(c);
    if !s.is_empty() && s.chars().all(plain) {
        return s.to_owned();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_lines_keeps_the_tail() {
        assert_eq!(last_lines("a\nb\nc", 2), "b\nc");
        assert_eq!(last_lines("a", 5), "a");
    }

    #[test]
    fn quotes_survive_the_shell() {
        assert_eq!(quote("/srv/my pg"), "'/srv/my pg'");
        assert_eq!(quote("db01"), "db01");
        assert_eq!(quote("$HOME"), "'$HOME'");
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote(""), "''");
    }
}
