//! The hand-off from the transcoder to the packager: for each rendition of a live stream, an
//! init segment, then timed fragments (keyframe flags included), with discontinuity markers
//! where the media timeline restarts (ffmpeg restarted, publisher reconnected) and an end marker.

use crate::fmp4::{Fragment, InitSegment};

/// One item of a rendition's media, in the order the packager must apply them.
#[derive(Debug, Clone)]
pub enum MediaEvent {
    /// The rendition's initialisation segment (`ftyp` + `moov`); fragments that follow
    /// decode with it. Sent again after every discontinuity.
    Init {
        /// Nominal bandwidth of the rendition in bits per second (for the playlists).
        bandwidth: u32,
        /// The segment and what it describes.
        init: InitSegment,
    },
    /// One `moof` + `mdat` fragment.
    Fragment(Fragment),
    /// The media timeline restarts: decode times after this point do not follow the ones
    /// before it, and a new `Init` comes first.
    Discontinuity,
    /// The rendition ends (the stream stopped or the transcoder gave up).
    End,
}

/// Receives the media of every rendition of every live stream: the packager implements it.
/// Called from the transcoder's tasks, so it must not block for long.
pub trait MediaSink: Send + Sync + 'static {
    /// Takes the next event of `rendition` (a ladder name such as `720p`, or `audio`) of the
    /// stream `stream_id`.
    fn deliver(&self, stream_id: &str, rendition: &str, event: MediaEvent);
}
