//! Choosing the writer (`[routing] follow_primary`): a pure step from the last election and
//! what the monitor last found about every node to the next election, run after every
//! sample. See docs/failover-design.md §3 for the table the tests below follow.
//!
//! Guards against flapping, and why a write cannot reach a read-only or stale node:
//! - a failed sample never changes a role (a node's last answer stands);
//! - evidence against the writer (in recovery, a newer timeline elsewhere, two primaries)
//!   acts on one sample, since refusing writes is the safe direction; evidence for a new
//!   writer needs `writer_confirmations` samples in a row;
//! - `high_water`, the highest timeline ever seen, never decreases, and the writer must be on
//!   it: the writer only moves forward in timeline.

use std::collections::BTreeSet;

/// What the writer pointer says about writes now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum WriterState {
    /// The writer takes writes.
    #[default]
    Serving = 0,
    /// The writer's last sample failed: writes fail at once.
    Down = 1,
    /// No node is out of recovery (the writer is a standby): writes fail as read-only.
    ReadOnly = 2,
    /// A node on a newer timeline must agree `writer_confirmations` times first: writes wait.
    Confirming = 3,
    /// Two promotable nodes are out of recovery on the highest timeline: no writes.
    Conflict = 4,
    /// A node that may not be the writer is out of recovery on the highest timeline.
    NoCandidate = 5,
    /// The writer is out of recovery on a timeline older than another node's.
    Fenced = 6,
}

impl WriterState {
    /// By discriminant.
    pub const ALL: [WriterState; 7] = [
        WriterState::Serving,
        WriterState::Down,
        WriterState::ReadOnly,
        WriterState::Confirming,
        WriterState::Conflict,
        WriterState::NoCandidate,
        WriterState::Fenced,
    ];

    /// As `/status`, `SHOW BACKENDS` and the logs name it.
    pub fn as_str(self) -> &'static str {
        match self {
            WriterState::Serving => "serving",
            WriterState::Down => "down",
            WriterState::ReadOnly => "read_only",
            WriterState::Confirming => "confirming",
            WriterState::Conflict => "conflict",
            WriterState::NoCandidate => "no_candidate",
            WriterState::Fenced => "fenced",
        }
    }
}

/// What the monitor last found about one node, as the election reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NodeView {
    /// Its last sample succeeded.
    pub up: bool,
    pub in_recovery: bool,
    /// 0: unknown (a standby's, when the login may not read it).
    pub timeline: u32,
    /// 0: unknown.
    pub sysid: u64,
    /// Samples in a row out of recovery.
    pub streak: u32,
    /// May be chosen as the writer.
    pub promotable: bool,
    /// Sampled at least once, successfully or not: until every node is, the first round
    /// is not over.
    pub known: bool,
}

impl NodeView {
    fn out_of_recovery(&self) -> bool {
        self.up && !self.in_recovery
    }
}

/// The outcome of the last step: who writes, in what state, and which nodes are fenced.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Election {
    /// The writer, or the last one while none serves (`state` says); None after a conflict,
    /// until a writer is confirmed.
    pub writer: Option<usize>,
    /// The writer's timeline when it was chosen or last seen.
    pub timeline: u32,
    pub state: WriterState,
    /// Counts the writers chosen: sessions compare it to know the writer moved.
    pub epoch: u64,
    /// The highest timeline ever seen on this cluster's nodes.
    pub high_water: u32,
    /// The cluster's system identifier, from the first writer that showed one.
    pub sysid: u64,
    /// Nodes out of recovery on a timeline older than `high_water`: no reads, no writes.
    pub fenced: BTreeSet<usize>,
    /// While `Confirming`: the node that would be the writer; while `Conflict`: the two.
    pub candidates: Vec<usize>,
    /// A writer was chosen from what the servers said (until then the first node is
    /// assumed, and the first node out of recovery is taken without confirmation).
    pub established: bool,
}

impl Election {
    /// Before any sample: the first node is assumed to be the writer, as without
    /// `follow_primary`, but confirming: writes wait until every node has answered once.
    pub fn assumed() -> Election {
        Election {
            writer: Some(0),
            state: WriterState::Confirming,
            candidates: vec![0],
            ..Election::default()
        }
    }

    /// Whether `node` has another system identifier than the cluster's.
    pub fn is_foreign(&self, node: &NodeView) -> bool {
        self.sysid != 0 && node.sysid != 0 && node.sysid != self.sysid
    }
}

/// The next election after a sample; `confirmations` is `[routing] writer_confirmations`.
pub fn elect(prev: &Election, nodes: &[NodeView], confirmations: u32) -> Election {
    let mut next = prev.clone();
    next.candidates.clear();
    let ours = |i: &usize| !prev.is_foreign(&nodes[*i]);
    let up: Vec<usize> = (0..nodes.len())
        .filter(|&i| nodes[i].up)
        .filter(ours)
        .collect();
    next.high_water = up
        .iter()
        .map(|&i| nodes[i].timeline)
        .fold(prev.high_water, u32::max);
    let high_water = next.high_water;
    for &i in &up {
        let node = &nodes[i];
        if !node.in_recovery && node.timeline < high_water {
            next.fenced.insert(i);
        } else {
            // In recovery (rejoined), or promoted onto the highest timeline.
            next.fenced.remove(&i);
        }
    }
    let on_top: Vec<usize> = up
        .iter()
        .copied()
        .filter(|&i| nodes[i].out_of_recovery() && nodes[i].timeline == high_water)
        .collect();
    let (promotable, others): (Vec<usize>, Vec<usize>) =
        on_top.iter().partition(|&&i| nodes[i].promotable);
    if !others.is_empty() {
        next.state = WriterState::NoCandidate;
        return next;
    }
    match promotable[..] {
        [_, _, ..] => {
            // Neither is the writer any more: the one left must be confirmed anew.
            next.writer = None;
            next.state = WriterState::Conflict;
            next.candidates = promotable[..2].to_vec();
        }
        [only] if Some(only) == prev.writer => {
            next.state = WriterState::Serving;
            next.timeline = nodes[only].timeline;
        }
        [only] if !prev.established || nodes[only].streak >= confirmations => {
            next.writer = Some(only);
            next.timeline = nodes[only].timeline;
            next.state = WriterState::Serving;
            next.epoch += 1;
        }
        [only] => {
            next.state = WriterState::Confirming;
            next.candidates = vec![only];
        }
        [] => next.state = without_candidate(prev, nodes, high_water),
    }
    let first_round = !prev.established && !nodes.iter().all(|node| node.known);
    if first_round
        && matches!(
            next.state,
            WriterState::Serving | WriterState::Down | WriterState::ReadOnly
        )
    {
        // A node not heard from yet may be the primary on a newer timeline: writes wait
        // for the round to end rather than reach one that would be fenced after it.
        next.state = WriterState::Confirming;
        next.candidates = next.writer.into_iter().collect();
        return next;
    }
    if let (WriterState::Serving, Some(writer)) = (next.state, next.writer) {
        // The first round takes the node out of recovery on the highest timeline of all
        // it sampled; a node answering later could show a newer one.
        next.established = true;
        if next.sysid == 0 {
            next.sysid = nodes[writer].sysid;
        }
    }
    next
}

/// The writer's state when no node is out of recovery on the highest timeline.
fn without_candidate(prev: &Election, nodes: &[NodeView], high_water: u32) -> WriterState {
    let Some(writer) = prev.writer.map(|w| &nodes[w]) else {
        return WriterState::Down;
    };
    if !writer.up {
        // Its last answer stands, but it cannot take a write now.
        WriterState::Down
    } else if writer.in_recovery {
        WriterState::ReadOnly
    } else if writer.timeline < high_water {
        WriterState::Fenced
    } else {
        // Out of recovery on the highest timeline, but foreign to the cluster.
        WriterState::NoCandidate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const N: u32 = 3;

    /// A node up and out of recovery on `timeline`, sampled so `streak` times in a row.
    fn primary(timeline: u32, streak: u32) -> NodeView {
        NodeView {
            up: true,
            in_recovery: false,
            timeline,
            sysid: 7,
            streak,
            promotable: true,
            known: true,
        }
    }

    fn standby(timeline: u32) -> NodeView {
        NodeView {
            in_recovery: true,
            streak: 0,
            ..primary(timeline, 0)
        }
    }

    fn down(last: NodeView) -> NodeView {
        NodeView {
            up: false,
            streak: 0,
            ..last
        }
    }

    fn fixed(node: NodeView) -> NodeView {
        NodeView {
            promotable: false,
            ..node
        }
    }

    fn foreign(node: NodeView) -> NodeView {
        NodeView { sysid: 8, ..node }
    }

    /// db01 the writer on timeline 1, established.
    fn serving(writer: usize, timeline: u32, epoch: u64) -> Election {
        Election {
            writer: Some(writer),
            timeline,
            state: WriterState::Serving,
            epoch,
            high_water: timeline,
            sysid: 7,
            fenced: BTreeSet::new(),
            candidates: Vec::new(),
            established: true,
        }
    }

    /// What one step must come to: (writer, state, epoch, high_water, fenced, candidates).
    type Outcome = (
        Option<usize>,
        WriterState,
        u64,
        u32,
        &'static [usize],
        &'static [usize],
    );

    fn outcome(e: &Election) -> (Option<usize>, WriterState, u64, u32, Vec<usize>, Vec<usize>) {
        (
            e.writer,
            e.state,
            e.epoch,
            e.high_water,
            e.fenced.iter().copied().collect(),
            e.candidates.clone(),
        )
    }

    #[test]
    fn the_table_of_the_design() {
        use WriterState::*;
        let fenced_1 = || Election {
            fenced: [0].into(),
            high_water: 2,
            ..serving(1, 2, 2)
        };
        // (row, before, samples, after)
        let cases: Vec<(&str, Election, Vec<NodeView>, Outcome)> = vec![
            (
                "1: the writer out of recovery on high_water, nothing else",
                serving(0, 1, 1),
                vec![primary(1, 9), standby(1)],
                (Some(0), Serving, 1, 1, &[], &[]),
            ),
            (
                "2: the writer's sample fails, no other candidate",
                serving(0, 1, 1),
                vec![down(primary(1, 9)), standby(1)],
                (Some(0), Down, 1, 1, &[], &[]),
            ),
            (
                "2: and comes back",
                Election {
                    state: Down,
                    ..serving(0, 1, 1)
                },
                vec![primary(1, 1), standby(1)],
                (Some(0), Serving, 1, 1, &[], &[]),
            ),
            (
                "3: the writer in recovery, nothing out of recovery",
                serving(0, 1, 1),
                vec![standby(1), standby(1)],
                (Some(0), ReadOnly, 1, 1, &[], &[]),
            ),
            (
                "4: a promotable node out of recovery on a newer timeline, first seen",
                serving(0, 1, 1),
                vec![primary(1, 9), primary(2, 1)],
                (Some(0), Confirming, 1, 2, &[0], &[1]),
            ),
            (
                "4: the writer down meanwhile: still confirming",
                serving(0, 1, 1),
                vec![down(primary(1, 9)), primary(2, 2)],
                (Some(0), Confirming, 1, 2, &[], &[1]),
            ),
            (
                "5: its streak reaches writer_confirmations",
                serving(0, 1, 1),
                vec![primary(1, 9), primary(2, N)],
                (Some(1), Serving, 2, 2, &[0], &[]),
            ),
            (
                "5: also with the old writer down (not fenced: no sample says where it is)",
                serving(0, 1, 1),
                vec![down(primary(1, 9)), primary(2, N)],
                (Some(1), Serving, 2, 2, &[], &[]),
            ),
            (
                "6: an old primary back on an older timeline, the writer serving",
                serving(1, 2, 2),
                vec![primary(1, 1), primary(2, 9)],
                (Some(1), Serving, 2, 2, &[0], &[]),
            ),
            (
                "6: even if it is the only one reachable",
                serving(1, 2, 2),
                vec![primary(1, 1), down(primary(2, 9))],
                (Some(1), Down, 2, 2, &[0], &[]),
            ),
            (
                "6: a standby's restartpoint on a newer timeline fences the writer",
                serving(0, 1, 1),
                vec![primary(1, 9), standby(2)],
                (Some(0), Fenced, 1, 2, &[0], &[]),
            ),
            (
                "7: two promotable nodes out of recovery on the highest timeline",
                serving(1, 2, 2),
                vec![standby(2), primary(2, 9), primary(2, 1)],
                (None, Conflict, 2, 2, &[], &[1, 2]),
            ),
            (
                "7: one of them gone, the other confirmed anew",
                Election {
                    state: Conflict,
                    writer: None,
                    candidates: vec![1, 2],
                    ..serving(1, 2, 2)
                },
                vec![standby(2), primary(2, N), down(primary(2, 1))],
                (Some(1), Serving, 3, 2, &[], &[]),
            ),
            (
                "8: a node that may not be the writer out of recovery on the highest timeline",
                serving(0, 1, 1),
                vec![primary(1, 9), fixed(primary(2, 9))],
                (Some(0), NoCandidate, 1, 2, &[0], &[]),
            ),
            (
                "8: a foreign node out of recovery counts for nothing",
                serving(0, 1, 1),
                vec![primary(1, 9), foreign(primary(5, 9))],
                (Some(0), Serving, 1, 1, &[], &[]),
            ),
            (
                "9: first round: the one node out of recovery, no confirmation",
                Election::assumed(),
                vec![standby(2), primary(2, 1)],
                (Some(1), Serving, 1, 2, &[], &[]),
            ),
            (
                "9: first round: the first node out of recovery stays the writer",
                Election::assumed(),
                vec![primary(1, 1), standby(1)],
                (Some(0), Serving, 0, 1, &[], &[]),
            ),
            (
                "9: first round: an old primary is fenced at once",
                Election::assumed(),
                vec![primary(1, 1), primary(2, 1)],
                (Some(1), Serving, 1, 2, &[0], &[]),
            ),
            (
                "9: first round, nothing out of recovery: the first node, down",
                Election::assumed(),
                vec![standby(1), standby(1)],
                (Some(0), ReadOnly, 0, 1, &[], &[]),
            ),
            (
                "9: first round, nothing reachable",
                Election::assumed(),
                vec![down(standby(0)), down(standby(0))],
                (Some(0), Down, 0, 0, &[], &[]),
            ),
            (
                "10: a fenced node seen in recovery (rejoined)",
                fenced_1(),
                vec![standby(2), primary(2, 9)],
                (Some(1), Serving, 2, 2, &[], &[]),
            ),
            (
                "10: a fenced node down stays fenced",
                fenced_1(),
                vec![down(primary(1, 9)), primary(2, 9)],
                (Some(1), Serving, 2, 2, &[0], &[]),
            ),
            (
                "10: a fenced node promoted onto a newer timeline is a candidate, not fenced",
                fenced_1(),
                vec![primary(3, 1), standby(2)],
                (Some(1), Confirming, 2, 3, &[], &[0]),
            ),
            (
                "c: high_water never decreases, so an older writer never comes back",
                serving(1, 2, 2),
                vec![primary(1, N), down(primary(2, 9))],
                (Some(1), Down, 2, 2, &[0], &[]),
            ),
        ];
        for (row, before, nodes, (writer, state, epoch, high_water, fenced, candidates)) in cases {
            let after = elect(&before, &nodes, N);
            assert_eq!(
                outcome(&after),
                (
                    writer,
                    state,
                    epoch,
                    high_water,
                    fenced.to_vec(),
                    candidates.to_vec()
                ),
                "row {row}"
            );
        }
    }

    #[test]
    fn the_first_round_lasts_until_every_node_answered_once() {
        let unknown = NodeView::default();
        let e = elect(&Election::assumed(), &[primary(1, 1), unknown], N);
        assert_eq!(
            (e.writer, e.state, e.established),
            (Some(0), WriterState::Confirming, false),
            "writes wait: the node not heard from may be the primary on a newer timeline"
        );
        let late = elect(&e, &[down(primary(1, 1)), unknown], N);
        assert_eq!(late.state, WriterState::Confirming, "not down yet either");
        let e = elect(&e, &[primary(1, 1), unknown], N);
        assert_eq!(e.state, WriterState::Confirming);
        let e = elect(&e, &[primary(1, 1), primary(2, 1)], N);
        assert_eq!(
            (e.writer, e.state, e.epoch, e.established),
            (Some(1), WriterState::Serving, 1, true),
            "no confirmation in the first round"
        );
        assert_eq!(e.fenced, [0].into());
    }

    #[test]
    fn once_a_writer_is_known_a_new_one_needs_confirmations() {
        let e = elect(&Election::assumed(), &[primary(1, 1), standby(1)], N);
        assert!(e.established);
        assert_eq!(e.sysid, 7);
        let e = elect(&e, &[primary(1, 2), primary(2, 1)], N);
        assert_eq!((e.state, e.writer), (WriterState::Confirming, Some(0)));
    }

    #[test]
    fn a_new_writer_needs_confirmations_in_a_row() {
        let mut e = serving(0, 1, 1);
        for streak in 1..N {
            e = elect(&e, &[primary(1, 9), primary(2, streak)], N);
            assert_eq!((e.state, e.writer), (WriterState::Confirming, Some(0)));
        }
        // A failed sample breaks the streak (the monitor starts it again from zero).
        e = elect(&e, &[primary(1, 9), down(primary(2, 0))], N);
        assert_eq!(
            e.state,
            WriterState::Fenced,
            "the old writer, the new one unseen"
        );
        e = elect(&e, &[primary(1, 9), primary(2, 1)], N);
        assert_eq!(e.state, WriterState::Confirming);
        e = elect(&e, &[primary(1, 9), primary(2, N)], N);
        assert_eq!(
            (e.state, e.writer, e.epoch),
            (WriterState::Serving, Some(1), 2)
        );
    }
}
