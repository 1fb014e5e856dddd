//! Runs a scenario: spawns and retires simulated viewers as the stages ask, moves each one's
//! requests ([`super::client`]) for its player model ([`super::hls_player`] or
//! [`super::dash_player`]), reads chunked DASH segments chunk by chunk, samples every second,
//! prints progress, and builds the report.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use tokio::sync::mpsc;

use cascade_media::fmp4::{Fmp4Item, Fmp4Splitter};

use super::client::{Answer, Client, Protocol, Target};
use super::dash_player::{DashPlayer, active_seconds};
use super::figures::{Second, quantile, sorted};
use super::hls_player::Player;
use super::model::{Fetch, PlayerConfig, Request, State, ViewerModel, ViewerStats};
use super::mpd::{ContentKind, parse_mpd};
use super::playlist::parse_multivariant;
use super::report::{self, Report, Summary};
use super::scenario::{Scenario, Threshold};
use super::steps;

/// A viewers run.
#[derive(Debug, Clone)]
pub struct ViewersPlan {
    /// The multivariant playlist's URL, as given.
    pub url: String,
    /// Where viewers connect.
    pub target: Target,
    /// The multivariant playlist's or manifest's path.
    pub path: String,
    /// HLS or DASH, from the path.
    pub format: Format,
    /// The scenario.
    pub scenario: Scenario,
    /// Its thresholds.
    pub thresholds: Vec<Threshold>,
    /// Print a progress line every `progress` (none if zero).
    pub progress: Duration,
    /// Per-request timeout.
    pub timeout: Duration,
}

/// What the viewers play.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// HLS (LL-HLS when the playlists say so): a multivariant playlist.
    Hls,
    /// DASH (LL-DASH when the manifest says so): an MPD.
    Dash,
}

impl Format {
    /// DASH for a path ending in `.mpd`, else HLS.
    pub fn of_path(path: &str) -> Self {
        let path = path.split('?').next().unwrap_or(path);
        if path.ends_with(".mpd") {
            Self::Dash
        } else {
            Self::Hls
        }
    }
}

/// Splits `http(s)://host[:port]/path` into TLS, host, address and path; off loopback only
/// with `allow_remote`.
pub fn parse_url(
    url: &str,
    allow_remote: bool,
) -> anyhow::Result<(bool, String, SocketAddr, String)> {
    let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else {
        bail!("{url:?}: the URL must start with http:// or https://");
    };
    let (authority, path) = rest
        .find('/')
        .map_or((rest, "/"), |i| (&rest[..i], &rest[i..]));
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() => (h, p.parse::<u16>().unwrap_or(0)),
        _ => (authority, if tls { 443 } else { 80 }),
    };
    if host.is_empty() {
        bail!("{url:?}: no host");
    }
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .with_context(|| format!("{url:?}: cannot resolve {host}"))?
        .collect();
    let addr = addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .with_context(|| format!("{url:?}: {host} has no address"))?;
    if !addr.ip().is_loopback() && !allow_remote {
        bail!(
            "{url} resolves to {addr}, which is not loopback; pass --allow-remote to load a remote host"
        );
    }
    Ok((tls, host.to_owned(), addr, path.to_owned()))
}

/// What a viewer shows the sampler.
#[derive(Debug, Clone, Copy, Default)]
struct Now {
    joined: bool,
    state: Option<State>,
    variant: Option<usize>,
    latency: Option<f64>,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    errors: AtomicU64,
    bytes: AtomicU64,
    stalls: AtomicU32,
}

fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A viewer watching: its stop flag, what it shows the sampler, and its task.
struct Running(
    Arc<AtomicBool>,
    Arc<Mutex<Now>>,
    tokio::task::JoinHandle<ViewerStats>,
);

struct Viewer {
    id: usize,
    plan: Arc<ViewersPlan>,
    counters: Arc<Counters>,
    slot: Arc<Mutex<Now>>,
    stop: Arc<AtomicBool>,
}

impl Viewer {
    async fn watch(self) -> ViewerStats {
        let start = Instant::now();
        let publish = |player: &dyn ViewerModel| {
            let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
            *slot = Now {
                joined: true,
                state: Some(player.state()),
                variant: player.variant(),
                latency: player.latency(wall_ms()),
            };
        };
        let config = PlayerConfig {
            session_id: format!("bench-{}-{}", std::process::id(), self.id),
            content_id: self.plan.path.clone(),
            ..PlayerConfig::default()
        };
        let mut player: Box<dyn ViewerModel> = match self.plan.format {
            Format::Hls => Box::new(Player::new(config, &self.plan.path, wall_ms())),
            Format::Dash => Box::new(DashPlayer::new(config, &self.plan.path, wall_ms())),
        };
        publish(player.as_ref());
        let (mut requests, mut errors, mut bytes) = (0u64, 0u64, 0u64);
        let client = match Client::connect(&self.plan.target).await {
            Ok(c) => Arc::new(c),
            Err(e) => {
                note(&format!("viewer {}: cannot connect: {e:#}", self.id));
                self.counters.requests.fetch_add(1, Ordering::Relaxed);
                self.counters.errors.fetch_add(1, Ordering::Relaxed);
                let mut stats = player.stats().clone();
                stats.requests = 1;
                stats.errors = 1;
                return stats;
            }
        };
        let (tx, mut rx) = mpsc::unbounded_channel::<Event>();
        let mut stalls_seen = 0;
        while !self.stop.load(Ordering::Relaxed) {
            let now = start.elapsed().as_secs_f64();
            player.advance(now);
            for request in player.next_requests(now) {
                let (client, tx, timeout) = (Arc::clone(&client), tx.clone(), self.plan.timeout);
                let init = match request.fetch {
                    Fetch::Chunked { .. } => player.init_bytes(request.track),
                    _ => None,
                };
                tokio::spawn(fetch(client, request, init, timeout, tx));
            }
            let stalls = player.stats().stalls;
            if stalls > stalls_seen {
                self.counters
                    .stalls
                    .fetch_add(stalls - stalls_seen, Ordering::Relaxed);
                stalls_seen = stalls;
            }
            publish(player.as_ref());
            let wait = player.next_wakeup(now).unwrap_or(0.1).clamp(0.0, 0.1);
            tokio::select! {
                Some(event) = rx.recv() => {
                    let (request, answer, seconds, counted) = match event {
                        Event::Chunk { track, end, size } => {
                            // Egress counts as it arrives, not when a long chunked
                            // response ends.
                            bytes += size;
                            self.counters.bytes.fetch_add(size, Ordering::Relaxed);
                            player.on_chunk(track, end);
                            continue;
                        }
                        Event::Done { request, answer, seconds, counted } => {
                            (request, answer, seconds, counted)
                        }
                    };
                    let now = start.elapsed().as_secs_f64();
                    requests += 1;
                    self.counters.requests.fetch_add(1, Ordering::Relaxed);
                    let ok = match answer {
                        Ok(answer) if answer.status == 200 => {
                            let size = (answer.body.len() as u64).saturating_sub(counted);
                            bytes += size;
                            self.counters.bytes.fetch_add(size, Ordering::Relaxed);
                            player.on_answer(&request, &answer.body, answer.age, seconds, now)
                        }
                        Ok(_) | Err(_) => false,
                    };
                    if !ok {
                        errors += 1;
                        self.counters.errors.fetch_add(1, Ordering::Relaxed);
                        player.on_error(request.track, request.fetch, now);
                    }
                }
                () = tokio::time::sleep(Duration::from_secs_f64(wait)) => {}
            }
        }
        let now = start.elapsed().as_secs_f64();
        player.advance(now);
        let mut stats = player.stats().clone();
        stats.stalled = player.stalled_now(now);
        stats.requests = requests;
        stats.errors = errors;
        stats.bytes = bytes;
        *self.slot.lock().unwrap_or_else(PoisonError::into_inner) = Now::default();
        stats
    }
}

fn note(message: &str) {
    eprintln!("cascade-bench viewers: {message}");
}

/// What a request's task tells its viewer.
enum Event {
    /// A CMAF chunk of `size` bytes of a [`Fetch::Chunked`] request arrived, loading `track`
    /// up to `end` (ticks).
    Chunk { track: usize, end: u64, size: u64 },
    /// The request is over: its answer, the seconds it took (for chunked requests, the
    /// seconds data was flowing), and the bytes its chunks already counted.
    Done {
        request: Request,
        answer: anyhow::Result<Answer>,
        seconds: f64,
        counted: u64,
    },
}

/// Sends `request`. A chunked one is read piece by piece: each CMAF chunk completed (read
/// against the track's `init` segment) is reported as it arrives.
async fn fetch(
    client: Arc<Client>,
    request: Request,
    init: Option<bytes::Bytes>,
    timeout: Duration,
    events: mpsc::UnboundedSender<Event>,
) {
    let sent = Instant::now();
    let mut arrivals: Vec<f64> = Vec::new();
    let mut unreadable: Option<String> = None;
    let mut counted = 0u64;
    let answer = if let Fetch::Chunked { .. } = request.fetch {
        let mut splitter = Fmp4Splitter::new();
        if let Some(init) = &init
            && let Err(e) = splitter.push(init)
        {
            unreadable = Some(format!("the init segment does not read: {e}"));
        }
        let track = request.track;
        let on_piece = |piece: &[u8]| {
            arrivals.push(sent.elapsed().as_secs_f64());
            if unreadable.is_some() {
                return;
            }
            match splitter.push(piece) {
                Ok(items) => {
                    for item in items {
                        if let Fmp4Item::Fragment(f) = item {
                            let end = f.decode_time + f.duration;
                            let size = f.bytes.len() as u64;
                            counted += size;
                            let _ = events.send(Event::Chunk { track, end, size });
                        }
                    }
                }
                Err(e) => unreadable = Some(format!("the segment does not read: {e}")),
            }
        };
        tokio::time::timeout(timeout, client.get_in_pieces(&request.target, on_piece)).await
    } else {
        tokio::time::timeout(timeout, client.get(&request.target)).await
    };
    let answer = match answer {
        Ok(Ok(_)) if let Some(why) = unreadable => Err(anyhow::anyhow!("{why}")),
        Ok(answer) => answer,
        Err(_) => Err(anyhow::anyhow!("timed out after {timeout:?}")),
    };
    let seconds = if let Fetch::Chunked { .. } = request.fetch {
        active_seconds(&arrivals)
    } else {
        sent.elapsed().as_secs_f64()
    };
    let _ = events.send(Event::Done {
        request,
        answer,
        seconds,
        counted,
    });
}

/// Runs `plan` to the end of its scenario.
pub async fn run(plan: ViewersPlan) -> anyhow::Result<Report> {
    // One look first, so a wrong URL is one clear error rather than a run of failures.
    let preflight = Client::connect(&plan.target)
        .await
        .with_context(|| format!("cannot connect to {}", plan.url))?;
    let answer = preflight
        .get(&plan.path)
        .await
        .with_context(|| format!("GET {}", plan.url))?;
    if answer.status != 200 {
        bail!("{} answered {}", plan.url, answer.status);
    }
    let text =
        std::str::from_utf8(&answer.body).with_context(|| format!("{} is not text", plan.url))?;
    let variants = match plan.format {
        Format::Hls => {
            let multivariant = parse_multivariant(text)
                .with_context(|| format!("{} is not a multivariant playlist", plan.url))?;
            multivariant
                .variants
                .iter()
                .map(|v| describe_variant(v.height, v.bandwidth))
                .collect::<Vec<String>>()
        }
        Format::Dash => {
            let manifest =
                parse_mpd(text).with_context(|| format!("{} is not a DASH manifest", plan.url))?;
            manifest
                .periods
                .first()
                .and_then(|p| p.set(ContentKind::Video))
                .map(|set| {
                    set.representations
                        .iter()
                        .map(|r| describe_variant(r.height, r.bandwidth))
                        .collect()
                })
                .unwrap_or_default()
        }
    };
    if variants.is_empty() {
        bail!("{} lists no video rendition", plan.url);
    }
    drop(preflight);
    let plan = Arc::new(plan);
    let counters = Arc::new(Counters::default());
    let started = Instant::now();
    let total = plan.scenario.duration();
    let mut viewers: Vec<Running> = Vec::new();
    let mut active: Vec<usize> = Vec::new();
    let mut series: Vec<Second> = Vec::new();
    let mut latencies_by_second: Vec<Vec<f64>> = Vec::new();
    let mut last = (0u64, 0u64, 0u64, 0u32);
    let mut next_second = Duration::from_secs(1);
    let mut next_progress = plan.progress;
    let mut peak = 0u32;
    loop {
        let elapsed = started.elapsed();
        let ending = elapsed >= total;
        let want = if ending {
            0
        } else {
            plan.scenario.viewers_at(elapsed) as usize
        };
        while active.len() < want {
            let id = viewers.len();
            let stop = Arc::new(AtomicBool::new(false));
            let slot = Arc::new(Mutex::new(Now::default()));
            let viewer = Viewer {
                id,
                plan: Arc::clone(&plan),
                counters: Arc::clone(&counters),
                slot: Arc::clone(&slot),
                stop: Arc::clone(&stop),
            };
            viewers.push(Running(stop, slot, tokio::spawn(viewer.watch())));
            active.push(id);
        }
        while active.len() > want {
            if let Some(id) = active.pop() {
                viewers[id].0.store(true, Ordering::Relaxed);
            }
        }
        peak = peak.max(active.len() as u32);
        if elapsed >= next_second || ending {
            let mut second = Second {
                t: series.len() as u32 + 1,
                ..Second::default()
            };
            let mut now_latencies = Vec::new();
            for &id in &active {
                let now = *viewers[id].1.lock().unwrap_or_else(PoisonError::into_inner);
                if !now.joined {
                    continue;
                }
                second.viewers += 1;
                match now.state {
                    Some(State::Playing) => second.playing += 1,
                    Some(State::Stalled) => second.stalled += 1,
                    _ => {}
                }
                if let Some(v) = now.variant {
                    if second.variants.len() <= v {
                        second.variants.resize(v + 1, 0);
                    }
                    second.variants[v] += 1;
                }
                if let Some(l) = now.latency {
                    now_latencies.push(l);
                }
            }
            let totals = (
                counters.requests.load(Ordering::Relaxed),
                counters.errors.load(Ordering::Relaxed),
                counters.bytes.load(Ordering::Relaxed),
                counters.stalls.load(Ordering::Relaxed),
            );
            second.requests = totals.0 - last.0;
            second.errors = totals.1 - last.1;
            second.bytes = totals.2 - last.2;
            second.new_stalls = totals.3 - last.3;
            last = totals;
            let s = sorted(now_latencies.clone());
            second.latency_p50 = quantile(&s, 0.5);
            second.latency_p95 = quantile(&s, 0.95);
            latencies_by_second.push(now_latencies);
            if plan.progress > Duration::ZERO && (elapsed >= next_progress || ending) {
                eprintln!(
                    "[{:>4.0} s] viewers {:>5} (playing {}, stalled {}) | {} req/s | {:.1} Mbit/s | errors {} | stalls {} | latency p50 {} p95 {}",
                    elapsed.as_secs_f64(),
                    second.viewers,
                    second.playing,
                    second.stalled,
                    second.requests,
                    second.bytes as f64 * 8.0 / 1e6,
                    totals.1,
                    totals.3,
                    second
                        .latency_p50
                        .map_or("-".into(), |l| format!("{l:.2} s")),
                    second
                        .latency_p95
                        .map_or("-".into(), |l| format!("{l:.2} s")),
                );
                next_progress += plan.progress;
            }
            series.push(second);
            next_second += Duration::from_secs(1);
        }
        if ending {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut stats = Vec::with_capacity(viewers.len());
    for Running(_, _, handle) in viewers {
        stats.push(handle.await.unwrap_or_default());
    }
    let mut summary = Summary {
        scenario: plan.scenario.name.clone(),
        protocol: plan.target.protocol.label().to_owned(),
        url: plan.url.clone(),
        seconds: started.elapsed().as_secs_f64(),
        peak_viewers: peak,
        ..Summary::default()
    };
    let latencies = latencies_by_second.iter().flatten().copied().collect();
    report::summarise(&mut summary, &stats, latencies);
    report::judge(&mut summary, &plan.thresholds);
    let steps = steps::judge_steps(
        &steps::holds(&plan.scenario),
        &series,
        &latencies_by_second,
        &plan.thresholds,
    );
    Ok(Report {
        summary,
        variants,
        series,
        capacity: steps::capacity(&steps, |s| s.passed),
        capacity_ignoring_latency: steps::capacity(&steps, steps::Step::passed_ignoring_latency),
        steps,
    })
}

/// `720p 2.8 Mbit/s`.
fn describe_variant(height: Option<u32>, bandwidth: u64) -> String {
    let height = height.map_or("?".to_owned(), |h| format!("{h}p"));
    format!("{height} {:.1} Mbit/s", bandwidth as f64 / 1e6)
}

/// Builds the target for `url` over `protocol`.
pub fn target(
    url: &str,
    protocol: Protocol,
    ca: Option<&std::path::Path>,
    allow_remote: bool,
) -> anyhow::Result<(Target, String)> {
    let (tls, host, addr, path) = parse_url(url, allow_remote)?;
    if protocol != Protocol::H1 && !tls {
        bail!("HTTP/2 and HTTP/3 need an https:// URL");
    }
    let tls_config = match (tls, ca) {
        (false, _) => None,
        (true, Some(ca)) => Some(super::client::tls_config(
            ca,
            match protocol {
                Protocol::H1 => b"http/1.1",
                Protocol::H2 => b"h2",
                Protocol::H3 => b"h3",
            },
        )?),
        (true, None) => bail!("an https:// URL needs --ca (the certificate to trust)"),
    };
    Ok((
        Target {
            addr,
            host,
            tls,
            protocol,
            tls_config,
        },
        path,
    ))
}
