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

/// The functions pg_rewind calls on its source server, which a role that is not a superuser
/// may call only when granted (PostgreSQL's pg_rewind documentation lists them). With them
/// replication_user can read the source's data files, as it can through a base backup.
pub const REWIND_FUNCTIONS: [&str; 4] = [
    "pg_catalog.pg_ls_dir(text, boolean, boolean)",
    "pg_catalog.pg_stat_file(text, boolean)",
    "pg_catalog.pg_read_binary_file(text)",
    "pg_catalog.pg_read_binary_file(text, bigint, bigint, boolean)",
];

/// How many of [`REWIND_FUNCTIONS`] replication_user may not execute yet.
pub fn missing_rewind_grants_sql() -> String {
    let functions: Vec<String> = REWIND_FUNCTIONS.iter().map(|f| literal(f)).collect();
    format!(
        "SELECT count(*) FROM unnest(ARRAY[{}]) AS f \
         WHERE NOT has_function_privilege('{REPLICATION_USER}', f, 'EXECUTE')",
        functions.join(", ")
    )
}

/// Grants replication_user every one of [`REWIND_FUNCTIONS`].
pub fn rewind_grants_sql() -> String {
    REWIND_FUNCTIONS
        .iter()
        .map(|f| format!("GRANT EXECUTE ON FUNCTION {f} TO {REPLICATION_USER};\n"))
        .collect()
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
    fn pg_rewinds_functions_are_granted_and_checked_by_signature() {
        let grants = rewind_grants_sql();
        assert_eq!(grants.lines().count(), 4);
        assert!(grants.contains(
            "GRANT EXECUTE ON FUNCTION pg_catalog.pg_read_binary_file(text, bigint, bigint, boolean) TO replication_user;"
        ));
        let check = missing_rewind_grants_sql();
        assert!(
            check.contains("'pg_catalog.pg_ls_dir(text, boolean, boolean)'"),
            "{check}"
        );
        assert!(check.contains("has_function_privilege('replication_user', f, 'EXECUTE')"));
    }

    #[test]
    fn a_new_password_for_the_existing_user_is_quoted_too() {
        assert_eq!(
            replication_password_sql("a'b"),
            "ALTER USER replication_user WITH ENCRYPTED PASSWORD 'a''b';\n"
        );
    }
}
