//! A client's startup parameters, split in two: those a connection must be opened with (they
//! key the pool), and those the proxy applies with `set_config` on whichever connection the
//! client leases (application_name, client_encoding, DateStyle, TimeZone, `-c` settings of
//! `options`...), so that clients that differ only in those share pooled connections.

/// Parameters PostgreSQL accepts only at connection start (`backend` and
/// `superuser-backend` contexts): a connection must be opened with them.
const START_ONLY: &[&str] = &[
    "ignore_system_indexes",
    "jit_debugging_support",
    "jit_profiling_support",
    "log_connections",
    "log_disconnections",
    "post_auth_delay",
];

/// The startup parameters of a client (without `user` and `database`), split.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Split {
    /// Opened with; part of the pool key. Sorted by name.
    pub fixed: Vec<(String, String)>,
    /// Applied on lease, in the order the server applies them at startup (`options`
    /// first, then the others as given).
    pub settings: Vec<(String, String)>,
}

/// Splits `params` (the startup packet's, without `user`, `database` and `replication`).
pub fn split(params: Vec<(String, String)>) -> Split {
    let mut split = Split::default();
    let mut named = Vec::new();
    for (name, value) in params {
        if name == "options" {
            match option_settings(&value) {
                Some(settings) => split.settings.extend(settings),
                None => split.fixed.push((name, value)),
            }
        } else if settable(&name) {
            named.push((name, value));
        } else {
            split.fixed.push((name, value));
        }
    }
    split.settings.extend(named);
    split.fixed.sort();
    split
}

fn settable(name: &str) -> bool {
    !START_ONLY.iter().any(|p| p.eq_ignore_ascii_case(name))
}

/// The `-c name=value` and `--name=value` settings of an `options` value, split into words
/// as PostgreSQL does (whitespace separates, a backslash takes the next character as is);
/// None if it has anything else (other switches, start-only settings), which the server
/// must see at startup.
fn option_settings(options: &str) -> Option<Vec<(String, String)>> {
    let mut words = option_words(options).into_iter();
    let mut settings = Vec::new();
    while let Some(word) = words.next() {
        let setting = if word == "-c" {
            words.next()?
        } else if let Some(rest) = word.strip_prefix("-c").or_else(|| word.strip_prefix("--")) {
            rest.to_owned()
        } else {
            return None;
        };
        let (name, value) = setting.split_once('=')?;
        let name = name.replace('-', "_");
        if name.is_empty() || !settable(&name) {
            return None;
        }
        settings.push((name, value.to_owned()));
    }
    Some(settings)
}

fn option_words(options: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut chars = options.chars();
    let mut word = String::new();
    let mut in_word = false;
    while let Some(c) = chars.next() {
        match c {
            c if c.is_ascii_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\\' => {
                in_word = true;
                word.extend(chars.next());
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn settable_parameters_are_applied_on_lease_and_the_rest_keys_the_pool() {
        for (params, fixed, settings) in [
            (
                vec![("application_name", "psql"), ("client_encoding", "UTF8")],
                vec![],
                vec![("application_name", "psql"), ("client_encoding", "UTF8")],
            ),
            (
                vec![
                    ("datestyle", "Postgres, MDY"),
                    (
                        "options",
                        "-c search_path=a,b --work-mem=8MB -cstatement_timeout=5s",
                    ),
                ],
                vec![],
                vec![
                    ("search_path", "a,b"),
                    ("work_mem", "8MB"),
                    ("statement_timeout", "5s"),
                    ("datestyle", "Postgres, MDY"),
                ],
            ),
            (
                vec![("options", "-c search_path=my\\ schema")],
                vec![],
                vec![("search_path", "my schema")],
            ),
            (
                vec![("options", "-c log_connections=on"), ("TimeZone", "UTC")],
                vec![("options", "-c log_connections=on")],
                vec![("TimeZone", "UTC")],
            ),
            (
                vec![("options", "-P -c work_mem=1MB")],
                vec![("options", "-P -c work_mem=1MB")],
                vec![],
            ),
            (vec![("options", "-c")], vec![("options", "-c")], vec![]),
            (
                vec![("log_disconnections", "on"), ("options", "  ")],
                vec![("log_disconnections", "on")],
                vec![],
            ),
        ] {
            let given = pairs(&params);
            assert_eq!(
                split(given),
                Split {
                    fixed: pairs(&fixed),
                    settings: pairs(&settings),
                },
                "{params:?}"
            );
        }
    }
}
