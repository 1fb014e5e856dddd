//! Reading HLS playlists as a player does, no IO: the multivariant playlist's variants and
//! audio rendition, and a media playlist's segments, parts, preload hint, server control and
//! program date-times (LL-HLS, delta updates included).

/// One variant of a multivariant playlist.
#[derive(Debug, Clone, PartialEq)]
pub struct Variant {
    /// `BANDWIDTH`, bit/s.
    pub bandwidth: u64,
    /// Picture height from `RESOLUTION`, if given.
    pub height: Option<u32>,
    /// The media playlist's URI, as written (relative to the multivariant playlist).
    pub uri: String,
}

/// A multivariant playlist.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Multivariant {
    /// Variants in the order listed.
    pub variants: Vec<Variant>,
    /// The default audio rendition's playlist, when audio is separate.
    pub audio: Option<String>,
}

/// One part of a segment (`EXT-X-PART`).
#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    /// Seconds.
    pub duration: f64,
    /// URI as written.
    pub uri: String,
    /// Starts with a key frame.
    pub independent: bool,
}

/// One media segment: complete (`EXTINF` seen) or still growing (parts only).
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    /// Media sequence number.
    pub msn: u64,
    /// Wall-clock time of its first sample, Unix ms (from the nearest program date-time).
    pub start_ms: Option<i64>,
    /// Seconds (the parts' sum while growing).
    pub duration: f64,
    /// The whole segment's URI; `None` while it grows.
    pub uri: Option<String>,
    /// Its parts, when listed.
    pub parts: Vec<Part>,
}

impl Segment {
    /// Whether the segment is complete.
    pub fn complete(&self) -> bool {
        self.uri.is_some()
    }
}

/// A media playlist.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MediaPlaylist {
    /// `EXT-X-TARGETDURATION`, seconds.
    pub target_duration: f64,
    /// `PART-TARGET`, seconds (low-latency playlists only).
    pub part_target: Option<f64>,
    /// `CAN-BLOCK-RELOAD=YES`.
    pub can_block_reload: bool,
    /// `CAN-SKIP-UNTIL`, seconds.
    pub can_skip_until: Option<f64>,
    /// `PART-HOLD-BACK`, seconds.
    pub part_hold_back: Option<f64>,
    /// `HOLD-BACK`, seconds.
    pub hold_back: Option<f64>,
    /// `EXT-X-MAP` URI.
    pub init: Option<String>,
    /// Segments skipped by a delta update (`EXT-X-SKIP`).
    pub skipped: u64,
    /// Listed segments, oldest first.
    pub segments: Vec<Segment>,
    /// `EXT-X-PRELOAD-HINT` of type PART: the next part's URI.
    pub preload_hint: Option<String>,
    /// `EXT-X-ENDLIST`: the stream is over (VOD).
    pub ended: bool,
    /// Whether segment times come from `EXT-X-PROGRAM-DATE-TIME` (else they count from 0).
    pub dated: bool,
    /// Seconds the answer had spent in caches (its HTTP `Age`), set by whoever fetched it; 0
    /// when it came fresh from the packager.
    pub age: f64,
}

/// Why a playlist could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlaylistError {
    /// It does not start with `#EXTM3U`.
    #[error("not an HLS playlist (no #EXTM3U)")]
    NotM3u,
    /// A tag's value is not what the tag needs.
    #[error("bad {0}")]
    BadTag(&'static str),
}

/// `KEY=value,KEY="value"` attribute lists.
fn attributes(list: &str) -> Vec<(&str, &str)> {
    let mut out = Vec::new();
    let mut rest = list;
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"').unwrap_or(quoted.len());
            let next = quoted.get(end + 1..).unwrap_or("");
            (&quoted[..end], next.strip_prefix(',').unwrap_or(next))
        } else {
            match after.split_once(',') {
                Some((v, n)) => (v, n),
                None => (after, ""),
            }
        };
        out.push((key.trim(), value));
        rest = next;
    }
    out
}

fn attribute<'a>(list: &[(&'a str, &'a str)], key: &str) -> Option<&'a str> {
    list.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
}

fn number(text: &str, tag: &'static str) -> Result<f64, PlaylistError> {
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)
        .ok_or(PlaylistError::BadTag(tag))
}

/// Reads a multivariant playlist.
pub fn parse_multivariant(text: &str) -> Result<Multivariant, PlaylistError> {
    if !text.trim_start().starts_with("#EXTM3U") {
        return Err(PlaylistError::NotM3u);
    }
    let mut out = Multivariant::default();
    let mut pending: Option<(u64, Option<u32>)> = None;
    for line in text.lines().map(str::trim) {
        if let Some(list) = line.strip_prefix("#EXT-X-STREAM-INF:") {
            let a = attributes(list);
            let bandwidth = attribute(&a, "BANDWIDTH")
                .and_then(|b| b.parse().ok())
                .ok_or(PlaylistError::BadTag("EXT-X-STREAM-INF BANDWIDTH"))?;
            let height = attribute(&a, "RESOLUTION")
                .and_then(|r| r.split_once('x'))
                .and_then(|(_, h)| h.parse().ok());
            pending = Some((bandwidth, height));
        } else if let Some(list) = line.strip_prefix("#EXT-X-MEDIA:") {
            let a = attributes(list);
            if attribute(&a, "TYPE") == Some("AUDIO")
                && (out.audio.is_none() || attribute(&a, "DEFAULT") == Some("YES"))
                && let Some(uri) = attribute(&a, "URI")
            {
                out.audio = Some(uri.to_owned());
            }
        } else if !line.is_empty()
            && !line.starts_with('#')
            && let Some((bandwidth, height)) = pending.take()
        {
            out.variants.push(Variant {
                bandwidth,
                height,
                uri: line.to_owned(),
            });
        }
    }
    Ok(out)
}

/// `2026-12-07T10:03:31.112Z` (or with an offset) as Unix ms.
pub fn parse_date_time(text: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(text.trim())
        .ok()
        .map(|t| t.timestamp_millis())
}

/// Reads a media playlist.
pub fn parse_media(text: &str) -> Result<MediaPlaylist, PlaylistError> {
    if !text.trim_start().starts_with("#EXTM3U") {
        return Err(PlaylistError::NotM3u);
    }
    let mut out = MediaPlaylist::default();
    let mut msn = 0u64;
    let mut next_start: Option<i64> = Some(0);
    let mut current = Segment {
        msn: 0,
        start_ms: Some(0),
        duration: 0.0,
        uri: None,
        parts: Vec::new(),
    };
    let mut extinf: Option<f64> = None;
    for line in text.lines().map(str::trim) {
        if line.is_empty() {
            continue;
        }
        let segment_begins = |current: &mut Segment, msn: u64, next_start: Option<i64>| {
            if current.parts.is_empty() && current.uri.is_none() {
                current.msn = msn;
                current.start_ms = next_start;
            }
        };
        if let Some(v) = line.strip_prefix("#EXT-X-TARGETDURATION:") {
            out.target_duration = number(v, "EXT-X-TARGETDURATION")?;
        } else if let Some(v) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
            msn = v
                .trim()
                .parse()
                .map_err(|_| PlaylistError::BadTag("EXT-X-MEDIA-SEQUENCE"))?;
        } else if let Some(list) = line.strip_prefix("#EXT-X-PART-INF:") {
            let a = attributes(list);
            out.part_target = attribute(&a, "PART-TARGET")
                .map(|v| number(v, "PART-TARGET"))
                .transpose()?;
        } else if let Some(list) = line.strip_prefix("#EXT-X-SERVER-CONTROL:") {
            let a = attributes(list);
            out.can_block_reload = attribute(&a, "CAN-BLOCK-RELOAD") == Some("YES");
            out.can_skip_until = attribute(&a, "CAN-SKIP-UNTIL")
                .map(|v| number(v, "CAN-SKIP-UNTIL"))
                .transpose()?;
            out.part_hold_back = attribute(&a, "PART-HOLD-BACK")
                .map(|v| number(v, "PART-HOLD-BACK"))
                .transpose()?;
            out.hold_back = attribute(&a, "HOLD-BACK")
                .map(|v| number(v, "HOLD-BACK"))
                .transpose()?;
        } else if let Some(list) = line.strip_prefix("#EXT-X-SKIP:") {
            let a = attributes(list);
            out.skipped = attribute(&a, "SKIPPED-SEGMENTS")
                .and_then(|v| v.parse().ok())
                .ok_or(PlaylistError::BadTag("EXT-X-SKIP"))?;
            msn += out.skipped;
        } else if let Some(list) = line.strip_prefix("#EXT-X-MAP:") {
            out.init = attribute(&attributes(list), "URI").map(str::to_owned);
        } else if let Some(v) = line.strip_prefix("#EXT-X-PROGRAM-DATE-TIME:") {
            next_start =
                Some(parse_date_time(v).ok_or(PlaylistError::BadTag("EXT-X-PROGRAM-DATE-TIME"))?);
            out.dated = true;
            if current.parts.is_empty() {
                current.start_ms = next_start;
            }
        } else if let Some(list) = line.strip_prefix("#EXT-X-PART:") {
            segment_begins(&mut current, msn, next_start);
            let a = attributes(list);
            let duration = number(
                attribute(&a, "DURATION").ok_or(PlaylistError::BadTag("EXT-X-PART"))?,
                "EXT-X-PART DURATION",
            )?;
            let uri = attribute(&a, "URI").ok_or(PlaylistError::BadTag("EXT-X-PART URI"))?;
            current.parts.push(Part {
                duration,
                uri: uri.to_owned(),
                independent: attribute(&a, "INDEPENDENT") == Some("YES"),
            });
            current.duration += duration;
        } else if let Some(v) = line.strip_prefix("#EXTINF:") {
            segment_begins(&mut current, msn, next_start);
            extinf = Some(number(v.split(',').next().unwrap_or(""), "EXTINF")?);
        } else if let Some(list) = line.strip_prefix("#EXT-X-PRELOAD-HINT:") {
            let a = attributes(list);
            if attribute(&a, "TYPE") == Some("PART") {
                out.preload_hint = attribute(&a, "URI").map(str::to_owned);
            }
        } else if line == "#EXT-X-ENDLIST" {
            out.ended = true;
        } else if line == "#EXT-X-DISCONTINUITY" {
            // A new timeline: the next program date-time places it.
        } else if !line.starts_with('#') {
            let duration = extinf
                .take()
                .ok_or(PlaylistError::BadTag("URI without EXTINF"))?;
            segment_begins(&mut current, msn, next_start);
            current.duration = duration;
            current.uri = Some(line.to_owned());
            next_start = current
                .start_ms
                .map(|s| s + (duration * 1000.0).round() as i64);
            msn += 1;
            out.segments.push(std::mem::replace(
                &mut current,
                Segment {
                    msn,
                    start_ms: next_start,
                    duration: 0.0,
                    uri: None,
                    parts: Vec::new(),
                },
            ));
        }
    }
    if !current.parts.is_empty() {
        out.segments.push(current);
    }
    Ok(out)
}

impl MediaPlaylist {
    /// The part (or, for a segment listed without parts, the whole segment) after the newest
    /// one listed: what a blocking reload asks for (`_HLS_msn`, `_HLS_part`).
    pub fn next_after_last(&self) -> (u64, Option<usize>) {
        match self.segments.last() {
            None => (0, self.part_target.map(|_| 0)),
            Some(last) if !last.complete() => (last.msn, Some(last.parts.len())),
            Some(last) => (last.msn + 1, self.part_target.map(|_| 0)),
        }
    }

    /// The part `count` parts after (`msn`, `part`), counting each segment as many parts as
    /// the newest complete one has (else target duration over part target).
    pub fn parts_after(
        &self,
        (msn, part): (u64, Option<usize>),
        count: usize,
    ) -> (u64, Option<usize>) {
        let Some(part) = part else {
            return (msn, None);
        };
        let per_segment = self
            .segments
            .iter()
            .rev()
            .find(|s| s.complete() && !s.parts.is_empty())
            .map(|s| s.parts.len())
            .or_else(|| {
                let part_target = self.part_target.filter(|t| *t > 0.0)?;
                Some((self.target_duration / part_target).round().max(1.0) as usize)
            })
            .unwrap_or(1);
        let index = part + count;
        (
            msn + (index / per_segment) as u64,
            Some(index % per_segment),
        )
    }

    /// Folds a delta update (or a full reload) into this playlist: segments the update
    /// skipped are kept from here.
    pub fn merge(&mut self, update: MediaPlaylist) {
        let first_new = update.segments.first().map(|s| s.msn);
        let mut kept: Vec<Segment> = if update.skipped > 0 {
            self.segments
                .drain(..)
                .filter(|s| first_new.is_some_and(|f| s.msn < f))
                .collect()
        } else {
            Vec::new()
        };
        let init = update.init.clone().or_else(|| self.init.take());
        let carried = kept.len();
        kept.extend(update.segments.iter().cloned());
        // An undated update continues the timeline of the segments kept from before it.
        if !update.dated && carried > 0 {
            for i in carried..kept.len() {
                let before = &kept[i - 1];
                kept[i].start_ms = before
                    .start_ms
                    .map(|start| start + (before.duration * 1000.0).round() as i64);
            }
        }
        let dated = self.dated || update.dated;
        *self = MediaPlaylist {
            segments: kept,
            init,
            skipped: 0,
            dated,
            ..update
        };
    }

    /// The segment with sequence number `msn`.
    pub fn segment(&self, msn: u64) -> Option<&Segment> {
        let first = self.segments.first()?.msn;
        self.segments
            .get(usize::try_from(msn.checked_sub(first)?).ok()?)
            .filter(|s| s.msn == msn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MULTIVARIANT: &str = "#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-INDEPENDENT-SEGMENTS\n#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"audio\",NAME=\"audio\",DEFAULT=YES,AUTOSELECT=YES,CHANNELS=\"2\",URI=\"audio/playlist.m3u8\"\n#EXT-X-STREAM-INF:BANDWIDTH=3220800,AVERAGE-BANDWIDTH=2964231,CODECS=\"avc1.64001f,mp4a.40.2\",RESOLUTION=1280x720,FRAME-RATE=30.000,AUDIO=\"audio\"\n720p/playlist.m3u8\n#EXT-X-STREAM-INF:BANDWIDTH=1025700,CODECS=\"avc1.64001e,mp4a.40.2\",RESOLUTION=640x360,AUDIO=\"audio\"\n360p/playlist.m3u8\n";

    pub(crate) const LIVE: &str = "#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-TARGETDURATION:2\n#EXT-X-PART-INF:PART-TARGET=0.340\n#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL=12.0,PART-HOLD-BACK=1.020,HOLD-BACK=6.0\n#EXT-X-MEDIA-SEQUENCE:40\n#EXT-X-MAP:URI=\"init.mp4\"\n#EXT-X-PROGRAM-DATE-TIME:2026-12-07T10:03:31.000Z\n#EXTINF:2.00000,\n40.m4s\n#EXT-X-PART:DURATION=0.33333,URI=\"41.0.m4s\",INDEPENDENT=YES\n#EXT-X-PART:DURATION=0.33333,URI=\"41.1.m4s\"\n#EXT-X-PART:DURATION=0.33333,URI=\"41.2.m4s\"\n#EXT-X-PART:DURATION=0.33333,URI=\"41.3.m4s\"\n#EXT-X-PART:DURATION=0.33333,URI=\"41.4.m4s\"\n#EXT-X-PART:DURATION=0.33333,URI=\"41.5.m4s\"\n#EXTINF:2.00000,\n41.m4s\n#EXT-X-PART:DURATION=0.33333,URI=\"42.0.m4s\",INDEPENDENT=YES\n#EXT-X-PART:DURATION=0.33333,URI=\"42.1.m4s\"\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"42.2.m4s\"\n";

    #[test]
    fn a_multivariant_playlist_gives_variants_in_order_and_the_audio() {
        let m = parse_multivariant(MULTIVARIANT).unwrap();
        assert_eq!(m.variants.len(), 2);
        assert_eq!(m.variants[0].bandwidth, 3_220_800);
        assert_eq!(m.variants[0].height, Some(720));
        assert_eq!(m.variants[1].uri, "360p/playlist.m3u8");
        assert_eq!(m.audio.as_deref(), Some("audio/playlist.m3u8"));
        assert_eq!(parse_multivariant("nope"), Err(PlaylistError::NotM3u));
    }

    #[test]
    fn a_low_latency_playlist_gives_segments_parts_dates_and_the_hint() {
        let p = parse_media(LIVE).unwrap();
        assert!(p.can_block_reload);
        assert_eq!(p.part_target, Some(0.34));
        assert_eq!(p.part_hold_back, Some(1.02));
        assert_eq!(p.can_skip_until, Some(12.0));
        assert_eq!(p.init.as_deref(), Some("init.mp4"));
        assert_eq!(p.segments.len(), 3);
        let [s40, s41, s42] = [&p.segments[0], &p.segments[1], &p.segments[2]];
        assert_eq!((s40.msn, s41.msn, s42.msn), (40, 41, 42));
        let start = parse_date_time("2026-12-07T10:03:31.000Z").unwrap();
        assert_eq!(s40.start_ms, Some(start));
        assert_eq!(s41.start_ms, Some(start + 2000));
        assert_eq!(s42.start_ms, Some(start + 4000));
        assert_eq!(s41.parts.len(), 6);
        assert!(s41.complete() && !s42.complete());
        assert!(s42.parts[0].independent && !s42.parts[1].independent);
        assert_eq!(p.preload_hint.as_deref(), Some("42.2.m4s"));
        assert_eq!(p.next_after_last(), (42, Some(2)));
        assert!(!p.ended && p.dated);
    }

    #[test]
    fn dates_read_as_unix_milliseconds() {
        assert_eq!(parse_date_time("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_date_time("2000-03-01T00:00:01.5Z"),
            Some(951_868_801_500)
        );
        assert_eq!(
            parse_date_time("2000-03-01T01:00:00+01:00"),
            parse_date_time("2000-03-01T00:00:00Z")
        );
        assert_eq!(parse_date_time("yesterday"), None);
    }

    #[test]
    fn a_delta_update_keeps_the_skipped_segments() {
        let mut p = parse_media(LIVE).unwrap();
        let delta = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-PART-INF:PART-TARGET=0.340\n#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL=12.0,PART-HOLD-BACK=1.020\n#EXT-X-MEDIA-SEQUENCE:40\n#EXT-X-SKIP:SKIPPED-SEGMENTS=2\n#EXT-X-PART:DURATION=0.33333,URI=\"42.0.m4s\",INDEPENDENT=YES\n#EXT-X-PART:DURATION=0.33333,URI=\"42.1.m4s\"\n#EXT-X-PART:DURATION=0.33333,URI=\"42.2.m4s\"\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"42.3.m4s\"\n";
        let update = parse_media(delta).unwrap();
        assert_eq!(update.skipped, 2);
        assert_eq!(update.segments[0].msn, 42);
        p.merge(update);
        assert_eq!(p.segments.len(), 3);
        assert_eq!(p.segment(42).unwrap().parts.len(), 3);
        assert_eq!(
            p.segment(42).unwrap().start_ms,
            p.segment(40).unwrap().start_ms.map(|s| s + 4000)
        );
        assert_eq!(p.init.as_deref(), Some("init.mp4"));
        assert_eq!(p.next_after_last(), (42, Some(3)));
    }

    #[test]
    fn a_vod_playlist_ends_and_a_bad_one_says_what_is_wrong() {
        let vod = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n#EXTINF:2.0,\n0.m4s\n#EXTINF:1.5,\n1.m4s\n#EXT-X-ENDLIST\n";
        let p = parse_media(vod).unwrap();
        assert!(p.ended && !p.dated);
        assert_eq!(p.segments.len(), 2);
        assert_eq!(p.segments[1].start_ms, Some(2000));
        assert_eq!(p.next_after_last(), (2, None));
        assert_eq!(
            parse_media("#EXTM3U\n#EXT-X-TARGETDURATION:x\n"),
            Err(PlaylistError::BadTag("EXT-X-TARGETDURATION"))
        );
        assert_eq!(
            parse_media("#EXTM3U\n0.m4s\n"),
            Err(PlaylistError::BadTag("URI without EXTINF"))
        );
    }
}
