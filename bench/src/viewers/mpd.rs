//! Reading a DASH manifest (MPD) as a player does, no IO: whether it is live, its clock
//! (`availabilityStartTime`, `UTCTiming`), latency target, refresh period, and per Period the
//! video and audio Representations with their segments (SegmentTemplate with `$Number$` or
//! `$Time$`, from a SegmentTimeline or a fixed `@duration`) and when each segment becomes
//! available (`availabilityTimeOffset`, for chunked low-latency delivery).
//!
//! Times in the model are seconds on the presentation timeline (zero at
//! `availabilityStartTime` for a live manifest, at the start for a static one), except segment
//! starts and durations, which stay in their template's ticks.

use super::playlist::parse_date_time;

/// Why a manifest could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MpdError {
    /// Not well-formed XML.
    #[error("the manifest is not XML: {0}")]
    Xml(String),
    /// The root is not an `MPD` element.
    #[error("the root element is <{0}>, not <MPD>")]
    NotMpd(String),
    /// An attribute that must be read is missing or unreadable.
    #[error("<{element}> has no readable {attribute}: {value:?}")]
    Attribute {
        /// Element name.
        element: &'static str,
        /// Attribute name.
        attribute: &'static str,
        /// What was there.
        value: String,
    },
}

/// Video, audio, or anything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentKind {
    /// `contentType="video"` or a `video/*` MIME type.
    Video,
    /// `contentType="audio"` or an `audio/*` MIME type.
    Audio,
    /// Text or anything a player here does not play.
    Other,
}

/// A DASH manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// `type="dynamic"` (live).
    pub dynamic: bool,
    /// `availabilityStartTime`, Unix ms (0 when absent).
    pub availability_start_ms: i64,
    /// `minimumUpdatePeriod`, seconds: how often a live manifest is reloaded.
    pub minimum_update_period: Option<f64>,
    /// `mediaPresentationDuration`, seconds: where the presentation ends.
    pub duration: Option<f64>,
    /// `suggestedPresentationDelay`, seconds.
    pub suggested_delay: Option<f64>,
    /// `ServiceDescription/Latency@target`, seconds.
    pub target_latency: Option<f64>,
    /// `ServiceDescription/PlaybackRate` `(@min, @max)`: how much slower and faster a player
    /// may play to hold the target latency.
    pub playback_rate: Option<(f64, f64)>,
    /// `UTCTiming` of an HTTP scheme: the URL to read the server's clock from, as written.
    pub utc_timing: Option<String>,
    /// Periods in order.
    pub periods: Vec<Period>,
}

/// One Period.
#[derive(Debug, Clone, PartialEq)]
pub struct Period {
    /// `@id`.
    pub id: String,
    /// `@start`, seconds on the presentation timeline.
    pub start: f64,
    /// Adaptation sets in order.
    pub sets: Vec<AdaptationSet>,
}

/// One AdaptationSet.
#[derive(Debug, Clone, PartialEq)]
pub struct AdaptationSet {
    /// What it carries.
    pub kind: ContentKind,
    /// Its Representations, in the order listed.
    pub representations: Vec<Representation>,
}

/// One Representation and how its segments are addressed.
#[derive(Debug, Clone, PartialEq)]
pub struct Representation {
    /// `@id`.
    pub id: String,
    /// `@bandwidth`, bit/s.
    pub bandwidth: u64,
    /// `@height`, if given.
    pub height: Option<u32>,
    /// Its segment template (its own, else the AdaptationSet's, else the Period's).
    pub template: Template,
}

/// A SegmentTemplate, its timeline expanded.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    /// Ticks per second.
    pub timescale: u32,
    /// `presentationTimeOffset`, ticks: the media time at the Period's start.
    pub presentation_time_offset: u64,
    /// `startNumber`.
    pub start_number: u64,
    /// `@media`, with its `$…$` identifiers.
    pub media: String,
    /// `@initialization`.
    pub initialization: Option<String>,
    /// `@duration`, ticks, when segments are not listed in a timeline.
    pub duration: Option<u64>,
    /// `availabilityTimeOffset`, seconds: how long before its end a segment may be asked for.
    pub availability_offset: f64,
    /// `availabilityTimeComplete="false"`: a segment asked for early arrives in chunks.
    pub chunked: bool,
    /// The SegmentTimeline's segments, oldest first (empty without a timeline).
    pub timeline: Vec<TimedSegment>,
}

/// A segment of a SegmentTimeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimedSegment {
    /// `$Number$`.
    pub number: u64,
    /// Start, ticks (media time).
    pub start: u64,
    /// Duration, ticks.
    pub duration: u64,
}

impl Manifest {
    /// The Period playing at `time` (seconds): the last one starting at or before it, or the
    /// first.
    pub fn period_at(&self, time: f64) -> Option<&Period> {
        self.periods
            .iter()
            .rev()
            .find(|p| p.start <= time)
            .or(self.periods.first())
    }
}

impl Period {
    /// The first AdaptationSet of `kind`.
    pub fn set(&self, kind: ContentKind) -> Option<&AdaptationSet> {
        self.sets.iter().find(|s| s.kind == kind)
    }
}

impl Template {
    /// Seconds on the presentation timeline of media time `ticks`, in a Period starting at
    /// `period_start`.
    pub fn seconds(&self, period_start: f64, ticks: u64) -> f64 {
        period_start
            + (ticks as f64 - self.presentation_time_offset as f64) / f64::from(self.timescale)
    }

    /// Segment `number`, if the template addresses it: from the timeline, or computed from
    /// `@duration`.
    pub fn segment(&self, number: u64) -> Option<TimedSegment> {
        if !self.timeline.is_empty() {
            let first = self.timeline.first()?.number;
            let found = self
                .timeline
                .get(usize::try_from(number.checked_sub(first)?).ok()?)?;
            return (found.number == number).then_some(*found);
        }
        let d = self.duration.filter(|d| *d > 0)?;
        let index = number.checked_sub(self.start_number)?;
        Some(TimedSegment {
            number,
            start: self.presentation_time_offset + index * d,
            duration: d,
        })
    }

    /// The number of the segment holding `time` (seconds) in a Period starting at
    /// `period_start`: from the timeline (the nearest listed one outside it), or from
    /// `@duration`.
    pub fn number_at(&self, period_start: f64, time: f64) -> Option<u64> {
        if let (Some(first), Some(last)) = (self.timeline.first(), self.timeline.last()) {
            if time < self.seconds(period_start, first.start) {
                return Some(first.number);
            }
            return Some(
                self.timeline
                    .iter()
                    .find(|s| time < self.seconds(period_start, s.start + s.duration))
                    .unwrap_or(last)
                    .number,
            );
        }
        let d = self.duration.filter(|d| *d > 0)?;
        let ticks = ((time - period_start).max(0.0) * f64::from(self.timescale)) as u64;
        Some(self.start_number + ticks / d)
    }

    /// The media URL of `segment` for Representation `r`, relative to the manifest.
    pub fn media_url(&self, r: &Representation, segment: TimedSegment) -> String {
        expand(
            &self.media,
            &r.id,
            r.bandwidth,
            segment.number,
            segment.start,
        )
    }

    /// The init URL for Representation `r`, relative to the manifest.
    pub fn init_url(&self, r: &Representation) -> Option<String> {
        self.initialization
            .as_deref()
            .map(|t| expand(t, &r.id, r.bandwidth, 0, 0))
    }
}

/// Fills a template's `$RepresentationID$`, `$Bandwidth$`, `$Number$`, `$Time$` (with an
/// optional `%0Nd` width) and `$$`.
pub fn expand(template: &str, id: &str, bandwidth: u64, number: u64, time: u64) -> String {
    let mut out = String::with_capacity(template.len() + 16);
    let mut rest = template;
    while let Some(open) = rest.find('$') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let Some(close) = after.find('$') else {
            out.push_str(&rest[open..]);
            return out;
        };
        let token = &after[..close];
        let (name, width) = match token.split_once('%') {
            Some((name, format)) => (
                name,
                format
                    .strip_prefix('0')
                    .and_then(|f| f.strip_suffix('d'))
                    .and_then(|w| w.parse::<usize>().ok())
                    .unwrap_or(1),
            ),
            None => (token, 1),
        };
        match name {
            "" => out.push('$'),
            "RepresentationID" => out.push_str(id),
            "Bandwidth" => out.push_str(&format!("{bandwidth:0width$}")),
            "Number" => out.push_str(&format!("{number:0width$}")),
            "Time" => out.push_str(&format!("{time:0width$}")),
            _ => {
                out.push('$');
                out.push_str(token);
                out.push('$');
            }
        }
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    out
}

/// Seconds of an ISO 8601 duration (`PT1.5S`, `PT2M`, `P1DT2H`); years and months are not
/// durations a manifest uses and are refused.
pub fn parse_duration(text: &str) -> Option<f64> {
    let rest = text.trim().strip_prefix('P')?;
    let (days, time) = match rest.split_once('T') {
        Some((d, t)) => (d, t),
        None => (rest, ""),
    };
    let mut seconds = 0.0;
    if !days.is_empty() {
        seconds += days.strip_suffix('D')?.parse::<f64>().ok()? * 86_400.0;
    }
    let mut number = String::new();
    for c in time.chars() {
        let unit = match c {
            'H' => 3_600.0,
            'M' => 60.0,
            'S' => 1.0,
            c if c.is_ascii_digit() || c == '.' => {
                number.push(c);
                continue;
            }
            _ => return None,
        };
        seconds += number.parse::<f64>().ok()? * unit;
        number.clear();
    }
    (number.is_empty() && seconds.is_finite()).then_some(seconds)
}

/// One bound of `<PlaybackRate>`: a rate, so a positive finite number.
fn playback_rate_bound(
    node: roxmltree::Node<'_, '_>,
    attribute: &'static str,
) -> Result<Option<f64>, MpdError> {
    match attr_number::<f64>(node, "PlaybackRate", attribute)? {
        Some(v) if !(v.is_finite() && v > 0.0) => Err(MpdError::Attribute {
            element: "PlaybackRate",
            attribute,
            value: v.to_string(),
        }),
        bound => Ok(bound),
    }
}

fn attr_number<T: std::str::FromStr>(
    node: roxmltree::Node<'_, '_>,
    element: &'static str,
    attribute: &'static str,
) -> Result<Option<T>, MpdError> {
    node.attribute(attribute)
        .map(|v| {
            v.trim().parse::<T>().map_err(|_| MpdError::Attribute {
                element,
                attribute,
                value: v.to_owned(),
            })
        })
        .transpose()
}

fn attr_duration(
    node: roxmltree::Node<'_, '_>,
    element: &'static str,
    attribute: &'static str,
) -> Result<Option<f64>, MpdError> {
    node.attribute(attribute)
        .map(|v| {
            parse_duration(v).ok_or_else(|| MpdError::Attribute {
                element,
                attribute,
                value: v.to_owned(),
            })
        })
        .transpose()
}

fn children<'a, 'input>(
    node: roxmltree::Node<'a, 'input>,
    name: &'static str,
) -> impl Iterator<Item = roxmltree::Node<'a, 'input>> {
    node.children()
        .filter(move |c| c.is_element() && c.tag_name().name() == name)
}

fn child<'a, 'input>(
    node: roxmltree::Node<'a, 'input>,
    name: &'static str,
) -> Option<roxmltree::Node<'a, 'input>> {
    children(node, name).next()
}

/// Reads a manifest.
pub fn parse_mpd(text: &str) -> Result<Manifest, MpdError> {
    let doc = roxmltree::Document::parse(text).map_err(|e| MpdError::Xml(e.to_string()))?;
    let root = doc.root_element();
    if root.tag_name().name() != "MPD" {
        return Err(MpdError::NotMpd(root.tag_name().name().to_owned()));
    }
    let dynamic = root.attribute("type") == Some("dynamic");
    let availability_start_ms = match root.attribute("availabilityStartTime") {
        Some(v) => parse_date_time(v).ok_or_else(|| MpdError::Attribute {
            element: "MPD",
            attribute: "availabilityStartTime",
            value: v.to_owned(),
        })?,
        None if dynamic => {
            return Err(MpdError::Attribute {
                element: "MPD",
                attribute: "availabilityStartTime",
                value: String::new(),
            });
        }
        None => 0,
    };
    let target_latency = child(root, "ServiceDescription")
        .and_then(|s| child(s, "Latency"))
        .map(|l| attr_number::<f64>(l, "Latency", "target"))
        .transpose()?
        .flatten()
        .map(|ms| ms / 1000.0);
    let playback_rate =
        match child(root, "ServiceDescription").and_then(|s| child(s, "PlaybackRate")) {
            Some(rate) => playback_rate_bound(rate, "min")?.zip(playback_rate_bound(rate, "max")?),
            None => None,
        };
    let utc_timing = children(root, "UTCTiming")
        .find(|u| {
            u.attribute("schemeIdUri").is_some_and(|s| {
                s.starts_with("urn:mpeg:dash:utc:http-iso:")
                    || s.starts_with("urn:mpeg:dash:utc:http-xsdate:")
            })
        })
        .and_then(|u| u.attribute("value"))
        .map(str::to_owned);
    let mut periods = Vec::new();
    let mut next_start = 0.0;
    for p in children(root, "Period") {
        let start = attr_duration(p, "Period", "start")?.unwrap_or(next_start);
        let duration = attr_duration(p, "Period", "duration")?;
        next_start = start + duration.unwrap_or(0.0);
        let period_template = child(p, "SegmentTemplate");
        let mut sets = Vec::new();
        for a in children(p, "AdaptationSet") {
            let kind = content_kind(a);
            let set_template = child(a, "SegmentTemplate").or(period_template);
            let mut representations = Vec::new();
            for r in children(a, "Representation") {
                let id = r.attribute("id").ok_or(MpdError::Attribute {
                    element: "Representation",
                    attribute: "id",
                    value: String::new(),
                })?;
                let Some(template) = child(r, "SegmentTemplate").or(set_template) else {
                    // SegmentBase and SegmentList are not what live CMAF packagers write.
                    continue;
                };
                representations.push(Representation {
                    id: id.to_owned(),
                    bandwidth: attr_number(r, "Representation", "bandwidth")?.unwrap_or(0),
                    height: attr_number(r, "Representation", "height")?,
                    template: read_template(template)?,
                });
            }
            sets.push(AdaptationSet {
                kind,
                representations,
            });
        }
        periods.push(Period {
            id: p.attribute("id").unwrap_or_default().to_owned(),
            start,
            sets,
        });
    }
    Ok(Manifest {
        dynamic,
        availability_start_ms,
        minimum_update_period: attr_duration(root, "MPD", "minimumUpdatePeriod")?,
        duration: attr_duration(root, "MPD", "mediaPresentationDuration")?,
        suggested_delay: attr_duration(root, "MPD", "suggestedPresentationDelay")?,
        target_latency,
        playback_rate,
        utc_timing,
        periods,
    })
}

fn content_kind(set: roxmltree::Node<'_, '_>) -> ContentKind {
    let mime = set
        .attribute("mimeType")
        .or_else(|| child(set, "Representation").and_then(|r| r.attribute("mimeType")));
    match (set.attribute("contentType"), mime) {
        (Some("video"), _) => ContentKind::Video,
        (Some("audio"), _) => ContentKind::Audio,
        (None, Some(m)) if m.starts_with("video/") => ContentKind::Video,
        (None, Some(m)) if m.starts_with("audio/") => ContentKind::Audio,
        _ => ContentKind::Other,
    }
}

fn read_template(t: roxmltree::Node<'_, '_>) -> Result<Template, MpdError> {
    const E: &str = "SegmentTemplate";
    let timescale = attr_number::<u32>(t, E, "timescale")?.unwrap_or(1).max(1);
    let start_number = attr_number::<u64>(t, E, "startNumber")?.unwrap_or(1);
    let presentation_time_offset = attr_number::<u64>(t, E, "presentationTimeOffset")?.unwrap_or(0);
    let media = t.attribute("media").ok_or(MpdError::Attribute {
        element: E,
        attribute: "media",
        value: String::new(),
    })?;
    let mut timeline = Vec::new();
    if let Some(list) = child(t, "SegmentTimeline") {
        let mut next_start = presentation_time_offset;
        let mut number = start_number;
        for s in children(list, "S") {
            let start = attr_number::<u64>(s, "S", "t")?.unwrap_or(next_start);
            let duration = attr_number::<u64>(s, "S", "d")?.ok_or(MpdError::Attribute {
                element: "S",
                attribute: "d",
                value: String::new(),
            })?;
            // A negative repeat ("until the next S or the Period's end") is not written by a
            // live packager that lists what it holds; it counts as no repeat.
            let repeat = attr_number::<i64>(s, "S", "r")?.unwrap_or(0).max(0);
            for i in 0..=repeat as u64 {
                timeline.push(TimedSegment {
                    number,
                    start: start + i * duration,
                    duration,
                });
                number += 1;
            }
            next_start = start + (repeat as u64 + 1) * duration;
        }
    }
    Ok(Template {
        timescale,
        presentation_time_offset,
        start_number,
        media: media.to_owned(),
        initialization: t.attribute("initialization").map(str::to_owned),
        duration: attr_number(t, E, "duration")?,
        availability_offset: attr_number::<f64>(t, E, "availabilityTimeOffset")?
            .filter(|o| o.is_finite())
            .unwrap_or(0.0),
        chunked: t.attribute("availabilityTimeComplete") == Some("false"),
        timeline,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIVE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" profiles="urn:mpeg:dash:profile:isoff-live:2011" type="dynamic" availabilityStartTime="2026-12-07T10:00:00.000Z" publishTime="2026-12-07T10:01:00.000Z" minimumUpdatePeriod="PT0.5S" timeShiftBufferDepth="PT12S" suggestedPresentationDelay="PT1.5S" minBufferTime="PT2S">
  <ServiceDescription id="0">
    <Latency target="1500" max="3000" min="1000"/>
    <PlaybackRate min="0.96" max="1.04"/>
  </ServiceDescription>
  <Period id="0" start="PT0S">
    <AdaptationSet id="0" contentType="video" mimeType="video/mp4">
      <Representation id="720p" bandwidth="2800000" width="1280" height="720">
        <SegmentTemplate timescale="90000" presentationTimeOffset="0" startNumber="28" media="$RepresentationID$/$Number$.m4s" initialization="$RepresentationID$/init.mp4" availabilityTimeOffset="1.5" availabilityTimeComplete="false">
          <SegmentTimeline>
            <S t="5040000" d="180000" r="2"/>
            <S d="180000"/>
          </SegmentTimeline>
        </SegmentTemplate>
      </Representation>
      <Representation id="240p" bandwidth="400000" width="426" height="240">
        <SegmentTemplate timescale="90000" presentationTimeOffset="0" startNumber="28" media="$RepresentationID$/$Number$.m4s" initialization="$RepresentationID$/init.mp4">
          <SegmentTimeline><S t="5040000" d="180000" r="3"/></SegmentTimeline>
        </SegmentTemplate>
      </Representation>
    </AdaptationSet>
    <AdaptationSet id="1" contentType="audio" mimeType="audio/mp4">
      <Representation id="audio" bandwidth="128000">
        <SegmentTemplate timescale="48000" startNumber="28" media="$RepresentationID$/$Number$.m4s" initialization="$RepresentationID$/init.mp4">
          <SegmentTimeline><S t="2688000" d="96000" r="3"/></SegmentTimeline>
        </SegmentTemplate>
      </Representation>
    </AdaptationSet>
  </Period>
  <UTCTiming schemeIdUri="urn:mpeg:dash:utc:http-iso:2014" value="../../time"/>
</MPD>
"#;

    #[test]
    fn a_live_low_latency_manifest_is_read_as_a_player_needs_it() {
        let m = parse_mpd(LIVE).unwrap();
        assert!(m.dynamic);
        assert_eq!(
            m.availability_start_ms,
            parse_date_time("2026-12-07T10:00:00Z").unwrap()
        );
        assert_eq!(m.minimum_update_period, Some(0.5));
        assert_eq!(m.target_latency, Some(1.5));
        assert_eq!(m.playback_rate, Some((0.96, 1.04)));
        assert_eq!(m.suggested_delay, Some(1.5));
        assert_eq!(m.utc_timing.as_deref(), Some("../../time"));
        let period = m.period_at(60.0).unwrap();
        let video = period.set(ContentKind::Video).unwrap();
        assert_eq!(video.representations.len(), 2);
        let hi = &video.representations[0];
        assert_eq!((hi.bandwidth, hi.height), (2_800_000, Some(720)));
        let t = &hi.template;
        assert!(t.chunked);
        assert_eq!(t.availability_offset, 1.5);
        let numbers: Vec<u64> = t.timeline.iter().map(|s| s.number).collect();
        assert_eq!(numbers, [28, 29, 30, 31]);
        assert_eq!(t.timeline[3].start, 5_040_000 + 3 * 180_000);
        assert_eq!(t.seconds(0.0, 5_040_000), 56.0);
        assert_eq!(t.number_at(0.0, 59.9), Some(29));
        assert_eq!(
            t.number_at(0.0, 10.0),
            Some(28),
            "before the window: the oldest"
        );
        assert_eq!(t.number_at(0.0, 99.0), Some(31), "after it: the newest");
        assert_eq!(
            t.media_url(hi, t.segment(30).unwrap()),
            "720p/30.m4s".to_owned()
        );
        assert_eq!(t.init_url(hi).as_deref(), Some("720p/init.mp4"));
        assert_eq!(t.segment(32), None);
        assert_eq!(t.segment(27), None);
        let audio = period.set(ContentKind::Audio).unwrap();
        assert_eq!(audio.representations[0].template.timescale, 48_000);
        assert!(!audio.representations[0].template.chunked);
    }

    #[test]
    fn a_template_with_a_fixed_duration_computes_its_segments() {
        let text = r#"<MPD type="static" mediaPresentationDuration="PT1M0.5S"><Period>
          <AdaptationSet mimeType="video/mp4">
            <SegmentTemplate timescale="1000" duration="2000" startNumber="1" media="v_$Bandwidth$_$Number%05d$.m4s" initialization="v_init.mp4"/>
            <Representation id="v" bandwidth="500000"/>
          </AdaptationSet></Period></MPD>"#;
        let m = parse_mpd(text).unwrap();
        assert!(!m.dynamic);
        assert_eq!(m.duration, Some(60.5));
        let r = &m.periods[0].sets[0].representations[0];
        assert_eq!(m.periods[0].sets[0].kind, ContentKind::Video);
        let s = r.template.segment(3).unwrap();
        assert_eq!((s.start, s.duration), (4000, 2000));
        assert_eq!(r.template.number_at(0.0, 4.5), Some(3));
        assert_eq!(r.template.media_url(r, s), "v_500000_00003.m4s");
    }

    #[test]
    fn durations_and_templates_read_as_the_standard_writes_them() {
        assert_eq!(parse_duration("PT0.5S"), Some(0.5));
        assert_eq!(parse_duration("PT1H2M3S"), Some(3723.0));
        assert_eq!(parse_duration("P1DT1S"), Some(86_401.0));
        assert_eq!(parse_duration("PT"), Some(0.0));
        assert_eq!(parse_duration("P1Y"), None);
        assert_eq!(parse_duration("PT5"), None);
        assert_eq!(parse_duration("5S"), None);
        assert_eq!(expand("$$x$Time$", "a", 1, 2, 3), "$x3");
        assert_eq!(expand("a$Unknown$b$", "a", 1, 2, 3), "a$Unknown$b$");
    }

    #[test]
    fn a_bad_manifest_says_what_is_wrong() {
        assert!(matches!(parse_mpd("<MPD"), Err(MpdError::Xml(_))));
        assert_eq!(parse_mpd("<html/>"), Err(MpdError::NotMpd("html".into())));
        let no_clock = parse_mpd(r#"<MPD type="dynamic"/>"#).unwrap_err();
        assert!(
            no_clock.to_string().contains("availabilityStartTime"),
            "{no_clock}"
        );
        let bad = parse_mpd(r#"<MPD minimumUpdatePeriod="soon"/>"#).unwrap_err();
        assert_eq!(
            bad.to_string(),
            "<MPD> has no readable minimumUpdatePeriod: \"soon\""
        );
        let nan = parse_mpd(
            r#"<MPD><ServiceDescription><PlaybackRate min="0.96" max="NaN"/></ServiceDescription></MPD>"#,
        )
        .unwrap_err();
        assert_eq!(
            nan.to_string(),
            "<PlaybackRate> has no readable max: \"NaN\""
        );
        let no_d = r#"<MPD><Period><AdaptationSet contentType="video"><Representation id="v" bandwidth="1"><SegmentTemplate media="$Number$"><SegmentTimeline><S t="0"/></SegmentTimeline></SegmentTemplate></Representation></AdaptationSet></Period></MPD>"#;
        assert!(
            parse_mpd(no_d)
                .unwrap_err()
                .to_string()
                .contains("<S> has no readable d")
        );
    }
}
