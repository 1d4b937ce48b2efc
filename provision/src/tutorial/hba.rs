//! Step 6: the tutorial replaces db01's `pg_hba.conf` with its own lines, allowing the
//! replication user from the replica's address only. With several nodes, any of which may
//! be promoted, every node gets the same file with a line for each node: pg_basebackup and
//! pg_rewind copy `pg_hba.conf` from their source, so one file is right wherever it lands.

use std::net::Ipv4Addr;

use super::REPLICATION_USER;

/// The whole file, as the tutorial writes it, with a replication line for each address in
/// `nodes` (once each, in order; on one machine they are all 127.0.0.1).
pub fn pg_hba(nodes: &[Ipv4Addr]) -> String {
    let mut text = String::from("# TYPE  DATABASE     USER              ADDRESS          METHOD\n");
    let mut seen = Vec::new();
    for address in nodes {
        if !seen.contains(address) {
            seen.push(*address);
            text += &format!("host    replication  {REPLICATION_USER}  {address}/32  md5\n");
        }
    }
    text += "local   all          all                                trust\n\
             host    all          all               127.0.0.1/32     trust\n\
             host    all          all               ::1/128          trust\n\
             host    all          all               all              scram-sha-256\n";
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(text: &str) -> Vec<Vec<&str>> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.split_whitespace().collect())
            .collect()
    }

    const TUTORIAL_TAIL: [&[&str]; 4] = [
        &["local", "all", "all", "trust"],
        &["host", "all", "all", "127.0.0.1/32", "trust"],
        &["host", "all", "all", "::1/128", "trust"],
        &["host", "all", "all", "all", "scram-sha-256"],
    ];

    #[test]
    fn has_the_tutorial_lines_and_the_replica_address() {
        let text = pg_hba(&[Ipv4Addr::new(172, 18, 0, 3)]);
        let mut expected = vec![vec![
            "host",
            "replication",
            "replication_user",
            "172.18.0.3/32",
            "md5",
        ]];
        expected.extend(TUTORIAL_TAIL.map(<[&str]>::to_vec));
        assert_eq!(rows(&text), expected);
    }

    #[test]
    fn a_line_per_node_address_once_each() {
        let text = pg_hba(&[
            Ipv4Addr::new(172, 18, 0, 2),
            Ipv4Addr::new(172, 18, 0, 3),
            Ipv4Addr::new(172, 18, 0, 2),
        ]);
        let addresses: Vec<&str> = rows(&text)
            .into_iter()
            .filter(|r| r[1] == "replication")
            .map(|r| r[3])
            .collect();
        assert_eq!(addresses, ["172.18.0.2/32", "172.18.0.3/32"]);
        let local = pg_hba(&[Ipv4Addr::LOCALHOST; 3]);
        assert_eq!(
            local,
            pg_hba(&[Ipv4Addr::LOCALHOST]),
            "one machine, one line"
        );
    }
}
