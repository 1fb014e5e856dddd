//! One simulated DASH viewer's decisions, no IO: what a low-latency DASH player (modelled on
//! dash.js in its low-latency mode) asks for and when, and what a viewer sees as a result. The
//! shell drives it through [`ViewerModel`].
//!
//! - **Start**: the manifest, then the server's clock (`UTCTiming`, once) so availability and
//!   latency are reckoned on the server's time. A live stream starts its target latency
//!   (`ServiceDescription`'s, else `suggestedPresentationDelay`, else three segments) behind
//!   the server's now, loading from the start of the segment that holds that point; a static
//!   manifest (VOD) starts at its beginning. The first video Representation is the highest at
//!   or under 1 Mbit/s, as dash.js starts without an estimate.
//! - **Reloads**: the manifest every `minimumUpdatePeriod`.
//! - **Media**: per track one segment at a time, in order, each asked for once it is
//!   available: its end less `availabilityTimeOffset`, on the server's clock. A segment asked
//!   for early arrives in CMAF chunks as the packager makes them; each chunk counts in the
//!   buffer as it arrives ([`ViewerModel::on_chunk`]).
//! - **Buffer**: media plays in real time ([`Playback`]); a live stream that ends
//!   (`mediaPresentationDuration`, no more updates) plays out without a stall.
//! - **ABR**: throughput over the time data was flowing ([`active_seconds`]: waiting for the
//!   packager does not count, as in dash.js's low-latency estimate) feeds
//!   [`super::model::pick_variant`]; a switch takes effect at the next segment, after the new
//!   Representation's init segment.
//! - **Periods**: a track moves to the Period its next media falls in, reloading its init.
//! - **Catch-up** (dash.js's default mode): a live viewer off its target latency plays
//!   faster or slower along a logistic curve, within the manifest's `PlaybackRate` bounds
//!   (±0.5 without them); at 1x on a buffer of 0.3 s or less, dash.js's low-latency stall
//!   threshold ([`super::model::dash_catch_up_rate`]).

use bytes::Bytes;
use cascade_cmcd::{ObjectType, StreamingFormat};

use super::model::{
    CmcdContext, Fetch, Playback, PlayerConfig, Request, State, Throughput, ViewerModel,
    ViewerStats, dash_catch_up_rate, pick_variant, resolve, with_query,
};
use super::mpd::{ContentKind, Manifest, Representation, Template, parse_mpd};
use super::playlist::parse_date_time;

/// The bitrate dash.js starts at without a throughput estimate, bit/s.
const START_BITRATE: u64 = 1_000_000;
/// A gap between two pieces of a body longer than this is waiting for the packager, not
/// transfer (seconds).
const BURST_GAP: f64 = 0.02;

/// The seconds data was flowing in a body whose pieces arrived at `arrivals` (seconds after
/// the request was sent, in order): the time to the first piece and each gap between pieces,
/// counting only those under [`BURST_GAP`]. At least a millisecond.
pub fn active_seconds(arrivals: &[f64]) -> f64 {
    let mut active = 0.0;
    let mut last = 0.0;
    for &t in arrivals {
        let gap = t - last;
        if gap < BURST_GAP {
            active += gap.max(0.0);
        }
        last = t;
    }
    active.max(0.001)
}

/// A segment in flight and how to place its chunks on the timeline.
#[derive(Debug, Clone, Copy)]
struct Loading {
    number: u64,
    period_start: f64,
    timescale: u32,
    presentation_time_offset: u64,
    /// Its duration as announced, seconds.
    duration: f64,
    /// Chunks reported so far.
    chunks: u32,
}

impl Loading {
    fn ms(&self, ticks: u64) -> i64 {
        let seconds = self.period_start
            + (ticks as f64 - self.presentation_time_offset as f64) / f64::from(self.timescale);
        (seconds * 1000.0).round() as i64
    }
}

#[derive(Debug, Clone)]
struct Track {
    kind: ContentKind,
    object: ObjectType,
    /// The Period (id) and the Representation (index in its set) playing.
    period: String,
    representation: usize,
    /// The Representation to move to at the next segment.
    wanted: Option<usize>,
    /// The init segment loaded (its URL and bytes), and the one being loaded.
    init: Option<(String, Bytes)>,
    init_pending: Option<String>,
    /// The next segment to load.
    next: u64,
    loading: Option<Loading>,
    /// Timeline position (ms) up to which media is loaded.
    loaded_until: i64,
    retry_at: f64,
    /// When (seconds since joining) the next segment becomes available, while waiting for it.
    available_at: Option<f64>,
}

/// One simulated DASH viewer.
#[derive(Debug, Clone)]
pub struct DashPlayer {
    config: PlayerConfig,
    manifest_path: String,
    joined_wall_ms: i64,
    manifest: Option<Manifest>,
    manifest_pending: bool,
    manifest_loaded_at: f64,
    manifest_retry: f64,
    /// Server clock minus ours, ms, once known (0 when the server gives no clock).
    clock_offset_ms: Option<i64>,
    clock_pending: bool,
    tracks: Vec<Track>,
    playback: Playback,
    throughput: Throughput,
    stats: ViewerStats,
}

impl DashPlayer {
    /// A viewer about to open `manifest_path`, joining at `joined_wall_ms` (Unix ms).
    pub fn new(config: PlayerConfig, manifest_path: &str, joined_wall_ms: i64) -> Self {
        Self {
            config,
            manifest_path: manifest_path.to_owned(),
            joined_wall_ms,
            manifest: None,
            manifest_pending: false,
            manifest_loaded_at: f64::NEG_INFINITY,
            manifest_retry: 0.0,
            clock_offset_ms: None,
            clock_pending: false,
            tracks: Vec::new(),
            playback: Playback::default(),
            throughput: Throughput::default(),
            stats: ViewerStats::default(),
        }
    }

    /// The server's clock at `now`, Unix ms.
    fn server_ms(&self, now: f64) -> i64 {
        self.joined_wall_ms + (now * 1000.0).round() as i64 + self.clock_offset_ms.unwrap_or(0)
    }

    /// Whether the manifest is still updated (a live stream not yet ended).
    fn updating(&self) -> bool {
        self.manifest
            .as_ref()
            .is_some_and(|m| m.dynamic && m.minimum_update_period.is_some())
    }

    fn live(&self) -> bool {
        self.manifest.as_ref().is_none_or(|m| m.dynamic)
    }

    fn loaded_until(&self) -> Option<i64> {
        self.tracks.iter().map(|t| t.loaded_until).min()
    }

    fn buffer(&self) -> f64 {
        self.playback.buffer(self.loaded_until())
    }

    fn representation(&self, track: &Track) -> Option<&Representation> {
        self.manifest
            .as_ref()?
            .periods
            .iter()
            .find(|p| p.id == track.period)?
            .set(track.kind)?
            .representations
            .get(track.representation)
    }

    fn video_bandwidths(&self) -> Vec<u64> {
        let Some(video) = self.tracks.first() else {
            return Vec::new();
        };
        self.manifest
            .as_ref()
            .and_then(|m| m.periods.iter().find(|p| p.id == video.period))
            .and_then(|p| p.set(video.kind))
            .map(|s| s.representations.iter().map(|r| r.bandwidth).collect())
            .unwrap_or_default()
    }

    fn cmcd(&self, object: ObjectType, duration: Option<f64>, bitrate: Option<u64>) -> String {
        CmcdContext {
            config: &self.config,
            format: StreamingFormat::Dash,
            live: self.live(),
            buffer: self.buffer(),
            estimate: self.throughput.estimate(),
            top_bitrate: self.video_bandwidths().into_iter().max(),
            startup: self.playback.state == State::Starting,
            starved: self.playback.starved,
        }
        .query(object, duration, bitrate)
    }

    /// Sets the playback rate that steers a live viewer toward its target latency, as
    /// dash.js's catch-up does, within the manifest's `PlaybackRate` bounds (dash.js's own
    /// ±0.5 without them). A stream that ended has no live edge to steer by.
    fn steer(&mut self, now: f64) {
        let Some(m) = self.manifest.as_ref().filter(|_| self.updating()) else {
            self.playback.rate = 1.0;
            return;
        };
        let (State::Playing, Some(head)) = (self.playback.state, self.playback.head) else {
            self.playback.rate = 1.0;
            return;
        };
        let target = live_delay(m);
        let latency = (self.server_ms(now) - m.availability_start_ms - head) as f64 / 1000.0;
        let bounds = m
            .playback_rate
            .map_or((-0.5, 0.5), |(slow, fast)| (slow - 1.0, fast - 1.0));
        let thin = self.buffer() <= STALL_THRESHOLD;
        self.playback.rate = dash_catch_up_rate(latency, target, bounds, thin);
    }

    /// Chooses where to start once the manifest and the clock are known.
    fn start(&mut self, now: f64) {
        let Some(m) = &self.manifest else {
            return;
        };
        let time = if m.dynamic {
            (self.server_ms(now) - m.availability_start_ms) as f64 / 1000.0 - live_delay(m)
        } else {
            m.periods.first().map_or(0.0, |p| p.start)
        };
        let Some(period) = m.period_at(time) else {
            return;
        };
        let mut tracks = Vec::new();
        for (kind, object) in [
            (ContentKind::Video, ObjectType::Video),
            (ContentKind::Audio, ObjectType::Audio),
        ] {
            let Some(set) = period.set(kind).filter(|s| !s.representations.is_empty()) else {
                continue;
            };
            let representation = if kind == ContentKind::Video {
                let bandwidths: Vec<u64> =
                    set.representations.iter().map(|r| r.bandwidth).collect();
                start_representation(&bandwidths)
            } else {
                0
            };
            let template = &set.representations[representation].template;
            let Some(number) = template.number_at(period.start, time) else {
                continue;
            };
            let Some(segment) = template.segment(number) else {
                continue;
            };
            tracks.push(Track {
                kind,
                object,
                period: period.id.clone(),
                representation,
                wanted: None,
                init: None,
                init_pending: None,
                next: number,
                loading: None,
                loaded_until: (template.seconds(period.start, segment.start) * 1000.0).round()
                    as i64,
                retry_at: 0.0,
                available_at: None,
            });
        }
        let Some(video) = tracks.first() else {
            return;
        };
        self.playback.head = Some(((time * 1000.0).round() as i64).max(video.loaded_until));
        self.stats.played_by_variant = vec![
            0.0;
            period
                .set(video.kind)
                .map_or(0, |s| s.representations.len())
        ];
        self.tracks = tracks;
    }

    fn manifest_request(&mut self, now: f64) -> Option<Request> {
        if self.manifest_pending || now < self.manifest_retry {
            return None;
        }
        let due = match &self.manifest {
            None => true,
            Some(m) => {
                self.updating()
                    && now - self.manifest_loaded_at >= m.minimum_update_period.unwrap_or(0.0)
            }
        };
        if !due {
            return None;
        }
        self.manifest_pending = true;
        Some(Request {
            track: 0,
            fetch: Fetch::Manifest,
            target: with_query(
                &self.manifest_path,
                &self.cmcd(ObjectType::Manifest, None, None),
            ),
        })
    }

    fn clock_request(&mut self) -> Option<Request> {
        if self.clock_offset_ms.is_some() || self.clock_pending {
            return None;
        }
        let url = self.manifest.as_ref()?.utc_timing.clone();
        let Some(url) = url else {
            self.clock_offset_ms = Some(0);
            return None;
        };
        self.clock_pending = true;
        Some(Request {
            track: 0,
            fetch: Fetch::Clock,
            target: resolve(&self.manifest_path, &url),
        })
    }

    /// Moves `index` to the Period its next media falls in, and to the Representation it
    /// wants; `None` when the manifest has nothing for it.
    fn settle_track(&mut self, index: usize) -> Option<()> {
        let m = self.manifest.as_ref()?;
        let track = &self.tracks[index];
        let at = track.loaded_until as f64 / 1000.0 + 0.001;
        let period = m.period_at(at)?;
        let moved = period.id != track.period;
        let set = period.set(track.kind)?;
        let current = self
            .representation(track)
            .map(|r| r.id.clone())
            .unwrap_or_default();
        let representation = match (track.wanted, moved) {
            (Some(w), false) => w,
            (_, true) => set
                .representations
                .iter()
                .position(|r| r.id == current)
                .unwrap_or(track.representation),
            (None, false) => track.representation,
        }
        .min(set.representations.len().checked_sub(1)?);
        if moved || representation != track.representation {
            let next = set.representations[representation]
                .template
                .number_at(period.start, at)?;
            let switched = !moved && representation != track.representation;
            let period_id = period.id.clone();
            let track = &mut self.tracks[index];
            track.period = period_id;
            track.representation = representation;
            track.next = next;
            if switched {
                self.stats.switches += 1;
            }
        }
        self.tracks[index].wanted = None;
        Some(())
    }

    fn init_request(&mut self, index: usize) -> Option<Request> {
        let track = &self.tracks[index];
        let r = self.representation(track)?;
        let url = resolve(&self.manifest_path, &r.template.init_url(r)?);
        if track.init.as_ref().is_some_and(|(u, _)| *u == url) || track.init_pending.is_some() {
            return None;
        }
        let target = with_query(&url, &self.cmcd(ObjectType::Init, None, None));
        self.tracks[index].init_pending = Some(url);
        Some(Request {
            track: index,
            fetch: Fetch::Init,
            target,
        })
    }

    fn media_request(&mut self, index: usize, now: f64) -> Option<Request> {
        let track = &self.tracks[index];
        if track.loading.is_some() || track.init_pending.is_some() {
            return None;
        }
        if !self.live() && self.buffer() >= self.config.max_buffer {
            return None;
        }
        let m = self.manifest.as_ref()?;
        let period = m.periods.iter().find(|p| p.id == track.period)?;
        let r = self.representation(track)?;
        let init = r
            .template
            .init_url(r)
            .map(|u| resolve(&self.manifest_path, &u));
        if init.is_some() && track.init.as_ref().map(|(u, _)| u) != init.as_ref() {
            return None;
        }
        let template: &Template = &r.template;
        let first = template
            .timeline
            .first()
            .map_or(template.start_number, |s| s.number);
        let number = track.next.max(first);
        let segment = template.segment(number)?;
        let end = template.seconds(period.start, segment.start + segment.duration);
        if m.dynamic {
            let available_ms = m.availability_start_ms
                + ((end - template.availability_offset) * 1000.0).round() as i64;
            let wait = (available_ms - self.server_ms(now)) as f64 / 1000.0;
            if wait > 0.0 {
                self.tracks[index].available_at = Some(now + wait);
                return None;
            }
        }
        let duration = segment.duration as f64 / f64::from(template.timescale);
        let url = resolve(&self.manifest_path, &template.media_url(r, segment));
        let loading = Loading {
            number,
            period_start: period.start,
            timescale: template.timescale,
            presentation_time_offset: template.presentation_time_offset,
            duration,
            chunks: 0,
        };
        let object = track.object;
        let bitrate = (object == ObjectType::Video).then_some(r.bandwidth);
        let target = with_query(&url, &self.cmcd(object, Some(duration), bitrate));
        let track = &mut self.tracks[index];
        track.available_at = None;
        track.loading = Some(loading);
        Some(Request {
            track: index,
            fetch: Fetch::Chunked { number },
            target,
        })
    }

    /// Every track has loaded the last segment of a presentation that will not grow.
    fn all_loaded(&self) -> bool {
        !self.updating()
            && !self.tracks.is_empty()
            && self.tracks.iter().all(|t| {
                t.loading.is_none()
                    && self
                        .representation(t)
                        .is_some_and(|r| r.template.segment(t.next).is_none())
            })
    }

    fn choose_variant(&mut self) {
        let Some(estimate) = self.throughput.estimate() else {
            return;
        };
        let Some(video) = self.tracks.first() else {
            return;
        };
        let wanted = pick_variant(
            &self.video_bandwidths(),
            video.representation,
            estimate,
            self.config.up_factor,
            self.config.down_factor,
        );
        if let Some(video) = self.tracks.first_mut() {
            video.wanted = (wanted != video.representation).then_some(wanted);
        }
    }
}

/// dash.js's low-latency stall threshold, seconds: a buffer at or under it is empty.
const STALL_THRESHOLD: f64 = 0.3;

/// How far behind the server's clock a live viewer aims to play, seconds: the manifest's
/// latency target, else its suggested delay, else three segments.
fn live_delay(m: &Manifest) -> f64 {
    m.target_latency
        .or(m.suggested_delay)
        .unwrap_or_else(|| 3.0 * first_segment_seconds(m).unwrap_or(2.0))
}

fn first_segment_seconds(m: &Manifest) -> Option<f64> {
    let r = m.periods.first()?.sets.first()?.representations.first()?;
    let t = &r.template;
    let d = t.timeline.first().map(|s| s.duration).or(t.duration)?;
    Some(d as f64 / f64::from(t.timescale))
}

/// The highest bandwidth at or under [`START_BITRATE`], else the lowest.
fn start_representation(bandwidths: &[u64]) -> usize {
    let under = (0..bandwidths.len())
        .filter(|&i| bandwidths[i] <= START_BITRATE)
        .max_by_key(|&i| bandwidths[i]);
    under
        .or_else(|| (0..bandwidths.len()).min_by_key(|&i| bandwidths[i]))
        .unwrap_or(0)
}

impl ViewerModel for DashPlayer {
    fn next_requests(&mut self, now: f64) -> Vec<Request> {
        let mut out: Vec<Request> = self.manifest_request(now).into_iter().collect();
        if self.manifest.is_none() {
            return out;
        }
        out.extend(self.clock_request());
        if self.clock_offset_ms.is_none() {
            return out;
        }
        if self.playback.head.is_none() {
            self.start(now);
        }
        for index in 0..self.tracks.len() {
            if now < self.tracks[index].retry_at {
                continue;
            }
            if self.tracks[index].loading.is_none() && self.settle_track(index).is_none() {
                continue;
            }
            out.extend(self.init_request(index));
            out.extend(self.media_request(index, now));
        }
        if out.iter().any(|r| r.fetch != Fetch::Manifest) {
            self.playback.starved = false;
        }
        out
    }

    fn on_answer(
        &mut self,
        request: &Request,
        body: &Bytes,
        _age: f64,
        seconds: f64,
        now: f64,
    ) -> bool {
        let text = || std::str::from_utf8(body).ok();
        match request.fetch {
            Fetch::Manifest => {
                self.manifest_pending = false;
                let Some(Ok(manifest)) = text().map(parse_mpd) else {
                    return false;
                };
                self.manifest = Some(manifest);
                self.manifest_loaded_at = now;
                true
            }
            Fetch::Clock => {
                self.clock_pending = false;
                let Some(server) = text().and_then(parse_date_time) else {
                    return false;
                };
                let ours = self.joined_wall_ms + (now * 1000.0).round() as i64;
                self.clock_offset_ms = Some(server - ours);
                true
            }
            Fetch::Init => {
                let Some(track) = self.tracks.get_mut(request.track) else {
                    return true;
                };
                if let Some(url) = track.init_pending.take() {
                    track.init = Some((url, body.clone()));
                }
                true
            }
            Fetch::Chunked { number } => {
                let Some(track) = self.tracks.get_mut(request.track) else {
                    return true;
                };
                let Some(loading) = track.loading.take().filter(|l| l.number == number) else {
                    return true;
                };
                if loading.chunks == 0 {
                    // Not a CMAF segment the shell could read.
                    track.loading = Some(loading);
                    return false;
                }
                track.next = number + 1;
                if request.track == 0 {
                    self.throughput
                        .sample(loading.duration, body.len() as f64 * 8.0, seconds);
                    self.choose_variant();
                }
                true
            }
            Fetch::Multivariant | Fetch::Playlist { .. } | Fetch::Media { .. } => false,
        }
    }

    fn on_chunk(&mut self, track: usize, end: u64) {
        if let Some(track) = self.tracks.get_mut(track)
            && let Some(loading) = &mut track.loading
        {
            loading.chunks += 1;
            track.loaded_until = track.loaded_until.max(loading.ms(end));
        }
    }

    fn init_bytes(&self, track: usize) -> Option<Bytes> {
        self.tracks
            .get(track)?
            .init
            .as_ref()
            .map(|(_, b)| b.clone())
    }

    fn on_error(&mut self, track: usize, fetch: Fetch, now: f64) {
        let retry = now + self.config.retry_after;
        match fetch {
            Fetch::Manifest => {
                self.manifest_pending = false;
                self.manifest_retry = retry;
            }
            // As dash.js: without the server's clock, its own.
            Fetch::Clock => {
                self.clock_pending = false;
                self.clock_offset_ms = Some(0);
            }
            Fetch::Init | Fetch::Chunked { .. } => {
                if let Some(t) = self.tracks.get_mut(track) {
                    t.init_pending = None;
                    t.loading = None;
                    t.retry_at = retry;
                }
            }
            Fetch::Multivariant | Fetch::Playlist { .. } | Fetch::Media { .. } => {}
        }
    }

    fn advance(&mut self, now: f64) {
        let loaded = self.loaded_until();
        let finished = self.all_loaded();
        let variant = self.variant();
        self.playback.advance(
            now,
            loaded,
            self.config.resume_buffer,
            finished,
            variant,
            &mut self.stats,
        );
        self.steer(now);
    }

    fn next_wakeup(&self, now: f64) -> Option<f64> {
        let mut next: Option<f64> = None;
        let mut at = |t: f64| next = Some(next.map_or(t, |n: f64| n.min(t)));
        if !self.manifest_pending {
            match &self.manifest {
                None => at(self.manifest_retry),
                Some(m) if self.updating() => at((self.manifest_loaded_at
                    + m.minimum_update_period.unwrap_or(0.0))
                .max(self.manifest_retry)),
                Some(_) => {}
            }
        }
        for t in &self.tracks {
            if t.retry_at > now {
                at(t.retry_at);
            }
            if let Some(a) = t.available_at {
                at(a);
            }
        }
        next.map(|t| (t - now).max(0.0))
    }

    fn state(&self) -> State {
        self.playback.state
    }

    fn stats(&self) -> &ViewerStats {
        &self.stats
    }

    fn variant(&self) -> Option<usize> {
        self.tracks.first().map(|t| t.representation)
    }

    fn latency(&self, wall_ms: i64) -> Option<f64> {
        let m = self.manifest.as_ref()?;
        if !m.dynamic || self.playback.state != State::Playing {
            return None;
        }
        let server = wall_ms + self.clock_offset_ms.unwrap_or(0);
        Some((server - m.availability_start_ms - self.playback.head?) as f64 / 1000.0)
    }

    fn stalled_now(&self, now: f64) -> f64 {
        self.playback.stalled_now(&self.stats, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::viewers::playlist::parse_date_time;

    /// Our clock when the viewer joins: a minute after the stream's clock started.
    fn joined() -> i64 {
        parse_date_time("2026-12-07T10:01:00Z").unwrap()
    }

    /// A live LL-DASH manifest (2 s segments, 0.5 s parts: `availabilityTimeOffset` 1.5)
    /// listing segments `first..=last`, segment `n` covering `2n..2n+2` s; with
    /// `ended`, it is the last manifest of a stream that stopped.
    fn live(first: u64, last: u64, ended: bool) -> String {
        let count = last - first;
        let timeline = |ticks: u64| {
            format!(
                "<SegmentTimeline><S t=\"{}\" d=\"{}\" r=\"{count}\"/></SegmentTimeline>",
                first * 2 * ticks,
                2 * ticks
            )
        };
        let update = if ended {
            format!(" mediaPresentationDuration=\"PT{}S\"", (last + 1) * 2)
        } else {
            " minimumUpdatePeriod=\"PT0.5S\"".to_owned()
        };
        let template = |ticks: u64| {
            format!(
                "<SegmentTemplate timescale=\"{ticks}\" startNumber=\"{first}\" media=\"$RepresentationID$/$Number$.m4s\" initialization=\"$RepresentationID$/init.mp4\" availabilityTimeOffset=\"1.5\" availabilityTimeComplete=\"false\">{}</SegmentTemplate>",
                timeline(ticks)
            )
        };
        format!(
            r#"<MPD type="dynamic" availabilityStartTime="2026-12-07T10:00:00Z"{update} suggestedPresentationDelay="PT3S">
<ServiceDescription id="0"><Latency target="1500"/><PlaybackRate min="0.96" max="1.04"/></ServiceDescription>
<Period id="0" start="PT0S">
<AdaptationSet contentType="video">
<Representation id="720p" bandwidth="2800000" height="720">{v}</Representation>
<Representation id="240p" bandwidth="400000" height="240">{v}</Representation>
</AdaptationSet>
<AdaptationSet contentType="audio"><Representation id="audio" bandwidth="128000">{a}</Representation></AdaptationSet>
</Period>
<UTCTiming schemeIdUri="urn:mpeg:dash:utc:http-iso:2014" value="../../time"/>
</MPD>"#,
            v = template(90_000),
            a = template(48_000),
        )
    }

    fn answer(p: &mut DashPlayer, request: &Request, body: &str, now: f64) -> bool {
        p.on_answer(request, &Bytes::from(body.to_owned()), 0.0, 0.01, now)
    }

    fn cmcd_of(request: &Request) -> cascade_cmcd::Cmcd {
        let query = request.target.split_once('?').map(|(_, q)| q);
        cascade_cmcd::from_request(query, []).expect("CMCD")
    }

    /// The init or media request for `track`.
    fn of(requests: &[Request], track: usize) -> Option<&Request> {
        requests
            .iter()
            .find(|r| r.track == track && !matches!(r.fetch, Fetch::Manifest | Fetch::Clock))
    }

    /// A viewer that loaded the manifest listing up to segment 31 and learnt that the
    /// server's clock is 1 s ahead of ours: on the server it is 61 s into the stream.
    fn started() -> (DashPlayer, Vec<Request>) {
        let mut p = DashPlayer::new(PlayerConfig::default(), "/live/s/manifest.mpd", joined());
        let first = p.next_requests(0.0);
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].fetch, Fetch::Manifest);
        assert!(first[0].target.starts_with("/live/s/manifest.mpd?CMCD="));
        assert_eq!(
            cmcd_of(&first[0]).streaming_format,
            Some(StreamingFormat::Dash)
        );
        assert!(
            p.next_requests(0.0).is_empty(),
            "one manifest request at a time"
        );
        assert!(answer(&mut p, &first[0], &live(25, 31, false), 0.0));
        let clock = p.next_requests(0.0);
        assert_eq!(clock.len(), 1);
        assert_eq!(
            (clock[0].fetch, clock[0].target.as_str()),
            (Fetch::Clock, "/time")
        );
        assert!(answer(&mut p, &clock[0], "2026-12-07T10:01:01.000Z", 0.0));
        let inits = p.next_requests(0.0);
        (p, inits)
    }

    #[test]
    fn a_live_viewer_starts_its_target_latency_behind_the_servers_clock() {
        let (mut p, inits) = started();
        // Without an estimate, the highest video under 1 Mbit/s; audio alongside.
        assert_eq!(inits.len(), 2, "{inits:?}");
        assert!(inits[0].target.starts_with("/live/s/240p/init.mp4?CMCD="));
        assert!(inits[1].target.starts_with("/live/s/audio/init.mp4?CMCD="));
        assert!(inits.iter().all(|r| r.fetch == Fetch::Init));
        for r in &inits {
            assert!(answer(&mut p, r, "init", 0.01));
        }
        assert_eq!(p.init_bytes(0).as_deref(), Some(&b"init"[..]));
        // 61 s − 1.5 s = 59.5 s: in segment 29 (58–60 s), loaded from its start.
        let media = p.next_requests(0.01);
        let video = of(&media, 0).unwrap();
        assert_eq!(video.fetch, Fetch::Chunked { number: 29 });
        assert!(video.target.starts_with("/live/s/240p/29.m4s?CMCD="));
        let cmcd = cmcd_of(video);
        assert_eq!(cmcd.object_type, Some(ObjectType::Video));
        assert_eq!(cmcd.bitrate_kbps, Some(400));
        assert_eq!(cmcd.object_duration_ms, Some(2000));
        assert_eq!(cmcd.top_bitrate_kbps, Some(2800));
        assert!(cmcd.startup);
        assert_eq!(of(&media, 1).unwrap().fetch, Fetch::Chunked { number: 29 });
        assert_eq!(p.state(), State::Starting);
        // Its chunks count as they arrive: 58.0–59.6 s buffers nothing past the play head
        // yet; up to 59.9 s is 0.4 s, enough to start.
        p.on_chunk(0, 59 * 90_000 + 54_000);
        p.on_chunk(1, 60 * 48_000);
        p.advance(0.05);
        assert_eq!(p.state(), State::Starting);
        p.on_chunk(0, 59 * 90_000 + 81_000);
        p.advance(0.1);
        assert_eq!(p.state(), State::Playing);
        assert_eq!(p.stats().startup, Some(0.1));
        // Latency on the server's clock: 61.1 s − 59.5 s.
        let latency = p.latency(joined() + 100).unwrap();
        assert!((latency - 1.6).abs() < 0.01, "{latency}");
    }

    /// A started viewer that loaded segment 29 of both tracks.
    fn playing() -> DashPlayer {
        let (mut p, inits) = started();
        for r in &inits {
            answer(&mut p, r, "init", 0.0);
        }
        let media = p.next_requests(0.0);
        for r in &media {
            let timescale = if r.track == 0 { 90_000 } else { 48_000 };
            p.on_chunk(r.track, 60 * timescale);
            assert!(p.on_answer(r, &Bytes::from_static(&[0; 100_000]), 0.0, 0.5, 0.5));
        }
        p.advance(0.5);
        assert_eq!(p.state(), State::Playing);
        p
    }

    #[test]
    fn each_segment_is_asked_for_once_available_and_the_manifest_reloads_every_update_period() {
        let mut p = playing();
        // Segment 30 (60–62 s) was available from 60.5 s on the server's clock: asked now.
        let media = p.next_requests(0.5);
        assert_eq!(of(&media, 0).unwrap().fetch, Fetch::Chunked { number: 30 });
        assert!(
            media.iter().any(|r| r.fetch == Fetch::Manifest),
            "0.5 s since the last"
        );
        for r in media.iter().filter(|r| r.fetch != Fetch::Manifest) {
            let timescale = if r.track == 0 { 90_000 } else { 48_000 };
            p.on_chunk(r.track, 62 * timescale);
            assert!(p.on_answer(r, &Bytes::from_static(&[0; 100_000]), 0.0, 0.5, 0.6));
        }
        // Segment 31 (62–64 s) is available at 62.5 s on the server: 0.5 + 61 = 61.5 now.
        let early = p.next_requests(0.6);
        assert!(
            of(&early, 0).is_none() && of(&early, 1).is_none(),
            "{early:?}"
        );
        let wake = p.next_wakeup(0.6).unwrap();
        assert!(
            (wake - 0.9).abs() < 0.01,
            "wakes when it is available: {wake}"
        );
        let due = p.next_requests(1.5);
        assert_eq!(of(&due, 0).unwrap().fetch, Fetch::Chunked { number: 31 });
        assert!(p.stats().stalls == 0);
    }

    #[test]
    fn fast_downloads_move_up_at_the_next_segment_with_its_init() {
        let mut p = playing();
        // 100 kB in 0.5 s of transfer is 1.6 Mbit/s: 2.8 Mbit/s does not fit; in 10 ms it
        // does.
        assert_eq!(p.variant(), Some(1));
        let media = p.next_requests(0.5);
        let video = of(&media, 0).unwrap().clone();
        p.on_chunk(0, 62 * 90_000);
        assert!(p.on_answer(&video, &Bytes::from_static(&[0; 100_000]), 0.0, 0.01, 0.6));
        let next = p.next_requests(1.5);
        let init = of(&next, 0).unwrap();
        assert_eq!(init.fetch, Fetch::Init);
        assert!(
            init.target.starts_with("/live/s/720p/init.mp4?"),
            "{}",
            init.target
        );
        assert_eq!(p.variant(), Some(0));
        assert_eq!(p.stats().switches, 1);
        assert!(answer(&mut p, init, "init720", 1.5));
        let media = p.next_requests(1.5);
        let video = of(&media, 0).unwrap();
        assert!(
            video.target.starts_with("/live/s/720p/31.m4s?"),
            "{}",
            video.target
        );
    }

    #[test]
    fn a_segment_that_does_not_read_is_an_error_and_is_asked_for_again() {
        let mut p = playing();
        let media = p.next_requests(0.5);
        let video = of(&media, 0).unwrap().clone();
        assert!(
            !answer(&mut p, &video, "not cmaf", 0.6),
            "no chunk was read"
        );
        p.on_error(0, video.fetch, 0.6);
        assert!(of(&p.next_requests(0.7), 0).is_none(), "retry after 0.5 s");
        assert_eq!(
            of(&p.next_requests(1.2), 0).unwrap().fetch,
            Fetch::Chunked { number: 30 }
        );
    }

    #[test]
    fn a_stream_that_ended_plays_out_without_a_stall() {
        let mut p = playing();
        // The stream stopped after segment 30: the manifest stops updating.
        let media = p.next_requests(0.5);
        let manifest = media.iter().find(|r| r.fetch == Fetch::Manifest).unwrap();
        assert!(answer(&mut p, manifest, &live(25, 30, true), 0.5));
        for r in media.iter().filter(|r| r.fetch != Fetch::Manifest) {
            let timescale = if r.track == 0 { 90_000 } else { 48_000 };
            p.on_chunk(r.track, 62 * timescale);
            assert!(p.on_answer(r, &Bytes::from_static(&[0; 1000]), 0.0, 0.01, 0.6));
        }
        assert!(
            p.next_requests(1.0).is_empty(),
            "nothing after the last segment"
        );
        // Half a second behind its 1.5 s target when it started, the viewer plays faster
        // until the manifest says the stream ended; then at 1x to the end.
        assert!(p.playback.rate > 1.03, "{}", p.playback.rate);
        p.advance(1.0);
        assert_eq!(p.playback.rate, 1.0, "no live edge to catch up with");
        let head = p.playback.head.unwrap();
        assert!(head > 60_010, "{head}: more than 0.5 s of media in 0.5 s");
        p.advance(4.0);
        assert_eq!(p.state(), State::Ended);
        assert_eq!(p.stats().stalls, 0);
        assert_eq!(p.playback.head, Some(62_000), "played to the end");
        let played = 0.5 + (62_000 - head) as f64 / 1000.0;
        assert!(
            (p.stats().played - played).abs() < 0.01,
            "{} against {played}",
            p.stats().played
        );
    }

    /// The live edge at `now` on the viewer's clock, seconds of media: 61 s when it joined,
    /// its clock a second behind the server's.
    fn live_edge(now: f64) -> f64 {
        61.0 + now
    }

    /// Drives `p` from `from` to `until` seconds as a server would, delivering each segment's
    /// chunks up to `reach(now, play head in seconds)` (at most the live edge) and the whole
    /// segment once the live edge passes its end. Returns the latency and playback rate at
    /// each step of 50 ms while playing.
    fn follow(
        p: &mut DashPlayer,
        from: f64,
        until: f64,
        reach: impl Fn(f64, f64) -> f64,
    ) -> Vec<(f64, f64)> {
        let mut seen = Vec::new();
        let mut loading: Vec<Request> = Vec::new();
        let steps = ((until - from) / 0.05).round() as usize;
        for step in 1..=steps {
            let now = from + step as f64 * 0.05;
            let last = (live_edge(now) / 2.0).floor() as u64;
            for r in p.next_requests(now) {
                match r.fetch {
                    Fetch::Manifest => assert!(answer(p, &r, &live(25, last, false), now)),
                    Fetch::Init => assert!(answer(p, &r, "init", now)),
                    _ => loading.push(r),
                }
            }
            let head = p.playback.head.unwrap_or(0) as f64 / 1000.0;
            let reached = reach(now, head).min(live_edge(now));
            loading.retain(|r| {
                let Fetch::Chunked { number } = r.fetch else {
                    return false;
                };
                let (start, end) = (2.0 * number as f64, 2.0 * (number + 1) as f64);
                if reached <= start {
                    return true;
                }
                let timescale = if r.track == 0 { 90_000.0 } else { 48_000.0 };
                p.on_chunk(r.track, (reached.min(end) * timescale) as u64);
                let done = reached >= end;
                if done {
                    assert!(p.on_answer(r, &Bytes::from_static(&[0; 50_000]), 0.0, 0.1, now));
                }
                !done
            });
            p.advance(now);
            if let Some(latency) = p.latency(joined() + (now * 1000.0) as i64) {
                seen.push((latency, p.playback.rate));
            }
        }
        seen
    }

    #[test]
    fn a_viewer_behind_its_target_plays_faster_until_it_is_back_on_it() {
        let mut p = playing();
        let seen = follow(&mut p, 0.5, 60.5, |now, _| live_edge(now));
        let (first, last) = (seen[0], seen[seen.len() - 1]);
        assert!(first.0 > 1.9 && first.1 > 1.03, "started behind: {first:?}");
        assert!(
            (last.0 - 1.5).abs() < 0.05 && (last.1 - 1.0).abs() < 0.005,
            "on target after a minute: {last:?}"
        );
        assert!(
            seen.windows(2).all(|w| w[1].0 <= w[0].0 + 0.01),
            "latency only falls"
        );
        assert!(seen.iter().all(|(_, rate)| (0.96..=1.04).contains(rate)));
        assert_eq!(p.stats().stalls, 0);
    }

    #[test]
    fn after_a_stall_the_viewer_does_not_speed_up_while_its_buffer_is_thin() {
        let mut p = playing();
        // A minute on target; then nothing arrives for 3 s, so the viewer runs through its
        // 1.5 s of buffer and stalls for 1.5 s; then a slow link keeps its buffer at 0.3 s
        // for 10 s; then media arrives as fast as the live edge allows.
        let seen = follow(&mut p, 0.5, 100.5, |now, head| {
            if (60.5..63.5).contains(&now) {
                0.0
            } else if (63.5..73.5).contains(&now) {
                head + 0.3
            } else {
                f64::MAX
            }
        });
        assert_eq!(p.stats().stalls, 1);
        let thin: Vec<_> = seen
            .iter()
            .skip_while(|(latency, _)| *latency < 2.5)
            .take_while(|(latency, _)| *latency > 2.5)
            .take(100)
            .collect();
        assert!(!thin.is_empty(), "1.5 s behind after the stall: {seen:?}");
        assert!(
            thin.iter().all(|(_, rate)| *rate == 1.0),
            "no catching up on a thin buffer: {thin:?}"
        );
        let last = seen[seen.len() - 1];
        assert!(last.0 < 2.9 && last.1 > 1.02, "then catching up: {last:?}");
    }

    #[test]
    fn a_static_manifest_plays_from_the_start_up_to_the_buffer_limit() {
        let vod = r#"<MPD type="static" mediaPresentationDuration="PT60S"><Period id="a">
          <AdaptationSet contentType="video"><Representation id="v" bandwidth="500000">
          <SegmentTemplate timescale="1000" duration="10000" startNumber="0" media="$RepresentationID$/$Number$.m4s" initialization="$RepresentationID$/init.mp4"/>
          </Representation></AdaptationSet></Period></MPD>"#;
        let config = PlayerConfig {
            max_buffer: 25.0,
            ..PlayerConfig::default()
        };
        let mut p = DashPlayer::new(config, "/vod/r/manifest.mpd", joined());
        let first = p.next_requests(0.0);
        assert!(answer(&mut p, &first[0], vod, 0.0));
        let init = p.next_requests(0.0);
        assert_eq!(init.len(), 1, "no UTCTiming: no clock request; {init:?}");
        assert!(answer(&mut p, &init[0], "init", 0.0));
        let mut numbers = Vec::new();
        for _ in 0..6 {
            let Some(r) = of(&p.next_requests(0.1), 0).cloned() else {
                break;
            };
            let Fetch::Chunked { number } = r.fetch else {
                panic!("{r:?}");
            };
            assert_eq!(cmcd_of(&r).stream_type, Some(cascade_cmcd::StreamType::Vod));
            p.on_chunk(0, (number + 1) * 10_000);
            assert!(answer(&mut p, &r, "x", 0.1));
            numbers.push(number);
        }
        assert_eq!(numbers, [0, 1, 2], "30 s buffered is past the 25 s limit");
        assert_eq!(p.latency(joined()), None, "VOD has no live latency");
    }

    #[test]
    fn a_track_moves_to_the_next_period_with_its_init() {
        // A transcoder restart at 60 s: Period 1 starts there, with its own init segment.
        let period = |id: u64, start: u64, first: u64, count: u64, init: &str| {
            format!(
                "<Period id=\"{id}\" start=\"PT{start}S\"><AdaptationSet contentType=\"video\"><Representation id=\"v\" bandwidth=\"500000\"><SegmentTemplate timescale=\"1000\" presentationTimeOffset=\"{}\" startNumber=\"{first}\" media=\"$RepresentationID$/$Number$.m4s\" initialization=\"$RepresentationID$/{init}\"><SegmentTimeline><S t=\"{}\" d=\"2000\" r=\"{}\"/></SegmentTimeline></SegmentTemplate></Representation></AdaptationSet></Period>",
                start * 1000,
                first * 2000,
                count - 1
            )
        };
        let manifest = format!(
            r#"<MPD type="dynamic" availabilityStartTime="2026-12-07T10:00:00Z" minimumUpdatePeriod="PT0.5S"><ServiceDescription id="0"><Latency target="1500"/><PlaybackRate min="0.96" max="1.04"/></ServiceDescription>{}{}</MPD>"#,
            period(0, 0, 27, 3, "init.mp4"),
            period(1, 60, 30, 1, "init-1.mp4"),
        );
        // Our clock is the server's (no UTCTiming): 60 s in, start at 58.5 s in segment 29.
        let mut p = DashPlayer::new(PlayerConfig::default(), "/live/s/manifest.mpd", joined());
        let first = p.next_requests(0.0);
        assert!(answer(&mut p, &first[0], &manifest, 0.0));
        let init = p.next_requests(0.0);
        assert!(
            init[0].target.starts_with("/live/s/v/init.mp4?"),
            "{init:?}"
        );
        assert!(answer(&mut p, &init[0], "init0", 0.0));
        let media = p.next_requests(0.0);
        let segment = of(&media, 0).unwrap().clone();
        assert_eq!(segment.fetch, Fetch::Chunked { number: 29 });
        p.on_chunk(0, 60_000);
        assert!(answer(&mut p, &segment, "x", 0.1));
        // Period 1's first segment needs Period 1's init first.
        let next = p.next_requests(0.2);
        let init = of(&next, 0).unwrap().clone();
        assert_eq!(init.fetch, Fetch::Init);
        assert!(
            init.target.starts_with("/live/s/v/init-1.mp4?"),
            "{}",
            init.target
        );
        assert!(answer(&mut p, &init, "init1", 0.2));
        assert_eq!(p.init_bytes(0).as_deref(), Some(&b"init1"[..]));
        // Without availabilityTimeOffset, segment 30 is there once complete, at 62 s.
        assert!(of(&p.next_requests(0.2), 0).is_none());
        let media = p.next_requests(2.1);
        assert!(
            of(&media, 0)
                .unwrap()
                .target
                .starts_with("/live/s/v/30.m4s?")
        );
        assert_eq!(
            p.stats().switches,
            0,
            "a new Period is not a rendition switch"
        );
    }

    #[test]
    fn only_time_spent_receiving_counts_as_transfer() {
        // Three chunks already made, then two more each a part later.
        let arrivals = [0.002, 0.003, 0.004, 0.504, 0.505, 1.004, 1.006];
        assert!((active_seconds(&arrivals) - 0.007).abs() < 1e-9);
        assert_eq!(active_seconds(&[]), 0.001);
        assert_eq!(start_representation(&[2_800_000, 400_000, 900_000]), 2);
        assert_eq!(start_representation(&[2_800_000, 1_400_000]), 1);
    }
}
