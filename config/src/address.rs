//! Checks listen addresses up front, so a typo fails at startup rather than at bind time.

use std::net::SocketAddr;

/// Whether `text` is `ip:port` (IPv6 in brackets) or `hostname:port`.
pub(crate) fn is_host_port(text: &str) -> bool {
    if text.parse::<SocketAddr>().is_ok() {
        return true;
    }
    match text.rsplit_once(':') {
        Some((host, port)) => port.parse::<u16>().is_ok() && is_hostname(host),
        None => false,
    }
}

/// RFC 1123 host names; an all-digit last label would be a malformed IPv4 address instead.
fn is_hostname(host: &str) -> bool {
    let labels_ok = host.split('.').all(|label| {
        (1..=63).contains(&label.len())
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    });
    let last_is_numeric = host
        .rsplit('.')
        .next()
        .is_some_and(|label| label.chars().all(|c| c.is_ascii_digit()));
    host.len() <= 253 && labels_ok && !last_is_numeric
}

#[cfg(test)]
mod tests {
    use super::is_host_port;

    #[test]
    fn accepts_ip_and_hostname_addresses() {
        for good in [
            "127.0.0.1:6432",
            "0.0.0.0:0",
            "[::1]:6432",
            "localhost:6432",
            "db-01.example.com:5432",
        ] {
            assert!(is_host_port(good), "{good}");
        }
    }

    #[test]
    fn rejects_missing_or_bad_parts() {
        for bad in [
            "localhost",
            "6432",
            ":6432",
            "127.0.0.1:",
            "127.0.0.1:70000",
            "300.1.1.1:5432",
            "::1:6432",
            "bad host:6432",
            "-db:5432",
            "db..x:5432",
        ] {
            assert!(!is_host_port(bad), "{bad}");
        }
    }
}
