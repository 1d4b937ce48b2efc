//! The status snapshot as a table for a person (`pgrepl-proxy status`).

use std::fmt::Write;

use super::status::{BackendStatus, Status};

const HEADERS: [&str; 11] = [
    "BACKEND",
    "ROLE",
    "ADDRESS",
    "STATE",
    "RECOVERY",
    "LSN",
    "LAG",
    "STALENESS",
    "READERS",
    "ACTIVE",
    "IDLE",
];

/// Renders `status`: a summary line, one row per backend, then any role mismatch spelled out.
pub fn render(status: &Status) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "pgrepl-proxy {} serving {}, up {}, clients {}/{}{}{}",
        status.version,
        status.listen,
        uptime(status.uptime_seconds),
        status.clients.connected,
        status.clients.max,
        match status.clients.logging_in {
            0 => String::new(),
            n => format!(", {n} logging in"),
        },
        if status.shutting_down {
            " (shutting down)"
        } else {
            ""
        }
    );
    let rows: Vec<[String; 11]> = status.backends.iter().map(row).collect();
    let widths: Vec<usize> = (0..HEADERS.len())
        .map(|col| {
            rows.iter()
                .map(|r| r[col].len())
                .chain([HEADERS[col].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let padded: Vec<String> = cells
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        padded.join("  ").trim_end().to_owned()
    };
    let _ = writeln!(out, "{}", line(&mut HEADERS.iter().copied()));
    for row in &rows {
        let _ = writeln!(out, "{}", line(&mut row.iter().map(String::as_str)));
    }
    let causal = &status.causal;
    let waiting: Vec<&str> = causal
        .replicas
        .iter()
        .filter(|r| r.reads_waiting)
        .map(|r| r.name.as_str())
        .collect();
    let _ = writeln!(
        out,
        "causal reads: {}, wait {}ms, primary flushed {}, look-ups {} ({} flushes){}",
        causal.mode,
        causal.wait_seconds * 1000.0,
        causal.primary_flush_lsn,
        causal.position_rounds,
        causal.flushes,
        if waiting.is_empty() {
            String::new()
        } else {
            format!(", reads waiting for {}", waiting.join(", "))
        }
    );
    for backend in status.backends.iter().filter(|b| b.role_mismatch) {
        let _ = writeln!(
            out,
            "warning: {} is configured as the {} but is {}in recovery",
            backend.name,
            backend.role,
            if backend.in_recovery == Some(true) {
                ""
            } else {
                "not "
            }
        );
    }
    out
}

fn row(b: &BackendStatus) -> [String; 11] {
    let dash = || "-".to_owned();
    [
        b.name.clone(),
        b.role.clone(),
        b.address.clone(),
        b.state.clone(),
        b.in_recovery
            .map_or_else(dash, |r| if r { "yes" } else { "no" }.to_owned()),
        b.lsn.clone().unwrap_or_else(dash),
        b.lag_bytes.map_or_else(dash, bytes),
        b.staleness_seconds
            .map_or_else(dash, |s| format!("{s:.3}s")),
        b.readers.map_or_else(dash, |r| r.to_string()),
        b.active_connections.to_string(),
        b.idle_connections.to_string(),
    ]
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

fn uptime(seconds: f64) -> String {
    let total = seconds as u64;
    let (h, m, s) = (total / 3600, total / 60 % 60, total % 60);
    if h > 0 {
        format!("{h}h{m:02}m")
    } else if m > 0 {
        format!("{m}m{s:02}s")
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::status::Clients;
    use crate::telemetry::status::{CausalStatus, ReplayStatus};

    fn backend(name: &str, role: &str) -> BackendStatus {
        BackendStatus {
            name: name.to_owned(),
            role: role.to_owned(),
            address: "127.0.0.1:5432".to_owned(),
            up: true,
            in_recovery: Some(role == "replica"),
            role_mismatch: false,
            state: "ok".to_owned(),
            lsn: Some("0/3000148".to_owned()),
            lag_bytes: None,
            staleness_seconds: None,
            readers: None,
            active_connections: 2,
            idle_connections: 1,
            timeline: Some(1),
            writer: role == "primary",
            fenced: false,
        }
    }

    #[test]
    fn renders_one_aligned_row_per_backend_and_warns_of_mismatches() {
        let mut replica = backend("db02", "replica");
        replica.lag_bytes = Some(3 * 1024 * 1024 / 2);
        replica.staleness_seconds = Some(0.25);
        replica.readers = Some(4);
        replica.in_recovery = Some(false);
        replica.role_mismatch = true;
        replica.state = "not in recovery".to_owned();
        let status = Status {
            version: "0.1.0".to_owned(),
            listen: "127.0.0.1:6432".to_owned(),
            uptime_seconds: 3725.0,
            shutting_down: false,
            clients: Clients {
                connected: 3,
                max: 100,
                logging_in: 0,
            },
            backends: vec![backend("db01", "primary"), replica],
            causal: CausalStatus {
                mode: "session".to_owned(),
                wait_seconds: 0.005,
                primary_flush_lsn: "0/3000148".to_owned(),
                position_rounds: 12,
                flushes: 1,
                replicas: vec![ReplayStatus {
                    name: "db02".to_owned(),
                    replay_lsn: "0/3000148".to_owned(),
                    reads_waiting: true,
                }],
                ..CausalStatus::default()
            },
            writer: Default::default(),
        };
        let text = render(&status);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "pgrepl-proxy 0.1.0 serving 127.0.0.1:6432, up 1h02m, clients 3/100"
        );
        let flooded = Status {
            clients: Clients {
                logging_in: 250,
                ..status.clients.clone()
            },
            ..status.clone()
        };
        assert_eq!(
            render(&flooded).lines().next(),
            Some("pgrepl-proxy 0.1.0 serving 127.0.0.1:6432, up 1h02m, clients 3/100, 250 logging in")
        );
        assert!(
            lines[1].starts_with("BACKEND  ROLE     ADDRESS"),
            "{}",
            lines[1]
        );
        let lag_at = lines[1].find("LAG").unwrap();
        assert_eq!(&lines[2][lag_at..lag_at + 1], "-", "{text}");
        assert_eq!(&lines[3][lag_at..lag_at + 7], "1.5 MiB", "{text}");
        assert!(lines[3].contains("not in recovery  no "), "{text}");
        assert!(lines[3].contains("0.250s"), "{text}");
        assert_eq!(
            lines[4],
            "causal reads: session, wait 5ms, primary flushed 0/3000148, look-ups 12 (1 flushes), reads waiting for db02"
        );
        assert_eq!(
            lines[5],
            "warning: db02 is configured as the replica but is not in recovery"
        );
        assert_eq!(lines.len(), 6);
    }

    #[test]
    fn sizes_and_durations_read_naturally() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(5 << 30), "5.0 GiB");
        assert_eq!(uptime(59.9), "59s");
        assert_eq!(uptime(61.0), "1m01s");
    }
}
