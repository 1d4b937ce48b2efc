//! The command lines of `initdb` and `pg_ctl` for a node. A node's identity (port, socket
//! directory, `cluster_name`) is given on the server's command line, not in postgresql.conf,
//! because db02's postgresql.conf is a copy of db01's after the base backup; command-line
//! settings also win over postgresql.auto.conf.

use std::ffi::OsString;
use std::net::Ipv4Addr;
use std::path::Path;

use super::layout::Layout;
use crate::runtime::NodeId;
use crate::text::quote;

/// How long pg_ctl waits for a start or stop, in seconds.
const TIMEOUT_SECS: &str = "60";

/// The bootstrap superuser, as in the image.
const SUPERUSER: &str = "postgres";

/// What one server is started with: its node and port, and the settings every start gets.
#[derive(Debug, Clone, Copy)]
pub(super) struct Server<'a> {
    pub node: NodeId,
    pub port: u16,
    /// `listen_addresses`: 127.0.0.1, or the node's address in its network namespace.
    pub listen: Ipv4Addr,
    pub layout: &'a Layout,
    pub settings: &'a [(String, String)],
}

impl Server<'_> {
    /// `initdb` arguments like the image's entrypoint: local logins trusted, TCP ones by
    /// SCRAM, the superuser's password read from `pwfile`.
    pub fn initdb_args(&self, pwfile: &Path) -> Vec<OsString> {
        let mut args = self.data_arg();
        args.extend(
            ["-U", SUPERUSER, "-E", "UTF8"]
                .into_iter()
                .chain(["--auth-local=trust", "--auth-host=scram-sha-256"])
                .map(OsString::from),
        );
        args.push(flag_with_path("--pwfile=", pwfile));
        args
    }

    /// `pg_ctl start`, waiting until the server is up, its output appended to the node's log.
    pub fn start_args(&self) -> Vec<OsString> {
        let mut args = self.data_arg();
        args.push("-l".into());
        args.push(self.layout.log_file(self.node).into());
        args.extend(["-w", "-t", TIMEOUT_SECS, "-o"].map(OsString::from));
        args.push(self.server_options().into());
        args.push("start".into());
        args
    }

    /// `pg_ctl stop` in fast mode (sessions are ended, nothing committed is lost), waiting
    /// until the server has exited.
    pub fn stop_args(&self) -> Vec<OsString> {
        self.stop_in("fast")
    }

    /// `pg_ctl stop` in immediate mode (no shutdown checkpoint), waiting until it has exited.
    pub fn stop_immediate_args(&self) -> Vec<OsString> {
        self.stop_in("immediate")
    }

    fn stop_in(&self, mode: &str) -> Vec<OsString> {
        let mut args = self.data_arg();
        args.extend(["-m", mode, "-w", "-t", TIMEOUT_SECS, "stop"].map(OsString::from));
        args
    }

    /// `pg_ctl status`: exit 0 when the server runs, 3 when it does not.
    pub fn status_args(&self) -> Vec<OsString> {
        let mut args = self.data_arg();
        args.push("status".into());
        args
    }

    fn data_arg(&self) -> Vec<OsString> {
        vec!["-D".into(), self.layout.data_dir(self.node).into()]
    }

    /// The `-o` string: pg_ctl runs it through `/bin/sh`, so every value is quoted.
    fn server_options(&self) -> String {
        let socket_dir = self.layout.node_dir(self.node);
        let mut options = format!(
            "-p {} -k {}",
            self.port,
            quote(&socket_dir.to_string_lossy())
        );
        let listen = self.listen.to_string();
        let name = self.node.name();
        let identity = [
            ("listen_addresses", listen.as_str()),
            ("cluster_name", name.as_str()),
        ];
        let settings = self.settings.iter().map(|(n, v)| (n.as_str(), v.as_str()));
        for (name, value) in identity.into_iter().chain(settings) {
            options += &format!(" -c {}", quote(&format!("{name}={value}")));
        }
        options
    }
}

fn flag_with_path(flag: &str, path: &Path) -> OsString {
    let mut arg = OsString::from(flag);
    arg.push(path);
    arg
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn strings(args: Vec<OsString>) -> Vec<String> {
        args.into_iter().map(|a| a.into_string().unwrap()).collect()
    }

    #[test]
    fn start_gives_the_node_its_identity_and_the_extra_settings() {
        let layout = Layout::new(PathBuf::from("/srv/my pg"));
        let settings = [("fsync".to_owned(), "off".to_owned())];
        let server = Server {
            node: NodeId::DB02,
            port: 54322,
            listen: Ipv4Addr::new(10, 77, 1, 2),
            layout: &layout,
            settings: &settings,
        };
        assert_eq!(
            strings(server.start_args()),
            [
                "-D",
                "/srv/my pg/db02/data",
                "-l",
                "/srv/my pg/db02/server.log",
                "-w",
                "-t",
                "60",
                "-o",
                "-p 54322 -k '/srv/my pg/db02' -c listen_addresses=10.77.1.2 \
                 -c cluster_name=db02 -c fsync=off",
                "start",
            ]
        );
    }

    #[test]
    fn initdb_is_like_the_images() {
        let layout = Layout::new(PathBuf::from("/srv/pg"));
        let server = Server {
            node: NodeId::DB01,
            port: 54321,
            listen: Ipv4Addr::LOCALHOST,
            layout: &layout,
            settings: &[],
        };
        assert_eq!(
            strings(server.initdb_args(Path::new("/srv/pg/db01/initdb.pw"))),
            [
                "-D",
                "/srv/pg/db01/data",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--pwfile=/srv/pg/db01/initdb.pw",
            ]
        );
        assert_eq!(
            strings(server.stop_args()),
            [
                "-D",
                "/srv/pg/db01/data",
                "-m",
                "fast",
                "-w",
                "-t",
                "60",
                "stop"
            ]
        );
    }
}
