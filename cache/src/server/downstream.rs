//! The IO layer under each client connection of the Pingora listeners: TLS termination with a
//! handshake deadline, a deadline on receiving each request, and response headers sent in the
//! same system call as the body that follows.
//!
//! [`ClientStreamApp`] wraps the proxy's Pingora application. Connections accepted on the TLS
//! listener are handshaken here rather than by Pingora's listener, whose limit is a fixed 60 s,
//! so the handshake gets `clients.handshake_timeout`. Each connection is then wrapped in a
//! [`ClientStream`], which consults a [`RequestClock`] (a [`HeaderClock`] for HTTP/1, a
//! [`FrameClock`] for HTTP/2) and fails the pending read with `TimedOut` once the request
//! being received is overdue, and fails a write that has made no progress for the write
//! timeout (a client that stopped reading). The idle time between requests is the keep-alive
//! timeout's business, which the proxy sets from the same `[clients]` section. Connections
//! over the listener's caps (in all, or from one address) are refused at accept, before TLS.
//!
//! On writes, [`ClientStream`] takes the place of Pingora's small write buffer: that buffer
//! sends what it holds (a response header) in a system call of its own before a large body
//! write; the stream instead holds small writes and sends them with the next large one in one
//! vectored write, as a single packet train the client is woken for once. Pingora's bare
//! `400` for a request it cannot parse gets a body saying why on its way out.

use std::fmt::Debug;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora_core::apps::ServerApp;
use pingora_core::listeners::tls::Acceptor;
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_core::protocols::raw_connect::ProxyDigest;
use pingora_core::protocols::tls::{SslDigest, TlsRef};
use pingora_core::protocols::{
    ALPN, GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl,
    Stream, TimingDigest, UniqueID, UniqueIDType,
};
use pingora_core::server::ShutdownWatch;
use prometheus::IntCounter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use cascade_service::limits::{ConnectionCaps, ConnectionLimits, ConnectionSlot};
use cascade_service::parse_refusal;

use crate::metrics::ProxyMetrics;
use crate::policy::request_clock::{FrameClock, HeaderClock, RequestClock};

/// What a [`ClientStream`] needs of its clock to be a Pingora stream.
pub trait StreamClock: RequestClock + Debug + Send + Sync + Unpin + 'static {}
impl<C: RequestClock + Debug + Send + Sync + Unpin + 'static> StreamClock for C {}

/// Small writes held back to go out with the next write or flush: the size of Pingora's own
/// write buffer (one Ethernet payload).
const HOLD: usize = 1460;

/// A client stream whose reads fail with `TimedOut` once the request being received is
/// overdue, and whose small writes go out together with the next one.
#[derive(Debug)]
pub struct ClientStream<C> {
    inner: Stream,
    clock: C,
    timer: Option<Pin<Box<Sleep>>>,
    timeouts: IntCounter,
    /// Written by the caller, not yet sent.
    held: Vec<u8>,
    /// How long a write may make no progress, and what counts the connections closed for it.
    write_limit: Option<(Duration, IntCounter)>,
    /// Created on the first full socket and reset, not reallocated, for later stalls.
    write_timer: Option<Pin<Box<Sleep>>>,
    /// Whether `write_timer` times the current stall (cleared by any progress).
    write_armed: bool,
    /// The connection's place under the listener's caps, freed when the stream is dropped.
    _slot: Option<ConnectionSlot>,
}

impl<C: StreamClock> ClientStream<C> {
    /// Wraps a connection ready to receive its first request, timed by `clock`.
    pub fn new(inner: Stream, clock: C, timeouts: IntCounter) -> Self {
        Self {
            inner,
            clock,
            timer: None,
            timeouts,
            held: Vec::new(),
            write_limit: None,
            write_timer: None,
            write_armed: false,
            _slot: None,
        }
    }

    /// Fails writes that make no progress for `limit`, counting them in `timeouts`.
    pub fn with_write_timeout(mut self, limit: Duration, timeouts: IntCounter) -> Self {
        self.write_limit = Some((limit, timeouts));
        self
    }

    /// Holds `slot` for as long as the connection lives.
    pub fn holding(mut self, slot: ConnectionSlot) -> Self {
        self._slot = Some(slot);
        self
    }

    /// Tracks the write deadline after a write attempt: progress disarms it, a full socket
    /// arms it, and once it has passed the write fails.
    fn write_deadline<T>(
        &mut self,
        cx: &mut Context<'_>,
        attempt: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        let Some((limit, timeouts)) = &self.write_limit else {
            return attempt;
        };
        if attempt.is_ready() {
            self.write_armed = false;
            return attempt;
        }
        let due = tokio::time::Instant::now() + *limit;
        let timer = self
            .write_timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
        if !self.write_armed {
            timer.as_mut().reset(due);
            self.write_armed = true;
        }
        if timer.as_mut().poll(cx).is_ready() {
            timeouts.inc();
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client stopped reading the response",
            )));
        }
        Poll::Pending
    }

    /// Sends everything held.
    fn poll_send_held(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Pingora's own refusal of a request it could not parse is a bare 4xx: say why.
        if self.held.starts_with(b"HTTP/1.1 4")
            && let Some(explained) = parse_refusal::explain(&self.held)
        {
            self.held = explained;
        }
        while !self.held.is_empty() {
            match Pin::new(&mut self.inner).poll_write(cx, &self.held) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    self.held.drain(..n);
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Writes `buf` after what is held, in one vectored write when something is; returns how
    /// much of `buf` went out.
    fn poll_write_after_held(
        &mut self,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            if self.held.is_empty() {
                return Pin::new(&mut self.inner).poll_write(cx, buf);
            }
            let both = [io::IoSlice::new(&self.held), io::IoSlice::new(buf)];
            match Pin::new(&mut self.inner).poll_write_vectored(cx, &both) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) if n > self.held.len() => {
                    let from_buf = n - self.held.len();
                    self.held.clear();
                    return Poll::Ready(Ok(from_buf));
                }
                // Only (part of) the held bytes went: go on until some of `buf` does.
                Poll::Ready(Ok(n)) => {
                    self.held.drain(..n);
                }
                other => return other,
            }
        }
    }

    /// Whether the header now awaited is overdue; arms the timer to wake the reader when it is.
    fn overdue(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(due) = self.clock.due() else {
            return false;
        };
        let due = tokio::time::Instant::from_std(due);
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
        if timer.deadline() != due {
            timer.as_mut().reset(due);
        }
        timer.as_mut().poll(cx).is_ready()
    }
}

impl<C: StreamClock> AsyncRead for ClientStream<C> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let read = &buf.filled()[before..];
                if !read.is_empty() {
                    this.clock.on_read(read, Instant::now);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending if this.overdue(cx) => {
                this.timeouts.inc();
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the request did not arrive in time",
                )))
            }
            other => other,
        }
    }
}

impl<C: StreamClock> AsyncWrite for ClientStream<C> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let written = if this.held.len() + buf.len() <= HOLD {
            this.held.extend_from_slice(buf);
            Poll::Ready(Ok(buf.len()))
        } else {
            let attempt = this.poll_write_after_held(cx, buf);
            this.write_deadline(cx, attempt)
        };
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            this.clock.on_write();
        }
        written
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let attempt = match this.poll_send_held(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut this.inner).poll_flush(cx),
            other => other,
        };
        this.write_deadline(cx, attempt)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match this.poll_send_held(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut this.inner).poll_shutdown(cx),
            other => other,
        }
    }
}

#[async_trait]
impl<C: StreamClock> Shutdown for ClientStream<C> {
    async fn shutdown(&mut self) {
        // Whatever is held goes out first; a failure here means the client has gone.
        let _ = std::future::poll_fn(|cx| self.poll_send_held(cx)).await;
        self.inner.shutdown().await;
    }
}

impl<C: StreamClock> UniqueID for ClientStream<C> {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl<C: StreamClock> Ssl for ClientStream<C> {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl<C: StreamClock> GetTimingDigest for ClientStream<C> {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl<C: StreamClock> GetProxyDigest for ClientStream<C> {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest);
    }
}

impl<C: StreamClock> GetSocketDigest for ClientStream<C> {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest);
    }
}

#[async_trait]
impl<C: StreamClock> Peek for ClientStream<C> {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

/// The TLS listener whose connections [`ClientStreamApp`] handshakes itself.
pub struct TlsTermination {
    /// The address the TLS listener is bound to; connections accepted on it are TLS.
    pub listen: SocketAddr,
    /// Certificates, protocols and ALPN, as Pingora's listener would use them.
    pub acceptor: Acceptor,
}

/// How long a client may take over each step before its connection is closed.
#[derive(Debug, Clone, Copy)]
pub struct ClientLimits {
    /// From the connection's start (or a request's first byte) to a complete request header.
    pub header: Duration,
    /// From accepting a TLS connection to the end of its handshake.
    pub handshake: Duration,
    /// How long a response write may make no progress.
    pub write: Duration,
    /// Connections open at once, in all and per client address.
    pub connections: ConnectionLimits,
}

/// Whether a connection that arrived on `local` came through the listener bound to `listen`
/// (which may be bound to every address).
fn accepted_on(local: SocketAddr, listen: SocketAddr) -> bool {
    local.port() == listen.port() && (listen.ip().is_unspecified() || local.ip() == listen.ip())
}

/// A Pingora application whose client connections get a [`ClientStream`], after a TLS
/// handshake with a deadline for those accepted on the TLS listener.
pub struct ClientStreamApp<A> {
    inner: Arc<A>,
    limits: ClientLimits,
    caps: Arc<ConnectionCaps>,
    tls: Option<TlsTermination>,
    metrics: &'static ProxyMetrics,
}

impl<A> ClientStreamApp<A> {
    /// Wraps `inner`; `tls`, when given, names the listener whose connections are TLS.
    pub fn new(
        inner: A,
        limits: ClientLimits,
        tls: Option<TlsTermination>,
        metrics: &'static ProxyMetrics,
    ) -> Self {
        Self {
            inner: Arc::new(inner),
            caps: ConnectionCaps::new(limits.connections),
            limits,
            tls,
            metrics,
        }
    }

    /// A place under the caps for `stream`, or `None` (counted and logged) when it is refused.
    fn admit(&self, stream: &Stream) -> Option<ConnectionSlot> {
        let peer = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()))?;
        match self.caps.try_open(peer) {
            Ok(slot) => Some(slot),
            Err(full) => {
                self.metrics.refused_connections.inc();
                tracing::debug!(%peer, %full, "client connection refused");
                None
            }
        }
    }

    /// The TLS termination for `stream`, when it arrived on the TLS listener.
    fn tls_for(&self, stream: &Stream) -> Option<&TlsTermination> {
        let tls = self.tls.as_ref()?;
        let digest = stream.get_socket_digest()?;
        let local = *digest.local_addr()?.as_inet()?;
        accepted_on(local, tls.listen).then_some(tls)
    }

    /// Runs the TLS handshake on a raw accepted connection, within the handshake limit.
    async fn handshake(&self, tls: &TlsTermination, stream: Stream) -> Option<Stream> {
        // Kept for the log line of a failure; formatted only then.
        let peer = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().cloned());
        // Connections reach the application straight from the TCP listener: a plain L4 stream.
        let Ok(l4) = stream.into_any().downcast::<L4Stream>() else {
            tracing::error!("a TLS listener connection was not a plain TCP stream");
            return None;
        };
        match tokio::time::timeout(self.limits.handshake, tls.acceptor.tls_handshake(*l4)).await {
            Ok(Ok(tls_stream)) => Some(Box::new(tls_stream)),
            Ok(Err(e)) => {
                tracing::debug!(peer = ?peer, error = %e, "TLS handshake failed");
                None
            }
            Err(_) => {
                self.metrics.handshake_timeouts.inc();
                tracing::debug!(peer = ?peer, "TLS handshake timed out");
                None
            }
        }
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for ClientStreamApp<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let any = stream.as_any();
        if any.is::<ClientStream<HeaderClock>>() || any.is::<ClientStream<FrameClock>>() {
            // A kept-alive connection handed back for its next request: already admitted.
            return self.inner.process_new(stream, shutdown).await;
        }
        let slot = self.admit(&stream)?;
        let stream = match self.tls_for(&stream) {
            // Boxed: the handshake's state is kilobytes, which plain connections need not carry.
            Some(tls) => Box::pin(self.handshake(tls, stream)).await?,
            None => stream,
        };
        let timeouts = self.metrics.header_timeouts.clone();
        let writes = (self.limits.write, self.metrics.write_timeouts.clone());
        let opened = Instant::now();
        let stream: Stream = if stream.selected_alpn_proto() == Some(ALPN::H2) {
            let clock = FrameClock::new(self.limits.header, opened);
            Box::new(
                ClientStream::new(stream, clock, timeouts)
                    .with_write_timeout(writes.0, writes.1)
                    .holding(slot),
            )
        } else {
            let clock = HeaderClock::new(self.limits.header, opened);
            Box::new(
                ClientStream::new(stream, clock, timeouts)
                    .with_write_timeout(writes.0, writes.1)
                    .holding(slot),
            )
        };
        self.inner.process_new(stream, shutdown).await
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A `ClientStream` for HTTP/1 over a real loopback connection, and the client's end.
    async fn connected_with(
        limit: Duration,
        timeouts: IntCounter,
    ) -> (ClientStream<HeaderClock>, tokio::net::TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        let server: Stream = Box::new(pingora_core::protocols::l4::stream::Stream::from(
            accepted.unwrap().0,
        ));
        let clock = HeaderClock::new(limit, Instant::now());
        (ClientStream::new(server, clock, timeouts), client.unwrap())
    }

    async fn connected() -> (ClientStream<HeaderClock>, tokio::net::TcpStream) {
        connected_with(
            Duration::from_secs(10),
            IntCounter::new("test_timeouts", "test").unwrap(),
        )
        .await
    }

    async fn nothing_arrives(client: &mut tokio::net::TcpStream) -> bool {
        let mut byte = [0u8; 1];
        tokio::time::timeout(Duration::from_millis(100), client.read(&mut byte))
            .await
            .is_err()
    }

    #[tokio::test]
    async fn a_header_waits_for_its_body_and_both_arrive_in_order() {
        let (mut server, mut client) = connected().await;
        let header = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n";
        let body: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        server.write_all(header).await.unwrap();
        assert!(nothing_arrives(&mut client).await, "a lone header is held");
        server.write_all(&body).await.unwrap();
        server.flush().await.unwrap();
        let mut got = vec![0u8; header.len() + body.len()];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(got, [&header[..], &body[..]].concat());
        assert!(server.held.is_empty());
    }

    #[tokio::test]
    async fn small_writes_go_out_on_flush_and_on_shutdown() {
        let (mut server, mut client) = connected().await;
        server
            .write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
            .await
            .unwrap();
        server.flush().await.unwrap();
        let mut got = vec![0u8; 27];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"HTTP/1.1 204 No Content\r\n\r\n");

        server.write_all(b"last words").await.unwrap();
        Shutdown::shutdown(&mut server).await;
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.unwrap();
        assert_eq!(
            rest, b"last words",
            "held bytes are sent before the connection closes"
        );
    }

    #[tokio::test]
    async fn a_silent_client_is_timed_out_and_counted() {
        let counter = IntCounter::new("test_silent", "test").unwrap();
        let (mut server, _client) =
            connected_with(Duration::from_millis(200), counter.clone()).await;
        let started = Instant::now();
        let mut buf = [0u8; 16];
        let err = server.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert_eq!(counter.get(), 1);
    }

    #[test]
    fn connections_are_matched_to_the_listener_they_arrived_on() {
        let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(accepted_on(addr("127.0.0.1:8443"), addr("0.0.0.0:8443")));
        assert!(accepted_on(addr("127.0.0.1:8443"), addr("127.0.0.1:8443")));
        assert!(accepted_on(addr("[::1]:8443"), addr("[::]:8443")));
        assert!(!accepted_on(addr("127.0.0.1:8080"), addr("0.0.0.0:8443")));
        assert!(!accepted_on(addr("10.0.0.2:8443"), addr("10.0.0.1:8443")));
    }
}
