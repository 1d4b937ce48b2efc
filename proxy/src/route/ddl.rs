//! Spotting statements that change what the catalog look-up knows: functions (which exist,
//! how volatile) and sequences, so that the look-up can refresh soon after one passes
//! through the proxy, and a new sequence counts as one at once. Done on tokens, not on the
//! syntax tree: sqlparser cannot parse several of these (`CREATE PROCEDURE ... AS $$`,
//! `ALTER PROCEDURE`, `ALTER EXTENSION`, `DROP ROUTINE`), and a statement after the first
//! one that needs the primary is never parsed.

use sqlparser::tokenizer::{Token, TokenWithSpan, Word};

/// Objects whose creation, change or removal can change the set of volatile functions.
const FUNCTION_OBJECTS: &[&str] = &["aggregate", "extension", "function", "procedure", "routine"];

/// Words in a `CREATE TABLE` or `ALTER TABLE` that may create a sequence for a column: serial
/// types, identity columns, and `LIKE` (which can copy identity columns).
const IMPLICIT_SEQUENCE_WORDS: &[&str] = &[
    "bigserial",
    "identity",
    "like",
    "serial",
    "serial2",
    "serial4",
    "serial8",
    "smallserial",
];

/// What a SQL string changes in the catalog look-up's view.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CatalogChanges {
    /// `CREATE [OR REPLACE] | ALTER | DROP` of a function, procedure, routine, aggregate or
    /// extension, or `ALTER SCHEMA` (a rename moves its functions).
    pub functions: bool,
    /// Names of sequences made by `CREATE SEQUENCE` or `ALTER SEQUENCE ... RENAME TO`.
    pub sequences: Box<[Box<str>]>,
    /// A `CREATE TABLE` or `ALTER TABLE` that may make a sequence for a column.
    pub implicit_sequences: bool,
}

impl CatalogChanges {
    pub fn is_empty(&self) -> bool {
        !self.functions && self.sequences.is_empty() && !self.implicit_sequences
    }
}

/// The catalog changes of every statement among `tokens`.
pub fn catalog_changes(tokens: &[TokenWithSpan]) -> CatalogChanges {
    let mut changes = CatalogChanges::default();
    let mut sequences = Vec::new();
    for statement in tokens.split(|t| t.token == Token::SemiColon) {
        let first = statement
            .iter()
            .find(|t| !matches!(t.token, Token::Whitespace(_)));
        let changes_something = match first.map(|t| &t.token) {
            Some(Token::Word(w)) => ["create", "alter", "drop"]
                .iter()
                .any(|verb| w.quote_style.is_none() && w.value.eq_ignore_ascii_case(verb)),
            _ => false,
        };
        if !changes_something {
            continue;
        }
        // Words, and a `None` for any other token but whitespace.
        let words: Vec<Option<&Word>> = statement
            .iter()
            .filter_map(|t| match &t.token {
                Token::Whitespace(_) => None,
                Token::Word(w) => Some(Some(w)),
                _ => Some(None),
            })
            .collect();
        let keyword = |i: usize| {
            words
                .get(i)
                .copied()
                .flatten()
                .filter(|w| w.quote_style.is_none())
                .map_or("", |w| w.value.as_str())
        };
        let is = |i: usize, word: &str| keyword(i).eq_ignore_ascii_case(word);
        let verb = keyword(0).to_ascii_lowercase();
        // The object's word: after `OR REPLACE` and `TEMP`/`TEMPORARY`/`UNLOGGED`.
        let mut object = 1;
        if verb == "create" && is(1, "or") {
            object = 3;
        }
        while ["temp", "temporary", "unlogged"]
            .iter()
            .any(|w| is(object, w))
        {
            object += 1;
        }
        let object_is = |word: &str| is(object, word);
        changes.functions |= FUNCTION_OBJECTS.iter().any(|o| object_is(o))
            || (verb == "alter" && object_is("schema"));
        if verb == "create" && object_is("sequence") {
            let mut name = object + 1;
            if is(name, "if") {
                name += 3;
            }
            sequences.extend(last_name_part(&words[name.min(words.len())..]));
        } else if verb == "alter" && (object_is("sequence") || object_is("table")) {
            // `ALTER TABLE` renames sequences too: the new name may be one.
            let rename = (object..words.len()).find(|&i| is(i, "rename") && is(i + 1, "to"));
            if let Some(i) = rename {
                sequences.extend(last_name_part(&words[i + 2..]));
            }
        }
        if verb != "drop" && object_is("table") {
            changes.implicit_sequences |=
                (object..words.len()).any(|i| IMPLICIT_SEQUENCE_WORDS.iter().any(|w| is(i, w)));
        }
    }
    changes.sequences = sequences.into();
    changes
}

/// The last part of the (possibly qualified) name at the start of `words`, as the catalog
/// spells it. A qualified name's dots are the `None`s between its words.
fn last_name_part(words: &[Option<&Word>]) -> Option<Box<str>> {
    let mut last = None;
    for (i, word) in words.iter().enumerate() {
        match (i % 2, word) {
            (0, Some(word)) => last = Some(*word),
            (1, None) => {}
            _ => break,
        }
    }
    let word = last?;
    Some(match word.quote_style {
        Some(_) => word.value.as_str().into(),
        None => word.value.to_ascii_lowercase().into(),
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
        catalog_changes(&test_tokens(sql)).functions
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

#[cfg(test)]
mod sequence_tests {
    use super::super::test_tokens;
    use super::*;

    /// (sql, explicitly named sequences, implicit ones)
    const CASES: &[(&str, &[&str], bool)] = &[
        ("CREATE SEQUENCE s", &["s"], false),
        (
            "create temporary sequence if not exists App.\"My Seq\" START 5",
            &["My Seq"],
            false,
        ),
        (
            "CREATE UNLOGGED SEQUENCE public.s2; CREATE SEQUENCE s3",
            &["s2", "s3"],
            false,
        ),
        ("ALTER SEQUENCE s RENAME TO s_new", &["s_new"], false),
        (
            "ALTER TABLE foo_seq RENAME TO foo_seq_new",
            &["foo_seq_new"],
            false,
        ),
        ("ALTER TABLE t RENAME COLUMN a TO b", &[], false),
        ("ALTER SEQUENCE s RESTART", &[], false),
        ("CREATE TABLE t (id serial PRIMARY KEY)", &[], true),
        (
            "CREATE TABLE t (id bigint GENERATED ALWAYS AS IDENTITY)",
            &[],
            true,
        ),
        ("CREATE TEMP TABLE t (id BIGSERIAL)", &[], true),
        ("CREATE TABLE t (LIKE u INCLUDING ALL)", &[], true),
        ("ALTER TABLE t ADD COLUMN n smallserial", &[], true),
        (
            "ALTER TABLE t ALTER COLUMN id ADD GENERATED BY DEFAULT AS IDENTITY",
            &[],
            true,
        ),
        ("CREATE TABLE t (id int, serial_no text)", &[], false),
        ("DROP SEQUENCE s", &[], false),
        ("DROP TABLE identity", &[], false),
        ("SELECT * FROM s", &[], false),
        ("CREATE SEQUENCE", &[], false),
        (
            "INSERT INTO t VALUES (1); CREATE SEQUENCE x.y.z",
            &["z"],
            false,
        ),
    ];

    #[test]
    fn spots_sequences_made_by_a_statement() {
        for &(sql, names, implicit) in CASES {
            let got = catalog_changes(&test_tokens(sql));
            let got_names: Vec<&str> = got.sequences.iter().map(|s| &**s).collect();
            assert_eq!(
                (got_names.as_slice(), got.implicit_sequences),
                (names, implicit),
                "{sql}"
            );
            assert!(!got.functions, "{sql}");
            assert_eq!(got.is_empty(), names.is_empty() && !implicit, "{sql}");
        }
    }
}
