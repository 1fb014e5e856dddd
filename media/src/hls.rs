//! LL-HLS playlist writer (RFC 8216bis with Apple's low-latency extension), free of IO:
//! the multivariant playlist of a stream and the media playlist of each rendition, live
//! (with parts, preload hints, rendition reports and delta updates) or VOD.
//!
//! URIs are relative, so the same text serves every tier and keeps a signed-URL prefix.

use std::fmt::Write as _;

use crate::fmp4::TrackKind;
use chrono::{DateTime, SecondsFormat, Utc};

use crate::packager::{Rendition, Segment, StreamPackager, init_file_name};

/// A delta update request (`_HLS_skip`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Skip {
    /// The whole playlist.
    #[default]
    No,
    /// `_HLS_skip=YES`: older segments replaced by `EXT-X-SKIP`.
    Yes,
    /// `_HLS_skip=v2`: the same, date ranges included (we have none to skip).
    V2,
}

/// What kind of media playlist to write.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PlaylistKind {
    /// A live stream; `low_latency` adds parts, blocking reload and preload hints.
    Live {
        /// Low-latency tags.
        low_latency: bool,
        /// Segment target in seconds.
        segment_target: f64,
        /// Part target in seconds.
        part_target: f64,
        /// Complete segments to list (`None`: all that are held, as for DVR).
        list_segments: Option<usize>,
    },
    /// A finished recording: every segment, `EXT-X-ENDLIST`.
    Vod,
}

/// `EXT-X-TARGETDURATION` for a rendition: the segment target, or the longest segment if a
/// late keyframe made one longer (the tag must cover every segment).
pub fn target_duration(segment_target: f64, rendition: &Rendition) -> u64 {
    let longest = rendition
        .segments
        .iter()
        .filter(|s| s.complete)
        .map(|s| rendition.seconds(s.duration))
        .fold(segment_target, f64::max);
    (longest.round() as u64)
        .max(segment_target.ceil() as u64)
        .max(1)
}

/// Seconds from the live edge within which segments keep their parts in the playlist.
fn parts_horizon(target: u64) -> f64 {
    3.0 * target as f64
}

/// `CAN-SKIP-UNTIL`: six target durations, as the specification recommends.
pub fn can_skip_until(target: u64) -> f64 {
    6.0 * target as f64
}

/// The multivariant playlist of a live stream or recording: one variant per video
/// rendition, an audio group when there is an audio rendition.
pub fn multivariant_playlist(stream: &StreamPackager) -> String {
    multivariant(&stream.renditions(), 9)
}

/// The multivariant playlist over `renditions` (video highest first, audio last).
pub fn multivariant(renditions: &[&Rendition], version: u8) -> String {
    let mut out = String::with_capacity(1024);
    let _ = writeln!(
        out,
        "#EXTM3U\n#EXT-X-VERSION:{version}\n#EXT-X-INDEPENDENT-SEGMENTS"
    );
    let audio = renditions.iter().find(|r| r.track.kind == TrackKind::Audio);
    if let Some(audio) = audio {
        let _ = writeln!(
            out,
            "#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"audio\",NAME=\"{name}\",DEFAULT=YES,AUTOSELECT=YES,CHANNELS=\"{channels}\",URI=\"{name}/playlist.m3u8\"",
            name = audio.name,
            channels = audio.track.channels.max(1),
        );
    }
    let (audio_avg, audio_peak) = audio.map_or((0, 0), |a| bitrates(a));
    for video in renditions
        .iter()
        .filter(|r| r.track.kind == TrackKind::Video)
    {
        let (avg, peak) = bitrates(video);
        let mut codecs = video.track.codec.clone();
        if let Some(audio) = audio {
            codecs.push(',');
            codecs.push_str(&audio.track.codec);
        }
        let _ = write!(
            out,
            "#EXT-X-STREAM-INF:BANDWIDTH={},AVERAGE-BANDWIDTH={},CODECS=\"{codecs}\",RESOLUTION={}x{}",
            u64::from(peak) + u64::from(audio_peak),
            u64::from(avg) + u64::from(audio_avg),
            video.track.width,
            video.track.height,
        );
        if let Some(fps) = video.frame_rate {
            let _ = write!(out, ",FRAME-RATE={fps:.3}");
        }
        if audio.is_some() {
            out.push_str(",AUDIO=\"audio\"");
        }
        let _ = writeln!(out, "\n{}/playlist.m3u8", video.name);
    }
    if audio.is_some() && !renditions.iter().any(|r| r.track.kind == TrackKind::Video) {
        // Audio only: the audio rendition is the variant.
        if let Some(audio) = audio {
            let _ = writeln!(
                out,
                "#EXT-X-STREAM-INF:BANDWIDTH={audio_peak},AVERAGE-BANDWIDTH={audio_avg},CODECS=\"{}\"\n{}/playlist.m3u8",
                audio.track.codec, audio.name
            );
        }
    }
    out
}

/// (average, peak) bits per second for the playlist: measured once segments exist, the
/// nominal bitrate (plus container overhead) before that. The peak is never below nominal.
fn bitrates(r: &Rendition) -> (u32, u32) {
    let nominal = r.bandwidth.saturating_add(r.bandwidth / 10);
    match r.measured_bitrate() {
        Some((avg, peak)) => (avg, peak.max(nominal)),
        None => (nominal, nominal),
    }
}

/// The media playlist of `rendition` in `stream` (with rendition reports for the others).
pub fn live_media_playlist(stream: &StreamPackager, rendition: &Rendition, skip: Skip) -> String {
    let settings = stream.settings();
    let kind = PlaylistKind::Live {
        low_latency: settings.low_latency,
        segment_target: settings.segment_target,
        part_target: settings.part_target,
        list_segments: match settings.dvr_window {
            Some(_) => None,
            None => Some(settings.playlist_segments),
        },
    };
    let others: Vec<&Rendition> = stream
        .renditions()
        .into_iter()
        .filter(|r| r.name != rendition.name)
        .collect();
    media_playlist(rendition, kind, skip, &others, stream.ended())
}

/// A media playlist. `others` get `EXT-X-RENDITION-REPORT`s (live, low latency).
pub fn media_playlist(
    rendition: &Rendition,
    kind: PlaylistKind,
    skip: Skip,
    others: &[&Rendition],
    ended: bool,
) -> String {
    let (low_latency, segment_target, part_target, list) = match kind {
        PlaylistKind::Live {
            low_latency,
            segment_target,
            part_target,
            list_segments,
        } => (low_latency, segment_target, part_target, list_segments),
        PlaylistKind::Vod => (false, 0.0, 0.0, None),
    };
    let vod = kind == PlaylistKind::Vod;
    let target = target_duration(segment_target, rendition);
    let segments = rendition.listed_segments(list, true);
    let mut out = String::with_capacity(256 + segments.len() * 64);
    let version = if low_latency { 9 } else { 7 };
    let _ = writeln!(
        out,
        "#EXTM3U\n#EXT-X-VERSION:{version}\n#EXT-X-TARGETDURATION:{target}"
    );
    if vod {
        out.push_str("#EXT-X-PLAYLIST-TYPE:VOD\n");
    }
    let skip_until = can_skip_until(target);
    if low_latency {
        let _ = writeln!(out, "#EXT-X-PART-INF:PART-TARGET={part_target:.3}");
        let _ = writeln!(
            out,
            "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL={skip_until:.1},CAN-SKIP-DATERANGES=YES,PART-HOLD-BACK={:.3},HOLD-BACK={:.1}",
            3.0 * part_target,
            3.0 * target as f64,
        );
    } else if !vod {
        let _ = writeln!(
            out,
            "#EXT-X-SERVER-CONTROL:CAN-SKIP-UNTIL={skip_until:.1},HOLD-BACK={:.1}",
            3.0 * target as f64
        );
    }
    let first = segments.first();
    let _ = writeln!(
        out,
        "#EXT-X-MEDIA-SEQUENCE:{}",
        first.map_or(rendition.next_msn(), |s| s.msn)
    );
    if let Some(first) = first
        && first.discontinuity_sequence > 0
    {
        let _ = writeln!(
            out,
            "#EXT-X-DISCONTINUITY-SEQUENCE:{}",
            first.discontinuity_sequence
        );
    }
    out.push_str("#EXT-X-INDEPENDENT-SEGMENTS\n");

    let skipped = match skip {
        Skip::No => 0,
        Skip::Yes | Skip::V2 if vod => 0,
        Skip::Yes | Skip::V2 => skippable(rendition, &segments, skip_until),
    };
    if skipped > 0 {
        let _ = write!(out, "#EXT-X-SKIP:SKIPPED-SEGMENTS={skipped}");
        if skip == Skip::V2 {
            out.push_str(",RECENTLY-REMOVED-DATERANGES=\"\"");
        }
        out.push('\n');
    }

    let live_edge = segments.last().map_or(0, |s| s.end());
    let horizon = (parts_horizon(target) * f64::from(rendition.timescale())) as u64;
    let mut map: Option<u32> = None;
    for (i, segment) in segments.iter().enumerate().skip(skipped) {
        if segment.discontinuity && i > 0 {
            out.push_str("#EXT-X-DISCONTINUITY\n");
        }
        if map != Some(segment.init_id) {
            let _ = writeln!(
                out,
                "#EXT-X-MAP:URI=\"{}\"",
                init_file_name(segment.init_id)
            );
            map = Some(segment.init_id);
        }
        if i == skipped || segment.discontinuity {
            let _ = writeln!(
                out,
                "#EXT-X-PROGRAM-DATE-TIME:{}",
                date_time(segment.program_date_time_ms)
            );
        }
        let recent = live_edge.saturating_sub(segment.end()) < horizon || !segment.complete;
        if low_latency && recent {
            for (index, part) in segment.parts.iter().enumerate() {
                let _ = write!(
                    out,
                    "#EXT-X-PART:DURATION={:.5},URI=\"{}.{index}.m4s\"",
                    rendition.seconds(part.duration),
                    segment.msn
                );
                if part.independent {
                    out.push_str(",INDEPENDENT=YES");
                }
                out.push('\n');
            }
        }
        if segment.complete {
            let _ = writeln!(
                out,
                "#EXTINF:{:.5},\n{}.m4s",
                rendition.seconds(segment.duration),
                segment.msn
            );
        }
    }
    if low_latency
        && !ended
        && let Some((msn, part)) = rendition.next_part()
    {
        let _ = writeln!(
            out,
            "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{msn}.{part}.m4s\""
        );
    }
    if low_latency && !ended {
        for other in others {
            if let Some((msn, part)) = other.last_part() {
                let _ = writeln!(
                    out,
                    "#EXT-X-RENDITION-REPORT:URI=\"../{}/playlist.m3u8\",LAST-MSN={msn},LAST-PART={part}",
                    other.name
                );
            }
        }
    }
    if ended || vod {
        out.push_str("#EXT-X-ENDLIST\n");
    }
    out
}

/// How many leading segments a delta update may replace: complete ones lying wholly more
/// than `skip_until` seconds before the live edge.
fn skippable(rendition: &Rendition, segments: &[&Segment], skip_until: f64) -> usize {
    let Some(edge) = segments.last().map(|s| s.end()) else {
        return 0;
    };
    let boundary = edge.saturating_sub((skip_until * f64::from(rendition.timescale())) as u64);
    segments
        .iter()
        .take_while(|s| s.complete && s.end() <= boundary)
        .count()
}

/// RFC 3339 with milliseconds, UTC.
pub fn date_time(unix_ms: u64) -> String {
    DateTime::<Utc>::from_timestamp_millis(i64::try_from(unix_ms).unwrap_or(i64::MAX))
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Where a blocking playlist request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockingState {
    /// The playlist already holds what was asked for: answer now.
    Ready,
    /// Wait for more media.
    Wait,
    /// Too far ahead of the live edge (more than two segments): 400.
    TooFarAhead,
}

/// Decides a blocking reload for `_HLS_msn=msn` (and `_HLS_part=part`): ready once the
/// rendition holds that part (or, without a part, that complete segment) or the stream ended.
pub fn blocking_state(
    rendition: &Rendition,
    msn: u64,
    part: Option<usize>,
    ended: bool,
) -> BlockingState {
    let ready = match part {
        Some(part) => {
            rendition.has_part(msn, part)
                || rendition.has_complete_segment(msn)
                || rendition.segments.back().is_some_and(|s| s.msn > msn)
        }
        None => rendition.has_complete_segment(msn),
    };
    if ready || ended || rendition.ended {
        return BlockingState::Ready;
    }
    let last = rendition
        .last_segment()
        .map_or(rendition.next_msn(), |s| s.msn);
    if msn > last.saturating_add(2) {
        BlockingState::TooFarAhead
    } else {
        BlockingState::Wait
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::handoff::MediaEvent;
    use crate::packager::{PackagerSettings, StreamPackager};
    use crate::testing::{feed_video, init};

    fn stream(seconds: f64) -> StreamPackager {
        let mut p = StreamPackager::new(PackagerSettings {
            playlist_segments: 10,
            ..PackagerSettings::default()
        });
        let mut now = 1_700_000_000_000;
        p.apply("720p", init(TrackKind::Video, 15_360, 1), now)
            .unwrap();
        let MediaEvent::Init {
            bandwidth,
            mut init,
        } = init(TrackKind::Video, 15_360, 2)
        else {
            unreachable!()
        };
        init.track.height = 480;
        init.track.width = 854;
        p.apply("480p", MediaEvent::Init { bandwidth, init }, now)
            .unwrap();
        let mut now2 = now;
        feed_video(&mut p, "720p", 0.0, seconds, &mut now);
        feed_video(&mut p, "480p", 0.0, seconds - 0.5, &mut now2);
        p
    }

    #[test]
    fn live_media_playlist_has_the_low_latency_tags() {
        let p = stream(5.0);
        let r = p.rendition("720p").unwrap();
        let text = live_media_playlist(&p, r, Skip::No);
        assert!(text.starts_with("#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-TARGETDURATION:2\n"));
        assert!(text.contains("#EXT-X-PART-INF:PART-TARGET=0.500\n"));
        assert!(text.contains("CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL=12.0"));
        assert!(text.contains("PART-HOLD-BACK=1.500,HOLD-BACK=6.0"));
        assert!(text.contains("#EXT-X-MEDIA-SEQUENCE:0\n"));
        assert!(text.contains("#EXT-X-MAP:URI=\"init.mp4\"\n"));
        assert!(text.contains("#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:19.500Z\n"));
        assert!(text.contains("#EXT-X-PART:DURATION=0.50000,URI=\"0.0.m4s\",INDEPENDENT=YES\n"));
        assert!(text.contains("#EXT-X-PART:DURATION=0.50000,URI=\"0.1.m4s\"\n"));
        assert!(text.contains("#EXTINF:2.00000,\n0.m4s\n#EXT-X-PART"));
        assert!(text.contains("#EXTINF:2.00000,\n1.m4s\n"));
        assert!(!text.contains("2.m4s\n"), "segment 2 is in progress");
        assert!(text.contains("#EXT-X-PART:DURATION=0.50000,URI=\"2.1.m4s\"\n"));
        assert!(text.contains("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"2.2.m4s\"\n"));
        assert!(text.contains(
            "#EXT-X-RENDITION-REPORT:URI=\"../480p/playlist.m3u8\",LAST-MSN=2,LAST-PART=0\n"
        ));
        assert!(!text.contains("ENDLIST"));
    }

    #[test]
    fn old_parts_leave_and_delta_updates_skip() {
        let p = stream(30.0);
        let r = p.rendition("720p").unwrap();
        let full = live_media_playlist(&p, r, Skip::No);
        // Ten complete segments listed: 4..13, and 14 in progress.
        assert!(full.contains("#EXT-X-MEDIA-SEQUENCE:4\n"));
        assert!(
            !full.contains("URI=\"11.0.m4s\""),
            "parts older than 3 targets are gone"
        );
        assert!(full.contains("URI=\"12.0.m4s\""));
        let delta = live_media_playlist(&p, r, Skip::Yes);
        // Segments ending at least 12 s before the edge (30 s) are skipped: 4..8.
        assert!(
            delta.contains("#EXT-X-SKIP:SKIPPED-SEGMENTS=5\n"),
            "{delta}"
        );
        assert!(!delta.contains("\n8.m4s"));
        assert!(delta.contains("\n9.m4s"));
        assert!(delta.contains("#EXT-X-MEDIA-SEQUENCE:4\n"));
        let v2 = live_media_playlist(&p, r, Skip::V2);
        assert!(v2.contains("RECENTLY-REMOVED-DATERANGES=\"\""));
    }

    #[test]
    fn discontinuity_and_new_map_after_a_restart() {
        let mut p = stream(4.0);
        let mut now = 1_700_000_100_000;
        p.apply("720p", MediaEvent::End, now).unwrap();
        p.apply("720p", MediaEvent::Discontinuity, now).unwrap();
        p.apply("720p", init(TrackKind::Video, 15_360, 7), now)
            .unwrap();
        feed_video(&mut p, "720p", 0.0, 2.5, &mut now);
        let r = p.rendition("720p").unwrap();
        let text = live_media_playlist(&p, r, Skip::No);
        let disc = text.find("#EXT-X-DISCONTINUITY\n").unwrap();
        let map = text.find("#EXT-X-MAP:URI=\"init-1.mp4\"").unwrap();
        assert!(disc < map);
        assert_eq!(text.matches("#EXT-X-PROGRAM-DATE-TIME").count(), 2);
    }

    #[test]
    fn multivariant_lists_video_with_audio_group() {
        let mut p = stream(5.0);
        let mut now = 1_700_000_000_000;
        p.apply("audio", init(TrackKind::Audio, 48_000, 3), now)
            .unwrap();
        now += 1;
        p.apply("audio", crate::testing::fragment(0, 24_000, false), now)
            .unwrap();
        let text = multivariant_playlist(&p);
        assert!(text.contains("#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"audio\",NAME=\"audio\",DEFAULT=YES,AUTOSELECT=YES,CHANNELS=\"2\",URI=\"audio/playlist.m3u8\"\n"));
        let hi = text.find("720p/playlist.m3u8").unwrap();
        let lo = text.find("480p/playlist.m3u8").unwrap();
        assert!(hi < lo, "highest first");
        assert!(text.contains("CODECS=\"avc1.64001f,mp4a.40.2\",RESOLUTION=1280x720,FRAME-RATE=30.000,AUDIO=\"audio\"\n"));
        assert!(text.contains("AVERAGE-BANDWIDTH="));
    }

    #[test]
    fn vod_lists_everything_and_ends() {
        let mut p = stream(9.0);
        p.end();
        let r = p.rendition("720p").unwrap();
        let text = media_playlist(r, PlaylistKind::Vod, Skip::Yes, &[], true);
        assert!(text.contains("#EXT-X-PLAYLIST-TYPE:VOD\n"));
        assert!(text.ends_with("#EXT-X-ENDLIST\n"));
        assert!(!text.contains("EXT-X-PART"));
        assert!(!text.contains("SKIP"));
        assert_eq!(text.matches("#EXTINF").count(), 5);
    }

    #[test]
    fn blocking_decisions() {
        let p = stream(5.0);
        let r = p.rendition("720p").unwrap();
        assert_eq!(blocking_state(r, 2, Some(1), false), BlockingState::Ready);
        assert_eq!(blocking_state(r, 2, Some(2), false), BlockingState::Wait);
        assert_eq!(blocking_state(r, 1, None, false), BlockingState::Ready);
        assert_eq!(blocking_state(r, 2, None, false), BlockingState::Wait);
        assert_eq!(blocking_state(r, 4, Some(0), false), BlockingState::Wait);
        assert_eq!(
            blocking_state(r, 5, Some(0), false),
            BlockingState::TooFarAhead
        );
        assert_eq!(blocking_state(r, 5, Some(0), true), BlockingState::Ready);
    }
}
