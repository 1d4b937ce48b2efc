//! The tutorial's 11 steps over any [`Runtime`], for db01 and any number of replicas, each
//! one checking first whether its work is already there, so running `provision` again on a
//! provisioned set changes nothing and a run that failed half-way continues where it stopped.
//! Steps about one replica run once per replica, each with its own progress line; with the
//! tutorial's one replica the lines are the tutorial's.

use std::collections::HashSet;
use std::fmt;
use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::psql::{sql, sql_file, wait_until};
use crate::runtime::{NodeFile, NodeId, NodeState, Runtime};
use crate::text::{last_lines, quote};
use crate::topology::{list, Topology};
use crate::tutorial::conf::{set_settings, WAL_SETTINGS};
use crate::tutorial::hba::pg_hba;
use crate::tutorial::password::random_password;
use crate::tutorial::pgpass::pgpass;
use crate::tutorial::sql::{
    literal, missing_rewind_grants_sql, replication_password_sql, replication_user_sql,
    rewind_grants_sql,
};
use crate::tutorial::{slot_name, PGDATA, REPLICATION_USER};
use crate::verify;

/// How many steps the tutorial has; progress lines read `[n/11]`.
pub const STEPS: usize = 11;

/// The steps that run once for each replica, with the replica in their title.
const PER_REPLICA: [usize; 6] = [2, 5, 7, 8, 9, 10];

/// With `--sync`, synchronous replication is switched on once every standby streams: the
/// step that starts them gets one more line.
const SYNC_STEP: usize = 10;

/// Waits longer than this for streaming or replay mean something is wrong.
const REPLICATION_TIMEOUT: Duration = Duration::from_secs(60);

/// The title of step `step` (1-based) for `replica` (the per-replica steps) in `topology`, as
/// progress lines and errors show it. With one replica these are the tutorial's own words.
pub fn title(step: usize, topology: &Topology, replica: Option<NodeId>) -> String {
    let p = topology.primary;
    let r = replica.map_or_else(|| topology.replica_list(), NodeId::name);
    let slot = replica.map(slot_name).unwrap_or_default();
    // Steps 8 and 9 name no node in the tutorial; with several replicas they must.
    let which = match replica {
        Some(r) if topology.replicas.len() > 1 => format!(" ({r})"),
        _ => String::new(),
    };
    let replicas = topology.replica_list();
    let (verb, each) = match topology.replicas.len() {
        1 => ("refuses", replicas.as_str()),
        _ => ("refuse", "each"),
    };
    match step {
        1 => format!("run the primary {p}"),
        2 => format!("run the replica {r}"),
        3 => format!("enable WAL on {p} (postgresql.conf)"),
        4 => format!("create replication_user on {p} and .pgpass on {replicas}"),
        5 => format!("create the replication slot {slot} on {p}"),
        6 => format!("allow replication_user from {replicas} in {p}'s pg_hba.conf"),
        7 => format!("base backup of {p} into {r}'s emptied data directory"),
        8 => format!("check the backup logs in as replication_user{which}"),
        9 => format!("check the backup streams through {slot}"),
        10 => format!("start {r} as a read-only standby"),
        _ => format!("verify: {replicas} {verb} writes, a row written on {p} appears on {each}"),
    }
}

/// What the user chose beyond the runtime.
#[derive(Debug, Clone)]
pub struct Options {
    /// The replication user's password; `None` means a random one (or the one already in use).
    pub replication_password: Option<String>,
    /// Print the replication password when step 4 sets it.
    pub show_password: bool,
    /// How many replicas: db02..db(replicas+1).
    pub replicas: u8,
    /// Synchronous replication: `synchronous_standby_names` on every node (see
    /// [`synchronous_replication`]).
    pub sync: bool,
}

impl Default for Options {
    /// The tutorial: one replica, a random password, not shown.
    fn default() -> Options {
        Options {
            replication_password: None,
            show_password: false,
            replicas: 1,
            sync: false,
        }
    }
}

/// How a step ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The work was there already; nothing was changed.
    AlreadyDone,
    /// The step changed something; the text says what, when that is worth saying.
    Done(Option<String>),
}

/// A step that failed: which one, and why (the server's or Docker's answer is in the cause).
#[derive(Debug)]
pub struct StepFailed {
    pub step: usize,
    pub title: String,
    pub cause: anyhow::Error,
}

impl fmt::Display for StepFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "step {}/{STEPS} ({}) failed: {:#}\n\
             Fix the cause above and run `pgrepl-proxy provision` again: \
             steps already done are skipped.",
            self.step, self.title, self.cause
        )
    }
}

impl std::error::Error for StepFailed {}

/// Writes `[n/M] title ... ` before `work` and how it ended after it (`done in X s (note)`,
/// `already done`, or `failed`). Progress that cannot be written does not stop the work.
pub(crate) async fn progress_line(
    progress: &mut (dyn Write + Send),
    step: usize,
    steps: usize,
    title: &str,
    work: impl std::future::Future<Output = Result<Outcome>>,
) -> Result<()> {
    let _ = write!(progress, "[{step}/{steps}] {title} ... ");
    let _ = progress.flush();
    let started = Instant::now();
    let outcome = work.await;
    let _ = match &outcome {
        Err(_) => writeln!(progress, "failed"),
        Ok(Outcome::AlreadyDone) => writeln!(progress, "already done"),
        Ok(Outcome::Done(note)) => {
            let seconds = started.elapsed().as_secs_f64();
            match note {
                Some(note) => writeln!(progress, "done in {seconds:.1} s ({note})"),
                None => writeln!(progress, "done in {seconds:.1} s"),
            }
        }
    };
    outcome.map(drop)
}

/// Runs the 11 steps in order for db01 and `options.replicas` replicas (the primary being
/// whichever of them is one now, see [`Topology::current`]), writing `[n/11] title` and how
/// each ended to `progress` (the terminal for the CLI; the harness sends it to
/// stderr).
pub async fn provision<R: Runtime>(
    rt: &R,
    options: &Options,
    progress: &mut (dyn Write + Send),
) -> Result<(), StepFailed> {
    let topology = match Topology::current(rt, options.replicas).await {
        Ok(topology) => topology,
        Err(cause) => {
            let title = format!(
                "find the primary among {}",
                list(&NodeId::first(options.replicas))
            );
            return Err(StepFailed {
                step: 1,
                title,
                cause,
            });
        }
    };
    let mut backups_taken = HashSet::new();
    for step in 1..=STEPS {
        let targets: Vec<Option<NodeId>> = if PER_REPLICA.contains(&step) {
            topology.replicas.iter().copied().map(Some).collect()
        } else {
            vec![None]
        };
        for replica in targets {
            let title = title(step, &topology, replica);
            let work = run_step(rt, options, &topology, step, replica, &mut backups_taken);
            if let Err(cause) = progress_line(progress, step, STEPS, &title, work).await {
                return Err(StepFailed { step, title, cause });
            }
        }
        if step == SYNC_STEP && options.sync {
            let title = sync_title(&topology);
            let work = synchronous_replication(rt, &topology);
            if let Err(cause) = progress_line(progress, step, STEPS, &title, work).await {
                return Err(StepFailed { step, title, cause });
            }
        }
    }
    Ok(())
}

async fn run_step<R: Runtime>(
    rt: &R,
    options: &Options,
    topology: &Topology,
    step: usize,
    replica: Option<NodeId>,
    backups_taken: &mut HashSet<NodeId>,
) -> Result<Outcome> {
    let p = topology.primary;
    let r = || replica.context("a per-replica step without its replica");
    match step {
        1 => run_node(rt, p, false).await,
        2 => run_node(rt, r()?, true).await,
        3 => enable_wal(rt, topology).await,
        4 => replication_user(rt, options, topology).await,
        5 => replication_slot(rt, p, r()?).await,
        6 => allow_replication(rt, topology).await,
        7 => {
            let outcome = base_backup(rt, p, r()?).await?;
            if outcome != Outcome::AlreadyDone {
                backups_taken.insert(r()?);
            }
            Ok(outcome)
        }
        8 | 9 => {
            let r = r()?;
            let (setting, wanted) = match step {
                8 => ("primary_conninfo", REPLICATION_USER.to_owned()),
                _ => ("primary_slot_name", slot_name(r)),
            };
            check_recovery_setting(rt, r, backups_taken.contains(&r), setting, &wanted).await
        }
        10 => start_standby(rt, p, r()?).await,
        _ => verify::tutorial_check(rt, topology).await,
    }
}

/// Steps 1 and 2: the container (or local server) exists and runs. A stopped replica that is
/// not yet a standby is left stopped: step 7 replaces its data anyway, and after a base backup
/// that was cut off its data directory may not even start.
async fn run_node<R: Runtime>(rt: &R, node: NodeId, replica: bool) -> Result<Outcome> {
    match rt.state(node).await? {
        NodeState::Running => Ok(Outcome::AlreadyDone),
        NodeState::Stopped if replica && !is_standby(rt, node).await? => Ok(Outcome::Done(Some(
            "left stopped: step 7 replaces its data".into(),
        ))),
        NodeState::Stopped => {
            rt.start(node).await?;
            Ok(Outcome::Done(Some("started the existing one".into())))
        }
        NodeState::Missing => {
            rt.create(node).await?;
            Ok(Outcome::Done(None))
        }
    }
}

/// Step 3: download postgresql.conf, set the WAL settings, upload it back, on the primary and
/// on every replica that is a standby already (a new one gets the primary's file from its
/// base backup). They take effect only at server start, so a running node is restarted when
/// one of them differs from the value it runs with; the tutorial's four are PostgreSQL's
/// defaults, `wal_log_hints` (for pg_rewind) is not.
async fn enable_wal<R: Runtime>(rt: &R, topology: &Topology) -> Result<Outcome> {
    let mut notes = Vec::new();
    for node in topology.nodes() {
        if node != topology.primary && !is_standby(rt, node).await? {
            continue;
        }
        if let Some(note) = enable_wal_on(rt, node).await? {
            notes.push(note);
        }
    }
    Ok(match notes.is_empty() {
        true => Outcome::AlreadyDone,
        false => Outcome::Done(Some(notes.join("; "))),
    })
}

/// Step 3 on one node: what was written and whether it restarted, or `None` when the file
/// had every setting already.
async fn enable_wal_on<R: Runtime>(rt: &R, node: NodeId) -> Result<Option<String>> {
    let file = NodeFile::Data("postgresql.conf");
    let text = read_text(rt, node, file).await?;
    let edited = set_settings(&text, WAL_SETTINGS);
    if edited.changed.is_empty() {
        return Ok(None);
    }
    rt.write_file(node, file, edited.text.as_bytes(), 0o600)
        .await?;
    let written = format!("wrote {}", edited.changed.join(", "));
    if rt.state(node).await? != NodeState::Running {
        return Ok(Some(format!("{written} on the stopped {node}")));
    }
    let differing = running_differs(rt, node, &edited.changed).await?;
    if differing.is_empty() {
        return Ok(Some(format!(
            "{written}; {node} already runs with these values, no restart"
        )));
    }
    rt.stop(node).await?;
    rt.start(node).await?;
    Ok(Some(format!(
        "{written}; restarted {node} for {}",
        differing.join(", ")
    )))
}

/// Which of `names` `node` currently runs with a value other than the tutorial's.
async fn running_differs<R: Runtime>(
    rt: &R,
    node: NodeId,
    names: &[String],
) -> Result<Vec<String>> {
    let mut differing = Vec::new();
    for name in names {
        let wanted = WAL_SETTINGS
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| *v)
            .unwrap_or_default();
        let running = sql(rt, node, &format!("SHOW {name}")).await?;
        if running != wanted {
            differing.push(name.clone());
        }
    }
    Ok(differing)
}

/// What step 4 does about the password.
enum Password {
    /// The user exists and a node's `.pgpass` holds its password: copy that file where it
    /// is missing or different.
    Keep(Vec<u8>),
    /// Set this password (creating the user, or on the existing one) and write every
    /// node's `.pgpass`.
    Set(String),
}

/// Step 4: the tutorial's SQL file, uploaded and run with `psql -f`, and `.pgpass` on every
/// node (any of them may become a standby, and pg_rewind logs in with it too), and the grants
/// pg_rewind needs. A configured password that differs from the one in use is set with ALTER
/// USER; a node that lost its `.pgpass` gets a copy of another node's.
async fn replication_user<R: Runtime>(
    rt: &R,
    options: &Options,
    topology: &Topology,
) -> Result<Outcome> {
    let p = topology.primary;
    let exists_sql = format!("SELECT count(*) FROM pg_roles WHERE rolname = '{REPLICATION_USER}'");
    let exists = sql(rt, p, &exists_sql).await? == "1";
    // Replicas first: before N nodes, only db02 had one.
    let mut files = Vec::new();
    for node in topology.replicas.iter().chain([&p]) {
        files.push((*node, rt.read_file(*node, NodeFile::Pgpass).await?));
    }
    let held = |content: &[u8]| files.iter().any(|(_, f)| f.as_deref() == Some(content));
    let first_held = files.iter().find_map(|(_, f)| f.clone());
    let plan = match (&options.replication_password, exists, first_held) {
        (Some(wanted), true, _) if held(pgpass(wanted).as_bytes()) => {
            Password::Keep(pgpass(wanted).into_bytes())
        }
        (None, true, Some(file)) => Password::Keep(file),
        (Some(wanted), _, _) => Password::Set(wanted.clone()),
        (None, _, _) => {
            Password::Set(random_password().context("cannot get random bytes for the password")?)
        }
    };
    let mut notes = Vec::new();
    match plan {
        Password::Keep(content) => {
            let mut copied = Vec::new();
            for (node, file) in &files {
                if file.as_deref() != Some(&content[..]) {
                    rt.write_file(*node, NodeFile::Pgpass, &content, 0o600)
                        .await?;
                    copied.push(*node);
                }
            }
            if !copied.is_empty() {
                notes.push(format!("copied .pgpass to {}", list(&copied)));
            }
        }
        Password::Set(password) => {
            set_password(rt, p, exists, &password).await?;
            for (node, _) in &files {
                rt.write_file(*node, NodeFile::Pgpass, pgpass(&password).as_bytes(), 0o600)
                    .await?;
            }
            let what = if exists {
                "set a new password"
            } else {
                "created"
            };
            let replicas = topology.replica_list();
            notes.push(if options.show_password {
                format!("{what}; password {password}")
            } else if topology.replicas.len() == 1 {
                format!("{what}; password in {replicas}'s .pgpass")
            } else {
                format!("{what}; password in the nodes' .pgpass")
            });
        }
    }
    if sql(rt, p, &missing_rewind_grants_sql()).await? != "0" {
        sql(rt, p, &rewind_grants_sql()).await?;
        notes.push("granted what pg_rewind runs".to_owned());
    }
    Ok(match notes.is_empty() {
        true => Outcome::AlreadyDone,
        false => Outcome::Done(Some(notes.join("; "))),
    })
}

/// Creates replication_user with `password` on `primary`, or sets it on the existing user,
/// through an uploaded script as the tutorial does.
async fn set_password<R: Runtime>(
    rt: &R,
    primary: NodeId,
    exists: bool,
    password: &str,
) -> Result<()> {
    let (script, text) = if exists {
        (
            "replication_password.sql",
            replication_password_sql(password),
        )
    } else {
        ("replication_user.sql", replication_user_sql(password))
    };
    let file = NodeFile::Script(script);
    rt.write_file(primary, file, text.as_bytes(), 0o600).await?;
    sql_file(rt, primary, &rt.path(primary, file)).await?;
    Ok(())
}

/// Step 5: the physical slot that keeps on the primary the WAL `replica` has not received yet.
async fn replication_slot<R: Runtime>(rt: &R, primary: NodeId, replica: NodeId) -> Result<Outcome> {
    let slot = slot_name(replica);
    let exists_sql =
        format!("SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{slot}'");
    if sql(rt, primary, &exists_sql).await? == "1" {
        return Ok(Outcome::AlreadyDone);
    }
    sql(
        rt,
        primary,
        &format!("SELECT PG_CREATE_PHYSICAL_REPLICATION_SLOT('{slot}')"),
    )
    .await?;
    Ok(Outcome::Done(None))
}

/// Step 6: the tutorial's pg_hba.conf with a replication line for each node's current
/// address, the same on every node (the primary may change, and base backups and pg_rewind
/// copy the file), then a reload on each running node (enough for pg_hba.conf). A file that
/// PostgreSQL rejects is reported, not left silently inactive.
async fn allow_replication<R: Runtime>(rt: &R, topology: &Topology) -> Result<Outcome> {
    let file = NodeFile::Data("pg_hba.conf");
    let mut addresses = Vec::new();
    for node in topology.nodes() {
        addresses.push((node, rt.address(node).await?));
    }
    let ips: Vec<_> = addresses.iter().map(|(_, ip)| *ip).collect();
    let wanted = pg_hba(&ips);
    let mut changed = false;
    for node in topology.nodes() {
        if rt.read_file(node, file).await?.as_deref() == Some(wanted.as_bytes()) {
            continue;
        }
        changed = true;
        rt.write_file(node, file, wanted.as_bytes(), 0o600).await?;
        if rt.state(node).await? == NodeState::Running {
            reload_pg_hba(rt, node).await?;
        }
    }
    if !changed {
        return Ok(Outcome::AlreadyDone);
    }
    let shown: Vec<String> = addresses
        .iter()
        .filter(|(node, _)| topology.replicas.len() > 1 || *node != topology.primary)
        .map(|(node, ip)| format!("{node} is {ip}/32"))
        .collect();
    Ok(Outcome::Done(Some(shown.join(", "))))
}

/// Reloads `node`'s configuration; an error if its new pg_hba.conf has lines it rejects.
async fn reload_pg_hba<R: Runtime>(rt: &R, node: NodeId) -> Result<()> {
    sql(rt, node, "SELECT pg_reload_conf()").await?;
    let errors = sql(
        rt,
        node,
        "SELECT string_agg(line_number || ': ' || error, '; ') \
         FROM pg_hba_file_rules WHERE error IS NOT NULL",
    )
    .await?;
    if !errors.is_empty() {
        bail!("{node} rejected the new pg_hba.conf: {errors}");
    }
    Ok(())
}

/// Step 7, the safe form of the tutorial's `rm -rf` + pg_basebackup inside the running
/// replica (which races the server noticing its data directory vanish): stop it first, then
/// empty and refill its data directory while nothing runs on it. It is started in step 10.
async fn base_backup<R: Runtime>(rt: &R, primary: NodeId, replica: NodeId) -> Result<Outcome> {
    if is_standby(rt, replica).await? {
        return Ok(Outcome::AlreadyDone);
    }
    if rt.state(replica).await? == NodeState::Running {
        rt.stop(replica).await?;
    }
    let source = rt.peer_endpoint(primary);
    let script = base_backup_script(&source.host, source.port, replica);
    let out = rt.run_offline(replica, &script).await?;
    if !out.success() {
        bail!(
            "pg_basebackup exited with {}: {}",
            out.code,
            last_lines(out.message(), 10)
        );
    }
    if !is_standby(rt, replica).await? {
        bail!("pg_basebackup finished but wrote no standby.signal");
    }
    Ok(Outcome::Done(None))
}

/// Whether `node`'s data directory is a complete base backup: pg_basebackup
/// `--write-recovery-conf` writes `standby.signal` only once the copy has finished.
pub(crate) async fn is_standby<R: Runtime>(rt: &R, node: NodeId) -> Result<bool> {
    let signal = NodeFile::Data("standby.signal");
    Ok(rt.read_file(node, signal).await?.is_some())
}

/// The shell the one-shot backup into `replica` runs: the tutorial's command, plus
/// `--checkpoint=fast` (otherwise it waits for a spread checkpoint, 90 s instead of under 1 s
/// on an idle primary), `--port` (the local runtime's db01 is not on 5432), the replica's own
/// slot, and its name as `application_name`, which the written `primary_conninfo` keeps (what
/// `synchronous_standby_names` and `pg_stat_replication` know it by). `$PGDATA` is set by the
/// runtime.
pub fn base_backup_script(host: &str, port: u16, replica: NodeId) -> String {
    let host = quote(host);
    let slot = slot_name(replica);
    format!(
        "rm -rf \"$PGDATA\"/* && \
         pg_basebackup --host {host} --port {port} --username {REPLICATION_USER} \
         --dbname application_name={replica} \
         --pgdata \"$PGDATA\" --verbose --progress --wal-method stream \
         --write-recovery-conf --slot={slot} --checkpoint=fast --no-password"
    )
}

/// Steps 8 and 9: what pg_basebackup `--write-recovery-conf` wrote into the replica's
/// postgresql.auto.conf names the replication user and the slot.
async fn check_recovery_setting<R: Runtime>(
    rt: &R,
    replica: NodeId,
    backup_taken: bool,
    setting: &str,
    wanted: &str,
) -> Result<Outcome> {
    let text = read_text(rt, replica, NodeFile::Data("postgresql.auto.conf")).await?;
    let value = text
        .lines()
        .filter_map(|line| line.trim().strip_prefix(setting))
        .filter_map(|rest| rest.trim_start().strip_prefix('='))
        .next_back()
        .map(str::trim)
        .with_context(|| format!("{replica}'s {PGDATA}/postgresql.auto.conf sets no {setting}"))?;
    let matches = match setting {
        "primary_conninfo" => value.contains(&format!("user={wanted}")),
        _ => value.trim_matches('\'') == wanted,
    };
    if !matches {
        bail!("{replica}'s {setting} is {value}, expected it to name {wanted}");
    }
    Ok(if backup_taken {
        Outcome::Done(None)
    } else {
        Outcome::AlreadyDone
    })
}

/// Step 10: the replica runs, in recovery (read-only), streaming from the primary through
/// its slot.
async fn start_standby<R: Runtime>(rt: &R, primary: NodeId, replica: NodeId) -> Result<Outcome> {
    let outcome = match rt.state(replica).await? {
        NodeState::Running => Outcome::AlreadyDone,
        _ => {
            rt.start(replica).await?;
            Outcome::Done(None)
        }
    };
    if sql(rt, replica, "SELECT pg_is_in_recovery()").await? != "t" {
        bail!("{replica} runs but is not a standby (pg_is_in_recovery() is false)");
    }
    verify::wait_streaming(rt, primary, replica, REPLICATION_TIMEOUT).await?;
    Ok(outcome)
}

/// The title of `--sync`'s line.
fn sync_title(topology: &Topology) -> String {
    format!(
        "synchronous replication: {} on every node",
        synchronous_standby_names(topology)
    )
}

/// `ANY 1 (db01, db02, ...)`: a commit waits until any one other node has flushed it. Every
/// node is listed, the primary too, and the same value goes on every node, so that after a
/// failover the new primary waits for the others, the old one among them once it has
/// rejoined. (A primary never counts itself; a list naming only the current replicas would
/// leave a promoted one waiting for nobody that can ever answer.)
pub fn synchronous_standby_names(topology: &Topology) -> String {
    let mut nodes = topology.nodes();
    nodes.sort();
    format!("ANY 1 ({})", list(&nodes))
}

/// `--sync`: each replica's `primary_conninfo` carries `application_name=dbNN` (what
/// `synchronous_standby_names` names it by; standbys provisioned before have none and get it
/// with ALTER SYSTEM + reload, which restarts their walreceiver), then
/// `synchronous_standby_names` is set with ALTER SYSTEM on every node (allowed on a standby:
/// it only writes `postgresql.auto.conf`) and reloaded, and the primary must report a quorum
/// standby. From then on a commit on the primary waits while every replica is down, as
/// PostgreSQL does.
async fn synchronous_replication<R: Runtime>(rt: &R, topology: &Topology) -> Result<Outcome> {
    let mut notes = Vec::new();
    for &replica in &topology.replicas {
        if set_application_name(rt, replica).await? {
            notes.push(format!(
                "application_name={replica} in {replica}'s primary_conninfo"
            ));
        }
    }
    let wanted = synchronous_standby_names(topology);
    let mut changed = Vec::new();
    for node in topology.nodes() {
        if set_reloadable(rt, node, "synchronous_standby_names", &wanted).await? {
            changed.push(node);
        }
    }
    if !changed.is_empty() {
        notes.push(format!("set on {}", list(&changed)));
    }
    let p = topology.primary;
    wait_until("a synchronous standby", REPLICATION_TIMEOUT, || async {
        let quorum =
            "SELECT count(*) FROM pg_stat_replication WHERE sync_state IN ('sync', 'quorum')";
        Ok(sql(rt, p, quorum).await? != "0")
    })
    .await?;
    Ok(match notes.is_empty() {
        true => Outcome::AlreadyDone,
        false => Outcome::Done(Some(notes.join("; "))),
    })
}

/// Adds `application_name=<replica>` to the standby's `primary_conninfo` when it has none;
/// whether it did.
async fn set_application_name<R: Runtime>(rt: &R, replica: NodeId) -> Result<bool> {
    let conninfo = sql(rt, replica, "SHOW primary_conninfo").await?;
    if conninfo.contains("application_name=") {
        return Ok(false);
    }
    let wanted = format!("{conninfo} application_name={replica}");
    set_reloadable(rt, replica, "primary_conninfo", wanted.trim_start()).await
}

/// Sets a reloadable `setting` on `node` with ALTER SYSTEM and waits until the server runs
/// with it (a reload is only signalled); whether it had another value.
pub(crate) async fn set_reloadable<R: Runtime>(
    rt: &R,
    node: NodeId,
    setting: &str,
    value: &str,
) -> Result<bool> {
    let show = format!("SHOW {setting}");
    if sql(rt, node, &show).await? == value {
        return Ok(false);
    }
    let alter = format!("ALTER SYSTEM SET {setting} = {}", literal(value));
    sql(rt, node, &alter).await?;
    sql(rt, node, "SELECT pg_reload_conf()").await?;
    let what = format!("{node} to run with the new {setting}");
    wait_until(&what, REPLICATION_TIMEOUT, || async {
        Ok(sql(rt, node, &show).await? == value)
    })
    .await?;
    Ok(true)
}

async fn read_text<R: Runtime>(rt: &R, node: NodeId, file: NodeFile) -> Result<String> {
    let bytes = rt
        .read_file(node, file)
        .await?
        .with_context(|| format!("{node} has no {}", rt.path(node, file)))?;
    String::from_utf8(bytes)
        .with_context(|| format!("{node}'s {} is not UTF-8", rt.path(node, file)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_script_has_the_tutorials_options() {
        let script = base_backup_script("db01", 5432, NodeId::DB02);
        for option in [
            "rm -rf \"$PGDATA\"/*",
            "--host db01",
            "--username replication_user",
            "--wal-method stream",
            "--write-recovery-conf",
            "--slot=rideshare_slot",
            "--checkpoint=fast",
            "--dbname application_name=db02",
        ] {
            assert!(script.contains(option), "{option} missing from {script}");
        }
        assert!(
            script.find("rm -rf").unwrap() < script.find("pg_basebackup").unwrap(),
            "the directory is emptied first, and the backup runs only if that worked (&&)"
        );
    }

    #[test]
    fn one_replica_has_the_tutorials_titles() {
        let one = Topology::tutorial(1);
        let titles: Vec<String> = (1..=STEPS)
            .map(|step| {
                let replica = PER_REPLICA.contains(&step).then_some(NodeId::DB02);
                title(step, &one, replica)
            })
            .collect();
        assert_eq!(
            titles,
            [
                "run the primary db01",
                "run the replica db02",
                "enable WAL on db01 (postgresql.conf)",
                "create replication_user on db01 and .pgpass on db02",
                "create the replication slot rideshare_slot on db01",
                "allow replication_user from db02 in db01's pg_hba.conf",
                "base backup of db01 into db02's emptied data directory",
                "check the backup logs in as replication_user",
                "check the backup streams through rideshare_slot",
                "start db02 as a read-only standby",
                "verify: db02 refuses writes, a row written on db01 appears on db02",
            ]
        );
    }

    #[test]
    fn more_replicas_are_named_in_their_steps() {
        let three = Topology::tutorial(3);
        let db03 = NodeId::new(3);
        assert_eq!(
            title(5, &three, db03),
            "create the replication slot rideshare_slot_db03 on db01"
        );
        assert_eq!(
            title(8, &three, db03),
            "check the backup logs in as replication_user (db03)"
        );
        assert_eq!(
            title(11, &three, None),
            "verify: db02, db03, db04 refuse writes, a row written on db01 appears on each"
        );
    }

    #[test]
    fn synchronous_replication_names_every_node() {
        let three = Topology::tutorial(2);
        assert_eq!(
            synchronous_standby_names(&three),
            "ANY 1 (db01, db02, db03)"
        );
        assert_eq!(
            sync_title(&Topology::tutorial(1)),
            "synchronous replication: ANY 1 (db01, db02) on every node"
        );
    }

    #[test]
    fn failures_name_the_step_and_what_to_do() {
        let failed = StepFailed {
            step: 7,
            title: title(7, &Topology::tutorial(1), Some(NodeId::DB02)),
            cause: anyhow::anyhow!("pg_basebackup exited with 1: could not connect"),
        };
        let text = failed.to_string();
        assert!(text.starts_with("step 7/11 (base backup of db01"), "{text}");
        assert!(text.contains("could not connect"), "{text}");
        assert!(
            text.contains("run `pgrepl-proxy provision` again"),
            "{text}"
        );
    }
}
