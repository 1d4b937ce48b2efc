//! Settings as SQL the proxy sends itself, and running such a query on a connection outside
//! any session (a pooled connection's reset, a client's startup settings tried at login).

use std::io;

use bytes::Buf;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::BackendConn;
use crate::protocol::{fields, peek_header, write};

/// `value` as a string constant that means the same whatever `standard_conforming_strings`
/// is: an escape string (`E'...'`).
pub fn literal(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 3);
    out.push_str("E'");
    for c in value.chars() {
        if c == '\'' || c == '\\' {
            out.push(c);
        }
        out.push(c);
    }
    out.push('\'');
    out
}

/// One `SELECT` of `set_config(name, value, false)` calls: each value is taken as the server
/// takes a startup parameter or a line of postgresql.conf (a list such as `search_path` is
/// split at its commas, unlike `SET name = 'a, b'`). None for no settings.
pub fn set_config_sql<'a>(
    settings: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Option<String> {
    let mut sql = String::new();
    for (name, value) in settings {
        sql.push_str(if sql.is_empty() { "SELECT " } else { ", " });
        sql.push_str("pg_catalog.set_config(");
        sql.push_str(&literal(name));
        sql.push_str(", ");
        sql.push_str(&literal(value));
        sql.push_str(", false)");
    }
    (!sql.is_empty()).then_some(sql)
}

/// How a query the proxy ran by itself ended.
#[derive(Debug, Default)]
pub struct Answer {
    /// The fields of its ErrorResponse, if it failed.
    pub error: Option<Vec<(u8, String)>>,
    /// The ParameterStatus values it reported, in order.
    pub reported: Vec<(String, String)>,
}

/// Runs `sql` as a simple query on an idle connection and reads its answer to the
/// ReadyForQuery. Fails unless the connection is idle (no transaction) afterwards.
pub async fn run(conn: &mut BackendConn, sql: &str) -> io::Result<Answer> {
    conn.out.clear();
    write::query(sql, &mut conn.out);
    conn.wr.write_all(&conn.out).await?;
    conn.out.clear();
    let mut answer = Answer::default();
    loop {
        while let Some((ty, total)) = peek_header(&conn.proto.inbuf) {
            if conn.proto.inbuf.len() < total {
                break;
            }
            let msg = &conn.proto.inbuf[..total];
            match ty {
                b'E' => answer.error = Some(error_fields(msg)),
                b'S' => answer.reported.extend(parameter_status(msg)),
                b'Z' => {
                    let idle = msg.get(5) == Some(&b'I');
                    conn.proto.inbuf.advance(total);
                    return match idle && conn.proto.inbuf.is_empty() {
                        true => Ok(answer),
                        false => Err(io::Error::other("not idle after the proxy's query")),
                    };
                }
                _ => {}
            }
            conn.proto.inbuf.advance(total);
        }
        if conn.rd.read_buf(&mut conn.proto.inbuf).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
}

/// The name and value of a ParameterStatus message.
pub fn parameter_status(msg: &[u8]) -> Option<(String, String)> {
    let (name, rest) = fields::cstr(fields::body(msg))?;
    let (value, _) = fields::cstr(rest)?;
    Some((
        String::from_utf8_lossy(name).into_owned(),
        String::from_utf8_lossy(value).into_owned(),
    ))
}

/// Every field of an ErrorResponse.
fn error_fields(msg: &[u8]) -> Vec<(u8, String)> {
    let mut body = fields::body(msg);
    let mut out = Vec::new();
    while let Some((&code, rest)) = body.split_first().filter(|(c, _)| **c != 0) {
        let Some((value, rest)) = fields::cstr(rest) else {
            break;
        };
        out.push((code, String::from_utf8_lossy(value).into_owned()));
        body = rest;
    }
    out
}

/// `base` with the values in `reported` put over it (new names added at the end).
pub fn overlay(base: &[(String, String)], reported: &[(String, String)]) -> Vec<(String, String)> {
    let mut out = base.to_vec();
    for (name, value) in reported {
        match out.iter_mut().find(|(n, _)| n == name) {
            Some(entry) => entry.1.clone_from(value),
            None => out.push((name.clone(), value.clone())),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_become_one_select_of_set_config_calls() {
        assert_eq!(set_config_sql([]), None);
        assert_eq!(
            set_config_sql([
                ("search_path", "a, \"B\""),
                ("application_name", "it's \\o/")
            ])
            .unwrap(),
            "SELECT pg_catalog.set_config(E'search_path', E'a, \"B\"', false), \
             pg_catalog.set_config(E'application_name', E'it''s \\\\o/', false)"
        );
    }

    #[test]
    fn reads_error_fields_and_parameter_status() {
        let mut msg = vec![b'E', 0, 0, 0, 0];
        msg.extend_from_slice(b"SERROR\0C22023\0Mbad\0\0");
        assert_eq!(
            error_fields(&msg),
            [
                (b'S', "ERROR".to_owned()),
                (b'C', "22023".to_owned()),
                (b'M', "bad".to_owned())
            ]
        );
        let mut msg = vec![b'S', 0, 0, 0, 0];
        msg.extend_from_slice(b"DateStyle\0ISO, MDY\0");
        assert_eq!(
            parameter_status(&msg),
            Some(("DateStyle".to_owned(), "ISO, MDY".to_owned()))
        );
        let base = vec![
            ("a".to_owned(), "1".to_owned()),
            ("b".to_owned(), "2".to_owned()),
        ];
        let reported = vec![
            ("b".to_owned(), "3".to_owned()),
            ("c".to_owned(), "4".to_owned()),
        ];
        assert_eq!(
            overlay(&base, &reported),
            [("a", "1"), ("b", "3"), ("c", "4")].map(|(n, v)| (n.to_owned(), v.to_owned()))
        );
    }
}
