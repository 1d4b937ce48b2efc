//! The client suite's side of the driver programs (`tests/drivers/*`): reading the line each
//! prints per case, checking it against where the case's reads must run, and the table of
//! where they ran.
//!
//! A program prints `driver<TAB>case<TAB>ok|fail<TAB>nodes<TAB>detail` per case, `nodes` being
//! the comma-separated `cluster_name`s of the nodes its reads ran on, or `-` (see
//! `tests/drivers/README.md`). Anything else it prints (warnings, stack traces) is ignored
//! here and shown with the output when the suite fails.

use crate::suite::{PRIMARY, REPLICA};
use std::collections::HashMap;

/// Where a case's reads must run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Only on the primary.
    Primary,
    /// Only on the replica.
    Replica,
    /// It read, on either node (a read right after a write may wait for the replica on the
    /// primary: read-your-writes).
    Either,
    /// It ran no read whose node it recorded.
    NoRead,
}

impl Expect {
    /// Whether reads that ran on `nodes` (in order, no repeats) are what this expects.
    fn admits(self, nodes: &[String]) -> bool {
        let only = |name: &str| nodes.len() == 1 && nodes[0] == name;
        match self {
            Expect::Primary => only(PRIMARY),
            Expect::Replica => only(REPLICA),
            Expect::Either => {
                !nodes.is_empty() && nodes.iter().all(|n| n == PRIMARY || n == REPLICA)
            }
            Expect::NoRead => nodes.is_empty(),
        }
    }

    fn label(self) -> &'static str {
        match self {
            Expect::Primary => PRIMARY,
            Expect::Replica => REPLICA,
            Expect::Either => "either",
            Expect::NoRead => "-",
        }
    }
}

/// What a driver program reported for one case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseLine {
    pub driver: String,
    pub case: String,
    pub ok: bool,
    /// The nodes its reads ran on, in order of first appearance.
    pub nodes: Vec<String>,
    pub detail: String,
}

/// The case line in `line`, or `None` for any other output.
pub fn parse_line(line: &str) -> Option<CaseLine> {
    let mut fields = line.splitn(5, '\t');
    let driver = fields.next()?;
    let case = fields.next()?;
    let ok = match fields.next()? {
        "ok" => true,
        "fail" => false,
        _ => return None,
    };
    let nodes = match fields.next()? {
        "-" => Vec::new(),
        list => list.split(',').map(str::to_owned).collect(),
    };
    Some(CaseLine {
        driver: driver.to_owned(),
        case: case.to_owned(),
        ok,
        nodes,
        detail: fields.next().unwrap_or("").trim().to_owned(),
    })
}

/// What is wrong with `driver`'s output `lines` given the cases it must report (each once)
/// and where their reads must run: one message per missing, repeated, unexpected, failed or
/// misrouted case, in the order of `expected`.
pub fn problems(driver: &str, expected: &[(&str, Expect)], lines: &[CaseLine]) -> Vec<String> {
    let mut seen: HashMap<&str, Vec<&CaseLine>> = HashMap::new();
    let mut wrong = Vec::new();
    for line in lines {
        if line.driver != driver {
            wrong.push(format!("{}: a line of driver {:?}", line.case, line.driver));
        } else if !expected.iter().any(|(case, _)| *case == line.case) {
            wrong.push(format!("{}: not a case of {driver}", line.case));
        }
        seen.entry(line.case.as_str()).or_default().push(line);
    }
    for (case, expect) in expected {
        match seen.get(case).map(Vec::as_slice) {
            None | Some([]) => wrong.push(format!("{case}: not reported")),
            Some([line]) if !line.ok => wrong.push(format!("{case}: failed: {}", line.detail)),
            Some([line]) if !expect.admits(&line.nodes) => wrong.push(format!(
                "{case}: read on {}, expected {}",
                nodes_label(&line.nodes),
                expect.label()
            )),
            Some([_]) => {}
            Some(more) => wrong.push(format!("{case}: reported {} times", more.len())),
        }
    }
    wrong
}

/// A table of `expected`'s cases: where each must read, where it read, whether it passed.
pub fn table(driver: &str, expected: &[(&str, Expect)], lines: &[CaseLine]) -> String {
    let mut out = format!(
        "{driver}\n  {:<22} {:<8} {:<10} {:<4} detail\n",
        "case", "expected", "ran on", "ok"
    );
    for (case, expect) in expected {
        let line = lines.iter().find(|l| l.case == *case);
        let (ran, ok, detail) = match line {
            Some(l) => (
                nodes_label(&l.nodes),
                if l.ok { "ok" } else { "FAIL" },
                l.detail.as_str(),
            ),
            None => ("?".to_owned(), "?", "not reported"),
        };
        out += &format!(
            "  {case:<22} {:<8} {ran:<10} {ok:<4} {detail}\n",
            expect.label()
        );
    }
    out
}

fn nodes_label(nodes: &[String]) -> String {
    if nodes.is_empty() {
        "-".to_owned()
    } else {
        nodes.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(case: &str, ok: bool, nodes: &str) -> CaseLine {
        parse_line(&format!(
            "d\t{case}\t{}\t{nodes}\tdetail",
            if ok { "ok" } else { "fail" }
        ))
        .unwrap()
    }

    #[test]
    fn parses_case_lines_and_ignores_other_output() {
        assert_eq!(
            parse_line("pgx\tstream\tok\tdb02,db01\t10000 rows\tand a tab"),
            Some(CaseLine {
                driver: "pgx".into(),
                case: "stream".into(),
                ok: true,
                nodes: vec!["db02".into(), "db01".into()],
                detail: "10000 rows\tand a tab".into(),
            })
        );
        let no_read = parse_line("pgx\tlogin\tfail\t-\t").unwrap();
        assert!(!no_read.ok && no_read.nodes.is_empty() && no_read.detail.is_empty());
        for other in [
            "",
            "Exception in thread main",
            "pgx\tstream\tmaybe\tdb02\tx",
            "a\tb",
        ] {
            assert_eq!(parse_line(other), None, "{other:?}");
        }
    }

    #[test]
    fn expectations_admit_nodes() {
        let cases: &[(Expect, &[&str], bool)] = &[
            (Expect::Replica, &["db02"], true),
            (Expect::Replica, &["db02", "db01"], false),
            (Expect::Replica, &["db01"], false),
            (Expect::Replica, &[], false),
            (Expect::Primary, &["db01"], true),
            (Expect::Primary, &["db02"], false),
            (Expect::Either, &["db01", "db02"], true),
            (Expect::Either, &["db03"], false),
            (Expect::Either, &[], false),
            (Expect::NoRead, &[], true),
            (Expect::NoRead, &["db01"], false),
        ];
        for (expect, nodes, admitted) in cases {
            let nodes: Vec<String> = nodes.iter().map(|n| n.to_string()).collect();
            assert_eq!(expect.admits(&nodes), *admitted, "{expect:?} {nodes:?}");
        }
    }

    #[test]
    fn problems_name_each_wrong_case() {
        let expected = [
            ("a", Expect::Replica),
            ("b", Expect::Primary),
            ("c", Expect::NoRead),
            ("d", Expect::Either),
            ("e", Expect::Either),
        ];
        let lines = [
            line("a", true, "db02"),
            line("b", true, "db02"),
            line("c", false, "-"),
            line("e", true, "db01"),
            line("e", true, "db01"),
            line("z", true, "-"),
        ];
        assert_eq!(
            problems("d", &expected, &lines),
            [
                "z: not a case of d",
                "b: read on db02, expected db01",
                "c: failed: detail",
                "d: not reported",
                "e: reported 2 times",
            ]
        );
        assert!(problems("d", &expected[..1], &lines[..1]).is_empty());
    }
}
