//! libpq connection strings as the standbys' `primary_conninfo` holds them: read a value
//! out (which node a standby follows), and write one that follows a given node.

use crate::runtime::{Endpoint, NodeId};
use crate::tutorial::REPLICATION_USER;

/// A value in a `key=value` connection string, quoted when it has to be.
fn quoted(value: &str) -> String {
    let plain = !value.is_empty() && !value.contains([' ', '\'', '\\']);
    if plain {
        value.to_owned()
    } else {
        format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
    }
}

/// The value of `key` in `conninfo`, unquoted; `None` when it is not there.
pub fn value(conninfo: &str, key: &str) -> Option<String> {
    let mut chars = conninfo.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        chars.peek()?;
        let name: String =
            std::iter::from_fn(|| chars.next_if(|c| *c != '=' && !c.is_whitespace())).collect();
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        chars.next_if_eq(&'=')?;
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut found = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            while let Some(c) = chars.next() {
                match c {
                    '\\' => found.extend(chars.next()),
                    '\'' => break,
                    c => found.push(c),
                }
            }
        } else {
            found.extend(std::iter::from_fn(|| chars.next_if(|c| !c.is_whitespace())));
        }
        if name == key {
            return Some(found);
        }
    }
}

/// The `primary_conninfo` with which `replica` follows the server at `primary`: the
/// replication user with the password from `passfile`, and the replica's name as
/// `application_name` (what `synchronous_standby_names` and `pg_stat_replication` know it by).
pub fn following(primary: &Endpoint, replica: NodeId, passfile: &str) -> String {
    format!(
        "user={REPLICATION_USER} passfile={} host={} port={} application_name={replica}",
        quoted(passfile),
        quoted(&primary.host),
        primary.port
    )
}

/// A connection string for `pg_rewind --source-server`: an ordinary connection (pg_rewind
/// reads files through SQL functions) as the replication user.
pub fn rewind_source(primary: &Endpoint) -> String {
    format!(
        "host={} port={} user={REPLICATION_USER} dbname=postgres",
        quoted(&primary.host),
        primary.port
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_read_plain_or_quoted() {
        let conninfo = "user=replication_user passfile='/srv/my pg/db02/.pgpass' \
                        channel_binding=prefer host=127.0.0.1 port = 54321 \
                        application_name='it\\'s'";
        assert_eq!(value(conninfo, "host").as_deref(), Some("127.0.0.1"));
        assert_eq!(value(conninfo, "port").as_deref(), Some("54321"));
        assert_eq!(
            value(conninfo, "passfile").as_deref(),
            Some("/srv/my pg/db02/.pgpass")
        );
        assert_eq!(value(conninfo, "application_name").as_deref(), Some("it's"));
        assert_eq!(value(conninfo, "sslmode"), None);
        assert_eq!(value("", "host"), None);
    }

    #[test]
    fn a_written_conninfo_reads_back() {
        let primary = Endpoint {
            host: "db01".into(),
            port: 5432,
        };
        let written = following(&primary, NodeId::DB02, "/var/lib/my pg/.pgpass");
        assert_eq!(value(&written, "host").as_deref(), Some("db01"));
        assert_eq!(value(&written, "port").as_deref(), Some("5432"));
        assert_eq!(value(&written, "user").as_deref(), Some("replication_user"));
        assert_eq!(value(&written, "application_name").as_deref(), Some("db02"));
        assert_eq!(
            value(&written, "passfile").as_deref(),
            Some("/var/lib/my pg/.pgpass")
        );
        assert_eq!(
            rewind_source(&primary),
            "host=db01 port=5432 user=replication_user dbname=postgres"
        );
    }
}
