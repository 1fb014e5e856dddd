//! The CMAF packager's state machine, free of IO: it takes each rendition's init segment and
//! fragments from the transcoder and keeps the stream's segments and parts, which the LL-HLS
//! playlists ([`crate::hls`]) and the DASH manifest ([`crate::dash`]) describe and the
//! delivery shell serves.
//!
//! - **Parts** are the transcoder's fragments as they come (about one part target each).
//! - **Segments** start at a fragment that begins with a keyframe once the segment target has
//!   elapsed. Boundaries are taken at fixed multiples of the target on each transcoder run's
//!   own clock, so renditions whose keyframes are aligned cut at the same instants and keep
//!   the same media sequence numbers.
//! - **One timeline** per stream: every transcoder run restarts its media time at zero, so a
//!   run's fragments are moved (their `tfdt` rewritten) to where the run started in wall-clock
//!   time since the stream began. The first segment of a run is marked as a discontinuity,
//!   and media sequence numbers keep counting.
//! - **A bounded window**: segment descriptions are kept for the playlist (or the DVR
//!   window); the bytes of only the newest segments stay in memory once they are archived.
//!
//! Wall-clock time is passed in by the caller (`now_ms`, Unix milliseconds).

use std::collections::{BTreeMap, VecDeque};

use crate::fmp4::{Fragment, InitSegment, TrackInfo, TrackKind};
use crate::handoff::MediaEvent;
use bytes::{Bytes, BytesMut};

/// How a stream is cut and how much of it is kept.
#[derive(Debug, Clone, PartialEq)]
pub struct PackagerSettings {
    /// Target segment duration in seconds (a whole number of keyframe intervals).
    pub segment_target: f64,
    /// Target part duration in seconds.
    pub part_target: f64,
    /// Complete segments listed by a live playlist without DVR.
    pub playlist_segments: usize,
    /// Seconds of complete segments listed when DVR is on.
    pub dvr_window: Option<f64>,
    /// Complete, archived segments whose bytes stay in memory.
    pub memory_segments: usize,
    /// Complete segments kept in memory at most while the archive cannot take them.
    pub max_unarchived_segments: usize,
    /// Low-latency delivery: parts in the playlists, blocking reload, chunked DASH.
    pub low_latency: bool,
}

impl Default for PackagerSettings {
    fn default() -> Self {
        Self {
            segment_target: 2.0,
            part_target: 0.5,
            playlist_segments: 10,
            dvr_window: None,
            memory_segments: 12,
            max_unarchived_segments: 300,
            low_latency: true,
        }
    }
}

/// One part: a transcoder fragment.
#[derive(Debug, Clone)]
pub struct Part {
    /// Duration in the rendition's timescale.
    pub duration: u64,
    /// Starts with a keyframe (or is audio).
    pub independent: bool,
    /// The fragment, while it is held in memory.
    pub bytes: Option<Bytes>,
}

/// One media segment.
#[derive(Debug, Clone)]
pub struct Segment {
    /// Media sequence number.
    pub msn: u64,
    /// Start on the stream timeline, in the rendition's timescale.
    pub start: u64,
    /// Duration so far, in the rendition's timescale.
    pub duration: u64,
    /// Its parts, in order.
    pub parts: Vec<Part>,
    /// No more parts will be added.
    pub complete: bool,
    /// The first segment after a timeline break.
    pub discontinuity: bool,
    /// Discontinuity sequence number (transcoder runs before this one).
    pub discontinuity_sequence: u32,
    /// The init segment these parts decode with.
    pub init_id: u32,
    /// Wall-clock time of its first sample (Unix milliseconds).
    pub program_date_time_ms: u64,
    /// Bytes of all parts.
    pub size: u64,
    /// The archive holds it.
    pub archived: bool,
    /// A complete segment's bytes in one buffer, while in memory; its parts are slices of it,
    /// so serving the whole segment copies nothing.
    pub whole: Option<Bytes>,
}

impl Segment {
    /// The whole segment when every part is still in memory (a copy only while the segment
    /// is in progress).
    pub fn bytes(&self) -> Option<Bytes> {
        if let Some(whole) = &self.whole {
            return Some(whole.clone());
        }
        if self.parts.len() == 1 {
            return self.parts.first().and_then(|p| p.bytes.clone());
        }
        let mut out = BytesMut::with_capacity(usize::try_from(self.size).unwrap_or(0));
        for part in &self.parts {
            out.extend_from_slice(part.bytes.as_ref()?);
        }
        Some(out.freeze())
    }

    /// The segment's end on the stream timeline, in the rendition's timescale.
    pub fn end(&self) -> u64 {
        self.start + self.duration
    }

    /// Starts with a keyframe.
    pub fn independent(&self) -> bool {
        self.parts.first().is_some_and(|p| p.independent)
    }
}

/// An init segment version: a new one appears when a transcoder restart changes it.
#[derive(Debug, Clone)]
pub struct InitVersion {
    /// 0 for the first, then counting.
    pub id: u32,
    /// `ftyp` + `moov`.
    pub bytes: Bytes,
}

impl InitVersion {
    /// File name relative to the rendition (`init.mp4`, then `init-<id>.mp4`).
    pub fn file_name(&self) -> String {
        init_file_name(self.id)
    }
}

/// File name of init version `id`.
pub fn init_file_name(id: u32) -> String {
    if id == 0 {
        "init.mp4".to_owned()
    } else {
        format!("init-{id}.mp4")
    }
}

/// One rendition of a live stream.
#[derive(Debug, Clone)]
pub struct Rendition {
    /// Ladder name (`720p`, `audio`).
    pub name: String,
    /// Nominal bits per second.
    pub bandwidth: u32,
    /// What the init segment describes.
    pub track: TrackInfo,
    /// Frames per second, measured from the first video fragment.
    pub frame_rate: Option<f64>,
    /// Init versions still referenced, oldest first.
    pub inits: Vec<InitVersion>,
    /// Segments, oldest first; the last one may be in progress.
    pub segments: VecDeque<Segment>,
    /// The rendition has ended (no run in progress).
    pub ended: bool,
    /// Longest part seen, seconds.
    pub longest_part: f64,
    /// Longest complete segment seen, seconds.
    pub longest_segment: f64,
    run: Option<u32>,
    runs_seen: u32,
    /// Timeline start (ticks) of each run's first segment, by discontinuity sequence; kept
    /// after the segments leave the window, so a DASH Period keeps its start.
    run_starts: Vec<u64>,
    run_offset: u64,
    next_boundary: f64,
    boundary_tolerance: f64,
    next_msn: u64,
    pending_discontinuity: bool,
    pending_init: Option<Bytes>,
}

impl Rendition {
    /// A finished rendition rebuilt from an archive index (for VOD).
    pub fn archived(
        name: &str,
        bandwidth: u32,
        track: TrackInfo,
        frame_rate: Option<f64>,
        inits: Vec<InitVersion>,
        segments: VecDeque<Segment>,
    ) -> Self {
        let next_msn = segments.back().map_or(0, |s| s.msn + 1);
        let mut r = new_rendition_with(name, track, bandwidth);
        r.frame_rate = frame_rate;
        r.inits = inits;
        r.segments = segments;
        r.ended = true;
        r.next_msn = next_msn;
        r
    }

    /// The rendition's description without its segments (cheap to copy out of the lock).
    pub fn header(&self) -> Rendition {
        Rendition {
            name: self.name.clone(),
            bandwidth: self.bandwidth,
            track: self.track.clone(),
            frame_rate: self.frame_rate,
            inits: Vec::new(),
            segments: VecDeque::new(),
            ended: self.ended,
            longest_part: self.longest_part,
            longest_segment: self.longest_segment,
            run: self.run,
            runs_seen: self.runs_seen,
            run_starts: self.run_starts.clone(),
            run_offset: self.run_offset,
            next_boundary: self.next_boundary,
            boundary_tolerance: self.boundary_tolerance,
            next_msn: self.next_msn,
            pending_discontinuity: self.pending_discontinuity,
            pending_init: None,
        }
    }

    /// Where run `sequence` (a discontinuity sequence) started on the timeline, in ticks, if
    /// this rendition saw it start.
    pub fn run_start(&self, sequence: u32) -> Option<u64> {
        self.run_starts.get(sequence as usize).copied()
    }

    /// Sort key for listings: video before audio, tallest first, then by name.
    pub fn listing_order(&self) -> (bool, std::cmp::Reverse<u16>, String) {
        (
            self.track.kind != TrackKind::Video,
            std::cmp::Reverse(self.track.height),
            self.name.clone(),
        )
    }

    /// The segments a live playlist or manifest lists: the last `list` complete ones (all
    /// held when `None`), plus the one in progress when `in_progress`.
    pub fn listed_segments(&self, list: Option<usize>, in_progress: bool) -> Vec<&Segment> {
        let all: Vec<&Segment> = self
            .segments
            .iter()
            .filter(|s| s.complete || (in_progress && !s.parts.is_empty()))
            .collect();
        let Some(list) = list else {
            return all;
        };
        let complete = all.iter().filter(|s| s.complete).count();
        let drop = complete.saturating_sub(list);
        all.into_iter().skip(drop).collect()
    }

    /// Transcoder runs this rendition has started (its current run is `runs() - 1`).
    pub fn runs(&self) -> u32 {
        self.runs_seen
    }

    /// Timescale of the track.
    pub fn timescale(&self) -> u32 {
        self.track.timescale.max(1)
    }

    /// Seconds of `ticks`.
    pub fn seconds(&self, ticks: u64) -> f64 {
        ticks as f64 / f64::from(self.timescale())
    }

    /// The init version `id`.
    pub fn init(&self, id: u32) -> Option<&InitVersion> {
        self.inits.iter().find(|i| i.id == id)
    }

    /// The segment `msn`.
    pub fn segment(&self, msn: u64) -> Option<&Segment> {
        let first = self.segments.front()?.msn;
        let index = usize::try_from(msn.checked_sub(first)?).ok()?;
        self.segments.get(index)
    }

    fn segment_mut(&mut self, msn: u64) -> Option<&mut Segment> {
        let first = self.segments.front()?.msn;
        let index = usize::try_from(msn.checked_sub(first)?).ok()?;
        self.segments.get_mut(index)
    }

    /// The newest segment (possibly in progress).
    pub fn last_segment(&self) -> Option<&Segment> {
        self.segments.back()
    }

    /// The newest complete segment.
    pub fn last_complete(&self) -> Option<&Segment> {
        self.segments.iter().rev().find(|s| s.complete)
    }

    /// The newest part that exists, as `(msn, part index)`.
    pub fn last_part(&self) -> Option<(u64, usize)> {
        let last = self.segments.back()?;
        match last.parts.len() {
            0 => {
                let before = self.segment(last.msn.checked_sub(1)?)?;
                Some((before.msn, before.parts.len().checked_sub(1)?))
            }
            n => Some((last.msn, n - 1)),
        }
    }

    /// The part a client should ask for next, as `(msn, part index)`: the preload hint.
    /// Once the segment in progress has reached its boundary, the next part starts the next
    /// segment (the keyframes are on the same clock), so that is the one hinted.
    pub fn next_part(&self) -> Option<(u64, usize)> {
        if self.ended {
            return None;
        }
        let last = self.segments.back()?;
        let run_end = self.seconds(last.end().saturating_sub(self.run_offset));
        let at_boundary = run_end + self.boundary_tolerance >= self.next_boundary;
        if last.complete || (!last.parts.is_empty() && at_boundary) {
            Some((last.msn + 1, 0))
        } else {
            Some((last.msn, last.parts.len()))
        }
    }

    /// Whether part `part` of segment `msn` exists.
    pub fn has_part(&self, msn: u64, part: usize) -> bool {
        self.segment(msn).is_some_and(|s| part < s.parts.len())
    }

    /// Whether segment `msn` is complete.
    pub fn has_complete_segment(&self, msn: u64) -> bool {
        self.segment(msn).is_some_and(|s| s.complete)
            || self.segments.back().is_some_and(|s| s.msn > msn)
    }

    /// Media sequence number the next segment will get.
    pub fn next_msn(&self) -> u64 {
        self.next_msn
    }

    /// Bytes held in memory by this rendition's parts and inits.
    pub fn memory_bytes(&self) -> u64 {
        let parts: u64 = self
            .segments
            .iter()
            .flat_map(|s| s.parts.iter())
            .filter_map(|p| p.bytes.as_ref().map(|b| b.len() as u64))
            .sum();
        parts + self.inits.iter().map(|i| i.bytes.len() as u64).sum::<u64>()
    }

    /// Measured bits per second over the complete segments: (average, peak).
    pub fn measured_bitrate(&self) -> Option<(u32, u32)> {
        let mut bits = 0f64;
        let mut seconds = 0f64;
        let mut peak = 0f64;
        for segment in self.segments.iter().filter(|s| s.complete) {
            let duration = self.seconds(segment.duration);
            if duration <= 0.0 {
                continue;
            }
            bits += segment.size as f64 * 8.0;
            seconds += duration;
            peak = f64::max(peak, segment.size as f64 * 8.0 / duration);
        }
        (seconds > 0.0).then(|| (clamp_u32(bits / seconds), clamp_u32(peak)))
    }
}

fn clamp_u32(v: f64) -> u32 {
    v.round().clamp(0.0, f64::from(u32::MAX)) as u32
}

/// What happened to the stream as a result of an event: what the shell must act on.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Applied {
    /// Playlists changed (a part or segment was added, or a rendition ended).
    pub changed: bool,
    /// Segments completed by this event, as `(msn)`, to archive.
    pub completed: Vec<u64>,
    /// A new init version to archive.
    pub new_init: Option<u32>,
}

/// Why an event could not be applied.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PackagerError {
    /// A fragment arrived before any init segment.
    #[error("rendition {0}: a fragment arrived before its init segment")]
    NoInit(String),
    /// A fragment arrived after the stream was ended, before a new init segment began a run.
    #[error("rendition {0}: a fragment arrived after the stream ended")]
    Ended(String),
    /// The fragment's decode time could not be moved onto the timeline.
    #[error("rendition {rendition}: {message}")]
    Timeline {
        /// Rendition name.
        rendition: String,
        /// What failed.
        message: String,
    },
}

/// All renditions of one live stream and their shared timeline.
#[derive(Debug, Clone)]
pub struct StreamPackager {
    settings: PackagerSettings,
    renditions: BTreeMap<String, Rendition>,
    /// Wall-clock time of timeline zero (Unix milliseconds).
    anchor_ms: Option<u64>,
    /// Newest transcoder run that has started, with its timeline offset (seconds) and its
    /// first media sequence number.
    run: Option<(u32, f64, u64)>,
    ended: bool,
}

impl StreamPackager {
    /// An empty stream.
    pub fn new(settings: PackagerSettings) -> Self {
        Self {
            settings,
            renditions: BTreeMap::new(),
            anchor_ms: None,
            run: None,
            ended: false,
        }
    }

    /// The settings.
    pub fn settings(&self) -> &PackagerSettings {
        &self.settings
    }

    /// Wall-clock time of timeline zero (Unix milliseconds), once media has arrived.
    pub fn anchor_ms(&self) -> Option<u64> {
        self.anchor_ms
    }

    /// Pins timeline zero to `now_ms`, the moment the publisher's first media reached the
    /// origin, unless the timeline already has an anchor. Without it the anchor is taken when
    /// the transcoder's first fragment arrives, which makes every `PROGRAM-DATE-TIME` and the
    /// DASH timeline later than the pictures by the transcoder's start-up, and viewers'
    /// latency look that much shorter than it is.
    pub fn start_clock(&mut self, now_ms: u64) {
        self.anchor_ms.get_or_insert(now_ms);
    }

    /// The stream has ended: every rendition is complete and no more media will come.
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// Transcoder runs started so far (by the rendition furthest along).
    pub fn runs(&self) -> u32 {
        self.renditions
            .values()
            .map(|r| r.runs_seen)
            .max()
            .unwrap_or(0)
    }

    /// The rendition `name`.
    pub fn rendition(&self, name: &str) -> Option<&Rendition> {
        self.renditions.get(name)
    }

    /// Mutable access for the shell's bookkeeping (marking segments archived).
    pub fn mark_archived(&mut self, rendition: &str, msn: u64) {
        if let Some(segment) = self
            .renditions
            .get_mut(rendition)
            .and_then(|r| r.segment_mut(msn))
        {
            segment.archived = true;
        }
        self.trim_memory();
    }

    /// Renditions with at least one init, highest video first and audio last.
    pub fn renditions(&self) -> Vec<&Rendition> {
        let mut list: Vec<&Rendition> = self
            .renditions
            .values()
            .filter(|r| !r.inits.is_empty())
            .collect();
        list.sort_by_key(|r| r.listing_order());
        list
    }

    /// Bytes of media held in memory.
    pub fn memory_bytes(&self) -> u64 {
        self.renditions.values().map(Rendition::memory_bytes).sum()
    }

    /// Ends the stream: completes every in-progress segment; returns them as
    /// `(rendition, msn)`.
    pub fn end(&mut self) -> Vec<(String, u64)> {
        let mut completed = Vec::new();
        for rendition in self.renditions.values_mut() {
            if let Some(msn) = close_segment(rendition) {
                completed.push((rendition.name.clone(), msn));
            }
            rendition.ended = true;
        }
        self.ended = true;
        completed
    }

    /// Applies one transcoder event of `rendition` at wall-clock `now_ms`.
    pub fn apply(
        &mut self,
        rendition: &str,
        event: MediaEvent,
        now_ms: u64,
    ) -> Result<Applied, PackagerError> {
        let mut applied = Applied::default();
        match event {
            MediaEvent::Init { bandwidth, init } => {
                self.ended = false;
                let r = self
                    .renditions
                    .entry(rendition.to_owned())
                    .or_insert_with(|| new_rendition(rendition, &init, bandwidth));
                r.bandwidth = bandwidth;
                r.track = init.track.clone();
                r.ended = false;
                r.run = None;
                r.pending_init = Some(init.bytes.clone());
                applied.changed = true;
            }
            MediaEvent::Fragment(fragment) => {
                applied = self.add_fragment(rendition, &fragment, now_ms)?;
            }
            MediaEvent::Discontinuity => {
                if let Some(r) = self.renditions.get_mut(rendition) {
                    if let Some(msn) = close_segment(r) {
                        applied.completed.push(msn);
                    }
                    r.pending_discontinuity = true;
                    applied.changed = true;
                }
            }
            MediaEvent::End => {
                if let Some(r) = self.renditions.get_mut(rendition) {
                    if let Some(msn) = close_segment(r) {
                        applied.completed.push(msn);
                    }
                    r.ended = true;
                    applied.changed = true;
                }
            }
        }
        self.trim();
        Ok(applied)
    }

    fn add_fragment(
        &mut self,
        name: &str,
        fragment: &Fragment,
        now_ms: u64,
    ) -> Result<Applied, PackagerError> {
        if self.ended {
            return Err(PackagerError::Ended(name.to_owned()));
        }
        let mut applied = Applied::default();
        let (timescale, joining_run) = match self.renditions.get(name) {
            Some(r) if r.pending_init.is_some() || !r.inits.is_empty() => {
                (f64::from(r.timescale()), r.run.is_none())
            }
            _ => return Err(PackagerError::NoInit(name.to_owned())),
        };
        let run_time = fragment.decode_time as f64 / timescale;
        let run_end = fragment.decode_time.saturating_add(fragment.duration) as f64 / timescale;

        if joining_run {
            let (run, offset, first_msn) = self.join_run(name, run_end, now_ms);
            let Some(r) = self.renditions.get_mut(name) else {
                return Err(PackagerError::NoInit(name.to_owned()));
            };
            if let Some(msn) = close_segment(r) {
                applied.completed.push(msn);
            }
            r.run = Some(run);
            r.run_offset = (offset * timescale).round() as u64;
            r.next_msn = r.next_msn.max(first_msn);
            r.pending_discontinuity |= r.runs_seen > 0;
            r.runs_seen += 1;
            if let Some(bytes) = r.pending_init.take() {
                let same = r.inits.last().is_some_and(|i| i.bytes == bytes);
                if !same {
                    let id = r.inits.last().map_or(0, |i| i.id + 1);
                    r.inits.push(InitVersion { id, bytes });
                    applied.new_init = Some(id);
                }
            }
        }
        let anchor_ms = self.anchor_ms.unwrap_or(now_ms);
        let settings = self.settings.clone();
        let Some(r) = self.renditions.get_mut(name) else {
            return Err(PackagerError::NoInit(name.to_owned()));
        };

        let previous_end = r.segments.back().map_or(0, Segment::end);
        let timeline_time = fragment
            .decode_time
            .saturating_add(r.run_offset)
            .max(previous_end);
        let moved = if timeline_time == fragment.decode_time {
            fragment.clone()
        } else {
            fragment
                .with_decode_time(timeline_time)
                .map_err(|e| PackagerError::Timeline {
                    rendition: name.to_owned(),
                    message: e.to_string(),
                })?
        };
        let independent = fragment.starts_with_keyframe || r.track.kind == TrackKind::Audio;
        if r.track.kind == TrackKind::Video && r.frame_rate.is_none() && fragment.duration > 0 {
            r.frame_rate =
                Some(f64::from(fragment.sample_count) * timescale / fragment.duration as f64);
        }

        let tolerance = (settings.part_target / 2.0).min(settings.segment_target / 4.0);
        r.boundary_tolerance = tolerance;
        let open = r.segments.back().is_some_and(|s| !s.complete);
        let cut = !open || (independent && run_time + tolerance >= r.next_boundary);
        if cut {
            if let Some(msn) = close_segment(r) {
                applied.completed.push(msn);
            }
            let msn = r.next_msn;
            r.next_msn += 1;
            let k = ((run_time + tolerance) / settings.segment_target).floor() + 1.0;
            r.next_boundary = k * settings.segment_target;
            let discontinuity = std::mem::take(&mut r.pending_discontinuity);
            let sequence = r.runs_seen.saturating_sub(1);
            // A run that gave this rendition no segment starts where the next one does.
            while r.run_starts.len() <= sequence as usize {
                r.run_starts.push(timeline_time);
            }
            let start_seconds = timeline_time as f64 / timescale;
            r.segments.push_back(Segment {
                msn,
                start: timeline_time,
                duration: 0,
                parts: Vec::new(),
                complete: false,
                discontinuity,
                discontinuity_sequence: sequence,
                init_id: r.inits.last().map_or(0, |i| i.id),
                program_date_time_ms: anchor_ms.saturating_add((start_seconds * 1000.0) as u64),
                size: 0,
                archived: false,
                whole: None,
            });
        }
        let part_seconds = fragment.duration as f64 / timescale;
        r.longest_part = r.longest_part.max(part_seconds);
        if let Some(segment) = r.segments.back_mut() {
            segment.duration = timeline_time.saturating_add(fragment.duration) - segment.start;
            segment.size += moved.bytes.len() as u64;
            segment.parts.push(Part {
                duration: fragment.duration,
                independent,
                bytes: Some(moved.bytes),
            });
        }
        applied.changed = true;
        Ok(applied)
    }

    /// Places a transcoder run on the timeline when its first fragment (ending at `run_end`
    /// seconds of run time) arrives; every rendition of the run shares the result.
    fn join_run(&mut self, name: &str, run_end: f64, now_ms: u64) -> (u32, f64, u64) {
        let runs_seen = self.renditions.get(name).map_or(0, |r| r.runs_seen);
        if let Some((run, offset, first_msn)) = self.run
            && run == runs_seen
        {
            return (run, offset, first_msn);
        }
        let anchor = *self
            .anchor_ms
            .get_or_insert_with(|| now_ms.saturating_sub((run_end * 1000.0) as u64));
        let timeline_end = self
            .renditions
            .values()
            .filter_map(|r| r.segments.back().map(|s| r.seconds(s.end())))
            .fold(0.0, f64::max);
        let wall = now_ms.saturating_sub(anchor) as f64 / 1000.0 - run_end;
        let offset = if runs_seen == 0 && timeline_end == 0.0 {
            0.0
        } else {
            wall.max(timeline_end)
        };
        let first_msn = self
            .renditions
            .values()
            .map(|r| r.next_msn)
            .max()
            .unwrap_or(0);
        self.run = Some((runs_seen, offset, first_msn));
        (runs_seen, offset, first_msn)
    }

    /// Drops segments that left the listing window and bytes that left the memory window.
    fn trim(&mut self) {
        let settings = &self.settings;
        for r in self.renditions.values_mut() {
            let complete = r.segments.iter().filter(|s| s.complete).count();
            let keep_complete = match settings.dvr_window {
                Some(window) => {
                    let newest_end = r.segments.back().map_or(0, Segment::end);
                    let window = (window * f64::from(r.timescale())) as u64;
                    let cutoff = newest_end.saturating_sub(window);
                    r.segments
                        .iter()
                        .filter(|s| s.complete && s.end() > cutoff)
                        .count()
                        .max(settings.playlist_segments)
                }
                None => settings.playlist_segments.max(1) + 2,
            };
            let mut excess = complete.saturating_sub(keep_complete);
            while excess > 0 && r.segments.front().is_some_and(|s| s.complete) {
                r.segments.pop_front();
                excess -= 1;
            }
            let oldest_init = r.segments.front().map_or(u32::MAX, |s| s.init_id);
            let newest_init = r.inits.last().map(|i| i.id);
            r.inits
                .retain(|i| i.id >= oldest_init || Some(i.id) == newest_init);
        }
        self.trim_memory();
    }

    fn trim_memory(&mut self) {
        let settings = &self.settings;
        for r in self.renditions.values_mut() {
            let complete = r.segments.iter().filter(|s| s.complete).count();
            let mut droppable = complete.saturating_sub(settings.memory_segments);
            let mut unarchived_in_memory = r
                .segments
                .iter()
                .filter(|s| s.complete && !s.archived && s.parts.iter().any(|p| p.bytes.is_some()))
                .count();
            for segment in r.segments.iter_mut() {
                if droppable == 0 {
                    break;
                }
                if !segment.complete {
                    break;
                }
                droppable -= 1;
                let held = segment.parts.iter().any(|p| p.bytes.is_some());
                if !held {
                    continue;
                }
                // Unarchived bytes stay (the archive is retrying) unless too many pile up.
                if !segment.archived {
                    if unarchived_in_memory <= settings.max_unarchived_segments {
                        continue;
                    }
                    unarchived_in_memory -= 1;
                }
                for part in &mut segment.parts {
                    part.bytes = None;
                }
                segment.whole = None;
            }
        }
    }
}

fn new_rendition(name: &str, init: &InitSegment, bandwidth: u32) -> Rendition {
    new_rendition_with(name, init.track.clone(), bandwidth)
}

fn new_rendition_with(name: &str, track: TrackInfo, bandwidth: u32) -> Rendition {
    Rendition {
        name: name.to_owned(),
        bandwidth,
        track,
        frame_rate: None,
        inits: Vec::new(),
        segments: VecDeque::new(),
        ended: false,
        longest_part: 0.0,
        longest_segment: 0.0,
        run: None,
        runs_seen: 0,
        run_starts: Vec::new(),
        run_offset: 0,
        next_boundary: 0.0,
        boundary_tolerance: 0.0,
        next_msn: 0,
        pending_discontinuity: false,
        pending_init: None,
    }
}

/// Completes the rendition's in-progress segment; returns its msn.
fn close_segment(r: &mut Rendition) -> Option<u64> {
    let timescale = f64::from(r.timescale());
    let segment = r.segments.back_mut()?;
    if segment.complete {
        return None;
    }
    if segment.parts.is_empty() {
        r.segments.pop_back();
        r.next_msn = r.next_msn.saturating_sub(1);
        return None;
    }
    segment.complete = true;
    // One buffer for the whole segment, parts re-pointed into it: segment requests and the
    // archive then share it instead of concatenating parts each time.
    if let Some(whole) = segment.bytes() {
        let mut at = 0;
        for part in &mut segment.parts {
            let len = part.bytes.as_ref().map_or(0, Bytes::len);
            part.bytes = Some(whole.slice(at..at + len));
            at += len;
        }
        segment.whole = Some(whole);
    }
    let seconds = segment.duration as f64 / timescale;
    r.longest_segment = r.longest_segment.max(seconds);
    Some(segment.msn)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::fmp4::TrackKind;
    use crate::testing::{feed_video, fragment, init};

    fn settings() -> PackagerSettings {
        PackagerSettings {
            playlist_segments: 3,
            memory_segments: 2,
            ..PackagerSettings::default()
        }
    }

    #[test]
    fn parts_at_fragments_segments_at_keyframes() {
        let mut p = StreamPackager::new(settings());
        let mut now = 1_000_000;
        p.apply("720p", init(TrackKind::Video, 15_360, 1), now)
            .unwrap();
        feed_video(&mut p, "720p", 0.0, 5.0, &mut now);
        let r = p.rendition("720p").unwrap();
        let msns: Vec<u64> = r.segments.iter().map(|s| s.msn).collect();
        assert_eq!(msns, vec![0, 1, 2]);
        assert_eq!(r.segments[0].parts.len(), 4);
        assert!(r.segments[0].complete && r.segments[1].complete);
        let whole = r.segments[0].whole.clone().unwrap();
        assert_eq!(whole.len(), 400);
        assert_eq!(
            r.segments[0].bytes().unwrap().as_ptr(),
            whole.as_ptr(),
            "no copy"
        );
        assert_eq!(
            r.segments[0].parts[1].bytes.as_ref().unwrap().as_ptr(),
            whole[100..].as_ptr(),
            "parts are slices of the whole"
        );
        assert!(!r.segments[2].complete);
        assert_eq!(r.segments[2].parts.len(), 2);
        assert!(r.segments[1].parts[0].independent);
        assert!(!r.segments[1].parts[1].independent);
        assert_eq!(r.seconds(r.segments[1].duration), 2.0);
        assert_eq!(r.last_part(), Some((2, 1)));
        assert_eq!(r.next_part(), Some((2, 2)));
        // At the segment's end the next part is the next segment's first.
        feed_video(&mut p, "720p", 5.0, 1.0, &mut now);
        let r = p.rendition("720p").unwrap();
        assert_eq!(r.segment(2).map(|s| s.parts.len()), Some(4));
        assert_eq!(r.next_part(), Some((3, 0)));
        assert!((r.frame_rate.unwrap() - 30.0).abs() < 1e-9);
        // The anchor is the wall-clock time of timeline zero.
        assert_eq!(p.anchor_ms(), Some(1_000_000 - 500));
        assert_eq!(r.segments[1].program_date_time_ms, 1_000_000 - 500 + 2000);
    }

    #[test]
    fn audio_cuts_near_the_video_boundaries_without_drift() {
        let mut p = StreamPackager::new(settings());
        let now = 1_000;
        p.apply("audio", init(TrackKind::Audio, 48_000, 2), now)
            .unwrap();
        // 22 AAC frames (0.469 s) per fragment, for 30 s.
        let frag = 22 * 1024;
        let mut t = 0u64;
        while t < 30 * 48_000 {
            p.apply("audio", fragment(t, frag, false), now).unwrap();
            t += frag;
        }
        let r = p.rendition("audio").unwrap();
        for s in r.segments.iter() {
            let start = r.seconds(s.start);
            let boundary = s.msn as f64 * 2.0;
            assert!(
                (start - boundary).abs() <= 0.5,
                "segment {} starts at {start}",
                s.msn
            );
        }
        assert_eq!(r.segments.back().unwrap().msn, 14);
    }

    #[test]
    fn a_restart_continues_the_timeline_and_counting() {
        let mut p = StreamPackager::new(settings());
        let mut now = 10_000_000;
        p.apply("720p", init(TrackKind::Video, 15_360, 1), now)
            .unwrap();
        feed_video(&mut p, "720p", 0.0, 4.0, &mut now);
        let end = p.apply("720p", MediaEvent::End, now).unwrap();
        assert_eq!(end.completed, vec![1]);
        // The publisher is away for 10 s, then the transcoder starts again at zero with
        // a different init.
        now += 10_000;
        p.apply("720p", MediaEvent::Discontinuity, now).unwrap();
        p.apply("720p", init(TrackKind::Video, 15_360, 9), now)
            .unwrap();
        let mut applied = Vec::new();
        let ts = 15_360u64;
        for i in 0..4u64 {
            applied.push(
                p.apply("720p", fragment(i * ts / 2, ts / 2, i == 0), now)
                    .unwrap(),
            );
            now += 500;
        }
        assert_eq!(applied[0].new_init, Some(1));
        let r = p.rendition("720p").unwrap();
        let restarted = r.segment(2).unwrap();
        assert!(restarted.discontinuity);
        assert_eq!(restarted.discontinuity_sequence, 1);
        assert_eq!(restarted.init_id, 1);
        // Placed at its wall-clock time, after the gap, not at zero.
        let start = r.seconds(restarted.start);
        assert!((start - 14.0).abs() < 0.6, "restarted at {start}");
        assert!(!r.segment(1).unwrap().discontinuity);
        assert_eq!(r.inits.len(), 2);
    }

    #[test]
    fn renditions_of_a_run_share_offset_and_numbering() {
        let mut p = StreamPackager::new(settings());
        let mut now = 5_000_000;
        for name in ["720p", "480p"] {
            p.apply(name, init(TrackKind::Video, 15_360, 1), now)
                .unwrap();
        }
        let mut now2 = now;
        feed_video(&mut p, "720p", 0.0, 6.0, &mut now);
        feed_video(&mut p, "480p", 0.0, 4.5, &mut now2);
        for name in ["720p", "480p"] {
            p.apply(name, MediaEvent::End, now).unwrap();
            p.apply(name, MediaEvent::Discontinuity, now).unwrap();
            p.apply(name, init(TrackKind::Video, 15_360, 1), now)
                .unwrap();
        }
        now += 3_000;
        let mut a = now;
        feed_video(&mut p, "720p", 0.0, 2.0, &mut a);
        let mut b = now + 700;
        feed_video(&mut p, "480p", 0.0, 2.0, &mut b);
        let hi = p.rendition("720p").unwrap();
        let lo = p.rendition("480p").unwrap();
        let hi_seg = hi.segments.back().unwrap();
        let lo_seg = lo.segments.back().unwrap();
        assert_eq!(hi_seg.msn, 3);
        assert_eq!(
            lo_seg.msn, 3,
            "the run starts at the same msn in every rendition"
        );
        assert_eq!(hi_seg.start, lo_seg.start);
        // Same init bytes: no new version.
        assert_eq!(hi.inits.len(), 1);
        assert_eq!(hi_seg.init_id, 0);
    }

    #[test]
    fn window_and_memory_are_bounded_until_archived() {
        let mut p = StreamPackager::new(settings());
        let mut now = 1;
        p.apply("720p", init(TrackKind::Video, 15_360, 1), now)
            .unwrap();
        feed_video(&mut p, "720p", 0.0, 40.0, &mut now);
        let r = p.rendition("720p").unwrap();
        // playlist_segments (3) + 2 complete, and the one in progress.
        assert_eq!(r.segments.len(), 6);
        // Nothing archived: the bytes are all still held.
        assert!(r.segments.iter().all(|s| s.bytes().is_some()));
        let msns: Vec<u64> = r.segments.iter().map(|s| s.msn).collect();
        for msn in msns {
            p.mark_archived("720p", msn);
        }
        let r = p.rendition("720p").unwrap();
        let held = r.segments.iter().filter(|s| s.bytes().is_some()).count();
        assert_eq!(held, 3, "two complete segments and the one in progress");
        assert!(r.segments.back().unwrap().bytes().is_some());
    }

    #[test]
    fn dvr_keeps_the_window_in_seconds() {
        let mut p = StreamPackager::new(PackagerSettings {
            dvr_window: Some(20.0),
            ..settings()
        });
        let mut now = 1;
        p.apply("720p", init(TrackKind::Video, 15_360, 1), now)
            .unwrap();
        feed_video(&mut p, "720p", 0.0, 60.0, &mut now);
        let r = p.rendition("720p").unwrap();
        let complete = r.segments.iter().filter(|s| s.complete).count();
        assert_eq!(
            complete, 9,
            "20 s: nine complete segments and the one in progress"
        );
    }

    #[test]
    fn fragment_before_init_is_an_error() {
        let mut p = StreamPackager::new(settings());
        assert!(matches!(
            p.apply("720p", fragment(0, 10, true), 0),
            Err(PackagerError::NoInit(_))
        ));
    }

    #[test]
    fn end_completes_everything() {
        let mut p = StreamPackager::new(settings());
        let mut now = 1;
        p.apply("720p", init(TrackKind::Video, 15_360, 1), now)
            .unwrap();
        feed_video(&mut p, "720p", 0.0, 3.0, &mut now);
        assert_eq!(p.end(), vec![("720p".to_owned(), 1)]);
        assert!(p.ended());
        let r = p.rendition("720p").unwrap();
        assert_eq!(r.next_part(), None);
        assert!(r.segments.iter().all(|s| s.complete));
    }

    #[test]
    fn fragments_after_the_end_are_refused_until_a_new_init() {
        let mut p = StreamPackager::new(settings());
        let mut now = 1;
        p.apply("720p", init(TrackKind::Video, 15_360, 1), now)
            .unwrap();
        feed_video(&mut p, "720p", 0.0, 3.0, &mut now);
        let segments = p.rendition("720p").unwrap().segments.len();
        p.end();
        assert!(matches!(
            p.apply("720p", fragment(3 * 15_360, 7_680, true), now),
            Err(PackagerError::Ended(_))
        ));
        assert_eq!(p.rendition("720p").unwrap().segments.len(), segments);
        assert!(p.ended());

        p.apply("720p", init(TrackKind::Video, 15_360, 1), now)
            .unwrap();
        assert!(p.apply("720p", fragment(0, 7_680, true), now).is_ok());
        assert!(!p.ended());
    }
}
