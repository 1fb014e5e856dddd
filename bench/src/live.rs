//! A live stream watched by many simulated viewers through several edges, against a synthetic
//! live origin this process runs: origin offload and edge hit ratio.
//!
//! The origin publishes one segment per `segment_duration` (`/live/bench/<n>.m4s`, fixed size)
//! and a media playlist of the last six; it counts every request it gets per path. Each viewer
//! keeps one keep-alive connection to its edge, reloads the playlist once per segment
//! duration (starting at a random offset, as real players drift apart) and fetches each
//! segment it has not seen, from the live edge onwards. The report gives origin fetches per
//! unique object and the share of viewer requests the edges answered from cache.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::{TcpListener, TcpStream};

/// One run.
#[derive(Debug, Clone)]
pub struct LivePlan {
    /// Where the synthetic origin listens.
    pub origin_listen: SocketAddr,
    /// Edges the viewers are spread over.
    pub edges: Vec<SocketAddr>,
    /// Viewers per edge.
    pub viewers_per_edge: usize,
    /// How long viewers watch.
    pub duration: Duration,
    /// Segment duration (and playlist reload interval).
    pub segment_duration: Duration,
    /// Bytes per segment.
    pub segment_bytes: usize,
}

/// What a run measured.
#[derive(Debug, Serialize)]
pub struct LiveReport {
    /// Viewers in all.
    pub viewers: usize,
    /// Requests viewers sent.
    pub viewer_requests: u64,
    /// Of which the edge answered from cache (`X-Cache: hit` or `stale`).
    pub edge_hits: u64,
    /// `edge_hits / viewer_requests`.
    pub edge_hit_ratio: f64,
    /// Viewer requests that failed or were not 200.
    pub viewer_errors: u64,
    /// Distinct objects the origin served.
    pub origin_unique_objects: usize,
    /// Requests the origin got.
    pub origin_requests: u64,
    /// Requests the origin got for segments, and how many distinct segments.
    pub origin_segment_requests: u64,
    /// Distinct segments the origin served.
    pub origin_unique_segments: usize,
    /// `origin_segment_requests / origin_unique_segments`.
    pub origin_fetches_per_segment: f64,
    /// `origin_requests / origin_unique_objects`, where each playlist version is an object.
    pub origin_fetches_per_object: f64,
    /// Playlist versions the origin served.
    pub playlist_versions: usize,
}

/// The synthetic live origin.
struct LiveOrigin {
    started: Instant,
    segment_duration: Duration,
    segment: Bytes,
    counts: Mutex<HashMap<String, u64>>,
}

impl LiveOrigin {
    /// The newest complete segment's number.
    fn live_edge(&self) -> u64 {
        (self.started.elapsed().as_millis() / self.segment_duration.as_millis().max(1)) as u64
    }

    fn playlist(&self) -> String {
        let newest = self.live_edge();
        let first = newest.saturating_sub(5);
        let secs = self.segment_duration.as_secs_f64();
        let mut out = format!(
            "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:{}\n#EXT-X-MEDIA-SEQUENCE:{first}\n",
            secs.ceil() as u64
        );
        for n in first..=newest {
            out.push_str(&format!("#EXTINF:{secs:.3},\n{n}.m4s\n"));
        }
        out
    }

    fn answer(&self, path: &str) -> Response<Full<Bytes>> {
        // Each playlist version is its own object: count fetches per version.
        let counted = if path.ends_with(".m3u8") {
            format!("{path}@{}", self.live_edge())
        } else {
            path.to_owned()
        };
        *self
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(counted)
            .or_insert(0) += 1;
        let respond = |status: u16, cache: &str, body: Bytes| {
            Response::builder()
                .status(status)
                .header("cache-control", cache)
                .body(Full::new(body))
                .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
        };
        if path == "/live/bench/index.m3u8" {
            return respond(200, "max-age=1", Bytes::from(self.playlist()));
        }
        let number = path
            .strip_prefix("/live/bench/")
            .and_then(|p| p.strip_suffix(".m4s"))
            .and_then(|n| n.parse::<u64>().ok());
        match number {
            Some(n) if n <= self.live_edge() => respond(200, "max-age=3600", self.segment.clone()),
            _ => respond(404, "max-age=1", Bytes::new()),
        }
    }
}

async fn serve_origin(listener: TcpListener, origin: Arc<LiveOrigin>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let origin = Arc::clone(&origin);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let origin = Arc::clone(&origin);
                async move { Ok::<_, Infallible>(origin.answer(req.uri().path())) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

#[derive(Default)]
struct ViewerTally {
    requests: u64,
    hits: u64,
    errors: u64,
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

async fn connect(edge: SocketAddr) -> Option<Sender> {
    let stream = TcpStream::connect(edge).await.ok()?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    tokio::spawn(conn);
    Some(sender)
}

/// One GET on the viewer's connection (re-opened if it broke): status, cache verdict, body.
async fn fetch(
    sender: &mut Option<Sender>,
    edge: SocketAddr,
    path: &str,
) -> Option<(u16, bool, Bytes)> {
    if sender.as_ref().is_none_or(|s| s.is_closed()) {
        *sender = connect(edge).await;
    }
    let s = sender.as_mut()?;
    s.ready().await.ok()?;
    let request = Request::get(path)
        .header(hyper::header::HOST, "localhost")
        .body(Empty::<Bytes>::new())
        .ok()?;
    let exchange = async {
        let response = s.send_request(request).await.ok()?;
        let status = response.status().as_u16();
        let hit = response
            .headers()
            .get("x-cache")
            .is_some_and(|v| v == "hit" || v == "stale");
        let body = response.into_body().collect().await.ok()?.to_bytes();
        Some((status, hit, body))
    };
    let answer = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .ok()
        .flatten();
    if answer.is_none() {
        *sender = None;
    }
    answer
}

async fn viewer(edge: SocketAddr, plan: LivePlan, seed: u64, deadline: Instant) -> ViewerTally {
    let mut tally = ViewerTally::default();
    // Spread the viewers over one reload interval, as real players are.
    let offset = plan.segment_duration.as_millis() as u64 * (seed % 1000) / 1000;
    tokio::time::sleep(Duration::from_millis(offset)).await;
    let mut sender = None;
    let mut next_wanted: Option<u64> = None;
    while Instant::now() < deadline {
        let reload_at = Instant::now() + plan.segment_duration;
        let mut record = |answer: &Option<(u16, bool, Bytes)>| {
            tally.requests += 1;
            match answer {
                Some((200, hit, _)) => tally.hits += u64::from(*hit),
                _ => tally.errors += 1,
            }
        };
        let playlist = fetch(&mut sender, edge, "/live/bench/index.m3u8").await;
        record(&playlist);
        if let Some((200, _, body)) = &playlist {
            let numbers: Vec<u64> = String::from_utf8_lossy(body)
                .lines()
                .filter_map(|l| l.strip_suffix(".m4s")?.parse().ok())
                .collect();
            let newest = numbers.iter().copied().max();
            let start = next_wanted.or(newest).unwrap_or(0);
            for n in numbers.into_iter().filter(|&n| n >= start) {
                let segment = fetch(&mut sender, edge, &format!("/live/bench/{n}.m4s")).await;
                record(&segment);
                next_wanted = Some(n + 1);
            }
        }
        tokio::time::sleep_until(reload_at.into()).await;
    }
    tally
}

/// Runs the origin and the viewers; returns once every viewer has stopped.
pub async fn run(plan: LivePlan) -> anyhow::Result<LiveReport> {
    let listener = TcpListener::bind(plan.origin_listen).await?;
    let origin = Arc::new(LiveOrigin {
        started: Instant::now(),
        segment_duration: plan.segment_duration,
        segment: Bytes::from(vec![0x5a; plan.segment_bytes]),
        counts: Mutex::new(HashMap::new()),
    });
    let origin_task = tokio::spawn(serve_origin(listener, Arc::clone(&origin)));
    let deadline = Instant::now() + plan.duration;
    let mut viewers = Vec::new();
    for (e, &edge) in plan.edges.iter().enumerate() {
        for v in 0..plan.viewers_per_edge {
            let seed = (e * plan.viewers_per_edge + v) as u64 * 7919;
            viewers.push(tokio::spawn(viewer(edge, plan.clone(), seed, deadline)));
        }
    }
    let mut total = ViewerTally::default();
    for v in viewers {
        if let Ok(t) = v.await {
            total.requests += t.requests;
            total.hits += t.hits;
            total.errors += t.errors;
        }
    }
    origin_task.abort();
    let counts = origin
        .counts
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let segments: Vec<u64> = counts
        .iter()
        .filter(|(p, _)| p.ends_with(".m4s"))
        .map(|(_, c)| *c)
        .collect();
    let origin_requests: u64 = counts.values().sum();
    let segment_requests: u64 = segments.iter().sum();
    let ratio = |a: u64, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    Ok(LiveReport {
        viewers: plan.edges.len() * plan.viewers_per_edge,
        viewer_requests: total.requests,
        edge_hits: total.hits,
        edge_hit_ratio: ratio(total.hits, total.requests as usize),
        viewer_errors: total.errors,
        origin_unique_objects: counts.len(),
        origin_requests,
        origin_segment_requests: segment_requests,
        origin_unique_segments: segments.len(),
        origin_fetches_per_segment: ratio(segment_requests, segments.len()),
        origin_fetches_per_object: ratio(origin_requests, counts.len()),
        playlist_versions: counts.keys().filter(|k| k.contains(".m3u8@")).count(),
    })
}
