//! DASH manifest writer (ISO/IEC 23009-1, `isoff-live` profile, with the DASH-IF low-latency
//! additions), free of IO: the dynamic MPD of a live stream and the static MPD of a finished
//! recording, over the same segments the LL-HLS playlists ([`crate::hls`]) describe.
//!
//! - **URLs** are relative to the manifest (`/live/<id>/manifest.mpd`): media segments are
//!   `<rendition>/<msn>.m4s` (`$RepresentationID$/$Number$.m4s`), init segments
//!   `<rendition>/init.mp4`, then `init-<id>.mp4` after a restart changed them.
//! - **Periods** follow transcoder runs: a new Period starts at every discontinuity, its `id`
//!   being the discontinuity sequence, and each Representation names the init of its run.
//! - **One timeline**: the packager writes every fragment's `tfdt` on the stream timeline
//!   (zero is `availabilityStartTime`), so each SegmentTemplate's `presentationTimeOffset`
//!   is its Period's start and `S@t` is the segment's start as the packager holds it.
//! - **Low latency** (chunked CMAF): the segment in progress is listed with its nominal
//!   duration, and `availabilityTimeOffset` lets clients ask for it once its first part
//!   exists; the origin streams it as parts arrive. The segment after it is announced too, so
//!   a player that finishes one segment already knows the next even with a manifest a second
//!   old (a cache's lifetime); a request for it waits at the origin until it starts. The
//!   manifest is reloaded every part.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::fmp4::TrackKind;

use crate::hls::date_time;
use crate::packager::{Rendition, Segment, StreamPackager, init_file_name};

/// `MPD@profiles`: SegmentTemplate addressing, which serves live and on-demand alike.
const PROFILE: &str = "urn:mpeg:dash:profile:isoff-live:2011";
/// `UTCTiming@schemeIdUri` for an HTTP resource answering with an ISO 8601 time.
const UTC_TIMING_SCHEME: &str = "urn:mpeg:dash:utc:http-iso:2014";
/// `AudioChannelConfiguration@schemeIdUri` whose value is the channel count.
const CHANNEL_SCHEME: &str = "urn:mpeg:dash:23003:3:audio_channel_configuration:2011";
/// Catch-up playback rates low-latency clients may use (DASH-IF suggests ±4 %).
const PLAYBACK_RATE: (&str, &str) = ("0.96", "1.04");
/// `minBufferTime` of a recording without segments.
const DEFAULT_MIN_BUFFER_MS: u64 = 2_000;

/// Options the shell supplies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MpdOptions {
    /// Wall clock, Unix milliseconds: `MPD@publishTime`.
    pub now_ms: u64,
    /// Where clients read the origin's clock (`UTCTiming`, ISO 8601 over HTTP), relative to
    /// the manifest, e.g. `../../time`.
    pub utc_timing_url: String,
    /// Latency target in milliseconds (`ServiceDescription`, low-latency streams).
    pub target_latency_ms: u64,
}

/// The dynamic MPD of a live stream.
///
/// Lists the complete segments a live playlist lists (the last `playlist_segments`, or every
/// held one with DVR) and, for low-latency streams, the segment in progress.
pub fn live_mpd(stream: &StreamPackager, options: &MpdOptions) -> String {
    let settings = stream.settings();
    let ended = stream.ended();
    let low_latency = settings.low_latency;
    let renditions = stream.renditions();
    let list = match settings.dvr_window {
        Some(_) => None,
        None => Some(settings.playlist_segments),
    };
    let listed: Vec<(&Rendition, Vec<&Segment>)> = renditions
        .iter()
        .map(|r| (*r, r.listed_segments(list, low_latency)))
        .collect();
    let end_ms = listed
        .iter()
        .filter_map(|(r, segments)| {
            segments
                .last()
                .map(|s| ticks_to_ms(s.end(), r.timescale(), Rounding::Up))
        })
        .max()
        .unwrap_or(0);

    let periods: Vec<PeriodPlan<'_>> = group(listed)
        .into_iter()
        .map(|(id, tracks)| {
            let start_ms = live_period_start(&renditions, id, &tracks);
            PeriodPlan {
                id,
                start_ms,
                media_start_ms: start_ms,
                duration_ms: None,
                tracks,
            }
        })
        .collect();

    let segment_ms = seconds_to_ms(settings.segment_target);
    let part_ms = seconds_to_ms(settings.part_target);
    let window_ms = match settings.dvr_window {
        Some(window) => seconds_to_ms(window),
        None => segment_ms.saturating_mul(settings.playlist_segments as u64),
    };
    let delay_ms = if low_latency {
        options.target_latency_ms
    } else {
        segment_ms.saturating_mul(3)
    };
    let chunked = low_latency.then(|| Chunked {
        availability_offset_ms: segment_ms.saturating_sub(part_ms),
        nominal_segment: settings.segment_target,
    });

    let mut out = String::with_capacity(1024 + periods.len() * 2048);
    out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let anchor_ms = stream.anchor_ms().unwrap_or(options.now_ms);
    let _ = write!(
        out,
        "<MPD xmlns=\"urn:mpeg:dash:schema:mpd:2011\" profiles=\"{PROFILE}\" type=\"dynamic\" availabilityStartTime=\"{}\" publishTime=\"{}\"",
        date_time(anchor_ms),
        date_time(options.now_ms),
    );
    // An ended stream stays `dynamic`, as DASH-IF IOP recommends for ending a live
    // presentation: switching to `static` would move the timeline under players already
    // playing (a static presentation starts at zero, long before the window). Without
    // `minimumUpdatePeriod` players stop reloading, and `mediaPresentationDuration` marks
    // where the presentation ends, so they play to the end and stop.
    if ended {
        let _ = write!(
            out,
            " mediaPresentationDuration=\"{}\"",
            iso_duration(end_ms)
        );
    } else {
        // A low-latency player must learn of each segment well within one segment's time.
        let update_ms = if low_latency { part_ms } else { segment_ms };
        let _ = write!(out, " minimumUpdatePeriod=\"{}\"", iso_duration(update_ms));
    }
    let _ = writeln!(
        out,
        " timeShiftBufferDepth=\"{}\" suggestedPresentationDelay=\"{}\" minBufferTime=\"{}\">",
        iso_duration(window_ms),
        iso_duration(delay_ms),
        iso_duration(segment_ms),
    );
    if low_latency {
        let (min, max) = latency_bounds(options.target_latency_ms, segment_ms, part_ms);
        let _ = writeln!(
            out,
            "  <ServiceDescription id=\"0\">\n    <Latency target=\"{}\" max=\"{max}\" min=\"{min}\"/>\n    <PlaybackRate min=\"{}\" max=\"{}\"/>\n  </ServiceDescription>",
            options.target_latency_ms, PLAYBACK_RATE.0, PLAYBACK_RATE.1,
        );
    }
    write_periods(&mut out, &periods, chunked);
    let _ = writeln!(
        out,
        "  <UTCTiming schemeIdUri=\"{UTC_TIMING_SCHEME}\" value=\"{}\"/>",
        escape(&options.utc_timing_url)
    );
    out.push_str("</MPD>\n");
    out
}

/// The static MPD of a finished recording over `renditions` (video highest first, audio
/// last), with the same URL layout as the live manifest.
///
/// Every complete segment is listed. Periods (one per discontinuity sequence) follow each
/// other without the wall-clock gaps between transcoder runs, as the HLS recording plays
/// them: each Period's `presentationTimeOffset` is where its media starts on the stream
/// timeline, and its `start` is the sum of the Periods before it.
pub fn vod_mpd(renditions: &[&Rendition]) -> String {
    let listed: Vec<(&Rendition, Vec<&Segment>)> = renditions
        .iter()
        .map(|r| (*r, r.segments.iter().filter(|s| s.complete).collect()))
        .collect();
    let mut start_ms = 0u64;
    let periods: Vec<PeriodPlan<'_>> = group(listed)
        .into_iter()
        .map(|(id, tracks)| {
            let media_start_ms = tracks
                .iter()
                .filter_map(|t| {
                    t.segments
                        .first()
                        .map(|s| ticks_to_ms(s.start, t.rendition.timescale(), Rounding::Down))
                })
                .min()
                .unwrap_or(0);
            let media_end_ms = tracks
                .iter()
                .filter_map(|t| {
                    t.segments
                        .last()
                        .map(|s| ticks_to_ms(s.end(), t.rendition.timescale(), Rounding::Up))
                })
                .max()
                .unwrap_or(media_start_ms);
            let duration_ms = media_end_ms.saturating_sub(media_start_ms);
            let plan = PeriodPlan {
                id,
                start_ms,
                media_start_ms,
                duration_ms: Some(duration_ms),
                tracks,
            };
            start_ms = start_ms.saturating_add(duration_ms);
            plan
        })
        .collect();
    let longest_ms = renditions
        .iter()
        .flat_map(|r| {
            r.segments
                .iter()
                .filter(|s| s.complete)
                .map(|s| ticks_to_ms(s.duration, r.timescale(), Rounding::Up))
        })
        .max()
        .filter(|ms| *ms > 0)
        .unwrap_or(DEFAULT_MIN_BUFFER_MS);

    let mut out = String::with_capacity(1024 + periods.len() * 4096);
    out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<MPD xmlns=\"urn:mpeg:dash:schema:mpd:2011\" profiles=\"{PROFILE}\" type=\"static\" mediaPresentationDuration=\"{}\" minBufferTime=\"{}\">",
        iso_duration(start_ms),
        iso_duration(longest_ms),
    );
    write_periods(&mut out, &periods, None);
    out.push_str("</MPD>\n");
    out
}

/// The segment in progress is listed, and announced early (chunked low-latency delivery).
#[derive(Debug, Clone, Copy)]
struct Chunked {
    /// `availabilityTimeOffset`: segment target minus part target.
    availability_offset_ms: u64,
    /// Segment target in seconds: the duration listed for the segment in progress.
    nominal_segment: f64,
}

/// One rendition's segments within a Period.
#[derive(Debug)]
struct Track<'a> {
    rendition: &'a Rendition,
    segments: Vec<&'a Segment>,
}

/// One Period to write.
#[derive(Debug)]
struct PeriodPlan<'a> {
    /// The discontinuity sequence.
    id: u32,
    /// `Period@start`, milliseconds.
    start_ms: u64,
    /// Where the Period starts on the stream timeline (the `presentationTimeOffset`).
    media_start_ms: u64,
    /// `Period@duration`, when written.
    duration_ms: Option<u64>,
    /// Renditions with segments in the Period, video highest first, audio last.
    tracks: Vec<Track<'a>>,
}

/// Splits each rendition's segments into Periods by discontinuity sequence.
///
/// `$Number$` addressing needs consecutive numbers and one init per Representation, which
/// the packager guarantees within a run; should a run still break either, only its newest
/// consistent stretch is kept rather than writing wrong addresses.
fn group<'a>(listed: Vec<(&'a Rendition, Vec<&'a Segment>)>) -> BTreeMap<u32, Vec<Track<'a>>> {
    let mut periods: BTreeMap<u32, Vec<Track<'a>>> = BTreeMap::new();
    for (rendition, segments) in listed {
        if !matches!(rendition.track.kind, TrackKind::Video | TrackKind::Audio) {
            continue;
        }
        for segment in segments {
            let tracks = periods.entry(segment.discontinuity_sequence).or_default();
            let same = tracks
                .last()
                .is_some_and(|t| std::ptr::eq(t.rendition, rendition));
            if !same {
                tracks.push(Track {
                    rendition,
                    segments: Vec::new(),
                });
            }
            let Some(track) = tracks.last_mut() else {
                continue;
            };
            let consistent = track.segments.last().is_none_or(|last| {
                last.msn.checked_add(1) == Some(segment.msn) && last.init_id == segment.init_id
            });
            if !consistent {
                track.segments.clear();
            }
            track.segments.push(segment);
        }
    }
    periods
}

/// `Period@start` of the live Period `id` (milliseconds on the stream timeline).
///
/// The first run starts the timeline, so Period 0 starts at zero. A later run starts where its
/// earliest rendition's first segment did, as the packager recorded it: the start stays put
/// while the window slides through the Period. Renditions rebuilt from an archive index carry
/// no run starts; their Period starts at its earliest segment still held.
fn live_period_start(renditions: &[&Rendition], id: u32, tracks: &[Track<'_>]) -> u64 {
    if id == 0 {
        return 0;
    }
    let recorded = renditions
        .iter()
        .filter_map(|r| {
            r.run_start(id)
                .map(|t| ticks_to_ms(t, r.timescale(), Rounding::Down))
        })
        .min();
    if let Some(start) = recorded {
        return start;
    }
    let held = renditions.iter().filter_map(|r| {
        r.segments
            .iter()
            .find(|s| s.discontinuity_sequence == id)
            .map(|s| ticks_to_ms(s.start, r.timescale(), Rounding::Down))
    });
    let listed = tracks.iter().filter_map(|t| {
        t.segments
            .first()
            .map(|s| ticks_to_ms(s.start, t.rendition.timescale(), Rounding::Down))
    });
    held.chain(listed).min().unwrap_or(0)
}

fn write_periods(out: &mut String, periods: &[PeriodPlan<'_>], chunked: Option<Chunked>) {
    if periods.is_empty() {
        // Nothing held yet (or any more): the schema still wants a Period.
        out.push_str("  <Period id=\"0\" start=\"PT0S\"/>\n");
    }
    for period in periods {
        write_period(out, period, chunked);
    }
}

fn write_period(out: &mut String, period: &PeriodPlan<'_>, chunked: Option<Chunked>) {
    let _ = write!(
        out,
        "  <Period id=\"{}\" start=\"{}\"",
        period.id,
        iso_duration(period.start_ms)
    );
    if let Some(duration) = period.duration_ms {
        let _ = write!(out, " duration=\"{}\"", iso_duration(duration));
    }
    out.push_str(">\n");

    let video: Vec<&Track<'_>> = period
        .tracks
        .iter()
        .filter(|t| t.rendition.track.kind == TrackKind::Video)
        .collect();
    if !video.is_empty() {
        let max_width = video.iter().map(|t| t.rendition.track.width).max();
        let max_height = video.iter().map(|t| t.rendition.track.height).max();
        out.push_str("    <AdaptationSet id=\"0\" contentType=\"video\" mimeType=\"video/mp4\" segmentAlignment=\"true\" startWithSAP=\"1\"");
        if let (Some(width), Some(height)) = (max_width, max_height)
            && width > 0
            && height > 0
        {
            let _ = write!(out, " maxWidth=\"{width}\" maxHeight=\"{height}\"");
        }
        out.push_str(">\n");
        for track in video {
            write_representation(out, track, period, chunked);
        }
        out.push_str("    </AdaptationSet>\n");
    }

    let audio: Vec<&Track<'_>> = period
        .tracks
        .iter()
        .filter(|t| t.rendition.track.kind == TrackKind::Audio)
        .collect();
    if !audio.is_empty() {
        out.push_str("    <AdaptationSet id=\"1\" contentType=\"audio\" mimeType=\"audio/mp4\" lang=\"und\" segmentAlignment=\"true\" startWithSAP=\"1\">\n");
        for track in audio {
            write_representation(out, track, period, chunked);
        }
        out.push_str("    </AdaptationSet>\n");
    }
    out.push_str("  </Period>\n");
}

fn write_representation(
    out: &mut String,
    track: &Track<'_>,
    period: &PeriodPlan<'_>,
    chunked: Option<Chunked>,
) {
    let r = track.rendition;
    let Some(first) = track.segments.first() else {
        return;
    };
    let _ = write!(
        out,
        "      <Representation id=\"{}\" bandwidth=\"{}\" codecs=\"{}\"",
        escape(&r.name),
        bandwidth(r),
        escape(&r.track.codec),
    );
    let audio = r.track.kind == TrackKind::Audio;
    if audio {
        if r.track.sample_rate > 0 {
            let _ = write!(out, " audioSamplingRate=\"{}\"", r.track.sample_rate);
        }
    } else {
        if r.track.width > 0 && r.track.height > 0 {
            let _ = write!(
                out,
                " width=\"{}\" height=\"{}\"",
                r.track.width, r.track.height
            );
        }
        if let Some(rate) = r.frame_rate.and_then(frame_rate) {
            let _ = write!(out, " frameRate=\"{rate}\"");
        }
    }
    out.push_str(">\n");
    if audio {
        let channels = if r.track.channels == 0 {
            2
        } else {
            r.track.channels
        };
        let _ = writeln!(
            out,
            "        <AudioChannelConfiguration schemeIdUri=\"{CHANNEL_SCHEME}\" value=\"{channels}\"/>"
        );
    }

    let timescale = r.timescale();
    let _ = write!(
        out,
        "        <SegmentTemplate timescale=\"{timescale}\" presentationTimeOffset=\"{}\" startNumber=\"{}\" media=\"$RepresentationID$/$Number$.m4s\" initialization=\"$RepresentationID$/{}\"",
        ms_to_ticks(period.media_start_ms, timescale),
        first.msn,
        init_file_name(first.init_id),
    );
    if let Some(chunked) = chunked {
        if chunked.availability_offset_ms > 0 {
            let _ = write!(
                out,
                " availabilityTimeOffset=\"{}\"",
                decimal_seconds(chunked.availability_offset_ms)
            );
        }
        out.push_str(" availabilityTimeComplete=\"false\"");
    }
    out.push_str(">\n          <SegmentTimeline>\n");
    // The segment in progress is announced with the segment target (or what it already
    // holds, if a late keyframe made it longer): LL-DASH clients ask for it early and get it
    // chunked as parts arrive; the next update lists its real duration.
    let nominal = chunked.map_or(0, |c| {
        (c.nominal_segment * f64::from(timescale)).round().max(0.0) as u64
    });
    let mut entries: Vec<(u64, u64)> = track
        .segments
        .iter()
        .map(|s| {
            let duration = if s.complete {
                s.duration
            } else {
                s.duration.max(nominal)
            };
            (s.start, duration)
        })
        .collect();
    // The next segment is announced as soon as this one is in progress (see the module doc).
    if let Some(last) = track
        .segments
        .last()
        .filter(|s| chunked.is_some() && !s.complete)
    {
        entries.push((
            last.start.saturating_add(last.duration.max(nominal)),
            nominal,
        ));
    }
    for entry in timeline(entries) {
        out.push_str("            <S");
        if let Some(t) = entry.t {
            let _ = write!(out, " t=\"{t}\"");
        }
        let _ = write!(out, " d=\"{}\"", entry.d);
        if entry.r > 0 {
            let _ = write!(out, " r=\"{}\"", entry.r);
        }
        out.push_str("/>\n");
    }
    out.push_str(
        "          </SegmentTimeline>\n        </SegmentTemplate>\n      </Representation>\n",
    );
}

/// One `S` element of a SegmentTimeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TimelineEntry {
    /// `S@t`: written on the first entry and after a gap.
    t: Option<u64>,
    /// `S@d`.
    d: u64,
    /// `S@r`: how many more segments of the same duration follow back to back.
    r: u64,
}

/// Run-length encodes `(start, duration)` pairs, in order, into `S` elements.
fn timeline(segments: impl IntoIterator<Item = (u64, u64)>) -> Vec<TimelineEntry> {
    let mut entries: Vec<TimelineEntry> = Vec::new();
    let mut next: Option<u64> = None;
    for (start, d) in segments {
        let contiguous = next == Some(start);
        match entries.last_mut() {
            Some(last) if contiguous && last.d == d => last.r += 1,
            _ => entries.push(TimelineEntry {
                t: (!contiguous).then_some(start),
                d,
                r: 0,
            }),
        }
        next = Some(start.saturating_add(d));
    }
    entries
}

/// `Representation@bandwidth`: the measured peak once complete segments exist, never below
/// the nominal bitrate plus container overhead (as the HLS `BANDWIDTH`).
fn bandwidth(r: &Rendition) -> u32 {
    let nominal = r.bandwidth.saturating_add(r.bandwidth / 10);
    r.measured_bitrate()
        .map_or(nominal, |(_, peak)| peak.max(nominal))
}

/// `Latency@min` and `Latency@max` around `target` (all milliseconds): no closer than two
/// parts (one being made, one in flight) nor half the target; no further than two segments
/// beyond it before a client should seek back to the live edge.
fn latency_bounds(target: u64, segment_ms: u64, part_ms: u64) -> (u64, u64) {
    let min = (target / 2).max(part_ms.saturating_mul(2)).min(target);
    let max = target.saturating_add(segment_ms.saturating_mul(2));
    (min, max)
}

/// `frameRate` (`FrameRateType`: an integer or a fraction, never a decimal): `30`,
/// `30000/1001`, else the rate to a thousandth as a reduced fraction.
fn frame_rate(fps: f64) -> Option<String> {
    if !(0.5..=1_000.0).contains(&fps) {
        return None;
    }
    let whole = fps.round();
    if (fps - whole).abs() < 0.01 {
        return Some(format!("{}", whole as u64));
    }
    let ntsc = (fps * 1.001).round();
    if (fps * 1.001 - ntsc).abs() < 0.01 {
        return Some(format!("{}/1001", ntsc as u64 * 1000));
    }
    let milli = (fps * 1000.0).round() as u64;
    let divisor = gcd(milli, 1000);
    Some(format!("{}/{}", milli / divisor, 1000 / divisor))
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a.max(1)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rounding {
    Down,
    Up,
}

/// Milliseconds of `ticks` at `timescale`.
fn ticks_to_ms(ticks: u64, timescale: u32, rounding: Rounding) -> u64 {
    let timescale = u128::from(timescale.max(1));
    let scaled = u128::from(ticks) * 1000;
    let ms = match rounding {
        Rounding::Down => scaled / timescale,
        Rounding::Up => scaled.div_ceil(timescale),
    };
    u64::try_from(ms).unwrap_or(u64::MAX)
}

/// Ticks at `timescale` of `ms`, rounded down (never after the media it offsets).
fn ms_to_ticks(ms: u64, timescale: u32) -> u64 {
    let ticks = u128::from(ms) * u128::from(timescale) / 1000;
    u64::try_from(ticks).unwrap_or(u64::MAX)
}

/// Whole milliseconds of `seconds` (negative and not-a-number are zero).
fn seconds_to_ms(seconds: f64) -> u64 {
    if seconds.is_finite() && seconds > 0.0 {
        (seconds * 1000.0).round() as u64
    } else {
        0
    }
}

/// `1.5` for 1500 ms: seconds without trailing zeros.
fn decimal_seconds(ms: u64) -> String {
    let (seconds, millis) = (ms / 1000, ms % 1000);
    if millis == 0 {
        return seconds.to_string();
    }
    let fraction = format!("{millis:03}");
    format!("{seconds}.{}", fraction.trim_end_matches('0'))
}

/// An ISO 8601 duration in seconds (`PT2S`, `PT0.5S`, `PT3723.25S`), as `xs:duration`.
fn iso_duration(ms: u64) -> String {
    format!("PT{}S", decimal_seconds(ms))
}

/// Escapes an attribute value.
fn escape(value: &str) -> Cow<'_, str> {
    if !value.contains(['&', '<', '>', '"', '\'']) {
        return Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len() + 16);
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::handoff::MediaEvent;
    use crate::packager::{PackagerSettings, StreamPackager};
    use crate::testing::{feed_video, fragment, init};

    const START: u64 = 1_700_000_000_000;

    fn options() -> MpdOptions {
        MpdOptions {
            now_ms: START + 60_000,
            utc_timing_url: "../../time".to_owned(),
            target_latency_ms: 3_000,
        }
    }

    fn init_sized(tag: u8, width: u16, height: u16) -> MediaEvent {
        let MediaEvent::Init {
            bandwidth,
            mut init,
        } = init(TrackKind::Video, 15_360, tag)
        else {
            unreachable!()
        };
        init.track.width = width;
        init.track.height = height;
        MediaEvent::Init { bandwidth, init }
    }

    /// Feeds `seconds` of AAC in 0.5 s fragments (48 kHz) from run time `from`.
    fn feed_audio(p: &mut StreamPackager, from: f64, seconds: f64, now: &mut u64) {
        let mut t = from;
        while t < from + seconds - 1e-9 {
            p.apply(
                "audio",
                fragment((t * 48_000.0) as u64, 24_000, false),
                *now,
            )
            .unwrap();
            t += 0.5;
            *now += 500;
        }
    }

    /// 720p and 480p video (the 480p one part behind) and audio, for `seconds`.
    fn stream_with(settings: PackagerSettings, seconds: f64) -> StreamPackager {
        let mut p = StreamPackager::new(settings);
        let now = START;
        p.apply("720p", init(TrackKind::Video, 15_360, 1), now)
            .unwrap();
        p.apply("480p", init_sized(2, 854, 480), now).unwrap();
        p.apply("audio", init(TrackKind::Audio, 48_000, 3), now)
            .unwrap();
        let (mut a, mut b, mut c) = (now, now, now);
        feed_video(&mut p, "720p", 0.0, seconds, &mut a);
        feed_video(&mut p, "480p", 0.0, seconds - 0.5, &mut b);
        feed_audio(&mut p, 0.0, seconds, &mut c);
        p
    }

    fn stream(seconds: f64) -> StreamPackager {
        stream_with(PackagerSettings::default(), seconds)
    }

    fn not_low_latency() -> PackagerSettings {
        PackagerSettings {
            low_latency: false,
            ..PackagerSettings::default()
        }
    }

    /// The value of attribute `name` on the first `<element ...>` tag in `xml`.
    fn attr<'a>(xml: &'a str, element: &str, name: &str) -> Option<&'a str> {
        let start = xml.find(&format!("<{element} "))?;
        let end = start + xml[start..].find('>')?;
        let tag = &xml[start..end];
        let key = format!(" {name}=\"");
        let at = tag.find(&key)? + key.len();
        let len = tag[at..].find('"')?;
        Some(&tag[at..at + len])
    }

    /// The Periods of `xml`, each from its tag to its end.
    fn periods(xml: &str) -> Vec<&str> {
        xml.match_indices("<Period ")
            .map(|(start, _)| {
                let end = start + xml[start..].find("</Period>").unwrap();
                &xml[start..end]
            })
            .collect()
    }

    /// The Representation `id` within `xml`.
    fn representation<'a>(xml: &'a str, id: &str) -> Option<&'a str> {
        let start = xml.find(&format!("<Representation id=\"{id}\""))?;
        let end = start + xml[start..].find("</Representation>")?;
        Some(&xml[start..end])
    }

    fn assert_entities(text: &str) {
        for (at, _) in text.match_indices('&') {
            let rest = &text[at + 1..];
            assert!(
                ["amp;", "lt;", "gt;", "quot;", "apos;"]
                    .iter()
                    .any(|e| rest.starts_with(e)),
                "bare & in {text:?}"
            );
        }
        assert!(!text.contains('<') && !text.contains('>'), "{text:?}");
    }

    /// A small well-formedness check: one root, balanced tags, quoted unique attributes,
    /// escaped text.
    fn assert_well_formed(xml: &str) {
        let mut rest = xml
            .strip_prefix("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n")
            .expect("XML declaration");
        let mut stack: Vec<&str> = Vec::new();
        let mut roots = 0;
        while let Some(open) = rest.find('<') {
            let text = &rest[..open];
            if stack.is_empty() {
                assert!(text.trim().is_empty(), "text outside the root: {text:?}");
            }
            assert_entities(text);
            let close = open + rest[open..].find('>').expect("unterminated tag");
            let tag = &rest[open + 1..close];
            assert!(!tag.contains('<'), "{tag}");
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(stack.pop(), Some(name.trim()), "mismatched </{name}>");
            } else {
                let self_closing = tag.ends_with('/');
                let inner = tag.trim_end_matches('/');
                let name_end = inner.find(char::is_whitespace).unwrap_or(inner.len());
                let name = &inner[..name_end];
                assert!(!name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric()));
                let mut attributes = inner[name_end..].trim_start();
                let mut seen = Vec::new();
                while !attributes.is_empty() {
                    let eq = attributes.find("=\"").expect("attribute without a value");
                    let key = &attributes[..eq];
                    assert!(
                        !key.is_empty()
                            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == ':'),
                        "attribute name {key:?}"
                    );
                    assert!(!seen.contains(&key), "duplicate attribute {key}");
                    seen.push(key);
                    let value_start = eq + 2;
                    let value_len = attributes[value_start..].find('"').expect("unquoted");
                    assert_entities(&attributes[value_start..value_start + value_len]);
                    let after = &attributes[value_start + value_len + 1..];
                    assert!(
                        after.is_empty() || after.starts_with(char::is_whitespace),
                        "no space after {key}"
                    );
                    attributes = after.trim_start();
                }
                if stack.is_empty() {
                    roots += 1;
                }
                if !self_closing {
                    stack.push(name);
                }
            }
            rest = &rest[close + 1..];
        }
        assert!(rest.trim().is_empty());
        assert!(stack.is_empty(), "unclosed {stack:?}");
        assert_eq!(roots, 1);
    }

    #[test]
    fn live_mpd_is_dynamic_with_the_stream_clock() {
        let p = stream(5.0);
        let xml = live_mpd(&p, &options());
        assert_well_formed(&xml);
        assert_eq!(attr(&xml, "MPD", "type"), Some("dynamic"));
        assert_eq!(
            attr(&xml, "MPD", "profiles"),
            Some("urn:mpeg:dash:profile:isoff-live:2011")
        );
        // Timeline zero is the anchor: half a second before the first fragment arrived.
        assert_eq!(
            attr(&xml, "MPD", "availabilityStartTime"),
            Some("2023-11-14T22:13:19.500Z")
        );
        assert_eq!(
            attr(&xml, "MPD", "publishTime"),
            Some("2023-11-14T22:14:20.000Z")
        );
        // Low latency: reloaded every part, so a player learns each segment as it starts.
        assert_eq!(attr(&xml, "MPD", "minimumUpdatePeriod"), Some("PT0.5S"));
        assert_eq!(attr(&xml, "MPD", "timeShiftBufferDepth"), Some("PT20S"));
        assert_eq!(attr(&xml, "MPD", "minBufferTime"), Some("PT2S"));
        // Low latency: the latency target.
        assert_eq!(
            attr(&xml, "MPD", "suggestedPresentationDelay"),
            Some("PT3S")
        );
        assert_eq!(attr(&xml, "MPD", "mediaPresentationDuration"), None);
        let utc = xml
            .find(
                "<UTCTiming schemeIdUri=\"urn:mpeg:dash:utc:http-iso:2014\" value=\"../../time\"/>",
            )
            .unwrap();
        assert!(utc > xml.rfind("</Period>").unwrap());

        let plain = stream_with(not_low_latency(), 5.0);
        let xml = live_mpd(&plain, &options());
        assert_well_formed(&xml);
        assert_eq!(
            attr(&xml, "MPD", "suggestedPresentationDelay"),
            Some("PT6S")
        );
        assert!(!xml.contains("ServiceDescription"));

        let dvr = stream_with(
            PackagerSettings {
                dvr_window: Some(90.0),
                segment_target: 0.5,
                ..not_low_latency()
            },
            5.0,
        );
        let xml = live_mpd(&dvr, &options());
        assert_eq!(attr(&xml, "MPD", "timeShiftBufferDepth"), Some("PT90S"));
        assert_eq!(attr(&xml, "MPD", "minimumUpdatePeriod"), Some("PT0.5S"));
    }

    #[test]
    fn representations_describe_the_renditions() {
        let p = stream(5.0);
        let xml = live_mpd(&p, &options());
        assert_eq!(periods(&xml).len(), 1);
        assert_eq!(attr(&xml, "Period", "id"), Some("0"));
        assert_eq!(attr(&xml, "Period", "start"), Some("PT0S"));
        let video = xml.find("contentType=\"video\"").unwrap();
        let audio = xml.find("contentType=\"audio\"").unwrap();
        assert!(video < audio);
        assert!(xml.contains("<AdaptationSet id=\"0\" contentType=\"video\" mimeType=\"video/mp4\" segmentAlignment=\"true\" startWithSAP=\"1\" maxWidth=\"1280\" maxHeight=\"720\">"));
        assert!(xml.contains(
            "<AdaptationSet id=\"1\" contentType=\"audio\" mimeType=\"audio/mp4\" lang=\"und\""
        ));
        let hi = xml.find("<Representation id=\"720p\"").unwrap();
        let lo = xml.find("<Representation id=\"480p\"").unwrap();
        assert!(hi < lo && lo < audio, "highest first");
        // 2.8 Mb/s nominal plus 10 %: the tiny test segments measure far below.
        assert!(xml.contains("<Representation id=\"720p\" bandwidth=\"3080000\" codecs=\"avc1.64001f\" width=\"1280\" height=\"720\" frameRate=\"30\">"));
        assert!(xml.contains("<Representation id=\"480p\" bandwidth=\"3080000\" codecs=\"avc1.64001f\" width=\"854\" height=\"480\" frameRate=\"30\">"));
        assert!(xml.contains("<Representation id=\"audio\" bandwidth=\"3080000\" codecs=\"mp4a.40.2\" audioSamplingRate=\"48000\">\n        <AudioChannelConfiguration schemeIdUri=\"urn:mpeg:dash:23003:3:audio_channel_configuration:2011\" value=\"2\"/>\n        <SegmentTemplate timescale=\"48000\" presentationTimeOffset=\"0\" startNumber=\"0\" media=\"$RepresentationID$/$Number$.m4s\" initialization=\"$RepresentationID$/init.mp4\""));
    }

    #[test]
    fn low_latency_lists_the_segment_in_progress() {
        let p = stream(5.0);
        let xml = live_mpd(&p, &options());
        assert_well_formed(&xml);
        assert!(xml.contains("<ServiceDescription id=\"0\">\n    <Latency target=\"3000\" max=\"7000\" min=\"1500\"/>\n    <PlaybackRate min=\"0.96\" max=\"1.04\"/>\n  </ServiceDescription>"));
        let service = xml.find("<ServiceDescription").unwrap();
        assert!(service < xml.find("<Period").unwrap());
        let hi = representation(&xml, "720p").unwrap();
        assert_eq!(
            attr(hi, "SegmentTemplate", "availabilityTimeOffset"),
            Some("1.5")
        );
        assert_eq!(
            attr(hi, "SegmentTemplate", "availabilityTimeComplete"),
            Some("false")
        );
        // 0 and 1 complete, 2 in progress (one second of it) listed at the nominal 2 s, and 3,
        // which has not started, announced after it.
        let r = p.rendition("720p").unwrap();
        assert!(!r.segments[2].complete);
        assert_eq!(r.segments[2].duration, 15_360);
        assert_eq!(r.next_msn(), 3);
        assert!(hi.contains("<SegmentTimeline>\n            <S t=\"0\" d=\"30720\" r=\"3\"/>\n          </SegmentTimeline>"));
        // Audio: 0 and 1 complete, 2 in progress, 3 announced, at 48 kHz.
        let audio = representation(&xml, "audio").unwrap();
        assert!(audio.contains("<S t=\"0\" d=\"96000\" r=\"3\"/>"));

        let plain = stream_with(not_low_latency(), 5.0);
        let xml = live_mpd(&plain, &options());
        assert!(!xml.contains("availabilityTime"));
        let hi = representation(&xml, "720p").unwrap();
        assert!(hi.contains("<SegmentTimeline>\n            <S t=\"0\" d=\"30720\" r=\"1\"/>\n          </SegmentTimeline>"));
    }

    #[test]
    fn run_length_and_start_number_follow_the_window() {
        let p = stream(30.0);
        let xml = live_mpd(&p, &options());
        assert_well_formed(&xml);
        let r = p.rendition("720p").unwrap();
        // Ten complete segments listed (4..13), 14 in progress and 15 announced.
        let first_listed = r
            .segments
            .iter()
            .rev()
            .filter(|s| s.complete)
            .nth(9)
            .unwrap();
        assert_eq!(first_listed.msn, 4);
        let hi = representation(&xml, "720p").unwrap();
        assert_eq!(attr(hi, "SegmentTemplate", "startNumber"), Some("4"));
        assert!(hi.contains("<S t=\"122880\" d=\"30720\" r=\"11\"/>"));
        assert_eq!(hi.matches("<S ").count(), 1);

        let plain = stream_with(not_low_latency(), 30.0);
        let xml = live_mpd(&plain, &options());
        let hi = representation(&xml, "720p").unwrap();
        assert_eq!(attr(hi, "SegmentTemplate", "startNumber"), Some("4"));
        assert!(hi.contains("<S t=\"122880\" d=\"30720\" r=\"9\"/>"));
    }

    #[test]
    fn timeline_repeats_equal_durations_and_restates_t_after_gaps() {
        let entries = timeline([
            (0, 10),
            (10, 10),
            (20, 10),
            (30, 7),
            (37, 10),
            (50, 10),
            (60, 10),
        ]);
        assert_eq!(
            entries,
            vec![
                TimelineEntry {
                    t: Some(0),
                    d: 10,
                    r: 2
                },
                TimelineEntry {
                    t: None,
                    d: 7,
                    r: 0
                },
                TimelineEntry {
                    t: None,
                    d: 10,
                    r: 0
                },
                TimelineEntry {
                    t: Some(50),
                    d: 10,
                    r: 1
                },
            ]
        );
        assert!(timeline([]).is_empty());
    }

    /// A stream whose transcoder restarts after four seconds and `gap_ms` away, with a new
    /// 720p init (the other renditions' inits are unchanged).
    fn restarted(gap_ms: u64) -> StreamPackager {
        let mut p = stream(4.0);
        let mut now = START + 4_000 + gap_ms;
        for name in ["720p", "480p", "audio"] {
            p.apply(name, MediaEvent::End, now).unwrap();
            p.apply(name, MediaEvent::Discontinuity, now).unwrap();
        }
        p.apply("720p", init(TrackKind::Video, 15_360, 7), now)
            .unwrap();
        p.apply("480p", init_sized(2, 854, 480), now).unwrap();
        p.apply("audio", init(TrackKind::Audio, 48_000, 3), now)
            .unwrap();
        let (mut a, mut b) = (now, now);
        feed_video(&mut p, "720p", 0.0, 4.5, &mut now);
        feed_video(&mut p, "480p", 0.0, 4.5, &mut a);
        feed_audio(&mut p, 0.0, 4.5, &mut b);
        p
    }

    #[test]
    fn a_restart_starts_a_period_with_its_init() {
        let p = restarted(10_000);
        let xml = live_mpd(&p, &options());
        assert_well_formed(&xml);
        let list = periods(&xml);
        assert_eq!(list.len(), 2);
        assert_eq!(attr(list[0], "Period", "id"), Some("0"));
        assert_eq!(attr(list[0], "Period", "start"), Some("PT0S"));
        assert_eq!(attr(list[1], "Period", "id"), Some("1"));

        // Period 1 starts where the run does: its earliest discontinuity segment.
        let start_ms = p
            .renditions()
            .iter()
            .map(|r| {
                let s = r.segments.iter().find(|s| s.discontinuity).unwrap();
                assert_eq!(s.discontinuity_sequence, 1);
                s.start * 1000 / u64::from(r.timescale())
            })
            .min()
            .unwrap();
        assert!((13_000..15_000).contains(&start_ms), "{start_ms}");
        assert_eq!(
            attr(list[1], "Period", "start"),
            Some(iso_duration(start_ms).as_str())
        );

        let old = representation(list[0], "720p").unwrap();
        assert_eq!(
            attr(old, "SegmentTemplate", "initialization"),
            Some("$RepresentationID$/init.mp4")
        );
        assert_eq!(attr(old, "SegmentTemplate", "startNumber"), Some("0"));
        assert!(old.contains("<S t=\"0\" d=\"30720\" r=\"1\"/>"));

        let r = p.rendition("720p").unwrap();
        let restart = r.segments.iter().find(|s| s.discontinuity).unwrap();
        let new = representation(list[1], "720p").unwrap();
        assert_eq!(
            attr(new, "SegmentTemplate", "initialization"),
            Some("$RepresentationID$/init-1.mp4")
        );
        assert_eq!(
            attr(new, "SegmentTemplate", "startNumber"),
            Some(restart.msn.to_string().as_str())
        );
        let offset = start_ms * 15_360 / 1000;
        assert!(offset <= restart.start);
        assert_eq!(
            attr(new, "SegmentTemplate", "presentationTimeOffset"),
            Some(offset.to_string().as_str())
        );
        assert!(new.contains(&format!("<S t=\"{}\" d=\"30720\"", restart.start)));
        // The 480p init did not change.
        let lo = representation(list[1], "480p").unwrap();
        assert_eq!(
            attr(lo, "SegmentTemplate", "initialization"),
            Some("$RepresentationID$/init.mp4")
        );
        assert!(representation(list[1], "audio").is_some());
    }

    #[test]
    fn a_period_keeps_its_start_while_the_window_slides_through_it() {
        let mut p = restarted(10_000);
        let before = live_mpd(&p, &options());
        let start = attr(periods(&before)[1], "Period", "start")
            .unwrap()
            .to_owned();
        let offset = attr(
            representation(periods(&before)[1], "720p").unwrap(),
            "SegmentTemplate",
            "presentationTimeOffset",
        )
        .unwrap()
        .to_owned();
        // 40 s more of the second run: its first segments (and all of run 0) leave the window.
        let mut now = START + 60_000;
        let (mut a, mut b) = (now, now);
        feed_video(&mut p, "720p", 4.5, 40.0, &mut now);
        feed_video(&mut p, "480p", 4.5, 40.0, &mut a);
        feed_audio(&mut p, 4.5, 40.0, &mut b);
        let r = p.rendition("720p").unwrap();
        assert!(
            !r.segments.iter().any(|s| s.discontinuity),
            "the run's first segment has left the window"
        );
        let later = MpdOptions {
            now_ms: START + 120_000,
            ..options()
        };
        let after = live_mpd(&p, &later);
        assert_well_formed(&after);
        let list = periods(&after);
        assert_eq!(list.len(), 1, "Period 0 is gone");
        assert_eq!(attr(list[0], "Period", "id"), Some("1"));
        assert_eq!(
            attr(list[0], "Period", "start"),
            Some(start.as_str()),
            "the start stays put"
        );
        let new = representation(list[0], "720p").unwrap();
        assert_eq!(
            attr(new, "SegmentTemplate", "presentationTimeOffset"),
            Some(offset.as_str())
        );
        // The first listed segment starts after the Period does, at its own time.
        let first_t: u64 = new
            .split("<S t=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(first_t > offset.parse::<u64>().unwrap(), "{new}");
        assert!(r.segments.iter().any(|s| s.start == first_t));
    }

    #[test]
    fn an_ended_stream_stays_dynamic_with_its_duration() {
        let mut p = stream(9.0);
        p.end();
        let xml = live_mpd(&p, &options());
        assert_well_formed(&xml);
        assert_eq!(attr(&xml, "MPD", "type"), Some("dynamic"));
        assert_eq!(attr(&xml, "MPD", "minimumUpdatePeriod"), None);
        assert_eq!(attr(&xml, "MPD", "mediaPresentationDuration"), Some("PT9S"));
        let hi = representation(&xml, "720p").unwrap();
        // Everything is complete: the last segment is listed with its real second.
        assert!(hi.contains("<S t=\"0\" d=\"30720\" r=\"3\"/>\n            <S d=\"15360\"/>"));
    }

    #[test]
    fn vod_lists_every_segment_without_live_signalling() {
        let mut p = stream(9.0);
        p.end();
        let xml = vod_mpd(&p.renditions());
        assert_well_formed(&xml);
        assert_eq!(attr(&xml, "MPD", "type"), Some("static"));
        for absent in [
            "UTCTiming",
            "availabilityTime",
            "ServiceDescription",
            "minimumUpdatePeriod",
            "timeShiftBufferDepth",
            "publishTime",
        ] {
            assert!(!xml.contains(absent), "{absent}");
        }
        let r = p.rendition("720p").unwrap();
        let total: u64 = r.segments.iter().map(|s| s.duration).sum();
        let total_ms = total * 1000 / 15_360;
        assert_eq!(total_ms, 9_000);
        assert_eq!(
            attr(&xml, "MPD", "mediaPresentationDuration"),
            Some(iso_duration(total_ms).as_str())
        );
        assert_eq!(attr(&xml, "MPD", "minBufferTime"), Some("PT2S"));
        assert_eq!(attr(&xml, "Period", "duration"), Some("PT9S"));
        let hi = representation(&xml, "720p").unwrap();
        assert!(hi.contains("<S t=\"0\" d=\"30720\" r=\"3\"/>\n            <S d=\"15360\"/>"));
    }

    #[test]
    fn vod_periods_follow_each_other_without_the_gap() {
        let mut p = restarted(10_000);
        p.end();
        let xml = vod_mpd(&p.renditions());
        assert_well_formed(&xml);
        let list = periods(&xml);
        assert_eq!(list.len(), 2);
        // 4 s, then 4.5 s of the second run: the 10 s away are not played.
        assert_eq!(attr(list[0], "Period", "start"), Some("PT0S"));
        assert_eq!(attr(list[0], "Period", "duration"), Some("PT4S"));
        assert_eq!(attr(list[1], "Period", "start"), Some("PT4S"));
        assert_eq!(attr(list[1], "Period", "duration"), Some("PT4.5S"));
        let r = p.rendition("720p").unwrap();
        let total: u64 = r.segments.iter().map(|s| s.duration).sum();
        assert_eq!(total * 1000 / 15_360, 8_500);
        assert_eq!(
            attr(&xml, "MPD", "mediaPresentationDuration"),
            Some("PT8.5S")
        );
        let restart = r.segments.iter().find(|s| s.discontinuity).unwrap();
        let new = representation(list[1], "720p").unwrap();
        let pto: u64 = attr(new, "SegmentTemplate", "presentationTimeOffset")
            .unwrap()
            .parse()
            .unwrap();
        assert!(pto <= restart.start && restart.start - pto < 16, "{pto}");
        assert_eq!(
            attr(new, "SegmentTemplate", "initialization"),
            Some("$RepresentationID$/init-1.mp4")
        );
    }

    #[test]
    fn an_empty_stream_still_writes_a_valid_mpd() {
        let p = StreamPackager::new(PackagerSettings::default());
        let xml = live_mpd(&p, &options());
        assert_well_formed(&xml);
        assert!(xml.contains("<Period id=\"0\" start=\"PT0S\"/>"));
        assert_well_formed(&vod_mpd(&[]));
    }

    #[test]
    fn attribute_values_from_data_are_escaped() {
        let mut p = StreamPackager::new(PackagerSettings::default());
        let MediaEvent::Init {
            bandwidth,
            mut init,
        } = init(TrackKind::Video, 15_360, 1)
        else {
            unreachable!()
        };
        init.track.codec = "avc1.64001f\"&<x>'".to_owned();
        let mut now = START;
        p.apply("hd&co", MediaEvent::Init { bandwidth, init }, now)
            .unwrap();
        feed_video(&mut p, "hd&co", 0.0, 5.0, &mut now);
        let xml = live_mpd(
            &p,
            &MpdOptions {
                utc_timing_url: "../../time?a=1&b=2".to_owned(),
                ..options()
            },
        );
        assert_well_formed(&xml);
        assert!(xml.contains("id=\"hd&amp;co\""));
        assert!(xml.contains("codecs=\"avc1.64001f&quot;&amp;&lt;x&gt;&apos;\""));
        assert!(xml.contains("value=\"../../time?a=1&amp;b=2\""));
    }

    #[test]
    fn formats() {
        assert_eq!(iso_duration(0), "PT0S");
        assert_eq!(iso_duration(2_000), "PT2S");
        assert_eq!(iso_duration(500), "PT0.5S");
        assert_eq!(iso_duration(3_723_250), "PT3723.25S");
        assert_eq!(iso_duration(14_023), "PT14.023S");
        assert_eq!(decimal_seconds(1_500), "1.5");
        assert_eq!(frame_rate(30.0).as_deref(), Some("30"));
        assert_eq!(frame_rate(25.0).as_deref(), Some("25"));
        assert_eq!(
            frame_rate(30_000.0 / 1_001.0).as_deref(),
            Some("30000/1001")
        );
        assert_eq!(frame_rate(23.976).as_deref(), Some("24000/1001"));
        assert_eq!(frame_rate(59.94).as_deref(), Some("60000/1001"));
        assert_eq!(frame_rate(12.5).as_deref(), Some("25/2"));
        assert_eq!(frame_rate(f64::NAN), None);
        assert_eq!(frame_rate(0.0), None);
        assert_eq!(ticks_to_ms(15_361, 15_360, Rounding::Down), 1_000);
        assert_eq!(ticks_to_ms(15_361, 15_360, Rounding::Up), 1_001);
        assert_eq!(ms_to_ticks(1_001, 15_360), 15_375);
        assert_eq!(latency_bounds(3_000, 2_000, 500), (1_500, 7_000));
        assert_eq!(latency_bounds(800, 2_000, 500), (800, 4_800));
        assert_eq!(escape("720p"), Cow::Borrowed("720p"));
    }
}
