//! The tutorial's verification (step 11), and the fuller `verify` command: db02 refuses
//! writes, a row written on db01 appears on db02, the slot is active and db02 streams.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::psql::{sql, try_sql, wait_until};
use crate::runtime::{Node, Runtime};
use crate::steps::Outcome;
use crate::tutorial::SLOT;

/// The replication state of the walsender serving the tutorial's slot ("streaming" when all is
/// well, "none" when nothing is connected through it).
pub const STREAMING_SQL: &str = "SELECT coalesce(max(r.state), 'none') \
     FROM pg_stat_replication r JOIN pg_replication_slots s ON s.active_pid = r.pid \
     WHERE s.slot_name = 'rideshare_slot'";

/// How long a committed row may take to show up on db02.
const REPLAY_TIMEOUT: Duration = Duration::from_secs(30);

/// What PostgreSQL says when a standby is asked to write (the tutorial shows this error).
const READ_ONLY_ERROR: &str = "read-only transaction";

/// Step 11 as the tutorial does it: `CREATE TABLE` on db02 fails; on db01
/// `CREATE TABLE riders (id INT); INSERT INTO riders (id) VALUES (1);` and both appear on db02.
/// When `riders` already exists the pair was verified before: only the checks run.
pub(crate) async fn tutorial_check<R: Runtime>(rt: &R) -> Result<Outcome> {
    refuses_writes(rt).await?;
    let exists = "SELECT to_regclass('public.riders') IS NOT NULL";
    let outcome = if sql(rt, Node::Primary, exists).await? == "t" {
        Outcome::AlreadyDone
    } else {
        sql(
            rt,
            Node::Primary,
            "CREATE TABLE riders (id INT); INSERT INTO riders (id) VALUES (1);",
        )
        .await?;
        Outcome::Done(None)
    };
    wait_until("db02 to show the riders table", REPLAY_TIMEOUT, || async {
        Ok(sql(rt, Node::Replica, exists).await? == "t")
    })
    .await?;
    Ok(outcome)
}

/// `CREATE TABLE` on db02 must fail because it is read-only (and for no other reason).
async fn refuses_writes<R: Runtime>(rt: &R) -> Result<String> {
    let out = try_sql(
        rt,
        Node::Replica,
        "CREATE TABLE pgrepl_verify_refused (id INT)",
    )
    .await?;
    if out.success() {
        bail!("db02 accepted CREATE TABLE: it is not a read-only standby");
    }
    let message = out.message().to_owned();
    if !message.contains(READ_ONLY_ERROR) {
        bail!("CREATE TABLE on db02 failed, but not as read-only: {message}");
    }
    Ok(message)
}

/// `pgrepl-proxy verify`: each check on its own line; an error when one fails.
pub async fn verify<R: Runtime>(rt: &R) -> Result<()> {
    let refusal = refuses_writes(rt).await?;
    println!("ok  db02 refuses writes: {refusal}");

    let replayed_in = row_round_trip(rt).await?;
    println!(
        "ok  a row written on db01 was seen on db02 after {} ms",
        replayed_in.as_millis()
    );

    let slot = format!(
        "SELECT coalesce(max(active::text), 'missing') FROM pg_replication_slots \
         WHERE slot_name = '{SLOT}'"
    );
    match sql(rt, Node::Primary, &slot).await?.as_str() {
        "true" => println!("ok  slot {SLOT} is active"),
        "missing" => bail!("db01 has no replication slot {SLOT}"),
        _ => bail!("slot {SLOT} exists but nothing streams through it"),
    }

    let state = sql(rt, Node::Primary, STREAMING_SQL).await?;
    if state != "streaming" {
        bail!("db02's replication state is {state}, not streaming");
    }
    println!("ok  db02 is streaming from db01");
    Ok(())
}

/// Inserts a fresh row into the tutorial's `riders` on db01, waits for it on db02, then
/// deletes it again so verifying leaves the data as it was. Returns how long it took to show.
async fn row_round_trip<R: Runtime>(rt: &R) -> Result<Duration> {
    let out = sql(
        rt,
        Node::Primary,
        "CREATE TABLE IF NOT EXISTS riders (id INT); \
         INSERT INTO riders (id) SELECT coalesce(max(id), 0) + 1 FROM riders RETURNING id",
    )
    .await?;
    let Some(id) = out
        .lines()
        .last()
        .and_then(|l| l.trim().parse::<i64>().ok())
    else {
        bail!("inserting into riders on db01 returned {out:?}, not an id");
    };
    let written = Instant::now();
    let seen = format!("SELECT count(*) FROM riders WHERE id = {id}");
    let result = wait_until("the new row on db02", REPLAY_TIMEOUT, || async {
        Ok(sql(rt, Node::Replica, &seen).await? != "0")
    })
    .await;
    let elapsed = written.elapsed();
    sql(
        rt,
        Node::Primary,
        &format!("DELETE FROM riders WHERE id = {id}"),
    )
    .await?;
    result.map(|()| elapsed)
}
