//! Cascade's media formats, free of IO.
//!
//! Everything between the transcoder's pipes and the bytes a viewer receives is decided here,
//! as pure, synchronous code: the compiler keeps tokio, hyper and databases out, as
//! quinn-proto does for QUIC. The origin's async shell feeds it and serves what it returns.
//!
//! - Into the transcoder: [`flv`] writes the FLV that ffmpeg reads.
//! - Out of the transcoder: [`fmp4`] cuts ffmpeg's fragmented MP4 into init segments and
//!   fragments; [`handoff`] is the event type the transcoder hands to the packager.
//! - Packaging: [`packager`] turns fragments into CMAF segments and parts on one timeline per
//!   stream; [`hls`] writes LL-HLS playlists and [`dash`] LL-DASH manifests over them.
//! - Requests: [`route`] parses delivery URLs; [`recording`] is the index of an archived
//!   recording, from which VOD playlists and manifests are written.

pub mod dash;
pub mod flv;
pub mod fmp4;
pub mod handoff;
pub mod hls;
pub mod packager;
pub mod recording;
pub mod route;
#[cfg(test)]
mod testing;
