//! What a change of election tells operators: one log line per transition (WARN `writer
//! changed`, ERROR `backend fenced`, ERROR `two primaries`) and the writer change counter.

use std::sync::Arc;

use metrics::counter;

use super::elect::{Election, WriterState};
use crate::telemetry::names;

/// Logs and counts what changed from `before` to `after`; `name` gives a node's name.
pub fn transition(before: &Election, after: &Election, name: &dyn Fn(usize) -> Arc<str>) {
    let named = |node: Option<usize>| node.map_or_else(|| "none".into(), name);
    if after.epoch != before.epoch {
        counter!(names::WRITER_CHANGES).increment(1);
        tracing::warn!(
            from = %named(before.writer),
            to = %named(after.writer),
            from_timeline = before.timeline,
            to_timeline = after.timeline,
            epoch = after.epoch,
            "writer changed"
        );
    }
    for &node in after.fenced.difference(&before.fenced) {
        tracing::error!(
            backend = %name(node),
            high_water = after.high_water,
            "backend fenced: out of recovery on an older timeline than another node's; it gets no reads and no writes until it runs as a standby (run `pgrepl-proxy rejoin {}`)",
            name(node)
        );
    }
    for &node in before.fenced.difference(&after.fenced) {
        tracing::info!(backend = %name(node), "backend no longer fenced: it runs as a standby");
    }
    if after.state != before.state {
        match (after.state, &after.candidates[..]) {
            (WriterState::Conflict, [a, b, ..]) => tracing::error!(
                first = %name(*a),
                second = %name(*b),
                timeline = after.high_water,
                "two primaries: both out of recovery on the highest timeline; no writes until one is gone"
            ),
            (WriterState::Confirming, [candidate, ..]) => tracing::info!(
                candidate = %name(*candidate),
                timeline = after.high_water,
                "a new writer is being confirmed: writes wait"
            ),
            (WriterState::Serving, _) => {}
            (state, _) => tracing::warn!(
                writer = %named(after.writer),
                state = state.as_str(),
                "the writer takes no writes"
            ),
        }
    }
}
