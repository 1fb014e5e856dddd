//! The origin: where a broadcaster's RTMP arrives and where the shield fills from.
//!
//! Data flow: [`ingest`] takes RTMP and hands FLV to the transcoder (`cascade-transcoder`);
//! its outputs reach [`packaging`], which keeps each stream's live media in memory through
//! `cascade-media`'s packager; [`delivery`] serves it over HTTP (LL-HLS, DASH, thumbnails,
//! the player page) and [`archive`] stores it as recordings, DVR and VOD.
//!
//! - [`streams`]: the stream model, registry, management API, live state and events.
//! - [`analytics`]: viewer analytics from the edges' records: storage, per-minute
//!   aggregation, sessions, QoE events and metrics.
//! - [`http`]: the HTTP answers every listener shares.
//! - [`server`]: assembles the listeners and background tasks of one origin process.
//!
//! The formats themselves (fMP4, packager, playlists, manifests, routes, recording indexes)
//! are the pure `cascade-media` crate; this crate does the IO around them.

pub mod analytics;
pub mod archive;
pub mod delivery;
pub mod http;
pub mod ingest;
pub mod metrics;
pub mod packaging;
pub mod server;
pub mod streams;
