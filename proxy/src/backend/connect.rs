//! Opening a backend connection: TCP, StartupMessage, whatever authentication the server asks
//! for (SCRAM-SHA-256, md5, cleartext, trust), then its ParameterStatus and BackendKeyData.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256, SCRAM_SHA_256};
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::conn::{Counted, SettingsMark};
use super::pool::{Place, NO_WORKER};
use super::socket::CutDetection;
use super::{BackendConn, BackendInfo, PoolKey, Prepared, ProtocolState};
use crate::cancel::BackendCancel;
use crate::protocol::sqlstate;
use crate::protocol::write::{encode_error_fields, Severity};

/// The ParameterStatus values a server reported at startup, in the order it sent them.
pub type ServerParams = Vec<(String, String)>;

/// Why a backend connection could not be used.
#[derive(Debug, Clone)]
pub enum BackendError {
    /// No connection: refused, timed out, reset.
    Unreachable { backend: String, reason: String },
    /// The server answered with an ErrorResponse (bad database, too many connections...).
    Server { fields: Vec<(u8, String)> },
    /// The server said something the proxy cannot handle.
    Protocol { backend: String, reason: String },
    /// The backend has `[pool] max_server_connections` open and none came free in time.
    Full { backend: String, reason: String },
}

impl BackendError {
    /// Appends this error for the client. Server errors keep every field the server sent; only
    /// the severity follows what the proxy does next (the session may go on).
    pub fn encode(&self, severity: Severity, buf: &mut BytesMut) {
        let sev = match severity {
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
        };
        let fields = match self {
            BackendError::Server { fields } => fields
                .iter()
                .map(|(code, value)| match code {
                    b'S' | b'V' => (*code, sev.to_owned()),
                    _ => (*code, value.clone()),
                })
                .collect(),
            BackendError::Unreachable { .. }
            | BackendError::Protocol { .. }
            | BackendError::Full { .. } => vec![
                (b'S', sev.to_owned()),
                (b'V', sev.to_owned()),
                (b'C', self.sqlstate().to_owned()),
                (b'M', self.to_string()),
            ],
        };
        encode_error_fields(fields, buf);
    }

    /// The SQLSTATE of an error the proxy words itself.
    fn sqlstate(&self) -> &'static str {
        match self {
            // too_many_connections, as PostgreSQL says when it is full
            BackendError::Full { .. } => sqlstate::TOO_MANY_CONNECTIONS,
            _ => sqlstate::CONNECTION_FAILURE,
        }
    }
}

impl std::fmt::Display for BackendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BackendError::Unreachable { backend, reason } => {
                write!(
                    f,
                    "pgrepl-proxy: backend {backend} is unreachable: {reason}"
                )
            }
            BackendError::Server { fields } => {
                let msg = fields.iter().find(|(c, _)| *c == b'M');
                write!(
                    f,
                    "{}",
                    msg.map(|(_, m)| m.as_str()).unwrap_or("server error")
                )
            }
            BackendError::Protocol { backend, reason } | BackendError::Full { backend, reason } => {
                write!(f, "pgrepl-proxy: backend {backend}: {reason}")
            }
        }
    }
}

impl std::error::Error for BackendError {}

/// Opens and authenticates a connection for `key`, within `timeout`; it holds `place`, its
/// place among the backend's connections and in its key pool, while it exists.
pub async fn connect(
    info: Arc<BackendInfo>,
    key: PoolKey,
    password: Option<&str>,
    timeout: Duration,
    cut_detection: Option<CutDetection>,
    place: Place,
) -> Result<Box<BackendConn>, BackendError> {
    let unreachable = |reason: String| BackendError::Unreachable {
        backend: info.to_string(),
        reason,
    };
    let attempt = async {
        let stream = TcpStream::connect((info.host.as_str(), info.port))
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        stream
            .set_nodelay(true)
            .map_err(|e| unreachable(e.to_string()))?;
        if let Some(cut) = cut_detection {
            cut.apply(&stream).map_err(|e| unreachable(e.to_string()))?;
        }
        handshake(stream, &info, key.clone(), password, place).await
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(result) => result,
        Err(_) => Err(unreachable(format!(
            "no answer within {} (connect_timeout)",
            humanize(timeout)
        ))),
    }
}

fn humanize(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

/// Reads one backend message during startup.
async fn next_message(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    info: &BackendInfo,
) -> Result<Message, BackendError> {
    loop {
        match Message::parse(buf) {
            Ok(Some(msg)) => return Ok(msg),
            Ok(None) => {}
            Err(e) => {
                return Err(BackendError::Protocol {
                    backend: info.to_string(),
                    reason: e.to_string(),
                })
            }
        }
        let n = stream
            .read_buf(buf)
            .await
            .map_err(|e| BackendError::Unreachable {
                backend: info.to_string(),
                reason: e.to_string(),
            })?;
        if n == 0 {
            return Err(BackendError::Unreachable {
                backend: info.to_string(),
                reason: "the server closed the connection during startup".to_owned(),
            });
        }
    }
}

async fn send(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    info: &BackendInfo,
) -> Result<(), BackendError> {
    stream
        .write_all(buf)
        .await
        .map_err(|e| BackendError::Unreachable {
            backend: info.to_string(),
            reason: e.to_string(),
        })?;
    buf.clear();
    Ok(())
}

fn io_protocol(info: &BackendInfo, e: impl std::fmt::Display) -> BackendError {
    BackendError::Protocol {
        backend: info.to_string(),
        reason: e.to_string(),
    }
}

fn need_password<'a>(
    info: &BackendInfo,
    password: Option<&'a str>,
) -> Result<&'a str, BackendError> {
    password.ok_or_else(|| BackendError::Protocol {
        backend: info.to_string(),
        reason: "the server asks for a password but none is configured for this user".to_owned(),
    })
}

async fn handshake(
    mut stream: TcpStream,
    info: &Arc<BackendInfo>,
    key: PoolKey,
    password: Option<&str>,
    place: Place,
) -> Result<Box<BackendConn>, BackendError> {
    let mut out = BytesMut::with_capacity(256);
    let mut params: Vec<(&str, &str)> = vec![
        ("user", key.startup.user.as_str()),
        ("database", key.startup.database.as_str()),
    ];
    params.extend(
        key.startup
            .options
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str())),
    );
    frontend::startup_message(params, &mut out).map_err(|e| io_protocol(info, e))?;
    send(&mut stream, &mut out, info).await?;

    let mut buf = BytesMut::with_capacity(1024);
    let mut scram: Option<ScramSha256> = None;
    let mut server_params = Vec::new();
    let mut cancel_key = (0, 0);
    loop {
        match next_message(&mut stream, &mut buf, info).await? {
            Message::AuthenticationOk => {}
            Message::AuthenticationCleartextPassword => {
                let pw = need_password(info, password)?;
                frontend::password_message(pw.as_bytes(), &mut out)
                    .map_err(|e| io_protocol(info, e))?;
                send(&mut stream, &mut out, info).await?;
            }
            Message::AuthenticationMd5Password(body) => {
                let pw = need_password(info, password)?;
                let hash = md5_hash(key.startup.user.as_bytes(), pw.as_bytes(), body.salt());
                frontend::password_message(hash.as_bytes(), &mut out)
                    .map_err(|e| io_protocol(info, e))?;
                send(&mut stream, &mut out, info).await?;
            }
            Message::AuthenticationSasl(body) => {
                let pw = need_password(info, password)?;
                let mut mechanisms = body.mechanisms();
                let mut has_scram = false;
                while let Some(m) = mechanisms.next().map_err(|e| io_protocol(info, e))? {
                    has_scram |= m == SCRAM_SHA_256;
                }
                if !has_scram {
                    return Err(io_protocol(
                        info,
                        "the server offers no SASL mechanism the proxy supports",
                    ));
                }
                let state = ScramSha256::new(pw.as_bytes(), ChannelBinding::unsupported());
                frontend::sasl_initial_response(SCRAM_SHA_256, state.message(), &mut out)
                    .map_err(|e| io_protocol(info, e))?;
                send(&mut stream, &mut out, info).await?;
                scram = Some(state);
            }
            Message::AuthenticationSaslContinue(body) => {
                let state = scram
                    .as_mut()
                    .ok_or_else(|| io_protocol(info, "unexpected SASL continue"))?;
                state
                    .update(body.data())
                    .map_err(|e| io_protocol(info, e))?;
                frontend::sasl_response(state.message(), &mut out)
                    .map_err(|e| io_protocol(info, e))?;
                send(&mut stream, &mut out, info).await?;
            }
            Message::AuthenticationSaslFinal(body) => {
                let state = scram
                    .as_mut()
                    .ok_or_else(|| io_protocol(info, "unexpected SASL final"))?;
                state
                    .finish(body.data())
                    .map_err(|e| io_protocol(info, e))?;
            }
            Message::ParameterStatus(body) => {
                let name = body.name().map_err(|e| io_protocol(info, e))?;
                let value = body.value().map_err(|e| io_protocol(info, e))?;
                server_params.push((name.to_owned(), value.to_owned()));
            }
            Message::BackendKeyData(body) => cancel_key = (body.process_id(), body.secret_key()),
            Message::NoticeResponse(_) => {}
            Message::ErrorResponse(body) => {
                let mut fields = Vec::new();
                let mut iter = body.fields();
                while let Some(field) = iter.next().map_err(|e| io_protocol(info, e))? {
                    fields.push((
                        field.type_(),
                        String::from_utf8_lossy(field.value_bytes()).into_owned(),
                    ));
                }
                return Err(BackendError::Server { fields });
            }
            Message::ReadyForQuery(_) => break,
            _ => return Err(io_protocol(info, "unexpected message during startup")),
        }
    }
    let local = stream.local_addr().ok();
    let (rd, wr) = super::stream::split(stream).map_err(|e| BackendError::Unreachable {
        backend: info.to_string(),
        reason: e.to_string(),
    })?;
    Ok(Box::new(BackendConn {
        rd,
        wr,
        proto: ProtocolState::new(buf),
        out,
        info: info.clone(),
        key,
        serial: super::conn::next_serial(),
        cancel: Arc::new(BackendCancel {
            backend: info.clone(),
            pid: cancel_key.0,
            secret: cancel_key.1,
            in_flight: AtomicUsize::new(0),
        }),
        params: Arc::new(server_params),
        prepared: Prepared::default(),
        created: crate::telemetry::clock::Tick::now(),
        connected: SystemTime::now(),
        local,
        settings_seq: 0,
        settings: SettingsMark::Startup,
        worker: NO_WORKER,
        closes_due: Vec::new(),
        has_temp_schema: false,
        counted: Counted::new(info),
        place,
    }))
}
