//! What every simulated player shares, no IO: the requests it makes and the answers it is
//! given ([`ViewerModel`], the one trait the shell drives), its tunables, its play head
//! ([`Playback`]: media playing in real time, stalls), its throughput estimate and rendition
//! choice ([`Throughput`], [`pick_variant`]), and the CMCD it sends.
//!
//! The HLS model ([`super::hls_player`]) and the DASH model ([`super::dash_player`]) build on it.

use bytes::Bytes;
use cascade_cmcd::{Cmcd, ObjectType, StreamType, StreamingFormat};

/// Tunables, defaults as hls.js's (dash.js's are close).
#[derive(Debug, Clone)]
pub struct PlayerConfig {
    /// CMCD session id.
    pub session_id: String,
    /// CMCD content id.
    pub content_id: String,
    /// Seconds of media needed to start, and to resume after a stall.
    pub resume_buffer: f64,
    /// Largest buffer ahead of the play head, seconds (VOD; live is held by the live edge).
    pub max_buffer: f64,
    /// Share of the estimate a higher variant may use.
    pub up_factor: f64,
    /// Share of the estimate the current variant may use before switching down.
    pub down_factor: f64,
    /// Seconds to wait before asking again after an error.
    pub retry_after: f64,
    /// The fastest an HLS viewer plays to catch up with its target latency (hls.js's
    /// `maxLiveSyncPlaybackRate`: 1.2 as the origin's player page sets it; hls.js's own
    /// default, 1, never speeds up). DASH viewers take theirs from the manifest.
    pub max_live_sync_rate: f64,
}

impl Default for PlayerConfig {
    fn default() -> Self {
        Self {
            session_id: String::new(),
            content_id: String::new(),
            resume_buffer: 0.3,
            max_buffer: 30.0,
            up_factor: 0.7,
            down_factor: 0.95,
            retry_after: 0.5,
            max_live_sync_rate: 1.2,
        }
    }
}

/// What a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fetch {
    /// The HLS multivariant playlist.
    Multivariant,
    /// A track's HLS media playlist (`blocking`: an LL-HLS blocking reload).
    Playlist {
        /// Whether the server holds it until the asked part exists.
        blocking: bool,
        /// The playlist of a variant being switched to.
        switch: bool,
    },
    /// The DASH manifest.
    Manifest,
    /// The server's clock (DASH `UTCTiming`).
    Clock,
    /// A track's init segment.
    Init,
    /// An HLS part or segment, read whole.
    Media {
        /// Media sequence number.
        msn: u64,
        /// Part index (`None`: the whole segment).
        part: Option<usize>,
        /// Asked for from the preload hint, before it existed.
        hinted: bool,
    },
    /// A DASH segment, read chunk by chunk as it arrives (the shell reports each complete
    /// CMAF chunk with [`ViewerModel::on_chunk`]).
    Chunked {
        /// `$Number$`.
        number: u64,
    },
}

/// One request to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// Track index (0 video, 1 audio); 0 for the multivariant playlist or manifest.
    pub track: usize,
    /// What it fetches.
    pub fetch: Fetch,
    /// Path and query to GET, CMCD included.
    pub target: String,
}

/// Where a viewer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Before the first frame.
    Starting,
    /// The play head moves.
    Playing,
    /// Waiting for media after playback began.
    Stalled,
    /// VOD (or a live stream that ended) played to the end.
    Ended,
}

/// What one viewer got.
#[derive(Debug, Clone, Default)]
pub struct ViewerStats {
    /// Seconds from joining to the first frame.
    pub startup: Option<f64>,
    /// Stalls after playback began.
    pub stalls: u32,
    /// Seconds stalled.
    pub stalled: f64,
    /// Seconds spent playing (wall time: media played faster or slower counts as the time
    /// it took).
    pub played: f64,
    /// Seconds spent playing per variant (index into the variants).
    pub played_by_variant: Vec<f64>,
    /// Rendition switches.
    pub switches: u32,
    /// Requests answered or failed (counted by the shell that sends them).
    pub requests: u64,
    /// Failed requests: a transport error, a status other than 200, or a body that did not
    /// read.
    pub errors: u64,
    /// Body bytes received.
    pub bytes: u64,
}

/// One simulated viewer as the shell drives it. Time is given, never read: `now` is seconds
/// since the viewer joined, `wall_ms` the wall clock (Unix ms).
pub trait ViewerModel: Send {
    /// What to send now. Each request is marked in flight until its answer comes back.
    fn next_requests(&mut self, now: f64) -> Vec<Request>;
    /// A 200 answer to `request`, its body whole, after `seconds` of transfer (for chunked
    /// requests, the seconds data was actually flowing); `age` is its `Age` header. `false`
    /// when the body does not read (the shell then counts an error and calls
    /// [`Self::on_error`]).
    fn on_answer(
        &mut self,
        request: &Request,
        body: &Bytes,
        age: f64,
        seconds: f64,
        now: f64,
    ) -> bool;
    /// A complete CMAF chunk of a [`Fetch::Chunked`] request arrived: media on `track` is
    /// now loaded up to `end` (ticks, the decode time after its last sample).
    fn on_chunk(&mut self, track: usize, end: u64);
    /// The init segment the shell needs to read `track`'s chunks, once loaded.
    fn init_bytes(&self, track: usize) -> Option<Bytes>;
    /// A request failed (transport error, or a status other than 200).
    fn on_error(&mut self, track: usize, fetch: Fetch, now: f64);
    /// Time passes to `now`: the play head moves through what is buffered.
    fn advance(&mut self, now: f64);
    /// Seconds until the model next needs the shell without an answer arriving, if ever.
    fn next_wakeup(&self, now: f64) -> Option<f64>;
    /// Where the viewer is.
    fn state(&self) -> State;
    /// What the viewer got so far.
    fn stats(&self) -> &ViewerStats;
    /// The variant playing (index), once known.
    fn variant(&self) -> Option<usize>;
    /// Live latency at `wall_ms`, seconds, while playing live.
    fn latency(&self, wall_ms: i64) -> Option<f64>;
    /// Seconds stalled so far, the stall in progress included.
    fn stalled_now(&self, now: f64) -> f64;
}

/// The play head: where it is on the media timeline (ms), whether it moves, and the stalls.
#[derive(Debug, Clone)]
pub struct Playback {
    /// Where the viewer is.
    pub state: State,
    /// Timeline position of the play head (ms), once a start is chosen.
    pub head: Option<i64>,
    /// The buffer ran dry since the last request was sent (CMCD `bs`).
    pub starved: bool,
    /// Media seconds played per second (1 unless a live player is catching up or slowing).
    pub rate: f64,
    carry_ms: f64,
    clock: f64,
    stall_began: f64,
}

impl Default for Playback {
    fn default() -> Self {
        Self {
            state: State::Starting,
            head: None,
            starved: false,
            rate: 1.0,
            carry_ms: 0.0,
            clock: 0.0,
            stall_began: 0.0,
        }
    }
}

impl Playback {
    /// Seconds buffered ahead of the play head when media is loaded up to `loaded_until`.
    pub fn buffer(&self, loaded_until: Option<i64>) -> f64 {
        match (self.head, loaded_until) {
            (Some(head), Some(end)) => ((end - head) as f64 / 1000.0).max(0.0),
            _ => 0.0,
        }
    }

    /// Time passes to `now`, with media loaded up to `loaded_until`, played at [`Self::rate`].
    /// Playback starts (or resumes) once `resume` seconds are buffered; running dry is a
    /// stall, or the end when `finished` says no more media will come. Time spent playing is
    /// credited to `variant`.
    pub fn advance(
        &mut self,
        now: f64,
        loaded_until: Option<i64>,
        resume: f64,
        finished: bool,
        variant: Option<usize>,
        stats: &mut ViewerStats,
    ) {
        let dt = (now - self.clock).max(0.0);
        self.clock = now;
        let (Some(head), Some(end)) = (self.head, loaded_until) else {
            return;
        };
        let buffered = (end - head) as f64 / 1000.0;
        match self.state {
            State::Playing => {
                let rate = self.rate.max(0.01);
                let media = (dt * rate).min(buffered.max(0.0));
                // The head is in whole ms; the fraction is carried so a rate a hair off 1
                // still moves it at that rate.
                let ms = media * 1000.0 + self.carry_ms;
                let whole = ms.floor();
                self.carry_ms = ms - whole;
                self.head = Some(head + whole as i64);
                let played = media / rate;
                stats.played += played;
                if let Some(slot) = variant.and_then(|v| stats.played_by_variant.get_mut(v)) {
                    *slot += played;
                }
                if played < dt - 1e-9 {
                    if finished {
                        self.state = State::Ended;
                    } else {
                        self.state = State::Stalled;
                        stats.stalls += 1;
                        self.stall_began = now - (dt - played);
                        self.starved = true;
                    }
                }
            }
            State::Starting | State::Stalled => {
                if buffered >= resume {
                    if self.state == State::Starting {
                        stats.startup = Some(now);
                    } else {
                        stats.stalled += now - self.stall_began;
                    }
                    self.state = State::Playing;
                }
            }
            State::Ended => {}
        }
    }

    /// Seconds stalled so far, the stall in progress included.
    pub fn stalled_now(&self, stats: &ViewerStats, now: f64) -> f64 {
        stats.stalled
            + if self.state == State::Stalled {
                (now - self.stall_began).max(0.0)
            } else {
                0.0
            }
    }
}

/// dash.js's live catch-up ("default" mode): the playback rate that steers a live viewer
/// back to its target latency, along a logistic curve from `1 + min` (ahead of the target)
/// to `1 + max` (behind it), with `bounds` = `(min, max)` as the manifest's
/// `ServiceDescription/PlaybackRate` allows (less 1). On a buffer at or under dash.js's
/// stall threshold (`thin`) it plays at 1x: speeding up there only stalls again.
pub fn dash_catch_up_rate(latency: f64, target: f64, bounds: (f64, f64), thin: bool) -> f64 {
    if thin {
        return 1.0;
    }
    let behind = latency - target;
    let span = if behind < 0.0 {
        bounds.0.abs()
    } else {
        bounds.1
    };
    1.0 - span + 2.0 * span / (1.0 + (-5.0 * behind).exp())
}

/// hls.js's live catch-up (`maxLiveSyncPlaybackRate`): a viewer more than 50 ms behind its
/// target latency, but less than the target plus a target duration behind it (further back
/// it is watching the past on purpose), and with more than a second buffered, plays faster along a logistic curve, in
/// steps of 0.05, up to `max_rate`. It never slows down.
pub fn hls_catch_up_rate(
    latency: f64,
    target: f64,
    target_duration: f64,
    buffer: f64,
    max_rate: f64,
) -> f64 {
    let behind = latency - target;
    if max_rate <= 1.0 || behind <= 0.05 || behind >= target + target_duration || buffer <= 1.0 {
        return 1.0;
    }
    let rate = (2.0 / (1.0 + (-0.75 * behind).exp()) * 20.0).round() / 20.0;
    rate.clamp(1.0, max_rate.min(2.0))
}

/// Exponentially weighted moving average over seconds of samples, as hls.js's estimator.
#[derive(Debug, Clone)]
struct Ewma {
    half_life: f64,
    estimate: f64,
    weight: f64,
}

impl Ewma {
    fn new(half_life: f64) -> Self {
        Self {
            half_life,
            estimate: 0.0,
            weight: 0.0,
        }
    }

    fn sample(&mut self, seconds: f64, value: f64) {
        let alpha = 0.5f64.powf(seconds / self.half_life);
        self.estimate = value * (1.0 - alpha) + alpha * self.estimate;
        self.weight += seconds;
    }

    fn value(&self) -> Option<f64> {
        (self.weight > 0.0).then(|| {
            let zero_factor = 1.0 - 0.5f64.powf(self.weight / self.half_life);
            self.estimate / zero_factor
        })
    }
}

/// Throughput estimate from media downloads: a fast and a slow moving average (3 s and 9 s
/// half-lives, as hls.js), the lower of the two.
#[derive(Debug, Clone)]
pub struct Throughput {
    fast: Ewma,
    slow: Ewma,
}

impl Default for Throughput {
    fn default() -> Self {
        Self {
            fast: Ewma::new(3.0),
            slow: Ewma::new(9.0),
        }
    }
}

impl Throughput {
    /// A download of `bits` in `seconds`, weighted by `weight` seconds (of media).
    pub fn sample(&mut self, weight: f64, bits: f64, seconds: f64) {
        if seconds > 0.0 && bits > 0.0 {
            let weight = weight.max(0.05);
            self.fast.sample(weight, bits / seconds);
            self.slow.sample(weight, bits / seconds);
        }
    }

    /// Bit/s, once sampled.
    pub fn estimate(&self) -> Option<f64> {
        match (self.fast.value(), self.slow.value()) {
            (Some(f), Some(s)) => Some(f.min(s)),
            (f, s) => f.or(s),
        }
    }
}

/// The variant to play given `bandwidths` (bit/s, by index) and an `estimate`: the highest
/// under `up` of it, staying on `current` while it stays under `down` of it, and the lowest
/// when none fits.
pub fn pick_variant(
    bandwidths: &[u64],
    current: usize,
    estimate: f64,
    up: f64,
    down: f64,
) -> usize {
    let fits = |v: usize, factor: f64| {
        bandwidths
            .get(v)
            .is_some_and(|b| (*b as f64) <= estimate * factor)
    };
    let mut order: Vec<usize> = (0..bandwidths.len()).collect();
    order.sort_by_key(|&v| std::cmp::Reverse(bandwidths[v]));
    let best_up = order.iter().copied().find(|&v| fits(v, up));
    let lowest = order.last().copied().unwrap_or(current);
    if fits(current, down) {
        match best_up {
            Some(v) if bandwidths[v] > bandwidths.get(current).copied().unwrap_or(0) => v,
            _ => current,
        }
    } else {
        best_up.unwrap_or(lowest)
    }
}

/// What a player knows when it writes a request's CMCD.
#[derive(Debug, Clone, Copy)]
pub struct CmcdContext<'a> {
    /// Session and content ids.
    pub config: &'a PlayerConfig,
    /// HLS or DASH.
    pub format: StreamingFormat,
    /// Live or VOD.
    pub live: bool,
    /// Seconds buffered.
    pub buffer: f64,
    /// Throughput estimate, bit/s.
    pub estimate: Option<f64>,
    /// The highest variant's bandwidth, bit/s.
    pub top_bitrate: Option<u64>,
    /// Before the first frame.
    pub startup: bool,
    /// The buffer ran dry since the last request.
    pub starved: bool,
}

impl CmcdContext<'_> {
    /// The CMCD query for an `object` of `duration` seconds at `bitrate` bit/s.
    pub fn query(&self, object: ObjectType, duration: Option<f64>, bitrate: Option<u64>) -> String {
        let config = self.config;
        Cmcd {
            session_id: Some(config.session_id.clone()).filter(|s| !s.is_empty()),
            content_id: Some(config.content_id.clone()).filter(|s| !s.is_empty()),
            object_type: Some(object),
            streaming_format: Some(self.format),
            stream_type: Some(if self.live {
                StreamType::Live
            } else {
                StreamType::Vod
            }),
            buffer_length_ms: (object != ObjectType::Manifest)
                .then(|| (self.buffer * 10.0).round() as u64 * 100),
            measured_throughput_kbps: self.estimate.map(|e| (e / 100_000.0).round() as u64 * 100),
            object_duration_ms: duration.map(|d| (d * 1000.0).round() as u64),
            bitrate_kbps: bitrate.map(|b| b / 1000),
            top_bitrate_kbps: self.top_bitrate.map(|b| b / 1000),
            startup: self.startup,
            buffer_starvation: self.starved,
            ..Cmcd::default()
        }
        .to_query()
    }
}

/// `path` with `query` appended.
pub fn with_query(path: &str, query: &str) -> String {
    let sep = if path.contains('?') { '&' } else { '?' };
    format!("{path}{sep}{query}")
}

/// Resolves `uri` against the path of the playlist or manifest that named it
/// (`/a/b/master.m3u8`).
pub fn resolve(base: &str, uri: &str) -> String {
    if let Some(rest) = uri
        .strip_prefix("http://")
        .or_else(|| uri.strip_prefix("https://"))
    {
        return rest
            .find('/')
            .map_or("/".to_owned(), |i| rest[i..].to_owned());
    }
    if uri.starts_with('/') {
        return uri.to_owned();
    }
    let base = base.split('?').next().unwrap_or(base);
    let mut parts: Vec<&str> = base.split('/').collect();
    parts.pop();
    for piece in uri.split('/') {
        match piece {
            ".." => {
                if parts.len() > 1 {
                    parts.pop();
                }
            }
            "." => {}
            p => parts.push(p),
        }
    }
    parts.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_play_head_starts_stalls_and_resumes_with_the_buffer() {
        let mut p = Playback {
            head: Some(0),
            ..Playback::default()
        };
        let mut stats = ViewerStats {
            played_by_variant: vec![0.0],
            ..ViewerStats::default()
        };
        p.advance(0.5, Some(200), 0.3, false, Some(0), &mut stats);
        assert_eq!(
            p.state,
            State::Starting,
            "0.2 s is under the 0.3 s to start"
        );
        p.advance(1.0, Some(1000), 0.3, false, Some(0), &mut stats);
        assert_eq!((p.state, stats.startup), (State::Playing, Some(1.0)));
        p.advance(2.5, Some(1000), 0.3, false, Some(0), &mut stats);
        assert_eq!(p.state, State::Stalled);
        assert_eq!((stats.stalls, stats.played), (1, 1.0));
        assert_eq!(stats.played_by_variant, [1.0]);
        assert!(p.starved);
        assert_eq!(p.stalled_now(&stats, 3.0), 1.0, "dry since 2.0 s");
        p.advance(3.0, Some(1500), 0.3, false, Some(0), &mut stats);
        assert_eq!((p.state, stats.stalled), (State::Playing, 1.0));
        p.advance(4.0, Some(1500), 0.3, true, Some(0), &mut stats);
        assert_eq!(
            (p.state, stats.stalls),
            (State::Ended, 1),
            "the end is no stall"
        );
    }

    #[test]
    fn a_faster_rate_moves_the_head_faster_and_runs_dry_sooner_in_wall_time() {
        let mut p = Playback {
            head: Some(0),
            state: State::Playing,
            rate: 1.04,
            ..Playback::default()
        };
        let mut stats = ViewerStats {
            played_by_variant: vec![0.0],
            ..ViewerStats::default()
        };
        p.advance(1.0, Some(2000), 0.3, false, Some(0), &mut stats);
        assert_eq!(p.head, Some(1040), "1.04 s of media in a second");
        assert_eq!(stats.played, 1.0, "played counts wall time");
        p.advance(2.0, Some(2000), 0.3, false, Some(0), &mut stats);
        assert_eq!((p.state, p.head), (State::Stalled, Some(2000)));
        let dry_at = 1.0 + 0.96 / 1.04;
        assert!((stats.played - dry_at).abs() < 1e-9, "{}", stats.played);
        assert!((p.stalled_now(&stats, 2.0) - (2.0 - dry_at)).abs() < 1e-9);
    }

    #[test]
    fn dash_catch_up_steers_toward_the_target_within_the_manifests_bounds() {
        let bounds = (-0.04, 0.04);
        let on_target = dash_catch_up_rate(1.5, 1.5, bounds, false);
        assert!((on_target - 1.0).abs() < 1e-12, "{on_target}");
        let behind = dash_catch_up_rate(2.0, 1.5, bounds, false);
        assert!(
            behind > 1.03 && behind < 1.04,
            "half a second behind: {behind}"
        );
        let far_behind = dash_catch_up_rate(10.0, 1.5, bounds, false);
        assert!((far_behind - 1.04).abs() < 1e-6, "{far_behind}");
        let ahead = dash_catch_up_rate(1.0, 1.5, bounds, false);
        assert!(ahead < 0.97 && ahead > 0.96, "half a second ahead: {ahead}");
        assert_eq!(
            dash_catch_up_rate(2.0, 1.5, bounds, true),
            1.0,
            "no speeding up on a thin buffer"
        );
        assert_eq!(dash_catch_up_rate(1.0, 1.5, bounds, true), 1.0);
    }

    #[test]
    fn hls_catch_up_speeds_up_in_steps_only_near_the_live_edge_with_buffer() {
        // Target 1.5 s, 2 s segments, up to 1.2x as the player page configures hls.js.
        assert_eq!(hls_catch_up_rate(1.5, 1.5, 2.0, 2.0, 1.2), 1.0);
        assert_eq!(
            hls_catch_up_rate(1.0, 1.5, 2.0, 2.0, 1.2),
            1.0,
            "never slower"
        );
        assert_eq!(hls_catch_up_rate(2.0, 1.5, 2.0, 2.0, 1.2), 1.2);
        assert_eq!(hls_catch_up_rate(1.6, 1.5, 2.0, 2.0, 1.2), 1.05);
        assert_eq!(
            hls_catch_up_rate(2.0, 1.5, 2.0, 0.8, 1.2),
            1.0,
            "a second buffered"
        );
        assert_eq!(
            hls_catch_up_rate(5.5, 1.5, 2.0, 2.0, 1.2),
            1.0,
            "watching the past"
        );
        assert_eq!(
            hls_catch_up_rate(2.0, 1.5, 2.0, 2.0, 1.0),
            1.0,
            "hls.js's default"
        );
    }

    #[test]
    fn the_variant_follows_the_estimate_with_headroom() {
        let bandwidths = [3_000_000, 1_000_000, 400_000];
        assert_eq!(pick_variant(&bandwidths, 1, 10e6, 0.7, 0.95), 0);
        assert_eq!(
            pick_variant(&bandwidths, 1, 2e6, 0.7, 0.95),
            1,
            "3 M > 0.7 × 2 M"
        );
        assert_eq!(
            pick_variant(&bandwidths, 0, 3.2e6, 0.7, 0.95),
            0,
            "stays under 95 %"
        );
        assert_eq!(pick_variant(&bandwidths, 0, 2.5e6, 0.7, 0.95), 1);
        assert_eq!(
            pick_variant(&bandwidths, 1, 0.1e6, 0.7, 0.95),
            2,
            "nothing fits: lowest"
        );
        let mut t = Throughput::default();
        assert_eq!(t.estimate(), None);
        t.sample(1.0, 8e6, 1.0);
        t.sample(1.0, 0.0, 0.0);
        assert!((t.estimate().unwrap() - 8e6).abs() < 1.0);
    }
}
