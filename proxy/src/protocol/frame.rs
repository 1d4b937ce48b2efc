//! Framing of typed protocol messages: one type byte, then a big-endian length that counts
//! itself but not the type byte.

/// Type byte plus length word.
pub const HEADER_LEN: usize = 5;

/// Why a peer's message could not be framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// The length word is below 4, which no valid message has.
    InvalidLength(u32),
    /// The message is larger than `[proxy] max_message_size`.
    TooLarge { size: usize, max: usize },
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::InvalidLength(len) => write!(f, "invalid message length {len}"),
            FrameError::TooLarge { size, max } => {
                write!(
                    f,
                    "message of {size} bytes exceeds the limit of {max} bytes"
                )
            }
        }
    }
}

/// The type byte and the total size (header included) of the message at the start of `buf`,
/// once its header is complete.
#[inline]
pub fn peek_header(buf: &[u8]) -> Option<(u8, usize)> {
    if buf.len() < HEADER_LEN {
        return None;
    }
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
    Some((buf[0], 1 + len as usize))
}

/// Checks a peer's length word against the protocol minimum and the configured maximum.
#[inline]
pub fn check_size(total: usize, max: usize) -> Result<(), FrameError> {
    if total < HEADER_LEN {
        return Err(FrameError::InvalidLength(total.saturating_sub(1) as u32));
    }
    if total > max {
        return Err(FrameError::TooLarge { size: total, max });
    }
    Ok(())
}

/// A typed message as it travels: type byte, length (counting itself), body. For tests that
/// write protocol bytes by hand.
#[cfg(test)]
pub(crate) fn typed_message(ty: u8, body: &[u8]) -> Vec<u8> {
    let mut msg = vec![ty];
    msg.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    msg.extend_from_slice(body);
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_needs_five_bytes() {
        assert_eq!(peek_header(b"Q\0\0\0"), None);
        assert_eq!(peek_header(b"Q\0\0\0\x09SEL"), Some((b'Q', 10)));
    }

    #[test]
    fn size_limits() {
        assert_eq!(check_size(5, 100), Ok(()));
        assert_eq!(check_size(4, 100), Err(FrameError::InvalidLength(3)));
        assert_eq!(
            check_size(101, 100),
            Err(FrameError::TooLarge {
                size: 101,
                max: 100
            })
        );
    }
}
