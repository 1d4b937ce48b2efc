//! The tutorial's verification (step 11), and the fuller `verify` command: each replica
//! refuses writes, a row written on the primary appears on each, every replica's slot is
//! active and every replica streams.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::psql::{sql, try_sql, wait_until};
use crate::runtime::{NodeId, Runtime};
use crate::steps::Outcome;
use crate::topology::Topology;
use crate::tutorial::slot_name;

/// The replication state of the walsender serving `replica`'s slot ("streaming" when all is
/// well, "none" when nothing is connected through it).
pub fn streaming_sql(replica: NodeId) -> String {
    format!(
        "SELECT coalesce(max(r.state), 'none') \
         FROM pg_stat_replication r JOIN pg_replication_slots s ON s.active_pid = r.pid \
         WHERE s.slot_name = '{}'",
        slot_name(replica)
    )
}

/// How long a committed row may take to show up on a replica.
const REPLAY_TIMEOUT: Duration = Duration::from_secs(30);

/// What PostgreSQL says when a standby is asked to write (the tutorial shows this error).
const READ_ONLY_ERROR: &str = "read-only transaction";

/// Waits until `replica` streams from `primary` through its slot.
pub async fn wait_streaming<R: Runtime>(
    rt: &R,
    primary: NodeId,
    replica: NodeId,
    timeout: Duration,
) -> Result<()> {
    let what = format!("{replica} to stream from {primary}");
    let query = streaming_sql(replica);
    wait_until(&what, timeout, || async {
        Ok(sql(rt, primary, &query).await? == "streaming")
    })
    .await
}

/// Step 11 as the tutorial does it, on every replica: `CREATE TABLE` there fails; on the
/// primary `CREATE TABLE riders (id INT); INSERT INTO riders (id) VALUES (1);` and both
/// appear on each replica. When `riders` already exists the set was verified before: only
/// the checks run.
pub(crate) async fn tutorial_check<R: Runtime>(rt: &R, topology: &Topology) -> Result<Outcome> {
    for &replica in &topology.replicas {
        refuses_writes(rt, replica).await?;
    }
    let exists = "SELECT to_regclass('public.riders') IS NOT NULL";
    let outcome = if sql(rt, topology.primary, exists).await? == "t" {
        Outcome::AlreadyDone
    } else {
        sql(
            rt,
            topology.primary,
            "CREATE TABLE riders (id INT); INSERT INTO riders (id) VALUES (1);",
        )
        .await?;
        Outcome::Done(None)
    };
    for &replica in &topology.replicas {
        let what = format!("{replica} to show the riders table");
        wait_until(&what, REPLAY_TIMEOUT, || async {
            Ok(sql(rt, replica, exists).await? == "t")
        })
        .await?;
    }
    Ok(outcome)
}

/// `CREATE TABLE` on `replica` must fail because it is read-only (and for no other reason).
async fn refuses_writes<R: Runtime>(rt: &R, replica: NodeId) -> Result<String> {
    let out = try_sql(rt, replica, "CREATE TABLE pgrepl_verify_refused (id INT)").await?;
    if out.success() {
        bail!("{replica} accepted CREATE TABLE: it is not a read-only standby");
    }
    let message = out.message().to_owned();
    if !message.contains(READ_ONLY_ERROR) {
        bail!("CREATE TABLE on {replica} failed, but not as read-only: {message}");
    }
    Ok(message)
}

/// The tutorial's checks on every replica of `topology`, quietly: each refuses writes as
/// read-only, and a fresh `riders` row written on the primary appears on each (then is
/// deleted).
pub async fn check<R: Runtime>(rt: &R, topology: &Topology) -> Result<()> {
    for &replica in &topology.replicas {
        refuses_writes(rt, replica).await?;
    }
    row_round_trip(rt, topology).await.map(drop)
}

/// `pgrepl-proxy verify`: each check on its own line, four per replica; an error when one
/// fails.
pub async fn verify<R: Runtime>(rt: &R) -> Result<()> {
    let topology = Topology::discover(rt).await?;
    let p = topology.primary;
    for &replica in &topology.replicas {
        let refusal = refuses_writes(rt, replica).await?;
        println!("ok  {replica} refuses writes: {refusal}");
    }
    for (replica, replayed_in) in row_round_trip(rt, &topology).await? {
        println!(
            "ok  a row written on {p} was seen on {replica} after {} ms",
            replayed_in.as_millis()
        );
    }
    for &replica in &topology.replicas {
        let slot = slot_name(replica);
        let active = format!(
            "SELECT coalesce(max(active::text), 'missing') FROM pg_replication_slots \
             WHERE slot_name = '{slot}'"
        );
        match sql(rt, p, &active).await?.as_str() {
            "true" => println!("ok  slot {slot} is active"),
            "missing" => bail!("{p} has no replication slot {slot}"),
            _ => bail!("slot {slot} exists but nothing streams through it"),
        }
    }
    for &replica in &topology.replicas {
        let state = sql(rt, p, &streaming_sql(replica)).await?;
        if state != "streaming" {
            bail!("{replica}'s replication state is {state}, not streaming");
        }
        println!("ok  {replica} is streaming from {p}");
    }
    Ok(())
}

/// Inserts a fresh row into the tutorial's `riders` on the primary, waits for it on each
/// replica, then deletes it again so verifying leaves the data as it was. Returns how long it
/// took to show on each.
async fn row_round_trip<R: Runtime>(
    rt: &R,
    topology: &Topology,
) -> Result<Vec<(NodeId, Duration)>> {
    let p = topology.primary;
    let out = sql(
        rt,
        p,
        "CREATE TABLE IF NOT EXISTS riders (id INT); \
         INSERT INTO riders (id) SELECT coalesce(max(id), 0) + 1 FROM riders RETURNING id",
    )
    .await?;
    let Some(id) = out
        .lines()
        .last()
        .and_then(|l| l.trim().parse::<i64>().ok())
    else {
        bail!("inserting into riders on {p} returned {out:?}, not an id");
    };
    let written = Instant::now();
    let seen = format!("SELECT count(*) FROM riders WHERE id = {id}");
    let mut times = Vec::new();
    let mut result = Ok(());
    for &replica in &topology.replicas {
        let what = format!("the new row on {replica}");
        result = wait_until(&what, REPLAY_TIMEOUT, || async {
            Ok(sql(rt, replica, &seen).await? != "0")
        })
        .await;
        if result.is_err() {
            break;
        }
        times.push((replica, written.elapsed()));
    }
    sql(rt, p, &format!("DELETE FROM riders WHERE id = {id}")).await?;
    result.map(|()| times)
}
