//! The untyped packets that open a connection: SSLRequest, GSSENCRequest, CancelRequest and
//! the StartupMessage (decoded with pgwire).

use crate::event_loop::tcp::LoopTcp as TcpStream;
use bytes::{Buf, BytesMut};
use pgwire::messages::startup::Startup;
use pgwire::messages::{DecodeContext, Message};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::either::Either;

use crate::protocol::sqlstate;
use crate::protocol::write::ProxyError;

/// A client connection, plain or TLS.
pub type ClientStream = Either<TcpStream, TlsStream<TcpStream>>;

const SSL_REQUEST: i32 = 80877103;
const GSSENC_REQUEST: i32 = 80877104;
const CANCEL_REQUEST: i32 = 80877102;
/// PostgreSQL's own limit for packets before authentication.
const MAX_STARTUP_PACKET: usize = 10000;

/// What the client wants, once encryption is settled.
#[derive(Debug)]
pub enum Hello {
    Startup {
        minor: u16,
        params: Vec<(String, String)>,
    },
    Cancel {
        pid: i32,
        secret: i32,
    },
}

/// Why negotiation ended without a usable request.
pub enum NegotiateError {
    /// The connection broke; there is nobody to tell.
    Gone,
    /// The client broke the protocol; tell it on this stream.
    Protocol(Box<ClientStream>, ProxyError),
}

#[derive(Debug)]
pub(crate) enum Packet {
    Ssl,
    GssEnc,
    Hello(Hello),
}

/// Reads one packet: Err(()) if the connection broke, else the packet or why it is refused.
/// Never reads or allocates more than [`MAX_STARTUP_PACKET`] bytes.
pub(crate) async fn read_packet<S: AsyncReadExt + Unpin>(
    s: &mut S,
) -> Result<Result<Packet, ProxyError>, ()> {
    let len = s.read_u32().await.map_err(|_| ())? as usize;
    if !(8..=MAX_STARTUP_PACKET).contains(&len) {
        return Ok(Err(ProxyError::fatal(
            sqlstate::PROTOCOL_VIOLATION,
            format!("invalid length of startup packet ({len} bytes)"),
        )));
    }
    let mut packet = BytesMut::zeroed(len);
    packet[..4].copy_from_slice(&(len as u32).to_be_bytes());
    s.read_exact(&mut packet[4..]).await.map_err(|_| ())?;
    Ok(decode_packet(packet))
}

/// What a whole packet (length word included, at least 8 bytes) asks for.
fn decode_packet(mut packet: BytesMut) -> Result<Packet, ProxyError> {
    let len = packet.len();
    let code = i32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]);
    match code {
        SSL_REQUEST => Ok(Packet::Ssl),
        GSSENC_REQUEST => Ok(Packet::GssEnc),
        CANCEL_REQUEST if len >= 16 => {
            let mut body = &packet[8..];
            Ok(Packet::Hello(Hello::Cancel {
                pid: body.get_i32(),
                secret: body.get_i32(),
            }))
        }
        _ if code >> 16 == 3 => match Startup::decode(&mut packet, &DecodeContext::default()) {
            Ok(Some(startup)) => Ok(Packet::Hello(Hello::Startup {
                minor: startup.protocol_number_minor,
                params: startup.parameters.into_iter().collect(),
            })),
            _ => Err(ProxyError::fatal(
                sqlstate::PROTOCOL_VIOLATION,
                "invalid startup packet layout",
            )),
        },
        _ => Err(ProxyError::fatal(
            sqlstate::FEATURE_NOT_SUPPORTED,
            format!(
                "unsupported frontend protocol {}.{}: server supports 3.0 to 3.0",
                code >> 16,
                code & 0xffff
            ),
        )),
    }
}

/// Answers SSLRequest (TLS when configured, else `N`) and GSSENCRequest (`N`), then reads the
/// StartupMessage or CancelRequest.
pub async fn negotiate(
    tcp: TcpStream,
    tls: Option<&TlsAcceptor>,
) -> Result<(ClientStream, Hello), NegotiateError> {
    let mut stream: ClientStream = Either::Left(tcp);
    let mut ssl_answered = false;
    let mut gss_answered = false;
    loop {
        let packet = match read_packet(&mut stream).await {
            Err(()) => return Err(NegotiateError::Gone),
            Ok(Err(e)) => return Err(NegotiateError::Protocol(Box::new(stream), e)),
            Ok(Ok(p)) => p,
        };
        match (packet, stream) {
            (Packet::Hello(hello), s) => return Ok((s, hello)),
            (Packet::Ssl, Either::Left(mut tcp)) if !ssl_answered => {
                ssl_answered = true;
                match tls {
                    Some(acceptor) => {
                        tcp.write_all(b"S")
                            .await
                            .map_err(|_| NegotiateError::Gone)?;
                        let tls_stream = acceptor
                            .accept(tcp)
                            .await
                            .map_err(|_| NegotiateError::Gone)?;
                        stream = Either::Right(tls_stream);
                    }
                    None => {
                        tcp.write_all(b"N")
                            .await
                            .map_err(|_| NegotiateError::Gone)?;
                        stream = Either::Left(tcp);
                    }
                }
            }
            (Packet::GssEnc, Either::Left(mut tcp)) if !gss_answered => {
                gss_answered = true;
                tcp.write_all(b"N")
                    .await
                    .map_err(|_| NegotiateError::Gone)?;
                stream = Either::Left(tcp);
            }
            (_, s) => {
                return Err(NegotiateError::Protocol(
                    Box::new(s),
                    ProxyError::fatal(
                        sqlstate::PROTOCOL_VIOLATION,
                        "unexpected encryption request",
                    ),
                ))
            }
        }
    }
}
