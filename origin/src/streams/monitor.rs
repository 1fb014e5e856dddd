//! What the transcoder hands over, per rendition, as operators see it in the API: codec,
//! size, fragments and bytes received, discontinuities and the media times of the latest
//! keyframes (the same across renditions when they are aligned). It is a [`MediaSink`] that
//! passes every event on to the next sink (the packager).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use cascade_media::fmp4::TrackKind;
use cascade_media::handoff::{MediaEvent, MediaSink};
use serde::Serialize;

/// Keyframe times kept per rendition.
const RECENT_KEYFRAMES: usize = 32;

/// One rendition's hand-off so far.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RenditionStats {
    /// Rendition name (`720p`, `audio`).
    pub name: String,
    /// RFC 6381 codec string.
    pub codec: String,
    /// Pixels (video).
    pub width: u16,
    /// Pixels (video).
    pub height: u16,
    /// Hz (audio).
    pub sample_rate: u32,
    /// Nominal bits per second.
    pub bandwidth: u32,
    /// Init segments received (one per transcoder run).
    pub init_segments: u64,
    /// Fragments received.
    pub fragments: u64,
    /// Fragments that start with a keyframe.
    pub keyframe_fragments: u64,
    /// Bytes of fragments received.
    pub bytes: u64,
    /// Discontinuities signalled.
    pub discontinuities: u64,
    /// Media time (seconds) of the end of the last fragment, in the current run.
    pub media_time: f64,
    /// Media times (seconds) of the latest keyframes in the current run, oldest first.
    pub recent_keyframes: VecDeque<f64>,
    /// The rendition ended.
    pub ended: bool,
    #[serde(skip)]
    timescale: u32,
}

/// Per-stream, per-rendition statistics of the hand-off.
pub struct IngestMonitor {
    streams: Mutex<BTreeMap<String, BTreeMap<String, RenditionStats>>>,
    next: Option<Arc<dyn MediaSink>>,
}

impl IngestMonitor {
    /// A monitor passing events on to `next`.
    pub fn new(next: Option<Arc<dyn MediaSink>>) -> Self {
        Self {
            streams: Mutex::new(BTreeMap::new()),
            next,
        }
    }

    /// The renditions of `stream_id` (highest video first, audio last).
    pub fn renditions(&self, stream_id: &str) -> Vec<RenditionStats> {
        let Ok(streams) = self.streams.lock() else {
            return Vec::new();
        };
        let mut list: Vec<RenditionStats> = streams
            .get(stream_id)
            .map(|r| r.values().cloned().collect())
            .unwrap_or_default();
        list.sort_by_key(|r| (r.name == "audio", std::cmp::Reverse(r.height)));
        list
    }

    /// Forgets a deleted stream.
    pub fn forget(&self, stream_id: &str) {
        if let Ok(mut streams) = self.streams.lock() {
            streams.remove(stream_id);
        }
    }
}

impl MediaSink for IngestMonitor {
    fn deliver(&self, stream_id: &str, rendition: &str, event: MediaEvent) {
        if let Ok(mut streams) = self.streams.lock() {
            let stats = streams
                .entry(stream_id.to_owned())
                .or_default()
                .entry(rendition.to_owned())
                .or_insert_with(|| RenditionStats {
                    name: rendition.to_owned(),
                    ..Default::default()
                });
            match &event {
                MediaEvent::Init { bandwidth, init } => {
                    let track = &init.track;
                    stats.codec = track.codec.clone();
                    stats.bandwidth = *bandwidth;
                    if track.kind == TrackKind::Video {
                        stats.width = track.width;
                        stats.height = track.height;
                    }
                    stats.sample_rate = track.sample_rate;
                    stats.timescale = track.timescale;
                    stats.init_segments += 1;
                    stats.ended = false;
                }
                MediaEvent::Fragment(fragment) => {
                    stats.fragments += 1;
                    stats.bytes += fragment.bytes.len() as u64;
                    let scale = f64::from(stats.timescale.max(1));
                    if fragment.starts_with_keyframe {
                        stats.keyframe_fragments += 1;
                        if stats.recent_keyframes.len() == RECENT_KEYFRAMES {
                            stats.recent_keyframes.pop_front();
                        }
                        stats
                            .recent_keyframes
                            .push_back(fragment.decode_time as f64 / scale);
                    }
                    stats.media_time =
                        fragment.decode_time.saturating_add(fragment.duration) as f64 / scale;
                }
                MediaEvent::Discontinuity => {
                    stats.discontinuities += 1;
                    stats.recent_keyframes.clear();
                }
                MediaEvent::End => stats.ended = true,
            }
        }
        if let Some(next) = &self.next {
            next.deliver(stream_id, rendition, event);
        }
    }
}
