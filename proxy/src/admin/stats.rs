//! `SHOW STATS` and its variants (`STATS_TOTALS`, `STATS_AVERAGES`, `TOTALS`): per database,
//! what its clients counted since the proxy started (those connected and those gone), and
//! per-second averages over the last [`PERIOD`] or so, in PgBouncer's columns.
//!
//! What the proxy does not count stays 0: transactions and their time, query time (the
//! `pgrepl_query_duration_seconds` histogram has it by route, not by database), and
//! prepared-statement counts.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::result::{num, text, ResultSet, Type};
use crate::clients::Counters;

/// How often the averages' starting point moves on (PgBouncer's default `stats_period`).
pub const PERIOD: Duration = Duration::from_secs(60);

/// Totals by database at one moment.
#[derive(Debug, Clone)]
struct Sample {
    at: Instant,
    totals: BTreeMap<String, Counters>,
}

/// The starting points of the averages, moved on lazily as `SHOW STATS` runs.
#[derive(Default)]
pub struct Averages {
    window: Mutex<(Option<Sample>, Option<Sample>)>,
}

/// Per-second rates over a period, and the average wait per server connection taken.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rates {
    pub assignments: u64,
    pub queries: u64,
    pub received: u64,
    pub sent: u64,
    pub wait_micros: u64,
    pub connects: u64,
}

impl Rates {
    /// The rates of what `delta` counted over `secs` seconds.
    fn of(delta: &Counters, secs: f64) -> Rates {
        let per_second = |count: u64| {
            if secs > 0.0 {
                (count as f64 / secs) as u64
            } else {
                0
            }
        };
        Rates {
            assignments: per_second(delta.assignments),
            queries: per_second(delta.queries),
            received: per_second(delta.bytes_in),
            sent: per_second(delta.bytes_out),
            wait_micros: delta
                .wait_micros
                .checked_div(delta.assignments)
                .unwrap_or(0),
            connects: per_second(delta.connects),
        }
    }
}

/// One database's line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseStats {
    pub database: String,
    pub total: Counters,
    pub avg: Rates,
}

impl Averages {
    /// Each database's totals now and its averages since the older of the two kept samples
    /// (or since `started`): at least the last [`PERIOD`] once the proxy has run that long.
    pub fn stats(
        &self,
        totals: BTreeMap<String, Counters>,
        now: Instant,
        started: Instant,
    ) -> Vec<DatabaseStats> {
        let mut window = self.window.lock().unwrap_or_else(|p| p.into_inner());
        let (base, next) = &mut *window;
        let sample = Sample {
            at: now,
            totals: totals.clone(),
        };
        match next {
            None => *next = Some(sample),
            Some(newer) if now.duration_since(newer.at) >= PERIOD => {
                *base = next.replace(sample);
            }
            Some(_) => {}
        }
        let (since, earlier) = match base {
            Some(base) => (base.at, &base.totals),
            None => (started, &BTreeMap::new()),
        };
        let secs = now.duration_since(since).as_secs_f64();
        totals
            .into_iter()
            .map(|(database, total)| {
                let before = earlier.get(&database).copied().unwrap_or_default();
                DatabaseStats {
                    avg: Rates::of(&total.since(&before), secs),
                    database,
                    total,
                }
            })
            .collect()
    }
}

const NUMERIC: Type = Type::Numeric;

/// The total columns after `database`, PgBouncer's names without the `total_` prefix.
const TOTALS: [&str; 12] = [
    "server_assignment_count",
    "xact_count",
    "query_count",
    "received",
    "sent",
    "xact_time",
    "query_time",
    "wait_time",
    "client_parse_count",
    "server_parse_count",
    "bind_count",
    "client_connect_count",
];

fn total_cells(c: &Counters) -> [u64; 12] {
    [
        c.assignments,
        0,
        c.queries,
        c.bytes_in,
        c.bytes_out,
        0,
        0,
        c.wait_micros,
        0,
        0,
        0,
        c.connects,
    ]
}

fn average_cells(r: &Rates) -> [u64; 12] {
    [
        r.assignments,
        0,
        r.queries,
        r.received,
        r.sent,
        0,
        0,
        r.wait_micros,
        0,
        0,
        0,
        r.connects,
    ]
}

/// `SHOW STATS`: database, then `total_*` and `avg_*` (`avg_recv`, `avg_sent`).
pub fn stats(lines: &[DatabaseStats]) -> ResultSet {
    const COLUMNS: [(&str, Type); 25] = [
        ("database", Type::Text),
        ("total_server_assignment_count", NUMERIC),
        ("total_xact_count", NUMERIC),
        ("total_query_count", NUMERIC),
        ("total_received", NUMERIC),
        ("total_sent", NUMERIC),
        ("total_xact_time", NUMERIC),
        ("total_query_time", NUMERIC),
        ("total_wait_time", NUMERIC),
        ("total_client_parse_count", NUMERIC),
        ("total_server_parse_count", NUMERIC),
        ("total_bind_count", NUMERIC),
        ("total_client_connect_count", NUMERIC),
        ("avg_server_assignment_count", NUMERIC),
        ("avg_xact_count", NUMERIC),
        ("avg_query_count", NUMERIC),
        ("avg_recv", NUMERIC),
        ("avg_sent", NUMERIC),
        ("avg_xact_time", NUMERIC),
        ("avg_query_time", NUMERIC),
        ("avg_wait_time", NUMERIC),
        ("avg_client_parse_count", NUMERIC),
        ("avg_server_parse_count", NUMERIC),
        ("avg_bind_count", NUMERIC),
        ("avg_client_connect_count", NUMERIC),
    ];
    let mut set = ResultSet::new(&COLUMNS);
    for line in lines {
        let mut row = vec![text(&line.database)];
        row.extend(total_cells(&line.total).iter().map(num));
        row.extend(average_cells(&line.avg).iter().map(num));
        set.row(row);
    }
    set
}

/// The 13 columns of `SHOW STATS_TOTALS` and `SHOW STATS_AVERAGES`.
fn per_database(lines: &[DatabaseStats], cells: impl Fn(&DatabaseStats) -> [u64; 12]) -> ResultSet {
    const COLUMNS: [(&str, Type); 13] = [
        ("database", Type::Text),
        ("server_assignment_count", NUMERIC),
        ("xact_count", NUMERIC),
        ("query_count", NUMERIC),
        ("bytes_received", NUMERIC),
        ("bytes_sent", NUMERIC),
        ("xact_time", NUMERIC),
        ("query_time", NUMERIC),
        ("wait_time", NUMERIC),
        ("client_parse_count", NUMERIC),
        ("server_parse_count", NUMERIC),
        ("bind_count", NUMERIC),
        ("client_connect_count", NUMERIC),
    ];
    let mut set = ResultSet::new(&COLUMNS);
    for line in lines {
        let mut row = vec![text(&line.database)];
        row.extend(cells(line).iter().map(num));
        set.row(row);
    }
    set
}

/// `SHOW STATS_TOTALS`.
pub fn stats_totals(lines: &[DatabaseStats]) -> ResultSet {
    per_database(lines, |line| total_cells(&line.total))
}

/// `SHOW STATS_AVERAGES`.
pub fn stats_averages(lines: &[DatabaseStats]) -> ResultSet {
    per_database(lines, |line| average_cells(&line.avg))
}

/// `SHOW TOTALS`: every database together, one `total_*` or `avg_*` row each.
pub fn totals(lines: &[DatabaseStats]) -> ResultSet {
    let mut sum_total = [0u64; 12];
    let mut sum_avg = [0u64; 12];
    for line in lines {
        for (sum, value) in sum_total.iter_mut().zip(total_cells(&line.total)) {
            *sum += value;
        }
        for (sum, value) in sum_avg.iter_mut().zip(average_cells(&line.avg)) {
            *sum += value;
        }
    }
    let mut set = ResultSet::new(&[("name", Type::Text), ("value", NUMERIC)]);
    for (prefix, values) in [("total", sum_total), ("avg", sum_avg)] {
        for (name, value) in TOTALS.iter().zip(values) {
            set.row(vec![text(format!("{prefix}_{name}")), num(value)]);
        }
    }
    set
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::result::Cell;

    /// The cells of one named column of `set`'s rows.
    fn column(set: &ResultSet, name: &str) -> Vec<Cell> {
        let index = set
            .column_names()
            .iter()
            .position(|c| *c == name)
            .unwrap_or_else(|| panic!("no column {name}"));
        set.rows().iter().map(|row| row[index].clone()).collect()
    }

    fn counted(queries: u64, bytes_in: u64) -> BTreeMap<String, Counters> {
        let counters = Counters {
            queries,
            bytes_in,
            assignments: queries / 10,
            wait_micros: queries,
            connects: 1,
            ..Counters::default()
        };
        BTreeMap::from([("appdb".to_owned(), counters)])
    }

    #[test]
    fn averages_run_from_start_then_over_the_last_period() {
        let averages = Averages::default();
        let started = Instant::now();
        let at = |secs: u64| started + Duration::from_secs(secs);
        // (seconds since start, queries counted so far, expected queries per second)
        let cases = [
            (10, 100, 10),   // since start
            (40, 400, 10),   // still since start: no sample a period old
            (70, 1300, 20),  // the sample at 10 s is the base now: 1200 in 60 s
            (100, 1300, 13), // 1200 in 90 s
        ];
        for (secs, queries, rate) in cases {
            let lines = averages.stats(counted(queries, queries * 2), at(secs), started);
            assert_eq!(lines.len(), 1);
            assert_eq!(lines[0].total.queries, queries);
            assert_eq!(lines[0].avg.queries, rate, "at {secs} s");
            assert_eq!(lines[0].avg.received, rate * 2, "at {secs} s");
        }
    }

    #[test]
    fn waits_average_per_server_connection_taken() {
        let delta = Counters {
            assignments: 4,
            wait_micros: 1000,
            ..Counters::default()
        };
        assert_eq!(Rates::of(&delta, 1.0).wait_micros, 250);
        assert_eq!(Rates::of(&Counters::default(), 0.0), Rates::default());
    }

    #[test]
    fn stats_use_pgbouncer_column_names() {
        let averages = Averages::default();
        let started = Instant::now();
        let lines = averages.stats(counted(50, 7), started + Duration::from_secs(5), started);
        let set = stats(&lines);
        assert_eq!(set.column_names().len(), 25);
        assert_eq!(column(&set, "database"), [text("appdb")]);
        assert_eq!(column(&set, "total_query_count"), [num(50)]);
        assert_eq!(column(&set, "total_received"), [num(7)]);
        assert_eq!(column(&set, "avg_query_count"), [num(10)]);
        assert_eq!(column(&set, "total_xact_count"), [num(0)], "not counted");
        let set = stats_totals(&lines);
        assert_eq!(column(&set, "query_count"), [num(50)]);
        assert_eq!(column(&set, "bytes_received"), [num(7)]);
        let set = stats_averages(&lines);
        assert_eq!(column(&set, "query_count"), [num(10)]);
        let set = totals(&lines);
        assert_eq!(set.rows().len(), 24);
        assert!(set
            .rows()
            .contains(&vec![text("total_query_count"), num(50)]));
    }
}
