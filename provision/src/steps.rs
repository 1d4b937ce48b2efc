//! The tutorial's 11 steps over any [`Runtime`], each one checking first whether its work is
//! already there, so running `provision` again on a provisioned pair changes nothing and a run
//! that failed half-way continues where it stopped.

use std::fmt;
use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::psql::{sql, sql_file, wait_until};
use crate::runtime::{Node, NodeFile, NodeState, Runtime};
use crate::text::{last_lines, quote};
use crate::tutorial::conf::{set_settings, WAL_SETTINGS};
use crate::tutorial::hba::pg_hba;
use crate::tutorial::password::random_password;
use crate::tutorial::pgpass::pgpass;
use crate::tutorial::sql::{replication_password_sql, replication_user_sql};
use crate::tutorial::{PGDATA, REPLICATION_USER, SLOT};
use crate::verify;

/// How many steps the tutorial has; progress lines read `[n/11]`.
pub const STEPS: usize = 11;

/// The title of each step, as progress lines and errors show it.
pub const TITLES: [&str; STEPS] = [
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
];

/// Waits longer than this for streaming or replay mean something is wrong.
const REPLICATION_TIMEOUT: Duration = Duration::from_secs(60);

/// What the user chose beyond the runtime.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The replication user's password; `None` means a random one (or the one already in use).
    pub replication_password: Option<String>,
    /// Print the replication password when step 4 sets it.
    pub show_password: bool,
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
    pub cause: anyhow::Error,
}

impl fmt::Display for StepFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "step {}/{STEPS} ({}) failed: {:#}\n\
             Fix the cause above and run `pgrepl-proxy provision` again: \
             steps already done are skipped.",
            self.step,
            TITLES[self.step - 1],
            self.cause
        )
    }
}

impl std::error::Error for StepFailed {}

/// Runs the 11 steps in order, writing `[n/11] title` and how each ended to `progress` (the
/// terminal for the CLI; the harness sends it to stderr). Progress that cannot be written
/// does not stop the provisioning.
pub async fn provision<R: Runtime>(
    rt: &R,
    options: &Options,
    progress: &mut (dyn Write + Send),
) -> Result<(), StepFailed> {
    let mut backup_taken = false;
    for step in 1..=STEPS {
        let _ = write!(progress, "[{step}/{STEPS}] {} ... ", TITLES[step - 1]);
        let _ = progress.flush();
        let started = Instant::now();
        let outcome = run_step(rt, options, step, &mut backup_taken).await;
        let _ = match outcome {
            Err(cause) => {
                let _ = writeln!(progress, "failed");
                return Err(StepFailed { step, cause });
            }
            Ok(Outcome::AlreadyDone) => writeln!(progress, "already done"),
            Ok(Outcome::Done(note)) => {
                let seconds = started.elapsed().as_secs_f64();
                match note {
                    Some(note) => writeln!(progress, "done in {seconds:.1} s ({note})"),
                    None => writeln!(progress, "done in {seconds:.1} s"),
                }
            }
        };
    }
    Ok(())
}

async fn run_step<R: Runtime>(
    rt: &R,
    options: &Options,
    step: usize,
    backup_taken: &mut bool,
) -> Result<Outcome> {
    match step {
        1 => run_node(rt, Node::Primary).await,
        2 => run_node(rt, Node::Replica).await,
        3 => enable_wal(rt).await,
        4 => replication_user(rt, options).await,
        5 => replication_slot(rt).await,
        6 => allow_replication(rt).await,
        7 => {
            let outcome = base_backup(rt).await?;
            *backup_taken = outcome != Outcome::AlreadyDone;
            Ok(outcome)
        }
        8 => check_recovery_setting(rt, *backup_taken, "primary_conninfo", REPLICATION_USER).await,
        9 => check_recovery_setting(rt, *backup_taken, "primary_slot_name", SLOT).await,
        10 => start_standby(rt).await,
        _ => verify::tutorial_check(rt).await,
    }
}

/// Steps 1 and 2: the container (or local server) exists and runs. A stopped db02 that is not
/// yet a standby is left stopped: step 7 replaces its data anyway, and after a base backup
/// that was cut off its data directory may not even start.
async fn run_node<R: Runtime>(rt: &R, node: Node) -> Result<Outcome> {
    match rt.state(node).await? {
        NodeState::Running => Ok(Outcome::AlreadyDone),
        NodeState::Stopped if node == Node::Replica && !is_standby(rt).await? => Ok(Outcome::Done(
            Some("left stopped: step 7 replaces its data".into()),
        )),
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

/// Step 3: download postgresql.conf, set the WAL settings, upload it back. They take effect
/// only at server start, so db01 is restarted when one of them differs from the value the
/// server runs with; on PostgreSQL 10 and later they are all the defaults already, so writing
/// them down changes the file but needs no restart.
async fn enable_wal<R: Runtime>(rt: &R) -> Result<Outcome> {
    let file = NodeFile::Data("postgresql.conf");
    let text = read_text(rt, Node::Primary, file).await?;
    let edited = set_settings(&text, WAL_SETTINGS);
    if edited.changed.is_empty() {
        return Ok(Outcome::AlreadyDone);
    }
    rt.write_file(Node::Primary, file, edited.text.as_bytes(), 0o600)
        .await?;
    let differing = running_differs(rt, &edited.changed).await?;
    let written = format!("wrote {}", edited.changed.join(", "));
    if differing.is_empty() {
        return Ok(Outcome::Done(Some(format!(
            "{written}; db01 already runs with these values, no restart"
        ))));
    }
    rt.stop(Node::Primary).await?;
    rt.start(Node::Primary).await?;
    Ok(Outcome::Done(Some(format!(
        "{written}; restarted db01 for {}",
        differing.join(", ")
    ))))
}

/// Which of `names` db01 currently runs with a value other than the tutorial's.
async fn running_differs<R: Runtime>(rt: &R, names: &[String]) -> Result<Vec<String>> {
    let mut differing = Vec::new();
    for name in names {
        let wanted = WAL_SETTINGS
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| *v)
            .unwrap_or_default();
        let running = sql(rt, Node::Primary, &format!("SHOW {name}")).await?;
        if running != wanted {
            differing.push(name.clone());
        }
    }
    Ok(differing)
}

/// Step 4: the tutorial's SQL file, uploaded and run with `psql -f`, and `.pgpass` in db02.
/// A configured password that differs from the one in use is set with ALTER USER.
async fn replication_user<R: Runtime>(rt: &R, options: &Options) -> Result<Outcome> {
    let exists_sql = format!("SELECT count(*) FROM pg_roles WHERE rolname = '{REPLICATION_USER}'");
    let exists = sql(rt, Node::Primary, &exists_sql).await? == "1";
    let current = rt.read_file(Node::Replica, NodeFile::Pgpass).await?;
    let password = match (&options.replication_password, exists, &current) {
        (Some(wanted), true, Some(file)) if *file == pgpass(wanted).into_bytes() => {
            return Ok(Outcome::AlreadyDone)
        }
        (None, true, Some(_)) => return Ok(Outcome::AlreadyDone),
        (Some(wanted), _, _) => wanted.clone(),
        (None, _, _) => random_password().context("cannot get random bytes for the password")?,
    };
    let (script, text) = if exists {
        (
            "replication_password.sql",
            replication_password_sql(&password),
        )
    } else {
        ("replication_user.sql", replication_user_sql(&password))
    };
    let file = NodeFile::Script(script);
    rt.write_file(Node::Primary, file, text.as_bytes(), 0o600)
        .await?;
    sql_file(rt, Node::Primary, &rt.path(Node::Primary, file)).await?;
    rt.write_file(
        Node::Replica,
        NodeFile::Pgpass,
        pgpass(&password).as_bytes(),
        0o600,
    )
    .await?;
    let what = if exists {
        "set a new password"
    } else {
        "created"
    };
    Ok(Outcome::Done(Some(if options.show_password {
        format!("{what}; password {password}")
    } else {
        format!("{what}; password in db02's .pgpass")
    })))
}

/// Step 5: the physical slot that keeps on db01 the WAL db02 has not received yet.
async fn replication_slot<R: Runtime>(rt: &R) -> Result<Outcome> {
    let exists_sql =
        format!("SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{SLOT}'");
    if sql(rt, Node::Primary, &exists_sql).await? == "1" {
        return Ok(Outcome::AlreadyDone);
    }
    sql(
        rt,
        Node::Primary,
        &format!("SELECT PG_CREATE_PHYSICAL_REPLICATION_SLOT('{SLOT}')"),
    )
    .await?;
    Ok(Outcome::Done(None))
}

/// Step 6: the tutorial's pg_hba.conf with db02's current address, then a reload (enough for
/// pg_hba.conf). A file that PostgreSQL rejects is reported, not left silently inactive.
async fn allow_replication<R: Runtime>(rt: &R) -> Result<Outcome> {
    let file = NodeFile::Data("pg_hba.conf");
    let replica = rt.address(Node::Replica).await?;
    let wanted = pg_hba(replica);
    if rt.read_file(Node::Primary, file).await?.as_deref() == Some(wanted.as_bytes()) {
        return Ok(Outcome::AlreadyDone);
    }
    rt.write_file(Node::Primary, file, wanted.as_bytes(), 0o600)
        .await?;
    sql(rt, Node::Primary, "SELECT pg_reload_conf()").await?;
    let errors = sql(
        rt,
        Node::Primary,
        "SELECT string_agg(line_number || ': ' || error, '; ') \
         FROM pg_hba_file_rules WHERE error IS NOT NULL",
    )
    .await?;
    if !errors.is_empty() {
        bail!("db01 rejected the new pg_hba.conf: {errors}");
    }
    Ok(Outcome::Done(Some(format!("db02 is {replica}/32"))))
}

/// Step 7, the safe form of the tutorial's `rm -rf` + pg_basebackup inside the running db02
/// (which races the server noticing its data directory vanish): stop db02 first, then empty
/// and refill its data directory while nothing runs on it. db02 is started in step 10.
async fn base_backup<R: Runtime>(rt: &R) -> Result<Outcome> {
    if is_standby(rt).await? {
        return Ok(Outcome::AlreadyDone);
    }
    if rt.state(Node::Replica).await? == NodeState::Running {
        rt.stop(Node::Replica).await?;
    }
    let primary = rt.peer_endpoint(Node::Primary);
    let script = base_backup_script(&primary.host, primary.port);
    let out = rt.run_offline(Node::Replica, &script).await?;
    if !out.success() {
        bail!(
            "pg_basebackup exited with {}: {}",
            out.code,
            last_lines(out.message(), 10)
        );
    }
    if !is_standby(rt).await? {
        bail!("pg_basebackup finished but wrote no standby.signal");
    }
    Ok(Outcome::Done(None))
}

/// Whether db02's data directory is a complete base backup: pg_basebackup
/// `--write-recovery-conf` writes `standby.signal` only once the copy has finished.
async fn is_standby<R: Runtime>(rt: &R) -> Result<bool> {
    let signal = NodeFile::Data("standby.signal");
    Ok(rt.read_file(Node::Replica, signal).await?.is_some())
}

/// The shell the one-shot backup runs: the tutorial's command, plus `--checkpoint=fast`
/// (otherwise it waits for a spread checkpoint, 90 s instead of under 1 s on an idle primary)
/// and `--port` (the local runtime's db01 is not on 5432). `$PGDATA` is set by the runtime.
pub fn base_backup_script(host: &str, port: u16) -> String {
    let host = quote(host);
    format!(
        "rm -rf \"$PGDATA\"/* && \
         pg_basebackup --host {host} --port {port} --username {REPLICATION_USER} \
         --pgdata \"$PGDATA\" --verbose --progress --wal-method stream \
         --write-recovery-conf --slot={SLOT} --checkpoint=fast --no-password"
    )
}

/// Steps 8 and 9: what pg_basebackup `--write-recovery-conf` wrote into db02's
/// postgresql.auto.conf names the replication user and the slot.
async fn check_recovery_setting<R: Runtime>(
    rt: &R,
    backup_taken: bool,
    setting: &str,
    wanted: &str,
) -> Result<Outcome> {
    let text = read_text(rt, Node::Replica, NodeFile::Data("postgresql.auto.conf")).await?;
    let value = text
        .lines()
        .filter_map(|line| line.trim().strip_prefix(setting))
        .filter_map(|rest| rest.trim_start().strip_prefix('='))
        .next_back()
        .map(str::trim)
        .with_context(|| format!("db02's {PGDATA}/postgresql.auto.conf sets no {setting}"))?;
    let matches = match setting {
        "primary_conninfo" => value.contains(&format!("user={wanted}")),
        _ => value.trim_matches('\'') == wanted,
    };
    if !matches {
        bail!("db02's {setting} is {value}, expected it to name {wanted}");
    }
    Ok(if backup_taken {
        Outcome::Done(None)
    } else {
        Outcome::AlreadyDone
    })
}

/// Step 10: db02 runs, in recovery (read-only), streaming from db01 through the slot.
async fn start_standby<R: Runtime>(rt: &R) -> Result<Outcome> {
    let outcome = match rt.state(Node::Replica).await? {
        NodeState::Running => Outcome::AlreadyDone,
        _ => {
            rt.start(Node::Replica).await?;
            Outcome::Done(None)
        }
    };
    if sql(rt, Node::Replica, "SELECT pg_is_in_recovery()").await? != "t" {
        bail!("db02 runs but is not a standby (pg_is_in_recovery() is false)");
    }
    wait_until("db02 to stream from db01", REPLICATION_TIMEOUT, || async {
        Ok(sql(rt, Node::Primary, verify::STREAMING_SQL).await? == "streaming")
    })
    .await?;
    Ok(outcome)
}

async fn read_text<R: Runtime>(rt: &R, node: Node, file: NodeFile) -> Result<String> {
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
        let script = base_backup_script("db01", 5432);
        for option in [
            "rm -rf \"$PGDATA\"/*",
            "--host db01",
            "--username replication_user",
            "--wal-method stream",
            "--write-recovery-conf",
            "--slot=rideshare_slot",
            "--checkpoint=fast",
        ] {
            assert!(script.contains(option), "{option} missing from {script}");
        }
        assert!(
            script.find("rm -rf").unwrap() < script.find("pg_basebackup").unwrap(),
            "the directory is emptied first, and the backup runs only if that worked (&&)"
        );
    }

    #[test]
    fn there_is_a_title_per_step() {
        assert_eq!(TITLES.len(), STEPS);
        assert!(TITLES.iter().all(|t| !t.is_empty()));
    }

    #[test]
    fn failures_name_the_step_and_what_to_do() {
        let failed = StepFailed {
            step: 7,
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
