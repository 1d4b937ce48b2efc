//! Switchover's write hold through a running proxy (design §6, §8 steps 2 and 6): the tool
//! logs into the proxy's admin console and sends `HOLD WRITES`, then, once the new primary is
//! promoted, waits until `SHOW BACKENDS` names it the writer and sends `RELEASE WRITES`. The
//! hold belongs to that console session, so if the tool dies the proxy lifts it.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use pgrepl_config::Config;
use pgrepl_provision::failover::WriteHold;
use pgrepl_provision::runtime::NodeId;
use pgrepl_proxy::protocol::sqlstate;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

/// How long the tool tries to reach the console.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often `SHOW BACKENDS` is asked while waiting for the new writer.
const POLL: Duration = Duration::from_millis(50);
/// Beyond `[admin] pause_timeout`, how long `HOLD WRITES` may take to answer (the proxy's
/// own question to the writer, over a loaded machine).
const ANSWER_SLACK: Duration = Duration::from_secs(10);

/// Where and as whom the console is reached: `[proxy] listen`, the first `[admin] users`
/// entry with its `[[users]]` password, `[admin] database`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleLogin {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<String>,
    pub database: String,
}

impl ConsoleLogin {
    /// The login `config` describes; an error saying what is missing, and that
    /// `--without-proxy` goes on without one.
    pub fn from_config(config: &Config) -> Result<ConsoleLogin> {
        let listen = &config.proxy.listen;
        let (host, port) = reachable(listen).with_context(|| {
            format!("[proxy] listen = {listen:?} is not a host:port the console can be reached at")
        })?;
        let Some(user) = config.admin.users.first() else {
            bail!(
                "switchover holds writes through the proxy's admin console ({listen}), and \
                 [admin] users names nobody to log in as; add one, or run `pgrepl-proxy \
                 switchover --without-proxy` to go on without a proxy (writes are then not held)"
            );
        };
        let password = config
            .users
            .iter()
            .find(|u| &u.name == user)
            .and_then(|u| u.password.clone());
        Ok(ConsoleLogin {
            host,
            port,
            user: user.clone(),
            password,
            database: config.admin.database.clone(),
        })
    }

    fn conninfo(&self) -> tokio_postgres::Config {
        let mut info = tokio_postgres::Config::new();
        info.host(&self.host)
            .port(self.port)
            .user(&self.user)
            .dbname(&self.database)
            .application_name("pgrepl-proxy switchover")
            .connect_timeout(CONNECT_TIMEOUT);
        if let Some(password) = &self.password {
            info.password(password);
        }
        info
    }
}

/// The host and port to connect to for a listen address: a wildcard address is reached
/// on the loopback of the same family.
fn reachable(listen: &str) -> Option<(String, u16)> {
    let (host, port) = listen.rsplit_once(':')?;
    let port = port.parse().ok()?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host = match host {
        "" | "0.0.0.0" => "127.0.0.1",
        "::" => "::1",
        other => other,
    };
    Some((host.to_owned(), port))
}

/// Why the proxy would never write to `target`, from its configuration: it must be a
/// promotable node with `[routing] follow_primary` on.
fn cannot_follow(config: &Config, target: &str) -> Option<String> {
    if !config.routing.follow_primary {
        return Some(
            "[routing] follow_primary is off, so the proxy keeps writing to its first node"
                .to_owned(),
        );
    }
    match config.nodes().find(|n| n.name == target) {
        None => Some(format!(
            "the proxy's configuration has no node named {target}"
        )),
        Some(node) if !node.promotable => Some(format!(
            "{target} is not promotable in the proxy's configuration ([[nodes]] promotable)"
        )),
        Some(_) => None,
    }
}

/// The node `SHOW BACKENDS` names the writer, from its rows as (name, writer) pairs.
fn writer_of(backends: &[(String, String)]) -> Option<&str> {
    backends
        .iter()
        .find(|(_, writer)| writer == "t")
        .map(|(name, _)| name.as_str())
}

/// A write hold taken through the proxy's console; connects when the hold is taken.
pub struct ConsoleHold {
    login: ConsoleLogin,
    config: Config,
    client: Option<Client>,
}

impl ConsoleHold {
    /// A hold for the proxy `config` describes; an error (before anything changes) when
    /// it has no console login to use.
    pub fn new(config: &Config) -> Result<ConsoleHold> {
        Ok(ConsoleHold {
            login: ConsoleLogin::from_config(config)?,
            config: config.clone(),
            client: None,
        })
    }

    fn where_(&self) -> String {
        let l = &self.login;
        format!(
            "the proxy's admin console at {}:{} (database {}, user {})",
            l.host, l.port, l.database, l.user
        )
    }

    async fn connect(&self) -> Result<Client> {
        let connected =
            tokio::time::timeout(CONNECT_TIMEOUT, self.login.conninfo().connect(NoTls)).await;
        let (client, connection) = match connected {
            Ok(Ok(pair)) => pair,
            Ok(Err(e)) => return Err(e).with_context(|| self.unreachable()),
            Err(_) => bail!("{} (no answer in {CONNECT_TIMEOUT:?})", self.unreachable()),
        };
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                eprintln!("the console connection ended: {e}");
            }
        });
        Ok(client)
    }

    fn unreachable(&self) -> String {
        format!(
            "cannot reach {}; nothing changed. Start the proxy, or run `pgrepl-proxy \
             switchover --without-proxy` to go on without one (writes are then not held)",
            self.where_()
        )
    }

    fn client(&self) -> Result<&Client> {
        self.client.as_ref().context("writes are not held")
    }

    /// `SHOW BACKENDS`' names and writer flags.
    async fn backends(&self) -> Result<Vec<(String, String)>> {
        let messages = self.client()?.simple_query("SHOW BACKENDS").await?;
        let mut rows = Vec::new();
        for message in messages {
            if let SimpleQueryMessage::Row(row) = message {
                let name = row.try_get("name")?.unwrap_or_default().to_owned();
                let writer = row.try_get("writer")?.unwrap_or_default().to_owned();
                rows.push((name, writer));
            }
        }
        Ok(rows)
    }
}

impl WriteHold for ConsoleHold {
    async fn hold(&mut self, target: NodeId) -> Result<String> {
        let name = target.name();
        if let Some(why) = cannot_follow(&self.config, &name) {
            bail!("{why}: it would not write to {name} after the switchover; nothing changed");
        }
        self.client = Some(self.connect().await?);
        let backends = self.backends().await?;
        if !backends.iter().any(|(n, _)| *n == name) {
            bail!("the running proxy has no backend named {name} (SHOW BACKENDS); nothing changed");
        }
        let limit = self.config.admin.pause_timeout + ANSWER_SLACK;
        let began = Instant::now();
        let answer = tokio::time::timeout(limit, self.client()?.simple_query("HOLD WRITES"))
            .await
            .with_context(|| format!("HOLD WRITES did not answer in {limit:?}"))?;
        let waited =
            humantime::format_duration(Duration::from_millis(began.elapsed().as_millis() as u64));
        match answer {
            Ok(_) => Ok(format!("writes held by the proxy (after {waited})")),
            Err(e) if e.code().map(|c| c.code()) == Some(sqlstate::OBJECT_IN_USE) => {
                // The hold stays in force; what is still open fails with 40001 once the
                // primary changes, as the design says.
                let message = e
                    .as_db_error()
                    .map_or(e.to_string(), |d| d.message().into());
                Ok(format!(
                    "writes held by the proxy; {message}: those get 40001 when {name} takes over"
                ))
            }
            Err(e) => Err(e).context("HOLD WRITES failed; nothing changed"),
        }
    }

    async fn release_to(&mut self, writer: NodeId) -> Result<String> {
        let name = writer.name();
        let limit = self.config.routing.writer_wait;
        let began = Instant::now();
        loop {
            let backends = self.backends().await?;
            if writer_of(&backends) == Some(name.as_str()) {
                break;
            }
            if began.elapsed() >= limit {
                self.release().await?;
                bail!(
                    "the proxy did not name {name} the writer within {} ([routing] \
                     writer_wait); writes released",
                    humantime::format_duration(limit)
                );
            }
            tokio::time::sleep(POLL).await;
        }
        let waited = began.elapsed().as_millis();
        self.release().await?;
        Ok(format!(
            "the proxy writes to {name} (named the writer {waited} ms after the promotion step); writes released"
        ))
    }

    async fn release(&mut self) -> Result<()> {
        self.client()?
            .simple_query("RELEASE WRITES")
            .await
            .context("RELEASE WRITES failed")?;
        // Ending the session would lift the hold too; closing says we are done.
        self.client = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgrepl_config::BackendConfig;

    #[test]
    fn the_console_is_reached_where_the_proxy_listens_wildcards_on_loopback() {
        let cases: &[(&str, Option<(&str, u16)>)] = &[
            ("127.0.0.1:6432", Some(("127.0.0.1", 6432))),
            ("0.0.0.0:6432", Some(("127.0.0.1", 6432))),
            ("[::]:7000", Some(("::1", 7000))),
            ("[::1]:7000", Some(("::1", 7000))),
            ("proxy.example:6432", Some(("proxy.example", 6432))),
            ("6432", None),
            ("host:port", None),
        ];
        for (listen, expected) in cases {
            let got = reachable(listen);
            let expected = expected.map(|(h, p)| (h.to_owned(), p));
            assert_eq!(got, expected, "{listen}");
        }
    }

    fn config_with(admin: &[&str], users: &[(&str, Option<&str>)]) -> Config {
        let mut config = Config::defaults();
        config.admin.users = admin.iter().map(|s| s.to_string()).collect();
        for (name, password) in users {
            config.users.push(pgrepl_config::UserConfig {
                name: name.to_string(),
                password: password.map(str::to_owned),
                auth: Default::default(),
            });
        }
        config
    }

    #[test]
    fn the_login_is_the_first_admin_user_with_its_password() {
        let config = config_with(
            &["ops", "other"],
            &[("app", Some("a")), ("ops", Some("secret"))],
        );
        let login = ConsoleLogin::from_config(&config).unwrap();
        assert_eq!(
            login,
            ConsoleLogin {
                host: "127.0.0.1".into(),
                port: 6432,
                user: "ops".into(),
                password: Some("secret".into()),
                database: "pgrepl".into(),
            }
        );
        let trust = config_with(&["ops"], &[("ops", None)]);
        assert_eq!(ConsoleLogin::from_config(&trust).unwrap().password, None);
    }

    #[test]
    fn without_an_admin_user_the_error_points_at_without_proxy() {
        let err = ConsoleLogin::from_config(&config_with(&[], &[])).unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains("[admin] users") && text.contains("--without-proxy"),
            "{text}"
        );
    }

    fn node(name: &str, promotable: bool) -> BackendConfig {
        BackendConfig {
            name: name.into(),
            host: "127.0.0.1".into(),
            port: 5432,
            weight: 1,
            promotable,
        }
    }

    #[test]
    fn the_proxy_must_be_able_to_follow_the_target() {
        let mut config = Config::defaults();
        config.primary = node("db01", true);
        config.replicas = vec![node("db02", true), node("db03", false)];
        config.routing.follow_primary = true;
        let cases = [
            ("db02", None),
            ("db03", Some("not promotable")),
            ("db04", Some("no node named db04")),
        ];
        for (target, expected) in cases {
            let why = cannot_follow(&config, target);
            match expected {
                None => assert_eq!(why, None, "{target}"),
                Some(part) => assert!(why.as_deref().is_some_and(|w| w.contains(part)), "{why:?}"),
            }
        }
        config.routing.follow_primary = false;
        assert!(cannot_follow(&config, "db02").is_some_and(|w| w.contains("follow_primary")));
    }

    #[test]
    fn the_writer_is_the_backend_flagged_t() {
        let rows = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(n, w)| (n.to_string(), w.to_string()))
                .collect()
        };
        assert_eq!(
            writer_of(&rows(&[("db01", "f"), ("db02", "t")])),
            Some("db02")
        );
        assert_eq!(writer_of(&rows(&[("db01", "f"), ("db02", "f")])), None);
        assert_eq!(writer_of(&[]), None);
    }
}
