//! The first words of a statement, for the few statements the session recognises by their
//! opening words on every simple query (so without a parser): `SET pgrepl.route`, `DISCARD ALL`,
//! `DEALLOCATE`.

/// Whitespace-separated words, with `=` a word of its own and a trailing `;` ignored.
pub struct Words<'a>(pub &'a [u8]);

impl<'a> Words<'a> {
    pub fn next(&mut self) -> Option<&'a [u8]> {
        let start = self.0.iter().position(|b| !b.is_ascii_whitespace())?;
        let rest = &self.0[start..];
        let len = if rest[0] == b'=' {
            1
        } else {
            rest.iter()
                .position(|b| b.is_ascii_whitespace() || *b == b'=' || *b == b';')
                .unwrap_or(rest.len())
        };
        if len == 0 {
            return None;
        }
        self.0 = &rest[len..];
        Some(&rest[..len])
    }

    pub fn rest_is_empty(&self) -> bool {
        self.0.iter().all(|b| b.is_ascii_whitespace() || *b == b';')
    }
}

/// Whether the first word of `sql` may be one of `words` (each at least three upper-case
/// letters), by its first three letters: a test cheap enough for every statement, before
/// `Words`. It runs several times for every simple query, so inline, with the first letter
/// compared first (it nearly always differs) and leading whitespace, which is rare, out of line.
#[inline(always)]
pub fn may_start_with(sql: &[u8], words: &[&[u8]]) -> bool {
    let start = match sql.first() {
        Some(b) if !b.is_ascii_whitespace() => 0,
        _ => match first_non_space(sql) {
            Some(start) => start,
            None => return false,
        },
    };
    let Some(lead) = sql.get(start..start + 3) else {
        return false;
    };
    let first = lead[0].to_ascii_uppercase();
    let mut i = 0;
    while i < words.len() {
        let word = words[i];
        if word[0] == first && lead.eq_ignore_ascii_case(&word[..3]) {
            return true;
        }
        i += 1;
    }
    false
}

#[cold]
#[inline(never)]
fn first_non_space(sql: &[u8]) -> Option<usize> {
    sql.iter().position(|b| !b.is_ascii_whitespace())
}

/// What a `DEALLOCATE [PREPARE] name | ALL` statement drops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deallocate {
    All,
    /// One statement, by its name as the server reads it: folded to lower case unless quoted.
    Named(Vec<u8>),
}

/// The statement a simple query that is exactly one `DEALLOCATE` drops; None for anything
/// else (which the server then answers).
pub fn deallocate(sql: &[u8]) -> Option<Deallocate> {
    let mut words = Words(sql);
    if !words.next()?.eq_ignore_ascii_case(b"DEALLOCATE") {
        return None;
    }
    let rest = after_prepare(words.0);
    if let Some(word) = Words(rest).next() {
        if word.eq_ignore_ascii_case(b"ALL") {
            let mut all = Words(rest);
            all.next();
            return all.rest_is_empty().then_some(Deallocate::All);
        }
    }
    let (name, after) = statement_name(rest)?;
    Words(after)
        .rest_is_empty()
        .then_some(Deallocate::Named(name))
}

/// The prepared statement a simple query names in SQL: `PREPARE name`, `EXECUTE name`,
/// `DEALLOCATE [PREPARE] name` (as the server reads the name); None for anything else.
pub fn sql_statement_name(sql: &[u8]) -> Option<Vec<u8>> {
    let mut words = Words(sql);
    let verb = words.next()?;
    let rest = if verb.eq_ignore_ascii_case(b"DEALLOCATE") {
        after_prepare(words.0)
    } else if verb.eq_ignore_ascii_case(b"PREPARE") || verb.eq_ignore_ascii_case(b"EXECUTE") {
        words.0
    } else {
        return None;
    };
    statement_name(rest).map(|(name, _)| name)
}

/// What follows an optional `PREPARE` keyword.
fn after_prepare(rest: &[u8]) -> &[u8] {
    let mut probe = Words(rest);
    match probe.next() {
        Some(word) if word.eq_ignore_ascii_case(b"PREPARE") => probe.0,
        _ => rest,
    }
}

/// A statement name at the start of `rest` as the server reads it (folded to lower case
/// unless quoted), and what follows it.
fn statement_name(rest: &[u8]) -> Option<(Vec<u8>, &[u8])> {
    let rest = rest.trim_ascii_start();
    match rest.first()? {
        b'"' => quoted_identifier(rest),
        _ => {
            let end = rest
                .iter()
                .position(|b| {
                    !(b.is_ascii_alphanumeric() || matches!(b, b'_' | b'$') || *b >= 0x80)
                })
                .unwrap_or(rest.len());
            let word = &rest[..end];
            if word.is_empty() || word[0].is_ascii_digit() || word[0] == b'$' {
                return None;
            }
            Some((word.to_ascii_lowercase(), &rest[end..]))
        }
    }
}

/// Whether a simple query is exactly one `DISCARD` (of anything): it changes only the
/// session, never data a replica must catch up with.
pub fn discards(sql: &[u8]) -> bool {
    let mut words = Words(sql);
    let is = |word: Option<&[u8]>, expected: &[u8]| {
        word.is_some_and(|w| w.eq_ignore_ascii_case(expected))
    };
    if !is(words.next(), b"DISCARD") {
        return false;
    }
    let what = words.next();
    [&b"ALL"[..], b"PLANS", b"SEQUENCES", b"TEMP", b"TEMPORARY"]
        .iter()
        .any(|w| is(what, w))
        && words.rest_is_empty()
}

/// A double-quoted identifier at the start of `text` (a doubled quote stands for one), and
/// what follows it.
fn quoted_identifier(text: &[u8]) -> Option<(Vec<u8>, &[u8])> {
    let mut name = Vec::new();
    let mut at = 1;
    loop {
        match text.get(at)? {
            b'"' if text.get(at + 1) == Some(&b'"') => {
                name.push(b'"');
                at += 2;
            }
            b'"' => return (!name.is_empty()).then_some((name, &text[at + 1..])),
            byte => {
                name.push(*byte);
                at += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn may_start_with_looks_at_the_first_three_letters_of_the_first_word() {
        let words: &[&[u8]] = &[b"SET", b"RESET"];
        for sql in ["SET x = 1", " \n set", "RESET ALL", "reset", "SETTINGS"] {
            assert!(may_start_with(sql.as_bytes(), words), "{sql}");
        }
        for sql in [
            "SELECT 1",
            "",
            "  ",
            "SE",
            "/* c */ SET x = 1",
            "DISCARD ALL",
        ] {
            assert!(!may_start_with(sql.as_bytes(), words), "{sql}");
        }
    }

    #[test]
    fn recognises_a_lone_discard() {
        for sql in [
            "DISCARD ALL",
            " discard temp;",
            "DISCARD PLANS",
            "discard sequences ;",
        ] {
            assert!(discards(sql.as_bytes()), "{sql}");
        }
        for sql in [
            "DISCARD",
            "DISCARD ALL; INSERT INTO t VALUES (1)",
            "DISCARD x",
            "SELECT 1",
        ] {
            assert!(!discards(sql.as_bytes()), "{sql}");
        }
    }

    #[test]
    fn reads_the_statement_a_deallocate_drops() {
        let named = |n: &str| Some(Deallocate::Named(n.as_bytes().to_vec()));
        let cases: &[(&str, Option<Deallocate>)] = &[
            ("DEALLOCATE pdo_stmt_00000004", named("pdo_stmt_00000004")),
            ("deallocate prepare dbdpg_p123_1;", named("dbdpg_p123_1")),
            ("  DEALLOCATE Mixed_Case  ", named("mixed_case")),
            ("DEALLOCATE \"Mixed Case\"", named("Mixed Case")),
            ("DEALLOCATE \"a\"\"b\" ;", named("a\"b")),
            ("DEALLOCATE PREPARE \"prepare\"", named("prepare")),
            ("DEALLOCATE ALL", Some(Deallocate::All)),
            ("DEALLOCATE PREPARE all;", Some(Deallocate::All)),
            ("DEALLOCATE \"ALL\"", named("ALL")),
            ("DEALLOCATE", None),
            ("DEALLOCATE PREPARE", None),
            ("DEALLOCATE \"\"", None),
            ("DEALLOCATE \"open", None),
            ("DEALLOCATE a b", None),
            ("DEALLOCATE a; SELECT 1", None),
            ("DEALLOCATE 1a", None),
            ("DEALLOCATE a-b", None),
            ("SELECT 'DEALLOCATE a'", None),
        ];
        for (sql, want) in cases {
            assert_eq!(&deallocate(sql.as_bytes()), want, "{sql}");
        }
    }

    #[test]
    fn reads_the_statement_sql_names() {
        let cases: &[(&str, Option<&str>)] = &[
            ("PREPARE q1(int) AS SELECT $1", Some("q1")),
            ("prepare Q2 AS SELECT 1", Some("q2")),
            ("EXECUTE q1(1)", Some("q1")),
            ("execute \"S_1\"", Some("S_1")),
            ("DEALLOCATE PREPARE s_2", Some("s_2")),
            ("DEALLOCATE s_3;", Some("s_3")),
            ("EXECUTE", None),
            ("EXPLAIN EXECUTE q1", None),
            ("SELECT 1", None),
        ];
        for (sql, want) in cases {
            let got = sql_statement_name(sql.as_bytes());
            assert_eq!(got.as_deref(), want.map(str::as_bytes), "{sql}");
        }
    }
}
