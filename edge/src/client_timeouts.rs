//! A deadline on receiving each HTTP/1 request header, so a slow or stalled client cannot hold
//! a connection open by trickling a header a byte at a time.
//!
//! Pingora only bounds each single read of a header (60 s), which a client defeats by sending a
//! byte now and then. [`HeaderClock`] is the pure part: it follows the bytes read and written on
//! a connection and knows when a header is due. [`HeaderDeadlineStream`] is the IO wrapper that
//! consults it, and [`HeaderDeadlineApp`] wraps each accepted HTTP/1 connection of a Pingora
//! service in one. HTTP/2 has its own framing and flow control, so its connections pass through.
//! The idle time between keep-alive requests is Pingora's keep-alive timeout, which the proxy
//! sets from the same `[clients]` section.

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

    /// Bytes read from the client at `now` (called only for non-empty reads).
    pub fn on_read(&mut self, bytes: &[u8], now: Instant) {
        if bytes.is_empty() {
            return;
        }
        if self.phase == Phase::BetweenRequests {
            self.phase = Phase::Header {
                due: now + self.limit,
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

/// A client stream whose reads fail with `TimedOut` once a request header is overdue.
#[derive(Debug)]
pub struct HeaderDeadlineStream {
    inner: Stream,
    clock: HeaderClock,
    timer: Option<Pin<Box<Sleep>>>,
    timeouts: IntCounter,
}

impl HeaderDeadlineStream {
    /// Wraps a just-accepted connection; its first header is due `limit` from now.
    pub fn new(inner: Stream, limit: Duration, timeouts: IntCounter) -> Self {
        Self {
            inner,
            clock: HeaderClock::new(limit, Instant::now()),
            timer: None,
            timeouts,
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

impl AsyncRead for HeaderDeadlineStream {
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
                    this.clock.on_read(read, Instant::now());
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

impl AsyncWrite for HeaderDeadlineStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.inner).poll_write(cx, buf);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            this.clock.on_write();
        }
        written
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            this.clock.on_write();
        }
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for HeaderDeadlineStream {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await;
    }
}

impl UniqueID for HeaderDeadlineStream {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for HeaderDeadlineStream {
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

impl GetTimingDigest for HeaderDeadlineStream {
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

impl GetProxyDigest for HeaderDeadlineStream {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest);
    }
}

impl GetSocketDigest for HeaderDeadlineStream {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest);
    }
}

#[async_trait]
impl Peek for HeaderDeadlineStream {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

/// A Pingora application whose HTTP/1 connections get a [`HeaderDeadlineStream`].
pub struct HeaderDeadlineApp<A> {
    inner: Arc<A>,
    limit: Duration,
    timeouts: IntCounter,
}

impl<A> HeaderDeadlineApp<A> {
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
impl<A: ServerApp + Send + Sync + 'static> ServerApp for HeaderDeadlineApp<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let stream: Stream = if stream.selected_alpn_proto() == Some(ALPN::H2) {
            stream
        } else {
            Box::new(HeaderDeadlineStream::new(
                stream,
                self.limit,
                self.timeouts.clone(),
            ))
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
        clock.on_read(b"GET / HT", at(t0, 4));
        clock.on_read(b"TP/1.1\r\nHost: a\r\n", at(t0, 8));
        assert_eq!(clock.due(), Some(at(t0, 10)));
        clock.on_read(b"\r\n", at(t0, 9));
        assert_eq!(clock.due(), None, "a complete header is no longer timed");
    }

    #[test]
    fn header_end_split_across_reads_and_bare_line_feeds() {
        let t0 = Instant::now();
        let mut clock = HeaderClock::new(LIMIT, t0);
        clock.on_read(b"GET / HTTP/1.1\r\nHost: a\r", t0);
        clock.on_read(b"\n\r", t0);
        assert!(clock.due().is_some());
        clock.on_read(b"\n", t0);
        assert_eq!(clock.due(), None);

        let mut lenient = HeaderClock::new(LIMIT, t0);
        lenient.on_read(b"GET / HTTP/1.1\nHost: a\n\n", t0);
        assert_eq!(lenient.due(), None);
    }

    #[test]
    fn blank_lines_before_the_request_line_do_not_end_the_header() {
        let t0 = Instant::now();
        let mut clock = HeaderClock::new(LIMIT, t0);
        clock.on_read(b"\r\n\r\n\n\n", t0);
        assert_eq!(clock.due(), Some(at(t0, 10)));
        clock.on_read(b"GET / HTTP/1.1\r\n", t0);
        assert_eq!(clock.due(), Some(at(t0, 10)));
    }

    #[test]
    fn next_request_is_timed_from_its_first_byte() {
        let t0 = Instant::now();
        let mut clock = HeaderClock::new(LIMIT, t0);
        clock.on_read(b"GET /a HTTP/1.1\r\n\r\n", at(t0, 1));
        // Reads while answering (the proxy watching for a disconnect) start nothing.
        clock.on_read(b"GET /b", at(t0, 2));
        assert_eq!(clock.due(), None);
        clock.on_write();
        clock.on_write();
        assert_eq!(clock.due(), None, "idle keep-alive time is not header time");
        clock.on_read(b"GET /c HTTP/1.1\r\n", at(t0, 100));
        assert_eq!(clock.due(), Some(at(t0, 110)));
        clock.on_read(b"\r\n", at(t0, 101));
        assert_eq!(clock.due(), None);
    }

    #[test]
    fn a_write_before_the_header_completes_does_not_disarm_it() {
        let t0 = Instant::now();
        let mut clock = HeaderClock::new(LIMIT, t0);
        clock.on_read(b"GET / HTTP/1.1\r\n", t0);
        clock.on_write();
        assert_eq!(clock.due(), Some(at(t0, 10)));
    }
}
