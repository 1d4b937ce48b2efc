//! The writer pointer: which node takes writes, in what state, and how many writers were
//! chosen before it (the epoch), packed in one word so a session checks it with one load.

use super::elect::{Election, WriterState};
use crate::backend::BackendId;

/// The index bits of a word that names no node.
const NO_BACKEND: u64 = 0xFF;
/// The bit of a word that says writes are held (the admin console's `HOLD WRITES`).
pub const HELD: u64 = 0x80 << 8;

/// The writer as sessions see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Writer {
    /// Counts the writers chosen (48 bits): a session whose epoch differs must leave what it
    /// holds on the old writer.
    pub epoch: u64,
    pub state: WriterState,
    /// The writer, or the last one while none serves; None after a conflict.
    pub backend: Option<BackendId>,
    /// Writes outside a transaction wait (`HOLD WRITES`).
    pub held: bool,
}

impl Writer {
    /// The first node, taking writes: the fixed writer without `follow_primary`, and the
    /// guess before the first sample with it.
    pub const FIRST: Writer = Writer {
        epoch: 0,
        state: WriterState::Serving,
        backend: Some(BackendId::FIRST),
        held: false,
    };

    /// epoch (48 bits) | held (1) and state (7) | backend index (8, `NO_BACKEND`: none).
    pub const fn pack(self) -> u64 {
        let backend = match self.backend {
            Some(b) => b.index() as u64,
            None => NO_BACKEND,
        };
        let held = if self.held { HELD } else { 0 };
        (self.epoch << 16) | held | ((self.state as u64) << 8) | backend
    }

    pub fn unpack(word: u64) -> Writer {
        let backend = word & 0xFF;
        Writer {
            epoch: word >> 16,
            state: WriterState::ALL[((word >> 8) & 0x7F) as usize],
            backend: (backend != NO_BACKEND).then(|| BackendId::nth(backend as usize)),
            held: word & HELD != 0,
        }
    }

    /// The writer `election` chose, not held.
    pub fn of(election: &Election) -> Writer {
        Writer {
            epoch: election.epoch,
            state: election.state,
            backend: election.writer.map(BackendId::nth),
            held: false,
        }
    }

    /// Whether a unit may be sent to it now.
    pub fn serves(self) -> bool {
        self.state == WriterState::Serving
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_writer_packs_into_one_word_and_back() {
        for state in WriterState::ALL {
            for backend in [None, Some(BackendId::FIRST), Some(BackendId::nth(63))] {
                for (epoch, held) in [(0, false), (1, true), ((1 << 48) - 1, true)] {
                    let writer = Writer {
                        epoch,
                        state,
                        backend,
                        held,
                    };
                    assert_eq!(Writer::unpack(writer.pack()), writer);
                }
            }
        }
        assert_eq!(Writer::FIRST.pack(), 0, "the first node serving, epoch 0");
    }
}
