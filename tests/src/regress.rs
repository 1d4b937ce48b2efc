//! PostgreSQL's own regression suite (src/test/regress of the installed server's version, the
//! schedule `make installcheck` runs: `parallel_schedule` one test at a time) run with
//! pg_regress against any address: a server, or the proxy in front of it. Comparing two runs
//! test by test shows where a client of the proxy sees something else than a client of the
//! server.

use crate::suite::run_with_timeout;
use anyhow::{bail, ensure, Context, Result};
use pgrepl_provision::local::pg_bin_dir;
use std::collections::BTreeMap;
use std::fs;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The superuser the suite runs as: the bootstrap superuser, as in `make installcheck` (the
/// suite creates and drops the `regression` database, roles, tablespaces and C functions, and
/// the sequence test expects to own the system catalogs). It logs in over TCP, so the cluster
/// the suite runs on gives it a password ([`superuser_password_sql`]).
pub const SUPERUSER: &str = crate::roles::SUPERUSER;
pub const SUPERUSER_PASSWORD: &str = "regress-pass";

/// Gives [`SUPERUSER`] its password, as a psql script run on the primary by that superuser.
pub fn superuser_password_sql() -> String {
    format!(
        "SET password_encryption = 'scram-sha-256';\n\
         ALTER ROLE {SUPERUSER} PASSWORD '{SUPERUSER_PASSWORD}';\n"
    )
}

/// The `[[users]]` entry that lets [`SUPERUSER`] through a proxy.
pub fn proxy_user_toml() -> String {
    format!("\n[[users]]\nname = \"{SUPERUSER}\"\npassword = \"{SUPERUSER_PASSWORD}\"\n")
}

/// The regression suite of the installed server, prepared by `scripts/install-regress.sh`.
#[derive(Debug, Clone)]
pub struct Suite {
    /// src/test/regress of the server's source, with the test modules built beside it.
    pub dir: PathBuf,
}

/// How one test of a run ended, as pg_regress reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Failed,
}

/// One pg_regress run.
#[derive(Debug)]
pub struct Run {
    /// Where pg_regress wrote `regression.out`, `regression.diffs` and `results/`.
    pub out_dir: PathBuf,
    pub outcomes: BTreeMap<String, Outcome>,
    pub duration: Duration,
    /// pg_regress's standard output (the test list with each outcome) and errors.
    pub log: String,
}

impl Run {
    /// The output of test `name` in this run.
    pub fn result_file(&self, name: &str) -> PathBuf {
        self.out_dir.join("results").join(format!("{name}.out"))
    }
}

impl Suite {
    /// Runs `scripts/install-regress.sh`, which prepares the suite once (as root; later calls
    /// only print where it is). Fails, not skips, when it cannot: the test needs it.
    pub fn prepare() -> Result<Suite> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/install-regress.sh");
        let out = Command::new("bash")
            .arg(&script)
            .output()
            .with_context(|| format!("cannot run {}", script.display()))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        ensure!(
            out.status.success(),
            "{} failed ({}):\n{}{}",
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr),
            stdout
        );
        let dir = PathBuf::from(stdout.lines().last().unwrap_or_default().trim());
        ensure!(
            dir.join("parallel_schedule").is_file() && dir.join("regress.so").is_file(),
            "{} printed {}, which holds no prepared suite",
            script.display(),
            dir.display()
        );
        Ok(Suite { dir })
    }

    /// Runs the whole schedule one test at a time against `addr` as [`SUPERUSER`], writing into
    /// `out_dir` (emptied first), killed after `timeout`. The servers write into `out_dir` too
    /// (server-side `COPY ... TO`), so it must be a directory they can reach.
    pub fn run(&self, addr: SocketAddr, out_dir: &Path, timeout: Duration) -> Result<Run> {
        if out_dir.exists() {
            fs::remove_dir_all(out_dir)
                .with_context(|| format!("cannot empty {}", out_dir.display()))?;
        }
        fs::create_dir_all(out_dir)?;
        // pg_regress runs as the server's user when we are root (below); it and the servers
        // create files here.
        fs::set_permissions(out_dir, fs::Permissions::from_mode(0o777))?;
        let bin = pg_bin_dir()?;
        let pg_regress = bin.join("../lib/pgxs/src/test/regress/pg_regress");
        ensure!(
            pg_regress.is_file(),
            "no {} (postgresql-client ships it)",
            pg_regress.display()
        );
        let mut cmd = as_server_user("timeout");
        cmd.arg("--kill-after=10s")
            .arg(format!("{}s", timeout.as_secs()))
            .arg(&pg_regress)
            .arg(format!("--inputdir={}", self.dir.display()))
            .arg(format!("--outputdir={}", out_dir.display()))
            .arg(format!("--bindir={}", bin.display()))
            .arg(format!("--dlpath={}", self.dir.display()))
            .arg(format!(
                "--schedule={}",
                self.dir.join("parallel_schedule").display()
            ))
            // What `make installcheck` passes.
            .args(["--max-connections=1", "--max-concurrent-tests=20"])
            .arg(format!("--host={}", addr.ip()))
            .arg(format!("--port={}", addr.port()))
            .arg(format!("--user={SUPERUSER}"))
            .current_dir(out_dir)
            .env("PGPASSWORD", SUPERUSER_PASSWORD)
            .env("PGPASSFILE", "/dev/null")
            .env("PGCONNECT_TIMEOUT", "30");
        for var in [
            "PGSERVICE",
            "PGOPTIONS",
            "PGSSLMODE",
            "PGDATABASE",
            "PGAPPNAME",
        ] {
            cmd.env_remove(var);
        }
        let started = Instant::now();
        // The backstop in case `timeout` itself hangs.
        let done = run_with_timeout(cmd, b"", timeout + Duration::from_secs(60))?;
        let duration = started.elapsed();
        let log = format!("{}{}", String::from_utf8_lossy(&done.stdout), done.stderr);
        let outcomes = parse_outcomes(&log);
        if outcomes.is_empty() {
            bail!("pg_regress ran no test against {addr}:\n{log}");
        }
        Ok(Run {
            out_dir: out_dir.to_owned(),
            outcomes,
            duration,
            log,
        })
    }
}

/// Copies what a reader of a failed comparison needs out of `first` and `second` (whose
/// directories go with the test's scratch directory) into `dest`: each run's summary and
/// `regression.diffs` (against the expected outputs) under `<label>/`, and for each test in
/// `names` the difference between the two runs' outputs, `<name>.diff`.
pub fn keep(runs: [(&str, &Run); 2], names: &[&str], dest: &Path) -> Result<()> {
    if dest.exists() {
        fs::remove_dir_all(dest)?;
    }
    for (label, run) in runs {
        let dir = dest.join(label);
        fs::create_dir_all(&dir)?;
        fs::write(dir.join("pg_regress.log"), &run.log)?;
        let diffs = run.out_dir.join("regression.diffs");
        if diffs.is_file() {
            fs::copy(&diffs, dir.join("regression.diffs"))?;
        }
    }
    let [(first_label, first), (second_label, second)] = runs;
    for name in names {
        let out = Command::new("diff")
            .arg("-u")
            .arg(format!("--label={first_label}/{name}.out"))
            .arg(format!("--label={second_label}/{name}.out"))
            .arg(first.result_file(name))
            .arg(second.result_file(name))
            .output()
            .context("cannot run diff")?;
        let mut text = out.stdout;
        text.extend_from_slice(&out.stderr);
        fs::write(dest.join(format!("{name}.diff")), text)?;
    }
    Ok(())
}

/// `program` run as `postgres` when we are root (the servers' user, who must be able to write
/// what pg_regress and the servers write into one directory), else as ourselves.
fn as_server_user(program: &str) -> Command {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Command::new(program);
    }
    let mut cmd = Command::new("runuser");
    cmd.args(["-u", "postgres", "--", program]);
    cmd
}

/// The outcome of every test in pg_regress's output: lines such as
/// `test tablespace ... ok 178 ms`, `     boolean ... FAILED 54 ms`,
/// `     foo ... failed (ignored)`; anything else is not a test's line.
pub fn parse_outcomes(log: &str) -> BTreeMap<String, Outcome> {
    log.lines()
        .filter_map(|line| {
            let (name, rest) = line.split_once(" ... ")?;
            let name = name.trim();
            let name = name.strip_prefix("test ").unwrap_or(name).trim();
            let outcome = match rest.split_whitespace().next()? {
                "ok" => Outcome::Ok,
                "FAILED" | "failed" => Outcome::Failed,
                _ => return None,
            };
            (!name.is_empty() && !name.contains(' ')).then(|| (name.to_owned(), outcome))
        })
        .collect()
}

/// Why a test of the second run is not what it was in the first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Difference {
    /// Passed in the first run, failed in the second (or the other way round).
    Outcome { first: Outcome, second: Outcome },
    /// Ran in one run only (the other was cut short).
    Missing { in_first: bool },
}

/// The tests whose outcome differs between two runs of the same schedule, by name.
///
/// Outcomes, not outputs, are compared: pg_regress already accepts each test's alternative
/// expected outputs, and a test that fails in both runs fails for the server's reasons.
pub fn differences(
    first: &BTreeMap<String, Outcome>,
    second: &BTreeMap<String, Outcome>,
) -> BTreeMap<String, Difference> {
    let mut names: Vec<&String> = first.keys().chain(second.keys()).collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .filter_map(|name| {
            let difference = match (first.get(name), second.get(name)) {
                (Some(&a), Some(&b)) if a == b => return None,
                (Some(&first), Some(&second)) => Difference::Outcome { first, second },
                (Some(_), None) => Difference::Missing { in_first: true },
                (None, _) => Difference::Missing { in_first: false },
            };
            Some((name.clone(), difference))
        })
        .collect()
}

/// A known-differences file: the tests, or the outputs, whose difference is known and not
/// fixed yet.
///
/// One entry a line; `#` starts a comment (the cause is written there):
/// - `NAME`: test NAME differs;
/// - `NAME flaky`: test NAME may differ, depending on timing (where a read lands), so a run
///   where it does not is no news;
/// - `output: TEXT`: every test whose output through the proxy contains TEXT differs for a
///   known cause (an error message), whichever tests that is in a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Known(Vec<Entry>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    /// `routing`: the test may also differ through a proxy that pools nothing, since reads
    /// the replica served are not the primary's.
    Test {
        name: String,
        flaky: bool,
        routing: bool,
    },
    Output(String),
}

/// What a run's differences say about a [`Known`] list.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Differing tests no entry explains.
    pub new: Vec<String>,
    /// Entries (not flaky) that explain no differing test: fixed, to be removed.
    pub fixed: Vec<String>,
}

impl Known {
    pub fn parse(text: &str) -> Known {
        let entries = text
            .lines()
            .filter_map(|line| {
                let line = line.split('#').next().unwrap_or_default().trim();
                if let Some(output) = line.strip_prefix("output:") {
                    return Some(Entry::Output(output.trim().to_owned()));
                }
                let mut words = line.split_whitespace();
                let name = words.next()?.to_owned();
                let tags: Vec<&str> = words.collect();
                Some(Entry::Test {
                    name,
                    flaky: tags.contains(&"flaky"),
                    routing: tags.contains(&"routing"),
                })
            })
            .collect();
        Known(entries)
    }

    /// The tests that may differ whatever the pooling, because of where reads run.
    pub fn routing(&self) -> Vec<&str> {
        self.0
            .iter()
            .filter_map(|e| match e {
                Entry::Test {
                    name,
                    routing: true,
                    ..
                } => Some(name.as_str()),
                _ => None,
            })
            .collect()
    }

    /// Compares the tests that differ with the list; `output_of(name)` is a differing test's
    /// output in the second run.
    pub fn check(&self, differing: &[&str], output_of: impl Fn(&str) -> String) -> Verdict {
        let outputs: Vec<(&str, String)> = differing.iter().map(|&n| (n, output_of(n))).collect();
        let explains = |entry: &Entry, name: &str, output: &str| match entry {
            Entry::Test { name: listed, .. } => listed == name,
            Entry::Output(text) => output.contains(text.as_str()),
        };
        let new = outputs
            .iter()
            .filter(|(name, output)| !self.0.iter().any(|e| explains(e, name, output)))
            .map(|(name, _)| name.to_string())
            .collect();
        let fixed = self
            .0
            .iter()
            .filter(|e| !matches!(e, Entry::Test { flaky: true, .. }))
            .filter(|e| {
                !outputs
                    .iter()
                    .any(|(name, output)| explains(e, name, output))
            })
            .map(|e| match e {
                Entry::Test { name, .. } => name.clone(),
                Entry::Output(text) => format!("output: {text}"),
            })
            .collect();
        Verdict { new, fixed }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_are_read_from_the_lines_of_each_test() {
        let log = "\
            parallel group (20 tests, in groups of 1):  brin gin\n\
            test tablespace                   ... ok          178 ms\n\
            \x20    boolean                      ... FAILED       54 ms\n\
            \x20    char                         ... ok           22 ms\n\
            \x20    random                       ... failed (ignored)       22 ms\n\
            test select_parallel              ... FAILED (test process exited with exit code 2)  9 ms\n\
            ============== running regression test queries        ==============\n\
            \x20    weird ... something else\n";
        let outcomes = parse_outcomes(log);
        let expected: BTreeMap<String, Outcome> = [
            ("tablespace", Outcome::Ok),
            ("boolean", Outcome::Failed),
            ("char", Outcome::Ok),
            ("random", Outcome::Failed),
            ("select_parallel", Outcome::Failed),
        ]
        .into_iter()
        .map(|(n, o)| (n.to_owned(), o))
        .collect();
        assert_eq!(outcomes, expected);
    }

    #[test]
    fn only_tests_whose_outcome_changed_differ() {
        let run = |tests: &[(&str, Outcome)]| -> BTreeMap<String, Outcome> {
            tests.iter().map(|&(n, o)| (n.to_owned(), o)).collect()
        };
        use Outcome::{Failed, Ok};
        let first = run(&[
            ("a", Ok),
            ("b", Failed),
            ("c", Ok),
            ("d", Failed),
            ("e", Ok),
        ]);
        let second = run(&[
            ("a", Ok),
            ("b", Failed),
            ("c", Failed),
            ("d", Ok),
            ("f", Ok),
        ]);
        let expected: BTreeMap<String, Difference> = [
            (
                "c",
                Difference::Outcome {
                    first: Ok,
                    second: Failed,
                },
            ),
            (
                "d",
                Difference::Outcome {
                    first: Failed,
                    second: Ok,
                },
            ),
            ("e", Difference::Missing { in_first: true }),
            ("f", Difference::Missing { in_first: false }),
        ]
        .into_iter()
        .map(|(n, d)| (n.to_owned(), d))
        .collect();
        assert_eq!(differences(&first, &second), expected);
    }

    #[test]
    fn known_differences_explain_tests_by_name_or_by_output() {
        let known = Known::parse(
            "# header\n\
             \n\
             sysviews   # node-local view\n\
             \x20 stats flaky routing # node-local\n\
             guc\n\
             output: sorry, too many clients already  # pool\n\
             output: never seen\n",
        );
        let outputs = |name: &str| match name {
            "portals" | "guc" => "FATAL:  sorry, too many clients already".to_owned(),
            _ => "some output".to_owned(),
        };
        let cases: &[(&[&str], &[&str], &[&str])] = &[
            // differing tests, not explained, listed but not differing
            (
                &["sysviews", "guc", "portals"],
                &[],
                &["output: never seen"],
            ),
            (
                &["sysviews", "stats", "psql"],
                &["psql"],
                &[
                    "guc",
                    "output: sorry, too many clients already",
                    "output: never seen",
                ],
            ),
            (
                &[],
                &[],
                &[
                    "sysviews",
                    "guc",
                    "output: sorry, too many clients already",
                    "output: never seen",
                ],
            ),
        ];
        for &(differing, new, fixed) in cases {
            let verdict = known.check(differing, outputs);
            assert_eq!(verdict.new, new, "new, for {differing:?}");
            assert_eq!(verdict.fixed, fixed, "fixed, for {differing:?}");
        }
        assert_eq!(known.routing(), ["stats"]);
    }
}
