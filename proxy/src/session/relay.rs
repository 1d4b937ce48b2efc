//! Server-to-client forwarding. Messages pass through as raw bytes in runs; only the few the
//! proxy must act on are looked at: ReadyForQuery (transaction status), ParseComplete and
//! CloseComplete (matched to the Parse and Close messages of the batch: those answering the
//! proxy's own injected messages are swallowed), ParameterStatus, errors and command tags of
//! units the session watches, every answer to a unit the proxy sent itself (swallowed), and
//! anything a backend says while it owes no response (only notifications, notices and
//! parameter changes are passed on then).

use bytes::{Buf, Bytes, BytesMut};

use crate::backend::{apply, Origin, ParseOrigin, Pending, ProtocolState, Watch};
use crate::protocol::tags::backend::*;
use crate::protocol::tags::TxStatus;
use crate::protocol::{fields, peek_header, HEADER_LEN};

/// How a watched unit (see [`Watch`]) ended.
#[derive(Debug, PartialEq, Eq)]
pub struct Outcome {
    pub origin: Origin,
    pub watch: Box<Watch>,
    /// Its ReadyForQuery status.
    pub status: TxStatus,
}

/// What the relay saw that the session must act on.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Relayed {
    /// Status bytes of the ReadyForQuery messages forwarded, in order; the last one counts.
    pub last_status: Option<TxStatus>,
    /// The backend sent something it had no reason to send (usually a FATAL before closing).
    pub unsolicited: Option<u8>,
    /// The client's statements whose Parse the server rejected (name, generation).
    pub failed_parses: Vec<(Bytes, u64)>,
    /// Redefinitions of statements the server accepted, their Parse messages.
    pub redefined: Vec<Bytes>,
    /// COPY FROM STDIN started in a Sync-ended batch: the server ignored that Sync, so the
    /// client's next Sync (after CopyDone/CopyFail) completes the batch instead.
    pub copy_ate_sync: bool,
    /// Units (Syncs, simple queries) answered to the end.
    pub units_done: usize,
    /// Something of the unit still open was forwarded: it can no longer be re-run elsewhere.
    pub open_unit_answered: bool,
    /// Watched units that ended, in order. Relaying stops after a failed replay of settings:
    /// what follows on that connection ran without them.
    pub outcomes: Vec<Outcome>,
    /// The last `default_transaction_read_only` a ParameterStatus reported.
    pub default_read_only: Option<bool>,
    /// Relaying stopped before a FATAL that answers a read which may run elsewhere: the
    /// server is going away, and nothing of that read's answer has been forwarded.
    pub fatal_before_rerunnable: bool,
    /// A standby refused a read that may run elsewhere, before anything of its answer was
    /// forwarded: the rest of that answer is swallowed, and the read is the primary's.
    pub misrouted: bool,
}

/// Whether the unit an answer starts may still run elsewhere, and on what answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rerun {
    No,
    /// When the server ends the session before answering it.
    IfFatal,
    /// Also when a standby refuses it (nothing queued behind it there).
    IfFatalOrRefused,
}

/// Forwards every complete message (and the start of a partial one) from `proto.inbuf` to
/// `out`; `timed` gets each timed client unit that ended, with when it started.
///
/// The answer to a unit that `may_rerun` (given how many units this call answered) is held
/// back until its first message past the preamble (ParseComplete, BindComplete, descriptions,
/// notices) is in: a server shutting down answers with FATAL, before the preamble or
/// after it, and such a unit is then sent elsewhere instead (`fatal_before_rerunnable`); a
/// standby refusing it (`misrouted`) likewise.
pub fn relay(
    proto: &mut ProtocolState,
    out: &mut BytesMut,
    mut timed: impl FnMut(u64, &Pending),
    may_rerun: impl Fn(usize) -> Rerun,
) -> Relayed {
    let mut seen = Relayed::default();
    // Where the open unit's answer starts in `out`: after the last ReadyForQuery.
    let mut open_unit_from = out.len();
    // At the start of a unit with nothing of it forwarded yet.
    let mut unit_start = true;
    loop {
        if unit_start && proto.body_remaining == 0 {
            if !may_go_on(proto, &mut seen, &may_rerun) {
                break;
            }
            unit_start = false;
        }
        if proto.body_remaining > 0 {
            if !pass_body(proto, out) {
                break;
            }
            continue;
        }
        let passed = pass_run(proto, out);
        let Some((ty, total)) = passed.special else {
            break;
        };
        if passed.any {
            // Re-check from the new front: the attention test may depend on state.
            continue;
        }
        if proto.inbuf.len() < total {
            break; // wait for the whole message
        }
        let injected = proto.front_origin().is_some_and(|o| o != Origin::Client);
        let step = if injected {
            swallow(proto, ty, total, &mut seen, out)
        } else {
            attend(proto, ty, total, &mut seen, out, &mut timed)
        };
        proto.inbuf.advance(total);
        match step {
            Step::Next => {}
            Step::UnitDone => {
                unit_start = true;
                if !injected {
                    open_unit_from = out.len();
                }
            }
            Step::Stop => break,
        }
    }
    seen.open_unit_answered = out.len() > open_unit_from;
    seen
}

/// What the relay does after a message it attended to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Next,
    /// It was a ReadyForQuery: the next unit's answer starts.
    UnitDone,
    /// Stop relaying (the backend said something unsolicited, or a replay failed).
    Stop,
}

/// At the start of a unit's answer: whether relaying goes on. The answer to a unit that may
/// still run elsewhere waits for its decisive message; a FATAL stops the relay, a standby's
/// refusal turns the unit's answer into one to swallow.
#[inline]
fn may_go_on(
    proto: &mut ProtocolState,
    seen: &mut Relayed,
    may_rerun: impl Fn(usize) -> Rerun,
) -> bool {
    let rerun = match proto.front_origin() {
        Some(Origin::Client) => may_rerun(seen.units_done),
        _ => Rerun::No,
    };
    if rerun == Rerun::No {
        return true;
    }
    match decisive(&proto.inbuf) {
        Decisive::Wait => false,
        Decisive::Fatal => {
            seen.fatal_before_rerunnable = true;
            false
        }
        Decisive::Refused if rerun == Rerun::IfFatalOrRefused => {
            if let Some(front) = proto.syncs.front_mut() {
                front.origin = Origin::Discard;
            }
            seen.misrouted = true;
            true
        }
        Decisive::Refused | Decisive::Go => true,
    }
}

/// Passes on what has come of a message whose start was forwarded; false when nothing has.
#[inline]
fn pass_body(proto: &mut ProtocolState, out: &mut BytesMut) -> bool {
    let n = proto.body_remaining.min(proto.inbuf.len());
    if n == 0 {
        return false;
    }
    out.extend_from_slice(&proto.inbuf[..n]);
    proto.inbuf.advance(n);
    proto.body_remaining -= n;
    true
}

/// What [`pass_run`] did.
struct Run {
    /// Something was forwarded.
    any: bool,
    /// The header of the message that stopped the run, which needs attention.
    special: Option<(u8, usize)>,
}

/// Forwards the longest run of messages that pass through untouched, up to the first that
/// needs attention (or the start of one that has not come whole).
#[inline]
fn pass_run(proto: &mut ProtocolState, out: &mut BytesMut) -> Run {
    let mut run = 0;
    let mut special = None;
    while let Some((ty, total)) = peek_header(&proto.inbuf[run..]) {
        if needs_attention(proto, ty) {
            special = Some((ty, total));
            break;
        }
        if run + total > proto.inbuf.len() {
            proto.body_remaining = run + total - proto.inbuf.len();
            run = proto.inbuf.len();
            break;
        }
        run += total;
    }
    if run > 0 {
        out.extend_from_slice(&proto.inbuf[..run]);
        proto.inbuf.advance(run);
    }
    Run {
        any: run > 0,
        special,
    }
}

/// Handles one whole message of the client's unit that needs attention (it stays in
/// `inbuf`: the caller consumes it).
fn attend(
    proto: &mut ProtocolState,
    ty: u8,
    total: usize,
    seen: &mut Relayed,
    out: &mut BytesMut,
    timed: impl FnMut(u64, &Pending),
) -> Step {
    let msg = &proto.inbuf[..total];
    let front = proto.syncs.front_mut();
    match (ty, front) {
        (READY_FOR_QUERY, _) => {
            let status = msg.get(5).map(|b| TxStatus::from_byte(*b));
            if let Some(done) = proto.syncs.pop_front() {
                unit_done(done, status.unwrap_or(TxStatus::Idle), seen, timed);
            }
            seen.last_status = status;
            seen.units_done += 1;
            out.extend_from_slice(msg);
            return Step::UnitDone;
        }
        (PARSE_COMPLETE, Some(front)) => {
            let origin = front.parses.get(front.parses_done);
            if !matches!(origin, Some(ParseOrigin::Proxy)) {
                out.extend_from_slice(msg);
            }
            if let Some(ParseOrigin::ClientRedefines(parse)) = origin {
                seen.redefined.push(parse.clone());
            }
            front.parses_done += 1;
        }
        (COPY_IN_RESPONSE, front) => {
            if let Some(front) = front {
                front.synced_batch = false;
                seen.copy_ate_sync = true;
            }
            out.extend_from_slice(msg);
        }
        (CLOSE_COMPLETE, Some(front)) => {
            if front.closes.get(front.closes_done) != Some(&true) {
                out.extend_from_slice(msg);
            }
            front.closes_done += 1;
        }
        (PARSE_COMPLETE | CLOSE_COMPLETE, None) => {}
        (PARAMETER_STATUS, front) => {
            if let Some(on) = default_read_only(msg) {
                seen.default_read_only = Some(on);
            }
            // What the session's settings are now: replayed as reported.
            if let (Some(front), Some(reported)) = (front, apply::parameter_status(msg)) {
                let watch = front.watch.get_or_insert_with(Box::default);
                watch.reported.push(reported);
            }
            out.extend_from_slice(msg);
        }
        (ERROR_RESPONSE | COMMAND_COMPLETE, Some(front)) => {
            if let Some(watch) = front.watch.as_mut() {
                note(watch, ty, msg);
            }
            out.extend_from_slice(msg);
        }
        (other, _) => {
            seen.unsolicited = Some(other);
            return Step::Stop;
        }
    }
    Step::Next
}

/// A client unit answered to its ReadyForQuery: its duration, its outcome if watched, and
/// the Parses the server rejected (those past the count of ParseCompletes).
#[inline]
fn unit_done(
    mut done: Pending,
    status: TxStatus,
    seen: &mut Relayed,
    mut timed: impl FnMut(u64, &Pending),
) {
    if let Some(started) = done.started {
        timed(started, &done);
    }
    if let Some(watch) = done.watch.take() {
        seen.outcomes.push(Outcome {
            origin: done.origin,
            watch,
            status,
        });
    }
    // A simple query has no list: nothing to walk or free.
    if done.parses.capacity() == 0 {
        std::mem::forget(std::mem::take(&mut done.parses));
    } else {
        let unanswered = done.parses.into_iter().skip(done.parses_done);
        seen.failed_parses
            .extend(unanswered.filter_map(|origin| match origin {
                ParseOrigin::Client { name, generation } => Some((name, generation)),
                _ => None,
            }));
    }
}

/// What the start of a unit's answer in `inbuf` says.
enum Decisive {
    /// Only (part of) its preamble has come.
    Wait,
    /// A FATAL error: the server ends the session.
    Fatal,
    /// A standby's refusal of a statement the primary can run.
    Refused,
    /// Anything else: forward.
    Go,
}

/// Skips the preamble of an answer (messages that come before any result) to the first
/// message that decides whether the unit was answered or the server is going away.
///
/// Runs at the start of every read's answer: a tight walk over the headers, without the
/// slicing of `peek_header`.
#[inline(always)]
fn decisive(inbuf: &[u8]) -> Decisive {
    let mut at = 0;
    loop {
        let Some(&[ty, a, b, c, d]) = inbuf.get(at..at + HEADER_LEN) else {
            return Decisive::Wait;
        };
        let end = at + 1 + u32::from_be_bytes([a, b, c, d]) as usize;
        if end > inbuf.len() {
            return Decisive::Wait;
        }
        match ty {
            PARSE_COMPLETE
            | BIND_COMPLETE
            | CLOSE_COMPLETE
            | PARAMETER_DESCRIPTION
            | ROW_DESCRIPTION
            | NO_DATA
            | NOTICE_RESPONSE
            | PARAMETER_STATUS => at = end,
            ERROR_RESPONSE => return error_decides(&inbuf[at..end]),
            _ => return Decisive::Go,
        }
    }
}

#[cold]
#[inline(never)]
fn error_decides(msg: &[u8]) -> Decisive {
    if fields::error_is_fatal(msg) {
        Decisive::Fatal
    } else if fields::error_is_standby_refusal(msg) {
        Decisive::Refused
    } else {
        Decisive::Go
    }
}

/// True for a message the relay must handle itself rather than pass through.
#[inline]
fn needs_attention(proto: &ProtocolState, ty: u8) -> bool {
    match proto.syncs.front() {
        None => !matches!(
            ty,
            NOTIFICATION_RESPONSE | NOTICE_RESPONSE | PARAMETER_STATUS
        ),
        Some(front) if front.origin != Origin::Client => true,
        Some(front) => match ty {
            READY_FOR_QUERY | PARAMETER_STATUS => true,
            PARSE_COMPLETE => !front.parses.is_empty(),
            CLOSE_COMPLETE => !front.closes.is_empty(),
            COPY_IN_RESPONSE => front.synced_batch,
            ERROR_RESPONSE | COMMAND_COMPLETE => front.watch.is_some(),
            _ => false,
        },
    }
}

/// Consumes one message answering a unit the proxy sent itself (notifications excepted: they
/// go to the client); stops at the end of a replay of settings that failed.
fn swallow(
    proto: &mut ProtocolState,
    ty: u8,
    total: usize,
    seen: &mut Relayed,
    out: &mut BytesMut,
) -> Step {
    let msg = &proto.inbuf[..total];
    let Some(front) = proto.syncs.front_mut() else {
        return Step::Next;
    };
    let watch = front.watch.get_or_insert_with(Box::default);
    match ty {
        ERROR_RESPONSE => note(watch, ty, msg),
        // Notifications the server delivers before this ReadyForQuery are the client's.
        NOTIFICATION_RESPONSE => out.extend_from_slice(msg),
        DATA_ROW => watch.holds_state = first_column(msg).map(|v| v == b"t"),
        PARAMETER_STATUS => {
            if let Some(on) = default_read_only(msg) {
                seen.default_read_only = Some(on);
            }
        }
        READY_FOR_QUERY => {
            let done = proto.syncs.pop_front().unwrap_or_default();
            let failed = done.origin == Origin::Settings
                && done.watch.as_ref().is_some_and(|w| w.error.is_some());
            seen.outcomes.push(Outcome {
                origin: done.origin,
                watch: done.watch.unwrap_or_default(),
                status: msg
                    .get(5)
                    .map_or(TxStatus::Idle, |b| TxStatus::from_byte(*b)),
            });
            return if failed { Step::Stop } else { Step::UnitDone };
        }
        _ => {}
    }
    Step::Next
}

/// Records what an ErrorResponse or CommandComplete says about a watched unit.
fn note(watch: &mut Watch, ty: u8, msg: &[u8]) {
    match ty {
        ERROR_RESPONSE => {
            if watch.error.is_none() {
                watch.error = Some(fields::error_message(msg));
            }
        }
        _ => watch.rolled_back |= fields::body(msg).starts_with(b"ROLLBACK"),
    }
}

/// The value of a ParameterStatus for `default_transaction_read_only`.
fn default_read_only(msg: &[u8]) -> Option<bool> {
    let (name, rest) = fields::cstr(fields::body(msg))?;
    let (value, _) = fields::cstr(rest)?;
    (name == b"default_transaction_read_only").then_some(value == b"on")
}

/// The first column of a DataRow, unless NULL.
fn first_column(msg: &[u8]) -> Option<&[u8]> {
    let body = fields::body(msg);
    let len = i32::from_be_bytes(body.get(2..6)?.try_into().ok()?);
    body.get(6..6 + usize::try_from(len).ok()?)
}

/// The relay over byte fixtures: a connection's protocol state, answers written into its
/// input buffer by hand.
#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;
    use crate::backend::Pending;

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

    fn row() -> Vec<u8> {
        msg(b'D', &[0, 1, 0, 0, 0, 1, b'x'])
    }

    /// A connection's state that owes `owed`, with `answers` waiting in its input buffer.
    fn conn(owed: Vec<Pending>, answers: &[Vec<u8>]) -> ProtocolState {
        ProtocolState {
            inbuf: answers.concat().as_slice().into(),
            syncs: VecDeque::from(owed),
            body_remaining: 0,
        }
    }

    fn relayed(conn: &mut ProtocolState, rerun: Rerun) -> (Relayed, Vec<u8>) {
        let mut out = BytesMut::new();
        let seen = relay(conn, &mut out, |_, _| {}, |_| rerun);
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
                ParseOrigin::Proxy,
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
        assert!(seen.failed_parses.is_empty());
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
        assert_eq!(seen.failed_parses, vec![(Bytes::from_static(b"s1"), 3)]);
    }

    #[test]
    fn a_standby_refusal_before_any_row_is_held_back_and_swallowed() {
        let refusal = error(
            "ERROR",
            "25006",
            "cannot execute nextval() in a read-only transaction",
        );
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
        let refusal = error(
            "ERROR",
            "25006",
            "cannot execute nextval() in a read-only transaction",
        );
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
        let seen = relay(&mut state, &mut out, |at, _| timed.push(at), |_| Rerun::No);
        assert_eq!(timed, vec![42], "only the timed unit, once");
        assert_eq!(seen.units_done, 2);
    }

    #[test]
    fn the_close_complete_of_a_close_the_proxy_added_is_swallowed() {
        let unit = Pending {
            closes: vec![true, false],
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
}
