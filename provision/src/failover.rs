//! `switchover`, `failover` and `rejoin` (design §8) over any [`Runtime`]: the planned change
//! of primary that loses nothing, the promotion of the most advanced replica when the primary
//! is dead, and a former primary turned into a replica of the new one with pg_rewind (or a
//! new base backup when rewinding cannot work). Each step checks its state first and prints
//! `[n/M] ... done in X s` or `already done`, as `provision` does, so a rerun changes nothing
//! and a run cut short resumes; each command ends with the tutorial's check on every node.

use std::cmp::Reverse;
use std::io::Write;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::conninfo;
use crate::psql::{sql, wait_until};
use crate::runtime::{NodeFile, NodeId, NodeState, Runtime};
use crate::steps::{base_backup_script, progress_line, set_reloadable, Outcome};
use crate::text::{last_lines, quote};
use crate::topology::{list, Topology};
use crate::tutorial::conf::{set_settings, unset_settings};
use crate::tutorial::slot_name;
use crate::verify;

/// How long a standby may take to stream again, and the target of a switchover to replay
/// the old primary's last checkpoint.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(30);
/// What `pg_promote` may wait for the promotion to finish, in seconds.
const PROMOTE_WAIT_SECS: u32 = 60;
/// The setting that fences an old primary: sessions that bypass the proxy cannot write.
const FENCE: &str = "default_transaction_read_only";

/// A WAL position, from PostgreSQL's `X/Y` text form, ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Lsn(u64);

impl Lsn {
    /// `16/B374D848`; `None` for anything else (an empty answer is a NULL position).
    pub fn parse(text: &str) -> Option<Lsn> {
        let (high, low) = text.trim().split_once('/')?;
        let high = u64::from_str_radix(high, 16).ok()?;
        let low = u64::from_str_radix(low, 16).ok()?;
        (high <= u64::from(u32::MAX) && low <= u64::from(u32::MAX)).then_some(Lsn(high << 32 | low))
    }
}

/// What one node is now, as the commands decide from it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct View {
    node: NodeId,
    state: NodeState,
    /// `pg_is_in_recovery()`, when it runs.
    in_recovery: Option<bool>,
    /// The node its `primary_conninfo` names, when it is a running standby.
    follows: Option<NodeId>,
    /// `pg_last_wal_receive_lsn()` (what it has flushed from its primary) and
    /// `pg_last_wal_replay_lsn()`, when it is a running standby.
    received: Option<Lsn>,
    replayed: Option<Lsn>,
}

impl View {
    fn is_primary(&self) -> bool {
        self.in_recovery == Some(false)
    }

    fn is_standby(&self) -> bool {
        self.in_recovery == Some(true)
    }
}

/// Every node that exists, as it is now.
async fn views<R: Runtime>(rt: &R) -> Result<Vec<View>> {
    let nodes = rt.nodes().await?;
    let mut views = Vec::new();
    for &node in &nodes {
        views.push(view(rt, node, &nodes).await?);
    }
    Ok(views)
}

async fn view<R: Runtime>(rt: &R, node: NodeId, nodes: &[NodeId]) -> Result<View> {
    let state = rt.state(node).await?;
    let mut view = View {
        node,
        state,
        in_recovery: None,
        follows: None,
        received: None,
        replayed: None,
    };
    if state != NodeState::Running {
        return Ok(view);
    }
    let row = sql(
        rt,
        node,
        "SELECT pg_is_in_recovery(), coalesce(pg_last_wal_receive_lsn()::text, ''), \
         coalesce(pg_last_wal_replay_lsn()::text, ''), current_setting('primary_conninfo')",
    )
    .await?;
    let fields: Vec<&str> = row.splitn(4, '|').collect();
    let [recovery, received, replayed, primary_conninfo] = fields[..] else {
        bail!("{node} answered {row:?} about its recovery");
    };
    view.in_recovery = Some(recovery == "t");
    if recovery == "t" {
        view.received = Lsn::parse(received);
        view.replayed = Lsn::parse(replayed);
        view.follows = followed(rt, primary_conninfo, nodes);
    }
    Ok(view)
}

/// The node whose address a standby's `primary_conninfo` names.
fn followed<R: Runtime>(rt: &R, primary_conninfo: &str, nodes: &[NodeId]) -> Option<NodeId> {
    let host = conninfo::value(primary_conninfo, "host")?;
    let port: u16 =
        conninfo::value(primary_conninfo, "port").map_or(Some(5432), |p| p.parse().ok())?;
    nodes.iter().copied().find(|&n| {
        let peer = rt.peer_endpoint(n);
        peer.host == host && peer.port == port
    })
}

/// The one running node out of recovery; an error naming them when there are several.
fn sole_primary(views: &[View]) -> Result<Option<NodeId>> {
    let primaries: Vec<NodeId> = views
        .iter()
        .filter(|v| v.is_primary())
        .map(|v| v.node)
        .collect();
    match primaries[..] {
        [] => Ok(None),
        [primary] => Ok(Some(primary)),
        _ => bail!(
            "{} are all out of recovery: stop the one that must not take writes first",
            list(&primaries)
        ),
    }
}

fn find(views: &[View], node: NodeId) -> Result<&View> {
    views
        .iter()
        .find(|v| v.node == node)
        .with_context(|| format!("{node} does not exist"))
}

/// The order in which a failover prefers replicas: the most WAL received from the old
/// primary (flushed there, so under `--sync` it holds every acknowledged commit), then the
/// most replayed, then the lowest name.
fn most_advanced(candidates: &[&View]) -> Option<NodeId> {
    candidates
        .iter()
        .max_by_key(|v| (v.received.or(v.replayed), v.replayed, Reverse(v.node)))
        .map(|v| v.node)
}

/// Runs the numbered steps of one command: `[n/M] title ... outcome`.
struct Steps<'a> {
    progress: &'a mut (dyn Write + Send),
    total: usize,
    next: usize,
}

impl Steps<'_> {
    /// Runs the next step (a step with several lines, one per node, calls `line` again
    /// with `advance` false).
    async fn line(
        &mut self,
        advance: bool,
        title: &str,
        work: impl std::future::Future<Output = Result<Outcome>>,
    ) -> Result<()> {
        if advance {
            self.next += 1;
        }
        progress_line(self.progress, self.next, self.total, title, work)
            .await
            .with_context(|| format!("step {}/{} ({title}) failed", self.next, self.total))
    }

    async fn step(
        &mut self,
        title: &str,
        work: impl std::future::Future<Output = Result<Outcome>>,
    ) -> Result<()> {
        self.line(true, title, work).await
    }
}

fn done(note: impl Into<String>) -> Outcome {
    Outcome::Done(Some(note.into()))
}

/// What switchover needs from the proxy in front of the nodes (design §6 and §8, steps 2 and
/// 6): writes held while the primary changes, and released once the proxy writes to the new
/// one.
#[allow(async_fn_in_trait)]
pub trait WriteHold {
    /// Holds writes before the primary stops, `target` to be promoted; says what it did (or
    /// that there is nothing to hold them with). An error here stops the switchover before
    /// anything changes.
    async fn hold(&mut self, target: NodeId) -> Result<String>;
    /// Waits until the proxy writes to `writer`, then releases the hold.
    async fn release_to(&mut self, writer: NodeId) -> Result<String>;
    /// Releases the hold when the switchover changed nothing.
    async fn release(&mut self) -> Result<()>;
}

/// `--without-proxy`: nothing holds writes, and the tool says so.
pub struct WithoutProxy;

impl WriteHold for WithoutProxy {
    async fn hold(&mut self, _target: NodeId) -> Result<String> {
        Ok(
            "going on without a proxy (--without-proxy): writes are not held; \
            writes sent to the primary fail while it stops"
                .to_owned(),
        )
    }

    async fn release_to(&mut self, _writer: NodeId) -> Result<String> {
        Ok("going on without a proxy: nothing to release".to_owned())
    }

    async fn release(&mut self) -> Result<()> {
        Ok(())
    }
}

/// `pgrepl-proxy switchover [--to NAME]`: the primary P stops cleanly, the target T replays
/// all of P's WAL (its shutdown checkpoint included), T is promoted, P and the other replicas
/// follow T. Nothing committed is lost: P accepted nothing after its shutdown checkpoint, and
/// T is promoted only once it has replayed it.
pub async fn switchover<R: Runtime, H: WriteHold>(
    rt: &R,
    to: Option<NodeId>,
    hold: &mut H,
    progress: &mut (dyn Write + Send),
) -> Result<()> {
    let views = views(rt).await?;
    let primary =
        sole_primary(&views)?.context("no running node is out of recovery: use failover")?;
    let target = match to {
        Some(node) => node,
        None => most_advanced(
            &views
                .iter()
                .filter(|v| v.is_standby() && v.follows == Some(primary))
                .collect::<Vec<_>>(),
        )
        .context("no replica streams from the primary: nothing to switch over to")?,
    };
    let others: Vec<NodeId> = views
        .iter()
        .map(|v| v.node)
        .filter(|&n| n != target)
        .collect();
    let mut steps = Steps {
        progress,
        total: 9,
        next: 0,
    };
    if primary == target {
        // Switched over already; the remaining steps resume what may be left.
        for title in [
            format!("check: {target} is the primary"),
            "hold writes through the proxy".to_owned(),
            "stop the old primary cleanly".to_owned(),
            format!("wait until {target} has replayed the old primary's last checkpoint"),
            format!("promote {target} (pg_promote, CHECKPOINT)"),
            format!("release writes once the proxy writes to {target}"),
        ] {
            steps
                .step(&title, async { Ok(Outcome::AlreadyDone) })
                .await?;
        }
    } else {
        let t = find(&views, target)?;
        steps
            .step(
                &format!("check: {primary} is the primary and {target} streams from it"),
                check_switchover(rt, primary, t),
            )
            .await?;
        steps
            .step("hold writes through the proxy", async {
                hold.hold(target).await.map(done)
            })
            .await?;
        let mut last_checkpoint = None;
        steps
            .step(
                &format!("stop {primary} cleanly (its last checkpoint)"),
                async {
                    rt.stop(primary).await?;
                    let lsn = last_checkpoint_of(rt, primary).await?;
                    last_checkpoint = Some(lsn);
                    Ok(done(format!("last checkpoint {}", show(lsn))))
                },
            )
            .await?;
        let checkpoint = last_checkpoint.context("no checkpoint")?;
        let caught_up = steps
            .step(
                &format!("wait until {target} has replayed {primary}'s last checkpoint"),
                replayed_past(rt, target, checkpoint),
            )
            .await;
        if let Err(e) = caught_up {
            rt.start(primary).await?;
            hold.release().await?;
            return Err(e.context(format!(
                "nothing changed: {primary} runs as the primary again"
            )));
        }
        steps
            .step(
                &format!("promote {target} (pg_promote, CHECKPOINT)"),
                promote(rt, target),
            )
            .await?;
        steps
            .step(
                &format!("release writes once the proxy writes to {target}"),
                async { hold.release_to(target).await.map(done) },
            )
            .await?;
    }
    let topology = Topology {
        primary: target,
        replicas: others,
    };
    steps
        .step(
            &format!("slots on {target} for {}", topology.replica_list()),
            ensure_slots(rt, target, &topology.replicas),
        )
        .await?;
    follow_all(rt, &mut steps, &topology, true).await?;
    steps
        .step(&verify_title(&topology), verify_all(rt, &topology))
        .await
}

/// Step 1 of switchover: what must hold before anything stops.
async fn check_switchover<R: Runtime>(rt: &R, primary: NodeId, target: &View) -> Result<Outcome> {
    if !target.is_standby() || target.follows != Some(primary) {
        bail!("{} is not a running standby of {primary}", target.node);
    }
    verify::wait_streaming(rt, primary, target.node, CATCH_UP_TIMEOUT).await?;
    if sql(rt, primary, "SHOW wal_log_hints").await? != "on" {
        bail!("{primary} runs without wal_log_hints, so it could not be rewound: run `pgrepl-proxy provision` first");
    }
    Ok(Outcome::Done(None))
}

/// The stopped node's last checkpoint, from `pg_controldata`.
async fn last_checkpoint_of<R: Runtime>(rt: &R, node: NodeId) -> Result<Lsn> {
    let out = rt.run_offline(node, "pg_controldata \"$PGDATA\"").await?;
    if !out.success() {
        bail!("pg_controldata on {node} failed: {}", out.message());
    }
    out.stdout
        .lines()
        .find_map(|l| l.strip_prefix("Latest checkpoint location:"))
        .and_then(Lsn::parse)
        .with_context(|| format!("pg_controldata on {node} shows no checkpoint location"))
}

/// Step 4 of switchover: the target has replayed past `checkpoint` (the record itself, so
/// every commit before it too).
async fn replayed_past<R: Runtime>(rt: &R, target: NodeId, checkpoint: Lsn) -> Result<Outcome> {
    let what = format!("{target} to replay past {}", show(checkpoint));
    wait_until(&what, CATCH_UP_TIMEOUT, || async {
        let replayed = sql(rt, target, "SELECT pg_last_wal_replay_lsn()").await?;
        Ok(Lsn::parse(&replayed).is_some_and(|lsn| lsn > checkpoint))
    })
    .await?;
    Ok(Outcome::Done(None))
}

/// Promotes `node` and runs a checkpoint, so its control file shows the new timeline (what
/// pg_rewind reads); already done when it is out of recovery.
async fn promote<R: Runtime>(rt: &R, node: NodeId) -> Result<Outcome> {
    if sql(rt, node, "SELECT pg_is_in_recovery()").await? == "f" {
        return Ok(Outcome::AlreadyDone);
    }
    let promoted = sql(
        rt,
        node,
        &format!("SELECT pg_promote(true, {PROMOTE_WAIT_SECS})"),
    )
    .await?;
    if promoted != "t" {
        bail!("{node} did not finish promoting within {PROMOTE_WAIT_SECS} s");
    }
    sql(rt, node, "CHECKPOINT").await?;
    let timeline = sql(
        rt,
        node,
        "SELECT ('x' || substr(pg_walfile_name(pg_current_wal_insert_lsn()), 1, 8))::bit(32)::int",
    )
    .await?;
    Ok(done(format!("timeline {timeline}")))
}

/// A slot on `primary` for each of `replicas` that lacks one.
async fn ensure_slots<R: Runtime>(rt: &R, primary: NodeId, replicas: &[NodeId]) -> Result<Outcome> {
    let mut created = Vec::new();
    for &replica in replicas {
        let slot = slot_name(replica);
        let exists =
            format!("SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{slot}'");
        if sql(rt, primary, &exists).await? == "0" {
            sql(
                rt,
                primary,
                &format!("SELECT pg_create_physical_replication_slot('{slot}')"),
            )
            .await?;
            created.push(slot);
        }
    }
    Ok(match created.is_empty() {
        true => Outcome::AlreadyDone,
        false => done(format!("created {}", created.join(", "))),
    })
}

/// One line per replica: each follows the primary (see [`follow`]).
async fn follow_all<R: Runtime>(
    rt: &R,
    steps: &mut Steps<'_>,
    topology: &Topology,
    may_repoint: bool,
) -> Result<()> {
    let primary = topology.primary;
    for (i, &replica) in topology.replicas.iter().enumerate() {
        steps
            .line(
                i == 0,
                &format!("{replica} follows {primary}"),
                follow(rt, primary, replica, may_repoint),
            )
            .await?;
    }
    Ok(())
}

/// Makes `replica` a standby streaming from `primary` through its slot. A running standby
/// that has not gone past the new timeline's fork is re-pointed (ALTER SYSTEM +
/// reload, which restarts its walreceiver; `recovery_target_timeline = latest` follows the
/// new timeline). Anything else (a former primary, a stopped or diverged node) is stopped,
/// rewound with pg_rewind from the primary, or rebuilt by a base backup when rewinding fails
/// (the note says which and why), given its recovery settings, started, and must stream;
/// inactive slots it kept from being a primary are dropped, since a slot holds WAL on a
/// standby too.
async fn follow<R: Runtime>(
    rt: &R,
    primary: NodeId,
    replica: NodeId,
    may_repoint: bool,
) -> Result<Outcome> {
    let nodes = rt.nodes().await?;
    let now = view(rt, replica, &nodes).await?;
    if now.is_standby() && now.follows == Some(primary) && streams(rt, primary, replica).await? {
        return Ok(Outcome::AlreadyDone);
    }
    let wanted = conninfo::following(
        &rt.peer_endpoint(primary),
        replica,
        &rt.path(replica, NodeFile::Pgpass),
    );
    if may_repoint && now.is_standby() {
        set_reloadable(rt, replica, "primary_conninfo", &wanted).await?;
        set_reloadable(rt, replica, "primary_slot_name", &slot_name(replica)).await?;
        if verify::wait_streaming(rt, primary, replica, CATCH_UP_TIMEOUT)
            .await
            .is_ok()
        {
            return Ok(done("re-pointed"));
        }
    }
    if rt.state(replica).await? == NodeState::Running {
        rt.stop(replica).await?;
    }
    let how = rewind_or_rebuild(rt, primary, replica).await?;
    write_recovery_settings(rt, replica, &wanted).await?;
    rt.start(replica).await?;
    verify::wait_streaming(rt, primary, replica, CATCH_UP_TIMEOUT).await?;
    let dropped = sql(
        rt,
        replica,
        "SELECT count(pg_drop_replication_slot(slot_name)) FROM pg_replication_slots \
         WHERE NOT active",
    )
    .await?;
    let dropped = match dropped.as_str() {
        "0" => String::new(),
        n => format!("; dropped {n} stale slot(s)"),
    };
    Ok(done(format!("{how}{dropped}")))
}

/// Whether `replica` streams from `primary` through its slot.
async fn streams<R: Runtime>(rt: &R, primary: NodeId, replica: NodeId) -> Result<bool> {
    if rt.state(primary).await? != NodeState::Running {
        return Ok(false);
    }
    Ok(sql(rt, primary, &verify::streaming_sql(replica)).await? == "streaming")
}

/// pg_rewind of the stopped `replica` from `primary` (which runs crash recovery first when
/// the node was not shut down cleanly, PostgreSQL 13+); when it fails, a new base backup.
async fn rewind_or_rebuild<R: Runtime>(rt: &R, primary: NodeId, replica: NodeId) -> Result<String> {
    let source = conninfo::rewind_source(&rt.peer_endpoint(primary));
    // The node is stopped (it was stopped, or crashed). A crashed server's lock file stays,
    // naming its old pid; in a one-shot container that pid (1) is the shell running this
    // script, so the single-user crash recovery pg_rewind starts would take it for a live
    // postmaster and refuse. Nothing runs on this data directory: the lock file goes.
    let rewind = format!(
        "rm -f \"$PGDATA/postmaster.pid\" && \
         pg_rewind --target-pgdata=\"$PGDATA\" --source-server={} --progress",
        quote(&source)
    );
    let out = rt.run_offline(replica, &rewind).await?;
    let said = format!("{}\n{}", out.stdout, out.stderr);
    if out.success() {
        return Ok(match said.contains("no rewind required") {
            true => "pg_rewind: no rewind required".to_owned(),
            false => "rewound with pg_rewind".to_owned(),
        });
    }
    let why = last_lines(out.message(), 1);
    let peer = rt.peer_endpoint(primary);
    let backup = rt
        .run_offline(replica, &base_backup_script(&peer.host, peer.port, replica))
        .await?;
    if !backup.success() {
        bail!(
            "pg_rewind failed ({why}), and so did the base backup: {}",
            last_lines(backup.message(), 10)
        );
    }
    Ok(format!("new base backup, as pg_rewind failed: {why}"))
}

/// The stopped `replica`'s recovery settings: `primary_conninfo` and its slot in
/// `postgresql.auto.conf` (pg_rewind copied the primary's), no fence, and `standby.signal`.
async fn write_recovery_settings<R: Runtime>(
    rt: &R,
    replica: NodeId,
    conninfo: &str,
) -> Result<()> {
    let file = AUTO_CONF;
    let text = read_auto_conf(rt, replica).await?;
    let slot = slot_name(replica);
    let unfenced = unset_settings(&text, &[FENCE]);
    let edited = set_settings(
        &unfenced.text,
        &[
            ("primary_conninfo", &conninfo.replace('\'', "''")),
            ("primary_slot_name", &slot),
        ],
    );
    rt.write_file(replica, file, edited.text.as_bytes(), 0o600)
        .await?;
    rt.write_file(replica, NodeFile::Data("standby.signal"), b"", 0o600)
        .await
}

/// `pgrepl-proxy failover [--to NAME] [--force]`: the primary the standbys follow is dead;
/// the most advanced replica (or `to`) is promoted, the old primary fenced, and the other
/// replicas follow the new one. The old primary comes back only through `rejoin`.
pub async fn failover<R: Runtime>(
    rt: &R,
    to: Option<NodeId>,
    force: bool,
    progress: &mut (dyn Write + Send),
) -> Result<()> {
    let views = views(rt).await?;
    let primary = sole_primary(&views)?;
    let standbys: Vec<&View> = views.iter().filter(|v| v.is_standby()).collect();
    let followed: Vec<NodeId> = standbys.iter().filter_map(|v| v.follows).collect();
    let old = followed
        .first()
        .copied()
        .context("no running standby: there is nothing to promote")?;
    let mut steps = Steps {
        progress,
        total: 7,
        next: 0,
    };
    let settled =
        primary == Some(old) && to.is_none_or(|t| t == old) && followed.iter().all(|&f| f == old);
    if settled {
        // The primary the standbys follow answers: there is nothing to fail over (a rerun
        // after a failover ends here too).
        for title in [
            format!("check: the primary {old} the standbys follow is down"),
            "choose the new primary".to_owned(),
            "fence the old primary".to_owned(),
            format!("promote {old}"),
        ] {
            steps
                .step(&title, async { Ok(Outcome::AlreadyDone) })
                .await?;
        }
        return finish_failover(rt, &mut steps, old, &views).await;
    }
    steps
        .step(
            &format!("check: the primary {old} the standbys follow is down"),
            async {
                match primary {
                    Some(p) if p == old && !force => bail!(
                        "{old} answers as the primary: use `pgrepl-proxy switchover`, or --force"
                    ),
                    Some(p) if p != old => {
                        bail!("{p} is out of recovery but the standbys follow {old}")
                    }
                    _ => Ok(Outcome::Done(None)),
                }
            },
        )
        .await?;
    let mut chosen = None;
    steps
        .step("choose the new primary", async {
            let (target, note) = choose(&views, &standbys, old, to, force, rt).await?;
            chosen = Some(target);
            Ok(done(note))
        })
        .await?;
    let target = chosen.context("no target")?;
    steps
        .step(&format!("fence the old primary {old}"), fence(rt, old))
        .await?;
    steps
        .step(
            &format!("promote {target} (pg_promote, CHECKPOINT)"),
            promote(rt, target),
        )
        .await?;
    finish_failover(rt, &mut steps, target, &views).await
}

/// Step 2 of failover: `to`, or the most advanced running replica; under synchronous
/// replication every replica must be reachable, since only the most advanced of all is sure
/// to hold every acknowledged commit.
async fn choose<R: Runtime>(
    views: &[View],
    standbys: &[&View],
    old: NodeId,
    to: Option<NodeId>,
    force: bool,
    rt: &R,
) -> Result<(NodeId, String)> {
    let best = most_advanced(standbys).context("no running standby")?;
    let unreachable: Vec<NodeId> = views
        .iter()
        .filter(|v| v.node != old && !v.is_standby())
        .map(|v| v.node)
        .collect();
    let sync = !sql(rt, best, "SHOW synchronous_standby_names")
        .await?
        .is_empty();
    if sync && !unreachable.is_empty() && !force {
        bail!(
            "synchronous replication is on and {} cannot be asked how far it got: it may hold \
             acknowledged commits the others lack. Start it, or --force",
            list(&unreachable)
        );
    }
    let target = to.unwrap_or(best);
    let t = find(views, target)?;
    if !t.is_standby() {
        bail!("{target} is not a running standby");
    }
    let position = |v: &View| v.received.or(v.replayed);
    if target != best && position(t) < position(find(views, best)?) && !force {
        bail!("{target} is behind {best}: it would lose what only {best} has; --force to choose it anyway");
    }
    let shown = position(t).map_or("-".to_owned(), show);
    Ok((target, format!("{target}, received up to {shown}")))
}

/// Step 3 of failover: an old primary still running is stopped at once, and its
/// `postgresql.auto.conf` gets `default_transaction_read_only = on`, so even clients that
/// bypass the proxy cannot write there if it is started again. No `standby.signal`: a
/// diverged node in recovery could look caught up; out of recovery on an old timeline is
/// what the proxy fences.
async fn fence<R: Runtime>(rt: &R, old: NodeId) -> Result<Outcome> {
    let state = rt.state(old).await?;
    if state == NodeState::Missing {
        return Ok(done(format!(
            "{old} cannot be reached: the proxy fences it by timeline when it returns"
        )));
    }
    let mut notes = Vec::new();
    if state == NodeState::Running {
        rt.stop_immediate(old).await?;
        notes.push("stopped at once");
    }
    let file = AUTO_CONF;
    let text = read_auto_conf(rt, old).await?;
    let edited = set_settings(&text, &[(FENCE, "on")]);
    if !edited.changed.is_empty() {
        rt.write_file(old, file, edited.text.as_bytes(), 0o600)
            .await?;
        notes.push("read-only if started: run `pgrepl-proxy rejoin` to bring it back");
    }
    Ok(match notes.is_empty() {
        true => Outcome::AlreadyDone,
        false => done(notes.join("; ")),
    })
}

/// Failover's last steps: slots, the other running standbys follow, verify.
async fn finish_failover<R: Runtime>(
    rt: &R,
    steps: &mut Steps<'_>,
    primary: NodeId,
    views: &[View],
) -> Result<()> {
    let replicas: Vec<NodeId> = views
        .iter()
        .filter(|v| v.node != primary && v.is_standby())
        .map(|v| v.node)
        .collect();
    let topology = Topology { primary, replicas };
    steps
        .step(
            &format!("slots on {primary} for {}", topology.replica_list()),
            ensure_slots(rt, primary, &topology.replicas),
        )
        .await?;
    follow_all(rt, steps, &topology, true).await?;
    steps
        .step(&verify_title(&topology), verify_all(rt, &topology))
        .await
}

/// `pgrepl-proxy rejoin NAME`: a node that is not the primary (a former primary, fenced or
/// not) becomes a standby of the running primary.
pub async fn rejoin<R: Runtime>(
    rt: &R,
    node: NodeId,
    progress: &mut (dyn Write + Send),
) -> Result<()> {
    let views = views(rt).await?;
    let rejoining = find(&views, node)?;
    // NAME may run out of recovery itself: an old primary started again, which the proxy
    // fences and tells to rejoin. The primary is then the one other node out of recovery,
    // and only if NAME's timeline is older: NAME is the stale one, not the other.
    let others: Vec<View> = views.iter().filter(|v| v.node != node).cloned().collect();
    let primary = sole_primary(&others)?
        .with_context(|| format!("no running primary other than {node} to rejoin"))?;
    if rejoining.is_primary() {
        let (stale, current) = (timeline(rt, node).await?, timeline(rt, primary).await?);
        if stale >= current {
            bail!(
                "{node} and {primary} are both out of recovery, {node} on timeline {stale} and \
                 {primary} on timeline {current}: stop the one that must not take writes first"
            );
        }
    }
    let mut steps = Steps {
        progress,
        total: 4,
        next: 0,
    };
    steps
        .step(
            &format!("check: {primary} is the primary, {node} is not"),
            async { Ok(Outcome::AlreadyDone) },
        )
        .await?;
    steps
        .step(
            &format!("slot on {primary} for {node}"),
            ensure_slots(rt, primary, &[node]),
        )
        .await?;
    steps
        .step(
            &format!("{node} follows {primary}"),
            follow(rt, primary, node, false),
        )
        .await?;
    let replicas = views
        .iter()
        .map(|v| v.node)
        .filter(|&n| n != primary)
        .collect();
    let topology = Topology { primary, replicas };
    steps
        .step(&verify_title(&topology), verify_all(rt, &topology))
        .await
}

/// The timeline a running primary writes on (its current WAL file's): right after a
/// promotion too, before the checkpoint that `pg_control_checkpoint()` would show.
async fn timeline<R: Runtime>(rt: &R, node: NodeId) -> Result<u32> {
    let file = sql(rt, node, "SELECT pg_walfile_name(pg_current_wal_lsn())").await?;
    file.get(..8)
        .and_then(|tli| u32::from_str_radix(tli, 16).ok())
        .with_context(|| format!("{node} answered {file:?} for its WAL file"))
}

/// The tutorial's last step's title, for the nodes as they are now.
fn verify_title(topology: &Topology) -> String {
    crate::steps::title(crate::steps::STEPS, topology, None)
}

/// The tutorial's check on every running replica: it refuses `CREATE TABLE` as read-only,
/// and a fresh `riders` row written on the primary appears there (then is deleted). Nodes
/// that do not run are named in the note.
async fn verify_all<R: Runtime>(rt: &R, topology: &Topology) -> Result<Outcome> {
    let mut running = Vec::new();
    let mut stopped = Vec::new();
    for &replica in &topology.replicas {
        match rt.state(replica).await? {
            NodeState::Running => running.push(replica),
            _ => stopped.push(replica),
        }
    }
    let checked = Topology {
        primary: topology.primary,
        replicas: running,
    };
    verify::check(rt, &checked).await?;
    Ok(match stopped.is_empty() {
        true => Outcome::AlreadyDone,
        false => done(format!("{} not running: not checked", list(&stopped))),
    })
}

/// Where ALTER SYSTEM writes, and where a stopped node's settings are edited as text.
const AUTO_CONF: NodeFile = NodeFile::Data("postgresql.auto.conf");

/// `node`'s `postgresql.auto.conf` (empty when it has none).
async fn read_auto_conf<R: Runtime>(rt: &R, node: NodeId) -> Result<String> {
    let bytes = rt.read_file(node, AUTO_CONF).await?.unwrap_or_default();
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// `X/Y`, as PostgreSQL shows a position.
fn show(lsn: Lsn) -> String {
    format!("{:X}/{:X}", lsn.0 >> 32, lsn.0 & 0xFFFF_FFFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_parse_and_order() {
        let a = Lsn::parse("0/3000060").unwrap();
        let b = Lsn::parse("1/0").unwrap();
        assert!(a < b);
        assert_eq!(show(a), "0/3000060");
        assert_eq!(show(Lsn::parse(" 16/B374D848\n").unwrap()), "16/B374D848");
        for bad in ["", "0", "x/1", "1/2/3", "100000000/0"] {
            assert_eq!(Lsn::parse(bad), None, "{bad:?}");
        }
    }

    fn standby(n: u8, received: Option<&str>, replayed: &str) -> View {
        View {
            node: NodeId::new(n).unwrap(),
            state: NodeState::Running,
            in_recovery: Some(true),
            follows: Some(NodeId::DB01),
            received: received.and_then(Lsn::parse),
            replayed: Lsn::parse(replayed),
        }
    }

    #[test]
    fn the_most_advanced_replica_is_chosen_by_received_then_replayed_then_name() {
        let cases: [(&[View], u8); 4] = [
            (
                &[
                    standby(2, Some("0/5"), "0/5"),
                    standby(3, Some("0/6"), "0/4"),
                ],
                3,
            ),
            (
                &[
                    standby(2, Some("0/6"), "0/5"),
                    standby(3, Some("0/6"), "0/6"),
                ],
                3,
            ),
            (
                &[
                    standby(2, Some("0/6"), "0/6"),
                    standby(3, Some("0/6"), "0/6"),
                ],
                2,
            ),
            (
                &[standby(2, None, "0/7"), standby(3, Some("0/6"), "0/6")],
                2,
            ),
        ];
        for (views, wanted) in cases {
            let refs: Vec<&View> = views.iter().collect();
            assert_eq!(most_advanced(&refs), NodeId::new(wanted), "{views:?}");
        }
        assert_eq!(most_advanced(&[]), None);
    }

    #[test]
    fn several_primaries_are_an_error_naming_them() {
        let mut a = standby(1, None, "0/1");
        a.in_recovery = Some(false);
        let mut b = standby(2, None, "0/1");
        b.in_recovery = Some(false);
        let err = sole_primary(&[a.clone(), b]).unwrap_err().to_string();
        assert!(err.contains("db01, db02"), "{err}");
        assert_eq!(sole_primary(&[a]).unwrap(), Some(NodeId::DB01));
        assert_eq!(sole_primary(&[standby(3, None, "0/1")]).unwrap(), None);
    }
}
