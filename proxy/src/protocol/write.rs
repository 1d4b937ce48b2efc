//! Messages the proxy itself sends: errors, notices of its own, ReadyForQuery and the extended
//! protocol messages it injects on a backend. Startup-phase messages are encoded with pgwire.

use bytes::{BufMut, BytesMut};
use pgwire::messages::response::ErrorResponse;
use pgwire::messages::Message;

use super::sqlstate;
use super::tags::TxStatus;

/// Severity of an error the proxy reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The statement failed; the session goes on.
    Error,
    /// The connection ends after this message.
    Fatal,
}

impl Severity {
    fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
        }
    }
}

/// PostgreSQL's message for a session an administrator ends.
pub const TERMINATED_BY_ADMINISTRATOR: &str = "terminating connection due to administrator command";

/// A PostgreSQL-style error raised by the proxy itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyError {
    pub severity: Severity,
    pub code: &'static str,
    pub message: String,
    pub detail: Option<String>,
}

impl ProxyError {
    pub fn new(severity: Severity, code: &'static str, message: impl Into<String>) -> Self {
        ProxyError {
            severity,
            code,
            message: message.into(),
            detail: None,
        }
    }

    pub fn fatal(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(Severity::Fatal, code, message)
    }

    /// What a session ended by an administrator (the proxy's shutdown, the admin console's
    /// KILL) is told, in PostgreSQL's words.
    pub fn terminated_by_administrator() -> Self {
        Self::fatal(sqlstate::ADMIN_SHUTDOWN, TERMINATED_BY_ADMINISTRATOR)
    }

    /// What PostgreSQL answers to any statement but a transaction's end once it failed.
    pub fn in_failed_transaction() -> Self {
        Self::error(
            sqlstate::IN_FAILED_SQL_TRANSACTION,
            "current transaction is aborted, commands ignored until end of transaction block",
        )
    }

    pub fn error(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(Severity::Error, code, message)
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// Appends the ErrorResponse to `buf`.
    pub fn encode(&self, buf: &mut BytesMut) {
        let mut fields = vec![
            (b'S', self.severity.as_str().to_owned()),
            (b'V', self.severity.as_str().to_owned()),
            (b'C', self.code.to_owned()),
            (b'M', self.message.clone()),
        ];
        if let Some(detail) = &self.detail {
            fields.push((b'D', detail.clone()));
        }
        encode_error_fields(fields, buf);
    }
}

impl std::fmt::Display for ProxyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.severity.as_str(),
            self.code,
            self.message
        )
    }
}

impl std::error::Error for ProxyError {}

/// Appends an ErrorResponse with exactly these fields (used to pass a server's own error on).
pub fn encode_error_fields(fields: Vec<(u8, String)>, buf: &mut BytesMut) {
    // Encoding into a BytesMut cannot fail for an ErrorResponse.
    let _ = ErrorResponse::new(fields).encode(buf);
}

/// Appends ReadyForQuery with the given transaction status byte.
pub fn ready_for_query(status: TxStatus, buf: &mut BytesMut) {
    buf.put_u8(b'Z');
    buf.put_u32(5);
    buf.put_u8(status.as_byte());
}

/// Appends a Close of a prepared statement (`C`, kind `S`).
pub fn close_statement(name: &[u8], buf: &mut BytesMut) {
    buf.put_u8(b'C');
    buf.put_u32((4 + 1 + name.len() + 1) as u32);
    buf.put_u8(b'S');
    buf.put_slice(name);
    buf.put_u8(0);
}

/// Appends a simple Query.
pub fn query(sql: &str, buf: &mut BytesMut) {
    cstring_message(b'Q', sql.as_bytes(), buf);
}

/// Appends CommandComplete with `tag`, for a statement the proxy answers itself.
pub fn command_complete(tag: &str, buf: &mut BytesMut) {
    cstring_message(b'C', tag.as_bytes(), buf);
}

/// Appends ParameterStatus, for a value the proxy itself changed back.
pub fn parameter_status(name: &str, value: &str, buf: &mut BytesMut) {
    buf.put_u8(b'S');
    buf.put_u32((4 + name.len() + 1 + value.len() + 1) as u32);
    buf.put_slice(name.as_bytes());
    buf.put_u8(0);
    buf.put_slice(value.as_bytes());
    buf.put_u8(0);
}

/// A message whose whole body is one NUL-terminated string.
fn cstring_message(ty: u8, text: &[u8], buf: &mut BytesMut) {
    buf.put_u8(ty);
    buf.put_u32((4 + text.len() + 1) as u32);
    buf.put_slice(text);
    buf.put_u8(0);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::fields;

    #[test]
    fn error_has_code_and_message() {
        let mut buf = BytesMut::new();
        ProxyError::error("08006", "backend down").encode(&mut buf);
        assert_eq!(buf[0], b'E');
        let text = String::from_utf8_lossy(&buf);
        assert!(text.contains("C08006\0"));
        assert!(text.contains("Mbackend down\0"));
    }

    #[test]
    fn close_round_trips() {
        let mut buf = BytesMut::new();
        close_statement(b"s1", &mut buf);
        assert_eq!(fields::target(&buf), Some((b'S', &b"s1"[..])));
    }
}
