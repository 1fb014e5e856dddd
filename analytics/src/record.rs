//! One analytics record: a viewer request as the edge served it, with what the player said
//! about its playback (CMCD). Records travel in batches of JSON lines; a line that cannot be
//! read is skipped and counted, never the batch.

use serde::{Deserialize, Serialize};

use crate::device::Device;

/// Longest stream, rendition, session, edge, location or user text a record may carry.
pub const MAX_FIELD: usize = 128;

/// What kind of object was asked for, from the path (CMCD's `ot` is the player's opinion).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Object {
    /// A playlist or MPD.
    Manifest,
    /// An init segment.
    Init,
    /// A whole media segment.
    Segment,
    /// An LL-HLS part.
    Part,
    /// A thumbnail, a beacon, anything else.
    #[default]
    Other,
}

impl Object {
    /// Media the player buffers (segments and parts).
    pub fn is_media(self) -> bool {
        matches!(self, Self::Segment | Self::Part)
    }
}

/// Where a delivery path points: `/live/<id>/...` or `/vod/<recording>/...`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaPath<'a> {
    /// Live (true) or a recording.
    pub live: bool,
    /// Stream id (live) or recording id.
    pub stream: &'a str,
    /// The rendition, for its playlists, init and media.
    pub rendition: Option<&'a str>,
    /// The object.
    pub object: Object,
}

impl<'a> MediaPath<'a> {
    /// Reads a request path (no query, token already removed); `None` for anything that is not
    /// stream content (the player page, the API).
    pub fn parse(path: &'a str) -> Option<Self> {
        let mut parts = path.strip_prefix('/')?.split('/');
        let live = match parts.next()? {
            "live" => true,
            "vod" => false,
            _ => return None,
        };
        let stream = parts.next().filter(|s| valid_field(s))?;
        let first = parts.next()?;
        let (rendition, file) = match parts.next() {
            Some(file) => (Some(first).filter(|r| valid_field(r)), file),
            None => (None, first),
        };
        if parts.next().is_some() {
            return None;
        }
        let object = if file.ends_with(".m3u8") || file.ends_with(".mpd") {
            Object::Manifest
        } else if file.starts_with("init") && file.ends_with(".mp4") {
            Object::Init
        } else if let Some(stem) = file.strip_suffix(".m4s") {
            match stem.split_once('.') {
                Some(_) => Object::Part,
                None => Object::Segment,
            }
        } else {
            Object::Other
        };
        Some(Self {
            live,
            stream,
            rendition: rendition.filter(|_| object != Object::Other),
            object,
        })
    }
}

fn valid_field(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_FIELD
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// One viewer request. Optional figures are absent when nobody said them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Record {
    /// When the request arrived, Unix ms.
    pub at_ms: i64,
    /// Stream id (or recording id for VOD).
    pub stream: String,
    /// Live (true) or VOD.
    pub live: bool,
    /// The rendition asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rendition: Option<String>,
    /// The object asked for.
    pub object: Object,
    /// Response status (0: the viewer left before one was sent).
    pub status: u16,
    /// Body bytes sent.
    pub bytes: u64,
    /// `hit`, `miss`, `stale`, ... as in `x-cache`.
    pub cache: String,
    /// Until the response header was ready, ms.
    pub ttfb_ms: u32,
    /// Until the last byte, ms.
    pub duration_ms: u32,
    /// `h1`, `h2`, `h3` (`beacon` for the tracking API).
    pub protocol: String,
    /// The edge that served it.
    pub edge: String,
    /// The viewer session.
    pub session: String,
    /// The viewer's device, from the user agent.
    pub device: Device,
    /// Country (ISO code) and city, when a GeoIP database is configured or the beacon said.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// The application's user id (beacon only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Wall-clock time of the object's first sample (the origin's CMSD), Unix ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object_time_ms: Option<i64>,
    /// Live latency the player measured itself (beacon only), ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u32>,
    /// Frames the player dropped since its last beacon.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dropped_frames: Option<u32>,
    /// CMCD `bl`, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub buffer_ms: Option<u32>,
    /// CMCD `bs`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub starved: bool,
    /// CMCD `su`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub startup: bool,
    /// CMCD `mtp`, kbit/s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub throughput_kbps: Option<u32>,
    /// CMCD `br`, kbit/s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bitrate_kbps: Option<u32>,
    /// CMCD `tb`, kbit/s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_bitrate_kbps: Option<u32>,
    /// CMCD `rtp`, kbit/s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requested_throughput_kbps: Option<u32>,
    /// CMCD `d`, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object_duration_ms: Option<u32>,
    /// CMCD `dl`, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u32>,
    /// CMCD `pr`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub playback_rate: Option<f32>,
    /// CMCD `sf`: `d` (DASH), `h` (HLS), `s`, `o`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<char>,
}

impl Record {
    /// Copies what a player said into the record (numbers beyond `u32` saturate).
    pub fn apply_cmcd(&mut self, cmcd: &cascade_cmcd::Cmcd) {
        let small = |v: Option<u64>| v.map(|v| u32::try_from(v).unwrap_or(u32::MAX));
        self.buffer_ms = small(cmcd.buffer_length_ms);
        self.starved = cmcd.buffer_starvation;
        self.startup = cmcd.startup;
        self.throughput_kbps = small(cmcd.measured_throughput_kbps);
        self.bitrate_kbps = small(cmcd.bitrate_kbps);
        self.top_bitrate_kbps = small(cmcd.top_bitrate_kbps);
        self.requested_throughput_kbps = small(cmcd.requested_throughput_kbps);
        self.object_duration_ms = small(cmcd.object_duration_ms);
        self.deadline_ms = small(cmcd.deadline_ms);
        self.playback_rate = cmcd.playback_rate.map(|r| r as f32);
        self.format = cmcd.streaming_format.map(|f| match f {
            cascade_cmcd::StreamingFormat::Dash => 'd',
            cascade_cmcd::StreamingFormat::Hls => 'h',
            cascade_cmcd::StreamingFormat::Smooth => 's',
            cascade_cmcd::StreamingFormat::Other => 'o',
        });
    }

    /// Live latency at this request: the player's own figure, else the wall-clock age of the
    /// object's first sample plus the buffer in front of it (the playhead is `bl` behind the
    /// start of the object being fetched), the definition players use with PROGRAM-DATE-TIME.
    pub fn live_latency_ms(&self) -> Option<i64> {
        if let Some(l) = self.latency_ms {
            return Some(i64::from(l));
        }
        if !self.live || !self.object.is_media() {
            return None;
        }
        let latency = self.at_ms - self.object_time_ms? + i64::from(self.buffer_ms?);
        // A clock far off or a stale object says nothing about live latency.
        (0..=600_000).contains(&latency).then_some(latency)
    }

    /// A playback sample (a media request with a buffer figure or a starvation, or a beacon):
    /// `(healthy, starved)`, healthy meaning a buffer of at least `healthy_buffer_ms` and no
    /// starvation. `None` for requests that say nothing about playback.
    pub fn playback_sample(&self, healthy_buffer_ms: u32) -> Option<(bool, bool)> {
        let sample = (self.object.is_media() && (self.buffer_ms.is_some() || self.starved))
            || self.protocol == "beacon";
        sample.then(|| {
            let healthy = !self.starved && self.buffer_ms.is_some_and(|b| b >= healthy_buffer_ms);
            (healthy, self.starved)
        })
    }

    /// A cache hit of any kind (served without waiting for the upstream).
    pub fn is_hit(&self) -> bool {
        matches!(self.cache.as_str(), "hit" | "stale" | "revalidated")
    }

    /// The request went through the cache (a lookup rather than a refusal).
    pub fn is_lookup(&self) -> bool {
        matches!(
            self.cache.as_str(),
            "hit" | "stale" | "revalidated" | "miss" | "expired"
        )
    }

    /// A failed request: a 4xx/5xx, or no response at all.
    pub fn is_error(&self) -> bool {
        self.status == 0 || self.status >= 400
    }

    /// Whether every text field is within bounds, so one bad producer cannot bloat storage.
    pub fn is_valid(&self) -> bool {
        let short = |s: &str| s.len() <= MAX_FIELD;
        !self.stream.is_empty()
            && !self.session.is_empty()
            && valid_field(&self.stream)
            && self.rendition.as_deref().is_none_or(valid_field)
            && short(&self.session)
            && short(&self.edge)
            && short(&self.cache)
            && short(&self.protocol)
            && self.location.as_deref().is_none_or(short)
            && self.user.as_deref().is_none_or(short)
    }
}

/// Who a session is, as its latest records say: the edge it reached, its device, and the
/// location and user id when something said them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Identity {
    /// The edge of the latest request.
    pub edge: String,
    /// The device.
    pub device: Device,
    /// Country/city, if known.
    pub location: Option<String>,
    /// The application's user id, if a beacon said.
    pub user: Option<String>,
}

impl Identity {
    /// Takes in what `r` says; a record without a location or user keeps the known one.
    pub fn update(&mut self, r: &Record) {
        self.edge.clone_from(&r.edge);
        self.device = r.device;
        if r.location.is_some() {
            self.location.clone_from(&r.location);
        }
        if r.user.is_some() {
            self.user.clone_from(&r.user);
        }
    }
}

/// A batch as JSON lines.
pub fn encode_batch(records: &[Record]) -> Vec<u8> {
    let mut out = Vec::with_capacity(records.len() * 256);
    for record in records {
        // Serialising plain data into a Vec cannot fail.
        if serde_json::to_writer(&mut out, record).is_ok() {
            out.push(b'\n');
        }
    }
    out
}

/// Reads a batch of JSON lines: the records, and how many lines were not valid records.
pub fn decode_batch(bytes: &[u8]) -> (Vec<Record>, usize) {
    let mut records = Vec::new();
    let mut rejected = 0;
    for line in bytes.split(|b| *b == b'\n') {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<Record>(line) {
            Ok(r) if r.is_valid() => records.push(r),
            _ => rejected += 1,
        }
    }
    (records, rejected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_paths_name_stream_rendition_and_object() {
        let p = MediaPath::parse("/live/abc/720p/12.3.m4s").unwrap();
        assert_eq!(
            (p.live, p.stream, p.rendition, p.object),
            (true, "abc", Some("720p"), Object::Part)
        );
        let p = MediaPath::parse("/live/abc/720p/12.m4s").unwrap();
        assert_eq!(p.object, Object::Segment);
        let p = MediaPath::parse("/live/abc/720p/init-2.mp4").unwrap();
        assert_eq!(p.object, Object::Init);
        let p = MediaPath::parse("/live/abc/master.m3u8").unwrap();
        assert_eq!((p.rendition, p.object), (None, Object::Manifest));
        let p = MediaPath::parse("/vod/rec1/360p/playlist.m3u8").unwrap();
        assert_eq!(
            (p.live, p.stream, p.object),
            (false, "rec1", Object::Manifest)
        );
        assert_eq!(
            MediaPath::parse("/live/abc/thumbnail.jpg").unwrap().object,
            Object::Other
        );
        assert!(MediaPath::parse("/player/abc").is_none());
        assert!(MediaPath::parse("/live/abc/a/b/c.m4s").is_none());
        assert!(MediaPath::parse("/live/a%20b/x.m4s").is_none());
        assert!(MediaPath::parse("live/abc/x.m4s").is_none());
    }

    #[test]
    fn latency_is_object_age_plus_buffer() {
        let r = Record {
            at_ms: 10_000,
            live: true,
            object: Object::Part,
            object_time_ms: Some(9_500),
            buffer_ms: Some(1_000),
            ..Record::default()
        };
        assert_eq!(r.live_latency_ms(), Some(1_500));
        let vod = Record {
            live: false,
            ..r.clone()
        };
        assert_eq!(vod.live_latency_ms(), None);
        let no_buffer = Record {
            buffer_ms: None,
            ..r.clone()
        };
        assert_eq!(no_buffer.live_latency_ms(), None);
        let told = Record {
            latency_ms: Some(2_100),
            ..r
        };
        assert_eq!(told.live_latency_ms(), Some(2_100));
    }

    #[test]
    fn batches_round_trip_and_bad_lines_are_counted() {
        let r = Record {
            at_ms: 1,
            stream: "s1".into(),
            session: "x".into(),
            buffer_ms: Some(900),
            starved: true,
            ..Record::default()
        };
        let mut bytes = encode_batch(&[r.clone(), r.clone()]);
        bytes.extend_from_slice(b"{not json}\n\n{\"stream\":\"\"}\n");
        let long = Record {
            session: "y".repeat(MAX_FIELD + 1),
            ..r.clone()
        };
        bytes.extend_from_slice(&encode_batch(&[long]));
        let (records, rejected) = decode_batch(&bytes);
        assert_eq!(records, vec![r.clone(), r]);
        assert_eq!(rejected, 3);
    }
}
