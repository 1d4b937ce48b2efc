//! What a SQL string does to its session beyond where it runs: session settings the other
//! backends must follow, and state only the primary will hold (temporary tables, LISTEN,
//! advisory locks, SQL prepared statements, cursors WITH HOLD).
//!
//! Read from the leading words of each statement and from function-call tokens, not from the
//! syntax tree: every statement of the string counts, including those after the first one
//! that needs the primary, and those sqlparser cannot parse.

use sqlparser::tokenizer::{Token, TokenWithSpan};

/// A set of effects; combining is a bitwise or.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Effects(u16);

impl Effects {
    /// No effect beyond the statement's own result.
    pub const NONE: Effects = Effects(0);
    /// A session-level `SET`/`RESET` (not `SET LOCAL`, `SET TRANSACTION`, `SET CONSTRAINTS`),
    /// a `set_config(..., false)` call, or a `LOAD`.
    pub const SESSION_SET: Effects = Effects(1);
    /// Every statement of the string is a `SET`, a `RESET`, a `SELECT` of `set_config` calls
    /// with constant arguments, or transaction control: its text can be replayed as is.
    pub const ONLY_SETS: Effects = Effects(1 << 1);
    /// `DISCARD ALL`: the session's settings return to their startup values.
    pub const DISCARD_ALL: Effects = Effects(1 << 2);
    /// Creates state only the backend that ran it holds.
    pub const PINS: Effects = Effects(1 << 3);
    /// May remove such state: when the session holds some, ask the server afterwards.
    pub const MAY_UNPIN: Effects = Effects(1 << 4);
    /// May create it where the text cannot tell (`DO`, `CALL`, text sqlparser cannot
    /// tokenize): ask the server afterwards in any case.
    pub const OPAQUE: Effects = Effects(1 << 6);
    /// Starts with `BEGIN`/`START TRANSACTION` without an access mode: the transaction is
    /// read-only when the session's `default_transaction_read_only` is on.
    pub const DEFAULT_MODE_BEGIN: Effects = Effects(1 << 5);
    /// `BEGIN`, `COMMIT`, `SAVEPOINT` ... among the statements.
    pub const TX_CONTROL: Effects = Effects(1 << 7);
    /// `ROLLBACK TO SAVEPOINT` among them: a `ROLLBACK` tag in its answer may not end the
    /// transaction.
    pub const PARTIAL_ROLLBACK: Effects = Effects(1 << 8);
    /// A `COPY`: the connection may be in copy mode after it, where nothing else may be sent.
    pub const COPY: Effects = Effects(1 << 9);
    /// `DROP DATABASE` or `ALTER DATABASE ... RENAME`: the proxy's idle connections to that
    /// database must close first (`route::database_ddl_target_sql` names it).
    pub const DATABASE_DDL: Effects = Effects(1 << 10);
    /// Every statement changes only settings (as for `ONLY_SETS`, and `set_config` calls
    /// may take parameters): the string writes no data, though its text alone may not be
    /// replayable. Implied by `ONLY_SETS`.
    pub const ONLY_SETTINGS: Effects = Effects(1 << 11);
    /// Creates a temporary object: the server keeps a temporary schema for the rest of the
    /// connection's life, which no reset removes (a later session there would see it exist).
    pub const TEMP: Effects = Effects(1 << 12);
    /// The string's last transaction control statement ends the transaction (`COMMIT`,
    /// `END`, `ROLLBACK`, `ABORT`, without `AND CHAIN`; not `ROLLBACK TO`): no transaction
    /// is left open when it succeeds.
    pub const ENDS_TX: Effects = Effects(1 << 13);
    /// Names `synchronous_commit` (a `SET [LOCAL]` of it, a `set_config` of it): commits
    /// after it may be acknowledged before their WAL is flushed.
    pub const SYNC_COMMIT: Effects = Effects(1 << 14);

    pub fn contains(self, other: Effects) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn intersects(self, other: Effects) -> bool {
        self.0 & other.0 != 0
    }

    pub fn is_none(self) -> bool {
        self.0 == 0
    }
}

impl std::ops::BitOr for Effects {
    type Output = Effects;
    fn bitor(self, rhs: Effects) -> Effects {
        Effects(self.0 | rhs.0)
    }
}

impl std::ops::BitOrAssign for Effects {
    fn bitor_assign(&mut self, rhs: Effects) {
        self.0 |= rhs.0;
    }
}

/// Functions taking session-level advisory locks (the `_xact_` ones end with the transaction).
const LOCKING: &[&str] = &[
    "pg_advisory_lock",
    "pg_advisory_lock_shared",
    "pg_try_advisory_lock",
    "pg_try_advisory_lock_shared",
];
/// Functions releasing them.
const UNLOCKING: &[&str] = &[
    "pg_advisory_unlock",
    "pg_advisory_unlock_shared",
    "pg_advisory_unlock_all",
];

/// Leading words of transaction control statements.
const TX_CONTROL: &[&str] = &[
    "begin",
    "start",
    "commit",
    "end",
    "rollback",
    "abort",
    "savepoint",
    "release",
];

/// Leading words of statements that may end primary-only state.
const RELEASING: &[&str] = &[
    "discard",
    "unlisten",
    "deallocate",
    "close",
    "drop",
    "commit",
    "end",
    "rollback",
    "abort",
];

/// The effects of the statements in `tokens`.
pub fn effects(tokens: &[TokenWithSpan]) -> Effects {
    let mut all = Effects::NONE;
    let mut only_sets = true;
    let mut only_settings = true;
    let mut first = true;
    let mut ends_tx = false;
    for statement in tokens.split(|t| t.token == Token::SemiColon) {
        let words: Vec<&str> = statement
            .iter()
            .filter_map(|t| match &t.token {
                Token::Whitespace(_) | Token::EOF => None,
                Token::Word(w) if w.quote_style.is_none() => Some(w.value.as_str()),
                _ => Some(""),
            })
            .collect();
        if words.is_empty() {
            continue;
        }
        let effect = statement_effects(&words, first) | tx_control(&words);
        if effect.contains(Effects::TX_CONTROL) {
            ends_tx = ends_transaction(&words);
        }
        first = false;
        let (calls, set_configs) = calls(statement);
        if names_synchronous_commit(statement) {
            all |= Effects::SYNC_COMMIT;
        }
        let settings_only =
            is_set(&words) || effect.contains(Effects::TX_CONTROL) || changes_no_setting(&words);
        only_sets &= settings_only || set_configs == SetConfigs::Constant;
        only_settings &= settings_only || set_configs != SetConfigs::None;
        all |= effect | calls;
    }
    if only_sets && all.contains(Effects::SESSION_SET) {
        all |= Effects::ONLY_SETS;
    }
    if only_settings && all.contains(Effects::SESSION_SET) {
        all |= Effects::ONLY_SETTINGS;
    }
    if ends_tx {
        all |= Effects::ENDS_TX;
    }
    all
}

/// Whether the statement names the `synchronous_commit` setting, as a word or a string.
fn names_synchronous_commit(statement: &[TokenWithSpan]) -> bool {
    const NAME: &str = "synchronous_commit";
    statement.iter().any(|t| match &t.token {
        Token::Word(w) => w.value.eq_ignore_ascii_case(NAME),
        Token::SingleQuotedString(s) => s.eq_ignore_ascii_case(NAME),
        _ => false,
    })
}

/// Whether a transaction control statement ends the transaction without starting another.
fn ends_transaction(words: &[&str]) -> bool {
    let ends = ["commit", "end", "rollback", "abort"]
        .iter()
        .any(|w| is(words.first(), w));
    let chains = words
        .windows(2)
        .any(|w| is(w.first(), "and") && is(w.get(1), "chain"));
    let partial = words.iter().any(|w| w.eq_ignore_ascii_case("to"));
    ends && !chains && !partial
}

/// Statements a string of settings may also hold that change no setting: asyncpg resets a
/// pooled connection with `SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`.
fn changes_no_setting(words: &[&str]) -> bool {
    match words {
        [verb, ..]
            if verb.eq_ignore_ascii_case("close") || verb.eq_ignore_ascii_case("unlisten") =>
        {
            true
        }
        [select, function, "", ""] => {
            select.eq_ignore_ascii_case("select")
                && function.eq_ignore_ascii_case("pg_advisory_unlock_all")
        }
        _ => false,
    }
}

fn is(word: Option<&&str>, expected: &str) -> bool {
    word.is_some_and(|w| w.eq_ignore_ascii_case(expected))
}

fn is_set(words: &[&str]) -> bool {
    ["set", "reset", "load"]
        .iter()
        .any(|w| is(words.first(), w))
}

/// Whether the statement is transaction control, and a rollback to a savepoint.
fn tx_control(words: &[&str]) -> Effects {
    let verb = words[0].to_ascii_lowercase();
    if !TX_CONTROL.contains(&verb.as_str()) || (verb == "start" && !is(words.get(1), "transaction"))
    {
        return Effects::NONE;
    }
    let partial = verb == "rollback" && words.iter().any(|w| w.eq_ignore_ascii_case("to"));
    if partial {
        Effects::TX_CONTROL | Effects::PARTIAL_ROLLBACK
    } else {
        Effects::TX_CONTROL
    }
}

/// The effects a statement's leading words say it has; `first` for the string's first one.
fn statement_effects(words: &[&str], first: bool) -> Effects {
    let verb = words[0].to_ascii_lowercase();
    let next = words.get(1);
    match verb.as_str() {
        "set"
            if ["local", "transaction", "constraints"]
                .iter()
                .any(|w| is(next, w)) =>
        {
            Effects::NONE
        }
        "set" | "reset" => Effects::SESSION_SET,
        // Loading a library can remove placeholder settings of its prefix: replayed in order.
        "load" => Effects::SESSION_SET,
        "discard" if is(next, "all") => Effects::DISCARD_ALL | Effects::MAY_UNPIN,
        "create" if creates_temporary(&words[1..]) => Effects::PINS | Effects::TEMP,
        "select" if selects_into_temporary(words) => Effects::PINS | Effects::TEMP,
        "listen" => Effects::PINS,
        "prepare" if !is(next, "transaction") => Effects::PINS,
        "prepare" => Effects::MAY_UNPIN,
        "declare"
            if words
                .windows(2)
                .any(|w| is(w.first(), "with") && is(w.get(1), "hold")) =>
        {
            Effects::PINS
        }
        "begin" | "start" if first && !sets_access_mode(words) && !serializable(words) => {
            Effects::DEFAULT_MODE_BEGIN
        }
        "do" | "call" => Effects::OPAQUE,
        "drop" if is(next, "database") => Effects::DATABASE_DDL | Effects::MAY_UNPIN,
        "alter"
            if is(next, "database") && words.iter().any(|w| w.eq_ignore_ascii_case("rename")) =>
        {
            Effects::DATABASE_DDL
        }
        "copy" => Effects::COPY,
        verb if RELEASING.contains(&verb) => Effects::MAY_UNPIN,
        _ => Effects::NONE,
    }
}

/// `CREATE [GLOBAL|LOCAL] TEMP|TEMPORARY ...`, or anything created in `pg_temp`.
fn creates_temporary(rest: &[&str]) -> bool {
    let mut words = rest.iter();
    let mut word = words.next();
    if is(word, "or") {
        word = words.nth(1); // OR REPLACE
    }
    if is(word, "global") || is(word, "local") {
        word = words.next();
    }
    is(word, "temp")
        || is(word, "temporary")
        || rest.iter().any(|w| w.eq_ignore_ascii_case("pg_temp"))
}

/// `SELECT ... INTO [TEMP|TEMPORARY] ...` of a temporary table.
fn selects_into_temporary(words: &[&str]) -> bool {
    words
        .windows(2)
        .any(|w| is(w.first(), "into") && (is(w.get(1), "temp") || is(w.get(1), "temporary")))
}

/// Whether a `BEGIN`/`START TRANSACTION` names READ ONLY or READ WRITE.
fn sets_access_mode(words: &[&str]) -> bool {
    words
        .windows(2)
        .any(|w| is(w.first(), "read") && (is(w.get(1), "only") || is(w.get(1), "write")))
}

/// `ISOLATION LEVEL SERIALIZABLE`, which a standby refuses.
fn serializable(words: &[&str]) -> bool {
    words.iter().any(|w| w.eq_ignore_ascii_case("serializable"))
}

/// Advisory-lock and `set_config` calls anywhere in the statement; and whether it is a
/// `SELECT` of nothing but `set_config` calls with constant arguments (replayable as is).
fn calls(statement: &[TokenWithSpan]) -> (Effects, SetConfigs) {
    let tokens: Vec<&Token> = statement
        .iter()
        .map(|t| &t.token)
        .filter(|t| !matches!(t, Token::Whitespace(_) | Token::EOF))
        .collect();
    let mut effects = Effects::NONE;
    for (i, pair) in tokens.windows(2).enumerate() {
        let (Token::Word(w), Token::LParen) = (pair[0], pair[1]) else {
            continue;
        };
        let name = w.value.to_ascii_lowercase();
        if LOCKING.contains(&name.as_str()) {
            effects |= Effects::PINS;
        } else if UNLOCKING.contains(&name.as_str()) {
            effects |= Effects::MAY_UNPIN;
        } else if name == "set_config" && !is_local_set_config(&tokens[i + 2..]) {
            effects |= Effects::SESSION_SET;
        }
    }
    (effects, selects_only_set_configs(&tokens))
}

/// Whether a statement is a `SELECT` of nothing but `set_config` calls, and of what arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SetConfigs {
    None,
    /// Constants only: replayable as is.
    Constant,
    /// Some are parameters, whose values a Bind gives.
    Bound,
}

/// Whether a `set_config(` call's third argument is the constant `true` (the setting then
/// ends with the transaction). `args` starts after the parenthesis.
fn is_local_set_config(args: &[&Token]) -> bool {
    let mut depth = 0;
    let mut commas = 0;
    for (i, token) in args.iter().enumerate() {
        match token {
            Token::LParen => depth += 1,
            Token::RParen if depth == 0 => return false,
            Token::RParen => depth -= 1,
            Token::Comma if depth == 0 => {
                commas += 1;
                if commas == 2 {
                    return matches!(args.get(i + 1), Some(Token::Word(w)) if w.value.eq_ignore_ascii_case("true"))
                        && matches!(args.get(i + 2), Some(Token::RParen));
                }
            }
            _ => {}
        }
    }
    false
}

/// `SELECT [pg_catalog.]set_config('name', 'value', false) [, ...]`: whether the statement
/// is that, with constants only or with parameters.
fn selects_only_set_configs(tokens: &[&Token]) -> SetConfigs {
    match set_config_calls(tokens) {
        None => SetConfigs::None,
        Some(calls)
            if calls
                .iter()
                .flatten()
                .any(|a| matches!(a, SetConfigArg::Param(_))) =>
        {
            SetConfigs::Bound
        }
        Some(_) => SetConfigs::Constant,
    }
}

/// An argument of a `set_config` call the proxy can replay: a constant, or a parameter whose
/// value a Bind gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetConfigArg {
    Text(String),
    Bool(bool),
    /// `$n`, numbered from 1.
    Param(usize),
}

/// The arguments of each call, when `sql` is one statement
/// `SELECT [pg_catalog.]set_config(a, b, c) [, ...]` whose arguments are constants or
/// parameters (asyncpg runs `SELECT set_config('jit', $1, false)`).
pub fn set_config_template(sql: &str) -> Option<Vec<[SetConfigArg; 3]>> {
    let dialect = sqlparser::dialect::PostgreSqlDialect {};
    let tokens = sqlparser::tokenizer::Tokenizer::new(&dialect, sql)
        .tokenize()
        .ok()?;
    let mut tokens: Vec<&Token> = tokens
        .iter()
        .filter(|t| !matches!(t, Token::Whitespace(_) | Token::EOF))
        .collect();
    if tokens.last() == Some(&&Token::SemiColon) {
        tokens.pop();
    }
    set_config_calls(&tokens)
}

fn set_config_calls(tokens: &[&Token]) -> Option<Vec<[SetConfigArg; 3]>> {
    let word = |t: Option<&&Token>, w: &str| matches!(t, Some(Token::Word(x)) if x.quote_style.is_none() && x.value.eq_ignore_ascii_case(w));
    if !word(tokens.first(), "select") {
        return None;
    }
    let mut calls = Vec::new();
    let mut rest = &tokens[1..];
    loop {
        if word(rest.first(), "pg_catalog") && matches!(rest.get(1), Some(Token::Period)) {
            rest = &rest[2..];
        }
        // `current_setting('name' [, missing_ok])` beside them reads, and changes nothing
        // (asyncpg: `SELECT current_setting('jit') AS cur, set_config('jit', 'off', false)`).
        if let Some(after) = current_setting_call(rest) {
            rest = skip_alias(after);
            match rest.first() {
                None if !calls.is_empty() => return Some(calls),
                Some(Token::Comma) => {
                    rest = &rest[1..];
                    continue;
                }
                _ => return None,
            }
        }
        if !word(rest.first(), "set_config") || !matches!(rest.get(1), Some(Token::LParen)) {
            return None;
        }
        rest = &rest[2..];
        let mut args = Vec::with_capacity(3);
        for arg in 0..3 {
            let value = match rest.first()? {
                Token::SingleQuotedString(s) => SetConfigArg::Text(s.clone()),
                Token::Number(n, _) => SetConfigArg::Text(n.clone()),
                Token::Placeholder(p) => {
                    SetConfigArg::Param(p.strip_prefix('$')?.parse().ok().filter(|n| *n > 0)?)
                }
                _ if word(rest.first(), "true") => SetConfigArg::Bool(true),
                _ if word(rest.first(), "false") => SetConfigArg::Bool(false),
                _ => return None,
            };
            let separator = if arg == 2 {
                Token::RParen
            } else {
                Token::Comma
            };
            if rest.get(1) != Some(&&separator) {
                return None;
            }
            args.push(value);
            rest = &rest[2..];
        }
        calls.push(args.try_into().ok()?);
        rest = skip_alias(rest);
        match rest.first() {
            None => return Some(calls),
            Some(Token::Comma) => rest = &rest[1..],
            Some(_) => return None,
        }
    }
}

/// What follows `current_setting('name' [, true|false])` at the start of `tokens`, if it is
/// that call with constant arguments.
fn current_setting_call<'a>(tokens: &'a [&'a Token]) -> Option<&'a [&'a Token]> {
    let is_word = |t: &Token, w: &str| matches!(t, Token::Word(x) if x.quote_style.is_none() && x.value.eq_ignore_ascii_case(w));
    match tokens {
        [f, Token::LParen, Token::SingleQuotedString(_), Token::RParen, rest @ ..]
            if is_word(f, "current_setting") =>
        {
            Some(rest)
        }
        [f, Token::LParen, Token::SingleQuotedString(_), Token::Comma, flag, Token::RParen, rest @ ..]
            if is_word(f, "current_setting")
                && (is_word(flag, "true") || is_word(flag, "false")) =>
        {
            Some(rest)
        }
        _ => None,
    }
}

/// Past an `AS name` after a select-list item.
fn skip_alias<'a>(tokens: &'a [&'a Token]) -> &'a [&'a Token] {
    match tokens {
        [Token::Word(a), Token::Word(_), rest @ ..]
            if a.quote_style.is_none() && a.value.eq_ignore_ascii_case("as") =>
        {
            rest
        }
        _ => tokens,
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_tokens;
    use super::*;

    fn of(sql: &str) -> Effects {
        effects(&test_tokens(sql))
    }

    #[test]
    fn session_settings() {
        let replayable = Effects::SESSION_SET | Effects::ONLY_SETS | Effects::ONLY_SETTINGS;
        for sql in [
            "SET search_path = a, b",
            "set session search_path to a",
            "SET ROLE r",
            "RESET ROLE",
            "SET SESSION AUTHORIZATION r",
            "SET TIME ZONE 'UTC'",
            "RESET ALL",
            "SET application_name = 'x'; SET LOCAL work_mem = '1MB'",
            "LOAD 'plpgsql'",
        ] {
            assert_eq!(of(sql), replayable, "{sql}");
        }
        // What asyncpg sends: around its type introspection, and to reset a pooled connection.
        for sql in [
            "SELECT current_setting('jit') AS cur, set_config('jit', 'off', false) AS new",
            "SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL;",
        ] {
            assert!(of(sql).contains(replayable), "{sql}: {:?}", of(sql));
        }
        for sql in [
            "SELECT current_setting('jit'), now(), set_config('jit', 'off', false)",
            "SELECT pg_advisory_unlock(1); RESET ALL",
            "SELECT current_setting('jit') AS cur",
        ] {
            assert!(!of(sql).contains(Effects::ONLY_SETS), "{sql}");
        }
        let template = set_config_template(
            "SELECT current_setting('jit') AS cur, set_config('jit', $1, false) AS new",
        );
        assert_eq!(
            template,
            Some(vec![[
                SetConfigArg::Text("jit".into()),
                SetConfigArg::Param(1),
                SetConfigArg::Bool(false)
            ]])
        );
        for sql in [
            "SET LOCAL search_path = a",
            "SET TRANSACTION READ ONLY",
            "SET CONSTRAINTS ALL DEFERRED",
            "SELECT 'SET x = 1'",
        ] {
            assert!(!of(sql).contains(Effects::SESSION_SET), "{sql}");
        }
        let mixed = of("SET search_path = a; SELECT 1");
        assert!(mixed.contains(Effects::SESSION_SET) && !mixed.contains(Effects::ONLY_SETS));
    }

    #[test]
    fn state_only_the_primary_holds() {
        for sql in [
            "CREATE TEMP TABLE t (a int)",
            "create temporary view v as select 1",
            "CREATE GLOBAL TEMPORARY TABLE t (a int)",
            "CREATE OR REPLACE TEMP VIEW v AS SELECT 1",
            "CREATE TABLE pg_temp.t (a int)",
            "SELECT 1 AS a INTO TEMP t",
            "LISTEN ch",
            "PREPARE p AS SELECT 1",
            "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
            "SELECT pg_advisory_lock(1)",
            "SELECT x, PG_TRY_ADVISORY_LOCK_SHARED(2) FROM t",
            "INSERT INTO t VALUES (1); LISTEN ch",
        ] {
            assert!(of(sql).contains(Effects::PINS), "{sql}");
            let temporary = sql.to_ascii_lowercase().contains("temp");
            assert_eq!(of(sql).contains(Effects::TEMP), temporary, "{sql}");
        }
        for sql in [
            "CREATE TABLE t (a int)",
            "DECLARE c CURSOR FOR SELECT 1",
            "SELECT pg_advisory_xact_lock(1)",
            "SELECT 'LISTEN x', 'pg_advisory_lock(1)'",
            "PREPARE TRANSACTION 'x'",
        ] {
            assert!(!of(sql).contains(Effects::PINS), "{sql}");
        }
    }

    #[test]
    fn statements_that_may_release_it() {
        for sql in [
            "DISCARD TEMP",
            "UNLISTEN *",
            "DEALLOCATE p",
            "CLOSE c",
            "DROP TABLE t",
            "COMMIT",
            "ROLLBACK",
            "SELECT pg_advisory_unlock(1)",
            "select pg_advisory_unlock_all()",
        ] {
            assert!(of(sql).contains(Effects::MAY_UNPIN), "{sql}");
        }
        for sql in ["DO $$ BEGIN END $$", "CALL p()"] {
            assert!(of(sql).contains(Effects::OPAQUE), "{sql}");
        }
        assert!(of("DROP TABLE t; COPY u FROM STDIN").contains(Effects::COPY));
        assert!(of("DISCARD ALL").contains(Effects::DISCARD_ALL));
        assert!(of("DROP DATABASE x WITH (FORCE)").contains(Effects::DATABASE_DDL));
        assert!(of("alter database x rename to y").contains(Effects::DATABASE_DDL));
        assert!(!of("ALTER DATABASE x SET a.b = 1").contains(Effects::DATABASE_DDL));
        assert!(of("SELECT 1").is_none());
    }

    #[test]
    fn begin_without_an_access_mode() {
        for sql in [
            "BEGIN",
            "begin work",
            "START TRANSACTION ISOLATION LEVEL READ COMMITTED",
            "BEGIN; INSERT INTO t VALUES (1)",
        ] {
            assert!(of(sql).contains(Effects::DEFAULT_MODE_BEGIN), "{sql}");
        }
        for sql in [
            "BEGIN READ WRITE",
            "START TRANSACTION READ ONLY",
            "SELECT 1; BEGIN",
            "BEGIN ISOLATION LEVEL SERIALIZABLE",
        ] {
            assert!(!of(sql).contains(Effects::DEFAULT_MODE_BEGIN), "{sql}");
        }
    }

    #[test]
    fn set_config_calls() {
        let replayable = Effects::SESSION_SET | Effects::ONLY_SETS | Effects::ONLY_SETTINGS;
        for sql in [
            "SELECT set_config('app.tenant', '42', false)",
            "select pg_catalog.set_config('a.b', 'x', FALSE), set_config('a.c', 'y', false);",
        ] {
            assert_eq!(of(sql), replayable, "{sql}");
        }
        for sql in [
            "SELECT set_config('a.b', name, false) FROM t",
            "SELECT set_config($1, $2, false)",
            "SELECT 1, set_config('a.b', 'x', false)",
        ] {
            let effects = of(sql);
            assert!(effects.contains(Effects::SESSION_SET), "{sql}");
            assert!(!effects.contains(Effects::ONLY_SETS), "{sql}");
        }
        // With parameters: not replayable as text, but settings only (no write).
        let bound = of("SELECT set_config('jit', $1, false)");
        assert!(bound.contains(Effects::ONLY_SETTINGS) && !bound.contains(Effects::ONLY_SETS));
        assert!(!of("SELECT 1, set_config('a.b', 'x', false)").contains(Effects::ONLY_SETTINGS));
        for sql in [
            "SELECT set_config('a.b', 'x', true)",
            "SELECT 'set_config(1, 2, false)'",
        ] {
            assert!(of(sql).is_none(), "{sql}");
        }
    }

    #[test]
    fn transaction_control_among_settings() {
        let effects = of("BEGIN; SET a.b = 1; SAVEPOINT p; ROLLBACK TO p; COMMIT");
        for bit in [
            Effects::SESSION_SET,
            Effects::ONLY_SETS,
            Effects::TX_CONTROL,
            Effects::PARTIAL_ROLLBACK,
        ] {
            assert!(effects.contains(bit), "{bit:?}");
        }
        assert!(!of("ROLLBACK").contains(Effects::PARTIAL_ROLLBACK));
        assert!(of("RELEASE SAVEPOINT p").contains(Effects::TX_CONTROL));
        assert!(!of("START pg_thing").contains(Effects::TX_CONTROL));
    }

    #[test]
    fn statements_that_may_make_commits_asynchronous() {
        for (sql, names) in [
            ("SET LOCAL synchronous_commit = off", true),
            ("set synchronous_commit to 'local'", true),
            ("SELECT set_config('synchronous_commit', 'off', true)", true),
            (
                "BEGIN; SET LOCAL SYNCHRONOUS_COMMIT = off; INSERT INTO t VALUES (1)",
                true,
            ),
            ("SET work_mem = '8MB'", false),
            ("SELECT 'synchronous'", false),
        ] {
            assert_eq!(of(sql).contains(Effects::SYNC_COMMIT), names, "{sql}");
        }
    }

    #[test]
    fn statements_that_leave_no_transaction_open() {
        for (sql, ends) in [
            ("COMMIT", true),
            ("end transaction", true),
            ("ROLLBACK", true),
            ("abort", true),
            ("COMMIT AND NO CHAIN", true),
            ("BEGIN; INSERT INTO t VALUES (1); COMMIT", true),
            ("COMMIT; INSERT INTO t VALUES (1)", true),
            ("COMMIT AND CHAIN", false),
            ("ROLLBACK TO SAVEPOINT p", false),
            ("ROLLBACK TO p", false),
            ("COMMIT; BEGIN", false),
            ("BEGIN; INSERT INTO t VALUES (1)", false),
            ("SAVEPOINT p", false),
            ("INSERT INTO t VALUES (1)", false),
        ] {
            assert_eq!(of(sql).contains(Effects::ENDS_TX), ends, "{sql}");
        }
    }

    #[test]
    fn set_config_templates() {
        use SetConfigArg::*;
        let text = |s: &str| Text(s.to_owned());
        assert_eq!(
            set_config_template("SELECT set_config('jit', $1, false)"),
            Some(vec![[text("jit"), Param(1), Bool(false)]])
        );
        assert_eq!(
            set_config_template(
                "select pg_catalog.set_config($1, $2, $3), set_config('a.b', 5, TRUE);"
            ),
            Some(vec![
                [Param(1), Param(2), Param(3)],
                [text("a.b"), text("5"), Bool(true)]
            ])
        );
        for sql in [
            "SELECT set_config('a', $1, false) FROM t",
            "SELECT set_config('a', $1 || 'x', false)",
            "SELECT set_config('a', $0, false)",
            "SELECT 1, set_config('a', $1, false)",
            "SELECT set_config('a', $1)",
            "SELECT set_config('a', $1, false); SELECT 1",
        ] {
            assert_eq!(set_config_template(sql), None, "{sql}");
        }
    }
}
