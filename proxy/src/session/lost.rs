//! What a client is told of the units it was owed on a backend connection that broke: a
//! decision, apart from the session so that it can be tested as a table.

use super::writer::LostOutcome;
use crate::protocol::sqlstate;

/// The errors the owed units get, in order, each with its own ReadyForQuery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct LostUnits {
    /// The first unit's SQLSTATE.
    pub first: &'static str,
    /// Each later unit's.
    pub rest: &'static str,
    /// The client's transaction is aborted: it is told `E` until it rolls back.
    pub aborts: bool,
    /// How the loss counts in `pgrepl_writer_lost_transactions_total`, if it does.
    pub counted: Option<LostOutcome>,
}

/// `follows`: the connection was the write lease while the proxy follows the primary;
/// `in_tx`: the client's transaction was open on it; `may_have_committed`: a unit on its
/// way there ends a transaction (`COMMIT`...), or is an autocommit write.
///
/// A commit on its way may have happened: 08007 for every unit, as nothing says which. A
/// transaction that was open and that nothing was ending was not committed: 40001 for the
/// first unit, and 25P02 for the later ones, as PostgreSQL answers statements after an
/// error in a transaction. Otherwise nothing was written: 08006.
pub(super) fn lost_units(follows: bool, in_tx: bool, may_have_committed: bool) -> LostUnits {
    let each = |code| LostUnits {
        first: code,
        rest: code,
        aborts: false,
        counted: None,
    };
    match (follows, in_tx, may_have_committed) {
        (true, _, true) => LostUnits {
            counted: Some(LostOutcome::Unknown),
            ..each(sqlstate::TRANSACTION_RESOLUTION_UNKNOWN)
        },
        (true, true, false) => LostUnits {
            first: sqlstate::SERIALIZATION_FAILURE,
            rest: sqlstate::IN_FAILED_SQL_TRANSACTION,
            aborts: true,
            counted: Some(LostOutcome::NotCommitted),
        },
        _ => each(sqlstate::CONNECTION_FAILURE),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_the_owed_units_are_told() {
        use LostOutcome::*;
        #[rustfmt::skip]
        let table = [
            // (follows, in_tx, may_have_committed) => (first, rest, aborts, counted)
            ((true, false, true), ("08007", "08007", false, Some(Unknown))),
            ((true, true, true), ("08007", "08007", false, Some(Unknown))),
            ((true, true, false), ("40001", "25P02", true, Some(NotCommitted))),
            ((true, false, false), ("08006", "08006", false, None)),
            ((false, false, true), ("08006", "08006", false, None)),
            ((false, false, false), ("08006", "08006", false, None)),
        ];
        for ((follows, in_tx, committing), (first, rest, aborts, counted)) in table {
            let told = lost_units(follows, in_tx, committing);
            let expected = LostUnits {
                first,
                rest,
                aborts,
                counted,
            };
            assert_eq!(told, expected, "{follows} {in_tx} {committing}");
        }
    }
}
