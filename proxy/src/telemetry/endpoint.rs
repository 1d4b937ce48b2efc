//! The operators' HTTP endpoint on `[metrics] listen`: `/metrics` (Prometheus text format),
//! `/healthz`, `/readyz` and `/status` (JSON). A deliberately small HTTP/1.1 server: one
//! request per connection, GET and HEAD only, bounded in size and time, so a misbehaving
//! scraper can cost it little.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use super::scrape;
use super::status::snapshot;
use crate::shared::Shared;

/// Longest request head accepted.
const MAX_HEAD: usize = 8 * 1024;
/// A request must arrive, and its answer leave, within this.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the exporter's upkeep runs between scrapes.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);
/// Requests answered at once; connections beyond are closed unanswered.
const MAX_CONCURRENT: usize = 64;

pub struct Endpoint {
    listener: TcpListener,
    prometheus: Option<PrometheusHandle>,
}

/// An answer: status line, content type, body.
struct Reply {
    status: &'static str,
    content_type: &'static str,
    body: String,
}

impl Reply {
    fn text(status: &'static str, body: impl Into<String>) -> Reply {
        Reply {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
        }
    }

    fn json(status: &'static str, value: &impl serde::Serialize) -> Reply {
        match serde_json::to_string_pretty(value) {
            Ok(mut body) => {
                body.push('\n');
                Reply {
                    status,
                    content_type: "application/json",
                    body,
                }
            }
            Err(e) => Reply::text("500 Internal Server Error", format!("{e}\n")),
        }
    }
}

impl Endpoint {
    /// Binds `listen`; `prometheus` is None when metrics are disabled (`/metrics` is then 404).
    pub async fn bind(listen: &str, prometheus: Option<PrometheusHandle>) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("[metrics] listen: cannot listen on {listen}"))?;
        Ok(Endpoint {
            listener,
            prometheus,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until the task is aborted.
    pub fn spawn(self, shared: Arc<Shared>) -> JoinHandle<()> {
        tokio::spawn(async move {
            let permits = Arc::new(Semaphore::new(MAX_CONCURRENT));
            let mut upkeep = tokio::time::interval(UPKEEP_EVERY);
            loop {
                tokio::select! {
                    _ = upkeep.tick() => {
                        if let Some(prometheus) = &self.prometheus {
                            prometheus.run_upkeep();
                        }
                    }
                    accepted = self.listener.accept() => match accepted {
                        Ok((stream, _)) => {
                            let Ok(permit) = permits.clone().try_acquire_owned() else {
                                continue;
                            };
                            let shared = shared.clone();
                            let prometheus = self.prometheus.clone();
                            tokio::spawn(async move {
                                let answered = tokio::time::timeout(
                                    IO_TIMEOUT,
                                    answer(stream, &shared, prometheus.as_ref()),
                                );
                                let _ = answered.await;
                                drop(permit);
                            });
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "metrics endpoint: accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    },
                }
            }
        })
    }
}

/// Reads one request and writes its answer.
async fn answer(mut stream: TcpStream, shared: &Shared, prometheus: Option<&PrometheusHandle>) {
    let Some(head) = read_head(&mut stream).await else {
        return;
    };
    let (method, path) = match request_line(&head) {
        Some(parsed) => parsed,
        None => {
            let reply = Reply::text("400 Bad Request", "bad request\n");
            let _ = write_reply(&mut stream, &reply, false).await;
            return;
        }
    };
    let head_only = method == "HEAD";
    let reply = if method == "GET" || head_only {
        route(path, shared, prometheus)
    } else {
        Reply::text("405 Method Not Allowed", "only GET and HEAD\n")
    };
    let _ = write_reply(&mut stream, &reply, head_only).await;
}

fn route(path: &str, shared: &Shared, prometheus: Option<&PrometheusHandle>) -> Reply {
    match path {
        "/metrics" => match prometheus {
            Some(prometheus) => Reply {
                status: "200 OK",
                content_type: "text/plain; version=0.0.4; charset=utf-8",
                body: scrape::render(shared, prometheus),
            },
            None => Reply::text(
                "404 Not Found",
                "metrics are disabled ([metrics] enabled = false)\n",
            ),
        },
        "/healthz" if shared.shutdown.is_set() => {
            Reply::text("503 Service Unavailable", "shutting down\n")
        }
        "/healthz" => Reply::text("200 OK", "ok\n"),
        "/readyz" => {
            let status = snapshot(shared);
            let readiness = status.readiness();
            let code = if readiness.ready {
                "200 OK"
            } else {
                "503 Service Unavailable"
            };
            Reply::json(code, &readiness)
        }
        "/status" => Reply::json("200 OK", &snapshot(shared)),
        _ => Reply::text(
            "404 Not Found",
            "not found: try /metrics, /healthz, /readyz or /status\n",
        ),
    }
}

/// The request head (up to the blank line), or None if the peer sent none in time or too much.
async fn read_head(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        head.extend_from_slice(&chunk[..n]);
        if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
            return Some(head);
        }
        if head.len() > MAX_HEAD {
            return None;
        }
    }
}

/// Method and path (query string dropped) of an HTTP/1.x request line.
fn request_line(head: &[u8]) -> Option<(&str, &str)> {
    let line = head.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?.trim_end_matches('\r');
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !version.starts_with("HTTP/1.") {
        return None;
    }
    let path = target.split('?').next().unwrap_or(target);
    Some((method, path))
}

async fn write_reply(
    stream: &mut TcpStream,
    reply: &Reply,
    head_only: bool,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        reply.status,
        reply.content_type,
        reply.body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    if !head_only {
        stream.write_all(reply.body.as_bytes()).await?;
    }
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::request_line;

    #[test]
    fn parses_request_lines() {
        assert_eq!(
            request_line(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some(("GET", "/metrics"))
        );
        assert_eq!(
            request_line(b"HEAD /status?pretty=1 HTTP/1.0\r\n\r\n"),
            Some(("HEAD", "/status"))
        );
        assert_eq!(request_line(b"GET /metrics\r\n\r\n"), None);
        assert_eq!(request_line(b"GET / HTTP/2 extra\r\n\r\n"), None);
        assert_eq!(request_line(b"\xff\xfe\r\n\r\n"), None);
    }
}
