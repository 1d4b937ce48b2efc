//! The admin console's language: a query is one or more commands separated by `;`, each a
//! keyword and at most one argument (PgBouncer's grammar). Names follow PostgreSQL's rules:
//! unquoted ones are folded to lower case, `"Quoted"` ones kept as written. `--` and `/* */`
//! comments are skipped.

use crate::protocol::sqlstate;
use crate::protocol::write::ProxyError;

/// What a `SHOW` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Show {
    Pools,
    Clients,
    Servers,
    Stats,
    StatsTotals,
    StatsAverages,
    Totals,
    Databases,
    Config,
    Lists,
    Users,
    State,
    Version,
    Backends,
    Routes,
}

impl Show {
    const NAMES: [(&'static str, Show); 15] = [
        ("pools", Show::Pools),
        ("clients", Show::Clients),
        ("servers", Show::Servers),
        ("stats", Show::Stats),
        ("stats_totals", Show::StatsTotals),
        ("stats_averages", Show::StatsAverages),
        ("totals", Show::Totals),
        ("databases", Show::Databases),
        ("config", Show::Config),
        ("lists", Show::Lists),
        ("users", Show::Users),
        ("state", Show::State),
        ("version", Show::Version),
        ("backends", Show::Backends),
        ("routes", Show::Routes),
    ];

    fn named(word: &str) -> Option<Show> {
        Self::NAMES
            .iter()
            .find(|(name, _)| *name == word)
            .map(|(_, show)| *show)
    }
}

/// PgBouncer's `SHOW` variants this proxy has nothing to show for.
const UNSUPPORTED_SHOWS: &[&str] = &[
    "fds",
    "sockets",
    "active_sockets",
    "mem",
    "dns_hosts",
    "dns_zones",
    "peers",
    "peer_pools",
];

/// PgBouncer's commands this proxy does not have.
const UNSUPPORTED_COMMANDS: &[&str] = &[
    "set",
    "suspend",
    "disable",
    "enable",
    "reconnect",
    "wait_close",
    "select",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `SHOW HELP`: a notice listing the commands.
    Help,
    Show(Show),
    /// `PAUSE [database]`: None pauses every database.
    Pause(Option<String>),
    /// `RESUME [database]`: None lifts every pause.
    Resume(Option<String>),
    /// `KILL client_id` (also spelled `KILL_CLIENT`).
    Kill(u64),
    Reload,
    Shutdown,
    /// `HOLD WRITES`: units on the write lease outside a transaction wait.
    HoldWrites,
    /// `RELEASE WRITES`: lifts this console session's hold.
    ReleaseWrites,
}

/// One word of a command: a keyword or name, and whether it was quoted.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Word {
    text: String,
    quoted: bool,
}

/// The commands of a query, in order; an error names the first one that is wrong, and then
/// none runs. An empty list is an empty query.
pub fn parse(sql: &str) -> Result<Vec<Command>, ProxyError> {
    statements(sql)
        .map_err(|err| unsupported_lead(sql).unwrap_or(err))?
        .iter()
        .filter(|words| !words.is_empty())
        .map(|words| command(words, sql))
        .collect()
}

fn syntax(sql: &str) -> ProxyError {
    ProxyError::error(
        sqlstate::SYNTAX_ERROR,
        format!("invalid command \"{}\", use SHOW HELP;", sql.trim()),
    )
}

fn unsupported(what: &str) -> ProxyError {
    ProxyError::error(
        sqlstate::FEATURE_NOT_SUPPORTED,
        format!("{what} is not supported by the pgrepl-proxy admin console (see SHOW HELP)"),
    )
}

/// A query that starts with one of PgBouncer's commands this proxy lacks, whatever follows
/// (`SET key = 'value'` has words the console's grammar does not).
fn unsupported_lead(sql: &str) -> Option<ProxyError> {
    let first: String = sql
        .trim_start()
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect::<String>()
        .to_lowercase();
    UNSUPPORTED_COMMANDS
        .contains(&first.as_str())
        .then(|| unsupported(&first.to_ascii_uppercase()))
}

fn command(words: &[Word], sql: &str) -> Result<Command, ProxyError> {
    let keyword = &words[0];
    if keyword.quoted {
        return Err(syntax(sql));
    }
    let argument = words.get(1);
    if words.len() > 2 {
        // Only SHUTDOWN WAIT_FOR_... and SET take more in PgBouncer.
        return match keyword.text.as_str() {
            word @ "set" => Err(unsupported(&word.to_ascii_uppercase())),
            _ => Err(syntax(sql)),
        };
    }
    let name = argument.map(|w| w.text.clone());
    match (keyword.text.as_str(), argument) {
        ("show", Some(what)) if !what.quoted && what.text == "help" => Ok(Command::Help),
        ("show", Some(what)) if !what.quoted => match Show::named(&what.text) {
            Some(show) => Ok(Command::Show(show)),
            None if UNSUPPORTED_SHOWS.contains(&what.text.as_str()) => Err(unsupported(&format!(
                "SHOW {}",
                what.text.to_ascii_uppercase()
            ))),
            None => Err(syntax(sql)),
        },
        ("pause", _) => Ok(Command::Pause(name)),
        ("resume", _) => Ok(Command::Resume(name)),
        ("kill" | "kill_client", Some(id)) => match id.text.parse::<u64>() {
            Ok(id) if !words[1].quoted => Ok(Command::Kill(id)),
            _ if keyword.text == "kill" => Err(unsupported(
                "KILL of a database's clients (KILL takes a client id from SHOW CLIENTS)",
            )),
            _ => Err(syntax(sql)),
        },
        ("reload", None) => Ok(Command::Reload),
        ("hold", Some(what)) if !what.quoted && what.text == "writes" => Ok(Command::HoldWrites),
        ("release", Some(what)) if !what.quoted && what.text == "writes" => {
            Ok(Command::ReleaseWrites)
        }
        ("shutdown", None) => Ok(Command::Shutdown),
        ("shutdown", Some(mode)) if !mode.quoted && mode.text.starts_with("wait_for_") => Err(
            unsupported(&format!("SHUTDOWN {}", mode.text.to_ascii_uppercase())),
        ),
        (word, _) if UNSUPPORTED_COMMANDS.contains(&word) => {
            Err(unsupported(&word.to_ascii_uppercase()))
        }
        _ => Err(syntax(sql)),
    }
}

/// The words of each `;`-separated statement.
fn statements(sql: &str) -> Result<Vec<Vec<Word>>, ProxyError> {
    let mut statements = vec![Vec::new()];
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            ';' => statements.push(Vec::new()),
            c if c.is_whitespace() => {}
            '-' if chars.peek() == Some(&'-') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut last = ' ';
                loop {
                    match chars.next() {
                        Some('/') if last == '*' => break,
                        Some(c) => last = c,
                        None => return Err(syntax(sql)),
                    }
                }
            }
            '"' => {
                let mut text = String::new();
                loop {
                    match chars.next() {
                        Some('"') if chars.peek() == Some(&'"') => {
                            chars.next();
                            text.push('"');
                        }
                        Some('"') => break,
                        Some(c) => text.push(c),
                        None => return Err(syntax(sql)),
                    }
                }
                if text.is_empty() {
                    return Err(syntax(sql));
                }
                push(&mut statements, Word { text, quoted: true });
            }
            c if c.is_alphanumeric() || c == '_' => {
                let mut text = c.to_lowercase().collect::<String>();
                while let Some(&c) = chars.peek() {
                    if !(c.is_alphanumeric() || c == '_' || c == '$') {
                        break;
                    }
                    text.extend(c.to_lowercase());
                    chars.next();
                }
                push(
                    &mut statements,
                    Word {
                        text,
                        quoted: false,
                    },
                );
            }
            _ => return Err(syntax(sql)),
        }
    }
    Ok(statements)
}

fn push(statements: &mut [Vec<Word>], word: Word) {
    if let Some(last) = statements.last_mut() {
        last.push(word);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_as_pgbouncer_spells_them() {
        use Command::*;
        let db = |name: &str| Some(name.to_owned());
        let cases: &[(&str, &[Command])] = &[
            ("SHOW POOLS", &[Show(super::Show::Pools)]),
            ("show pools;", &[Show(super::Show::Pools)]),
            ("  Show Stats_Totals ; ", &[Show(super::Show::StatsTotals)]),
            (
                "SHOW CLIENTS; SHOW SERVERS",
                &[Show(super::Show::Clients), Show(super::Show::Servers)],
            ),
            (
                "-- a comment\nSHOW /* inline */ VERSION",
                &[Show(super::Show::Version)],
            ),
            ("SHOW backends", &[Show(super::Show::Backends)]),
            ("SHOW ROUTES", &[Show(super::Show::Routes)]),
            ("show help", &[Help]),
            ("PAUSE", &[Pause(None)]),
            ("PAUSE appdb", &[Pause(db("appdb"))]),
            ("hold writes; RELEASE Writes", &[HoldWrites, ReleaseWrites]),
            ("pause AppDb", &[Pause(db("appdb"))]),
            ("PAUSE \"My\"\"Db\"", &[Pause(db("My\"Db"))]),
            ("RESUME", &[Resume(None)]),
            ("resume appdb;", &[Resume(db("appdb"))]),
            ("KILL 42", &[Kill(42)]),
            ("KILL_CLIENT 7", &[Kill(7)]),
            ("RELOAD", &[Reload]),
            ("SHUTDOWN;", &[Shutdown]),
            ("", &[]),
            (" ; ;", &[]),
        ];
        for (sql, expected) in cases {
            assert_eq!(parse(sql).as_deref(), Ok(*expected), "{sql:?}");
        }
    }

    #[test]
    fn unknown_commands_are_syntax_errors_and_pgbouncer_ones_unsupported() {
        let cases: &[(&str, &str)] = &[
            ("SELECT 1", sqlstate::FEATURE_NOT_SUPPORTED),
            ("select * from pg_class", sqlstate::FEATURE_NOT_SUPPORTED),
            ("SET x TO 'y'", sqlstate::FEATURE_NOT_SUPPORTED),
            ("SHOW FDS", sqlstate::FEATURE_NOT_SUPPORTED),
            ("SUSPEND", sqlstate::FEATURE_NOT_SUPPORTED),
            ("SET log_connections = 1", sqlstate::FEATURE_NOT_SUPPORTED),
            ("KILL appdb", sqlstate::FEATURE_NOT_SUPPORTED),
            ("SHUTDOWN WAIT_FOR_CLIENTS", sqlstate::FEATURE_NOT_SUPPORTED),
            ("SHOW NOTHING", sqlstate::SYNTAX_ERROR),
            ("SHOW", sqlstate::SYNTAX_ERROR),
            ("FROBNICATE", sqlstate::SYNTAX_ERROR),
            ("SHOW POOLS please", sqlstate::SYNTAX_ERROR),
            ("KILL_CLIENT x", sqlstate::SYNTAX_ERROR),
            ("KILL", sqlstate::SYNTAX_ERROR),
            ("RELOAD now", sqlstate::SYNTAX_ERROR),
            ("SHOW 'pools'", sqlstate::SYNTAX_ERROR),
            ("PAUSE \"unterminated", sqlstate::SYNTAX_ERROR),
            ("SHOW /* open", sqlstate::SYNTAX_ERROR),
            ("\"show\" pools", sqlstate::SYNTAX_ERROR),
            ("SHOW POOLS; FROBNICATE", sqlstate::SYNTAX_ERROR),
        ];
        for (sql, code) in cases {
            match parse(sql) {
                Err(err) => assert_eq!(err.code, *code, "{sql:?}: {err}"),
                Ok(commands) => panic!("{sql:?} parsed as {commands:?}"),
            }
        }
    }
}
