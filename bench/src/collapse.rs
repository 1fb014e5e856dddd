//! Collapse measurement: N viewers ask for one object nobody has fetched yet, at the same
//! instant. Every connection is opened first; then all requests are released together and
//! each viewer's time to first body byte is recorded, and its body checked against its
//! `Content-Length`. With working request collapsing the upstream sees one request and the
//! followers' first bytes arrive right after the leader's.
//!
//! The same client measures the peers (nginx, Varnish, Apache Traffic Server): each one's way
//! of marking the answer that went upstream is recognised (`is_miss`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Barrier, Notify};

/// What the viewers saw.
#[derive(Debug, Default, Serialize)]
pub struct CollapseReport {
    /// How bodies were read: `after-all-first-bytes` or `at-once`.
    pub drain: &'static str,
    /// Viewers that got a 200 with a body.
    pub ok: usize,
    /// Viewers that failed.
    pub failed: usize,
    /// Answers marked `X-Cache: miss`: the request that went upstream. One with collapsing.
    pub misses: usize,
    /// The leader's time to first body byte, ms. The leader is the one miss; when there is not
    /// exactly one, the fastest viewer stands in.
    pub leader_ttfb_ms: f64,
    /// Median time to first body byte over all viewers, ms.
    pub median_ttfb_ms: f64,
    /// The slowest viewer's time to first body byte, ms.
    pub slowest_ttfb_ms: f64,
    /// Followers' time to first byte minus the leader's, ms: median.
    pub median_lag_ms: f64,
    /// Followers' time to first byte minus the leader's, ms: 90th percentile.
    pub p90_lag_ms: f64,
    /// Followers' time to first byte minus the leader's, ms: 99th percentile.
    pub p99_lag_ms: f64,
    /// Followers' time to first byte minus the leader's, ms: the slowest follower.
    pub follower_lag_ms: f64,
    /// By the clock rather than per request: how long after the leader's first byte the last
    /// follower's first byte arrived, ms.
    pub last_arrival_after_leader_ms: f64,
    /// Slowest minus fastest time to first byte over all viewers, ms. This also counts the
    /// client's own spread in sending the requests (`send_spread_ms`): a viewer that sent
    /// early waits longer for the same answer.
    pub ttfb_spread_ms: f64,
    /// First request sent to last request sent, ms.
    pub send_spread_ms: f64,
    /// Median time from a viewer's request to its last body byte, ms.
    pub median_last_byte_ms: f64,
    /// The slowest viewer's time from request to last body byte, ms.
    pub slowest_last_byte_ms: f64,
}

/// One viewer's complete answer.
struct Viewing {
    sent: Instant,
    first_byte: Instant,
    last_byte: Instant,
    miss: bool,
}

impl Viewing {
    fn ttfb_ms(&self) -> f64 {
        ms(self.first_byte - self.sent)
    }

    fn last_byte_ms(&self) -> f64 {
        ms(self.last_byte - self.sent)
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// How the viewers' connections are used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connection {
    /// Kept open after the answer, as a player keeps it for its next segment. The viewer
    /// closes it once it has the whole body.
    KeepAlive,
    /// `Connection: close`: the server shuts each connection down right after its answer, so
    /// its teardown falls inside the measured window.
    Close,
}

/// When the viewers read their bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drain {
    /// Each viewer reads up to its first body byte, then waits until every viewer has got
    /// that far (or 10 s) before reading the rest. The load generator shares the machine's
    /// cores with the server; draining a thousand bodies while others still wait would charge
    /// the client's own reading to the server's time to first byte.
    AfterAllFirstBytes,
    /// Each viewer reads its whole body as it comes, as a player does: times to the last byte
    /// are then each viewer's own, and times to first byte include the client's reading.
    AtOnce,
}

impl Drain {
    fn name(self) -> &'static str {
        match self {
            Drain::AfterAllFirstBytes => "after-all-first-bytes",
            Drain::AtOnce => "at-once",
        }
    }
}

/// Runs `viewers` simultaneous GETs of `path` on `addr` with `host`.
pub async fn run(
    addr: SocketAddr,
    host: &str,
    path: &str,
    viewers: usize,
    connection: Connection,
    drain: Drain,
) -> CollapseReport {
    let barrier = Arc::new(Barrier::new(viewers + 1));
    let first_bytes = Arc::new(FirstBytes::new(viewers));
    let connection_header = match connection {
        Connection::KeepAlive => "keep-alive",
        Connection::Close => "close",
    };
    let request = Arc::new(format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: {connection_header}\r\n\r\n"
    ));
    let mut tasks = Vec::with_capacity(viewers);
    for _ in 0..viewers {
        let barrier = Arc::clone(&barrier);
        let request = Arc::clone(&request);
        let first_bytes = Arc::clone(&first_bytes);
        tasks.push(tokio::spawn(async move {
            let stream = TcpStream::connect(addr).await;
            // Written to so its pages are in place: faulting them in after the release
            // would count the client's own page faults as waiting for the edge.
            let buf = vec![1u8; 64 * 1024];
            barrier.wait().await;
            viewer(stream.ok(), buf, &request, &first_bytes, drain).await
        }));
    }
    barrier.wait().await;
    let mut viewings = Vec::new();
    let mut failed = 0;
    for t in tasks {
        match t.await.ok().flatten() {
            Some(v) => viewings.push(v),
            None => failed += 1,
        }
    }
    report(viewings, failed, drain)
}

fn report(mut viewings: Vec<Viewing>, failed: usize, drain: Drain) -> CollapseReport {
    let misses = viewings.iter().filter(|v| v.miss).count();
    viewings.sort_by(|a, b| a.ttfb_ms().total_cmp(&b.ttfb_ms()));
    let leader_at = if misses == 1 {
        viewings.iter().position(|v| v.miss).unwrap_or(0)
    } else {
        0
    };
    let Some(leader) = viewings.get(leader_at) else {
        return CollapseReport {
            drain: drain.name(),
            failed,
            misses,
            ..CollapseReport::default()
        };
    };
    let leader_ttfb = leader.ttfb_ms();
    let followers: Vec<&Viewing> = viewings
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != leader_at)
        .map(|(_, v)| v)
        .collect();
    let lag_at = |q: f64| {
        let i = ((followers.len() as f64 * q) as usize).min(followers.len().saturating_sub(1));
        followers.get(i).map_or(0.0, |v| v.ttfb_ms() - leader_ttfb)
    };
    let last_arrival = viewings
        .iter()
        .map(|v| v.first_byte)
        .max()
        .unwrap_or(leader.first_byte);
    let first_sent = viewings.iter().map(|v| v.sent).min().unwrap_or(leader.sent);
    let last_sent = viewings.iter().map(|v| v.sent).max().unwrap_or(leader.sent);
    let fastest = viewings.first().map_or(0.0, Viewing::ttfb_ms);
    let slowest = viewings.last().map_or(0.0, Viewing::ttfb_ms);
    let mut last_bytes: Vec<f64> = viewings.iter().map(Viewing::last_byte_ms).collect();
    last_bytes.sort_by(f64::total_cmp);
    CollapseReport {
        drain: drain.name(),
        ok: viewings.len(),
        failed,
        misses,
        leader_ttfb_ms: leader_ttfb,
        median_ttfb_ms: viewings[viewings.len() / 2].ttfb_ms(),
        slowest_ttfb_ms: slowest,
        median_lag_ms: lag_at(0.5),
        p90_lag_ms: lag_at(0.9),
        p99_lag_ms: lag_at(0.99),
        follower_lag_ms: lag_at(1.0),
        last_arrival_after_leader_ms: ms(last_arrival.saturating_duration_since(leader.first_byte)),
        ttfb_spread_ms: slowest - fastest,
        send_spread_ms: ms(last_sent - first_sent),
        median_last_byte_ms: last_bytes[last_bytes.len() / 2],
        slowest_last_byte_ms: last_bytes.last().copied().unwrap_or(0.0),
    }
}

/// Whether a response head (lowercased) marks the answer that went upstream, in the way each
/// server says it: the edge's `X-Cache: miss`, nginx's `X-Cache-Status: MISS`, Varnish's
/// `X-Varnish` with one transaction id (a hit carries two: its own and the one that stored
/// the object), Traffic Server's `Via` cache-lookup code `cM`.
fn is_miss(head: &str) -> bool {
    head.lines().any(|line| {
        let Some((name, value)) = line.split_once(':') else {
            return false;
        };
        let value = value.trim();
        match name.trim() {
            "x-cache" | "x-cache-status" => value == "miss",
            "x-varnish" => value.split_ascii_whitespace().count() == 1,
            "via" => value.contains("[cm"),
            _ => false,
        }
    })
}

/// Counts viewers that have their first body byte (or gave up).
struct FirstBytes {
    viewers: usize,
    count: AtomicUsize,
    all: Notify,
}

impl FirstBytes {
    fn new(viewers: usize) -> Self {
        Self {
            viewers,
            count: AtomicUsize::new(0),
            all: Notify::new(),
        }
    }

    /// Wakes the waiting viewers only when the last one arrives: waking them all at every
    /// arrival made the client do a million wake-ups while the edge was being measured.
    fn arrive(&self) {
        if self.count.fetch_add(1, Ordering::AcqRel) + 1 >= self.viewers {
            self.all.notify_waiters();
        }
    }

    async fn wait_for_all(&self) {
        let notified = self.all.notified();
        if self.count.load(Ordering::Acquire) >= self.viewers {
            return;
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), notified).await;
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

/// One viewer: when it asked and got its first body byte, if it got a complete 200.
async fn viewer(
    stream: Option<TcpStream>,
    mut buf: Vec<u8>,
    request: &str,
    first_bytes: &FirstBytes,
    drain: Drain,
) -> Option<Viewing> {
    // A viewer that fails before its first byte still counts, so it holds nobody up.
    let mut arrival = Arrival(Some(first_bytes));
    let mut stream = stream?;
    let start = Instant::now();
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut head = Vec::new();
    let (first_byte, miss, content_length, mut body) = loop {
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
            let first_byte = Instant::now();
            let header = String::from_utf8_lossy(&head[..end]).to_ascii_lowercase();
            if !header.starts_with("http/1.1 200") {
                return None;
            }
            let miss = is_miss(&header);
            let length: usize = header
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())?;
            break (first_byte, miss, length, head.len() - end - 4);
        }
    };
    arrival.now();
    if drain == Drain::AfterAllFirstBytes {
        first_bytes.wait_for_all().await;
    }
    // Read to `Content-Length` rather than to the end: on a kept-alive connection the server
    // does not close. A server that closes early leaves the body short.
    while body < content_length {
        let n = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut buf))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            break;
        }
        body += n;
    }
    (body == content_length).then_some(Viewing {
        sent: start,
        first_byte,
        last_byte: Instant::now(),
        miss,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn viewing(base: Instant, sent_ms: u64, first_byte_ms: u64, miss: bool) -> Viewing {
        Viewing {
            sent: base + Duration::from_millis(sent_ms),
            first_byte: base + Duration::from_millis(first_byte_ms),
            last_byte: base + Duration::from_millis(first_byte_ms * 2),
            miss,
        }
    }

    #[test]
    fn lag_is_measured_from_the_miss_not_the_fastest_viewer() {
        let base = Instant::now();
        // The leader asked first and waited 50 ms; a follower that asked 20 ms later got its
        // bytes 2 ms after the leader, so its own wait was shorter than the leader's.
        let viewings = vec![
            viewing(base, 0, 50, true),
            viewing(base, 20, 52, false),
            viewing(base, 1, 56, false),
        ];
        let report = report(viewings, 1, Drain::AtOnce);
        assert_eq!((report.ok, report.failed, report.misses), (3, 1, 1));
        assert!((report.leader_ttfb_ms - 50.0).abs() < 0.01);
        assert!((report.follower_lag_ms - 5.0).abs() < 0.01, "{report:?}");
        assert!((report.last_arrival_after_leader_ms - 6.0).abs() < 0.01);
        assert!((report.ttfb_spread_ms - 23.0).abs() < 0.01, "{report:?}");
        assert!((report.send_spread_ms - 20.0).abs() < 0.01);
        assert!((report.slowest_ttfb_ms - 55.0).abs() < 0.01);
        // Last bytes at 100, 104 and 112 ms after the base: 100, 84 and 111 ms after asking.
        assert!(
            (report.median_last_byte_ms - 100.0).abs() < 0.01,
            "{report:?}"
        );
        assert!((report.slowest_last_byte_ms - 111.0).abs() < 0.01);
    }

    #[test]
    fn each_servers_miss_marker_is_recognised() {
        let head = |extra: &str| format!("http/1.1 200 ok\r\ncontent-length: 3\r\n{extra}");
        assert!(is_miss(&head("x-cache: miss")));
        assert!(!is_miss(&head("x-cache: hit")));
        assert!(is_miss(&head("x-cache-status: miss")));
        assert!(!is_miss(&head("x-cache-status: hit")));
        assert!(is_miss(&head("x-varnish: 32770")));
        assert!(!is_miss(&head("x-varnish: 32773 32770")));
        assert!(is_miss(&head(
            "via: http/1.1 ats (apachetrafficserver/9.2.0 [cmssf ])"
        )));
        assert!(!is_miss(&head(
            "via: http/1.1 ats (apachetrafficserver/9.2.0 [chs f ])"
        )));
        assert!(!is_miss(&head("x-cache-lookup: miss")));
    }

    #[test]
    fn without_a_single_miss_the_fastest_viewer_stands_in() {
        let base = Instant::now();
        let viewings = vec![viewing(base, 0, 50, false), viewing(base, 0, 40, false)];
        let report = report(viewings, 0, Drain::AtOnce);
        assert_eq!(report.misses, 0);
        assert!((report.leader_ttfb_ms - 40.0).abs() < 0.01);
        assert!((report.follower_lag_ms - 10.0).abs() < 0.01);
        let empty = super::report(Vec::new(), 5, Drain::AfterAllFirstBytes);
        assert_eq!((empty.ok, empty.failed), (0, 5));
    }
}
