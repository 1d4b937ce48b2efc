//! The relay over byte fixtures: a connection's protocol state, answers written into its
//! input buffer by hand.
use std::collections::VecDeque;

use super::*;
use crate::backend::{Pending, StatementClose};

use crate::protocol::frame::typed_message as msg;

fn ready(status: u8) -> Vec<u8> {
    msg(b'Z', &[status])
}

/// An ErrorResponse with this severity, SQLSTATE and message.
fn error(severity: &str, code: &str, message: &str) -> Vec<u8> {
    let mut body = Vec::new();
    for (field, value) in [
        (b'S', severity),
        (b'V', severity),
        (b'C', code),
        (b'M', message),
    ] {
        body.push(field);
        body.extend_from_slice(value.as_bytes());
        body.push(0);
    }
    body.push(0);
    msg(b'E', &body)
}

/// A standby's refusal of a statement that writes.
fn refusal() -> Vec<u8> {
    error(
        "ERROR",
        "25006",
        "cannot execute nextval() in a read-only transaction",
    )
}

fn row() -> Vec<u8> {
    msg(b'D', &[0, 1, 0, 0, 0, 1, b'x'])
}

/// A connection's state that owes `owed`, with `answers` waiting in its input buffer.
fn conn(owed: Vec<Pending>, answers: &[Vec<u8>]) -> ProtocolState {
    ProtocolState {
        inbuf: answers.concat().as_slice().into(),
        syncs: VecDeque::from(owed),
        body_remaining: 0,
        spare_parses: Vec::new(),
    }
}

fn relayed(conn: &mut ProtocolState, rerun: Rerun) -> (Relayed, Vec<u8>) {
    relayed_holding(conn, rerun, false)
}

/// As [`relayed`], a FATAL held back when `hold_fatal` (the write lease, following).
fn relayed_holding(conn: &mut ProtocolState, rerun: Rerun, hold_fatal: bool) -> (Relayed, Vec<u8>) {
    let mut out = BytesMut::new();
    let mut seen = Relayed::default();
    relay(conn, &mut out, &mut seen, |_, _| {}, |_| rerun, hold_fatal);
    (seen, out.to_vec())
}

#[test]
fn answers_to_the_proxys_own_units_are_swallowed() {
    let settings = Pending::injected(Origin::Settings);
    let answers = [
        msg(b'C', b"SET\0"),
        ready(b'I'),
        row(),
        msg(b'C', b"SELECT 1\0"),
        ready(b'T'),
    ];
    let mut conn = conn(vec![settings, Pending::default()], &answers);
    let (seen, out) = relayed(&mut conn, Rerun::No);
    assert_eq!(
        out,
        answers[2..].concat(),
        "only the client's unit is forwarded"
    );
    assert_eq!(
        (seen.units_done, seen.last_status),
        (1, Some(TxStatus::InTransaction))
    );
    assert_eq!(seen.outcomes.len(), 1);
    assert_eq!(seen.outcomes[0].origin, Origin::Settings);
    assert!(conn.syncs.is_empty() && conn.inbuf.is_empty());
}

#[test]
fn the_parse_complete_of_a_parse_the_proxy_added_is_swallowed() {
    let unit = Pending {
        parses: vec![
            ParseOrigin::Proxy {
                name: Bytes::from_static(b"s0"),
                generation: 1,
            },
            ParseOrigin::Client {
                name: Bytes::from_static(b"s1"),
                generation: 7,
            },
        ],
        ..Pending::default()
    };
    let parsed = msg(b'1', b"");
    let answers = [
        parsed.clone(),
        parsed.clone(),
        msg(b'2', b""),
        row(),
        ready(b'I'),
    ];
    let mut conn = conn(vec![unit], &answers);
    let (seen, out) = relayed(&mut conn, Rerun::No);
    assert_eq!(out, answers[1..].concat());
    assert!(
        seen.statements.is_none(),
        "a plain answer makes no statement news"
    );
}

#[test]
fn a_parse_the_server_rejected_is_reported() {
    let unit = Pending {
        parses: vec![ParseOrigin::Client {
            name: Bytes::from_static(b"s1"),
            generation: 3,
        }],
        ..Pending::default()
    };
    let answers = [error("ERROR", "42601", "syntax error"), ready(b'I')];
    let mut conn = conn(vec![unit], &answers);
    let (seen, _) = relayed(&mut conn, Rerun::No);
    assert_eq!(
        news(&seen).failed_parses,
        vec![(Bytes::from_static(b"s1"), 3)]
    );
    assert!(
        conn.spare_parses.is_empty() && conn.spare_parses.capacity() > 0,
        "the answered unit's list is kept, emptied, for the next batch"
    );
    let proxys = ParseOrigin::Proxy {
        name: Bytes::from_static(b"s0"),
        generation: 1,
    };
    conn.note_parse(proxys.clone());
    assert_eq!(conn.syncs[0].parses, vec![proxys]);
    assert_eq!(
        conn.spare_parses.capacity(),
        0,
        "and taken by the next Parse"
    );
}

#[test]
fn a_standby_refusal_before_any_row_is_held_back_and_swallowed() {
    let refusal = refusal();
    let answers = [
        msg(b'1', b""),
        msg(b'2', b""),
        msg(b'3', b""),
        refusal,
        ready(b'I'),
    ];
    let mut conn = conn(vec![Pending::default()], &answers);
    let (seen, out) = relayed(&mut conn, Rerun::IfFatalOrRefused);
    assert!(seen.misrouted);
    assert!(
        out.is_empty(),
        "nothing of the refused read reaches the client"
    );
    assert!(
        conn.syncs.is_empty() && conn.inbuf.is_empty(),
        "its answer is consumed"
    );
    assert_eq!(
        seen.last_status, None,
        "a swallowed answer says nothing of the client's transaction"
    );
}

#[test]
fn a_refusal_after_rows_or_with_more_queued_reaches_the_client() {
    let refusal = refusal();
    let after_rows = [row(), refusal.clone(), ready(b'I')];
    let mut conn1 = conn(vec![Pending::default()], &after_rows);
    let (seen, out) = relayed(&mut conn1, Rerun::IfFatalOrRefused);
    assert!(!seen.misrouted);
    assert_eq!(out, after_rows.concat());
    let queued = [refusal, ready(b'I')];
    let mut conn2 = conn(vec![Pending::default()], &queued);
    let (seen, out) = relayed(&mut conn2, Rerun::IfFatal);
    assert!(!seen.misrouted);
    assert_eq!(out, queued.concat());
}

#[test]
fn an_incomplete_preamble_waits_and_a_fatal_stops_the_relay() {
    let mut waiting = conn(vec![Pending::default()], &[msg(b'1', b"")]);
    let (seen, out) = relayed(&mut waiting, Rerun::IfFatal);
    assert!(out.is_empty() && !seen.fatal_before_rerunnable);
    let fatal = error(
        "FATAL",
        "57P01",
        "terminating connection due to administrator command",
    );
    let mut dying = conn(vec![Pending::default()], &[msg(b'1', b""), fatal]);
    let (seen, out) = relayed(&mut dying, Rerun::IfFatal);
    assert!(seen.fatal_before_rerunnable && out.is_empty());
}

#[test]
fn rows_a_shutting_down_standby_flushed_with_its_fatal_are_held_and_the_read_rerun() {
    // PostgreSQL checks for the shutdown between a unit's Execute and its Sync: what was in
    // its send buffer (the whole answer but ReadyForQuery) comes with the FATAL.
    let fatal = error(
        "FATAL",
        "57P01",
        "terminating connection due to administrator command",
    );
    let answered = [msg(b'2', b""), row(), msg(b'C', b"SELECT 1\0")];
    let mut held = conn(vec![Pending::default()], &answered);
    let (seen, out) = relayed(&mut held, Rerun::IfFatalOrRefused);
    assert!(
        out.is_empty() && !seen.fatal_before_rerunnable,
        "held for its end"
    );
    held.inbuf.extend_from_slice(&fatal);
    let (seen, out) = relayed(&mut held, Rerun::IfFatalOrRefused);
    assert!(seen.fatal_before_rerunnable, "re-run elsewhere");
    assert!(out.is_empty(), "nothing of it reached the client");
    let mut ended = conn(vec![Pending::default()], &answered);
    ended.inbuf.extend_from_slice(&ready(b'I'));
    let (seen, out) = relayed(&mut ended, Rerun::IfFatal);
    assert_eq!(out, [&answered[..], &[ready(b'I')]].concat().concat());
    assert_eq!(seen.units_done, 1);
}

#[test]
fn where_an_answer_that_may_run_elsewhere_is_decided() {
    use Decisive::*;
    let fatal = error("FATAL", "57P01", "terminating connection");
    let soft = error("ERROR", "22012", "division by zero");
    let big_rows: Vec<Vec<u8>> = (0..2000).map(|_| row()).collect();
    let (bind, done) = (msg(b'2', b""), msg(b'C', b"SELECT 1\0"));
    let copy_out = msg(b'H', &[0, 0, 0]);
    let huge_row = msg(b'D', &[7; 100_000]);
    // Past the bound: more rows than are held, then `tail`.
    let held_then =
        |tail: &[u8]| [std::slice::from_ref(&bind), &big_rows[..], &[tail.to_vec()]].concat();
    #[rustfmt::skip]
    let table: Vec<(Vec<Vec<u8>>, bool, Decisive)> = vec![
        (vec![], true, Wait),
        (vec![bind.clone()], true, Wait),
        (vec![bind.clone(), fatal.clone()], false, Fatal),
        (vec![bind.clone(), refusal()], true, Refused(bind.len() + refusal().len())),
        // Not whole (only the writer's refusal would re-run it): the first result decides.
        (vec![bind.clone(), row()], false, Go),
        (vec![bind.clone(), row(), done.clone(), fatal.clone()], false, Go),
        // Whole: held to its end, re-run on a FATAL before it.
        (vec![bind.clone(), row(), done.clone()], true, Wait),
        (vec![bind.clone(), row(), done.clone(), ready(b'I')], true, Go),
        (vec![bind.clone(), row(), done.clone(), fatal.clone()], true, Fatal),
        (vec![soft.clone(), fatal.clone()], true, Fatal),
        (vec![soft.clone(), ready(b'I')], true, Go),
        (vec![row(), refusal(), ready(b'I')], true, Go),
        (vec![copy_out], true, Go),
        // Too big to hold: it streams, as before.
        ([std::slice::from_ref(&bind), &big_rows[..]].concat(), true, Go),
        // A row bigger than the bound is not held to its own end.
        (vec![bind.clone(), huge_row[..1000].to_vec()], true, Wait),
        (vec![bind.clone(), huge_row[..20_000].to_vec()], true, Go),
        (vec![huge_row[..1000].to_vec()], false, Go),
        // Partial messages: a ReadyForQuery ends the hold; an error waits to be read whole,
        // in the preamble (the refusal test) and past the bound (the FATAL test) alike.
        (vec![bind.clone(), row(), ready(b'I')[..5].to_vec()], true, Go),
        (vec![bind.clone(), refusal()[..9].to_vec()], true, Wait),
        (vec![bind.clone(), refusal()[..9].to_vec()], false, Wait),
        (vec![bind.clone(), row(), fatal[..9].to_vec()], true, Wait),
        (held_then(&fatal[..9]), true, Wait),
        (held_then(&fatal), true, Fatal),
    ];
    for (answer, whole, expected) in table {
        let inbuf = answer.concat();
        assert_eq!(decisive(&inbuf, whole), expected, "{inbuf:?} whole={whole}");
    }
}

#[test]
fn the_writer_refusing_as_a_standby_is_held_back_and_so_is_its_fatal() {
    let answers = [msg(b'1', b""), refusal(), ready(b'I')];
    let mut refused = conn(vec![Pending::default()], &answers);
    let (seen, out) = relayed(&mut refused, Rerun::IfRefused);
    assert!(seen.misrouted && out.is_empty());
    let kept = [msg(b'1', b""), refusal()].concat();
    assert_eq!(
        seen.writer_refusal.as_deref(),
        Some(&kept[..]),
        "kept, to reach the client as it is if the node stays the writer"
    );
    let fatal = error(
        "FATAL",
        "57P01",
        "terminating connection due to administrator command",
    );
    let mut dying = conn(vec![Pending::default()], std::slice::from_ref(&fatal));
    let (seen, out) = relayed_holding(&mut dying, Rerun::IfRefused, true);
    assert!(!seen.fatal_before_rerunnable && !seen.misrouted);
    assert!(out.is_empty(), "the session tells what became of the unit");
    assert_eq!(
        seen.server_fatal.as_deref(),
        Some("57P01: terminating connection due to administrator command")
    );
}

#[test]
fn a_fatal_on_the_write_lease_is_held_back_wherever_it_comes() {
    let fatal = error(
        "FATAL",
        "57P01",
        "terminating connection due to administrator command",
    );
    let description = msg(b'T', b"\0\0");
    let answers = [
        ready(b'I'),
        description.clone(),
        row(),
        fatal.clone(),
        ready(b'I'),
    ];
    let owed = || vec![Pending::default(), Pending::default(), Pending::default()];
    let mut held = conn(owed(), &answers);
    let (seen, out) = relayed_holding(&mut held, Rerun::No, true);
    assert_eq!(out, [ready(b'I'), description, row()].concat());
    assert_eq!(seen.units_done, 1);
    assert!(seen.server_fatal.is_some() && seen.unsolicited.is_none());
    let mut passed = conn(owed(), &answers);
    let (seen, out) = relayed(&mut passed, Rerun::No);
    assert_eq!(out, answers.concat(), "elsewhere a FATAL is the client's");
    assert!(seen.server_fatal.is_none());
    let not_fatal = error("ERROR", "23505", "duplicate key value");
    let mut error = conn(owed(), &[not_fatal.clone(), ready(b'I')]);
    let (seen, out) = relayed_holding(&mut error, Rerun::No, true);
    assert_eq!(out, [not_fatal, ready(b'I')].concat());
    assert!(seen.server_fatal.is_none());
}

#[test]
fn a_message_split_across_reads_passes_through_whole() {
    let big = msg(b'D', &[7; 100]);
    let (head, tail) = big.split_at(40);
    let mut conn = conn(vec![Pending::default()], &[head.to_vec()]);
    let (_, first) = relayed(&mut conn, Rerun::No);
    assert_eq!(first, head, "the start of a row passes at once");
    assert_eq!(conn.body_remaining, big.len() - head.len());
    conn.inbuf.extend_from_slice(tail);
    conn.inbuf.extend_from_slice(&ready(b'I'));
    let (seen, rest) = relayed(&mut conn, Rerun::No);
    assert_eq!([first, rest].concat(), [big, ready(b'I')].concat());
    assert_eq!(seen.units_done, 1);
}

#[test]
fn while_nothing_is_owed_notifications_pass_and_anything_else_is_unsolicited() {
    let notify = msg(b'A', b"\0\0\0\x01chan\0payload\0");
    let mut conn = conn(Vec::new(), &[notify.clone(), row()]);
    let (seen, out) = relayed(&mut conn, Rerun::No);
    assert_eq!(out, notify);
    assert_eq!(seen.unsolicited, Some(b'D'));
}

#[test]
fn default_transaction_read_only_is_followed_from_parameter_status() {
    let status = msg(b'S', b"default_transaction_read_only\0on\0");
    let mut conn = conn(vec![Pending::default()], &[status.clone(), ready(b'I')]);
    let (seen, out) = relayed(&mut conn, Rerun::No);
    assert_eq!(seen.default_read_only, Some(true));
    assert_eq!(out, [status, ready(b'I')].concat());
}

#[test]
fn a_timed_unit_is_reported_once_with_its_start() {
    let unit = Pending {
        started: Some(42),
        ..Pending::default()
    };
    let mut state = conn(vec![unit, Pending::default()], &[ready(b'I'), ready(b'I')]);
    let mut out = BytesMut::new();
    let mut timed = Vec::new();
    let mut seen = Relayed::default();
    relay(
        &mut state,
        &mut out,
        &mut seen,
        |at, _| timed.push(at),
        |_| Rerun::No,
        false,
    );
    assert_eq!(timed, vec![42], "only the timed unit, once");
    assert_eq!(seen.units_done, 2);
}

fn close_of(name: &'static [u8], by_proxy: bool) -> StatementClose {
    StatementClose {
        name: Bytes::from_static(name),
        by_proxy,
    }
}

#[test]
fn the_close_complete_of_a_close_the_proxy_added_is_swallowed() {
    let unit = Pending {
        closes: vec![close_of(b"evicted", true), close_of(b"s1", false)],
        ..Pending::default()
    };
    let closed = msg(b'3', b"");
    let answers = [closed.clone(), closed.clone(), ready(b'I')];
    let mut state = conn(vec![unit], &answers);
    let (_, out) = relayed(&mut state, Rerun::No);
    assert_eq!(
        out,
        answers[1..].concat(),
        "the client's CloseComplete only"
    );
}

#[test]
fn closes_an_error_skipped_are_reported_the_proxy_s_and_the_client_s() {
    let unit = Pending {
        closes: vec![
            close_of(b"done", true),
            close_of(b"evicted", true),
            close_of(b"", false),
            close_of(b"s1", false),
        ],
        ..Pending::default()
    };
    let answers = [
        msg(b'3', b""),
        error("ERROR", "42601", "syntax error"),
        ready(b'I'),
    ];
    let mut state = conn(vec![unit], &answers);
    let (seen, out) = relayed(&mut state, Rerun::No);
    assert_eq!(out, answers[1..].concat());
    assert_eq!(
        news(&seen).skipped_closes,
        [&b"evicted"[..], b"s1"],
        "a portal's Close (no name) holds nothing prepared"
    );
}

#[test]
fn a_watched_rollback_and_error_are_noted_in_the_outcome() {
    let unit = Pending {
        watch: Some(Box::default()),
        ..Pending::default()
    };
    let answers = [
        error("ERROR", "22012", "division by zero"),
        msg(b'C', b"ROLLBACK\0"),
        ready(b'I'),
    ];
    let mut state = conn(vec![unit], &answers);
    let (seen, out) = relayed(&mut state, Rerun::No);
    assert_eq!(out, answers.concat());
    let watch = &seen.outcomes[0].watch;
    assert_eq!(watch.error.as_deref(), Some("22012: division by zero"));
    assert!(watch.rolled_back);
}

#[test]
fn a_parse_the_proxy_added_that_an_error_skipped_is_reported() {
    let unit = Pending {
        parses: vec![
            ParseOrigin::Client {
                name: Bytes::new(),
                generation: 4,
            },
            ParseOrigin::Proxy {
                name: Bytes::from_static(b"s2"),
                generation: 2,
            },
        ],
        ..Pending::default()
    };
    let answers = [
        msg(b'1', b""),
        msg(b'2', b""),
        error("ERROR", "22012", "division by zero"),
        ready(b'I'),
    ];
    let mut conn = conn(vec![unit], &answers);
    let (seen, _) = relayed(&mut conn, Rerun::No);
    assert!(
        news(&seen).failed_parses.is_empty(),
        "the client's Parse was answered"
    );
    assert_eq!(
        news(&seen).skipped_parses,
        vec![(Bytes::from_static(b"s2"), 2)]
    );
}

#[test]
fn the_parses_the_proxy_added_to_a_refused_read_are_reported_as_skipped() {
    let unit = Pending {
        parses: vec![ParseOrigin::Proxy {
            name: Bytes::from_static(b"s2"),
            generation: 5,
        }],
        ..Pending::default()
    };
    let refusal = refusal();
    let answers = [msg(b'2', b""), refusal, ready(b'I')];
    let mut conn = conn(vec![unit], &answers);
    let (seen, out) = relayed(&mut conn, Rerun::IfFatalOrRefused);
    assert!(seen.misrouted && out.is_empty());
    assert_eq!(
        news(&seen).skipped_parses,
        vec![(Bytes::from_static(b"s2"), 5)]
    );
}

/// What `seen` says of prepared statements (nothing: all empty).
fn news(seen: &Relayed) -> StatementNews {
    seen.statements.as_deref().cloned().unwrap_or_default()
}
