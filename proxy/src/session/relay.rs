//! Server-to-client forwarding. Messages pass through as raw bytes in runs; only the few the
//! proxy must act on are looked at: ReadyForQuery (transaction status), ParseComplete and
//! CloseComplete (matched to the Parse and Close messages of the batch: those answering the
//! proxy's own injected messages are swallowed), ParameterStatus, errors and command tags of
//! units the session watches, every answer to a unit the proxy sent itself (swallowed), and
//! anything a backend says while it owes no response (only notifications, notices and
//! parameter changes are passed on then).

use bytes::{Buf, Bytes, BytesMut};

use crate::backend::{apply, Origin, ParseOrigin, Pending, ProtocolState, Watch};
use crate::health::WalSample;
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

/// What the relay saw of prepared statements beyond their plain success: errors and
/// redefinitions, rare.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StatementNews {
    /// The client's statements whose Parse the server rejected (name, generation).
    pub failed_parses: Vec<(Bytes, u64)>,
    /// Statements the proxy prepared that the server skipped after an error (name,
    /// generation): what the connection holds under their names is unknown.
    pub skipped_parses: Vec<(Bytes, u64)>,
    /// Statements closed (by the client or the proxy) whose Close the server skipped after
    /// an error: the connection may still hold them.
    pub skipped_closes: Vec<Bytes>,
    /// Redefinitions of statements the server accepted, their Parse messages.
    pub redefined: Vec<Bytes>,
}

impl Relayed {
    /// The statement news, made at the first.
    fn statements(&mut self) -> &mut StatementNews {
        self.statements.get_or_insert_with(Box::default)
    }
}

/// What the relay saw that the session must act on.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Relayed {
    /// Status bytes of the ReadyForQuery messages forwarded, in order; the last one counts.
    pub last_status: Option<TxStatus>,
    /// What the last of them told the client, where that differs (a deferred transaction's
    /// leading read).
    pub client_status: Option<TxStatus>,
    /// One of them said idle: whatever a unit before it wrote has committed (or rolled back).
    pub ended_tx: bool,
    /// The backend sent something it had no reason to send (usually a FATAL before closing).
    pub unsolicited: Option<u8>,
    /// What became of prepared statements that the session must follow up; None, and free
    /// to make and drop, for nearly every answer.
    pub statements: Option<Box<StatementNews>>,
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
    /// The server ended the session with this FATAL (`SQLSTATE: message`) while it owed the
    /// client an answer, held back (`hold_fatal`): what became of the units it owed is the
    /// session's to tell, and the session goes on elsewhere.
    pub server_fatal: Option<String>,
    /// A standby refused a read that may run elsewhere, before anything of its answer was
    /// forwarded: the rest of that answer is swallowed, and the read is the primary's.
    pub misrouted: bool,
    /// The writer's refusal (`Rerun::IfRefused`), up to its ErrorResponse: the client's
    /// as it is if that node is still the writer, out of recovery, once sampled again.
    pub writer_refusal: Option<Bytes>,
    /// A commit position question was answered after this many of the client's units:
    /// those after it are not covered by its position.
    pub units_before_commit_position: Option<usize>,
}

/// Whether the unit an answer starts may still run elsewhere, and on what answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rerun {
    No,
    /// When the server ends the session before the end of its answer, with nothing of
    /// that answer forwarded (held up to [`HELD_ANSWER`]).
    IfFatal,
    /// Also when a standby refuses it (nothing queued behind it there).
    IfFatalOrRefused,
    /// Only when the node refuses it as a standby (the writer, which the monitor may not
    /// yet know to be one); a FATAL is not (see `hold_fatal`).
    IfRefused,
}

/// Forwards every complete message (and the start of a partial one) from `proto.inbuf` to
/// `out`, noting in `seen` (fresh) what the session must act on; `timed` gets each timed
/// client unit that ended, with when it started.
///
/// The answer to a unit that `may_rerun` (given how many units this call answered) is held
/// back until its first message past the preamble (ParseComplete, BindComplete, descriptions,
/// notices) is in, and a small one until its end: a server shutting down answers with
/// FATAL, before the preamble, after it or after the rows it had buffered, and such a unit
/// is then sent elsewhere instead (`fatal_before_rerunnable`); a standby refusing it
/// (`misrouted`) likewise. With `hold_fatal` (the write lease while
/// the proxy follows the primary), a FATAL answering any of the client's units is held back
/// and relaying stops (`server_fatal`).
///
/// Runs for every answer: its steps are inlined into it, and it into its one caller.
#[inline(always)]
pub fn relay(
    proto: &mut ProtocolState,
    out: &mut BytesMut,
    seen: &mut Relayed,
    mut timed: impl FnMut(u64, &Pending),
    may_rerun: impl Fn(usize) -> Rerun,
    hold_fatal: bool,
) {
    // Where the open unit's answer starts in `out`: after the last ReadyForQuery.
    let mut open_unit_from = out.len();
    // At the start of a unit with nothing of it forwarded yet.
    let mut unit_start = true;
    loop {
        if unit_start && proto.body_remaining == 0 {
            if !may_go_on(proto, seen, &may_rerun) {
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
        let passed = pass_run(proto, out, hold_fatal);
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
            swallow(proto, ty, total, seen, out)
        } else {
            attend(proto, ty, total, seen, out, &mut timed, hold_fatal)
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
}

/// Most Parses an answered unit's list may have had to be kept for the next unit.
const SPARE_PARSES: usize = 32;

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
#[inline(always)]
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
    match decisive(&proto.inbuf, rerun != Rerun::IfRefused) {
        Decisive::Wait => false,
        Decisive::Fatal if rerun == Rerun::IfRefused => true,
        Decisive::Fatal => {
            seen.fatal_before_rerunnable = true;
            false
        }
        Decisive::Refused(end) if rerun != Rerun::IfFatal => {
            if rerun == Rerun::IfRefused {
                seen.writer_refusal = Some(Bytes::copy_from_slice(&proto.inbuf[..end]));
            }
            if let Some(front) = proto.syncs.front_mut() {
                front.origin = Origin::Discard;
            }
            seen.misrouted = true;
            true
        }
        Decisive::Refused(_) | Decisive::Go => true,
    }
}

/// Passes on what has come of a message whose start was forwarded; false when nothing has.
#[inline(always)]
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
#[inline(always)]
fn pass_run(proto: &mut ProtocolState, out: &mut BytesMut, hold_fatal: bool) -> Run {
    let mut run = 0;
    let mut special = None;
    while let Some((ty, total)) = peek_header(&proto.inbuf[run..]) {
        if needs_attention(proto, ty, hold_fatal) {
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
#[inline(always)]
fn attend(
    proto: &mut ProtocolState,
    ty: u8,
    total: usize,
    seen: &mut Relayed,
    out: &mut BytesMut,
    timed: impl FnMut(u64, &Pending),
    hold_fatal: bool,
) -> Step {
    let msg = &proto.inbuf[..total];
    let front = proto.syncs.front_mut();
    match (ty, front) {
        (READY_FOR_QUERY, _) => {
            let status = msg.get(5).map(|b| TxStatus::from_byte(*b));
            let mut told = None;
            if let Some(done) = proto.syncs.pop_front() {
                if done.in_deferred_tx {
                    told = Some(deferred_status(&done));
                }
                let status = status.unwrap_or(TxStatus::Idle);
                unit_done(done, status, seen, &mut proto.spare_parses, timed);
            }
            seen.ended_tx |= status == Some(TxStatus::Idle);
            seen.last_status = status;
            seen.client_status = told;
            seen.units_done += 1;
            out.extend_from_slice(msg);
            if let Some(told) = told {
                tell_status(out, told);
            }
            return Step::UnitDone;
        }
        (PARSE_COMPLETE, Some(front)) => {
            let origin = front.parses.get(front.parses_done);
            if !matches!(origin, Some(ParseOrigin::Proxy { .. })) {
                out.extend_from_slice(msg);
            }
            if let Some(ParseOrigin::ClientRedefines(parse)) = origin {
                seen.statements().redefined.push(parse.clone());
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
            if !front
                .closes
                .get(front.closes_done)
                .is_some_and(|c| c.by_proxy)
            {
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
        (ERROR_RESPONSE, _) if hold_fatal && fields::error_is_fatal(msg) => {
            seen.server_fatal = Some(fields::error_message(msg));
            return Step::Stop;
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
#[inline(always)]
fn unit_done(
    mut done: Pending,
    status: TxStatus,
    seen: &mut Relayed,
    spare_parses: &mut Vec<ParseOrigin>,
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
    if done.closes.len() > done.closes_done {
        skipped_closes(&done, done.closes_done, seen);
    }
    // A simple query has no list: nothing to walk or free. A batch's goes back, emptied, for
    // the next batch.
    if done.parses.capacity() == 0 {
        std::mem::forget(std::mem::take(&mut done.parses));
    } else {
        let unanswered = done.parses.drain(done.parses_done.min(done.parses.len())..);
        for origin in unanswered {
            match origin {
                ParseOrigin::Client { name, generation } => {
                    seen.statements().failed_parses.push((name, generation))
                }
                ParseOrigin::Proxy { name, generation } => {
                    seen.statements().skipped_parses.push((name, generation))
                }
                ParseOrigin::ClientUntracked | ParseOrigin::ClientRedefines(_) => {}
            }
        }
        // A list a long pipeline grew is not kept for the connection's life.
        if done.parses.capacity() <= SPARE_PARSES {
            done.parses.clear();
            *spare_parses = std::mem::take(&mut done.parses);
        }
    }
}

/// Reports the statement Closes of `done` from the `from`th on as skipped.
#[cold]
#[inline(never)]
fn skipped_closes(done: &Pending, from: usize, seen: &mut Relayed) {
    let names = done.closes.iter().skip(from).map(|c| c.name.clone());
    seen.statements()
        .skipped_closes
        .extend(names.filter(|name| !name.is_empty()));
}

/// What the start of a unit's answer in `inbuf` says.
#[derive(Debug, PartialEq, Eq)]
enum Decisive {
    /// Only (part of) its preamble has come, or (part of) a small answer without its end.
    Wait,
    /// A FATAL error: the server ends the session.
    Fatal,
    /// A standby's refusal of a statement the primary can run; the answer up to it ends at
    /// that offset.
    Refused(usize),
    /// Anything else: forward.
    Go,
}

/// How much of a re-runnable answer is held back for its end: more than a server's send
/// buffer (PostgreSQL's is 8 kB). A server shutting down between a unit's Execute and its
/// Sync sends the rows in that buffer and its FATAL in one flush, without ReadyForQuery.
const HELD_ANSWER: usize = 16 * 1024;

/// Skips the preamble of an answer (messages that come before any result) to the first
/// message that decides whether the unit was answered or the server is going away. With
/// `whole`, a small answer is then walked on to its end ([`to_the_end`]), as a FATAL may
/// follow its results.
///
/// Runs at the start of every read's answer: a tight walk over the headers, without the
/// slicing of `peek_header`.
#[inline(always)]
fn decisive(inbuf: &[u8], whole: bool) -> Decisive {
    let mut at = 0;
    loop {
        let Some((ty, end)) = header_at(inbuf, at) else {
            return Decisive::Wait;
        };
        let preamble = matches!(
            ty,
            PARSE_COMPLETE
                | BIND_COMPLETE
                | CLOSE_COMPLETE
                | PARAMETER_DESCRIPTION
                | ROW_DESCRIPTION
                | NO_DATA
                | NOTICE_RESPONSE
                | PARAMETER_STATUS
        );
        // The preamble is skipped, and an error decides, only once whole.
        if end > inbuf.len() && (preamble || ty == ERROR_RESPONSE) {
            return Decisive::Wait;
        }
        match ty {
            _ if preamble => at = end,
            ERROR_RESPONSE => {
                return match error_decides(&inbuf[at..end], end) {
                    Decisive::Go if whole => to_the_end(inbuf, end),
                    decided => decided,
                }
            }
            // A result, maybe not whole yet: held within the bound, not to its own end.
            _ if whole => return to_the_end(inbuf, at),
            _ => return Decisive::Go,
        }
    }
}

/// The rest of an answer from `at`, where its results begin: held ([`Decisive::Wait`])
/// until its ReadyForQuery (or a COPY) has come, or [`HELD_ANSWER`] bytes; a FATAL before
/// that end re-runs the unit elsewhere.
#[inline(never)]
fn to_the_end(inbuf: &[u8], mut at: usize) -> Decisive {
    while let Some((ty, end)) = header_at(inbuf, at) {
        match ty {
            READY_FOR_QUERY | COPY_IN_RESPONSE | COPY_OUT_RESPONSE | COPY_BOTH_RESPONSE => {
                return Decisive::Go
            }
            // Whether it is a FATAL shows only once it is whole, even past the bound.
            ERROR_RESPONSE if end > inbuf.len() => return Decisive::Wait,
            _ if end > inbuf.len() => break,
            ERROR_RESPONSE if fields::error_is_fatal(&inbuf[at..end]) => return Decisive::Fatal,
            _ => at = end,
        }
    }
    if inbuf.len() >= HELD_ANSWER {
        Decisive::Go
    } else {
        Decisive::Wait
    }
}

/// The type and end (exclusive, maybe past what has come) of the message whose header
/// starts at `at`, once the header has come.
#[inline(always)]
fn header_at(inbuf: &[u8], at: usize) -> Option<(u8, usize)> {
    let &[ty, a, b, c, d] = inbuf.get(at..at + HEADER_LEN)? else {
        return None;
    };
    Some((ty, at + 1 + u32::from_be_bytes([a, b, c, d]) as usize))
}

#[cold]
#[inline(never)]
fn error_decides(msg: &[u8], end: usize) -> Decisive {
    if fields::error_is_fatal(msg) {
        Decisive::Fatal
    } else if fields::error_is_standby_refusal(msg) {
        Decisive::Refused(end)
    } else {
        Decisive::Go
    }
}

/// True for a message the relay must handle itself rather than pass through.
#[inline]
fn needs_attention(proto: &ProtocolState, ty: u8, hold_fatal: bool) -> bool {
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
            ERROR_RESPONSE => hold_fatal || front.watch.is_some(),
            COMMAND_COMPLETE => front.watch.is_some(),
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
        DATA_ROW if front.origin == Origin::CommitPosition => watch.wal = wal_sample(msg),
        DATA_ROW => watch.answer = column(msg, 0).map(|v| v == b"t"),
        PARAMETER_STATUS => {
            if let Some(on) = default_read_only(msg) {
                seen.default_read_only = Some(on);
            }
        }
        READY_FOR_QUERY => {
            let done = proto.syncs.pop_front().unwrap_or_default();
            let failed = done.origin == Origin::Settings
                && done.watch.as_ref().is_some_and(|w| w.error.is_some());
            if done.origin == Origin::CommitPosition {
                seen.units_before_commit_position = Some(seen.units_done);
            }
            // A read the standby refused: the server skipped what followed the refusal, maybe
            // Parses the proxy added for it. Which ones is not counted for such a unit: all
            // are reported, and their statements prepared there again when next used.
            if done.origin == Origin::Discard {
                for origin in &done.parses {
                    if let ParseOrigin::Proxy { name, generation } = origin {
                        seen.statements()
                            .skipped_parses
                            .push((name.clone(), *generation));
                    }
                }
                skipped_closes(&done, 0, seen);
            }
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

/// What the client is told at the end of a deferred transaction's leading read: still in
/// the transaction, or in one that failed.
#[cold]
fn deferred_status(unit: &Pending) -> TxStatus {
    if unit.watch.as_ref().is_some_and(|w| w.error.is_some()) {
        TxStatus::Failed
    } else {
        TxStatus::InTransaction
    }
}

/// Rewrites the status byte of the ReadyForQuery just put at the end of `out`.
#[cold]
fn tell_status(out: &mut BytesMut, status: TxStatus) {
    if let Some(last) = out.last_mut() {
        *last = status.as_byte();
    }
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

/// Column `i` of a DataRow; None when it is NULL or missing.
fn column(msg: &[u8], i: usize) -> Option<&[u8]> {
    let body = fields::body(msg);
    let mut at = 2;
    for n in 0..=i {
        let len = i32::from_be_bytes(body.get(at..at + 4)?.try_into().ok()?);
        at += 4;
        let Ok(len) = usize::try_from(len) else {
            if n == i {
                return None;
            }
            continue; // NULL
        };
        if n == i {
            return body.get(at..at + len);
        }
        at += len;
    }
    None
}

/// The answer to the commit position question.
fn wal_sample(msg: &[u8]) -> Option<WalSample> {
    let text = |i| std::str::from_utf8(column(msg, i)?).ok();
    WalSample::from_text(text(0)?, text(1)?, text(2)?)
}

#[cfg(test)]
mod tests;
