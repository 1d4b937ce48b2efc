//! PostgreSQL wire-protocol pieces the data path needs: framing of typed messages, the few
//! fields the proxy reads, and the messages it writes itself. Everything else is forwarded as
//! raw bytes.

pub mod fields;
pub mod frame;
pub mod sqlstate;
pub mod tags;
pub mod write;

pub use frame::{peek_header, FrameError, HEADER_LEN};
