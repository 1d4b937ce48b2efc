//! Step 4: the replication user's SQL script, uploaded as a `.sql` file and run with
//! `psql -v ON_ERROR_STOP=1` (without it, psql exits 0 on SQL errors).

use super::REPLICATION_USER;

/// A SQL string literal for `text`.
pub(crate) fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The tutorial's three statements with the password filled in.
pub fn replication_user_sql(password: &str) -> String {
    format!(
        "CREATE USER {REPLICATION_USER} WITH ENCRYPTED PASSWORD {} REPLICATION LOGIN;\n\
         GRANT SELECT ON ALL TABLES IN SCHEMA public TO {REPLICATION_USER};\n\
         ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO {REPLICATION_USER};\n",
        literal(password)
    )
}

/// Sets a new password on the existing user, when a run that created it failed before
/// `.pgpass` was written, or the configured password changed.
pub fn replication_password_sql(password: &str) -> String {
    format!(
        "ALTER USER {REPLICATION_USER} WITH ENCRYPTED PASSWORD {};\n",
        literal(password)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tutorials_statements() {
        let sql = replication_user_sql("0a1b");
        let lines: Vec<&str> = sql.lines().collect();
        assert_eq!(
            lines,
            vec![
                "CREATE USER replication_user WITH ENCRYPTED PASSWORD '0a1b' REPLICATION LOGIN;",
                "GRANT SELECT ON ALL TABLES IN SCHEMA public TO replication_user;",
                "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO replication_user;",
            ]
        );
    }

    #[test]
    fn quotes_in_a_configured_password_cannot_end_the_literal() {
        let sql = replication_user_sql("it's'; DROP TABLE x; --");
        assert!(sql.starts_with(
            "CREATE USER replication_user WITH ENCRYPTED PASSWORD 'it''s''; DROP TABLE x; --' REPLICATION LOGIN;"
        ));
    }

    #[test]
    fn a_new_password_for_the_existing_user_is_quoted_too() {
        assert_eq!(
            replication_password_sql("a'b"),
            "ALTER USER replication_user WITH ENCRYPTED PASSWORD 'a''b';\n"
        );
    }
}
