//! The admin console: the virtual database `[admin] database` ("pgrepl"), answered by the proxy
//! itself over the simple query protocol, PgBouncer-compatible where that makes sense so that
//! operators' scripts and exporters work: `SHOW POOLS`, `SHOW CLIENTS`, `PAUSE`, `KILL`...
//! (see `command`). Only `[admin] users` get in, authenticated as every client is.

mod command;
mod control;
mod result;
mod show;
mod stats;

pub use stats::Averages;

use std::sync::Arc;
use std::time::Instant;

use bytes::{BufMut, BytesMut};
use pgrepl_config::AdminConfig;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::backend::StartupInfo;
use crate::clients::ClientEntry;
use crate::protocol::tags::frontend::*;
use crate::protocol::tags::TxStatus;
use crate::protocol::write::{self, ProxyError};
use crate::protocol::{frame, peek_header, sqlstate};
use crate::session::{End, SessionStats};
use crate::shared::Shared;
use command::{Command, Show};
use result::ResultSet;

/// Whether a client that authenticated is one of the console's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// It asked for another database: a session serves it.
    Database,
    Console,
    /// It asked for the console and is not one of `[admin] users`.
    Refused(ProxyError),
}

pub fn admission(admin: &AdminConfig, startup: &StartupInfo) -> Admission {
    if startup.database != admin.database {
        return Admission::Database;
    }
    if admin.users.contains(&startup.user) {
        return Admission::Console;
    }
    Admission::Refused(
        ProxyError::fatal(
            sqlstate::INSUFFICIENT_PRIVILEGE,
            format!("permission denied for database \"{}\"", startup.database),
        )
        .with_detail(format!(
            "User \"{}\" is not one of [admin] users, who may use the admin console.",
            startup.user
        )),
    )
}

/// What a console client is told at startup, in place of a server's parameters: UTF-8 text,
/// ISO dates, and this proxy's version as the server's.
pub fn greet(user: &str, cancel_key: (i32, i32), buf: &mut BytesMut) {
    let version = format!("{}/pgrepl-proxy", env!("CARGO_PKG_VERSION"));
    for (name, value) in [
        ("server_version", version.as_str()),
        ("server_encoding", "UTF8"),
        ("client_encoding", "UTF8"),
        ("DateStyle", "ISO, MDY"),
        ("TimeZone", "UTC"),
        ("IntervalStyle", "postgres"),
        ("integer_datetimes", "on"),
        ("standard_conforming_strings", "on"),
        ("is_superuser", "off"),
        ("session_authorization", user),
    ] {
        write::parameter_status(name, value, buf);
    }
    buf.put_u8(b'K');
    buf.put_u32(12);
    buf.put_i32(cancel_key.0);
    buf.put_i32(cancel_key.1);
    write::ready_for_query(TxStatus::Idle, buf);
}

/// The help `SHOW HELP` gives, as a notice's detail.
const HELP: &str = "\
SHOW POOLS | CLIENTS | SERVERS | DATABASES | USERS | LISTS | STATE | CONFIG | VERSION
SHOW STATS | STATS_TOTALS | STATS_AVERAGES | TOTALS
SHOW BACKENDS   (each server: role, health, lag, staleness)
SHOW ROUTES     (statements by backend and routing reason)
PAUSE [db]      (new units wait before taking a server connection; answers once none is in use)
RESUME [db]
KILL client_id  (KILL_CLIENT too: ends the session with 57P01)
HOLD WRITES     (units for the primary outside a transaction wait; answers once none is open or in flight there)
RELEASE WRITES  (also when this console session ends)
RELOAD
SHUTDOWN        (graceful, as SIGTERM)";

/// One console session: reads the client's queries and answers them, until the client
/// leaves, is killed, or the proxy shuts down.
pub struct Console<R, W> {
    shared: Arc<Shared>,
    me: Arc<ClientEntry>,
    r: R,
    w: W,
    cin: BytesMut,
    cout: BytesMut,
    /// An extended-protocol message was refused: skip to the next Sync.
    discarding: bool,
    /// Commands run (the registry counts them as the console's queries), and bytes.
    commands: u64,
    stats: SessionStats,
}

impl<R, W> Console<R, W>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    pub fn new(shared: Arc<Shared>, me: Arc<ClientEntry>, r: R, w: W) -> Self {
        Console {
            shared,
            me,
            r,
            w,
            cin: BytesMut::with_capacity(1024),
            cout: BytesMut::with_capacity(4096),
            discarding: false,
            commands: 0,
            stats: SessionStats::default(),
        }
    }

    pub async fn run(mut self) -> SessionStats {
        let shutdown = self.shared.shutdown.wait();
        tokio::pin!(shutdown);
        shutdown.as_mut().enable();
        let end = 'session: loop {
            while let Some((ty, total)) = peek_header(&self.cin) {
                if let Err(e) = frame::check_size(
                    total,
                    self.shared
                        .max_message_size
                        .load(std::sync::atomic::Ordering::Relaxed),
                ) {
                    break 'session End::Fatal(ProxyError::fatal(
                        sqlstate::PROTOCOL_VIOLATION,
                        format!("invalid frontend message: {e}"),
                    ));
                }
                if self.cin.len() < total {
                    break;
                }
                let msg = self.cin.split_to(total);
                if let Err(end) = self.handle(ty, &msg[..]).await {
                    break 'session end;
                }
            }
            if self.flush().await.is_err() {
                break End::ClientGone;
            }
            if self.me.kill.is_fired() {
                break End::Fatal(ProxyError::terminated_by_administrator());
            }
            if self.shared.shutdown.is_set() {
                break End::Shutdown;
            }
            tokio::select! {
                read = self.r.read_buf(&mut self.cin) => match read {
                    Ok(0) | Err(_) => break End::ClientGone,
                    Ok(n) => self.stats.bytes_in += n as u64,
                },
                _ = self.me.kill.fired() => break End::Fatal(ProxyError::terminated_by_administrator()),
                _ = &mut shutdown => break End::Shutdown,
            }
        };
        let farewell = match end {
            End::ClientGone => None,
            End::Shutdown => Some(ProxyError::terminated_by_administrator()),
            End::Fatal(err) => Some(err),
        };
        if let Some(err) = farewell {
            err.encode(&mut self.cout);
            let _ = tokio::time::timeout(std::time::Duration::from_secs(1), self.flush()).await;
        }
        // A hold belongs to its console session: a switchover tool that dies lifts it.
        control::release_writes(&self.shared, &self.me).ok();
        self.publish();
        self.stats
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        if self.cout.is_empty() {
            return Ok(());
        }
        self.w.write_all(&self.cout).await?;
        self.stats.bytes_out += self.cout.len() as u64;
        self.cout.clear();
        self.publish();
        Ok(())
    }

    fn publish(&self) {
        let stats = &self.stats;
        self.me
            .publish(self.commands, stats.bytes_in, stats.bytes_out);
    }

    /// Answers one message; Err when the session ends.
    async fn handle(&mut self, ty: u8, msg: &[u8]) -> Result<(), End> {
        match ty {
            TERMINATE => return Err(End::ClientGone),
            _ if self.discarding && ty != SYNC => {}
            QUERY => {
                let body = &msg[5..];
                let sql = body.strip_suffix(&[0]).unwrap_or(body);
                let sql = String::from_utf8_lossy(sql).into_owned();
                self.query(&sql).await;
                write::ready_for_query(TxStatus::Idle, &mut self.cout);
            }
            PARSE | BIND | DESCRIBE | EXECUTE | CLOSE | FLUSH => {
                ProxyError::error(
                    sqlstate::FEATURE_NOT_SUPPORTED,
                    "the admin console speaks only the simple query protocol",
                )
                .encode(&mut self.cout);
                self.discarding = true;
            }
            SYNC => {
                self.discarding = false;
                write::ready_for_query(TxStatus::Idle, &mut self.cout);
            }
            FUNCTION_CALL => {
                ProxyError::error(
                    sqlstate::FEATURE_NOT_SUPPORTED,
                    "the admin console has no functions to call",
                )
                .encode(&mut self.cout);
                write::ready_for_query(TxStatus::Idle, &mut self.cout);
            }
            // Outside COPY these are ignored, as PostgreSQL does.
            COPY_DATA | COPY_DONE | COPY_FAIL => {}
            other => {
                return Err(End::Fatal(ProxyError::fatal(
                    sqlstate::PROTOCOL_VIOLATION,
                    format!("invalid frontend message type {other}"),
                )))
            }
        }
        Ok(())
    }

    /// Runs a query's commands in order, stopping at the first error.
    async fn query(&mut self, sql: &str) {
        let commands = match command::parse(sql) {
            Ok(commands) => commands,
            Err(err) => return err.encode(&mut self.cout),
        };
        if commands.is_empty() {
            return result::empty_query(&mut self.cout);
        }
        for command in commands {
            self.commands += 1;
            if let Err(err) = self.execute(command).await {
                return err.encode(&mut self.cout);
            }
        }
    }

    async fn execute(&mut self, command: Command) -> Result<(), ProxyError> {
        let shared = &*self.shared;
        let tag = match command {
            Command::Help => {
                result::notice("Console usage", HELP, &mut self.cout);
                "SHOW"
            }
            Command::Show(what) => {
                show_set(shared, what).encode("SHOW", &mut self.cout);
                return Ok(());
            }
            Command::Pause(database) => {
                control::pause(shared, &self.me, database.as_deref()).await?
            }
            Command::Resume(database) => control::resume(shared, database.as_deref())?,
            Command::Kill(id) => control::kill(shared, &self.me, id).await?,
            Command::Reload => {
                tokio::select! {
                    answer = control::reload(shared) => answer?,
                    _ = self.me.kill.fired() => return Err(ProxyError::terminated_by_administrator()),
                }
            }
            Command::Shutdown => control::shutdown(shared),
            Command::HoldWrites => control::hold_writes(shared, &self.me).await?,
            Command::ReleaseWrites => control::release_writes(shared, &self.me)?,
        };
        write::command_complete(tag, &mut self.cout);
        Ok(())
    }
}

/// The answer to a `SHOW` other than `HELP`.
fn show_set(shared: &Shared, what: Show) -> ResultSet {
    let view = || show::View::now(shared);
    let stats = || {
        let totals = shared.registry.totals();
        shared
            .averages
            .stats(totals, Instant::now(), shared.started)
    };
    match what {
        Show::Pools => show::pools(&view()),
        Show::Clients => show::clients(&view()),
        Show::Servers => show::servers(&view()),
        Show::Databases => show::databases(&view(), shared),
        Show::Lists => show::lists(&view(), shared),
        Show::Users => show::users(&view()),
        Show::State => show::state(&view()),
        Show::Config => show::config(&view()),
        Show::Version => show::version(),
        Show::Backends => show::backends(shared),
        Show::Routes => show::routes(shared),
        Show::Stats => stats::stats(&stats()),
        Show::StatsTotals => stats::stats_totals(&stats()),
        Show::StatsAverages => stats::stats_averages(&stats()),
        Show::Totals => stats::totals(&stats()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_admin_users_get_the_console() {
        let admin = AdminConfig {
            database: "pgrepl".into(),
            users: vec!["ops".into()],
            pause_timeout: std::time::Duration::from_secs(1),
        };
        let startup = |user: &str, database: &str| StartupInfo {
            user: user.into(),
            database: database.into(),
            options: Vec::new(),
        };
        assert_eq!(
            admission(&admin, &startup("ops", "pgrepl")),
            Admission::Console
        );
        assert_eq!(
            admission(&admin, &startup("ops", "appdb")),
            Admission::Database
        );
        assert_eq!(
            admission(&admin, &startup("app", "appdb")),
            Admission::Database
        );
        match admission(&admin, &startup("app", "pgrepl")) {
            Admission::Refused(err) => {
                assert_eq!(err.code, sqlstate::INSUFFICIENT_PRIVILEGE);
                assert_eq!(err.severity, write::Severity::Fatal);
            }
            other => panic!("{other:?}"),
        }
        let nobody = AdminConfig {
            users: Vec::new(),
            ..admin
        };
        assert!(matches!(
            admission(&nobody, &startup("ops", "pgrepl")),
            Admission::Refused(_)
        ));
    }
}
