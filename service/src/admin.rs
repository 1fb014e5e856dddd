//! The admin listener: `/healthz` (the process is alive), `/readyz` (it may take traffic) and
//! `/metrics` (Prometheus text). It stays up through the shutdown grace period so that
//! orchestrators see the node draining and the last metrics can be scraped.
//!
//! A tier adds its own authenticated endpoints (the edge's purge) through [`AdminExtension`].

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::pin::Pin;
use std::task::Poll;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;

use crate::limits::{CapError, ConnectionCaps, ConnectionLimits};
use crate::metrics;
use crate::parse_refusal;
use crate::readiness::Readiness;

/// Largest request body the admin listener reads.
pub const MAX_ADMIN_BODY: usize = 64 * 1024;

/// Connections an admin listener holds: scrapers, probes and operators.
pub const ADMIN_LIMITS: ConnectionLimits = ConnectionLimits {
    total: 256,
    per_address: 32,
};

/// Extra admin endpoints of a tier. `handle` sees every request first (its body already
/// read, at most [`MAX_ADMIN_BODY`] bytes) and returns `None` to leave it to the built-in ones.
#[async_trait::async_trait]
pub trait AdminExtension: Send + Sync {
    /// Answers the request, or `None` if it is not one of this extension's endpoints.
    async fn handle(
        &self,
        parts: &hyper::http::request::Parts,
        body: Bytes,
    ) -> Option<Response<Full<Bytes>>>;
}

/// What the admin endpoints report on.
#[derive(Clone)]
pub struct AdminState {
    /// Service name, used as a metric label.
    pub service: &'static str,
    /// The node's readiness.
    pub readiness: Readiness,
    /// The tier's own endpoints.
    pub extension: Option<Arc<dyn AdminExtension>>,
}

impl AdminState {
    /// State with only the built-in endpoints.
    pub fn new(service: &'static str, readiness: Readiness) -> Self {
        Self {
            service,
            readiness,
            extension: None,
        }
    }
}

/// Serves admin requests on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, state: AdminState) {
    let state = Arc::new(state);
    serve_http(listener, "admin", ADMIN_LIMITS, move |req| {
        let state = Arc::clone(&state);
        async move { dispatch(req, &state).await }
    })
    .await;
}

/// The client's address, in the extensions of every request [`serve_http`] hands over.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

/// Serves HTTP/1.1 on `listener` with `handler` until the future is dropped: one task per
/// connection, a 10 s header read timeout, accept errors (out of descriptors) backed off,
/// and at most `limits` connections open (a connection over them is answered 503 and
/// closed). `label` names the listener in logs. Each request carries the client's
/// [`PeerAddr`].
pub async fn serve_http<H, F, B>(
    listener: TcpListener,
    label: &'static str,
    limits: ConnectionLimits,
    handler: H,
) where
    H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
    F: std::future::Future<Output = Response<B>> + Send + 'static,
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    serve_connections(listener, label, limits, None, handler).await;
}

/// [`serve_http`] over TLS: each connection is handshaken with `tls` (within 10 s) before its
/// requests are read. A connection over the caps is closed without a handshake.
pub async fn serve_https<H, F, B>(
    listener: TcpListener,
    label: &'static str,
    limits: ConnectionLimits,
    tls: Arc<rustls::ServerConfig>,
    handler: H,
) where
    H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
    F: std::future::Future<Output = Response<B>> + Send + 'static,
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    serve_connections(listener, label, limits, Some(acceptor), handler).await;
}

/// How long a client has for the TLS handshake, and for its request headers.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

async fn serve_connections<H, F, B>(
    listener: TcpListener,
    label: &'static str,
    limits: ConnectionLimits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    handler: H,
) where
    H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
    F: std::future::Future<Output = Response<B>> + Send + 'static,
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let handler = Arc::new(handler);
    let caps = ConnectionCaps::new(limits);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!(listener = label, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let slot = match caps.try_open(peer.ip()) {
            Ok(slot) => slot,
            Err(full) => {
                tracing::debug!(listener = label, %peer, %full, "connection refused");
                if tls.is_none() {
                    tokio::spawn(refuse_connection(stream, full));
                }
                continue;
            }
        };
        let handler = Arc::clone(&handler);
        let tls = tls.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                req.extensions_mut().insert(PeerAddr(peer));
                let answer = handler(req);
                async move { Ok::<_, Infallible>(answer.await) }
            });
            let builder = {
                let mut b = hyper::server::conn::http1::Builder::new();
                b.timer(TokioTimer::new())
                    .header_read_timeout(HANDSHAKE_TIMEOUT);
                b
            };
            let ended = match tls {
                None => {
                    builder
                        .serve_connection(TokioIo::new(Explaining::new(stream)), service)
                        .await
                }
                Some(acceptor) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            builder
                                .serve_connection(TokioIo::new(Explaining::new(stream)), service)
                                .await
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(listener = label, %peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(listener = label, %peer, "TLS handshake timed out");
                            return;
                        }
                    }
                }
            };
            if let Err(e) = ended {
                tracing::debug!(listener = label, %peer, error = %e, "connection ended with an error");
            }
        });
    }
}

/// A connection whose writes go through [`parse_refusal::explain`]: hyper's bare `400` for a
/// request it cannot parse goes out with a body saying why.
struct Explaining<S> {
    inner: S,
    /// An explained refusal not yet fully written.
    pending: Vec<u8>,
}

impl<S> Explaining<S> {
    fn new(inner: S) -> Self {
        Self {
            inner,
            pending: Vec::new(),
        }
    }
}

impl<S: AsyncWrite + Unpin> Explaining<S> {
    fn poll_pending(&mut self, cx: &mut std::task::Context<'_>) -> Poll<std::io::Result<()>> {
        while !self.pending.is_empty() {
            match Pin::new(&mut self.inner).poll_write(cx, &self.pending) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
                }
                Poll::Ready(Ok(n)) => {
                    self.pending.drain(..n);
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> Explaining<S> {
    /// Takes `buf` whole when it is a bare parser refusal, to send it explained.
    fn take_refusal(
        &mut self,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> Option<Poll<std::io::Result<usize>>> {
        if !buf.starts_with(b"HTTP/1.1 4") {
            return None;
        }
        self.pending = parse_refusal::explain(buf)?;
        // Taken: it goes out from `pending`, now or at the next write or flush.
        Some(match self.poll_pending(cx) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            _ => Poll::Ready(Ok(buf.len())),
        })
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Explaining<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Explaining<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if this.poll_pending(cx)?.is_pending() {
            return Poll::Pending;
        }
        if let Some(taken) = this.take_refusal(cx, buf) {
            return taken;
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if this.poll_pending(cx)?.is_pending() {
            return Poll::Pending;
        }
        if let [only] = bufs
            && let Some(taken) = this.take_refusal(cx, only)
        {
            return taken;
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.poll_pending(cx)?.is_pending() {
            return Poll::Pending;
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.poll_pending(cx)?.is_pending() {
            return Poll::Pending;
        }
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

/// Answers a connection over the caps with a 503 that says why, without reading its request.
async fn refuse_connection(mut stream: tokio::net::TcpStream, why: CapError) {
    use tokio::io::AsyncWriteExt;
    let body = format!("{why}; try again later\n");
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(2), stream.write_all(answer.as_bytes())).await;
}

async fn dispatch(req: Request<Incoming>, state: &AdminState) -> Response<Full<Bytes>> {
    let Some(extension) = &state.extension else {
        return respond(req.method(), req.uri().path(), state);
    };
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_ADMIN_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            let status = if e.is::<LengthLimitError>() {
                StatusCode::PAYLOAD_TOO_LARGE
            } else {
                StatusCode::BAD_REQUEST
            };
            return text(
                status,
                format!("cannot read the request body: {e} (at most {MAX_ADMIN_BODY} bytes)\n"),
            );
        }
    };
    match extension.handle(&parts, body).await {
        Some(response) => response,
        None => respond(&parts.method, parts.uri.path(), state),
    }
}

/// Binds the admin listener, naming the config field when it cannot.
pub async fn bind(addr: SocketAddr, field: &str) -> Result<TcpListener, String> {
    TcpListener::bind(addr).await.map_err(|e| {
        format!("{field}: cannot listen on {addr}: {e} (is another process using the port?)")
    })
}

/// The answer to one admin request.
pub fn respond(method: &Method, path: &str, state: &AdminState) -> Response<Full<Bytes>> {
    if method != Method::GET && method != Method::HEAD {
        let mut r = text(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} is not allowed here; use GET\n"),
        );
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    match path {
        "/healthz" => text(StatusCode::OK, "ok\n".into()),
        "/readyz" => {
            let status = state.readiness.check();
            metrics::set_ready(state.service, status.is_ok());
            match status {
                Ok(()) => text(StatusCode::OK, "ready\n".into()),
                Err(waiting) => text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("not ready: {}\n", waiting.join("; ")),
                ),
            }
        }
        "/metrics" => {
            metrics::set_ready(state.service, state.readiness.check().is_ok());
            match metrics::render() {
                Ok(body) => {
                    let mut r = Response::new(Full::new(Bytes::from(body)));
                    r.headers_mut().insert(
                        CONTENT_TYPE,
                        HeaderValue::from_static(metrics::CONTENT_TYPE),
                    );
                    r
                }
                Err(e) => text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("cannot render metrics: {e}\n"),
                ),
            }
        }
        _ => text(
            StatusCode::NOT_FOUND,
            format!("no admin endpoint at {path}; try /healthz, /readyz or /metrics\n"),
        ),
    }
}

/// A plain-text response.
pub fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> AdminState {
        AdminState::new("test", Readiness::new())
    }

    #[test]
    fn endpoints_answer_with_the_right_status() {
        let s = state();
        assert_eq!(
            respond(&Method::GET, "/healthz", &s).status(),
            StatusCode::OK
        );
        assert_eq!(
            respond(&Method::GET, "/readyz", &s).status(),
            StatusCode::OK
        );
        let gate = s.readiness.gate("warming up");
        assert_eq!(
            respond(&Method::GET, "/readyz", &s).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        gate.open();
        assert_eq!(
            respond(&Method::HEAD, "/readyz", &s).status(),
            StatusCode::OK
        );
        assert_eq!(
            respond(&Method::GET, "/nope", &s).status(),
            StatusCode::NOT_FOUND
        );
        let post = respond(&Method::POST, "/healthz", &s);
        assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(post.headers()[ALLOW], "GET, HEAD");
    }

    #[test]
    fn metrics_are_prometheus_text_with_build_info() {
        metrics::register_service("test", "9.9.9");
        let r = respond(&Method::GET, "/metrics", &state());
        assert_eq!(r.status(), StatusCode::OK);
        assert!(
            r.headers()[CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/plain; version=0.0.4")
        );
    }
}
