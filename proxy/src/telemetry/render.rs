//! Prometheus text for the histograms the proxy keeps itself (see `tally`).

use std::fmt::Write;

use super::tally::HistogramTotals;

/// One histogram family: its HELP and TYPE, then per series (its labels, its totals) the
/// cumulative buckets, the sum and the count, in seconds.
pub fn histogram_family(
    out: &mut String,
    name: &str,
    help: &str,
    bounds: &[u64],
    series: &[(Vec<(&str, &str)>, &HistogramTotals)],
) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} histogram");
    for (labels, totals) in series {
        let labels: String = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\",", escape(v)))
            .collect();
        let mut cumulative = 0;
        for (i, count) in totals.counts.iter().enumerate() {
            cumulative += count;
            let le = bounds
                .get(i)
                .map_or_else(|| "+Inf".to_owned(), |b| seconds(*b));
            let _ = writeln!(out, "{name}_bucket{{{labels}le=\"{le}\"}} {cumulative}");
        }
        let labels = labels.trim_end_matches(',');
        let sum = totals.sum_micros as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {cumulative}");
    }
    out.push('\n');
}

/// Nanoseconds as seconds, as short as it is exact.
fn seconds(nanos: u64) -> String {
    format!("{}", nanos as f64 / 1e9)
}

/// A label value with `\`, `"` and newlines escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_cumulative_buckets_sum_and_count() {
        let totals = HistogramTotals {
            counts: vec![1, 0, 2],
            sum_micros: 1_500_000,
        };
        let mut out = String::new();
        histogram_family(
            &mut out,
            "x_seconds",
            "What x took.",
            &[50_000, 1_000_000_000],
            &[(vec![("route", "primary")], &totals)],
        );
        assert_eq!(
            out,
            "# HELP x_seconds What x took.\n# TYPE x_seconds histogram\n\
             x_seconds_bucket{route=\"primary\",le=\"0.00005\"} 1\n\
             x_seconds_bucket{route=\"primary\",le=\"1\"} 1\n\
             x_seconds_bucket{route=\"primary\",le=\"+Inf\"} 3\n\
             x_seconds_sum{route=\"primary\"} 1.5\n\
             x_seconds_count{route=\"primary\"} 3\n\n"
        );
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
