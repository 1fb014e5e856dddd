//! Closed-loop HTTPS load over HTTP/2 (TLS over TCP, hyper) or HTTP/3 (QUIC, quinn + h3): C
//! connections, each carrying S request streams at once; every stream GETs one URL, reads the
//! whole body, and sends the next request, until the duration ends. The same shape for both
//! protocols, so a run of each against one edge compares the protocols, not the clients.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use bytes::{Buf, Bytes};
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use tokio::task::JoinHandle;

use crate::stats::{Recorder, Summary};

/// HTTP/2 or HTTP/3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TlsProtocol {
    /// HTTP/2 over TLS.
    H2,
    /// HTTP/3 over QUIC.
    H3,
}

/// One load run.
#[derive(Debug, Clone)]
pub struct TlsLoadPlan {
    /// UDP (H3) or TCP (H2) address of the edge.
    pub addr: SocketAddr,
    /// Host name: SNI and `:authority`.
    pub host: String,
    /// Path and query.
    pub path: String,
    /// Which protocol.
    pub protocol: TlsProtocol,
    /// Connections.
    pub connections: usize,
    /// Concurrent request streams per connection.
    pub streams: usize,
    /// How long to send.
    pub duration: Duration,
    /// Per-request timeout.
    pub timeout: Duration,
    /// PEM certificate to trust (the edge's).
    pub ca: PathBuf,
}

/// Runs `plan` and summarises it.
pub async fn run(plan: TlsLoadPlan) -> anyhow::Result<Summary> {
    let alpn: &[u8] = match plan.protocol {
        TlsProtocol::H2 => b"h2",
        TlsProtocol::H3 => b"h3",
    };
    let config = crate::viewers::client::tls_config(&plan.ca, alpn)?;
    let uri = format!("https://{}:{}{}", plan.host, plan.addr.port(), plan.path);
    let start = Instant::now();
    let deadline = start + plan.duration;
    let mut workers = Vec::new();
    for _ in 0..plan.connections {
        let (plan, config, uri) = (plan.clone(), Arc::clone(&config), uri.clone());
        workers.push(tokio::spawn(async move {
            match plan.protocol {
                TlsProtocol::H2 => h2_connection(plan, config, uri, deadline).await,
                TlsProtocol::H3 => h3_connection(plan, config, uri, deadline).await,
            }
        }));
    }
    let mut total = Recorder::default();
    for w in workers {
        match w.await {
            Ok(recorder) => total.merge(recorder),
            Err(e) => total.error(format!("worker panicked: {e}")),
        }
    }
    Ok(total.summarise(start.elapsed()))
}

async fn h2_connection(
    plan: TlsLoadPlan,
    config: Arc<rustls::ClientConfig>,
    uri: String,
    deadline: Instant,
) -> Recorder {
    let mut rec = Recorder::default();
    let connected = async {
        let tcp = tokio::net::TcpStream::connect(plan.addr).await?;
        tcp.set_nodelay(true)?;
        let name = ServerName::try_from(plan.host.clone())?;
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await?;
        let (sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await?;
        tokio::spawn(conn);
        anyhow::Ok(sender)
    };
    let sender = match connected.await {
        Ok(sender) => sender,
        Err(e) => {
            rec.error(format!("h2 connect: {e}"));
            return rec;
        }
    };
    let streams = (0..plan.streams).map(|_| {
        let (sender, uri) = (sender.clone(), uri.clone());
        request_loop(deadline, plan.timeout, move || {
            let (mut sender, uri) = (sender.clone(), uri.clone());
            async move {
                let request = Request::get(&uri).body(Empty::<Bytes>::new())?;
                let response = sender.send_request(request).await?;
                let status = response.status().as_u16();
                let body = response.into_body().collect().await?.to_bytes();
                anyhow::Ok((status, body.len() as u64))
            }
        })
    });
    join_streams(streams.collect(), rec).await
}

async fn h3_connection(
    plan: TlsLoadPlan,
    config: Arc<rustls::ClientConfig>,
    uri: String,
    deadline: Instant,
) -> Recorder {
    let mut rec = Recorder::default();
    let connected = async {
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(config)
            .map_err(|e| anyhow!("QUIC client config: {e}"))?;
        // The edge's socket set-up: large buffers, as the default drops datagrams under load.
        let socket =
            cascade_cache::viewers::http3::bind_udp(SocketAddr::from(([127, 0, 0, 1], 0)))?;
        let mut endpoint = quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            None,
            socket,
            Arc::new(quinn::TokioRuntime),
        )?;
        endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
        let connection = endpoint.connect(plan.addr, &plan.host)?.await?;
        let (mut driver, sender) = h3::client::builder()
            .send_grease(false)
            .build::<_, _, Bytes>(h3_quinn::Connection::new(connection))
            .await?;
        tokio::spawn(async move { std::future::poll_fn(|cx| driver.poll_close(cx)).await });
        anyhow::Ok((endpoint, sender))
    };
    let (_endpoint, sender) = match connected.await {
        Ok(pair) => pair,
        Err(e) => {
            rec.error(format!("h3 connect: {e}"));
            return rec;
        }
    };
    let streams = (0..plan.streams).map(|_| {
        let (sender, uri) = (sender.clone(), uri.clone());
        request_loop(deadline, plan.timeout, move || {
            let (mut sender, uri) = (sender.clone(), uri.clone());
            async move {
                let mut stream = sender.send_request(Request::get(&uri).body(())?).await?;
                stream.finish().await?;
                let response = stream.recv_response().await?;
                let mut bytes = 0u64;
                while let Some(chunk) = stream.recv_data().await? {
                    bytes += chunk.remaining() as u64;
                }
                anyhow::Ok((response.status().as_u16(), bytes))
            }
        })
    });
    join_streams(streams.collect(), rec).await
}

/// Spawns one request stream: `exchange` sends a request and reads the whole answer, again
/// and again until `deadline`; the stream stops at its first error (its connection is broken).
fn request_loop<F, Fut>(
    deadline: Instant,
    timeout: Duration,
    mut exchange: F,
) -> JoinHandle<Recorder>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = anyhow::Result<(u16, u64)>> + Send,
{
    tokio::spawn(async move {
        let mut rec = Recorder::default();
        while Instant::now() < deadline {
            let sent = Instant::now();
            match tokio::time::timeout(timeout, exchange()).await {
                Ok(Ok((status, bytes))) => rec.response(status, sent.elapsed(), bytes),
                Ok(Err(e)) => {
                    rec.error(format!("{e}"));
                    break;
                }
                Err(_) => {
                    rec.error("timeout");
                    break;
                }
            }
        }
        rec
    })
}

/// Waits for a connection's streams and adds what they saw to `rec`.
async fn join_streams(streams: Vec<JoinHandle<Recorder>>, mut rec: Recorder) -> Recorder {
    for stream in streams {
        match stream.await {
            Ok(r) => rec.merge(r),
            Err(e) => rec.error(format!("stream panicked: {e}")),
        }
    }
    rec
}
