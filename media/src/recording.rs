//! What a recording is made of, free of IO: the index of every archived segment of every
//! rendition (kept as `index.json` next to the media in the object store, so a restarted
//! origin finds its recordings again), the object keys, and the renditions the VOD playlist
//! and manifest writers take.

use std::collections::VecDeque;

use crate::fmp4::{FourCc, TrackInfo, TrackKind};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::packager::{InitVersion, Part, Rendition, Segment};

/// Object key prefix of a recording (ends with '/').
pub fn prefix(recording_id: &str) -> String {
    format!("recordings/{recording_id}/")
}

/// Object key of a recording's file (`<rendition>/<file>`).
pub fn object_key(recording_id: &str, rendition: &str, file: &str) -> String {
    format!("recordings/{recording_id}/{rendition}/{file}")
}

/// Object key of a recording's index.
pub fn index_key(recording_id: &str) -> String {
    format!("recordings/{recording_id}/index.json")
}

/// Every archived segment of a recording.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RecordingIndex {
    /// Recording id.
    pub recording_id: String,
    /// The stream it was recorded from.
    pub stream_id: String,
    /// Segment target (seconds).
    pub segment_target: f64,
    /// Renditions, in the order they first archived a segment.
    pub renditions: Vec<RenditionIndex>,
    /// Segments lost before they could be stored, so a hole in a rendition is explained.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gaps: Vec<RecordingGap>,
}

/// A segment the recording does not have.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordingGap {
    /// Ladder name.
    pub rendition: String,
    /// Media sequence number.
    pub msn: u64,
    /// Why it was lost.
    pub reason: String,
}

/// One rendition of a recording.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RenditionIndex {
    /// Ladder name.
    pub name: String,
    /// Nominal bits per second.
    pub bandwidth: u32,
    /// `video` or `audio`.
    pub kind: String,
    /// RFC 6381 codec string.
    pub codec: String,
    /// Pixels.
    pub width: u16,
    /// Pixels.
    pub height: u16,
    /// Frames per second.
    pub frame_rate: Option<f64>,
    /// Media timescale.
    pub timescale: u32,
    /// Hz.
    pub sample_rate: u32,
    /// Audio channels.
    pub channels: u16,
    /// Init versions archived.
    pub inits: Vec<u32>,
    /// Segments archived, by msn.
    pub segments: Vec<SegmentIndex>,
}

/// One archived segment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct SegmentIndex {
    /// Media sequence number.
    pub msn: u64,
    /// Timeline start (timescale units).
    pub start: u64,
    /// Duration (timescale units).
    pub duration: u64,
    /// First after a timeline break.
    pub discontinuity: bool,
    /// Discontinuity sequence.
    pub discontinuity_sequence: u32,
    /// Init version.
    pub init_id: u32,
    /// Wall clock of the first sample (Unix ms).
    pub program_date_time_ms: u64,
    /// Bytes.
    pub size: u64,
    /// Starts with a keyframe.
    pub independent: bool,
}

impl RecordingIndex {
    /// An empty index.
    pub fn new(recording_id: &str, stream_id: &str, segment_target: f64) -> Self {
        Self {
            recording_id: recording_id.to_owned(),
            stream_id: stream_id.to_owned(),
            segment_target,
            renditions: Vec::new(),
            gaps: Vec::new(),
        }
    }

    fn rendition_mut(&mut self, from: &Rendition) -> &mut RenditionIndex {
        let at = match self.renditions.iter().position(|r| r.name == from.name) {
            Some(at) => at,
            None => {
                self.renditions.push(RenditionIndex {
                    name: from.name.clone(),
                    ..RenditionIndex::default()
                });
                self.renditions.len() - 1
            }
        };
        let r = &mut self.renditions[at];
        r.bandwidth = from.bandwidth;
        r.kind = match from.track.kind {
            TrackKind::Audio => "audio".into(),
            _ => "video".into(),
        };
        r.codec = from.track.codec.clone();
        r.width = from.track.width;
        r.height = from.track.height;
        r.frame_rate = from.frame_rate;
        r.timescale = from.track.timescale;
        r.sample_rate = from.track.sample_rate;
        r.channels = from.track.channels;
        r
    }

    /// Records that init `id` of `rendition` is archived.
    pub fn add_init(&mut self, rendition: &Rendition, id: u32) {
        let r = self.rendition_mut(rendition);
        if !r.inits.contains(&id) {
            r.inits.push(id);
        }
    }

    /// Records that `segment` of `rendition` is archived (once; segments stay in msn order).
    pub fn add_segment(&mut self, rendition: &Rendition, segment: &Segment) {
        let r = self.rendition_mut(rendition);
        if r.segments.iter().any(|s| s.msn == segment.msn) {
            return;
        }
        let entry = SegmentIndex {
            msn: segment.msn,
            start: segment.start,
            duration: segment.duration,
            discontinuity: segment.discontinuity,
            discontinuity_sequence: segment.discontinuity_sequence,
            init_id: segment.init_id,
            program_date_time_ms: segment.program_date_time_ms,
            size: segment.size,
            independent: segment.independent(),
        };
        let at = r.segments.partition_point(|s| s.msn < segment.msn);
        r.segments.insert(at, entry);
    }

    /// Adds segment `msn` of `rendition`, found in the store but not in the index (the origin
    /// stopped after storing it and before writing the index), from its timing as read back
    /// from its bytes. It continues the rendition's last indexed segment before it: same init
    /// and discontinuity sequence, wall-clock time carried forward by the media time between
    /// them. `false` (nothing added) when the rendition has no earlier segment to continue,
    /// or already has this one.
    pub fn recover_segment(
        &mut self,
        rendition: &str,
        msn: u64,
        size: u64,
        timing: crate::fmp4::SegmentTiming,
    ) -> bool {
        let Some(r) = self.renditions.iter_mut().find(|r| r.name == rendition) else {
            return false;
        };
        if r.segments.iter().any(|s| s.msn == msn) {
            return false;
        }
        let at = r.segments.partition_point(|s| s.msn < msn);
        let Some(before) = at.checked_sub(1).map(|i| r.segments[i]) else {
            return false;
        };
        let elapsed_ticks = timing.decode_time.saturating_sub(before.start);
        let elapsed_ms = elapsed_ticks.saturating_mul(1000) / u64::from(r.timescale.max(1));
        r.segments.insert(
            at,
            SegmentIndex {
                msn,
                start: timing.decode_time,
                duration: timing.duration,
                discontinuity: false,
                discontinuity_sequence: before.discontinuity_sequence,
                init_id: before.init_id,
                program_date_time_ms: before.program_date_time_ms.saturating_add(elapsed_ms),
                size,
                independent: timing.starts_with_keyframe,
            },
        );
        self.gaps
            .retain(|g| !(g.rendition == rendition && g.msn == msn));
        true
    }

    /// The newest indexed segment of each rendition: (rendition, msn, init id).
    pub fn last_segments(&self) -> Vec<(&str, u64, u32)> {
        self.renditions
            .iter()
            .filter_map(|r| {
                r.segments
                    .last()
                    .map(|s| (r.name.as_str(), s.msn, s.init_id))
            })
            .collect()
    }

    /// Records that segment `msn` of `rendition` is lost (once).
    pub fn add_gap(&mut self, rendition: &str, msn: u64, reason: &str) {
        if !self
            .gaps
            .iter()
            .any(|g| g.rendition == rendition && g.msn == msn)
        {
            self.gaps.push(RecordingGap {
                rendition: rendition.to_owned(),
                msn,
                reason: reason.to_owned(),
            });
        }
    }

    /// Seconds covered: the longest rendition.
    pub fn duration_seconds(&self) -> f64 {
        self.renditions
            .iter()
            .map(|r| {
                let total: u64 = r.segments.iter().map(|s| s.duration).sum();
                total as f64 / f64::from(r.timescale.max(1))
            })
            .fold(0.0, f64::max)
    }

    /// Bytes archived.
    pub fn bytes(&self) -> u64 {
        self.renditions
            .iter()
            .flat_map(|r| r.segments.iter())
            .map(|s| s.size)
            .sum()
    }

    /// Segments archived, all renditions.
    pub fn segment_count(&self) -> u64 {
        self.renditions
            .iter()
            .map(|r| r.segments.len() as u64)
            .sum()
    }

    /// The renditions as the playlist and manifest writers take them: every segment
    /// complete, no bytes in memory; video highest first, audio last.
    pub fn renditions(&self) -> Vec<Rendition> {
        let mut list: Vec<Rendition> = self
            .renditions
            .iter()
            .filter(|r| !r.segments.is_empty())
            .map(to_rendition)
            .collect();
        list.sort_by_key(|r| r.listing_order());
        list
    }
}

fn to_rendition(r: &RenditionIndex) -> Rendition {
    let kind = if r.kind == "audio" {
        TrackKind::Audio
    } else if r.kind == "video" {
        TrackKind::Video
    } else {
        TrackKind::Other(FourCc(*b"????"))
    };
    let track = TrackInfo {
        track_id: 1,
        timescale: r.timescale,
        kind,
        codec: r.codec.clone(),
        width: r.width,
        height: r.height,
        sample_rate: r.sample_rate,
        channels: r.channels,
    };
    let segments: VecDeque<Segment> = r
        .segments
        .iter()
        .map(|s| Segment {
            msn: s.msn,
            start: s.start,
            duration: s.duration,
            parts: vec![Part {
                duration: s.duration,
                independent: s.independent,
                bytes: None,
            }],
            complete: true,
            discontinuity: s.discontinuity,
            discontinuity_sequence: s.discontinuity_sequence,
            init_id: s.init_id,
            program_date_time_ms: s.program_date_time_ms,
            size: s.size,
            archived: true,
            whole: None,
        })
        .collect();
    let inits = r
        .inits
        .iter()
        .map(|&id| InitVersion {
            id,
            bytes: Bytes::new(),
        })
        .collect();
    Rendition::archived(&r.name, r.bandwidth, track, r.frame_rate, inits, segments)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::hls::{PlaylistKind, Skip, media_playlist};
    use crate::packager::{PackagerSettings, StreamPackager};
    use crate::testing::{feed_video, init};

    #[test]
    fn index_round_trips_and_feeds_the_vod_playlist() {
        let mut p = StreamPackager::new(PackagerSettings::default());
        let mut now = 1_000;
        p.apply("720p", init(TrackKind::Video, 15_360, 1), now)
            .unwrap();
        feed_video(&mut p, "720p", 0.0, 8.5, &mut now);
        p.end();
        let live = p.rendition("720p").unwrap();
        let mut index = RecordingIndex::new("rec", "stream", 2.0);
        index.add_init(live, 0);
        // Out of order and repeated: stored once, in msn order.
        for msn in [1, 0, 2, 3, 4, 2] {
            index.add_segment(live, live.segment(msn).unwrap());
        }
        let json = serde_json::to_string(&index).unwrap();
        let back: RecordingIndex = serde_json::from_str(&json).unwrap();
        assert_eq!(back, index);
        assert!((back.duration_seconds() - 8.5).abs() < 1e-9);
        let renditions = back.renditions();
        let text = media_playlist(&renditions[0], PlaylistKind::Vod, Skip::No, &[], true);
        assert_eq!(text.matches("#EXTINF").count(), 5);
        assert!(text.contains("\n0.m4s\n") && text.contains("\n4.m4s\n"));
        assert!(text.contains("#EXT-X-MAP:URI=\"init.mp4\""));
        assert!(text.ends_with("#EXT-X-ENDLIST\n"));
        assert_eq!(
            object_key("rec", "720p", "3.m4s"),
            "recordings/rec/720p/3.m4s"
        );
    }

    #[test]
    fn segments_stored_after_the_last_index_are_recovered_in_order() {
        let mut p = StreamPackager::new(PackagerSettings::default());
        let mut now = 1_000;
        p.apply("720p", init(TrackKind::Video, 15_360, 1), now)
            .unwrap();
        feed_video(&mut p, "720p", 0.0, 8.5, &mut now);
        p.end();
        let live = p.rendition("720p").unwrap();
        let mut index = RecordingIndex::new("rec", "stream", 2.0);
        index.add_init(live, 0);
        for msn in 0..3 {
            index.add_segment(live, live.segment(msn).unwrap());
        }
        let full = {
            let mut full = index.clone();
            for msn in 3..5 {
                full.add_segment(live, live.segment(msn).unwrap());
            }
            full
        };
        // Recovered from the bytes in the store, newest first: they land in msn order.
        for msn in [4, 3] {
            let s = live.segment(msn).unwrap();
            let timing = crate::fmp4::SegmentTiming {
                decode_time: s.start,
                duration: s.duration,
                starts_with_keyframe: s.independent(),
            };
            assert!(index.recover_segment("720p", msn, s.size, timing));
            assert!(
                !index.recover_segment("720p", msn, s.size, timing),
                "only once"
            );
        }
        assert_eq!(index, full, "the same index as if it had been written");
        assert_eq!(index.last_segments(), [("720p", 4, 0)]);
        let timing = crate::fmp4::SegmentTiming {
            decode_time: 0,
            duration: 1,
            starts_with_keyframe: true,
        };
        assert!(
            !index.recover_segment("360p", 9, 1, timing),
            "unknown rendition"
        );
    }

    #[test]
    fn lost_segments_are_recorded_once_and_old_indexes_still_read() {
        let mut index = RecordingIndex::new("rec", "stream", 2.0);
        assert!(!serde_json::to_string(&index).unwrap().contains("gaps"));
        index.add_gap("720p", 7, "the local spool is full");
        index.add_gap("720p", 7, "again");
        index.add_gap("360p", 7, "the local spool is full");
        assert_eq!(index.gaps.len(), 2);
        let back: RecordingIndex =
            serde_json::from_str(&serde_json::to_string(&index).unwrap()).unwrap();
        assert_eq!(back.gaps[0].reason, "the local spool is full");
        let old: RecordingIndex = serde_json::from_str(
            r#"{"recording_id":"r","stream_id":"s","segment_target":2.0,"renditions":[]}"#,
        )
        .unwrap();
        assert!(old.gaps.is_empty());
    }
}
