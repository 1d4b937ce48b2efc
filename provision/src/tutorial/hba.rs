//! Step 6: the tutorial replaces db01's `pg_hba.conf` with its own lines, allowing the
//! replication user from db02's address only.

use std::net::Ipv4Addr;

use super::REPLICATION_USER;

/// The whole file, as the tutorial writes it, for db02 at `replica`.
pub fn pg_hba(replica: Ipv4Addr) -> String {
    format!(
        "# TYPE  DATABASE     USER              ADDRESS          METHOD\n\
         host    replication  {REPLICATION_USER}  {replica}/32  md5\n\
         local   all          all                                trust\n\
         host    all          all               127.0.0.1/32     trust\n\
         host    all          all               ::1/128          trust\n\
         host    all          all               all              scram-sha-256\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn has_the_tutorial_lines_and_the_replica_address() {
        let text = pg_hba(Ipv4Addr::new(172, 18, 0, 3));
        let rows: Vec<Vec<&str>> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(
            rows,
            vec![
                vec![
                    "host",
                    "replication",
                    "replication_user",
                    "172.18.0.3/32",
                    "md5"
                ],
                vec!["local", "all", "all", "trust"],
                vec!["host", "all", "all", "127.0.0.1/32", "trust"],
                vec!["host", "all", "all", "::1/128", "trust"],
                vec!["host", "all", "all", "all", "scram-sha-256"],
            ]
        );
    }
}
