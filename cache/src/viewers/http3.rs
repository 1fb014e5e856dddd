//! The edge's HTTP/3 listener: a quinn endpoint on the UDP side of `edge.tls_listen`, run as a
//! Pingora background service, with the same certificates as the HTTPS listener (ALPN `h3`).
//!
//! Each request stream is wrapped in an [`H3Session`] and handed straight to a Pingora
//! `HttpProxy` over the same `CachingProxy` the H1/H2 listeners run (one storage, one cache
//! lock, one purge path, one set of tokens and metrics). No loopback hop: Pingora's proxy
//! drives the h3 stream directly, so body frames go out as the cache or the upstream yields
//! them. The H3 proxy instance has its own upstream connection pool; the cache is shared.
//!
//! What quinn and h3 refuse on their own, and how: datagrams that are not QUIC, or not for a
//! known connection, are dropped; a client that opens more streams than
//! `max_concurrent_streams` breaks QUIC flow control and its connection is closed
//! (`STREAM_LIMIT_ERROR`); header sections over [`MAX_HEADER_BYTES`] get 431; a malformed
//! request stream is reset with `H3_MESSAGE_ERROR`. Requests that h3 accepts but HTTP/3
//! forbids (a `Host` that disagrees with `:authority`) get a 400 here.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use async_trait::async_trait;
use bytes::Bytes;
use cascade_config::{CongestionController, Http3Config};
use cascade_service::limits::{ConnectionCaps, ConnectionLimits};
use http::HeaderValue;
use pingora_core::apps::HttpServerApp;
use pingora_core::protocols::http::ServerSession;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use pingora_proxy::HttpProxy;
use quinn::crypto::rustls::QuicServerConfig;

use crate::metrics::http3_metrics;
use crate::proxy::{CachingProxy, MAX_HEADER_BYTES};
use crate::viewers::h3_session::{H3Session, MalformedRequest, request_header};
use cascade_service::tls::CertStore;

/// The `Alt-Svc` value that points browsers at HTTP/3 on `port` for `max_age`; `None` when the
/// age is zero (advertise nothing).
pub fn alt_svc(port: u16, max_age: Duration) -> Option<HeaderValue> {
    let secs = max_age.as_secs();
    if secs == 0 {
        return None;
    }
    HeaderValue::from_str(&format!("h3=\":{port}\"; ma={secs}")).ok()
}

/// quinn's server configuration from `[edge.http3]` and the node's certificates.
pub fn server_config(
    certs: Arc<CertStore>,
    config: &Http3Config,
) -> anyhow::Result<quinn::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("edge.http3: TLS 1.3 is unavailable")?
        .with_no_client_auth()
        .with_cert_resolver(certs);
    tls.alpn_protocols = vec![b"h3".to_vec()];
    // quinn accepts only "none" or "unbounded" early data; 0-RTT requests are idempotent GETs.
    tls.max_early_data_size = if config.zero_rtt { u32::MAX } else { 0 };
    let crypto = QuicServerConfig::try_from(tls).map_err(|e| anyhow!("edge.http3: {e}"))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));

    let mut transport = quinn::TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(config.max_concurrent_streams.into())
        // The client's control and QPACK streams; a client needs three.
        .max_concurrent_uni_streams(8u32.into())
        .max_idle_timeout(Some(
            quinn::IdleTimeout::try_from(config.idle_timeout.0).map_err(|_| {
                anyhow!(
                    "edge.http3.idle_timeout: {} is too long",
                    config.idle_timeout
                )
            })?,
        ))
        .enable_segmentation_offload(config.gso);
    match config.congestion {
        CongestionController::Cubic => {
            transport
                .congestion_controller_factory(Arc::new(quinn::congestion::CubicConfig::default()));
        }
        CongestionController::Bbr => {
            transport
                .congestion_controller_factory(Arc::new(quinn::congestion::BbrConfig::default()));
        }
    }
    server.transport_config(Arc::new(transport));
    Ok(server)
}

/// Socket buffer size asked for on the QUIC socket (the kernel caps it at
/// `net.core.rmem_max`/`wmem_max`). The default ~200 KiB overflows under a burst of datagrams
/// and every drop costs a QUIC loss recovery and a congestion-window cut.
pub const UDP_BUFFER_BYTES: usize = 4 << 20;

/// A UDP socket bound to `addr` with [`UDP_BUFFER_BYTES`] buffers (best effort).
pub fn bind_udp(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if let Err(e) = socket.set_recv_buffer_size(UDP_BUFFER_BYTES) {
        tracing::debug!(error = %e, "cannot size the UDP receive buffer");
    }
    if let Err(e) = socket.set_send_buffer_size(UDP_BUFFER_BYTES) {
        tracing::debug!(error = %e, "cannot size the UDP send buffer");
    }
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// The QUIC listener, a Pingora background service.
pub struct Http3Listener {
    /// Bound before start-up (so a taken port is a clear error); `None` when upgrading, as the
    /// running instance still holds the port until it exits.
    socket: Mutex<Option<std::net::UdpSocket>>,
    addr: SocketAddr,
    server_config: quinn::ServerConfig,
    proxy: Arc<HttpProxy<CachingProxy>>,
    limits: Http3Limits,
}

/// What one HTTP/3 listener allows.
#[derive(Debug, Clone, Copy)]
pub struct Http3Limits {
    /// Connections (and handshakes in progress) at once.
    pub max_connections: usize,
    /// Established connections from one client address (checked once the handshake has
    /// validated the address, so a spoofed source cannot use up another's share).
    pub per_address: usize,
    /// From a request stream's opening to its complete header.
    pub header: Duration,
}

impl Http3Listener {
    /// A listener on `addr` (with `socket` already bound there, unless upgrading) that hands
    /// requests to `proxy`.
    pub fn new(
        socket: Option<std::net::UdpSocket>,
        addr: SocketAddr,
        server_config: quinn::ServerConfig,
        proxy: Arc<HttpProxy<CachingProxy>>,
        limits: Http3Limits,
    ) -> Self {
        Self {
            socket: Mutex::new(socket),
            addr,
            server_config,
            proxy,
            limits,
        }
    }

    async fn socket(&self, shutdown: &mut ShutdownWatch) -> Option<std::net::UdpSocket> {
        let prebound = self
            .socket
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(socket) = prebound {
            return Some(socket);
        }
        // Upgrading: the old instance frees the port when it exits; until then it serves H3.
        loop {
            if let Ok(socket) = bind_udp(self.addr) {
                return Some(socket);
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(100)) => {}
                _ = shutdown.changed() => return None,
            }
        }
    }
}

#[async_trait]
impl BackgroundService for Http3Listener {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Some(socket) = self.socket(&mut shutdown).await else {
            return;
        };
        let endpoint = match quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            Some(self.server_config.clone()),
            socket,
            Arc::new(quinn::TokioRuntime),
        ) {
            Ok(endpoint) => endpoint,
            Err(e) => {
                tracing::error!(listen = %self.addr, error = %e, "cannot serve HTTP/3");
                return;
            }
        };
        tracing::info!(listen = %self.addr, "serving HTTP/3");
        let caps = ConnectionCaps::new(ConnectionLimits {
            total: self.limits.max_connections,
            per_address: self.limits.per_address,
        });
        loop {
            tokio::select! {
                incoming = endpoint.accept() => {
                    let Some(incoming) = incoming else { break };
                    // Handshakes in progress count too: a flood of them must not get past.
                    if endpoint.open_connections() >= self.limits.max_connections {
                        http3_metrics().handshakes.with_label_values(&["refused"]).inc();
                        incoming.refuse();
                        continue;
                    }
                    let proxy = Arc::clone(&self.proxy);
                    let shutdown = shutdown.clone();
                    let local = self.addr;
                    let caps = Arc::clone(&caps);
                    let header = self.limits.header;
                    tokio::spawn(serve_connection(incoming, proxy, local, caps, header, shutdown));
                }
                _ = shutdown.changed() => break,
            }
        }
        // By now the drain has waited for in-flight requests; tell clients to go elsewhere.
        endpoint.close(quinn::VarInt::from_u32(0x100), b"shutting down");
        let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
    }
}

/// Counts an open connection for as long as it lives.
struct OpenConnection;

impl OpenConnection {
    fn new() -> Self {
        http3_metrics().open_connections.inc();
        Self
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        http3_metrics().open_connections.dec();
    }
}

async fn serve_connection(
    incoming: quinn::Incoming,
    proxy: Arc<HttpProxy<CachingProxy>>,
    local: SocketAddr,
    caps: Arc<ConnectionCaps>,
    header_timeout: Duration,
    mut shutdown: ShutdownWatch,
) {
    let client = incoming.remote_address();
    let metrics = http3_metrics();
    let connection = match incoming.await {
        Ok(connection) => connection,
        Err(e) => {
            metrics.handshakes.with_label_values(&["failed"]).inc();
            tracing::debug!(%client, error = %e, "QUIC handshake failed");
            return;
        }
    };
    metrics.handshakes.with_label_values(&["ok"]).inc();
    let _slot = match caps.try_open(client.ip()) {
        Ok(slot) => slot,
        Err(full) => {
            metrics.handshakes.with_label_values(&["refused"]).inc();
            connection.close(
                quinn::VarInt::from_u32(0x107),
                format!("{full}; try again later").as_bytes(),
            );
            return;
        }
    };
    let _open = OpenConnection::new();
    let built = h3::server::builder()
        .max_field_section_size(MAX_HEADER_BYTES as u64)
        // A reserved ("grease") frame after the last DATA frame keeps aioquic-based clients
        // from ever seeing the end of the response.
        .send_grease(false)
        .build::<_, Bytes>(h3_quinn::Connection::new(connection))
        .await;
    let mut h3 = match built {
        Ok(h3) => h3,
        Err(e) => {
            tracing::debug!(%client, error = %e, "HTTP/3 connection set-up failed");
            return;
        }
    };
    let mut going_away = false;
    loop {
        tokio::select! {
            accepted = h3.accept() => match accepted {
                Ok(Some(resolver)) => {
                    let proxy = Arc::clone(&proxy);
                    let shutdown = shutdown.clone();
                    tokio::spawn(async move {
                        match tokio::time::timeout(header_timeout, resolver.resolve_request()).await {
                            Ok(Ok((request, stream))) => {
                                serve_request(request, stream, client, local, &proxy, &shutdown).await;
                            }
                            Ok(Err(e)) => {
                                metrics.refused_streams.with_label_values(&[refusal_reason(&e)]).inc();
                                tracing::debug!(%client, error = %e, "HTTP/3 request refused");
                            }
                            Err(_) => {
                                metrics.refused_streams.with_label_values(&["header_timeout"]).inc();
                                tracing::debug!(%client, "HTTP/3 request header did not arrive in time");
                            }
                        }
                    });
                }
                // The client sent GOAWAY, or we did and every request is done.
                Ok(None) => break,
                Err(e) => {
                    if !e.is_h3_no_error() {
                        tracing::debug!(%client, error = %e, "HTTP/3 connection closed");
                    }
                    break;
                }
            },
            _ = shutdown.changed(), if !going_away => {
                going_away = true;
                if let Err(e) = h3.shutdown(0).await {
                    tracing::debug!(%client, error = %e, "could not send GOAWAY");
                    break;
                }
            }
        }
    }
}

fn refusal_reason(e: &h3::error::StreamError) -> &'static str {
    match e {
        h3::error::StreamError::HeaderTooBig { .. } => "headers_too_large",
        _ => "malformed",
    }
}

async fn serve_request(
    request: http::Request<()>,
    mut stream: crate::viewers::h3_session::H3Stream,
    client: SocketAddr,
    local: SocketAddr,
    proxy: &Arc<HttpProxy<CachingProxy>>,
    shutdown: &ShutdownWatch,
) {
    let header = match request_header(request) {
        Ok(header) => header,
        Err(MalformedRequest(why)) => {
            http3_metrics()
                .refused_streams
                .with_label_values(&["malformed"])
                .inc();
            refuse(&mut stream, 400, &why).await;
            return;
        }
    };
    let session = H3Session::new(header, stream, client, local);
    // The proxy answers, logs and counts the request; nothing of the stream is reused.
    let _ = proxy
        .process_new_http(ServerSession::new_custom(Box::new(session)), shutdown)
        .await;
}

/// Answers a request the proxy never sees with `status` and `why`.
async fn refuse(stream: &mut crate::viewers::h3_session::H3Stream, status: u16, why: &str) {
    let body = Bytes::from(format!("{why}\n"));
    let response = http::Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .header(http::header::CONTENT_LENGTH, body.len())
        .header(http::header::CACHE_CONTROL, "no-store")
        .body(());
    let Ok(response) = response else { return };
    let sent = async {
        stream.send_response(response).await?;
        stream.send_data(body).await?;
        stream.finish().await
    };
    if let Err(e) = tokio::time::timeout(Duration::from_secs(5), sent)
        .await
        .unwrap_or_else(|_| Ok(()))
    {
        tracing::debug!(error = %e, "could not send the refusal");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alt_svc_names_the_port_and_age() {
        assert_eq!(
            alt_svc(8443, Duration::from_secs(86400)).unwrap(),
            "h3=\":8443\"; ma=86400"
        );
        assert!(alt_svc(8443, Duration::ZERO).is_none());
    }
}
