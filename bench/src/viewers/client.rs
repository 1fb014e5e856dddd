//! One viewer's HTTP client, as a browser keeps it: HTTP/1.1 with up to six keep-alive
//! connections, or one HTTP/2 (TLS) or HTTP/3 (QUIC) connection carrying every request.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::{Context as _, anyhow};
use bytes::{Buf, Bytes, BytesMut};
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

/// HTTP/1.1, HTTP/2 or HTTP/3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// HTTP/1.1 over TCP (plain, or TLS with `https://`).
    H1,
    /// HTTP/2 over TLS.
    H2,
    /// HTTP/3 over QUIC.
    H3,
}

impl Protocol {
    /// `h1`, `h2`, `h3`.
    pub fn label(self) -> &'static str {
        match self {
            Self::H1 => "h1",
            Self::H2 => "h2",
            Self::H3 => "h3",
        }
    }
}

/// Where and how viewers connect.
#[derive(Debug, Clone)]
pub struct Target {
    /// Address to connect to.
    pub addr: SocketAddr,
    /// Host name (`Host`, `:authority`, SNI).
    pub host: String,
    /// Whether the URL was `https://` (HTTP/2 and HTTP/3 always are).
    pub tls: bool,
    /// The protocol.
    pub protocol: Protocol,
    /// TLS settings (trusting the given certificate), when TLS is used.
    pub tls_config: Option<Arc<rustls::ClientConfig>>,
}

/// A client config trusting the PEM certificates in `ca`, offering `alpn`.
pub fn tls_config(ca: &Path, alpn: &[u8]) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca)
        .with_context(|| format!("cannot read {}", ca.display()))?
    {
        roots.add(cert.with_context(|| format!("{} is not PEM", ca.display()))?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(Arc::new(config))
}

type H1Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

/// One viewer's connections.
pub enum Client {
    /// Idle HTTP/1.1 connections (a browser opens up to six per host).
    H1 {
        /// Where to connect.
        target: Target,
        /// Connections not in use.
        idle: Arc<Mutex<Vec<H1Sender>>>,
    },
    /// One HTTP/2 connection.
    H2 {
        /// Its request handle.
        sender: hyper::client::conn::http2::SendRequest<Empty<Bytes>>,
        /// `:authority`.
        authority: String,
    },
    /// One HTTP/3 connection.
    H3 {
        /// Its request handle.
        sender: h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>,
        /// `:authority`.
        authority: String,
        /// Keeps the UDP socket open.
        _endpoint: quinn::Endpoint,
    },
}

/// An answer: status, `Age` and body.
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Seconds the answer spent in caches (`Age`; 0 when absent or unreadable).
    pub age: f64,
    /// The whole body.
    pub body: Bytes,
}

fn age_of(headers: &hyper::HeaderMap) -> f64 {
    headers
        .get(hyper::header::AGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u32>().ok())
        .map_or(0.0, f64::from)
}

async fn read_body(
    mut body: hyper::body::Incoming,
    on_piece: &mut (impl FnMut(&[u8]) + Send),
) -> anyhow::Result<Bytes> {
    let mut whole = BytesMut::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            on_piece(&data);
            whole.extend_from_slice(&data);
        }
    }
    Ok(whole.freeze())
}

async fn tls_stream(
    target: &Target,
) -> anyhow::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tcp = tokio::net::TcpStream::connect(target.addr).await?;
    tcp.set_nodelay(true)?;
    let config = target
        .tls_config
        .clone()
        .ok_or_else(|| anyhow!("TLS needs --ca"))?;
    let name = ServerName::try_from(target.host.clone())?;
    Ok(tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await?)
}

impl Client {
    /// Opens the viewer's connection (HTTP/2, HTTP/3) or gets ready to (HTTP/1.1).
    pub async fn connect(target: &Target) -> anyhow::Result<Self> {
        let authority = format!("{}:{}", target.host, target.addr.port());
        match target.protocol {
            Protocol::H1 => Ok(Self::H1 {
                target: target.clone(),
                idle: Arc::default(),
            }),
            Protocol::H2 => {
                let tls = tls_stream(target).await?;
                let (sender, conn) =
                    hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                        .await?;
                tokio::spawn(conn);
                Ok(Self::H2 { sender, authority })
            }
            Protocol::H3 => {
                let config = target
                    .tls_config
                    .clone()
                    .ok_or_else(|| anyhow!("HTTP/3 needs --ca"))?;
                let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(config)
                    .map_err(|e| anyhow!("QUIC client config: {e}"))?;
                let mut endpoint = quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0)))?;
                endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
                let connection = endpoint.connect(target.addr, &target.host)?.await?;
                let (mut driver, sender) = h3::client::builder()
                    .send_grease(false)
                    .build::<_, _, Bytes>(h3_quinn::Connection::new(connection))
                    .await?;
                tokio::spawn(async move { std::future::poll_fn(|cx| driver.poll_close(cx)).await });
                Ok(Self::H3 {
                    sender,
                    authority,
                    _endpoint: endpoint,
                })
            }
        }
    }

    /// GETs `path` (and query) and reads the whole body.
    pub async fn get(&self, path: &str) -> anyhow::Result<Answer> {
        self.get_in_pieces(path, |_| {}).await
    }

    /// GETs `path` (and query), handing each piece of the body to `on_piece` as it arrives,
    /// and returns the whole.
    pub async fn get_in_pieces(
        &self,
        path: &str,
        mut on_piece: impl FnMut(&[u8]) + Send,
    ) -> anyhow::Result<Answer> {
        match self {
            Self::H1 { target, idle } => {
                let pooled = idle.lock().unwrap_or_else(PoisonError::into_inner).pop();
                let mut sender = match pooled {
                    Some(s) if !s.is_closed() => s,
                    _ => Self::h1_connect(target).await?,
                };
                sender.ready().await?;
                let request = Request::get(path)
                    .header(
                        hyper::header::HOST,
                        format!("{}:{}", target.host, target.addr.port()),
                    )
                    .body(Empty::<Bytes>::new())?;
                let response = sender.send_request(request).await?;
                let status = response.status().as_u16();
                let age = age_of(response.headers());
                let body = read_body(response.into_body(), &mut on_piece).await?;
                idle.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(sender);
                Ok(Answer { status, age, body })
            }
            Self::H2 { sender, authority } => {
                let mut sender = sender.clone();
                let request = Request::get(format!("https://{authority}{path}"))
                    .body(Empty::<Bytes>::new())?;
                let response = sender.send_request(request).await?;
                let status = response.status().as_u16();
                let age = age_of(response.headers());
                let body = read_body(response.into_body(), &mut on_piece).await?;
                Ok(Answer { status, age, body })
            }
            Self::H3 {
                sender, authority, ..
            } => {
                let mut sender = sender.clone();
                let request = Request::get(format!("https://{authority}{path}")).body(())?;
                let mut stream = sender.send_request(request).await?;
                stream.finish().await?;
                let response = stream.recv_response().await?;
                let mut body = BytesMut::new();
                while let Some(mut chunk) = stream.recv_data().await? {
                    while chunk.has_remaining() {
                        let piece = chunk.chunk();
                        on_piece(piece);
                        body.extend_from_slice(piece);
                        let n = piece.len();
                        chunk.advance(n);
                    }
                }
                Ok(Answer {
                    status: response.status().as_u16(),
                    age: age_of(response.headers()),
                    body: body.freeze(),
                })
            }
        }
    }

    async fn h1_connect(target: &Target) -> anyhow::Result<H1Sender> {
        if target.tls {
            let tls = tls_stream(target).await?;
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
            tokio::spawn(conn);
            Ok(sender)
        } else {
            let tcp = tokio::net::TcpStream::connect(target.addr).await?;
            tcp.set_nodelay(true)?;
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
            tokio::spawn(conn);
            Ok(sender)
        }
    }
}
