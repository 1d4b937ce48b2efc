//! The proxy's HTTP endpoint as a client sees it: plain GETs, and `/metrics` parsed with a
//! Prometheus exposition-format parser.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use prometheus_parse::{Scrape, Value};

const TIMEOUT: Duration = Duration::from_secs(10);

/// An HTTP response: status code and body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

/// `GET path` on `addr` (HTTP/1.1, one request per connection).
pub fn get(addr: SocketAddr, path: &str) -> Response {
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT)
        .unwrap_or_else(|e| panic!("cannot connect to the endpoint {addr}: {e}"));
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut raw = String::new();
    stream
        .read_to_string(&mut raw)
        .unwrap_or_else(|e| panic!("reading GET {path}: {e}"));
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of headers in {raw:?}"));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {head:?}"));
    let header = |name: &str| {
        head.lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_owned())
    };
    let length: usize = header("content-length")
        .and_then(|v| v.parse().ok())
        .expect("a Content-Length header");
    assert_eq!(body.len(), length, "Content-Length of GET {path}");
    Response {
        status,
        content_type: header("content-type").unwrap_or_default(),
        body: body.to_owned(),
    }
}

/// `GET path`, which must answer 200, as JSON.
pub fn get_json(addr: SocketAddr, path: &str) -> serde_json::Value {
    let response = get(addr, path);
    assert_eq!(response.status, 200, "GET {path}: {}", response.body);
    serde_json::from_str(&response.body)
        .unwrap_or_else(|e| panic!("GET {path} is not JSON ({e}): {}", response.body))
}

/// One parsed scrape of `/metrics`.
pub struct Metrics(Scrape);

impl Metrics {
    pub fn scrape(addr: SocketAddr) -> Metrics {
        let response = get(addr, "/metrics");
        assert_eq!(response.status, 200, "{}", response.body);
        assert!(
            response
                .content_type
                .starts_with("text/plain; version=0.0.4"),
            "{}",
            response.content_type
        );
        let lines = response.body.lines().map(|l| Ok(l.to_owned()));
        Metrics(Scrape::parse(lines).expect("the exposition parses"))
    }

    /// Every metric name (histograms by their base name).
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.0.samples.iter().map(|s| s.metric.clone()).collect();
        names.sort();
        names.dedup();
        names
    }

    /// The HELP text of `name`.
    pub fn help(&self, name: &str) -> Option<&str> {
        self.0.docs.get(name).map(String::as_str)
    }

    /// The samples of `name` whose labels include all of `labels`.
    fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a prometheus_parse::Sample> + 'a {
        self.0.samples.iter().filter(move |s| {
            s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
        })
    }

    /// Whether a series of `name` with `labels` is exported.
    pub fn has(&self, name: &str, labels: &[(&str, &str)]) -> bool {
        self.matching(name, labels).next().is_some()
    }

    /// The sum of the counter or gauge `name` over the series matching `labels` (0 if none).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels)
            .map(|s| match &s.value {
                Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
                other => panic!("{name} is not a counter or gauge: {other:?}"),
            })
            .sum()
    }

    /// Whether `name` is exported as a counter, gauge or histogram ("counter"...).
    pub fn kind(&self, name: &str) -> Option<&'static str> {
        self.0
            .samples
            .iter()
            .find(|s| s.metric == name)
            .map(|s| match s.value {
                Value::Counter(_) => "counter",
                Value::Gauge(_) => "gauge",
                Value::Histogram(_) => "histogram",
                Value::Summary(_) => "summary",
                Value::Untyped(_) => "untyped",
            })
    }

    /// Observations in the histogram `name` over the series matching `labels`.
    pub fn observations(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.buckets(name, labels)
            .last()
            .map_or(0.0, |(_, count)| *count)
    }

    /// The histogram's cumulative buckets (upper bound, count), summed over matching series.
    pub fn buckets(&self, name: &str, labels: &[(&str, &str)]) -> Vec<(f64, f64)> {
        let mut sum: Vec<(f64, f64)> = Vec::new();
        for sample in self.matching(name, labels) {
            let Value::Histogram(buckets) = &sample.value else {
                panic!("{name} is not a histogram: {:?}", sample.value);
            };
            let mut buckets: Vec<(f64, f64)> =
                buckets.iter().map(|b| (b.less_than, b.count)).collect();
            buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            if sum.is_empty() {
                sum = buckets;
            } else {
                for (total, (_, count)) in sum.iter_mut().zip(buckets) {
                    total.1 += count;
                }
            }
        }
        sum
    }
}
