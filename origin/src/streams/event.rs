//! Stream events (`stream_started`, `connection_lost`, ...) with their severities, as the
//! registry stores them and `/api/v1/livestreams/:id/events` lists them.

use serde::Serialize;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    /// A publisher started the stream.
    StreamStarted,
    /// The stream ended (stopped, or its publisher did not come back in time).
    StreamEnded,
    /// The publisher disconnected; the stream waits for it.
    ConnectionLost,
    /// The publisher came back within the grace period; the stream continues.
    ConnectionRestored,
    /// ffmpeg failed or stalled and was restarted.
    TranscoderRestarted,
    /// Something went wrong (refused publish, unusable media, transcoder gave up).
    Error,
    /// Viewers' quality score moved sharply (analytics).
    QualityChanged,
    /// Viewers' buffers ran dry or ran low (analytics).
    BufferUnderflow,
    /// Viewers' live latency is high (analytics).
    HighLatency,
    /// Players dropped frames (analytics).
    FrameDrop,
    /// The bitrate most viewers fetch changed (analytics).
    BitrateChange,
}

impl EventType {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::StreamStarted => "stream_started",
            EventType::StreamEnded => "stream_ended",
            EventType::ConnectionLost => "connection_lost",
            EventType::ConnectionRestored => "connection_restored",
            EventType::TranscoderRestarted => "transcoder_restarted",
            EventType::Error => "error",
            EventType::QualityChanged => "quality_changed",
            EventType::BufferUnderflow => "buffer_underflow",
            EventType::HighLatency => "high_latency",
            EventType::FrameDrop => "frame_drop",
            EventType::BitrateChange => "bitrate_change",
        }
    }

    /// The type of a stored name.
    pub fn parse(name: &str) -> Option<Self> {
        [
            EventType::StreamStarted,
            EventType::StreamEnded,
            EventType::ConnectionLost,
            EventType::ConnectionRestored,
            EventType::TranscoderRestarted,
            EventType::Error,
            EventType::QualityChanged,
            EventType::BufferUnderflow,
            EventType::HighLatency,
            EventType::FrameDrop,
            EventType::BitrateChange,
        ]
        .into_iter()
        .find(|t| t.as_str() == name)
    }
}

/// How bad it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Normal operation.
    Info,
    /// Degraded but working.
    Warning,
    /// Failed.
    Error,
    /// Needs someone now.
    Critical,
}

impl Severity {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
            Severity::Critical => "critical",
        }
    }
}

/// An event about to be recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// What happened.
    pub event_type: EventType,
    /// How bad.
    pub severity: Severity,
    /// One human sentence.
    pub message: String,
    /// Machine-readable specifics (addresses, reasons, counts).
    pub details: serde_json::Value,
}

impl NewEvent {
    /// An event with the usual severity of its type.
    pub fn new(event_type: EventType, message: impl Into<String>) -> Self {
        let severity = match event_type {
            EventType::StreamStarted
            | EventType::StreamEnded
            | EventType::ConnectionRestored
            | EventType::QualityChanged
            | EventType::BitrateChange => Severity::Info,
            EventType::ConnectionLost
            | EventType::TranscoderRestarted
            | EventType::BufferUnderflow
            | EventType::HighLatency
            | EventType::FrameDrop => Severity::Warning,
            EventType::Error => Severity::Error,
        };
        Self {
            event_type,
            severity,
            message: message.into(),
            details: serde_json::Value::Object(Default::default()),
        }
    }

    /// Adds `details`.
    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }

    /// Overrides the severity.
    pub fn with_severity(mut self, severity: Severity) -> Self {
        self.severity = severity;
        self
    }
}
