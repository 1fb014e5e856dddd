//! Collapse measurement: N viewers ask for one object nobody has fetched yet, at the same
//! instant. Every connection is opened first; then all requests are released together and
//! each viewer's time to first body byte is recorded. With working request collapsing the
//! upstream sees one request and the followers' first bytes arrive right after the leader's.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Barrier;

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
    /// Slowest time to first body byte, ms.
    pub slowest_ttfb_ms: f64,
    /// Slowest minus fastest, ms: how long followers waited beyond the leader.
    pub follower_lag_ms: f64,
}

/// Runs `viewers` simultaneous GETs of `path` on `addr` with `host`.
pub async fn run(addr: SocketAddr, host: &str, path: &str, viewers: usize) -> CollapseReport {
    let barrier = Arc::new(Barrier::new(viewers + 1));
    let request = Arc::new(format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    ));
    let mut tasks = Vec::with_capacity(viewers);
    for _ in 0..viewers {
        let barrier = Arc::clone(&barrier);
        let request = Arc::clone(&request);
        tasks.push(tokio::spawn(async move {
            let stream = TcpStream::connect(addr).await;
            barrier.wait().await;
            let mut stream = stream.ok()?;
            let start = Instant::now();
            stream.write_all(request.as_bytes()).await.ok()?;
            let mut buf = vec![0u8; 64 * 1024];
            let mut head = Vec::new();
            let mut ttfb = None;
            loop {
                let n = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut buf))
                    .await
                    .ok()?
                    .ok()?;
                if n == 0 {
                    break;
                }
                if ttfb.is_none() {
                    head.extend_from_slice(&buf[..n]);
                    if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                        if !head.starts_with(b"HTTP/1.1 200") {
                            return None;
                        }
                        if head.len() > end + 4 {
                            ttfb = Some(start.elapsed());
                        }
                    }
                }
            }
            ttfb
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
        slowest_ttfb_ms: slowest,
        follower_lag_ms: slowest - leader,
    }
}
