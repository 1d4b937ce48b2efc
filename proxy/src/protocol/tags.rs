//! Message type bytes by the protocol's names, for the messages the proxy reads or writes.
//! Frontend and backend reuse letters (`D` is Describe one way and DataRow the other), so
//! each direction has its own module.

/// From the client.
pub mod frontend {
    pub const QUERY: u8 = b'Q';
    pub const PARSE: u8 = b'P';
    pub const BIND: u8 = b'B';
    pub const DESCRIBE: u8 = b'D';
    pub const EXECUTE: u8 = b'E';
    pub const CLOSE: u8 = b'C';
    pub const SYNC: u8 = b'S';
    pub const FLUSH: u8 = b'H';
    pub const FUNCTION_CALL: u8 = b'F';
    pub const COPY_DATA: u8 = b'd';
    pub const COPY_DONE: u8 = b'c';
    pub const COPY_FAIL: u8 = b'f';
    pub const TERMINATE: u8 = b'X';
}

/// From a server.
pub mod backend {
    pub const READY_FOR_QUERY: u8 = b'Z';
    pub const PARSE_COMPLETE: u8 = b'1';
    pub const BIND_COMPLETE: u8 = b'2';
    pub const CLOSE_COMPLETE: u8 = b'3';
    pub const PARAMETER_DESCRIPTION: u8 = b't';
    pub const ROW_DESCRIPTION: u8 = b'T';
    pub const NO_DATA: u8 = b'n';
    pub const DATA_ROW: u8 = b'D';
    pub const COMMAND_COMPLETE: u8 = b'C';
    pub const ERROR_RESPONSE: u8 = b'E';
    pub const NOTICE_RESPONSE: u8 = b'N';
    pub const NOTIFICATION_RESPONSE: u8 = b'A';
    pub const PARAMETER_STATUS: u8 = b'S';
    pub const COPY_IN_RESPONSE: u8 = b'G';
    pub const COPY_OUT_RESPONSE: u8 = b'H';
    pub const COPY_BOTH_RESPONSE: u8 = b'W';
}

/// The transaction status a ReadyForQuery carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxStatus {
    /// `I`: not in a transaction block.
    Idle,
    /// `T`: in a transaction block.
    InTransaction,
    /// `E`: in a failed transaction block: statements are refused until it ends.
    Failed,
}

impl TxStatus {
    /// The status a server sent; a byte PostgreSQL never sends counts as a failed
    /// transaction, which keeps the session where it is.
    #[inline]
    pub fn from_byte(byte: u8) -> TxStatus {
        match byte {
            b'I' => TxStatus::Idle,
            b'T' => TxStatus::InTransaction,
            _ => TxStatus::Failed,
        }
    }

    #[inline]
    pub fn as_byte(self) -> u8 {
        match self {
            TxStatus::Idle => b'I',
            TxStatus::InTransaction => b'T',
            TxStatus::Failed => b'E',
        }
    }
}

#[cfg(test)]
mod tests {
    use super::TxStatus;

    #[test]
    fn statuses_round_trip_and_unknown_bytes_fail_safe() {
        for status in [TxStatus::Idle, TxStatus::InTransaction, TxStatus::Failed] {
            assert_eq!(TxStatus::from_byte(status.as_byte()), status);
        }
        assert_eq!(TxStatus::from_byte(b'?'), TxStatus::Failed);
    }
}
