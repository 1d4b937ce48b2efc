//! The session's settings, so that every backend the session uses has them: the `SET` and
//! `RESET` statements that took effect, in order, replayed on a connection before the next
//! statement the session sends there.
//!
//! Each entry has a sequence number; a connection records the newest one it has, so it gets
//! only what it lacks. A later statement for the same parameter replaces an earlier one (the
//! later one wins anyway), so a session that sets the same thing on every request keeps a
//! short log.

use bytes::Bytes;

use super::words::Words;

/// What an entry sets, for replacing earlier entries.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Key {
    /// One parameter, lower-case (`SET ROLE` is `role`, `SET TIME ZONE` is `timezone`...).
    Parameter(Box<[u8]>),
    /// `RESET ALL`: every parameter but the role and session authorization.
    All,
    /// Several statements, or a form not recognised: replaced only by the identical text.
    Text,
}

struct Entry {
    seq: u64,
    key: Key,
    sql: Bytes,
    /// A string with transaction control in it: replayed as a query of its own, since a
    /// `BEGIN` in a multi-statement query takes the statements before it into its
    /// transaction (and a `ROLLBACK` would undo them).
    alone: bool,
}

/// The settings log of one session.
#[derive(Default)]
pub struct Settings {
    entries: Vec<Entry>,
    /// The newest entry's number; 0 before the first.
    seq: u64,
}

/// What `DISCARD ALL` does to settings, as a statement a standby also runs.
const DISCARDED: &str = "SET SESSION AUTHORIZATION DEFAULT; RESET ALL";

impl Settings {
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Adds a `SET`/`RESET` text that took effect.
    pub fn record(&mut self, sql: Bytes) {
        self.add(sql, false);
    }

    /// Adds a string of settings and transaction control that ran outside a transaction.
    pub fn record_whole(&mut self, sql: Bytes) {
        self.add(sql, true);
    }

    fn add(&mut self, sql: Bytes, alone: bool) {
        let key = if alone { Key::Text } else { key_of(&sql) };
        match &key {
            Key::Parameter(name) => {
                self.entries
                    .retain(|e| !matches!(&e.key, Key::Parameter(n) if n == name));
            }
            Key::All => self.entries.retain(|e| match &e.key {
                Key::Parameter(name) => &**name == b"role" || &**name == b"session_authorization",
                Key::All => false,
                Key::Text => true,
            }),
            Key::Text => self.entries.retain(|e| e.sql != sql),
        }
        self.seq += 1;
        self.entries.push(Entry {
            seq: self.seq,
            key,
            sql,
            alone,
        });
    }

    /// `DISCARD ALL` took effect: back to the startup values.
    pub fn discard_all(&mut self) {
        self.entries.clear();
        self.record(Bytes::from_static(DISCARDED.as_bytes()));
    }

    /// The queries that bring a connection holding settings up to `have` to the newest, in
    /// order; none when it lacks nothing.
    pub fn replay_since(&self, have: u64) -> Vec<String> {
        let mut queries: Vec<String> = Vec::new();
        let mut joinable = false;
        for entry in self.entries.iter().filter(|e| e.seq > have) {
            if entry.alone || !joinable {
                queries.push(String::new());
            }
            joinable = !entry.alone;
            let sql = queries.last_mut().expect("pushed above");
            // A newline ends a trailing `--` comment; the semicolon the statement.
            sql.push_str(&String::from_utf8_lossy(&entry.sql));
            sql.push_str("\n;\n");
        }
        queries
    }
}

/// The parameter a single `SET`/`RESET` statement is about.
fn key_of(sql: &[u8]) -> Key {
    let body = sql.trim_ascii_end();
    let body = body.strip_suffix(b";").unwrap_or(body);
    if body.contains(&b';') {
        return Key::Text;
    }
    let mut words = Words(body);
    let verb = words.next().unwrap_or_default();
    let mut name = words.next().unwrap_or_default();
    let reset = verb.eq_ignore_ascii_case(b"RESET");
    if !reset && !verb.eq_ignore_ascii_case(b"SET") {
        return Key::Text; // SELECT set_config(...), or a transaction around settings
    }
    if !reset && name.eq_ignore_ascii_case(b"SESSION") {
        name = words.next().unwrap_or_default();
        if name.eq_ignore_ascii_case(b"AUTHORIZATION") {
            return Key::Parameter(b"session_authorization"[..].into());
        }
    }
    let is = |word: &[u8]| name.eq_ignore_ascii_case(word);
    let parameter: &[u8] = if reset && is(b"ALL") {
        return Key::All;
    } else if is(b"SESSION") {
        b"session_authorization" // RESET SESSION AUTHORIZATION
    } else if is(b"TIME") {
        b"timezone"
    } else if is(b"SCHEMA") {
        b"search_path"
    } else if is(b"NAMES") {
        b"client_encoding"
    } else if is(b"CHARACTERISTICS") || name.is_empty() || name.contains(&b'"') {
        return Key::Text;
    } else {
        name
    };
    Key::Parameter(parameter.to_ascii_lowercase().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(statements: &[&str]) -> Settings {
        let mut settings = Settings::default();
        for sql in statements {
            settings.record(Bytes::copy_from_slice(sql.as_bytes()));
        }
        settings
    }

    fn replay(settings: &Settings, have: u64) -> Vec<String> {
        settings
            .replay_since(have)
            .concat()
            .split("\n;\n")
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn a_later_setting_of_a_parameter_replaces_the_earlier() {
        let s = settings(&[
            "SET search_path = a",
            "SET application_name = 'x'",
            "set SEARCH_PATH to b",
            "SET TIME ZONE 'UTC'",
            "SET timezone = 'CET'",
        ]);
        assert_eq!(
            replay(&s, 0),
            [
                "SET application_name = 'x'",
                "set SEARCH_PATH to b",
                "SET timezone = 'CET'"
            ]
        );
        assert_eq!(s.seq(), 5);
        assert_eq!(replay(&s, 3), ["SET timezone = 'CET'"]);
        assert!(s.replay_since(5).is_empty());
    }

    #[test]
    fn reset_all_keeps_the_role() {
        let s = settings(&[
            "SET ROLE r",
            "SET search_path = a",
            "SET SESSION AUTHORIZATION u",
            "SET x.y = 1; SET work_mem = '8MB'",
            "RESET ALL",
        ]);
        assert_eq!(
            replay(&s, 0),
            [
                "SET ROLE r",
                "SET SESSION AUTHORIZATION u",
                "SET x.y = 1; SET work_mem = '8MB'",
                "RESET ALL"
            ]
        );
        let s = settings(&["SET ROLE r", "RESET ROLE", "RESET search_path"]);
        assert_eq!(replay(&s, 0), ["RESET ROLE", "RESET search_path"]);
    }

    #[test]
    fn identical_texts_replace_each_other_and_discard_all_starts_over() {
        let mut s = settings(&["SET a.b = 1; SET a.c = 2", "SET a.b = 1; SET a.c = 2"]);
        assert_eq!(replay(&s, 0), ["SET a.b = 1; SET a.c = 2"]);
        s.discard_all();
        assert_eq!(replay(&s, 0), [DISCARDED]);
        assert_eq!(replay(&s, 2), [DISCARDED]);
    }

    #[test]
    fn keys() {
        let param = |name: &str| Key::Parameter(name.as_bytes().into());
        for (sql, key) in [
            ("SET search_path TO a", param("search_path")),
            ("SET SESSION search_path = a;", param("search_path")),
            ("SET SCHEMA 'a'", param("search_path")),
            ("SET NAMES 'UTF8'", param("client_encoding")),
            ("RESET TIME ZONE", param("timezone")),
            (
                "RESET SESSION AUTHORIZATION",
                param("session_authorization"),
            ),
            (
                "SET SESSION AUTHORIZATION DEFAULT",
                param("session_authorization"),
            ),
            ("SET \"Odd\" = 1", Key::Text),
            (
                "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
                Key::Text,
            ),
            ("SET application_name = 'a;b'", Key::Text),
            ("reset all", Key::All),
            ("SELECT set_config('a.b', 'x', false)", Key::Text),
            ("BEGIN; SET a.b = 1; COMMIT", Key::Text),
        ] {
            assert_eq!(key_of(sql.as_bytes()), key, "{sql}");
        }
    }

    #[test]
    fn a_string_with_transaction_control_is_a_query_of_its_own() {
        let mut s = settings(&["SET a.b = 1"]);
        s.record_whole(Bytes::from_static(b"BEGIN; SET a.c = 2; ROLLBACK"));
        s.record(Bytes::from_static(b"SET a.d = 3"));
        s.record(Bytes::from_static(b"SET a.e = 4"));
        assert_eq!(
            s.replay_since(0),
            [
                "SET a.b = 1\n;\n",
                "BEGIN; SET a.c = 2; ROLLBACK\n;\n",
                "SET a.d = 3\n;\nSET a.e = 4\n;\n"
            ]
        );
    }
}
