//! Step 4: the replica's `.pgpass`, read by pg_basebackup and, at run time, by the
//! walreceiver (primary_conninfo names the passfile).

use super::REPLICATION_USER;

/// `*:*:*:replication_user:PASSWORD`, with `:` and `\` in the password escaped as the
/// passfile format requires.
pub fn pgpass(password: &str) -> String {
    let escaped = password.replace('\\', "\\\\").replace(':', "\\:");
    format!("*:*:*:{REPLICATION_USER}:{escaped}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_for_the_replication_user() {
        assert_eq!(pgpass("0a1b2c"), "*:*:*:replication_user:0a1b2c\n");
    }

    #[test]
    fn escapes_separators() {
        assert_eq!(pgpass(r"a:b\c"), "*:*:*:replication_user:a\\:b\\\\c\n");
    }
}
