//! The listener: accepts clients, bounds those still logging in (`client::logins`, the login
//! timeout), enforces the client limit on those that authenticated, and hands each to its
//! session; on shutdown stops accepting and lets sessions finish.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::BytesMut;
use pgrepl_config::Config;
use pgwire::messages::startup::{
    BackendKeyData, NegotiateProtocolVersion, ParameterStatus, SecretKey,
};
use pgwire::messages::Message;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

use crate::event_loop::tcp::LoopTcp as TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::either::Either;

use crate::admin;
use crate::backend::{
    BackendError, BackendId, BackendInfo, Backends, CutDetection, Pool, PoolKey, ServerParams,
    StartupInfo, StartupSettings,
};
use crate::balance::Balancer;
use crate::client::auth::{authenticate, AuthError, Users};
use crate::client::logins::{Evicted, LoginTicket, Logins};
use crate::client::{negotiate, params, tls, ClientStream, Hello, NegotiateError};
use crate::clients::{ClientEntry, Listed, NewClient};
use crate::health::{Health, Monitor};
use crate::live::{Published, RoutingSettings};
use crate::logging::LogLevel;
use crate::protocol::sqlstate;
use crate::protocol::tags::TxStatus;
use crate::protocol::write::{self, ProxyError, Severity};
use crate::reload::{Loader, Reloader};
use crate::session::{ClientInfo, Session, SessionStats};
use crate::shared::{ClientCount, ClientSlot, Shared};
use crate::telemetry::{
    install_recorder, ClientMeters, Endpoint, Rejection, ReloadMeters, Tally, Timing,
};
use crate::workers::{self, Workers};

/// A bound, ready-to-run proxy.
pub struct Proxy {
    listener: TcpListener,
    shared: Arc<Shared>,
    monitor: Arc<Monitor>,
    endpoint: Endpoint,
    tls: Option<TlsAcceptor>,
    connect_timeout: Duration,
    startup_timeout: Duration,
    shutdown_timeout: Duration,
    workers: usize,
    /// How statements are timed, for the meters of replicas a reload adds.
    timing: Option<Timing>,
    /// Kept while the proxy runs (`Shared` holds it weakly).
    _reloader: Option<Arc<Reloader>>,
}

/// How often idle connections are checked for their timeouts and pools for `min_pool_size`.
const POOL_MAINTENANCE: Duration = Duration::from_secs(1);

impl Proxy {
    pub async fn bind(config: &Config) -> anyhow::Result<Proxy> {
        // Before any handle is registered: handles taken without a recorder do nothing.
        let prometheus = if config.metrics.enabled {
            Some(install_recorder()?)
        } else {
            None
        };
        // The endpoint first: once clients can connect, it is there too.
        let endpoint = Endpoint::bind(&config.metrics.listen, prometheus).await?;
        let listener = TcpListener::bind(&config.proxy.listen)
            .await
            .with_context(|| format!("[proxy] listen: cannot listen on {}", config.proxy.listen))?;
        let tls = config.tls.as_ref().map(tls::acceptor).transpose()?;
        let slow = config.log.slow_statement;
        let timing = (config.metrics.enabled || !slow.is_zero()).then(|| Timing {
            slow: (!slow.is_zero()).then(|| u64::try_from(slow.as_nanos()).unwrap_or(u64::MAX)),
            text: config.log.statement_text,
        });
        let backends = Arc::new(Backends::new());
        for b in std::iter::once(&config.primary).chain(&config.replicas) {
            backends
                .add(|id| BackendInfo::new(id, b, &config.primary.name, timing.clone()))
                .map_err(|_| {
                    anyhow::anyhow!(
                        "[[replicas]]: {} configured, at most {} are supported",
                        config.replicas.len(),
                        Backends::CAPACITY - 1
                    )
                })?;
        }
        let mut health = Health::new(backends.len(), config.routing.max_replica_lag)
            .waiting_up_to(config.routing.writer_wait);
        if config.routing.follow_primary {
            let confirmations =
                u32::try_from(config.routing.writer_confirmations).unwrap_or(u32::MAX);
            health = health.following(confirmations);
        }
        let health = Arc::new(health);
        let monitor = Arc::new(Monitor::start(&health, &backends, config)?);
        let backends_len = backends.len();
        let pool = Pool::new(
            backends,
            &config.pool,
            config.proxy.connect_timeout,
            CutDetection::for_timeout(config.proxy.server_tcp_user_timeout),
        );
        // The console's SHOW ROUTES reads the tallies too.
        let counting = config.metrics.enabled || !config.admin.users.is_empty();
        let shared = Shared {
            max_message_size: AtomicUsize::new(config.proxy.max_message_size),
            pool,
            cancels: Default::default(),
            users: Published::new(Users::new(&config.users)),
            shutdown: Default::default(),
            health,
            routing: Published::new(RoutingSettings::new(config)),
            statement_ids: Arc::default(),
            pinned_sessions: Default::default(),
            commit_round: Default::default(),
            balancer: Balancer::new(config.routing.balance, []),
            clients: ClientCount::new(config.proxy.max_client_connections),
            logins: Logins::new(
                config.proxy.max_pending_logins,
                config.proxy.max_pending_logins_per_address,
            ),
            client_meters: ClientMeters::register(),
            reload_meters: ReloadMeters::register(),
            counting,
            tallies: (0..workers::default_count(config.proxy.workers))
                .map(|_| Arc::new(Tally::new(Backends::CAPACITY)))
                .collect(),
            listen: listener.local_addr()?.to_string(),
            started: Instant::now(),
            registry: Default::default(),
            pause: Default::default(),
            averages: Default::default(),
            config: std::sync::RwLock::new(Arc::new(config.clone())),
            reloader: OnceLock::new(),
        };
        let members: Vec<(BackendId, u32)> = config
            .nodes()
            .zip(BackendId::all(backends_len))
            .filter(|(_, id)| reads_from(config, *id))
            .map(|(node, id)| (id, node.weight))
            .collect();
        shared.balancer.configure(config.routing.balance, &members);
        Ok(Proxy {
            listener,
            shared: Arc::new(shared),
            monitor,
            endpoint,
            tls,
            connect_timeout: config.proxy.connect_timeout,
            startup_timeout: config.proxy.startup_timeout,
            shutdown_timeout: config.proxy.shutdown_timeout,
            workers: workers::default_count(config.proxy.workers),
            timing,
            _reloader: None,
        })
    }

    /// What reloads this proxy's configuration: `config` is the one it was bound with,
    /// `load` reads it again, `log` changes the log filter. The admin console finds it in
    /// [`Shared::reloader`].
    pub fn reloader(&mut self, config: Config, load: Loader, log: LogLevel) -> Arc<Reloader> {
        let reloader = Arc::new(Reloader::new(
            self.shared.clone(),
            self.monitor.clone(),
            config,
            load,
            log,
            self.timing.clone(),
        ));
        let _ = self.shared.reloader.set(Arc::downgrade(&reloader));
        self._reloader = Some(reloader.clone());
        reloader
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Where `/metrics`, `/healthz`, `/readyz` and `/status` are served.
    pub fn endpoint_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// Serves until `shutdown` completes, then stops accepting and gives sessions up to
    /// `[proxy] shutdown_timeout` to finish their transactions.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        // Clients wait in the listen backlog meanwhile; the first ones then read from a replica
        // the monitor has checked.
        // Health and status answer from the start, also while the first round runs.
        let endpoint = self.endpoint.spawn(self.shared.clone());
        self.monitor.first_round(self.connect_timeout).await;
        let workers = Workers::start(self.workers)?;
        let reaper = {
            let pool = self.shared.pool.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(POOL_MAINTENANCE);
                loop {
                    tick.tick().await;
                    pool.maintain();
                }
            })
        };
        // A fenced node's idle connections close as soon as it is fenced: nobody may use them.
        let fencer = {
            let shared = self.shared.clone();
            tokio::spawn(async move {
                loop {
                    shared.health.writer_moved().await;
                    for node in shared.health.election().fenced {
                        shared.pool.close_backend(BackendId::nth(node));
                    }
                }
            })
        };
        tokio::pin!(shutdown);
        // The admin console's SHUTDOWN starts it from inside.
        let console_shutdown = self.shared.shutdown.wait();
        tokio::pin!(console_shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = &mut console_shutdown => break,
                accepted = self.listener.accept() => match accepted {
                    Ok((tcp, peer)) => {
                        self.shared.client_meters.accepted.increment(1);
                        let ticket = self.shared.logins.enter(peer.ip());
                        let conn = Connection {
                            shared: self.shared.clone(),
                            tls: self.tls.clone(),
                            startup_timeout: self.startup_timeout,
                            connect_timeout: self.connect_timeout,
                        };
                        // Re-registered with the worker's own reactor.
                        match tcp.into_std() {
                            Ok(tcp) => {
                                workers.spawn(|worker| conn.start(tcp, peer, ticket, worker));
                            }
                            Err(e) => tracing::warn!(%peer, error = %e, "cannot hand a client to a worker"),
                        }
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
            }
        }
        drop(self.listener);
        tracing::info!(
            sessions = workers.running(),
            timeout = ?self.shutdown_timeout,
            "shutting down: no longer accepting; waiting for sessions to finish"
        );
        self.shared.shutdown.begin();
        let drained = tokio::time::timeout(self.shutdown_timeout, workers.all_ended()).await;
        if drained.is_err() {
            tracing::warn!(
                sessions = workers.running(),
                "shutdown timeout: closing remaining sessions"
            );
        }
        workers.stop();
        reaper.abort();
        fencer.abort();
        endpoint.abort();
        self.monitor.stop().await;
        self.shared.pool.close_idle();
        tracing::info!("shutdown complete");
        Ok(())
    }
}

/// One accepted client connection, before and during its session.
#[derive(Clone)]
struct Connection {
    shared: Arc<Shared>,
    tls: Option<TlsAcceptor>,
    startup_timeout: Duration,
    connect_timeout: Duration,
}

/// A client that authenticated: what it asked for at startup.
struct LoggedIn {
    stream: ClientStream,
    startup: Arc<StartupInfo>,
    /// Its startup settings, applied on every lease.
    settings: Vec<(String, String)>,
    /// The proxy's password for its backend connections.
    password: Option<Arc<str>>,
}

/// A client that passed startup and authentication.
struct Admitted {
    stream: ClientStream,
    cancel_key: (i32, i32),
    listed: Listed,
    serving: Serving,
}

/// What an admitted client talks to.
enum Serving {
    /// Its database, through a session.
    Session(ClientInfo),
    /// The admin console.
    Console,
}

/// Where a client connection comes from and arrives.
#[derive(Clone, Copy)]
struct Ends {
    peer: SocketAddr,
    local: Option<SocketAddr>,
}

/// What serves an admitted client, boxed and sized for its kind: inline in the client's task,
/// every task would keep room for the largest of the four (a TLS stream's is kilobytes), an
/// idle plain client's too.
fn serving_task(
    shared: Arc<Shared>,
    serving: Serving,
    stream: ClientStream,
    entry: &Arc<ClientEntry>,
) -> Pin<Box<dyn Future<Output = SessionStats> + Send>> {
    match (serving, stream) {
        (Serving::Session(info), Either::Left(tcp)) => {
            let (r, w) = tcp.into_split();
            Box::pin(Session::new(shared, info, r, w).run())
        }
        (Serving::Session(info), Either::Right(tls)) => {
            let (r, w) = tokio::io::split(tls);
            Box::pin(Session::new(shared, info, r, w).run())
        }
        (Serving::Console, Either::Left(tcp)) => {
            let (r, w) = tcp.into_split();
            Box::pin(admin::Console::new(shared, entry.clone(), r, w).run())
        }
        (Serving::Console, Either::Right(tls)) => {
            let (r, w) = tokio::io::split(tls);
            Box::pin(admin::Console::new(shared, entry.clone(), r, w).run())
        }
    }
}

async fn send_fatal(stream: &mut ClientStream, err: &ProxyError) {
    let mut buf = BytesMut::new();
    err.encode(&mut buf);
    let _ = stream.write_all(&buf).await;
    let _ = stream.shutdown().await;
}

impl Connection {
    fn reject(&self, why: Rejection) {
        self.shared.client_meters.rejected(why);
    }

    /// Runs on worker `worker`, which got the client. Its entry (login, admission) is a boxed
    /// future of its own, freed once the client is in: an async fn keeps its arguments for
    /// as long as it runs, and the task would keep the socket, the login ticket and the
    /// entry's room (11 kB) all the session's life.
    fn start(
        self,
        tcp: std::net::TcpStream,
        peer: SocketAddr,
        ticket: LoginTicket,
        worker: usize,
    ) -> impl Future<Output = ()> + Send {
        let entering = Box::pin(self.clone().enter(tcp, peer, ticket, worker));
        self.serve(entering, peer)
    }

    async fn serve(
        self,
        entering: Pin<Box<impl Future<Output = Option<(Admitted, ClientSlot)>>>>,
        peer: SocketAddr,
    ) {
        let started = Instant::now();
        let Some((admitted, slot)) = entering.await else {
            return;
        };
        let Admitted {
            stream,
            cancel_key,
            listed,
            serving,
        } = admitted;
        let entry = listed.entry().clone();
        let (user, database, client_id) = (&entry.who.user, &entry.who.database, entry.id);
        tracing::info!(%peer, %user, %database, client_id, "client connected");
        let stats = serving_task(self.shared.clone(), serving, stream, &entry).await;
        self.shared.cancels.unregister(cancel_key);
        drop(listed);
        drop(slot);
        tracing::info!(
            %peer, %user, %database, client_id,
            duration_ms = started.elapsed().as_millis() as u64,
            to_primary = stats.to_primary,
            to_replica = stats.to_replica,
            bytes_in = stats.bytes_in,
            bytes_out = stats.bytes_out,
            "client disconnected"
        );
    }

    /// Login, the client limit, then admission: the client and its place among
    /// `max_client_connections`, or None when the connection ends here.
    async fn enter(
        self,
        tcp: std::net::TcpStream,
        peer: SocketAddr,
        ticket: LoginTicket,
        worker: usize,
    ) -> Option<(Admitted, ClientSlot)> {
        // Registered here, with the reactor of the worker that polls it.
        let tcp = match TcpStream::from_std(tcp) {
            Ok(tcp) => tcp,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "cannot register a client socket");
                return None;
            }
        };
        let _ = tcp.set_nodelay(true);
        let ends = Ends {
            peer,
            local: tcp.local_addr().ok(),
        };
        let mut login = self.pending_login(tcp, peer, ticket).await?;
        // Only now, authenticated, does it count against max_client_connections.
        let Some(slot) = self.shared.clients.take() else {
            self.reject(Rejection::Limit);
            tracing::info!(user = %login.startup.user, "client refused: [proxy] max_client_connections reached");
            send_fatal(
                &mut login.stream,
                &ProxyError::fatal(
                    sqlstate::TOO_MANY_CONNECTIONS,
                    "sorry, too many clients already",
                ),
            )
            .await;
            return None;
        };
        let admitted = self.admit(login, worker, ends).await?;
        Some((admitted, slot))
    }

    /// The client's part of startup while it counts as a pending login: it ends at the login
    /// timeout (`[proxy] startup_timeout`), or when newer logins need its place. Closed
    /// without a word then, as PostgreSQL does at its authentication timeout: the client may
    /// be anywhere in the exchange.
    async fn pending_login(
        &self,
        tcp: TcpStream,
        peer: SocketAddr,
        mut ticket: LoginTicket,
    ) -> Option<LoggedIn> {
        tokio::select! {
            biased;
            login = self.log_in(tcp) => login,
            bound = ticket.evicted() => {
                let (why, key) = match bound {
                    Evicted::Overall => (Rejection::PendingLimit, "max_pending_logins"),
                    Evicted::PerAddress => (Rejection::AddressLimit, "max_pending_logins_per_address"),
                };
                self.reject(why);
                tracing::debug!(%peer, "login closed to make room: [proxy] {key} reached");
                None
            }
            () = tokio::time::sleep(self.startup_timeout) => {
                self.reject(Rejection::Timeout);
                tracing::debug!(%peer, "client did not authenticate within [proxy] startup_timeout");
                None
            }
        }
    }

    /// Negotiation, startup checks and authentication; None when the connection ends here.
    async fn log_in(&self, tcp: TcpStream) -> Option<LoggedIn> {
        let (mut stream, hello) = match negotiate(tcp, self.tls.as_ref()).await {
            Ok(ok) => ok,
            Err(NegotiateError::Gone) => return None,
            Err(NegotiateError::Protocol(mut stream, err)) => {
                self.reject(Rejection::Protocol);
                send_fatal(&mut stream, &err).await;
                return None;
            }
        };
        let (minor, params) = match hello {
            Hello::Cancel { pid, secret } => {
                self.shared.cancels.cancel(pid, secret).await;
                return None;
            }
            Hello::Startup { minor, params } => (minor, params),
        };
        let (startup, settings) = match startup_info(params, minor, &mut stream).await {
            Ok((startup, settings)) => (Arc::new(startup), settings),
            Err(err) => {
                self.reject(Rejection::Protocol);
                tracing::info!(code = err.code, message = %err.message, "client startup refused");
                send_fatal(&mut stream, &err).await;
                return None;
            }
        };
        let users = self.shared.users.get();
        let password = match authenticate(&mut stream, &users, &startup.user).await {
            Ok(password) => password,
            Err(AuthError::Gone) => return None,
            Err(AuthError::Rejected(err)) => {
                self.reject(Rejection::Auth);
                tracing::info!(user = %startup.user, code = err.code, "authentication failed");
                send_fatal(&mut stream, &err).await;
                return None;
            }
        };
        Some(LoggedIn {
            stream,
            startup,
            settings,
            password,
        })
    }

    /// Tells an authenticated client the server parameters and its cancel key (or greets a
    /// client of the admin console); None when no backend accepted it.
    async fn admit(&self, login: LoggedIn, worker: usize, ends: Ends) -> Option<Admitted> {
        let LoggedIn {
            mut stream,
            startup,
            settings,
            password,
        } = login;
        match admin::admission(&self.shared.config().admin, &startup) {
            admin::Admission::Database => {}
            admin::Admission::Console => {
                return self.admit_console(stream, &startup, &settings, ends).await
            }
            admin::Admission::Refused(err) => {
                self.reject(Rejection::Auth);
                tracing::info!(user = %startup.user, code = err.code, "admin console refused");
                send_fatal(&mut stream, &err).await;
                return None;
            }
        }
        let server_params = match self
            .server_params(&startup, password.as_deref(), &settings)
            .await
        {
            Ok(params) => params,
            Err(err) => {
                self.reject(Rejection::Backend);
                tracing::info!(user = %startup.user, database = %startup.database, error = %err, "client refused: no backend accepted it");
                let mut buf = BytesMut::new();
                err.encode(Severity::Fatal, &mut buf);
                let _ = stream.write_all(&buf).await;
                return None;
            }
        };
        let (cancel_key, cancel) = self.shared.cancels.register();
        let mut buf = BytesMut::new();
        for (name, value) in server_params.iter() {
            // The proxy as a whole accepts writes, whatever server the values came from.
            let value = if name == "in_hot_standby" {
                "off"
            } else {
                value.as_str()
            };
            let _ = ParameterStatus::new(name.clone(), value.to_owned()).encode(&mut buf);
        }
        let _ = BackendKeyData::new(cancel_key.0, SecretKey::I32(cancel_key.1)).encode(&mut buf);
        write::ready_for_query(TxStatus::Idle, &mut buf);
        if stream.write_all(&buf).await.is_err() {
            self.shared.cancels.unregister(cancel_key);
            return None;
        }
        let default_read_only = server_params
            .iter()
            .any(|(name, value)| name == "default_transaction_read_only" && value == "on");
        let listed = self.list(&stream, &startup, &settings, ends, false);
        let pool_mode = self
            .shared
            .config()
            .pool
            .settings_for(Some(&startup.user), Some(&startup.database))
            .mode;
        let info = ClientInfo {
            startup,
            settings: StartupSettings {
                settings,
                told: server_params,
            },
            password,
            replica: self.shared.pick_replica(),
            pool_mode,
            cancel,
            default_read_only,
            worker,
            listed: listed.entry().clone(),
        };
        Some(Admitted {
            stream,
            cancel_key,
            listed,
            serving: Serving::Session(info),
        })
    }

    /// Greets a client of the admin console, which no backend serves.
    async fn admit_console(
        &self,
        mut stream: ClientStream,
        startup: &StartupInfo,
        settings: &[(String, String)],
        ends: Ends,
    ) -> Option<Admitted> {
        let (cancel_key, _) = self.shared.cancels.register();
        let mut buf = BytesMut::new();
        admin::greet(&startup.user, cancel_key, &mut buf);
        if stream.write_all(&buf).await.is_err() {
            self.shared.cancels.unregister(cancel_key);
            return None;
        }
        let listed = self.list(&stream, startup, settings, ends, true);
        Some(Admitted {
            stream,
            cancel_key,
            listed,
            serving: Serving::Console,
        })
    }

    /// Lists an admitted client in the registry.
    fn list(
        &self,
        stream: &ClientStream,
        startup: &StartupInfo,
        settings: &[(String, String)],
        ends: Ends,
        console: bool,
    ) -> Listed {
        let application_name = settings
            .iter()
            .find(|(name, _)| name == "application_name")
            .map(|(_, value)| value.clone())
            .unwrap_or_default();
        self.shared.registry.register(NewClient {
            user: startup.user.clone(),
            database: startup.database.clone(),
            peer: ends.peer,
            local: ends.local,
            application_name,
            tls: matches!(stream, Either::Right(_)),
            console,
        })
    }

    /// The server parameters the client is told: the primary's with the client's startup
    /// `settings` applied, or a replica's while the primary is unreachable. A server's own
    /// refusal (no such database, a bad setting...) is final. Each backend gets twice
    /// `[proxy] connect_timeout` to answer (a place there, then a connection), waiting for
    /// another login's question to it included.
    async fn server_params(
        &self,
        startup: &Arc<StartupInfo>,
        password: Option<&str>,
        settings: &[(String, String)],
    ) -> Result<Arc<ServerParams>, BackendError> {
        let mut last_err = None;
        let backends: Vec<_> = self.shared.pool.backends().active().map(|b| b.id).collect();
        for backend in backends {
            let key = PoolKey {
                backend,
                startup: startup.clone(),
            };
            let asked = self.shared.pool.server_params(&key, password, settings);
            let answer = tokio::time::timeout(2 * self.connect_timeout, asked)
                .await
                .unwrap_or_else(|_| {
                    Err(BackendError::Unreachable {
                        backend: self.shared.pool.backends()[backend.index()].to_string(),
                        reason: "no answer within twice [proxy] connect_timeout".to_owned(),
                    })
                });
            match answer {
                Ok(params) => return Ok(params),
                Err(err @ (BackendError::Server { .. } | BackendError::Full { .. })) => {
                    return Err(err)
                }
                Err(err) => {
                    tracing::warn!(error = %err, "backend unavailable at client startup");
                    last_err = Some(err);
                }
            }
        }
        Err(last_err.unwrap_or(BackendError::Protocol {
            backend: String::new(),
            reason: "no backend is configured".to_owned(),
        }))
    }
}

/// Validates the startup parameters; tells the client about protocol features it asked for
/// that the proxy does not speak (protocol 3.x minor versions, `_pq_` options). Returns what
/// keys its connections, and the settings applied on lease.
async fn startup_info(
    params: Vec<(String, String)>,
    minor: u16,
    stream: &mut ClientStream,
) -> Result<(StartupInfo, Vec<(String, String)>), ProxyError> {
    let mut user = None;
    let mut database = None;
    let mut options = Vec::new();
    let mut unsupported = Vec::new();
    for (name, value) in params {
        match name.as_str() {
            "user" => user = Some(value),
            "database" => database = Some(value),
            "replication" if !matches!(value.as_str(), "false" | "off" | "no" | "0") => {
                return Err(ProxyError::fatal(
                    sqlstate::FEATURE_NOT_SUPPORTED,
                    "pgrepl-proxy does not support replication connections; connect to the primary directly",
                ))
            }
            "replication" => {}
            _ if name.starts_with("_pq_.") => unsupported.push(name),
            _ => options.push((name, value)),
        }
    }
    let user = user.filter(|u| !u.is_empty()).ok_or_else(|| {
        ProxyError::fatal(
            sqlstate::INVALID_AUTHORIZATION_SPECIFICATION,
            "no PostgreSQL user name specified in startup packet",
        )
    })?;
    if minor > 0 || !unsupported.is_empty() {
        let mut buf = BytesMut::new();
        let _ = NegotiateProtocolVersion::new(0, unsupported).encode(&mut buf);
        stream
            .write_all(&buf)
            .await
            .map_err(|_| ProxyError::fatal(sqlstate::CONNECTION_FAILURE, "client went away"))?;
    }
    let split = params::split(options);
    let startup = StartupInfo {
        database: database
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| user.clone()),
        user,
        options: split.fixed,
    };
    Ok((startup, split.settings))
}

/// Whether node `id` may serve reads while it is a standby: any node when following the
/// primary, else every node but the first (the fixed writer).
pub fn reads_from(config: &Config, id: BackendId) -> bool {
    config.routing.follow_primary || !id.is_first()
}
