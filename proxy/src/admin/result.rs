//! The admin console's answers on the wire: a result set (RowDescription, DataRows,
//! CommandComplete) in text format, the way psql and drivers read any query's rows.

use std::fmt::Display;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{BufMut, BytesMut};
use pgwire::messages::response::NoticeResponse;
use pgwire::messages::Message;

use crate::protocol::write;

/// A column's type, as PostgreSQL's type OID tells drivers how to read its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    Bool,
    Text,
    Int4,
    Int8,
    Numeric,
    Timestamptz,
}

impl Type {
    fn oid(self) -> u32 {
        match self {
            Type::Bool => 16,
            Type::Text => 25,
            Type::Int4 => 23,
            Type::Int8 => 20,
            Type::Numeric => 1700,
            Type::Timestamptz => 1184,
        }
    }

    /// The type's length in bytes as RowDescription gives it (-1: variable).
    fn size(self) -> i16 {
        match self {
            Type::Bool => 1,
            Type::Int4 => 4,
            Type::Int8 | Type::Timestamptz => 8,
            Type::Text | Type::Numeric => -1,
        }
    }
}

/// One value in text format; None is NULL.
pub type Cell = Option<String>;

pub fn text(value: impl Into<String>) -> Cell {
    Some(value.into())
}

pub fn num(value: impl Display) -> Cell {
    Some(value.to_string())
}

pub fn time(at: SystemTime) -> Cell {
    Some(timestamp(at))
}

/// 0 or 1, as PgBouncer shows flags.
pub fn flag(on: bool) -> Cell {
    num(u8::from(on))
}

/// A `bool` as PostgreSQL prints it.
pub fn boolean(on: bool) -> Cell {
    text(if on { "t" } else { "f" })
}

/// Rows with named, typed columns.
#[derive(Debug, Clone, PartialEq)]
pub struct ResultSet {
    columns: Vec<(&'static str, Type)>,
    rows: Vec<Vec<Cell>>,
}

impl ResultSet {
    pub fn new(columns: &[(&'static str, Type)]) -> ResultSet {
        ResultSet {
            columns: columns.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Adds a row: one cell per column, in order.
    pub fn row(&mut self, cells: Vec<Cell>) {
        debug_assert_eq!(cells.len(), self.columns.len(), "{:?}", self.columns);
        self.rows.push(cells);
    }

    pub fn rows(&self) -> &[Vec<Cell>] {
        &self.rows
    }

    #[cfg(test)]
    pub fn column_names(&self) -> Vec<&'static str> {
        self.columns.iter().map(|(name, _)| *name).collect()
    }

    /// RowDescription, the DataRows, and CommandComplete with `tag`.
    pub fn encode(&self, tag: &str, buf: &mut BytesMut) {
        let start = begin(b'T', buf);
        buf.put_i16(self.columns.len() as i16);
        for (name, ty) in &self.columns {
            buf.put_slice(name.as_bytes());
            buf.put_u8(0);
            buf.put_u32(0); // no table
            buf.put_i16(0); // no column number
            buf.put_u32(ty.oid());
            buf.put_i16(ty.size());
            buf.put_i32(-1); // no type modifier
            buf.put_i16(0); // text format
        }
        finish(start, buf);
        for row in &self.rows {
            let start = begin(b'D', buf);
            buf.put_i16(row.len() as i16);
            for cell in row {
                match cell {
                    Some(value) => {
                        buf.put_i32(value.len() as i32);
                        buf.put_slice(value.as_bytes());
                    }
                    None => buf.put_i32(-1),
                }
            }
            finish(start, buf);
        }
        write::command_complete(tag, buf);
    }
}

/// Starts a message of type `ty` whose length is filled in by [`finish`].
fn begin(ty: u8, buf: &mut BytesMut) -> usize {
    buf.put_u8(ty);
    let start = buf.len();
    buf.put_u32(0);
    start
}

fn finish(start: usize, buf: &mut BytesMut) {
    let len = (buf.len() - start) as u32;
    buf[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

/// A NoticeResponse (successful completion) with `message` and `detail`.
pub fn notice(message: &str, detail: &str, buf: &mut BytesMut) {
    let fields = vec![
        (b'S', "NOTICE".to_owned()),
        (b'V', "NOTICE".to_owned()),
        (
            b'C',
            crate::protocol::sqlstate::SUCCESSFUL_COMPLETION.to_owned(),
        ),
        (b'M', message.to_owned()),
        (b'D', detail.to_owned()),
    ];
    let _ = NoticeResponse::new(fields).encode(buf);
}

/// EmptyQueryResponse, the answer to a query with no command.
pub fn empty_query(buf: &mut BytesMut) {
    buf.put_u8(b'I');
    buf.put_u32(4);
}

/// A time as PostgreSQL prints a `timestamptz` in UTC: `2024-05-01 12:34:56+00`.
pub fn timestamp(at: SystemTime) -> String {
    let secs = at
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}+00",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// The proleptic Gregorian date of a day counted from 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_print_as_postgresql_prints_utc() {
        let cases = [
            (0, "1970-01-01 00:00:00+00"),
            (951_782_400, "2000-02-29 00:00:00+00"),
            (1_709_251_199, "2024-02-29 23:59:59+00"),
            (4_102_444_800, "2100-01-01 00:00:00+00"),
        ];
        for (secs, expected) in cases {
            assert_eq!(timestamp(UNIX_EPOCH + Duration::from_secs(secs)), expected);
        }
    }

    #[test]
    fn a_result_set_is_a_row_description_rows_and_a_tag() {
        let mut set = ResultSet::new(&[("list", Type::Text), ("items", Type::Int4)]);
        set.row(vec![text("pools"), num(2)]);
        set.row(vec![text("none"), None]);
        let mut buf = BytesMut::new();
        set.encode("SHOW", &mut buf);
        let mut types = Vec::new();
        let mut at = 0;
        while at < buf.len() {
            let len = u32::from_be_bytes(buf[at + 1..at + 5].try_into().unwrap()) as usize;
            types.push(buf[at]);
            at += 1 + len;
        }
        assert_eq!(at, buf.len(), "lengths add up");
        assert_eq!(types, b"TDDC");
        let bytes = &buf[..];
        assert!(bytes.windows(6).any(|w| w == b"items\0"));
        assert!(bytes.windows(5).any(|w| w == b"SHOW\0"));
    }
}
