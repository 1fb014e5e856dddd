//! The transcoder: turns one live stream's FLV into the ABR ladder with one ffmpeg child.
//!
//! Sits between the origin's RTMP ingest and its packager. Pure cores: the ladder and its
//! ffmpeg command line ([`ladder`]) and the `-progress` parser ([`progress`]); the media
//! formats it reads and writes live in `cascade-media`. The async shell ([`supervisor`]) runs
//! ffmpeg, restarts it when it fails and hands every rendition's media to the packager
//! through `cascade_media::handoff::MediaSink`.

pub mod ladder;
pub mod progress;
pub mod supervisor;
