//! Server-to-client forwarding. Messages pass through as raw bytes in runs; only the few the
//! proxy must act on are looked at: ReadyForQuery (transaction status), ParseComplete and
//! CloseComplete (matched to the Parse and Close messages of the batch: those answering the
//! proxy's own injected messages are swallowed), ParameterStatus, errors and command tags of
//! units the session watches, every answer to a unit the proxy sent itself (swallowed), and
//! anything a backend says while it owes no response (only notifications, notices and
//! parameter changes are passed on then).

use bytes::{Buf, Bytes, BytesMut};

use crate::backend::{apply, BackendConn, Origin, ParseOrigin, Watch};
use crate::protocol::tags::backend::*;
use crate::protocol::tags::TxStatus;
use crate::protocol::{fields, peek_header, HEADER_LEN};
use crate::telemetry::{Finished, Tally};

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

/// Forwards every complete message (and the start of a partial one) from `conn.inbuf` to `out`.
///
/// The answer to a unit that `may_rerun` (given how many units this call answered) is held
/// back until its first message past the preamble (ParseComplete, BindComplete, descriptions,
/// notices) is in: a server shutting down answers with FATAL, before the preamble or
/// after it, and such a unit is then sent elsewhere instead (`fatal_before_rerunnable`); a
/// standby refusing it (`misrouted`) likewise.
pub fn relay(
    conn: &mut BackendConn,
    out: &mut BytesMut,
    tally: Option<&Tally>,
    may_rerun: impl Fn(usize) -> Rerun,
) -> Relayed {
    let mut seen = Relayed::default();
    // Where the open unit's answer starts in `out`: after the last ReadyForQuery.
    let mut open_unit_from = out.len();
    // At the start of a unit with nothing of it forwarded yet.
    let mut unit_start = true;
    loop {
        if unit_start && conn.body_remaining == 0 {
            let client_unit = conn
                .syncs
                .front()
                .is_some_and(|front| front.origin == Origin::Client);
            let rerun = if client_unit {
                may_rerun(seen.units_done)
            } else {
                Rerun::No
            };
            if rerun != Rerun::No {
                match decisive(&conn.inbuf) {
                    Decisive::Wait => break,
                    Decisive::Fatal => {
                        seen.fatal_before_rerunnable = true;
                        break;
                    }
                    Decisive::Refused if rerun == Rerun::IfFatalOrRefused => {
                        if let Some(front) = conn.syncs.front_mut() {
                            front.origin = Origin::Discard;
                        }
                        seen.misrouted = true;
                    }
                    Decisive::Refused | Decisive::Go => {}
                }
            }
            unit_start = false;
        }
        if conn.body_remaining > 0 {
            let n = conn.body_remaining.min(conn.inbuf.len());
            if n == 0 {
                break;
            }
            out.extend_from_slice(&conn.inbuf[..n]);
            conn.inbuf.advance(n);
            conn.body_remaining -= n;
            continue;
        }
        // Find the longest run of messages that pass through untouched.
        let mut run = 0;
        let mut special = None;
        while let Some((ty, total)) = peek_header(&conn.inbuf[run..]) {
            if needs_attention(conn, ty) {
                special = Some((ty, total));
                break;
            }
            if run + total > conn.inbuf.len() {
                conn.body_remaining = run + total - conn.inbuf.len();
                run = conn.inbuf.len();
                break;
            }
            run += total;
        }
        if run > 0 {
            out.extend_from_slice(&conn.inbuf[..run]);
            conn.inbuf.advance(run);
        }
        let Some((ty, total)) = special else { break };
        if run > 0 {
            // Re-check from the new front: the attention test may depend on state.
            continue;
        }
        if conn.inbuf.len() < total {
            break; // wait for the whole message
        }
        let injected = conn
            .syncs
            .front()
            .is_some_and(|front| front.origin != Origin::Client);
        if injected {
            let stop = swallow(conn, ty, total, &mut seen, out);
            conn.inbuf.advance(total);
            if stop {
                break;
            }
            unit_start |= ty == READY_FOR_QUERY;
            continue;
        }
        match ty {
            READY_FOR_QUERY => {
                if let Some(mut done) = conn.syncs.pop_front() {
                    if let Some(started) = done.started {
                        let unit = Finished {
                            backend: &conn.info.name,
                            key: &conn.key,
                            reason: done.reason,
                            sql: done.sql.as_ref(),
                        };
                        conn.info.meters.finished(tally, started, &unit);
                    }
                    if let Some(watch) = done.watch.take() {
                        seen.outcomes.push(Outcome {
                            origin: done.origin,
                            watch,
                            status: conn
                                .inbuf
                                .get(5)
                                .map_or(TxStatus::Idle, |b| TxStatus::from_byte(*b)),
                        });
                    }
                    // Parses past the count of ParseCompletes failed. A simple query has
                    // no list: nothing to walk or free.
                    if done.parses.capacity() == 0 {
                        std::mem::forget(std::mem::take(&mut done.parses));
                    } else {
                        let unanswered = done.parses.into_iter().skip(done.parses_done);
                        seen.failed_parses
                            .extend(unanswered.filter_map(|origin| match origin {
                                ParseOrigin::Client { name, generation } => {
                                    Some((name, generation))
                                }
                                _ => None,
                            }));
                    }
                }
                seen.last_status = conn.inbuf.get(5).map(|b| TxStatus::from_byte(*b));
                seen.units_done += 1;
                out.extend_from_slice(&conn.inbuf[..total]);
                open_unit_from = out.len();
                unit_start = true;
            }
            PARSE_COMPLETE => {
                if let Some(front) = conn.syncs.front_mut() {
                    let origin = front.parses.get(front.parses_done);
                    if !matches!(origin, Some(ParseOrigin::Proxy)) {
                        out.extend_from_slice(&conn.inbuf[..total]);
                    }
                    if let Some(ParseOrigin::ClientRedefines(parse)) = origin {
                        seen.redefined.push(parse.clone());
                    }
                    front.parses_done += 1;
                }
            }
            COPY_IN_RESPONSE => {
                if let Some(front) = conn.syncs.front_mut() {
                    front.synced_batch = false;
                    seen.copy_ate_sync = true;
                }
                out.extend_from_slice(&conn.inbuf[..total]);
            }
            CLOSE_COMPLETE => {
                if let Some(front) = conn.syncs.front_mut() {
                    if front.closes.get(front.closes_done) != Some(&true) {
                        out.extend_from_slice(&conn.inbuf[..total]);
                    }
                    front.closes_done += 1;
                }
            }
            PARAMETER_STATUS => {
                let msg = &conn.inbuf[..total];
                if let Some(on) = default_read_only(msg) {
                    seen.default_read_only = Some(on);
                }
                // What the session's settings are now: replayed as reported.
                if let (Some(front), Some(reported)) =
                    (conn.syncs.front_mut(), apply::parameter_status(msg))
                {
                    let watch = front.watch.get_or_insert_with(Box::default);
                    watch.reported.push(reported);
                }
                out.extend_from_slice(msg);
            }
            ERROR_RESPONSE | COMMAND_COMPLETE if !conn.syncs.is_empty() => {
                if let Some(watch) = conn.syncs.front_mut().and_then(|f| f.watch.as_mut()) {
                    note(watch, ty, &conn.inbuf[..total]);
                }
                out.extend_from_slice(&conn.inbuf[..total]);
            }
            other => {
                seen.unsolicited = Some(other);
                conn.inbuf.advance(total);
                break;
            }
        }
        conn.inbuf.advance(total);
    }
    seen.open_unit_answered = out.len() > open_unit_from;
    seen
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
fn needs_attention(conn: &BackendConn, ty: u8) -> bool {
    match conn.syncs.front() {
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
/// go to the client); true when relaying must stop (its settings failed to apply).
fn swallow(
    conn: &mut BackendConn,
    ty: u8,
    total: usize,
    seen: &mut Relayed,
    out: &mut BytesMut,
) -> bool {
    let msg = &conn.inbuf[..total];
    let Some(front) = conn.syncs.front_mut() else {
        return false;
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
            let done = conn.syncs.pop_front().unwrap_or_default();
            let failed = done.origin == Origin::Settings
                && done.watch.as_ref().is_some_and(|w| w.error.is_some());
            seen.outcomes.push(Outcome {
                origin: done.origin,
                watch: done.watch.unwrap_or_default(),
                status: msg
                    .get(5)
                    .map_or(TxStatus::Idle, |b| TxStatus::from_byte(*b)),
            });
            return failed;
        }
        _ => {}
    }
    false
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

/// The relay over byte fixtures: a real connection's state, answers written into its input
/// buffer by hand.
#[cfg(test)]
mod tests {
    use std::collections::{HashMap, VecDeque};
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;
    use std::time::Instant;

    use super::*;
    use crate::backend::{BackendInfo, Counted, Pending, PoolKey, StartupInfo};
    use crate::telemetry::BackendMeters;

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

    /// A connection over a real loopback socket (the relay never touches it) that owes
    /// `owed`, with `answers` waiting in its input buffer.
    async fn conn(owed: Vec<Pending>, answers: &[Vec<u8>]) -> BackendConn {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stream = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (rd, wr) = stream.into_split();
        let info = Arc::new(BackendInfo {
            index: 1,
            name: "db02".into(),
            host: "127.0.0.1".into(),
            port: 5432,
            open: AtomicUsize::new(0),
            meters: BackendMeters::register("db02", false, "db01", None),
        });
        let startup = Arc::new(StartupInfo {
            user: "app".into(),
            database: "appdb".into(),
            options: Vec::new(),
        });
        let permit = Arc::new(tokio::sync::Semaphore::new(1))
            .try_acquire_owned()
            .unwrap();
        BackendConn {
            rd,
            wr,
            inbuf: answers.concat().as_slice().into(),
            out: BytesMut::new(),
            info: info.clone(),
            key: PoolKey {
                backend: 1,
                startup,
            },
            cancel_key: (1, 2),
            params: Arc::default(),
            prepared: HashMap::default(),
            syncs: VecDeque::from(owed),
            body_remaining: 0,
            created: Instant::now(),
            settings_seq: 0,
            closes_due: Vec::new(),
            has_temp_schema: false,
            counted: Counted::new(&info),
            _slot: permit,
        }
    }

    fn relayed(conn: &mut BackendConn, rerun: Rerun) -> (Relayed, Vec<u8>) {
        let mut out = BytesMut::new();
        let seen = relay(conn, &mut out, None, |_| rerun);
        (seen, out.to_vec())
    }

    #[tokio::test]
    async fn answers_to_the_proxys_own_units_are_swallowed() {
        let settings = Pending::injected(Origin::Settings);
        let answers = [
            msg(b'C', b"SET\0"),
            ready(b'I'),
            row(),
            msg(b'C', b"SELECT 1\0"),
            ready(b'T'),
        ];
        let mut conn = conn(vec![settings, Pending::default()], &answers).await;
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

    #[tokio::test]
    async fn the_parse_complete_of_a_parse_the_proxy_added_is_swallowed() {
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
        let mut conn = conn(vec![unit], &answers).await;
        let (seen, out) = relayed(&mut conn, Rerun::No);
        assert_eq!(out, answers[1..].concat());
        assert!(seen.failed_parses.is_empty());
    }

    #[tokio::test]
    async fn a_parse_the_server_rejected_is_reported() {
        let unit = Pending {
            parses: vec![ParseOrigin::Client {
                name: Bytes::from_static(b"s1"),
                generation: 3,
            }],
            ..Pending::default()
        };
        let answers = [error("ERROR", "42601", "syntax error"), ready(b'I')];
        let mut conn = conn(vec![unit], &answers).await;
        let (seen, _) = relayed(&mut conn, Rerun::No);
        assert_eq!(seen.failed_parses, vec![(Bytes::from_static(b"s1"), 3)]);
    }

    #[tokio::test]
    async fn a_standby_refusal_before_any_row_is_held_back_and_swallowed() {
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
        let mut conn = conn(vec![Pending::default()], &answers).await;
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

    #[tokio::test]
    async fn a_refusal_after_rows_or_with_more_queued_reaches_the_client() {
        let refusal = error(
            "ERROR",
            "25006",
            "cannot execute nextval() in a read-only transaction",
        );
        let after_rows = [row(), refusal.clone(), ready(b'I')];
        let mut conn1 = conn(vec![Pending::default()], &after_rows).await;
        let (seen, out) = relayed(&mut conn1, Rerun::IfFatalOrRefused);
        assert!(!seen.misrouted);
        assert_eq!(out, after_rows.concat());
        let queued = [refusal, ready(b'I')];
        let mut conn2 = conn(vec![Pending::default()], &queued).await;
        let (seen, out) = relayed(&mut conn2, Rerun::IfFatal);
        assert!(!seen.misrouted);
        assert_eq!(out, queued.concat());
    }

    #[tokio::test]
    async fn an_incomplete_preamble_waits_and_a_fatal_stops_the_relay() {
        let mut waiting = conn(vec![Pending::default()], &[msg(b'1', b"")]).await;
        let (seen, out) = relayed(&mut waiting, Rerun::IfFatal);
        assert!(out.is_empty() && !seen.fatal_before_rerunnable);
        let fatal = error(
            "FATAL",
            "57P01",
            "terminating connection due to administrator command",
        );
        let mut dying = conn(vec![Pending::default()], &[msg(b'1', b""), fatal]).await;
        let (seen, out) = relayed(&mut dying, Rerun::IfFatal);
        assert!(seen.fatal_before_rerunnable && out.is_empty());
    }

    #[tokio::test]
    async fn a_message_split_across_reads_passes_through_whole() {
        let big = msg(b'D', &[7; 100]);
        let (head, tail) = big.split_at(40);
        let mut conn = conn(vec![Pending::default()], &[head.to_vec()]).await;
        let (_, first) = relayed(&mut conn, Rerun::No);
        assert_eq!(first, head, "the start of a row passes at once");
        assert_eq!(conn.body_remaining, big.len() - head.len());
        conn.inbuf.extend_from_slice(tail);
        conn.inbuf.extend_from_slice(&ready(b'I'));
        let (seen, rest) = relayed(&mut conn, Rerun::No);
        assert_eq!([first, rest].concat(), [big, ready(b'I')].concat());
        assert_eq!(seen.units_done, 1);
    }

    #[tokio::test]
    async fn while_nothing_is_owed_notifications_pass_and_anything_else_is_unsolicited() {
        let notify = msg(b'A', b"\0\0\0\x01chan\0payload\0");
        let mut conn = conn(Vec::new(), &[notify.clone(), row()]).await;
        let (seen, out) = relayed(&mut conn, Rerun::No);
        assert_eq!(out, notify);
        assert_eq!(seen.unsolicited, Some(b'D'));
    }

    #[tokio::test]
    async fn default_transaction_read_only_is_followed_from_parameter_status() {
        let status = msg(b'S', b"default_transaction_read_only\0on\0");
        let mut conn = conn(vec![Pending::default()], &[status.clone(), ready(b'I')]).await;
        let (seen, out) = relayed(&mut conn, Rerun::No);
        assert_eq!(seen.default_read_only, Some(true));
        assert_eq!(out, [status, ready(b'I')].concat());
    }
}
