//! Collapse measurement: N viewers ask for one object nobody has fetched yet, at the same
//! instant. Every connection is opened first; then all requests are released together and
//! each viewer's time to first body byte is recorded, and its body checked against its
//! `Content-Length`. With working request collapsing the upstream sees one request and the
//! followers' first bytes arrive right after the leader's.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Barrier, Notify};

/// What the viewers saw.
#[derive(Debug, Serialize)]
pub struct CollapseReport {
    /// Viewers that got a 200 with a body.
    pub ok: usize,
    /// Viewers that failed.
    pub failed: usize,
    /// Fastest time to first body byte (the leader), ms.
    pub leader_ttfb_ms: f64,
    /// Median follower time to first body byte, ms.
    pub median_ttfb_ms: f64,
    /// 90th percentile time to first body byte, ms.
    pub p90_ttfb_ms: f64,
    /// 99th percentile time to first body byte, ms.
    pub p99_ttfb_ms: f64,
    /// Slowest time to first body byte, ms.
    pub slowest_ttfb_ms: f64,
    /// Slowest minus fastest, ms: how long the last follower waited beyond the leader.
    pub follower_lag_ms: f64,
    /// Median minus fastest, ms: how long a typical follower waited beyond the leader.
    pub median_lag_ms: f64,
}

/// Runs `viewers` simultaneous GETs of `path` on `addr` with `host`.
///
/// Each viewer reads up to its first body byte, then waits until every viewer has got that
/// far (or 10 s) before reading the rest. The load generator shares the machine's cores with
/// the edge; draining a thousand bodies while others still wait would charge the client's own
/// reading to the edge's time to first byte.
pub async fn run(addr: SocketAddr, host: &str, path: &str, viewers: usize) -> CollapseReport {
    let barrier = Arc::new(Barrier::new(viewers + 1));
    let first_bytes = Arc::new(FirstBytes::default());
    let request = Arc::new(format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    ));
    let mut tasks = Vec::with_capacity(viewers);
    for _ in 0..viewers {
        let barrier = Arc::clone(&barrier);
        let request = Arc::clone(&request);
        let first_bytes = Arc::clone(&first_bytes);
        tasks.push(tokio::spawn(async move {
            let stream = TcpStream::connect(addr).await;
            barrier.wait().await;
            viewer(stream.ok(), &request, &first_bytes, viewers).await
        }));
    }
    barrier.wait().await;
    let mut ttfbs = Vec::new();
    let mut failed = 0;
    for t in tasks {
        match t.await.ok().flatten() {
            Some(d) => ttfbs.push(d.as_secs_f64() * 1000.0),
            None => failed += 1,
        }
    }
    ttfbs.sort_by(f64::total_cmp);
    let pick = |i: usize| ttfbs.get(i).copied().unwrap_or(0.0);
    let leader = pick(0);
    let slowest = ttfbs.last().copied().unwrap_or(0.0);
    CollapseReport {
        ok: ttfbs.len(),
        failed,
        leader_ttfb_ms: leader,
        median_ttfb_ms: pick(ttfbs.len() / 2),
        p90_ttfb_ms: pick(ttfbs.len() * 9 / 10),
        p99_ttfb_ms: pick(ttfbs.len() * 99 / 100),
        slowest_ttfb_ms: slowest,
        follower_lag_ms: slowest - leader,
        median_lag_ms: pick(ttfbs.len() / 2) - leader,
    }
}

/// Counts viewers that have their first body byte (or gave up).
#[derive(Default)]
struct FirstBytes {
    count: AtomicUsize,
    all: Notify,
}

impl FirstBytes {
    fn arrive(&self) {
        self.count.fetch_add(1, Ordering::AcqRel);
        self.all.notify_waiters();
    }

    async fn wait_for(&self, viewers: usize) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while self.count.load(Ordering::Acquire) < viewers {
            let notified = self.all.notified();
            if self.count.load(Ordering::Acquire) >= viewers {
                break;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                break;
            }
        }
    }
}

/// Reports a viewer's first byte once: when it comes, or when the viewer gives up.
struct Arrival<'a>(Option<&'a FirstBytes>);

impl Arrival<'_> {
    fn now(&mut self) {
        if let Some(first_bytes) = self.0.take() {
            first_bytes.arrive();
        }
    }
}

impl Drop for Arrival<'_> {
    fn drop(&mut self) {
        self.now();
    }
}

/// One viewer: its time to first body byte, if it got a complete 200.
async fn viewer(
    stream: Option<TcpStream>,
    request: &str,
    first_bytes: &FirstBytes,
    viewers: usize,
) -> Option<Duration> {
    // A viewer that fails before its first byte still counts, so it holds nobody up.
    let mut arrival = Arrival(Some(first_bytes));
    let mut stream = stream?;
    let start = Instant::now();
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut head = Vec::new();
    let (ttfb, content_length, mut body) = loop {
        let n = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut buf))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n")
            && head.len() > end + 4
        {
            let ttfb = start.elapsed();
            let header = String::from_utf8_lossy(&head[..end]).to_ascii_lowercase();
            if !header.starts_with("http/1.1 200") {
                return None;
            }
            let length: usize = header
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())?;
            break (ttfb, length, head.len() - end - 4);
        }
    };
    arrival.now();
    first_bytes.wait_for(viewers).await;
    loop {
        let n = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut buf))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            break;
        }
        body += n;
    }
    (body == content_length).then_some(ttfb)
}
