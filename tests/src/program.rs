//! What the harness's command-line programs (`checkload`, `idleclients`) share: arguments,
//! `--help`, and exit codes (0 all went well, 1 it ran and found a failure or could not run,
//! 2 bad arguments).

use std::future::Future;
use std::process::ExitCode;

use anyhow::Result;

/// Runs program `name`: its arguments read by `parse`, then `run`, whose `Ok(false)` means
/// it ran and found something wrong.
pub async fn main<A, F>(
    name: &str,
    usage: &str,
    parse: fn(&[String]) -> Result<A>,
    run: impl FnOnce(A) -> F,
) -> ExitCode
where
    F: Future<Output = Result<bool>>,
{
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{usage}");
        return ExitCode::SUCCESS;
    }
    let args = match parse(&args) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("{name}: {e:#}\n{usage}");
            return ExitCode::from(2);
        }
    };
    match run(args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("{name}: {e:#}");
            ExitCode::from(1)
        }
    }
}
