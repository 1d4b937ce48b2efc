//! Readers for the few fields of messages that routing needs. Each takes the whole message
//! (type byte and length included) and never panics on malformed input.

use super::{sqlstate, HEADER_LEN};

/// A NUL-terminated string at the start of `buf`, and the rest after the NUL. SQL text is
/// scanned this way on every statement, hence memchr; the empty name of the unnamed
/// statement or portal (most drivers' extended protocol) is told without it.
#[inline]
pub fn cstr(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = match buf.first()? {
        0 => 0,
        _ => memchr::memchr(0, buf)?,
    };
    Some((&buf[..end], &buf[end + 1..]))
}

/// The body of a message: what follows the header.
#[inline]
pub fn body(msg: &[u8]) -> &[u8] {
    msg.get(HEADER_LEN..).unwrap_or_default()
}

/// Query ('Q'): the SQL text, all of the body before its final NUL. Taken from the end, not
/// scanned for the first NUL: read for several steps of every simple query. A text with a
/// NUL inside is kept whole: the server refuses such a message whatever comes before the
/// NUL (its one string must end the message), so no part of it may be read as a statement.
#[inline]
pub fn query_sql(msg: &[u8]) -> Option<&[u8]> {
    match body(msg) {
        [sql @ .., 0] => Some(sql),
        _ => None,
    }
}

/// Parse ('P'): statement name and SQL text.
pub fn parse_name_sql(msg: &[u8]) -> Option<(&[u8], &[u8])> {
    let (name, rest) = cstr(body(msg))?;
    let (sql, _) = cstr(rest)?;
    Some((name, sql))
}

/// Bind ('B'): the source statement name (after the portal name).
pub fn bind_statement(msg: &[u8]) -> Option<&[u8]> {
    let (_portal, rest) = cstr(body(msg))?;
    cstr(rest).map(|(stmt, _)| stmt)
}

/// Describe ('D') and Close ('C'): the kind byte (`S` statement, `P` portal) and the name.
pub fn target(msg: &[u8]) -> Option<(u8, &[u8])> {
    let b = body(msg);
    let kind = *b.first()?;
    cstr(&b[1..]).map(|(name, _)| (kind, name))
}

/// ErrorResponse ('E') or NoticeResponse: the value of the field with this code.
pub fn error_field(msg: &[u8], code: u8) -> Option<&[u8]> {
    let mut rest = body(msg);
    while let Some((&field, after)) = rest.split_first() {
        let (value, next) = cstr(after)?;
        if field == code {
            return Some(value);
        }
        rest = next;
    }
    None
}

/// ErrorResponse ('E') from a server: whether it ends the server's session (FATAL or PANIC),
/// as a server shutting down or crashing says before it closes the connection.
pub fn error_is_fatal(msg: &[u8]) -> bool {
    // 'V' is never translated (PostgreSQL 9.6 and later): decisive; 'S' may be.
    let severity = error_field(msg, b'V').or_else(|| error_field(msg, b'S'));
    severity.is_some_and(|v| v == b"FATAL" || v == b"PANIC")
}

/// ErrorResponse ('E') from a standby: whether it refused a statement only because it is a
/// standby (it would write: 25006 read_only_sql_transaction, or 55000 "recovery is in
/// progress" from WAL, BRIN and other maintenance functions), so the primary can run it.
pub fn error_is_standby_refusal(msg: &[u8]) -> bool {
    let Some(code) = error_field(msg, b'C') else {
        return false;
    };
    code == sqlstate::READ_ONLY_SQL_TRANSACTION.as_bytes()
        || (code == sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE.as_bytes()
            && error_field(msg, b'M') == Some(b"recovery is in progress"))
}

/// ErrorResponse ('E'): its SQLSTATE and message, for logs.
pub fn error_message(msg: &[u8]) -> String {
    let text = |code| String::from_utf8_lossy(error_field(msg, code).unwrap_or_default());
    format!("{}: {}", text(b'C'), text(b'M'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::frame::typed_message as msg;

    #[test]
    fn reads_fields() {
        assert_eq!(query_sql(&msg(b'Q', b"SELECT 1\0")), Some(&b"SELECT 1"[..]));
        assert_eq!(
            parse_name_sql(&msg(b'P', b"s1\0SELECT $1\0\0\x01\0\0\0\x17")),
            Some((&b"s1"[..], &b"SELECT $1"[..]))
        );
        assert_eq!(bind_statement(&msg(b'B', b"\0s1\0\0\0")), Some(&b"s1"[..]));
        assert_eq!(target(&msg(b'D', b"Ss1\0")), Some((b'S', &b"s1"[..])));
    }

    #[test]
    fn malformed_messages_give_none() {
        assert_eq!(query_sql(&msg(b'Q', b"no terminator")), None);
        assert_eq!(bind_statement(&msg(b'B', b"\0")), None);
        assert_eq!(target(&msg(b'C', b"")), None);
        assert_eq!(query_sql(b"Q\0"), None);
        // The server refuses a NUL before the end: no part is a statement of its own.
        assert_eq!(
            query_sql(&msg(b'Q', b"SELECT 1\0DROP TABLE t\0")),
            Some(&b"SELECT 1\0DROP TABLE t"[..])
        );
        assert_eq!(query_sql(&msg(b'Q', b"SELECT 1\0trailing")), None);
        assert!(!error_is_fatal(&msg(b'E', b"SFATAL")));
    }

    #[test]
    fn tells_fatal_errors() {
        let fatal = msg(b'E', b"SFATAL\0VFATAL\0C57P01\0Mterminating\0\0");
        assert!(error_is_fatal(&fatal));
        let error = msg(b'E', b"SERROR\0VERROR\0C42P01\0Mno table\0\0");
        assert!(!error_is_fatal(&error));
        let translated = msg(b'E', b"SFATAL\0VERROR\0\0");
        assert!(!error_is_fatal(&translated), "V wins over S");
        assert!(error_is_fatal(&msg(b'E', b"SPANIC\0\0")));
        assert_eq!(error_message(&error), "42P01: no table");
    }
}
