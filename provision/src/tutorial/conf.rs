//! Step 3: the WAL settings in `postgresql.conf`, edited as text (the tutorial downloads the
//! file, edits it and uploads it back), reporting whether a restart-only setting changed so
//! the primary is restarted only when it must be.

/// The settings step 3 makes sure of. All of them take effect only at server start. The
/// tutorial's four are PostgreSQL's defaults already; `wal_log_hints` is not, and is there
/// because `pg_rewind` (switchover, failover, rejoin) needs it on a node whose data pages
/// have no checksums, as initdb makes them by default.
pub const WAL_SETTINGS: &[(&str, &str)] = &[
    ("wal_level", "replica"),
    ("max_wal_senders", "10"),
    ("max_replication_slots", "10"),
    ("hot_standby", "on"),
    ("wal_log_hints", "on"),
];

/// The result of editing a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edited {
    pub text: String,
    /// Settings whose value in the file changed (a restart is needed for them to apply).
    pub changed: Vec<String>,
}

/// The value a line sets for `name`, if it is an active (uncommented) assignment of it.
fn assigned<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let rest = line.trim_start().strip_prefix(name)?;
    if !rest.starts_with([' ', '\t', '=']) {
        return None; // a longer name that starts with `name`
    }
    let rest = rest.trim_start();
    let rest = rest.strip_prefix('=').unwrap_or(rest);
    let value = rest.split('#').next().unwrap_or("").trim();
    Some(value.trim_matches('\''))
}

/// Sets each `(name, value)`: the last active assignment is replaced (later lines win in
/// PostgreSQL), or the setting is appended. Comments and other lines are kept as they are.
pub fn set_settings(text: &str, settings: &[(&str, &str)]) -> Edited {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let mut changed = Vec::new();
    let mut appended = Vec::new();
    for (name, value) in settings {
        let last = lines.iter().rposition(|l| assigned(l, name).is_some());
        match last {
            Some(i) if assigned(&lines[i], name) == Some(value) => {}
            Some(i) => {
                lines[i] = format!("{name} = '{value}'");
                changed.push((*name).to_owned());
            }
            None => {
                appended.push(format!("{name} = '{value}'"));
                changed.push((*name).to_owned());
            }
        }
    }
    if !appended.is_empty() {
        lines.push("# set by pgrepl-proxy provision (tutorial step 3)".to_owned());
        lines.extend(appended);
    }
    let mut text = lines.join("\n");
    text.push('\n');
    Edited { text, changed }
}

/// Removes every active assignment of each of `names` (as `ALTER SYSTEM RESET` would in
/// `postgresql.auto.conf`, for a server that is not running).
pub fn unset_settings(text: &str, names: &[&str]) -> Edited {
    let mut changed = Vec::new();
    let kept: Vec<&str> = text
        .lines()
        .filter(
            |line| match names.iter().find(|n| assigned(line, n).is_some()) {
                Some(name) => {
                    if !changed.iter().any(|c| c == name) {
                        changed.push((*name).to_owned());
                    }
                    false
                }
                None => true,
            },
        )
        .collect();
    let mut text = kept.join("\n");
    text.push('\n');
    Edited { text, changed }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "# comment\n#wal_level = replica\t\t# minimal, replica, or logical\n\
                          max_connections = 100\nshared_buffers = 128MB\n";

    #[test]
    fn appends_settings_that_are_only_commented() {
        let edited = set_settings(SAMPLE, &[("wal_level", "replica")]);
        assert_eq!(edited.changed, vec!["wal_level"]);
        assert!(edited.text.starts_with(SAMPLE), "existing lines are kept");
        assert!(edited.text.ends_with("wal_level = 'replica'\n"));
    }

    #[test]
    fn replaces_the_last_active_assignment() {
        let text = "wal_level = minimal\nmax_connections = 100\nwal_level = logical # later wins\n";
        let edited = set_settings(text, &[("wal_level", "replica")]);
        assert_eq!(edited.changed, vec!["wal_level"]);
        assert_eq!(
            edited.text,
            "wal_level = minimal\nmax_connections = 100\nwal_level = 'replica'\n"
        );
    }

    #[test]
    fn an_equal_value_is_no_change_so_no_restart() {
        let text = "wal_level = 'replica'\nmax_wal_senders=10\nmax_replication_slots = 10\nhot_standby = on\nwal_log_hints = on\n";
        let edited = set_settings(text, WAL_SETTINGS);
        assert!(edited.changed.is_empty(), "{:?}", edited.changed);
        assert_eq!(edited.text, text);
        // Editing again is idempotent.
        assert_eq!(set_settings(&edited.text, WAL_SETTINGS), edited);
    }

    #[test]
    fn unsetting_removes_every_active_assignment_only() {
        let text = "# Do not edit\nprimary_slot_name = 'x'\n#default_transaction_read_only = on\n\
                    default_transaction_read_only = 'on'\ndefault_transaction_read_only = 'on'\n";
        let edited = unset_settings(text, &["default_transaction_read_only"]);
        assert_eq!(edited.changed, ["default_transaction_read_only"]);
        assert_eq!(
            edited.text,
            "# Do not edit\nprimary_slot_name = 'x'\n#default_transaction_read_only = on\n"
        );
        assert!(
            unset_settings(&edited.text, &["default_transaction_read_only"])
                .changed
                .is_empty()
        );
    }

    #[test]
    fn names_are_matched_whole() {
        let text = "max_wal_senders_extra = 3\n";
        let edited = set_settings(text, &[("max_wal_senders", "10")]);
        assert_eq!(edited.changed, vec!["max_wal_senders"]);
        assert!(edited.text.contains("max_wal_senders_extra = 3\n"));
        assert!(edited.text.ends_with("max_wal_senders = '10'\n"));
    }
}
