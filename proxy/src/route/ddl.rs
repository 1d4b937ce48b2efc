//! Spotting statements that change which functions exist or how volatile they are, so the
//! catalog look-up can refresh soon after one passes through the proxy. Done on tokens, not
//! on the syntax tree: sqlparser cannot parse several of these (`CREATE PROCEDURE ... AS $$`,
//! `ALTER PROCEDURE`, `ALTER EXTENSION`, `DROP ROUTINE`), and a statement after the first
//! one that needs the primary is never parsed.

use sqlparser::tokenizer::{Token, TokenWithSpan};

/// Objects whose creation, change or removal can change the set of volatile functions.
const FUNCTION_OBJECTS: &[&str] = &["aggregate", "extension", "function", "procedure", "routine"];

/// Whether any statement among `tokens` is `CREATE [OR REPLACE] | ALTER | DROP` of a
/// function, procedure, routine, aggregate or extension, or `ALTER SCHEMA` (a rename moves
/// its functions).
pub fn changes_functions(tokens: &[TokenWithSpan]) -> bool {
    tokens
        .split(|t| t.token == Token::SemiColon)
        .any(|statement| {
            // Leading words; any other token ends them.
            let mut words = statement.iter().filter_map(|t| match &t.token {
                Token::Whitespace(_) => None,
                Token::Word(w) if w.quote_style.is_none() => Some(w.value.as_str()),
                _ => Some(""),
            });
            let verb = words.next().unwrap_or_default();
            let mut object = words.next().unwrap_or_default();
            if verb.eq_ignore_ascii_case("create") && object.eq_ignore_ascii_case("or") {
                object = words.nth(1).unwrap_or_default();
            }
            let is = |word: &str| object.eq_ignore_ascii_case(word);
            let alter = verb.eq_ignore_ascii_case("alter");
            (alter || verb.eq_ignore_ascii_case("create") || verb.eq_ignore_ascii_case("drop"))
                && (FUNCTION_OBJECTS.iter().any(|o| is(o)) || (alter && is("schema")))
        })
}

/// The database a `DROP DATABASE [IF EXISTS] name ...` or `ALTER DATABASE name RENAME TO ...`
/// among `tokens` names, as PostgreSQL folds the name: before such a statement the proxy
/// closes its idle connections to that database, which would otherwise hold it.
pub fn database_ddl_target(tokens: &[TokenWithSpan]) -> Option<String> {
    tokens
        .split(|t| t.token == Token::SemiColon)
        .find_map(|statement| {
            let mut tokens = statement
                .iter()
                .map(|t| &t.token)
                .filter(|t| !matches!(t, Token::Whitespace(_)));
            let word = |t: Option<&Token>, expected: &str| {
                matches!(t, Some(Token::Word(w)) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(expected))
            };
            let verb = tokens.next();
            let drop = word(verb, "drop");
            if !(drop || word(verb, "alter")) || !word(tokens.next(), "database") {
                return None;
            }
            let mut name = tokens.next();
            if drop && word(name, "if") {
                if !word(tokens.next(), "exists") {
                    return None;
                }
                name = tokens.next();
            }
            let name = match name? {
                Token::Word(w) if w.quote_style == Some('"') => w.value.clone(),
                Token::Word(w) if w.quote_style.is_none() => w.value.to_ascii_lowercase(),
                _ => return None,
            };
            let renames = word(tokens.next(), "rename");
            (drop || renames).then_some(name)
        })
}

/// [`database_ddl_target`] of SQL text.
pub fn database_ddl_target_sql(sql: &str) -> Option<String> {
    let dialect = sqlparser::dialect::PostgreSqlDialect {};
    let tokens = sqlparser::tokenizer::Tokenizer::new(&dialect, sql)
        .tokenize_with_location()
        .ok()?;
    database_ddl_target(&tokens)
}

#[cfg(test)]
mod tests {
    use super::super::test_tokens;
    use super::*;

    fn changes(sql: &str) -> bool {
        changes_functions(&test_tokens(sql))
    }

    #[test]
    fn spots_function_ddl_anywhere_in_the_string() {
        for sql in [
            "CREATE FUNCTION f() RETURNS int AS 'SELECT 1' LANGUAGE sql",
            "create or replace function f() returns int as $$ select 1 $$ language sql",
            "CREATE PROCEDURE p() LANGUAGE sql AS $$ SELECT 1 $$",
            "CREATE AGGREGATE a (int) (sfunc = f, stype = int)",
            "ALTER FUNCTION f() VOLATILE",
            "ALTER PROCEDURE p() RENAME TO q",
            "ALTER ROUTINE f() STABLE",
            "ALTER EXTENSION e UPDATE",
            "ALTER SCHEMA s RENAME TO t",
            "DROP FUNCTION f",
            "DROP ROUTINE f",
            "CREATE EXTENSION pgcrypto",
            "/* c */ CREATE -- c\n FUNCTION f() RETURNS int AS 'SELECT 1' LANGUAGE sql",
            "INSERT INTO t VALUES (1); CREATE FUNCTION f() RETURNS int AS 'SELECT 1' LANGUAGE sql",
        ] {
            assert!(changes(sql), "{sql}");
        }
    }

    #[test]
    fn other_statements_change_no_functions() {
        for sql in [
            "SELECT 1",
            "SELECT function FROM t",
            "CREATE TABLE function (a int)",
            "CREATE SCHEMA s",
            "DROP SCHEMA s",
            "CREATE INDEX i ON t (f(a))",
            "SELECT 'CREATE FUNCTION f()'",
            "CREATE \"function\" f",
            "COMMENT ON FUNCTION f() IS 'x'",
            "CREATE OR",
            "",
        ] {
            assert!(!changes(sql), "{sql}");
        }
    }

    #[test]
    fn names_the_database_a_drop_or_rename_is_about() {
        for (sql, name) in [
            ("DROP DATABASE x", Some("x")),
            ("drop database IF EXISTS Mixed WITH (FORCE)", Some("mixed")),
            ("DROP DATABASE \"Mixed Case\"", Some("Mixed Case")),
            ("DROP DATABASE x (FORCE);", Some("x")),
            ("ALTER DATABASE y RENAME TO z", Some("y")),
            ("ALTER DATABASE y SET work_mem = '1MB'", None),
            ("ALTER DATABASE y OWNER TO r", None),
            ("DROP TABLE database", None),
            ("SELECT 'DROP DATABASE x'", None),
            ("DROP DATABASE", None),
        ] {
            assert_eq!(
                database_ddl_target(&test_tokens(sql)).as_deref(),
                name,
                "{sql}"
            );
        }
        assert_eq!(
            database_ddl_target_sql("  DROP DATABASE q").as_deref(),
            Some("q")
        );
    }
}
