//! The session's settings, so that every backend the session uses has them.
//!
//! Three parts, replayed in this order on a connection before the next statement the session
//! sends there:
//! - the `SET`/`RESET` statements that took effect, in order (a later one for the same
//!   parameter replaces an earlier one: a session that sets the same thing on every request
//!   keeps a short log), `LOAD`s among them;
//! - the client's startup settings the server does not report (`options`' `-c` settings...),
//!   applied first, and again after a statement resets them: PostgreSQL resets a parameter
//!   to its startup value, while the proxy's connections were opened without it;
//! - the parameters the server reports (ParameterStatus: DateStyle, TimeZone,
//!   application_name...) with the value it last reported for the session: some build on
//!   their previous value (`SET DateStyle = 'Postgres'` keeps the order of `'ISO, YMD'`), so
//!   only the reported value says what the session has. Their statements are not logged.
//!
//! Each change has a sequence number; a connection records the newest one it has, so it gets
//! only what it lacks.

use std::sync::Arc;

use bytes::Bytes;

use super::words::Words;
use crate::backend::apply::set_config_sql;
use crate::backend::{ServerParams, StartupSettings};

/// Reported parameters a session can set, replayed with their reported value. The others the
/// server reports are fixed, or follow `SET ROLE`/`SET SESSION AUTHORIZATION`, whose
/// statements are replayed instead.
const REPLAYED_AS_REPORTED: &[&str] = &[
    "application_name",
    "client_encoding",
    "DateStyle",
    "default_transaction_read_only",
    "IntervalStyle",
    "scram_iterations",
    "search_path",
    "standard_conforming_strings",
    "TimeZone",
];

/// What an entry sets, for replacing earlier entries.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Key {
    /// One parameter, lower-case (`SET ROLE` is `role`, `SET TIME ZONE` is `timezone`...).
    Parameter(Box<[u8]>),
    /// `RESET ALL`: every parameter but the role and session authorization.
    All,
    /// A form not recognised (`LOAD`, a string with transaction control): replaced only by
    /// the identical text.
    Text,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Action {
    /// The client's statement text.
    Sql(Bytes),
    /// The startup value of this (unreported) startup setting, by its index.
    Restore(usize),
}

struct Entry {
    seq: u64,
    key: Key,
    action: Action,
    /// A string with transaction control in it: replayed as a query of its own, since a
    /// `BEGIN` in a multi-statement query takes the statements before it into its
    /// transaction (and a `ROLLBACK` would undo them).
    alone: bool,
}

/// A reported parameter's value for the session, and when it last changed.
struct Reported {
    /// From `REPLAYED_AS_REPORTED`: not a copy per session.
    name: &'static str,
    value: String,
    seq: u64,
}

/// The settings of one session.
#[derive(Default)]
pub struct Settings {
    entries: Vec<Entry>,
    /// The newest change's number; 0 before the first.
    seq: u64,
    reported: Vec<Reported>,
    /// Startup settings the server does not report, in the order given.
    startup: Vec<(String, String)>,
    /// Startup values of the reported parameters the client set at startup, as reported.
    startup_reported: Vec<(String, String)>,
    /// The oldest change the connection that ran the last settled unit lacks: a return to
    /// startup values after its reset.
    runner_lacks: Option<u64>,
    /// Values to tell the client: a reset there reported the server's default, and the
    /// proxy brought the startup value back.
    corrections: Vec<(String, String)>,
    /// Reported startup settings (indexes into `startup_reported`) the unit being settled
    /// reset: brought back when it is settled, unless a later statement of it sets them.
    restoring: Vec<usize>,
    /// The last fingerprint, with the change it was taken at.
    fingerprint: Option<(u64, Arc<str>)>,
}

/// What `DISCARD ALL` does to settings, as a statement a standby also runs.
const DISCARDED: &str = crate::backend::RESET_SETTINGS;

fn same_name(a: &[u8], b: &str) -> bool {
    a.eq_ignore_ascii_case(b.as_bytes())
}

impl Settings {
    /// The settings of a session whose client gave `startup` settings and was told
    /// `startup.told` at startup.
    pub fn new(startup: &StartupSettings) -> Settings {
        let mut settings = Settings {
            reported: reported_of(&startup.told),
            ..Settings::default()
        };
        for (name, value) in &startup.settings {
            match settings.reported_index(name.as_bytes()) {
                Some(i) => {
                    let told = &settings.reported[i];
                    let pair = (told.name.to_owned(), told.value.clone());
                    settings.startup_reported.push(pair);
                }
                None => settings.startup.push((name.clone(), value.clone())),
            }
        }
        if !startup.settings.is_empty() {
            settings.seq = 1;
            settings.entries = (0..settings.startup.len())
                .map(|i| Entry {
                    seq: 1,
                    key: Key::Parameter(
                        settings.startup[i]
                            .0
                            .to_ascii_lowercase()
                            .into_bytes()
                            .into(),
                    ),
                    action: Action::Restore(i),
                    alone: false,
                })
                .collect();
        }
        settings
    }

    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Everything the settings are, as the queries that give a new connection them (every
    /// reported value included, so that the text does not depend on what the connection
    /// started with): two sessions with the same text have the same settings, and a pooled
    /// connection left with one session's suits the other as it is.
    #[inline]
    pub fn fingerprint(&mut self) -> &Arc<str> {
        if !matches!(self.fingerprint, Some((seq, _)) if seq == self.seq) {
            self.write_fingerprint();
        }
        &self.fingerprint.as_ref().expect("written above").1
    }

    /// Makes the fingerprint of the settings as they are now: once per change, not per lease.
    #[cold]
    #[inline(never)]
    fn write_fingerprint(&mut self) {
        let text: Arc<str> = self.replay_since(0, &[]).concat().into();
        self.fingerprint = Some((self.seq, text));
    }

    /// Adds a `SET`/`RESET` text that took effect.
    pub fn record(&mut self, sql: Bytes) {
        self.add(sql, false);
    }

    /// Adds a string of settings and transaction control that ran outside a transaction.
    pub fn record_whole(&mut self, sql: Bytes) {
        self.add(sql, true);
    }

    /// A ParameterStatus the session's server sent with a unit of the client's.
    pub fn report(&mut self, name: &str, value: &str) {
        let Some(i) = self.reported_index(name.as_bytes()) else {
            return;
        };
        if self.reported[i].value != value {
            self.seq += 1;
            let reported = &mut self.reported[i];
            reported.value = value.to_owned();
            reported.seq = self.seq;
        }
    }

    /// What the connection that ran the unit just settled has: everything but the return
    /// to startup values that its resets call for. Clears the mark for the next unit.
    pub fn take_runner_seq(&mut self) -> u64 {
        self.runner_lacks.take().map_or(self.seq, |lacks| lacks - 1)
    }

    /// ParameterStatus values the client must be told now, after a reset.
    pub fn take_corrections(&mut self) -> Vec<(String, String)> {
        std::mem::take(&mut self.corrections)
    }

    /// The reported parameter `name` (any case: `SET TIME ZONE` is `timezone`) is.
    fn reported_index(&self, name: &[u8]) -> Option<usize> {
        self.reported.iter().position(|r| same_name(name, r.name))
    }

    fn add(&mut self, sql: Bytes, alone: bool) {
        if !alone {
            let parts = statements(&sql);
            if parts.len() > 1 {
                for part in parts.into_iter().filter(|part| !changes_no_setting(part)) {
                    self.add(sql.slice_ref(part), false);
                }
                return;
            }
        }
        let key = if alone { Key::Text } else { key_of(&sql) };
        let resets = self.resets(&sql, &key, alone);
        let reported = matches!(&key, Key::Parameter(name) if self.reported_index(name).is_some());
        if let (true, Key::Parameter(name)) = (reported, &key) {
            let startup = &self.startup_reported;
            self.restoring.retain(|&i| !same_name(name, &startup[i].0));
        }
        if !reported {
            self.retain_after(&key, &sql);
            self.seq += 1;
            self.entries.push(Entry {
                seq: self.seq,
                key,
                action: Action::Sql(sql),
                alone,
            });
        }
        for name in resets {
            self.restore(&name);
        }
    }

    /// Drops the entries a new one with `key` makes pointless.
    fn retain_after(&mut self, key: &Key, sql: &Bytes) {
        match key {
            Key::Parameter(name) => {
                self.entries
                    .retain(|e| !matches!(&e.key, Key::Parameter(n) if n == name));
            }
            Key::All => self.entries.retain(|e| match &e.key {
                Key::Parameter(name) => &**name == b"role" || &**name == b"session_authorization",
                Key::All => false,
                Key::Text => true,
            }),
            Key::Text => self
                .entries
                .retain(|e| !matches!(&e.action, Action::Sql(text) if text == sql)),
        }
    }

    /// The startup settings (lower-case names) a statement returns to their startup
    /// values: it resets them, and nothing later in it sets them again.
    fn resets(&self, sql: &[u8], key: &Key, alone: bool) -> Vec<Box<[u8]>> {
        let all = || -> Vec<Box<[u8]>> {
            let names = self.startup.iter().map(|(n, _)| n.as_str());
            let reported = self.startup_reported.iter().map(|(n, _)| n.as_str());
            names
                .chain(reported)
                .map(|n| n.to_ascii_lowercase().into_bytes().into())
                .collect()
        };
        if !alone {
            return match key {
                Key::All => all(),
                Key::Parameter(name) if is_reset(sql) => vec![name.clone()],
                _ => Vec::new(),
            };
        }
        let mut names: Vec<Box<[u8]>> = Vec::new();
        for part in statements(sql) {
            if rolls_back(part) {
                names.clear();
                continue;
            }
            match key_of(part) {
                Key::All => names = all(),
                Key::Parameter(name) => {
                    names.retain(|n| *n != name);
                    if is_reset(part) {
                        names.push(name);
                    }
                }
                Key::Text => {}
            }
        }
        names
    }

    /// Brings startup setting `name` (lower-case) back to its startup value, if the client
    /// set it at startup: the connection that ran the reset lacks that.
    fn restore(&mut self, name: &[u8]) {
        if let Some(i) = self.startup.iter().position(|(n, _)| same_name(name, n)) {
            self.retain_after(&Key::Parameter(name.into()), &Bytes::new());
            self.seq += 1;
            self.runner_lacks.get_or_insert(self.seq);
            self.entries.push(Entry {
                seq: self.seq,
                key: Key::Parameter(name.into()),
                action: Action::Restore(i),
                alone: false,
            });
            return;
        }
        let reported = self
            .startup_reported
            .iter()
            .position(|(n, _)| same_name(name, n));
        if let Some(i) = reported.filter(|i| !self.restoring.contains(i)) {
            self.restoring.push(i);
        }
    }

    /// The unit settled: brings the reported startup settings it reset, and set no more
    /// after, back to their startup values (its ParameterStatus said the server's defaults).
    pub fn unit_settled(&mut self) {
        for startup in std::mem::take(&mut self.restoring) {
            let (name, value) = self.startup_reported[startup].clone();
            let Some(i) = self.reported_index(name.as_bytes()) else {
                continue;
            };
            if self.reported[i].value != value {
                self.seq += 1;
                self.runner_lacks.get_or_insert(self.seq);
                let reported = &mut self.reported[i];
                reported.value.clone_from(&value);
                reported.seq = self.seq;
                self.corrections.push((name, value));
            }
        }
    }

    /// `DISCARD ALL` took effect: back to the startup values.
    pub fn discard_all(&mut self) {
        self.entries.clear();
        self.record(Bytes::from_static(DISCARDED.as_bytes()));
    }

    /// The queries that bring a connection holding settings up to `have` (and that
    /// reported `params` at startup) to the newest, in order; none when it lacks nothing.
    pub fn replay_since(&self, have: u64, params: &[(String, String)]) -> Vec<String> {
        let mut queries: Vec<String> = Vec::new();
        let mut joinable = false;
        let mut push = |sql: &str, alone: bool| {
            if alone || !joinable {
                queries.push(String::new());
            }
            joinable = !alone;
            let query = queries.last_mut().expect("pushed above");
            // A newline ends a trailing `--` comment; the semicolon the statement.
            query.push_str(sql);
            query.push_str("\n;\n");
        };
        let mut replayed = false;
        for entry in self.entries.iter().filter(|e| e.seq > have) {
            replayed = true;
            match &entry.action {
                Action::Sql(sql) => push(&String::from_utf8_lossy(sql), entry.alone),
                Action::Restore(i) => {
                    let (name, value) = &self.startup[*i];
                    let sql = set_config_sql([(name.as_str(), value.as_str())]);
                    push(&sql.expect("one setting"), false);
                }
            }
        }
        // After statements that may have changed any of them, all; otherwise those changed
        // since, and on a fresh connection those its server started with otherwise.
        let differs = |r: &Reported| {
            !params
                .iter()
                .any(|(name, value)| *name == r.name && *value == r.value)
        };
        let values = self
            .reported
            .iter()
            .filter(|r| replayed || r.seq > have || (have == 0 && differs(r)))
            .map(|r| (r.name, r.value.as_str()));
        if let Some(sql) = set_config_sql(values) {
            push(&sql, false);
        }
        queries
    }
}

/// The reported parameters a session may set, as `told` (a client's startup answer) has them.
fn reported_of(told: &ServerParams) -> Vec<Reported> {
    let mut reported: Vec<Reported> = told
        .iter()
        .filter_map(|(name, value)| {
            let name = REPLAYED_AS_REPORTED.iter().find(|r| **r == name.as_str())?;
            Some(Reported {
                name,
                value: value.clone(),
                seq: 0,
            })
        })
        .collect();
    // Kept all the session's life: no room to spare.
    reported.shrink_to_fit();
    reported
}

/// The statements of a string, split at semicolons outside quotes (empty ones dropped).
/// A statement a string of settings may hold beside them that changes no setting, so is
/// not replayed (the same as `route::effects` lets pass): `CLOSE`, `UNLISTEN`,
/// `SELECT pg_advisory_unlock_all()`.
fn changes_no_setting(sql: &[u8]) -> bool {
    let mut words = Words(sql);
    let is = |w: Option<&[u8]>, word: &[u8]| w.is_some_and(|w| w.eq_ignore_ascii_case(word));
    match words.next() {
        verb if is(verb, b"CLOSE") || is(verb, b"UNLISTEN") => true,
        verb if is(verb, b"SELECT") => {
            is(words.next(), b"pg_advisory_unlock_all()") && words.rest_is_empty()
        }
        _ => false,
    }
}

fn statements(sql: &[u8]) -> Vec<&[u8]> {
    let mut parts = Vec::new();
    let mut quote = None;
    let mut start = 0;
    for (i, &b) in sql.iter().enumerate() {
        match (quote, b) {
            (None, b'\'' | b'"') => quote = Some(b),
            (Some(q), b) if b == q => quote = None,
            (None, b';') => {
                parts.push(&sql[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&sql[start..]);
    parts.retain(|p| !p.trim_ascii().is_empty());
    parts
}

/// Whether a statement is `RESET ...`, or `SET ... TO DEFAULT` (`SET TIME ZONE DEFAULT`
/// or `LOCAL`): the parameter goes back to the value the session started with.
fn is_reset(sql: &[u8]) -> bool {
    let mut words = Words(sql);
    let is = |w: Option<&[u8]>, word: &[u8]| w.is_some_and(|w| w.eq_ignore_ascii_case(word));
    let verb = words.next();
    if is(verb, b"RESET") {
        return true;
    }
    if !is(verb, b"SET") {
        return false;
    }
    let mut word = words.next();
    if is(word, b"SESSION") {
        word = words.next();
    }
    let value = if is(word, b"TIME") {
        words.next(); // ZONE
        let value = words.next();
        if is(value, b"LOCAL") {
            return words.rest_is_empty();
        }
        value
    } else {
        let assign = words.next();
        if !(is(assign, b"=") || is(assign, b"TO")) {
            return false;
        }
        words.next()
    };
    is(value, b"DEFAULT") && words.rest_is_empty()
}

/// `ROLLBACK` or `ABORT` of the transaction (not to a savepoint).
fn rolls_back(sql: &[u8]) -> bool {
    let mut words = Words(sql);
    let verb = words.next().unwrap_or_default();
    (verb.eq_ignore_ascii_case(b"ROLLBACK") || verb.eq_ignore_ascii_case(b"ABORT"))
        && !std::iter::from_fn(|| words.next()).any(|w| w.eq_ignore_ascii_case(b"TO"))
}

/// The parameter a single `SET`/`RESET` statement is about.
fn key_of(sql: &[u8]) -> Key {
    let body = sql.trim_ascii_end();
    let body = body.strip_suffix(b";").unwrap_or(body);
    if body.contains(&b';') {
        return Key::Text;
    }
    if let Some(name) = set_config_name(body) {
        return Key::Parameter(name.to_ascii_lowercase().into());
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

/// The parameter of one `set_config` call as the proxy writes it (`backend::apply`), for a
/// value it read from a Bind.
fn set_config_name(body: &[u8]) -> Option<&[u8]> {
    let rest = body
        .trim_ascii_start()
        .strip_prefix(b"SELECT pg_catalog.set_config(E'")?;
    let end = rest.iter().position(|&b| b == b'\'' || b == b'\\')?;
    let (name, after) = rest.split_at(end);
    let after = after.strip_prefix(b"', ")?;
    // One call only.
    (!after.windows(11).any(|w| w == b"set_config(")).then_some(name)
}

#[cfg(test)]
mod tests;
