//! The live stream model of the registry: status machine, per-stream settings, the create and
//! update requests of the management API with their validation, and the stream key. Pure: the
//! registry stores these, the API parses and renders them.

use std::time::Duration;

use base64::Engine;
use cascade_transcoder::ladder::{self, LadderSettings, Rung, VideoEncoder};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Where a stream is in its life: `idle` (waiting for a publisher) → `live` → `ended`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Accepts a publisher.
    Idle,
    /// A publisher is on (or reconnecting within the grace period).
    Live,
    /// Stopped or finished; `POST /start` accepts a publisher again.
    Ended,
}

impl Status {
    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Idle => "idle",
            Status::Live => "live",
            Status::Ended => "ended",
        }
    }

    /// Parses a stored or requested status.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "idle" => Some(Status::Idle),
            "live" => Some(Status::Live),
            "ended" => Some(Status::Ended),
            _ => None,
        }
    }
}

/// How a stream is transcoded and packaged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamSettings {
    /// Ladder rungs (`1080p`, `720p`, `480p`, `360p`, `240p`).
    pub resolutions: Vec<String>,
    /// Video codec: `h264`.
    pub codec: String,
    /// Encode on an NVIDIA GPU (h264_nvenc) instead of the CPU.
    pub gpu_acceleration: bool,
    /// Seconds between keyframes.
    pub keyframe_interval: f64,
    /// Target segment duration in seconds (a whole number of keyframe intervals).
    pub segment_duration: f64,
    /// Target LL-HLS part duration in seconds.
    pub part_duration: f64,
    /// Segments in a live playlist.
    pub playlist_length: u32,
    /// Audio bitrate in kbit/s.
    pub audio_bitrate: u32,
}

impl Default for StreamSettings {
    fn default() -> Self {
        Self {
            resolutions: vec!["720p".into(), "480p".into(), "360p".into()],
            codec: "h264".into(),
            gpu_acceleration: false,
            keyframe_interval: 2.0,
            segment_duration: 2.0,
            part_duration: 0.34,
            playlist_length: 10,
            audio_bitrate: 128,
        }
    }
}

/// A field that failed validation: its path in the request and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    /// Path of the field, e.g. `settings.resolutions[1]`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

fn field_error(field: impl Into<String>, message: impl Into<String>) -> FieldError {
    FieldError {
        field: field.into(),
        message: message.into(),
    }
}

impl StreamSettings {
    /// Checks every field; `nvenc` says whether this origin can encode on a GPU.
    pub fn validate(&self, nvenc: bool) -> Result<(), FieldError> {
        if self.resolutions.is_empty() {
            return Err(field_error(
                "settings.resolutions",
                format!("must name at least one of {}", ladder::rung_names()),
            ));
        }
        for (i, name) in self.resolutions.iter().enumerate() {
            if ladder::rung(name).is_none() {
                return Err(field_error(
                    format!("settings.resolutions[{i}]"),
                    format!(
                        "{name:?} is not a rung of the ladder ({})",
                        ladder::rung_names()
                    ),
                ));
            }
            if self.resolutions[..i].contains(name) {
                return Err(field_error(
                    format!("settings.resolutions[{i}]"),
                    format!("{name:?} is listed twice"),
                ));
            }
        }
        if self.codec != "h264" {
            return Err(field_error(
                "settings.codec",
                format!("{:?} is not supported (h264)", self.codec),
            ));
        }
        if self.gpu_acceleration && !nvenc {
            return Err(field_error(
                "settings.gpu_acceleration",
                "this origin has no working h264_nvenc encoder",
            ));
        }
        if !(1.0..=10.0).contains(&self.keyframe_interval) {
            return Err(field_error(
                "settings.keyframe_interval",
                format!("{} s is outside 1..10 s", self.keyframe_interval),
            ));
        }
        if !(1.0..=30.0).contains(&self.segment_duration) {
            return Err(field_error(
                "settings.segment_duration",
                format!("{} s is outside 1..30 s", self.segment_duration),
            ));
        }
        let intervals = self.segment_duration / self.keyframe_interval;
        if (intervals - intervals.round()).abs() > 1e-6 {
            return Err(field_error(
                "settings.segment_duration",
                format!(
                    "{} s is not a whole number of keyframe intervals ({} s): segments start on keyframes",
                    self.segment_duration, self.keyframe_interval
                ),
            ));
        }
        if !(0.1..=2.0).contains(&self.part_duration) || self.part_duration > self.segment_duration
        {
            return Err(field_error(
                "settings.part_duration",
                format!(
                    "{} s is outside 0.1..2 s or longer than a segment",
                    self.part_duration
                ),
            ));
        }
        if !(3..=100).contains(&self.playlist_length) {
            return Err(field_error(
                "settings.playlist_length",
                format!("{} is outside 3..100 segments", self.playlist_length),
            ));
        }
        if !(32..=512).contains(&self.audio_bitrate) {
            return Err(field_error(
                "settings.audio_bitrate",
                format!("{} kbit/s is outside 32..512", self.audio_bitrate),
            ));
        }
        Ok(())
    }

    /// The transcoder's view of these settings (validated settings assumed).
    pub fn ladder(&self, preset: &str) -> LadderSettings {
        LadderSettings {
            renditions: self
                .resolutions
                .iter()
                .filter_map(|n| ladder::rung(n))
                .collect::<Vec<Rung>>(),
            encoder: if self.gpu_acceleration {
                VideoEncoder::Nvenc
            } else {
                VideoEncoder::X264
            },
            preset: preset.to_owned(),
            keyframe_interval: Duration::from_secs_f64(self.keyframe_interval),
            part_target: Duration::from_secs_f64(self.part_duration),
            audio_kbps: self.audio_bitrate,
        }
    }
}

/// Body of `POST /api/v1/livestreams`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateStream {
    /// Shown to operators and viewers.
    #[serde(default)]
    pub title: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Owner, for filtering.
    #[serde(default)]
    pub user_id: String,
    /// Keep a DVR window of the live stream.
    #[serde(default = "default_true")]
    pub dvr_enabled: bool,
    /// DVR window in seconds.
    #[serde(default = "default_dvr_window")]
    pub dvr_window: u32,
    /// Low-latency HLS parts and low-latency DASH.
    #[serde(default = "default_true")]
    pub low_latency: bool,
    /// Transcoding and packaging.
    #[serde(default)]
    pub settings: StreamSettings,
}

fn default_true() -> bool {
    true
}

fn default_dvr_window() -> u32 {
    7200
}

/// Longest DVR window accepted (a day).
pub const MAX_DVR_WINDOW: u32 = 86_400;

impl CreateStream {
    /// Checks every field.
    pub fn validate(&self, nvenc: bool) -> Result<(), FieldError> {
        check_text("title", &self.title, 200)?;
        check_text("description", &self.description, 2000)?;
        check_text("user_id", &self.user_id, 200)?;
        if self.dvr_window > MAX_DVR_WINDOW {
            return Err(field_error(
                "dvr_window",
                format!(
                    "{} s is over the {MAX_DVR_WINDOW} s maximum",
                    self.dvr_window
                ),
            ));
        }
        self.settings.validate(nvenc)
    }
}

/// Body of `PATCH /api/v1/livestreams/:id`: any subset of the settable fields.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateStream {
    /// New title.
    pub title: Option<String>,
    /// New description.
    pub description: Option<String>,
    /// DVR on or off.
    pub dvr_enabled: Option<bool>,
    /// New DVR window.
    pub dvr_window: Option<u32>,
    /// Low latency on or off.
    pub low_latency: Option<bool>,
    /// New settings (whole object; applies from the next publish).
    pub settings: Option<StreamSettings>,
}

impl UpdateStream {
    /// Applies the update to `stream` and checks the result.
    pub fn apply(self, stream: &mut StreamConfig, nvenc: bool) -> Result<(), FieldError> {
        if let Some(title) = self.title {
            stream.title = title;
        }
        if let Some(description) = self.description {
            stream.description = description;
        }
        if let Some(dvr_enabled) = self.dvr_enabled {
            stream.dvr_enabled = dvr_enabled;
        }
        if let Some(dvr_window) = self.dvr_window {
            stream.dvr_window = dvr_window;
        }
        if let Some(low_latency) = self.low_latency {
            stream.low_latency = low_latency;
        }
        if let Some(settings) = self.settings {
            stream.settings = settings;
        }
        CreateStream {
            title: stream.title.clone(),
            description: stream.description.clone(),
            user_id: String::new(),
            dvr_enabled: stream.dvr_enabled,
            dvr_window: stream.dvr_window,
            low_latency: stream.low_latency,
            settings: stream.settings.clone(),
        }
        .validate(nvenc)
    }
}

/// The configurable part of a stream, stored as one JSON document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamConfig {
    /// Title.
    pub title: String,
    /// Description.
    pub description: String,
    /// DVR on.
    pub dvr_enabled: bool,
    /// DVR window in seconds.
    pub dvr_window: u32,
    /// Low latency on.
    pub low_latency: bool,
    /// Transcoding and packaging.
    pub settings: StreamSettings,
}

impl From<&CreateStream> for StreamConfig {
    fn from(c: &CreateStream) -> Self {
        Self {
            title: c.title.clone(),
            description: c.description.clone(),
            dvr_enabled: c.dvr_enabled,
            dvr_window: c.dvr_window,
            low_latency: c.low_latency,
            settings: c.settings.clone(),
        }
    }
}

fn check_text(field: &str, value: &str, max: usize) -> Result<(), FieldError> {
    if value.chars().count() > max {
        return Err(field_error(
            field,
            format!("is longer than {max} characters"),
        ));
    }
    if value.chars().any(|c| c.is_control()) {
        return Err(field_error(field, "contains control characters"));
    }
    Ok(())
}

/// Makes a new stream key: 24 random bytes, URL-safe base64 (32 characters).
pub fn new_stream_key() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes)?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// What the registry indexes a key by: looking a key up by its digest keeps the lookup's
/// timing independent of how much of a guessed key is right.
pub fn key_digest(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// A short, safe-to-log form of a key: the first 8 hex digits of its digest.
pub fn key_fingerprint(key: &str) -> String {
    key_digest(key)[..8].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<CreateStream, String> {
        let de = &mut serde_json::Deserializer::from_str(json);
        serde_path_to_error::deserialize(de).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_low_latency_720_480_360_with_two_second_segments() {
        let c = parse("{}").unwrap();
        assert!(c.low_latency && c.dvr_enabled);
        assert_eq!(c.dvr_window, 7200);
        assert_eq!(c.settings.resolutions, ["720p", "480p", "360p"]);
        assert_eq!(c.settings.segment_duration, 2.0);
        assert_eq!(c.validate(false), Ok(()));
    }

    #[test]
    fn invalid_fields_are_named() {
        let bad = |json: &str| parse(json).unwrap().validate(false).unwrap_err().field;
        assert_eq!(
            bad(r#"{"settings":{"resolutions":["720p","4k"]}}"#),
            "settings.resolutions[1]"
        );
        assert_eq!(
            bad(r#"{"settings":{"resolutions":["720p","720p"]}}"#),
            "settings.resolutions[1]"
        );
        assert_eq!(
            bad(r#"{"settings":{"resolutions":[]}}"#),
            "settings.resolutions"
        );
        assert_eq!(bad(r#"{"settings":{"codec":"vp9"}}"#), "settings.codec");
        assert_eq!(
            bad(r#"{"settings":{"gpu_acceleration":true}}"#),
            "settings.gpu_acceleration"
        );
        assert_eq!(
            bad(r#"{"settings":{"keyframe_interval":2,"segment_duration":3}}"#),
            "settings.segment_duration"
        );
        assert_eq!(bad(r#"{"dvr_window":900000}"#), "dvr_window");
        assert_eq!(bad(r#"{"title":"a\u0000b"}"#), "title");
        assert!(
            parse(r#"{"settings":{"resolution":["720p"]}}"#)
                .unwrap_err()
                .contains("settings")
        );
        assert!(
            parse(r#"{"low_latency":"yes"}"#)
                .unwrap_err()
                .contains("low_latency")
        );
    }

    #[test]
    fn nvenc_is_accepted_where_available() {
        let c = parse(r#"{"settings":{"gpu_acceleration":true}}"#).unwrap();
        assert_eq!(c.validate(true), Ok(()));
        assert_eq!(c.settings.ladder("veryfast").encoder, VideoEncoder::Nvenc);
    }

    #[test]
    fn updates_are_validated_as_a_whole() {
        let mut config = StreamConfig::from(&parse("{}").unwrap());
        let update: UpdateStream =
            serde_json::from_str(r#"{"title":"new","settings":{"resolutions":["240p"]}}"#).unwrap();
        assert_eq!(update.apply(&mut config, false), Ok(()));
        assert_eq!(config.title, "new");
        assert_eq!(config.settings.resolutions, ["240p"]);
        let update: UpdateStream = serde_json::from_str(r#"{"dvr_window":100000}"#).unwrap();
        assert_eq!(
            update.apply(&mut config, false).unwrap_err().field,
            "dvr_window"
        );
    }

    #[test]
    fn keys_are_random_and_indexed_by_digest() {
        let a = new_stream_key().unwrap();
        let b = new_stream_key().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert_eq!(key_digest(&a).len(), 64);
        assert_eq!(key_digest(&a), key_digest(&a));
        assert!(!key_digest(&a).contains(&a));
        assert_eq!(key_fingerprint(&a), key_digest(&a)[..8]);
    }

    #[test]
    fn statuses_round_trip() {
        for s in [Status::Idle, Status::Live, Status::Ended] {
            assert_eq!(Status::parse(s.as_str()), Some(s));
        }
        assert_eq!(Status::parse("paused"), None);
    }
}
