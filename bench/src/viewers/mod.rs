//! `cascade-bench viewers`: simulated players watching a live (or VOD) HLS or DASH stream, so
//! that a run says how many real-behaving viewers a server carries at what rebuffering and
//! latency.
//!
//! The decisions are pure and unit-tested: reading HLS playlists ([`playlist`]) and DASH
//! manifests ([`mpd`]); one viewer's player model, HLS ([`hls_player`]) or DASH
//! ([`dash_player`]), on what they share ([`model`]: the play head and stalls, ABR, CMCD, the
//! trait the shell drives); scenarios and thresholds ([`scenario`]); the figures runs are
//! measured in ([`figures`]); the report ([`report`]); and ramp-to-break steps with the
//! capacity they show ([`steps`]). The shells move bytes: [`client`] (HTTP/1.1, HTTP/2,
//! HTTP/3) and [`run`].

pub mod client;
pub mod dash_player;
pub mod figures;
pub mod hls_player;
pub mod model;
pub mod mpd;
pub mod playlist;
pub mod report;
pub mod run;
pub mod scenario;
pub mod steps;
