//! The transcoder: turns one live stream's FLV into the ABR ladder with one ffmpeg child.
//!
//! Pure cores: the ladder and its ffmpeg command line ([`ladder`]), the FLV writer fed to
//! ffmpeg ([`flv`]), the fragmented-MP4 splitter that reads its outputs ([`fmp4`]) and the
//! `-progress` parser ([`progress`]). The async shell ([`supervisor`]) runs ffmpeg, restarts
//! it when it fails and hands every rendition's media to the packager through
//! [`handoff::MediaSink`].

pub mod flv;
pub mod fmp4;
pub mod handoff;
pub mod ladder;
pub mod progress;
pub mod supervisor;
