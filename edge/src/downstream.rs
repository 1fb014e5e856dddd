//! The IO layer under each HTTP/1 client connection: a deadline on receiving each request
//! header, and response headers sent in the same system call as the body that follows.
//!
//! Pingora only bounds each single read of a header (60 s), which a client defeats by sending a
//! byte now and then. [`HeaderClock`] is the pure part: it follows the bytes read and written on
//! a connection and knows when a header is due. [`Http1Stream`] is the IO wrapper that
//! consults it, and [`Http1StreamApp`] wraps each accepted HTTP/1 connection of a Pingora
//! service in one. HTTP/2 has its own framing and flow control, so its connections pass through.
//! The idle time between keep-alive requests is Pingora's keep-alive timeout, which the proxy
//! sets from the same `[clients]` section.
//!
//! On writes, [`Http1Stream`] takes the place of Pingora's small write buffer: that buffer sends
//! what it holds (a response header) in a system call of its own before a large body write; the
//! stream instead holds small writes and sends them with the next large one in one vectored
//! write, as a single packet train the client is woken for once.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora_core::apps::ServerApp;
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

/// Where a connection is in its request/response cycle, as seen from its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Receiving a request header that must be complete by `due`.
    Header {
        due: Instant,
        /// Whether anything other than line ends has arrived (blank lines before a request
        /// line are tolerated and do not end the header).
        started: bool,
        /// Whether the current line has had anything other than `\r`.
        line_has_content: bool,
    },
    /// The header is complete; the request is being answered.
    Answering,
    /// Part of the answer has been written: the next bytes read begin a new request.
    BetweenRequests,
}

/// Follows a connection's reads and writes and says by when the current request header must
/// have arrived. No IO, no clock of its own: callers pass the time.
#[derive(Debug)]
pub struct HeaderClock {
    limit: Duration,
    phase: Phase,
}

impl HeaderClock {
    /// A new connection, whose first request header is due `limit` after `opened`.
    pub fn new(limit: Duration, opened: Instant) -> Self {
        Self {
            limit,
            phase: Phase::Header {
                due: opened + limit,
                started: false,
                line_has_content: false,
            },
        }
    }

    /// When the header being received must be complete; `None` when no header is awaited.
    pub fn due(&self) -> Option<Instant> {
        match self.phase {
            Phase::Header { due, .. } => Some(due),
            Phase::Answering | Phase::BetweenRequests => None,
        }
    }

    /// Bytes read from the client. `now` is called only when they begin a new request, so
    /// the reads of a request in progress cost no clock call.
    pub fn on_read(&mut self, bytes: &[u8], now: impl FnOnce() -> Instant) {
        if bytes.is_empty() {
            return;
        }
        if self.phase == Phase::BetweenRequests {
            self.phase = Phase::Header {
                due: now() + self.limit,
                started: false,
                line_has_content: false,
            };
        }
        let Phase::Header {
            due,
            mut started,
            mut line_has_content,
        } = self.phase
        else {
            // A body, or bytes sent ahead while the answer is prepared: not a header.
            return;
        };
        for &byte in bytes {
            match byte {
                b'\n' if started && !line_has_content => {
                    self.phase = Phase::Answering;
                    return;
                }
                b'\n' => line_has_content = false,
                b'\r' => {}
                _ => {
                    started = true;
                    line_has_content = true;
                }
            }
        }
        self.phase = Phase::Header {
            due,
            started,
            line_has_content,
        };
    }

    /// Some of an answer was written to the client.
    pub fn on_write(&mut self) {
        if self.phase == Phase::Answering {
            self.phase = Phase::BetweenRequests;
        }
    }
}

/// Small writes held back to go out with the next write or flush: the size of Pingora's own
/// write buffer (one Ethernet payload).
const HOLD: usize = 1460;

/// A client stream whose reads fail with `TimedOut` once a request header is overdue, and
/// whose small writes go out together with the next one.
#[derive(Debug)]
pub struct Http1Stream {
    inner: Stream,
    clock: HeaderClock,
    timer: Option<Pin<Box<Sleep>>>,
    timeouts: IntCounter,
    /// Written by the caller, not yet sent.
    held: Vec<u8>,
}

impl Http1Stream {
    /// Wraps a just-accepted connection; its first header is due `limit` from now.
    pub fn new(inner: Stream, limit: Duration, timeouts: IntCounter) -> Self {
        Self {
            inner,
            clock: HeaderClock::new(limit, Instant::now()),
            timer: None,
            timeouts,
            held: Vec::new(),
        }
    }

    /// Sends everything held.
    fn poll_send_held(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
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

impl AsyncRead for Http1Stream {
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
                    "the request header did not arrive in time",
                )))
            }
            other => other,
        }
    }
}

impl AsyncWrite for Http1Stream {
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
            this.poll_write_after_held(cx, buf)
        };
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            this.clock.on_write();
        }
        written
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match this.poll_send_held(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut this.inner).poll_flush(cx),
            other => other,
        }
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
impl Shutdown for Http1Stream {
    async fn shutdown(&mut self) {
        // Whatever is held goes out first; a failure here means the client has gone.
        let _ = std::future::poll_fn(|cx| self.poll_send_held(cx)).await;
        self.inner.shutdown().await;
    }
}

impl UniqueID for Http1Stream {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for Http1Stream {
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

impl GetTimingDigest for Http1Stream {
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

impl GetProxyDigest for Http1Stream {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest);
    }
}

impl GetSocketDigest for Http1Stream {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest);
    }
}

#[async_trait]
impl Peek for Http1Stream {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

/// A Pingora application whose HTTP/1 connections get a [`Http1Stream`].
pub struct Http1StreamApp<A> {
    inner: Arc<A>,
    limit: Duration,
    timeouts: IntCounter,
}

impl<A> Http1StreamApp<A> {
    /// Wraps `inner`; each request header must arrive within `limit`.
    pub fn new(inner: A, limit: Duration, timeouts: IntCounter) -> Self {
        Self {
            inner: Arc::new(inner),
            limit,
            timeouts,
        }
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Http1StreamApp<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let stream: Stream = if stream.selected_alpn_proto() == Some(ALPN::H2) {
            stream
        } else {
            Box::new(Http1Stream::new(stream, self.limit, self.timeouts.clone()))
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

    /// An `Http1Stream` over a real loopback connection, and the client's end.
    async fn connected_with(
        limit: Duration,
        timeouts: IntCounter,
    ) -> (Http1Stream, tokio::net::TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        let server: Stream = Box::new(pingora_core::protocols::l4::stream::Stream::from(
            accepted.unwrap().0,
        ));
        (Http1Stream::new(server, limit, timeouts), client.unwrap())
    }

    async fn connected() -> (Http1Stream, tokio::net::TcpStream) {
        connected_with(LIMIT, IntCounter::new("test_timeouts", "test").unwrap()).await
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

    const LIMIT: Duration = Duration::from_secs(10);

    fn at(start: Instant, secs: u64) -> Instant {
        start + Duration::from_secs(secs)
    }

    #[test]
    fn first_header_is_due_from_the_connection_start() {
        let t0 = Instant::now();
        let mut clock = HeaderClock::new(LIMIT, t0);
        assert_eq!(clock.due(), Some(at(t0, 10)));
        // Trickled bytes do not move the deadline.
        clock.on_read(b"GET / HT", || at(t0, 4));
        clock.on_read(b"TP/1.1\r\nHost: a\r\n", || at(t0, 8));
        assert_eq!(clock.due(), Some(at(t0, 10)));
        clock.on_read(b"\r\n", || at(t0, 9));
        assert_eq!(clock.due(), None, "a complete header is no longer timed");
    }

    #[test]
    fn header_end_split_across_reads_and_bare_line_feeds() {
        let t0 = Instant::now();
        let mut clock = HeaderClock::new(LIMIT, t0);
        clock.on_read(b"GET / HTTP/1.1\r\nHost: a\r", || t0);
        clock.on_read(b"\n\r", || t0);
        assert!(clock.due().is_some());
        clock.on_read(b"\n", || t0);
        assert_eq!(clock.due(), None);

        let mut lenient = HeaderClock::new(LIMIT, t0);
        lenient.on_read(b"GET / HTTP/1.1\nHost: a\n\n", || t0);
        assert_eq!(lenient.due(), None);
    }

    #[test]
    fn blank_lines_before_the_request_line_do_not_end_the_header() {
        let t0 = Instant::now();
        let mut clock = HeaderClock::new(LIMIT, t0);
        clock.on_read(b"\r\n\r\n\n\n", || t0);
        assert_eq!(clock.due(), Some(at(t0, 10)));
        clock.on_read(b"GET / HTTP/1.1\r\n", || t0);
        assert_eq!(clock.due(), Some(at(t0, 10)));
    }

    #[test]
    fn next_request_is_timed_from_its_first_byte() {
        let t0 = Instant::now();
        let mut clock = HeaderClock::new(LIMIT, t0);
        clock.on_read(b"GET /a HTTP/1.1\r\n\r\n", || at(t0, 1));
        // Reads while answering (the proxy watching for a disconnect) start nothing.
        clock.on_read(b"GET /b", || at(t0, 2));
        assert_eq!(clock.due(), None);
        clock.on_write();
        clock.on_write();
        assert_eq!(clock.due(), None, "idle keep-alive time is not header time");
        clock.on_read(b"GET /c HTTP/1.1\r\n", || at(t0, 100));
        assert_eq!(clock.due(), Some(at(t0, 110)));
        clock.on_read(b"\r\n", || at(t0, 101));
        assert_eq!(clock.due(), None);
    }

    #[test]
    fn a_write_before_the_header_completes_does_not_disarm_it() {
        let t0 = Instant::now();
        let mut clock = HeaderClock::new(LIMIT, t0);
        clock.on_read(b"GET / HTTP/1.1\r\n", || t0);
        clock.on_write();
        assert_eq!(clock.due(), Some(at(t0, 10)));
    }
}
