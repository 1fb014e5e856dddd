//! Test helpers shared by the unit tests of several modules: synthetic init segments and
//! fragments, and a feeder of steady 30 fps video.

#![allow(clippy::unwrap_used)]

use bytes::Bytes;

use crate::fmp4::{Fragment, InitSegment, TrackInfo, TrackKind};
use crate::handoff::MediaEvent;
use crate::packager::StreamPackager;

pub(crate) fn track(kind: TrackKind, timescale: u32) -> TrackInfo {
    TrackInfo {
        track_id: 1,
        timescale,
        kind,
        codec: if kind == TrackKind::Video {
            "avc1.64001f".into()
        } else {
            "mp4a.40.2".into()
        },
        width: if kind == TrackKind::Video { 1280 } else { 0 },
        height: if kind == TrackKind::Video { 720 } else { 0 },
        sample_rate: if kind == TrackKind::Audio { 48_000 } else { 0 },
        channels: if kind == TrackKind::Audio { 2 } else { 0 },
    }
}

pub(crate) fn init(kind: TrackKind, timescale: u32, tag: u8) -> MediaEvent {
    MediaEvent::Init {
        bandwidth: 2_800_000,
        init: InitSegment {
            bytes: Bytes::from(vec![tag; 32]),
            track: track(kind, timescale),
        },
    }
}

/// A fragment whose bytes carry no `tfdt`, so moving it only changes the field.
pub(crate) fn fragment(decode_time: u64, duration: u64, keyframe: bool) -> MediaEvent {
    MediaEvent::Fragment(Fragment {
        bytes: Bytes::from(vec![0u8; 100]),
        sequence_number: 1,
        decode_time,
        duration,
        sample_count: 15,
        starts_with_keyframe: keyframe,
        keyframes: u32::from(keyframe),
    })
}

/// Feeds `seconds` of 30 fps video in 0.5 s fragments with a keyframe every 2 s, from
/// run time `from`, with timescale 15360.
pub(crate) fn feed_video(
    p: &mut StreamPackager,
    name: &str,
    from: f64,
    seconds: f64,
    now: &mut u64,
) {
    let ts = 15_360f64;
    let mut t = from;
    while t < from + seconds - 1e-9 {
        let keyframe = (t / 2.0 - (t / 2.0).round()).abs() < 1e-9;
        p.apply(
            name,
            fragment((t * ts) as u64, (0.5 * ts) as u64, keyframe),
            *now,
        )
        .unwrap();
        t += 0.5;
        *now += 500;
    }
}
