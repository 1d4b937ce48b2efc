//! `set_config` calls whose arguments a Bind gives (`SELECT set_config('jit', $1, false)`, as
//! asyncpg runs around its type introspection): the proxy reads the values from the Bind and
//! replays the calls with them as constants, instead of pinning the session's reads to the
//! primary for not knowing what was set.
//!
//! A value is read only when it certainly is what the server gives `set_config`: in text
//! format, or in binary format for a `text` or `varchar` parameter (raw bytes), with the
//! Parse's type for it unspecified (the server infers `text`, or `boolean` for the third
//! argument), `text` or `varchar` (`boolean` for the third). Anything else: unknown.

use bytes::Bytes;

use crate::backend::apply::set_config_sql;
use crate::protocol::fields;
use crate::route::{set_config_template, SetConfigArg};

const UNSPECIFIED: u32 = 0;
const BOOL: u32 = 16;
const TEXT: u32 = 25;
const VARCHAR: u32 = 1043;

/// The session-level settings a Bind of `parse` makes, each as replayable SQL; None when
/// the statement is not such a call or a value cannot be known for sure.
pub fn bound_set_configs(parse: &[u8], bind: &[u8]) -> Option<Vec<Bytes>> {
    let (_, sql) = fields::parse_name_sql(parse)?;
    let calls = set_config_template(std::str::from_utf8(sql).ok()?)?;
    let types = parse_types(parse)?;
    let params = bind_params(bind)?;
    let mut sets = Vec::new();
    for [name, value, local] in &calls {
        let text = |arg: &SetConfigArg| match arg {
            SetConfigArg::Text(s) => Some(s.clone()),
            SetConfigArg::Param(n) => params.text(*n, types.get(n - 1).copied()),
            SetConfigArg::Bool(_) => None,
        };
        let local = match local {
            SetConfigArg::Bool(b) => *b,
            SetConfigArg::Param(n) => params.boolean(*n, types.get(n - 1).copied())?,
            SetConfigArg::Text(t) => boolean(t.as_bytes())?,
        };
        let (name, value) = (text(name)?, text(value)?);
        if !local {
            let sql = set_config_sql([(name.as_str(), value.as_str())])?;
            sets.push(Bytes::from(sql));
        }
    }
    Some(sets)
}

/// The parameter type OIDs a Parse declares (fewer than its parameters is allowed).
fn parse_types(parse: &[u8]) -> Option<Vec<u32>> {
    let body = fields::body(parse);
    let (_, rest) = fields::cstr(body)?;
    let (_, rest) = fields::cstr(rest)?;
    let count = u16::from_be_bytes(rest.get(..2)?.try_into().ok()?) as usize;
    let oids = rest.get(2..2 + 4 * count)?;
    Some(
        oids.chunks_exact(4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    )
}

/// A Bind's parameter values (None for NULL) and their formats.
struct Params<'a> {
    formats: Vec<u16>,
    values: Vec<Option<&'a [u8]>>,
}

impl Params<'_> {
    /// The format of parameter `n` (from 1).
    fn binary(&self, n: usize) -> bool {
        match self.formats.len() {
            0 => false,
            1 => self.formats[0] == 1,
            _ => self.formats.get(n - 1) == Some(&1),
        }
    }

    fn value(&self, n: usize) -> Option<&[u8]> {
        self.values.get(n.checked_sub(1)?).copied().flatten()
    }

    /// Parameter `n` as text, given the type its Parse declared.
    fn text(&self, n: usize, declared: Option<u32>) -> Option<String> {
        let declared = declared.unwrap_or(UNSPECIFIED);
        if ![UNSPECIFIED, TEXT, VARCHAR].contains(&declared) {
            return None;
        }
        // Text and varchar are sent as their bytes in both formats.
        String::from_utf8(self.value(n)?.to_vec()).ok()
    }

    /// Parameter `n` as a boolean, given the type its Parse declared.
    fn boolean(&self, n: usize, declared: Option<u32>) -> Option<bool> {
        let declared = declared.unwrap_or(UNSPECIFIED);
        if ![UNSPECIFIED, BOOL].contains(&declared) {
            return None;
        }
        let value = self.value(n)?;
        if self.binary(n) {
            return match value {
                [0] => Some(false),
                [1] => Some(true),
                _ => None,
            };
        }
        boolean(value)
    }
}

/// A boolean in the spellings PostgreSQL accepts in full (not its prefixes).
fn boolean(text: &[u8]) -> Option<bool> {
    let text = text.trim_ascii().to_ascii_lowercase();
    match text.as_slice() {
        b"t" | b"true" | b"y" | b"yes" | b"on" | b"1" => Some(true),
        b"f" | b"false" | b"n" | b"no" | b"off" | b"0" => Some(false),
        _ => None,
    }
}

fn bind_params(bind: &[u8]) -> Option<Params<'_>> {
    let body = fields::body(bind);
    let (_, rest) = fields::cstr(body)?;
    let (_, mut rest) = fields::cstr(rest)?;
    let u16_at = |rest: &mut &[u8]| -> Option<u16> {
        let v = u16::from_be_bytes(rest.get(..2)?.try_into().ok()?);
        *rest = &rest[2..];
        Some(v)
    };
    let nformats = u16_at(&mut rest)?;
    let formats = (0..nformats)
        .map(|_| u16_at(&mut rest))
        .collect::<Option<Vec<_>>>()?;
    let nvalues = u16_at(&mut rest)?;
    let mut values = Vec::with_capacity(nvalues as usize);
    for _ in 0..nvalues {
        let len = i32::from_be_bytes(rest.get(..4)?.try_into().ok()?);
        rest = &rest[4..];
        if len < 0 {
            values.push(None);
            continue;
        }
        let len = len as usize;
        values.push(Some(rest.get(..len)?));
        rest = &rest[len..];
    }
    Some(Params { formats, values })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::frame::typed_message;

    fn parse(sql: &str, types: &[u32]) -> Vec<u8> {
        let mut body = b"\0".to_vec();
        body.extend_from_slice(sql.as_bytes());
        body.push(0);
        body.extend_from_slice(&(types.len() as u16).to_be_bytes());
        for t in types {
            body.extend_from_slice(&t.to_be_bytes());
        }
        typed_message(b'P', &body)
    }

    fn bind(formats: &[u16], values: &[Option<&[u8]>]) -> Vec<u8> {
        let mut body = b"\0\0".to_vec();
        body.extend_from_slice(&(formats.len() as u16).to_be_bytes());
        for f in formats {
            body.extend_from_slice(&f.to_be_bytes());
        }
        body.extend_from_slice(&(values.len() as u16).to_be_bytes());
        for v in values {
            match v {
                Some(v) => {
                    body.extend_from_slice(&(v.len() as i32).to_be_bytes());
                    body.extend_from_slice(v);
                }
                None => body.extend_from_slice(&(-1i32).to_be_bytes()),
            }
        }
        body.extend_from_slice(&0u16.to_be_bytes());
        typed_message(b'B', &body)
    }

    fn set(name: &str, value: &str) -> Bytes {
        Bytes::from(set_config_sql([(name, value)]).unwrap())
    }

    #[test]
    fn reads_the_values_a_bind_gives() {
        let asyncpg = "SELECT set_config('jit', $1, false)";
        let both = "SELECT pg_catalog.set_config($1, $2, $3)";
        for (parse, bind, sets) in [
            // Binary, type inferred (tokio-postgres, asyncpg).
            (
                parse(asyncpg, &[]),
                bind(&[1], &[Some(b"off")]),
                Some(vec![set("jit", "off")]),
            ),
            (
                parse(asyncpg, &[TEXT]),
                bind(&[], &[Some(b"on")]),
                Some(vec![set("jit", "on")]),
            ),
            (
                parse(both, &[VARCHAR, TEXT, BOOL]),
                bind(&[0, 1, 1], &[Some(b"work_mem"), Some(b"8MB"), Some(&[0])]),
                Some(vec![set("work_mem", "8MB")]),
            ),
            (
                parse(both, &[]),
                bind(&[0], &[Some(b"a.b"), Some(b"it's"), Some(b" OFF ")]),
                Some(vec![set("a.b", "it's")]),
            ),
            // Local to the transaction: nothing for the session.
            (
                parse(both, &[]),
                bind(&[1, 1, 1], &[Some(b"a.b"), Some(b"x"), Some(&[1])]),
                Some(vec![]),
            ),
            // Unsure: another declared type, NULL, a value not a boolean, not such a call.
            (parse(asyncpg, &[23]), bind(&[0], &[Some(b"5")]), None),
            (parse(asyncpg, &[]), bind(&[], &[None]), None),
            (
                parse(both, &[]),
                bind(&[], &[Some(b"a"), Some(b"b"), Some(b"maybe")]),
                None,
            ),
            (parse(asyncpg, &[]), bind(&[], &[]), None),
            (
                parse("SELECT set_config('a', $1, false) FROM t", &[]),
                bind(&[], &[Some(b"x")]),
                None,
            ),
        ] {
            assert_eq!(
                bound_set_configs(&parse, &bind),
                sets,
                "{:?}",
                String::from_utf8_lossy(&parse)
            );
        }
    }
}
