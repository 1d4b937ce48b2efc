//! Server-to-client forwarding. Messages pass through as raw bytes in runs; only the few the
//! proxy must act on are looked at: ReadyForQuery (transaction status), ParseComplete and
//! CloseComplete (matched to the Parse and Close messages of the batch: those answering the
//! proxy's own injected messages are swallowed), and anything a
//! backend says while it owes no response (only notifications, notices and parameter
//! changes are passed on then).

use bytes::{Buf, Bytes, BytesMut};

use crate::backend::{BackendConn, ParseOrigin};
use crate::protocol::peek_header;

/// What the relay saw that the session must act on.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Relayed {
    /// Status bytes of the ReadyForQuery messages forwarded, in order; the last one counts.
    pub last_status: Option<u8>,
    /// The backend sent something it had no reason to send (usually a FATAL before closing).
    pub unsolicited: Option<u8>,
    /// The client's statements whose Parse the server rejected (name, generation).
    pub failed_parses: Vec<(Bytes, u64)>,
    /// COPY FROM STDIN started in a Sync-ended batch: the server ignored that Sync, so the
    /// client's next Sync (after CopyDone/CopyFail) completes the batch instead.
    pub copy_ate_sync: bool,
    /// Units (Syncs, simple queries) answered to the end.
    pub units_done: usize,
    /// Something of the unit still open was forwarded: it can no longer be re-run elsewhere.
    pub open_unit_answered: bool,
}

/// Forwards every complete message (and the start of a partial one) from `conn.inbuf` to `out`.
pub fn relay(conn: &mut BackendConn, out: &mut BytesMut) -> Relayed {
    let mut seen = Relayed::default();
    // Where the open unit's answer starts in `out`: after the last ReadyForQuery.
    let mut open_unit_from = out.len();
    loop {
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
        match ty {
            b'Z' => {
                if let Some(done) = conn.syncs.pop_front() {
                    let unanswered = done.parses.into_iter().skip(done.parses_done);
                    seen.failed_parses
                        .extend(unanswered.filter_map(|origin| match origin {
                            ParseOrigin::Client { name, generation } => Some((name, generation)),
                            _ => None,
                        }));
                }
                seen.last_status = conn.inbuf.get(5).copied();
                seen.units_done += 1;
                out.extend_from_slice(&conn.inbuf[..total]);
                open_unit_from = out.len();
            }
            b'1' => {
                if let Some(front) = conn.syncs.front_mut() {
                    let origin = front.parses.get(front.parses_done);
                    if !matches!(origin, Some(ParseOrigin::Proxy)) {
                        out.extend_from_slice(&conn.inbuf[..total]);
                    }
                    front.parses_done += 1;
                }
            }
            b'G' => {
                if let Some(front) = conn.syncs.front_mut() {
                    front.synced_batch = false;
                    seen.copy_ate_sync = true;
                }
                out.extend_from_slice(&conn.inbuf[..total]);
            }
            b'3' => {
                if let Some(front) = conn.syncs.front_mut() {
                    if front.closes.get(front.closes_done) != Some(&true) {
                        out.extend_from_slice(&conn.inbuf[..total]);
                    }
                    front.closes_done += 1;
                }
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

/// True for a message the relay must handle itself rather than pass through.
#[inline]
fn needs_attention(conn: &BackendConn, ty: u8) -> bool {
    match conn.syncs.front() {
        None => !matches!(ty, b'A' | b'N' | b'S'),
        Some(front) => match ty {
            b'Z' => true,
            b'1' => !front.parses.is_empty(),
            b'3' => !front.closes.is_empty(),
            b'G' => front.synced_batch,
            _ => false,
        },
    }
}
