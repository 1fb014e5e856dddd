//! Common Media Client Data (CTA-5004, version 1), sans IO. With each request a player can say
//! who it is and how playback goes: session and content ids, buffer length, starvation,
//! measured throughput, the bitrate and type of the object, startup. It arrives as the `CMCD`
//! query parameter, or in the `CMCD-Request`, `CMCD-Object`, `CMCD-Status` and `CMCD-Session`
//! headers, each a comma-separated list of `key=value` (or a bare `key` for true).
//!
//! Parsing never fails: a value that is malformed, out of range, of the wrong type or too long
//! is dropped and counted in [`Cmcd::rejected`], and the rest of the list is kept. Keys this
//! version does not define (custom `prefix-name` keys included) are skipped and counted in
//! [`Cmcd::unknown`]. Nothing here is trusted for anything but statistics.
//!
//! The servers' answer, Common Media Server Data (CTA-5006), is [`cmsd`].

pub mod cmsd;
mod write;

/// Longest CMCD text read from one request (query parameter and headers together); the rest
/// is ignored.
pub const MAX_TEXT: usize = 4096;

/// Longest `sid` or `cid` (CTA-5004: 64 characters).
pub const MAX_ID: usize = 64;

/// What kind of object was requested (`ot`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectType {
    /// `m`: a manifest or playlist.
    Manifest,
    /// `a`: audio only.
    Audio,
    /// `v`: video only.
    Video,
    /// `av`: muxed audio and video.
    Muxed,
    /// `i`: an init segment.
    Init,
    /// `c`: caption or subtitle.
    Caption,
    /// `tt`: ISOBMFF timed text track.
    TimedText,
    /// `k`: a key or licence.
    Key,
    /// `o`: other.
    Other,
}

impl ObjectType {
    fn parse(token: &str) -> Option<Self> {
        Some(match token {
            "m" => Self::Manifest,
            "a" => Self::Audio,
            "v" => Self::Video,
            "av" => Self::Muxed,
            "i" => Self::Init,
            "c" => Self::Caption,
            "tt" => Self::TimedText,
            "k" => Self::Key,
            "o" => Self::Other,
            _ => return None,
        })
    }

    /// The token CMCD and CMSD write (`ot=<token>`).
    pub fn token(self) -> &'static str {
        match self {
            Self::Manifest => "m",
            Self::Audio => "a",
            Self::Video => "v",
            Self::Muxed => "av",
            Self::Init => "i",
            Self::Caption => "c",
            Self::TimedText => "tt",
            Self::Key => "k",
            Self::Other => "o",
        }
    }

    /// A label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            Self::Manifest => "manifest",
            Self::Audio => "audio",
            Self::Video => "video",
            Self::Muxed => "muxed",
            Self::Init => "init",
            Self::Caption => "caption",
            Self::TimedText => "timed_text",
            Self::Key => "key",
            Self::Other => "other",
        }
    }
}

/// The streaming format (`sf`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamingFormat {
    /// `d`: MPEG-DASH.
    Dash,
    /// `h`: HLS.
    Hls,
    /// `s`: Smooth Streaming.
    Smooth,
    /// `o`: other.
    Other,
}

/// Live or on demand (`st`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamType {
    /// `v`: video on demand.
    Vod,
    /// `l`: live.
    Live,
}

/// Everything a request said, each key at most once (the last value wins).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Cmcd {
    /// `bl`: buffer length, ms.
    pub buffer_length_ms: Option<u64>,
    /// `dl`: deadline, ms until the buffer would run dry.
    pub deadline_ms: Option<u64>,
    /// `mtp`: measured throughput, kbit/s.
    pub measured_throughput_kbps: Option<u64>,
    /// `nor`: the next object the player will ask for (relative URL).
    pub next_object: Option<String>,
    /// `nrr`: the next byte range (`start-end`).
    pub next_range: Option<String>,
    /// `su`: the player is starting up (or seeking).
    pub startup: bool,
    /// `br`: encoded bitrate of the object, kbit/s.
    pub bitrate_kbps: Option<u64>,
    /// `d`: object duration, ms.
    pub object_duration_ms: Option<u64>,
    /// `ot`: object type.
    pub object_type: Option<ObjectType>,
    /// `tb`: top bitrate the player may choose, kbit/s.
    pub top_bitrate_kbps: Option<u64>,
    /// `bs`: the buffer ran dry since the last request.
    pub buffer_starvation: bool,
    /// `rtp`: throughput the player asks for, kbit/s.
    pub requested_throughput_kbps: Option<u64>,
    /// `cid`: content id.
    pub content_id: Option<String>,
    /// `pr`: playback rate (1 is real time, 0 paused).
    pub playback_rate: Option<f64>,
    /// `sf`: streaming format.
    pub streaming_format: Option<StreamingFormat>,
    /// `sid`: session id.
    pub session_id: Option<String>,
    /// `st`: stream type.
    pub stream_type: Option<StreamType>,
    /// `v`: CMCD version (1 when absent).
    pub version: Option<u64>,
    /// Values dropped as malformed.
    pub rejected: u32,
    /// Keys skipped as unknown (custom keys included).
    pub unknown: u32,
}

impl Cmcd {
    /// Whether the request carried any CMCD key this version defines.
    pub fn is_empty(&self) -> bool {
        Self {
            rejected: self.rejected,
            unknown: self.unknown,
            ..Self::default()
        } == *self
    }

    /// Reads one comma-separated list (a header's value, or the decoded query parameter).
    pub fn read_list(&mut self, text: &str) {
        for item in split_items(text) {
            let item = item.trim();
            if item.is_empty() {
                continue;
            }
            let (key, value) = match item.split_once('=') {
                Some((k, v)) => (k.trim(), Some(v.trim())),
                None => (item, None),
            };
            match self.apply(key, value) {
                Applied::Yes => {}
                Applied::Rejected => self.rejected += 1,
                Applied::Unknown => self.unknown += 1,
            }
        }
    }

    fn apply(&mut self, key: &str, value: Option<&str>) -> Applied {
        fn set<T>(slot: &mut Option<T>, parsed: Option<T>) -> Applied {
            match parsed {
                Some(v) => {
                    *slot = Some(v);
                    Applied::Yes
                }
                None => Applied::Rejected,
            }
        }
        fn flag(slot: &mut bool, value: Option<&str>) -> Applied {
            match value {
                None | Some("true") => {
                    *slot = true;
                    Applied::Yes
                }
                Some("false") => {
                    *slot = false;
                    Applied::Yes
                }
                Some(_) => Applied::Rejected,
            }
        }
        let integer = value.and_then(integer);
        match key {
            "bl" => set(&mut self.buffer_length_ms, integer),
            "dl" => set(&mut self.deadline_ms, integer),
            "mtp" => set(&mut self.measured_throughput_kbps, integer),
            "br" => set(&mut self.bitrate_kbps, integer),
            "d" => set(&mut self.object_duration_ms, integer),
            "tb" => set(&mut self.top_bitrate_kbps, integer),
            "rtp" => set(&mut self.requested_throughput_kbps, integer),
            "v" => set(&mut self.version, integer),
            "su" => flag(&mut self.startup, value),
            "bs" => flag(&mut self.buffer_starvation, value),
            "nor" => set(
                &mut self.next_object,
                value.and_then(|v| string(v, MAX_TEXT)),
            ),
            "nrr" => set(
                &mut self.next_range,
                value.and_then(|v| string(v, MAX_TEXT)),
            ),
            "cid" => set(&mut self.content_id, value.and_then(|v| string(v, MAX_ID))),
            "sid" => set(&mut self.session_id, value.and_then(|v| string(v, MAX_ID))),
            "pr" => set(
                &mut self.playback_rate,
                value
                    .and_then(|v| v.parse::<f64>().ok())
                    .filter(|r| r.is_finite() && *r >= 0.0),
            ),
            "ot" => set(&mut self.object_type, value.and_then(ObjectType::parse)),
            "sf" => set(
                &mut self.streaming_format,
                value.and_then(|v| match v {
                    "d" => Some(StreamingFormat::Dash),
                    "h" => Some(StreamingFormat::Hls),
                    "s" => Some(StreamingFormat::Smooth),
                    "o" => Some(StreamingFormat::Other),
                    _ => None,
                }),
            ),
            "st" => set(
                &mut self.stream_type,
                value.and_then(|v| match v {
                    "v" => Some(StreamType::Vod),
                    "l" => Some(StreamType::Live),
                    _ => None,
                }),
            ),
            _ => Applied::Unknown,
        }
    }
}

enum Applied {
    Yes,
    Rejected,
    Unknown,
}

/// A non-negative integer, as CMCD writes them (no sign, no fraction, no leading `+`).
fn integer(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// A quoted string (`"..."` with `\"` and `\\` escapes) of at most `max` characters.
fn string(text: &str, max: usize) -> Option<String> {
    let inner = text.strip_prefix('"')?.strip_suffix('"')?;
    // Most strings have nothing to unescape: take them whole.
    if !inner.contains(['\\', '"']) && !inner.chars().any(char::is_control) {
        return (inner.chars().count() <= max).then(|| inner.to_owned());
    }
    let mut out = String::with_capacity(inner.len());
    let mut length = 0;
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next()? {
                escaped @ ('"' | '\\') => out.push(escaped),
                _ => return None,
            },
            '"' => return None,
            c if c.is_control() => return None,
            c => out.push(c),
        }
        // Counted as it grows: recounting the output each time made a long value quadratic.
        length += 1;
        if length > max {
            return None;
        }
    }
    Some(out)
}

/// The comma-separated items of `text`, not splitting inside quoted strings.
fn split_items(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let bytes = rest.as_bytes();
        let mut quoted = false;
        let mut escaped = false;
        let mut end = bytes.len();
        for (i, &b) in bytes.iter().enumerate() {
            if escaped {
                escaped = false;
            } else if quoted && b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                quoted = !quoted;
            } else if b == b',' && !quoted {
                end = i;
                break;
            }
        }
        let item = &rest[..end];
        rest = rest.get(end + 1..).unwrap_or("");
        Some(item)
    })
}

/// What a request carried: the `CMCD` parameter of `query` (without the `?`) and the four
/// `CMCD-*` headers among `headers` (names in any case). `None` when it carried none.
pub fn from_request<'a>(
    query: Option<&str>,
    headers: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Option<Cmcd> {
    let mut cmcd = Cmcd::default();
    let mut seen = false;
    let mut budget = MAX_TEXT;
    let mut read = |cmcd: &mut Cmcd, text: &str| {
        let take = text.len().min(budget);
        let mut cut = take;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        if cut < text.len() {
            cmcd.rejected += 1;
        }
        budget -= cut;
        cmcd.read_list(&text[..cut]);
    };
    for pair in query.unwrap_or("").split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if name == "CMCD" {
            seen = true;
            match cascade_keys::decode_query_value(value) {
                Some(text) => read(&mut cmcd, &text),
                None => cmcd.rejected += 1,
            }
        }
    }
    for (name, value) in headers {
        if ["cmcd-request", "cmcd-object", "cmcd-status", "cmcd-session"]
            .iter()
            .any(|h| name.eq_ignore_ascii_case(h))
        {
            seen = true;
            read(&mut cmcd, value);
        }
    }
    seen.then_some(cmcd)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_query_parameter_as_hls_js_sends_it() {
        // dash.js/hls.js: keys in alphabetical order, URL-encoded.
        let query = "_HLS_msn=12&CMCD=bl%3D21300%2Cbr%3D3200%2Cbs%2Ccid%3D%22faec5fc2-ac30-11eabb37-0242ac130002%22%2Cd%3D4004%2Cdl%3D18500%2Cmtp%3D48100%2Cnor%3D%22..%252F300kbps%252Ftrack.m4v%22%2Cnrr%3D%2212323-48763%22%2Cot%3Dv%2Cpr%3D1.08%2Crtp%3D12000%2Csf%3Dd%2Csid%3D%226e2fb550-c457-11e9-bb97-0800200c9a66%22%2Cst%3Dv%2Csu%2Ctb%3D6000";
        let cmcd = from_request(Some(query), []).unwrap();
        assert_eq!(cmcd.buffer_length_ms, Some(21_300));
        assert_eq!(cmcd.bitrate_kbps, Some(3_200));
        assert!(cmcd.buffer_starvation);
        assert_eq!(
            cmcd.content_id.as_deref(),
            Some("faec5fc2-ac30-11eabb37-0242ac130002")
        );
        assert_eq!(cmcd.object_duration_ms, Some(4_004));
        assert_eq!(cmcd.deadline_ms, Some(18_500));
        assert_eq!(cmcd.measured_throughput_kbps, Some(48_100));
        assert_eq!(
            cmcd.next_object.as_deref(),
            Some("..%2F300kbps%2Ftrack.m4v")
        );
        assert_eq!(cmcd.next_range.as_deref(), Some("12323-48763"));
        assert_eq!(cmcd.object_type, Some(ObjectType::Video));
        assert_eq!(cmcd.playback_rate, Some(1.08));
        assert_eq!(cmcd.requested_throughput_kbps, Some(12_000));
        assert_eq!(cmcd.streaming_format, Some(StreamingFormat::Dash));
        assert_eq!(
            cmcd.session_id.as_deref(),
            Some("6e2fb550-c457-11e9-bb97-0800200c9a66")
        );
        assert_eq!(cmcd.stream_type, Some(StreamType::Vod));
        assert!(cmcd.startup);
        assert_eq!(cmcd.top_bitrate_kbps, Some(6_000));
        assert_eq!((cmcd.rejected, cmcd.unknown), (0, 0));
    }

    #[test]
    fn headers_add_up_and_a_request_without_cmcd_has_none() {
        let cmcd = from_request(
            None,
            [
                ("CMCD-Request", "bl=800,mtp=2000"),
                ("cmcd-object", "br=500,ot=av"),
                ("CMCD-Status", "bs"),
                ("CMCD-Session", "sid=\"abc\",st=l,sf=h,v=1"),
                ("Accept", "*/*"),
            ],
        )
        .unwrap();
        assert_eq!(cmcd.buffer_length_ms, Some(800));
        assert_eq!(cmcd.object_type, Some(ObjectType::Muxed));
        assert!(cmcd.buffer_starvation);
        assert_eq!(cmcd.session_id.as_deref(), Some("abc"));
        assert_eq!(cmcd.stream_type, Some(StreamType::Live));
        assert_eq!(cmcd.version, Some(1));
        assert!(from_request(Some("_HLS_msn=3"), [("accept", "*/*")]).is_none());
        assert!(from_request(Some("CMCD="), []).unwrap().is_empty());
    }

    #[test]
    fn bad_values_are_dropped_and_counted_and_the_rest_kept() {
        let cmcd = from_request(
            None,
            [(
                "CMCD-Request",
                "bl=-5,mtp=1.5,br=abc,ot=zz,su=maybe,pr=-1,sid=unquoted,cid=\"a\\qb\",\
                 com.example-custom=1,dl=900,nonsense,sid=\"ok\"",
            )],
        )
        .unwrap();
        assert_eq!(cmcd.rejected, 8, "{cmcd:?}");
        assert_eq!(cmcd.unknown, 2, "{cmcd:?}");
        assert_eq!(cmcd.deadline_ms, Some(900));
        assert_eq!(cmcd.session_id.as_deref(), Some("ok"));
        assert_eq!(cmcd.buffer_length_ms, None);
        let long = format!("sid=\"{}\"", "x".repeat(MAX_ID + 1));
        let cmcd = from_request(None, [("CMCD-Session", long.as_str())]).unwrap();
        assert_eq!((cmcd.session_id, cmcd.rejected), (None, 1));
        let broken = from_request(Some("CMCD=bl%3"), []).unwrap();
        assert_eq!(broken.rejected, 1);
    }

    #[test]
    fn quoted_commas_and_escapes_stay_inside_their_string() {
        let cmcd = from_request(None, [("CMCD-Session", r#"cid="a,b\"c\\d",sid="s""#)]).unwrap();
        assert_eq!(cmcd.content_id.as_deref(), Some(r#"a,b"c\d"#));
        assert_eq!(cmcd.session_id.as_deref(), Some("s"));
        assert_eq!(cmcd.rejected, 0);
    }

    #[test]
    fn no_more_than_the_text_budget_is_read() {
        let huge = format!("bl=1,{}", "x,".repeat(MAX_TEXT));
        let cmcd = from_request(
            None,
            [("CMCD-Request", huge.as_str()), ("CMCD-Status", "bs")],
        )
        .unwrap();
        assert_eq!(cmcd.buffer_length_ms, Some(1));
        assert!(!cmcd.buffer_starvation, "past the budget nothing is read");
        assert!(cmcd.rejected >= 1);
    }
}
