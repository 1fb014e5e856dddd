//! Fetches a multivariant playlist or MPD from an edge, over HTTP or HTTPS, one request per
//! connection (the router fetches one per viewer session, not per segment).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::Request;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

use cascade_config::parse_base_url;

/// Largest playlist read.
const MAX_PLAYLIST_BYTES: usize = 1 << 20;

/// What an edge answered.
pub struct Fetched {
    /// HTTP status.
    pub status: u16,
    /// `Content-Type`, if any.
    pub content_type: Option<String>,
    /// The body.
    pub body: Bytes,
}

/// A client for edges' playlists.
#[derive(Clone)]
pub struct EdgeClient {
    tls: Arc<rustls::ClientConfig>,
    timeout: Duration,
}

impl EdgeClient {
    /// Trusts `roots` for HTTPS edges; gives up after `timeout`.
    pub fn new(roots: rustls::RootCertStore, timeout: Duration) -> Result<Self, String> {
        let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS client: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            tls: Arc::new(tls),
            timeout,
        })
    }

    /// GETs `path_and_query` from the edge at `base_url`, passing the viewer's `user_agent`.
    pub async fn get(
        &self,
        base_url: &str,
        path_and_query: &str,
        user_agent: Option<&str>,
    ) -> Result<Fetched, String> {
        tokio::time::timeout(
            self.timeout,
            self.get_inner(base_url, path_and_query, user_agent),
        )
        .await
        .map_err(|_| format!("no answer within {:?}", self.timeout))?
    }

    async fn get_inner(
        &self,
        base_url: &str,
        path_and_query: &str,
        user_agent: Option<&str>,
    ) -> Result<Fetched, String> {
        let (scheme, host, port) = parse_base_url(base_url)?;
        let https = scheme == "https";
        let port = port.unwrap_or(if https { 443 } else { 80 });
        let tcp = TcpStream::connect((host, port))
            .await
            .map_err(|e| format!("connect {host}:{port}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let authority = base_url
            .split_once("://")
            .map_or(host, |(_, a)| a.trim_end_matches('/'));
        let mut request = Request::get(path_and_query).header(hyper::header::HOST, authority);
        if let Some(agent) = user_agent {
            request = request.header(hyper::header::USER_AGENT, agent);
        }
        let request = request
            .body(Empty::<Bytes>::new())
            .map_err(|e| format!("bad request: {e}"))?;
        if https {
            let name = ServerName::try_from(host.to_owned()).map_err(|e| format!("{host}: {e}"))?;
            let tls = tokio_rustls::TlsConnector::from(Arc::clone(&self.tls))
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS with {host}: {e}"))?;
            send(TokioIo::new(tls), request).await
        } else {
            send(TokioIo::new(tcp), request).await
        }
    }
}

async fn send<T>(io: T, request: Request<Empty<Bytes>>) -> Result<Fetched, String>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("HTTP handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("request: {e}"))?;
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = Limited::new(response.into_body(), MAX_PLAYLIST_BYTES)
        .collect()
        .await
        .map_err(|e| format!("reading the body: {e}"))?
        .to_bytes();
    Ok(Fetched {
        status,
        content_type,
        body,
    })
}
