//! Killing a server as a crash would: SIGKILL to the postmaster's process group, and telling
//! when none of the group is left (read from `/proc`).

use anyhow::{bail, Result};

/// Sends SIGKILL to every process in the group `pgid`.
pub(super) fn kill_group(pgid: i32) -> Result<()> {
    if pgid <= 1 {
        bail!("refusing to signal process group {pgid}");
    }
    // SAFETY: kill(2) has no memory-safety preconditions; a negative pid names the group.
    if unsafe { libc::kill(-pgid, libc::SIGKILL) } != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ESRCH) {
            bail!("cannot kill process group {pgid}: {e}");
        }
    }
    Ok(())
}

/// Whether a live (not zombie) process of the group `pgid` is left.
pub(super) fn group_alive(pgid: i32) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .any(|stat| in_group_and_alive(&stat, pgid))
}

/// Whether `pid` is a zombie: dead, waiting for its parent to reap it.
pub(super) fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let (_, rest) = stat.rsplit_once(") ")?;
            rest.split_whitespace().next().map(|state| state == "Z")
        })
        .unwrap_or(false)
}

/// Parses a `/proc/PID/stat` line: its state and process group follow the command name,
/// which is in parentheses and may itself hold spaces and parentheses.
fn in_group_and_alive(stat: &str, pgid: i32) -> bool {
    let Some((_, rest)) = stat.rsplit_once(") ") else {
        return false;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // state, ppid, pgrp
    matches!(fields.as_slice(), [state, _, group, ..]
        if *state != "Z" && *state != "X" && group.parse() == Ok(pgid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_state_and_group_after_the_command_name() {
        let line = "4242 (postgres: db01: walsender (x)) S 4200 4200 4200 0 -1";
        assert!(in_group_and_alive(line, 4200));
        assert!(!in_group_and_alive(line, 4242));
        let zombie = "4243 (postgres) Z 4200 4200 4200 0 -1";
        assert!(!in_group_and_alive(zombie, 4200), "a zombie holds nothing");
        assert!(!in_group_and_alive("garbage", 4200));
    }

    #[test]
    fn the_test_process_is_alive_in_its_group() {
        // SAFETY: getpgrp has no preconditions.
        let own = unsafe { libc::getpgrp() };
        assert!(group_alive(own));
        assert!(kill_group(1).is_err(), "never init's group");
    }
}
