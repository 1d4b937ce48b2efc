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

/// Removes the Unix-socket lock files (`.s.PGSQL.PORT.lock`) in `dir` that name `pid`.
pub(super) fn remove_socket_locks(dir: &std::path::Path, pid: i32) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !(name.starts_with(".s.PGSQL.") && name.ends_with(".lock")) {
            continue;
        }
        let names_pid = std::fs::read_to_string(entry.path())
            .ok()
            .and_then(|text| text.lines().next().map(|l| l.trim().parse() == Ok(pid)))
            .unwrap_or(false);
        if names_pid {
            std::fs::remove_file(entry.path())
                .map_err(|e| anyhow::anyhow!("cannot remove {}: {e}", entry.path().display()))?;
        }
    }
    Ok(())
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

    #[test]
    fn removes_only_the_socket_locks_of_the_dead_postmaster() {
        let dir = std::env::temp_dir().join(format!("pgrepl-socket-locks-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let write = |name: &str, text: &str| std::fs::write(dir.join(name), text).unwrap();
        write(".s.PGSQL.5432.lock", "4242\n/data\n");
        write(".s.PGSQL.5433.lock", "4343\n/other\n");
        write("postmaster.opts", "4242\n");
        remove_socket_locks(&dir, 4242).unwrap();
        let left = |name: &str| dir.join(name).exists();
        assert!(
            !left(".s.PGSQL.5432.lock"),
            "the dead postmaster's lock goes"
        );
        assert!(left(".s.PGSQL.5433.lock"), "another server's lock stays");
        assert!(left("postmaster.opts"), "not a socket lock");
        std::fs::remove_dir_all(&dir).unwrap();
        remove_socket_locks(&dir, 4242).expect("a directory that is gone is nothing to do");
    }
}
