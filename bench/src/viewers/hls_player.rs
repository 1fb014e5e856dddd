//! One simulated HLS viewer's decisions, no IO: what an LL-HLS player (modelled on hls.js with
//! its defaults, and the catch-up rate the origin's player page sets) asks for and when, and
//! what a viewer sees as a result. The shell drives it through [`ViewerModel`]; live latency
//! comes from the program date-times.
//!
//! - **Start**: the multivariant playlist, then the first variant's playlist (and the audio
//!   rendition's). A live stream starts at the independent part `PART-HOLD-BACK` behind the
//!   newest (`HOLD-BACK`, else three target durations, without parts); VOD at the start.
//! - **Reloads**: with `CAN-BLOCK-RELOAD`, the next playlist is asked for as soon as the last
//!   arrives, blocking on the part after the newest (`_HLS_msn`, `_HLS_part`), as a delta
//!   update (`_HLS_skip=YES`) when the server can skip. Without, once a target duration.
//! - **CDN tune-in** (hls.js's): an answer that waited in a cache (`Age`) moves the next
//!   blocking reload forward by that age less one part target; a viewer not yet started
//!   waits for that answer only when the age is beyond `PART-HOLD-BACK`.
//! - **Media**: parts in order, then the preload hint when the cursor reaches it (the
//!   request waits at the server until the part exists); whole segments for a stream
//!   without parts, or old segments listed without them.
//! - **Buffer**: media plays in real time. The play head waiting for data after playback
//!   began is a stall, until `resume_buffer` seconds are buffered again.
//! - **Catch-up** (hls.js's `maxLiveSyncPlaybackRate`, [`super::model::hls_catch_up_rate`]):
//!   a live viewer behind its target latency (the hold-back, plus a second per stall so far)
//!   with more than a second buffered plays faster, up to
//!   [`PlayerConfig::max_live_sync_rate`].
//! - **ABR** ([`super::model::pick_variant`] on media download throughput): a switch takes
//!   effect at the next segment boundary, after the new variant's playlist and init segment
//!   are loaded.

use bytes::Bytes;
use cascade_cmcd::{ObjectType, StreamingFormat};

use super::model::{
    CmcdContext, Fetch, Playback, PlayerConfig, Request, State, Throughput, ViewerModel,
    ViewerStats, hls_catch_up_rate, pick_variant, resolve, with_query,
};
use super::playlist::{MediaPlaylist, Multivariant, Segment, parse_media, parse_multivariant};

/// How much hls.js raises its target latency per stall (`liveSyncOnStallIncrease`).
const STALL_LATENCY_STEP: f64 = 1.0;

#[derive(Debug, Clone)]
struct Track {
    object: ObjectType,
    variant: usize,
    playlist_path: String,
    playlist: Option<MediaPlaylist>,
    playlist_pending: bool,
    last_reload: f64,
    init_loaded: bool,
    init_pending: bool,
    cursor: Option<(u64, Option<usize>)>,
    media_pending: bool,
    /// Timeline position (ms) up to which media is loaded.
    loaded_until: Option<i64>,
    retry_at: f64,
    /// A variant being switched to: its playlist path and, once loaded, the playlist.
    switching: Option<(usize, String, Option<MediaPlaylist>)>,
    /// Where the next blocking reload asks to be when the last playlist came from a cache
    /// ([`tune_in`]).
    tune_in: Option<TuneIn>,
}

impl Track {
    fn new(object: ObjectType, variant: usize, playlist_path: String) -> Self {
        Self {
            object,
            variant,
            playlist_path,
            playlist: None,
            playlist_pending: false,
            last_reload: f64::NEG_INFINITY,
            init_loaded: false,
            init_pending: false,
            cursor: None,
            media_pending: false,
            loaded_until: None,
            retry_at: 0.0,
            switching: None,
            tune_in: None,
        }
    }
}

/// One simulated viewer.
#[derive(Debug, Clone)]
pub struct Player {
    config: PlayerConfig,
    multivariant_path: String,
    multivariant: Option<Multivariant>,
    multivariant_pending: bool,
    multivariant_retry: f64,
    joined_wall_ms: i64,
    tracks: Vec<Track>,
    playback: Playback,
    dated: bool,
    live: bool,
    throughput: Throughput,
    stats: ViewerStats,
}

impl Player {
    /// A viewer about to open `multivariant_path`, joining at `joined_wall_ms` (Unix ms).
    pub fn new(config: PlayerConfig, multivariant_path: &str, joined_wall_ms: i64) -> Self {
        Self {
            config,
            multivariant_path: multivariant_path.to_owned(),
            multivariant: None,
            multivariant_pending: false,
            multivariant_retry: 0.0,
            joined_wall_ms,
            tracks: Vec::new(),
            playback: Playback::default(),
            dated: false,
            live: true,
            throughput: Throughput::default(),
            stats: ViewerStats::default(),
        }
    }

    /// Seconds of media buffered ahead of the play head (all tracks).
    pub fn buffer(&self) -> f64 {
        self.playback.buffer(self.loaded_until())
    }

    /// The throughput estimate, bit/s.
    pub fn estimate(&self) -> Option<f64> {
        self.throughput.estimate()
    }

    fn loaded_until(&self) -> Option<i64> {
        self.tracks
            .iter()
            .map(|t| t.loaded_until)
            .collect::<Option<Vec<i64>>>()?
            .into_iter()
            .min()
    }

    fn cmcd(&self, object: ObjectType, duration: Option<f64>, bitrate: Option<u64>) -> String {
        CmcdContext {
            config: &self.config,
            format: StreamingFormat::Hls,
            live: self.live,
            buffer: self.buffer(),
            estimate: self.estimate(),
            top_bitrate: self
                .multivariant
                .as_ref()
                .and_then(|m| m.variants.iter().map(|v| v.bandwidth).max()),
            startup: self.playback.state == State::Starting,
            starved: self.playback.starved,
        }
        .query(object, duration, bitrate)
    }

    fn requests(&mut self, now: f64) -> Vec<Request> {
        let mut out = Vec::new();
        if self.multivariant.is_none() {
            if !self.multivariant_pending && now >= self.multivariant_retry {
                self.multivariant_pending = true;
                self.playback.starved = false;
                let cmcd = self.cmcd(ObjectType::Manifest, None, None);
                out.push(Request {
                    track: 0,
                    fetch: Fetch::Multivariant,
                    target: with_query(&self.multivariant_path, &cmcd),
                });
            }
            return out;
        }
        for index in 0..self.tracks.len() {
            if now < self.tracks[index].retry_at {
                continue;
            }
            self.switch_at_boundary(index);
            if let Some(request) = self.playlist_request(index, now) {
                out.push(request);
            }
            if let Some(request) = self.init_request(index) {
                out.push(request);
            }
            if let Some(request) = self.media_request(index) {
                out.push(request);
            }
        }
        if !out.is_empty() {
            self.playback.starved = false;
        }
        out
    }

    fn playlist_request(&mut self, index: usize, now: f64) -> Option<Request> {
        let cmcd = self.cmcd(ObjectType::Manifest, None, None);
        let track = &mut self.tracks[index];
        if track.playlist_pending {
            return None;
        }
        if let Some((_, path, None)) = &track.switching {
            track.playlist_pending = true;
            return Some(Request {
                track: index,
                fetch: Fetch::Playlist {
                    blocking: false,
                    switch: true,
                },
                target: with_query(path, &cmcd),
            });
        }
        let (target, blocking) = match &track.playlist {
            None => (track.playlist_path.clone(), false),
            Some(p) if p.ended => return None,
            Some(p) if p.can_block_reload => {
                let (msn, part) = track
                    .tune_in
                    .map_or_else(|| p.next_after_last(), |t| t.target);
                let mut query = format!("_HLS_msn={msn}");
                if let Some(part) = part {
                    query.push_str(&format!("&_HLS_part={part}"));
                }
                if p.can_skip_until.is_some() {
                    query.push_str("&_HLS_skip=YES");
                }
                (format!("{}?{query}", track.playlist_path), true)
            }
            Some(p) => {
                if now - track.last_reload < p.target_duration.max(0.5) {
                    return None;
                }
                (track.playlist_path.clone(), false)
            }
        };
        track.playlist_pending = true;
        track.last_reload = now;
        Some(Request {
            track: index,
            fetch: Fetch::Playlist {
                blocking,
                switch: false,
            },
            target: with_query(&target, &cmcd),
        })
    }

    fn init_request(&mut self, index: usize) -> Option<Request> {
        let cmcd = self.cmcd(ObjectType::Init, None, None);
        let track = &mut self.tracks[index];
        let playlist = track.playlist.as_ref()?;
        if track.init_loaded || track.init_pending {
            return None;
        }
        let init = playlist.init.as_ref()?;
        track.init_pending = true;
        Some(Request {
            track: index,
            fetch: Fetch::Init,
            target: with_query(&resolve(&track.playlist_path, init), &cmcd),
        })
    }

    /// A switch whose playlist is in takes effect at a segment boundary.
    fn switch_at_boundary(&mut self, index: usize) {
        let track = &self.tracks[index];
        if let Some((variant, path, Some(_))) = &track.switching
            && !track.media_pending
            && track.cursor.is_some_and(|(_, part)| part.unwrap_or(0) == 0)
        {
            let (variant, path) = (*variant, path.clone());
            self.complete_switch(index, variant, path);
        }
    }

    fn media_request(&mut self, index: usize) -> Option<Request> {
        let buffer = self.buffer();
        let bitrate = self.track_bitrate(index);
        let track = &self.tracks[index];
        let playlist = track.playlist.as_ref()?;
        let wants_init = playlist.init.is_some() && !track.init_loaded;
        if track.media_pending || wants_init {
            return None;
        }
        if !self.live && buffer >= self.config.max_buffer {
            return None;
        }
        let (msn, part) = track.cursor?;
        let (uri, duration, part, hinted) = match playlist.segment(msn) {
            Some(segment) => match part {
                Some(i) if i < segment.parts.len() => {
                    let p = &segment.parts[i];
                    (p.uri.clone(), p.duration, Some(i), false)
                }
                Some(i) if i == 0 && segment.parts.is_empty() && segment.complete() => {
                    (segment.uri.clone()?, segment.duration, None, false)
                }
                Some(_) if segment.complete() => {
                    self.tracks[index].cursor = Some((msn + 1, Some(0)));
                    return self.media_request(index);
                }
                Some(i) => {
                    // The part is not listed yet: ask for it if it is the preload hint.
                    let hint = playlist.preload_hint.clone()?;
                    if playlist.next_after_last() != (msn, Some(i)) {
                        return None;
                    }
                    (hint, playlist.part_target.unwrap_or(0.0), Some(i), true)
                }
                None if segment.complete() => (segment.uri.clone()?, segment.duration, None, false),
                None => return None,
            },
            None => {
                let first = playlist.segments.first()?.msn;
                if msn < first {
                    // Fell out of the playlist's window: carry on from its oldest segment.
                    let cursor = (first, part.map(|_| 0));
                    self.tracks[index].cursor = Some(cursor);
                    return self.media_request(index);
                }
                if playlist.next_after_last() == (msn, part)
                    && let (Some(hint), Some(i)) = (playlist.preload_hint.clone(), part)
                {
                    (hint, playlist.part_target.unwrap_or(0.0), Some(i), true)
                } else {
                    return None;
                }
            }
        };
        let object = track.object;
        let target = resolve(&track.playlist_path, &uri);
        let cmcd = self.cmcd(object, Some(duration), bitrate);
        self.tracks[index].media_pending = true;
        Some(Request {
            track: index,
            fetch: Fetch::Media { msn, part, hinted },
            target: with_query(&target, &cmcd),
        })
    }

    fn track_bitrate(&self, index: usize) -> Option<u64> {
        let track = self.tracks.get(index)?;
        if track.object == ObjectType::Video {
            self.multivariant
                .as_ref()?
                .variants
                .get(track.variant)
                .map(|v| v.bandwidth)
        } else {
            None
        }
    }

    /// The multivariant playlist arrived.
    pub fn on_multivariant(&mut self, multivariant: Multivariant) {
        self.multivariant_pending = false;
        let Some(first) = multivariant.variants.first() else {
            return;
        };
        let video = resolve(&self.multivariant_path, &first.uri);
        self.tracks = vec![Track::new(ObjectType::Video, 0, video)];
        if let Some(audio) = &multivariant.audio {
            let path = resolve(&self.multivariant_path, audio);
            self.tracks.push(Track::new(ObjectType::Audio, 0, path));
        }
        self.stats.played_by_variant = vec![0.0; multivariant.variants.len()];
        self.multivariant = Some(multivariant);
    }

    /// A track's media playlist arrived (a full one or a delta update), for `fetch`.
    pub fn on_playlist(&mut self, index: usize, fetch: Fetch, update: MediaPlaylist) {
        let Some(track) = self.tracks.get_mut(index) else {
            return;
        };
        track.playlist_pending = false;
        if matches!(fetch, Fetch::Playlist { switch: true, .. }) {
            if let Some((_, _, pending @ None)) = &mut track.switching {
                *pending = Some(update);
            }
            return;
        }
        track.tune_in = tune_in(&update);
        match &mut track.playlist {
            Some(p) => p.merge(update),
            None => track.playlist = Some(update),
        }
        let ready = self
            .tracks
            .iter()
            .all(|t| t.playlist.is_some() && !t.tune_in.is_some_and(|t| t.wait));
        if ready && self.playback.head.is_none() {
            self.choose_start();
        }
    }

    fn complete_switch(&mut self, index: usize, variant: usize, path: String) {
        let track = &mut self.tracks[index];
        let Some((_, _, Some(playlist))) = track.switching.take() else {
            return;
        };
        track.variant = variant;
        track.playlist_path = path;
        track.playlist = Some(playlist);
        track.init_loaded = false;
        self.stats.switches += 1;
    }

    fn choose_start(&mut self) {
        let Some(video) = self.tracks.first().and_then(|t| t.playlist.as_ref()) else {
            return;
        };
        self.live = !video.ended;
        self.dated = video.dated;
        let start = if video.ended {
            video
                .segments
                .first()
                .and_then(|s| s.start_ms)
                .map(|s| (s, s))
        } else {
            live_start(video)
        };
        let Some((load_from, play_from)) = start else {
            return;
        };
        // Media is loaded from a key frame; the first frame shown is the hold-back position,
        // as hls.js seeks there once the media before it is buffered.
        self.playback.head = Some(play_from);
        for track in &mut self.tracks {
            if let Some(p) = &track.playlist {
                track.cursor = position_of(p, load_from);
                track.loaded_until = Some(load_from);
            }
        }
    }

    /// A track's init segment arrived.
    pub fn on_init(&mut self, index: usize) {
        if let Some(track) = self.tracks.get_mut(index) {
            track.init_pending = false;
            track.init_loaded = true;
        }
    }

    /// A part or segment arrived after `seconds` of download.
    pub fn on_media(&mut self, index: usize, fetch: Fetch, bytes: u64, seconds: f64) {
        let Fetch::Media { msn, part, hinted } = fetch else {
            return;
        };
        let Some(track) = self.tracks.get_mut(index) else {
            return;
        };
        track.media_pending = false;
        let end = track
            .playlist
            .as_ref()
            .and_then(|p| media_end(p, msn, part));
        let duration = track
            .playlist
            .as_ref()
            .and_then(|p| media_duration(p, msn, part));
        if let Some(end) = end {
            track.loaded_until = Some(track.loaded_until.map_or(end, |l| l.max(end)));
        } else if let (Some(loaded), Some(d)) = (track.loaded_until, duration) {
            track.loaded_until = Some(loaded + (d * 1000.0).round() as i64);
        } else if let Some(loaded) = track.loaded_until {
            // A hinted part not yet listed: it lasts about a part.
            let d = track
                .playlist
                .as_ref()
                .and_then(|p| p.part_target)
                .unwrap_or(0.0);
            track.loaded_until = Some(loaded + (d * 1000.0).round() as i64);
        }
        let segment_ends = match part {
            None => true,
            Some(i) => track
                .playlist
                .as_ref()
                .and_then(|p| p.segment(msn))
                .is_some_and(|s| s.complete() && i + 1 >= s.parts.len()),
        };
        let parts = track
            .playlist
            .as_ref()
            .is_some_and(|p| p.part_target.is_some());
        track.cursor = Some(match part {
            None => (msn + 1, parts.then_some(0)),
            Some(_) if segment_ends => (msn + 1, Some(0)),
            Some(i) => (msn, Some(i + 1)),
        });
        if index == 0 && !hinted {
            self.throughput
                .sample(duration.unwrap_or(seconds), bytes as f64 * 8.0, seconds);
        }
        if index == 0 {
            self.choose_variant();
        }
    }

    fn choose_variant(&mut self) {
        let (Some(estimate), Some(m)) = (self.estimate(), self.multivariant.as_ref()) else {
            return;
        };
        let Some(track) = self.tracks.first() else {
            return;
        };
        if track.switching.is_some() {
            return;
        }
        let current = track.variant;
        let bandwidths: Vec<u64> = m.variants.iter().map(|v| v.bandwidth).collect();
        let wanted = pick_variant(
            &bandwidths,
            current,
            estimate,
            self.config.up_factor,
            self.config.down_factor,
        );
        if wanted != current {
            let path = resolve(&self.multivariant_path, &m.variants[wanted].uri);
            if let Some(track) = self.tracks.first_mut() {
                track.switching = Some((wanted, path, None));
            }
        }
    }

    fn failed(&mut self, index: usize, fetch: Fetch, now: f64) {
        let retry = now + self.config.retry_after;
        if fetch == Fetch::Multivariant {
            self.multivariant_pending = false;
            self.multivariant_retry = retry;
            return;
        }
        let Some(track) = self.tracks.get_mut(index) else {
            return;
        };
        match fetch {
            Fetch::Playlist { switch, .. } => {
                track.playlist_pending = false;
                if switch {
                    track.switching = None;
                }
            }
            Fetch::Init => track.init_pending = false,
            Fetch::Media { .. } => track.media_pending = false,
            Fetch::Multivariant | Fetch::Manifest | Fetch::Clock | Fetch::Chunked { .. } => {}
        }
        track.retry_at = retry;
    }

    fn play(&mut self, now: f64) {
        let loaded = self.loaded_until();
        let resume = self.config.resume_buffer.min(self.min_media());
        let finished = !self.live && self.all_loaded();
        let variant = self.tracks.first().map(|t| t.variant);
        self.playback
            .advance(now, loaded, resume, finished, variant, &mut self.stats);
        self.steer(now);
    }

    /// Sets the playback rate as hls.js's catch-up does (`maxLiveSyncPlaybackRate`): faster
    /// when behind the target latency, which is the hold-back plus a second per stall so
    /// far, up to one target duration more.
    fn steer(&mut self, now: f64) {
        self.playback.rate = 1.0;
        let Some(p) = self.tracks.first().and_then(|t| t.playlist.as_ref()) else {
            return;
        };
        let (true, true, State::Playing, Some(head)) = (
            self.dated,
            self.live,
            self.playback.state,
            self.playback.head,
        ) else {
            return;
        };
        let target = hold_back(p)
            + (f64::from(self.stats.stalls) * STALL_LATENCY_STEP).min(p.target_duration);
        let wall_ms = self.joined_wall_ms + (now * 1000.0).round() as i64;
        let latency = (wall_ms - head) as f64 / 1000.0;
        self.playback.rate = hls_catch_up_rate(
            latency,
            target,
            p.target_duration,
            self.buffer(),
            self.config.max_live_sync_rate,
        );
    }

    fn min_media(&self) -> f64 {
        self.tracks
            .first()
            .and_then(|t| t.playlist.as_ref())
            .map(|p| p.part_target.unwrap_or(p.target_duration))
            .unwrap_or(0.0)
            .max(0.05)
    }

    fn all_loaded(&self) -> bool {
        self.tracks.iter().all(|t| {
            t.playlist.as_ref().is_some_and(|p| {
                p.ended && t.cursor.is_some_and(|(msn, _)| p.segment(msn).is_none())
            })
        })
    }

    fn wakeup(&self, now: f64) -> Option<f64> {
        let mut next: Option<f64> = None;
        let mut at = |t: f64| next = Some(next.map_or(t, |n: f64| n.min(t)));
        if self.multivariant.is_none() && !self.multivariant_pending {
            at(self.multivariant_retry);
        }
        for t in &self.tracks {
            if t.retry_at > now {
                at(t.retry_at);
            }
            if let Some(p) = &t.playlist
                && !p.can_block_reload
                && !p.ended
            {
                at(t.last_reload + p.target_duration.max(0.5));
            }
        }
        next.map(|t| (t - now).max(0.0))
    }
}

impl ViewerModel for Player {
    fn next_requests(&mut self, now: f64) -> Vec<Request> {
        self.requests(now)
    }

    fn on_answer(
        &mut self,
        request: &Request,
        body: &Bytes,
        age: f64,
        seconds: f64,
        _now: f64,
    ) -> bool {
        let text = || std::str::from_utf8(body).ok();
        match request.fetch {
            Fetch::Multivariant => match text().map(parse_multivariant) {
                Some(Ok(m)) => {
                    self.on_multivariant(m);
                    true
                }
                _ => false,
            },
            Fetch::Playlist { .. } => match text().map(parse_media) {
                Some(Ok(p)) => {
                    self.on_playlist(request.track, request.fetch, MediaPlaylist { age, ..p });
                    true
                }
                _ => false,
            },
            Fetch::Init => {
                self.on_init(request.track);
                true
            }
            Fetch::Media { .. } => {
                self.on_media(request.track, request.fetch, body.len() as u64, seconds);
                true
            }
            Fetch::Manifest | Fetch::Clock | Fetch::Chunked { .. } => false,
        }
    }

    fn on_chunk(&mut self, _track: usize, _end: u64) {}

    fn init_bytes(&self, _track: usize) -> Option<Bytes> {
        None
    }

    fn on_error(&mut self, track: usize, fetch: Fetch, now: f64) {
        self.failed(track, fetch, now);
    }

    fn advance(&mut self, now: f64) {
        self.play(now);
    }

    fn next_wakeup(&self, now: f64) -> Option<f64> {
        self.wakeup(now)
    }

    fn state(&self) -> State {
        self.playback.state
    }

    fn stats(&self) -> &ViewerStats {
        &self.stats
    }

    fn variant(&self) -> Option<usize> {
        self.tracks.first().map(|t| t.variant)
    }

    fn latency(&self, wall_ms: i64) -> Option<f64> {
        (self.dated && self.live && self.playback.state == State::Playing)
            .then_some(self.playback.head?)
            .map(|head| (wall_ms - head) as f64 / 1000.0)
    }

    fn stalled_now(&self, now: f64) -> f64 {
        self.playback.stalled_now(&self.stats, now)
    }
}

/// Where hls.js's CDN tune-in sends the next blocking reload.
#[derive(Debug, Clone, Copy, PartialEq)]
struct TuneIn {
    /// `_HLS_msn` and `_HLS_part` to ask for.
    target: (u64, Option<usize>),
    /// Whether a viewer not yet started waits for that answer to choose where to start.
    wait: bool,
}

/// hls.js's CDN tune-in. A live low-latency playlist that waited `age` seconds in a cache is
/// about that far behind the live edge, so the next blocking reload asks for the part that
/// should be newest by now rather than the one after the newest listed. As in hls.js, the goal
/// is the age less one part target, at most 1.5 target durations, and a viewer starts from
/// the cached playlist unless the goal is beyond both `PART-HOLD-BACK` and three part targets.
/// `None` when the answer is fresh enough (the `Age` header counts whole seconds).
fn tune_in(p: &MediaPlaylist) -> Option<TuneIn> {
    let part_target = p.part_target.filter(|t| *t > 0.0)?;
    if p.ended || !p.can_block_reload {
        return None;
    }
    let goal = (p.age - part_target).min(1.5 * p.target_duration);
    let parts = (goal / part_target).round();
    (parts >= 1.0).then(|| TuneIn {
        target: p.parts_after(p.next_after_last(), parts as usize),
        wait: goal > p.part_hold_back.unwrap_or(0.0).max(3.0 * part_target),
    })
}

/// How far behind the live edge hls.js aims to play, seconds: `PART-HOLD-BACK` in
/// low-latency mode, else `HOLD-BACK`, else three target durations.
fn hold_back(p: &MediaPlaylist) -> f64 {
    p.part_target
        .and(p.part_hold_back)
        .or(p.hold_back)
        .unwrap_or(3.0 * p.target_duration)
}

/// Where a live join loads from (the latest key frame at or before the hold-back position)
/// and where it starts playing (that position).
fn live_start(p: &MediaPlaylist) -> Option<(i64, i64)> {
    let last = p.segments.last()?;
    let edge = last.start_ms? + (last.duration * 1000.0).round() as i64;
    let target = edge - (hold_back(p) * 1000.0).round() as i64;
    // The latest independent part (or segment start) at or before the target.
    let mut best: Option<i64> = None;
    for s in &p.segments {
        let start = s.start_ms?;
        if start <= target {
            best = Some(start);
        }
        let mut t = start;
        for part in &s.parts {
            if part.independent && t <= target {
                best = Some(t);
            }
            t += (part.duration * 1000.0).round() as i64;
        }
    }
    let load_from = best.or_else(|| p.segments.first()?.start_ms)?;
    Some((load_from, target.max(load_from)))
}

/// The media holding timeline position `at` in `p`: a part where parts are listed.
fn position_of(p: &MediaPlaylist, at: i64) -> Option<(u64, Option<usize>)> {
    let parts = p.part_target.is_some();
    for s in &p.segments {
        let start = s.start_ms?;
        let end = start + (s.duration * 1000.0).round() as i64;
        if at >= end && s.complete() {
            continue;
        }
        if !parts || s.parts.is_empty() {
            return Some((s.msn, parts.then_some(0)));
        }
        let mut t = start;
        for (i, part) in s.parts.iter().enumerate() {
            let e = t + (part.duration * 1000.0).round() as i64;
            if at < e {
                return Some((s.msn, Some(i)));
            }
            t = e;
        }
        return Some((s.msn, Some(s.parts.len())));
    }
    p.segments.last().map(|s| (s.msn + 1, parts.then_some(0)))
}

fn segment_part_start(s: &Segment, part: Option<usize>) -> Option<i64> {
    let start = s.start_ms?;
    let offset: f64 = match part {
        Some(i) => s.parts.iter().take(i).map(|p| p.duration).sum(),
        None => 0.0,
    };
    Some(start + (offset * 1000.0).round() as i64)
}

fn media_duration(p: &MediaPlaylist, msn: u64, part: Option<usize>) -> Option<f64> {
    let s = p.segment(msn)?;
    match part {
        Some(i) => s.parts.get(i).map(|x| x.duration),
        None => Some(s.duration),
    }
}

fn media_end(p: &MediaPlaylist, msn: u64, part: Option<usize>) -> Option<i64> {
    let s = p.segment(msn)?;
    let d = media_duration(p, msn, part)?;
    Some(segment_part_start(s, part)? + (d * 1000.0).round() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::viewers::playlist::{parse_media, parse_multivariant};

    const MULTIVARIANT: &str = "#EXTM3U\n#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"audio\",NAME=\"audio\",DEFAULT=YES,URI=\"audio/playlist.m3u8\"\n#EXT-X-STREAM-INF:BANDWIDTH=3000000,RESOLUTION=1280x720,AUDIO=\"audio\"\n720p/playlist.m3u8\n#EXT-X-STREAM-INF:BANDWIDTH=1000000,RESOLUTION=640x360,AUDIO=\"audio\"\n360p/playlist.m3u8\n";

    /// A live LL-HLS playlist: segments 40 and 41 complete (41 listed with its six 1/3 s
    /// parts), 42 with `parts` parts so far (complete at 6), then the hint.
    fn live(parts: usize) -> String {
        let mut text = String::from(
            "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-PART-INF:PART-TARGET=0.334\n#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL=12.0,PART-HOLD-BACK=1.0\n#EXT-X-MEDIA-SEQUENCE:40\n#EXT-X-MAP:URI=\"init.mp4\"\n#EXT-X-PROGRAM-DATE-TIME:2026-12-07T10:00:00.000Z\n#EXTINF:2.0,\n40.m4s\n",
        );
        for i in 0..6 {
            let independent = if i == 0 { ",INDEPENDENT=YES" } else { "" };
            text.push_str(&format!(
                "#EXT-X-PART:DURATION=0.33333,URI=\"41.{i}.m4s\"{independent}\n"
            ));
        }
        text.push_str("#EXTINF:2.0,\n41.m4s\n");
        for i in 0..parts {
            let independent = if i == 0 { ",INDEPENDENT=YES" } else { "" };
            text.push_str(&format!(
                "#EXT-X-PART:DURATION=0.33333,URI=\"42.{i}.m4s\"{independent}\n"
            ));
        }
        if parts == 6 {
            text.push_str("#EXTINF:2.0,\n42.m4s\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"43.0.m4s\"\n");
        } else {
            text.push_str(&format!(
                "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"42.{parts}.m4s\"\n"
            ));
        }
        text
    }

    fn start_ms() -> i64 {
        crate::viewers::playlist::parse_date_time("2026-12-07T10:00:00.000Z").unwrap()
    }

    /// The wall clock when the test viewers join: the newest part's end in [`playlist`].
    fn live_edge_ms() -> i64 {
        start_ms() + 5_000
    }

    /// A player that has both playlists (42 with `parts` parts) and both init segments.
    fn joined(parts: usize) -> Player {
        joined_to(&live(parts), live_edge_ms())
    }

    /// A player joining at `wall_ms` that has both playlists (`playlist`) and both inits.
    fn joined_to(playlist: &str, wall_ms: i64) -> Player {
        let mut p = Player::new(
            PlayerConfig {
                session_id: "s1".into(),
                ..PlayerConfig::default()
            },
            "/live/s/master.m3u8",
            wall_ms,
        );
        let first = p.next_requests(0.0);
        assert_eq!(first.len(), 1);
        assert!(first[0].target.starts_with("/live/s/master.m3u8?CMCD="));
        assert!(first[0].target.contains("su"), "{}", first[0].target);
        p.on_multivariant(parse_multivariant(MULTIVARIANT).unwrap());
        let playlists = p.next_requests(0.1);
        let targets: Vec<&str> = playlists.iter().map(|r| r.target.as_str()).collect();
        assert!(
            targets[0].starts_with("/live/s/720p/playlist.m3u8?CMCD="),
            "{targets:?}"
        );
        assert!(
            targets[1].starts_with("/live/s/audio/playlist.m3u8?CMCD="),
            "{targets:?}"
        );
        for r in &playlists {
            p.on_playlist(r.track, r.fetch, parse_media(playlist).unwrap());
        }
        let next = p.next_requests(0.2);
        let inits: Vec<&Request> = next.iter().filter(|r| r.fetch == Fetch::Init).collect();
        assert_eq!(inits.len(), 2, "{next:?}");
        assert!(
            next.iter().all(|r| !matches!(r.fetch, Fetch::Media { .. })),
            "media before init: {next:?}"
        );
        p.on_init(0);
        p.on_init(1);
        // The first blocking reloads come back with the same playlist.
        for r in next
            .iter()
            .filter(|r| matches!(r.fetch, Fetch::Playlist { .. }))
        {
            p.on_playlist(r.track, r.fetch, parse_media(playlist).unwrap());
        }
        p
    }

    fn media_of(requests: &[Request], track: usize) -> Option<&Request> {
        requests
            .iter()
            .find(|r| r.track == track && matches!(r.fetch, Fetch::Media { .. }))
    }

    #[test]
    fn a_join_between_key_frames_loads_from_the_key_frame_and_plays_from_the_hold_back() {
        // Newest part 42.1 ends at +4.667 s: the hold-back position is +3.667 s, inside
        // segment 41, whose only key frame is 41.0 (+2.0 s).
        let mut p = joined(2);
        for i in 0..6 {
            let requests = p.next_requests(0.3);
            let video = media_of(&requests, 0).expect("a video part");
            assert!(
                video
                    .target
                    .starts_with(&format!("/live/s/720p/41.{i}.m4s")),
                "{}",
                video.target
            );
            for r in requests
                .iter()
                .filter(|r| matches!(r.fetch, Fetch::Media { .. }))
            {
                p.on_media(r.track, r.fetch, 40_000, 0.01);
            }
            p.advance(0.3 + f64::from(i) * 0.01);
            // 41.0-41.4 end at +3.667 s: nothing past the hold-back position until 41.5.
            let expected = if i < 5 {
                State::Starting
            } else {
                State::Playing
            };
            assert_eq!(p.state(), expected, "after 41.{i}: buffer {}", p.buffer());
        }
        let latency = p.latency(start_ms() + 4667).unwrap();
        assert!((latency - 1.0).abs() < 0.01, "{latency}");
    }

    #[test]
    fn paths_resolve_against_the_playlist_that_names_them() {
        assert_eq!(
            resolve("/live/s/master.m3u8", "720p/playlist.m3u8"),
            "/live/s/720p/playlist.m3u8"
        );
        assert_eq!(
            resolve("/live/s/720p/playlist.m3u8?x=1", "../audio/p.m3u8"),
            "/live/s/audio/p.m3u8"
        );
        assert_eq!(resolve("/a/b.m3u8", "/c/d.m4s"), "/c/d.m4s");
        assert_eq!(
            resolve("/a/b.m3u8", "https://cdn.example/c/d.m4s"),
            "/c/d.m4s"
        );
    }

    #[test]
    fn a_live_join_starts_at_an_independent_part_behind_the_hold_back_and_reloads_blocking() {
        // Newest part ends at 42.3 (+5.0 s); PART-HOLD-BACK 1.0 s puts the target at +4.0 s,
        // where part 42.0 (independent) starts.
        let mut p = joined(3);
        let requests = p.next_requests(0.3);
        let video = media_of(&requests, 0).expect("a video part");
        assert_eq!(
            video.fetch,
            Fetch::Media {
                msn: 42,
                part: Some(0),
                hinted: false
            }
        );
        assert!(video.target.starts_with("/live/s/720p/42.0.m4s?CMCD="));
        assert!(
            video.target.contains("ot%3Dv") && video.target.contains("br%3D3000"),
            "{}",
            video.target
        );
        let audio = media_of(&requests, 1).expect("an audio part");
        assert!(audio.target.starts_with("/live/s/audio/42.0.m4s"));
        // The reload after a playlist asks for the part after the newest, as a delta update.
        let reload = requests
            .iter()
            .find(|r| r.track == 0 && matches!(r.fetch, Fetch::Playlist { blocking: true, .. }))
            .expect("a blocking reload");
        assert!(
            reload.target.starts_with(
                "/live/s/720p/playlist.m3u8?_HLS_msn=42&_HLS_part=3&_HLS_skip=YES&CMCD="
            ),
            "{}",
            reload.target
        );
        // Only one request per kind and track is ever in flight.
        assert!(p.next_requests(0.35).is_empty());
        assert_eq!(p.buffer(), 0.0);
        assert!(
            p.latency(start_ms() + 6000).is_none(),
            "no latency before the first frame"
        );
    }

    #[test]
    fn a_join_from_a_cached_playlist_tunes_in_to_the_part_its_age_says_is_newest() {
        let cached = |age: f64| MediaPlaylist {
            age,
            ..parse_media(&live(3)).unwrap()
        };
        let joined_from = |age: f64| {
            let mut p = Player::new(
                PlayerConfig::default(),
                "/live/s/master.m3u8",
                live_edge_ms(),
            );
            p.next_requests(0.0);
            p.on_multivariant(parse_multivariant(MULTIVARIANT).unwrap());
            for r in p.next_requests(0.1) {
                p.on_playlist(r.track, r.fetch, cached(age));
            }
            p
        };
        let reload_of = |requests: &[Request]| {
            requests
                .iter()
                .find(|r| r.track == 0 && matches!(r.fetch, Fetch::Playlist { blocking: true, .. }))
                .expect("a blocking reload")
                .target
                .clone()
        };

        // A second in a cache: the newest part is about 1.0 - 0.334 s, 2 parts, past 42.2. The
        // reload asks for 42.5, but the viewer starts from what it has, as hls.js does.
        let mut p = joined_from(1.0);
        let requests = p.next_requests(0.2);
        assert!(reload_of(&requests).contains("_HLS_msn=42&_HLS_part=5&"));
        assert_eq!(
            p.playback.head,
            Some(start_ms() + 4000),
            "newest part ends at +5.0 s"
        );

        // Two seconds: past PART-HOLD-BACK, so the start waits for the tuned-in answer.
        let mut p = joined_from(2.0);
        let requests = p.next_requests(0.2);
        assert!(
            reload_of(&requests).contains("_HLS_msn=43&_HLS_part=2&"),
            "{}",
            reload_of(&requests)
        );
        assert!(
            p.playback.head.is_none(),
            "no start before the tune-in answer"
        );
        for r in requests
            .iter()
            .filter(|r| matches!(r.fetch, Fetch::Playlist { .. }))
        {
            p.on_playlist(r.track, r.fetch, parse_media(&live(6)).unwrap());
        }
        // Newest part 42.5 ends at +6.0 s: the play head starts at the hold-back, +5.0 s.
        assert_eq!(p.playback.head, Some(start_ms() + 5000));

        // Across a segment boundary; nothing under a part target; at most 1.5 target
        // durations (3 s: 9 parts).
        assert_eq!(tune_in(&cached(1.7)).map(|t| t.target), Some((43, Some(1))));
        assert_eq!(tune_in(&cached(0.0)), None);
        assert_eq!(tune_in(&cached(0.4)), None);
        assert_eq!(
            tune_in(&cached(60.0)).map(|t| t.target),
            Some((44, Some(0)))
        );
    }

    #[test]
    fn parts_come_in_order_then_the_preload_hint() {
        let mut p = joined(3);
        for expected in ["42.0", "42.1", "42.2"] {
            let requests = p.next_requests(0.3);
            let video = media_of(&requests, 0).expect("a video part").clone();
            assert!(
                video.target.contains(&format!("/{expected}.m4s")),
                "{}",
                video.target
            );
            p.on_media(0, video.fetch, 40_000, 0.01);
            if let Some(audio) = media_of(&requests, 1) {
                p.on_media(1, audio.fetch, 4_000, 0.01);
            }
        }
        let requests = p.next_requests(0.4);
        let hinted = media_of(&requests, 0).expect("the hinted part");
        assert_eq!(
            hinted.fetch,
            Fetch::Media {
                msn: 42,
                part: Some(3),
                hinted: true
            }
        );
        assert!(hinted.target.starts_with("/live/s/720p/42.3.m4s"));
    }

    #[test]
    fn the_buffer_plays_in_real_time_and_a_dry_buffer_is_a_stall() {
        let mut p = joined(3);
        // Two parts of video and audio: 0.667 s buffered.
        for _ in 0..2 {
            let requests = p.next_requests(0.3);
            for r in requests
                .iter()
                .filter(|r| matches!(r.fetch, Fetch::Media { .. }))
            {
                p.on_media(r.track, r.fetch, 40_000, 0.01);
            }
        }
        assert!((p.buffer() - 0.667).abs() < 0.01, "{}", p.buffer());
        p.advance(0.5);
        assert_eq!(p.state(), State::Playing);
        assert_eq!(p.stats().startup, Some(0.5));
        // Live latency: the play head is at 42.0 (+4.0 s).
        let latency = p.latency(start_ms() + 5500).unwrap();
        assert!((latency - 1.5).abs() < 1e-9, "{latency}");
        p.advance(1.0);
        assert!((p.stats().played - 0.5).abs() < 1e-9);
        assert!((p.buffer() - 0.167).abs() < 0.01, "{}", p.buffer());
        // The buffer runs dry at 1.167 s: a stall, counted once, timed from then.
        p.advance(1.5);
        assert_eq!(p.state(), State::Stalled);
        assert_eq!(p.stats().stalls, 1);
        assert!((p.stats().played - 0.667).abs() < 0.01);
        p.advance(1.8);
        assert_eq!(p.stats().stalls, 1);
        assert!(
            (p.stalled_now(1.8) - 0.633).abs() < 0.01,
            "{}",
            p.stalled_now(1.8)
        );
        // The next request says the buffer ran dry (CMCD bs).
        let requests = p.next_requests(1.8);
        let media = media_of(&requests, 0).expect("the next part");
        assert!(media.target.contains("bs"), "{}", media.target);
        p.on_media(0, media.fetch, 40_000, 0.01);
        let audio = media_of(&requests, 1).expect("the next audio part").fetch;
        p.on_media(1, audio, 4_000, 0.01);
        p.advance(2.0);
        assert_eq!(p.state(), State::Playing);
        assert!(
            (p.stats().stalled - 0.833).abs() < 0.01,
            "{}",
            p.stats().stalled
        );
    }

    #[test]
    fn a_viewer_behind_its_target_with_buffer_to_spare_plays_faster_up_to_the_set_rate() {
        // Segment 42 complete (the edge at +6.0 s), a 1.5 s hold-back, and a viewer whose
        // clock reads +6.5 s: it plays from +4.5 s with 1.5 s buffered, 2 s behind at start.
        let playlist = live(6).replace("PART-HOLD-BACK=1.0", "PART-HOLD-BACK=1.5");
        let mut p = joined_to(&playlist, start_ms() + 6_500);
        for _ in 0..12 {
            let requests = p.next_requests(0.3);
            for r in &requests {
                if let Fetch::Media { msn: 42, .. } = r.fetch {
                    p.on_media(r.track, r.fetch, 40_000, 0.01);
                }
            }
        }
        assert!((p.buffer() - 1.5).abs() < 0.01, "{}", p.buffer());
        p.advance(0.5);
        assert_eq!(p.state(), State::Playing);
        assert_eq!(p.playback.rate, 1.2, "1.5 s behind its 1.5 s target");
        let head = p.playback.head.unwrap();
        p.advance(0.75);
        assert_eq!(
            p.playback.head.unwrap() - head,
            300,
            "0.3 s of media in 0.25 s"
        );
        assert!(p.buffer() > 1.0);
        p.advance(1.0);
        assert!(p.buffer() <= 1.0);
        assert_eq!(
            p.playback.rate, 1.0,
            "a second or less buffered: no catching up"
        );
    }

    #[test]
    fn slow_downloads_switch_down_at_the_next_segment_and_load_the_new_init() {
        let mut p = joined(6);
        // 40 KB parts taking 0.5 s each: 640 kbit/s, under the 720p variant's 3 Mbit/s.
        let mut switched_playlist = None;
        for _ in 0..6 {
            let requests = p.next_requests(1.0);
            for r in &requests {
                match r.fetch {
                    Fetch::Playlist { switch: true, .. } => switched_playlist = Some(r.clone()),
                    Fetch::Playlist { .. } => {
                        p.on_playlist(r.track, r.fetch, parse_media(&live(6)).unwrap())
                    }
                    _ => {}
                }
            }
            for r in requests
                .iter()
                .filter(|r| matches!(r.fetch, Fetch::Media { .. }))
            {
                p.on_media(r.track, r.fetch, 40_000, 0.5);
            }
        }
        let switch = switched_playlist.expect("the 360p playlist was asked for");
        assert!(
            switch.target.starts_with("/live/s/360p/playlist.m3u8"),
            "{}",
            switch.target
        );
        assert!(p.estimate().unwrap() < 1_000_000.0);
        p.on_playlist(0, switch.fetch, parse_media(&live(6)).unwrap());
        // The boundary (42.5 loaded) is reached: the switch completes, the init comes first.
        let requests = p.next_requests(1.1);
        assert_eq!(p.variant(), Some(1));
        assert_eq!(p.stats().switches, 1);
        let init = requests
            .iter()
            .find(|r| r.track == 0 && r.fetch == Fetch::Init)
            .expect("the 360p init");
        assert!(init.target.starts_with("/live/s/360p/init.mp4"));
        assert!(
            media_of(&requests, 0).is_none(),
            "media before the new init: {requests:?}"
        );
    }

    #[test]
    fn without_blocking_reloads_the_playlist_is_reloaded_once_a_target_duration() {
        let mut p = Player::new(PlayerConfig::default(), "/v/master.m3u8", live_edge_ms());
        p.next_requests(0.0);
        p.on_multivariant(
            parse_multivariant("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1000000\nv.m3u8\n").unwrap(),
        );
        let first = p.next_requests(0.0);
        assert_eq!(first.len(), 1);
        let live = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:7\n#EXTINF:2.0,\n7.ts\n#EXTINF:2.0,\n8.ts\n#EXTINF:2.0,\n9.ts\n#EXTINF:2.0,\n10.ts\n";
        p.on_playlist(0, first[0].fetch, parse_media(live).unwrap());
        let requests = p.next_requests(0.5);
        // Three target durations behind the end (8 s after 7's start): segment 8's start.
        let media = media_of(&requests, 0).expect("a segment");
        assert_eq!(
            media.fetch,
            Fetch::Media {
                msn: 8,
                part: None,
                hinted: false
            }
        );
        assert!(
            requests
                .iter()
                .all(|r| !matches!(r.fetch, Fetch::Playlist { .. }))
        );
        assert_eq!(p.next_wakeup(0.5), Some(1.5));
        let reload = p.next_requests(2.0);
        assert!(reload.iter().any(|r| r.fetch
            == Fetch::Playlist {
                blocking: false,
                switch: false
            }
            && r.target.starts_with("/v/v.m3u8?CMCD=")));
    }

    #[test]
    fn a_vod_stream_plays_from_the_start_to_the_end() {
        let mut p = Player::new(
            PlayerConfig::default(),
            "/vod/r/master.m3u8",
            live_edge_ms(),
        );
        p.next_requests(0.0);
        p.on_multivariant(
            parse_multivariant("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1000000\nv.m3u8\n").unwrap(),
        );
        let first = p.next_requests(0.0);
        let vod = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\n0.m4s\n#EXTINF:1.0,\n1.m4s\n#EXT-X-ENDLIST\n";
        p.on_playlist(0, first[0].fetch, parse_media(vod).unwrap());
        for _ in 0..2 {
            let requests = p.next_requests(0.1);
            assert!(
                requests
                    .iter()
                    .all(|r| !matches!(r.fetch, Fetch::Playlist { .. }))
            );
            let media = media_of(&requests, 0).expect("a segment").clone();
            p.on_media(0, media.fetch, 100_000, 0.05);
        }
        assert!(p.next_requests(0.2).is_empty());
        p.advance(0.2);
        assert_eq!(p.state(), State::Playing);
        assert!(p.latency(0).is_none(), "VOD has no live latency");
        p.advance(3.5);
        assert_eq!(p.state(), State::Ended);
        assert_eq!(p.stats().stalls, 0);
        assert!((p.stats().played - 3.0).abs() < 1e-9);
    }
}
