//! The origin: RTMP ingest with stream keys, the stream registry and management API, the
//! transcoder hand-off, the CMAF packager, LL-HLS and DASH delivery, and the archive
//! (DVR, recordings, VOD).
//!
//! The media formats (packager, playlists, manifests, routes, recording indexes) are the pure
//! `cascade-media` crate. Here: the stream model and request validation ([`stream`]), events
//! ([`event`]).
//! Shells: the registry over sqlx ([`registry`]), live stream state ([`live`]), RTMP
//! ([`ingest`]), the HTTP API ([`api`]), the hand-off monitor ([`monitor`]), the packager's
//! sink ([`media`]), HTTP delivery ([`delivery`]), object stores ([`store`]), the archive
//! ([`archive`]), thumbnails ([`thumbnail`]) and the viewers' player page ([`player`]).

pub mod api;
pub mod archive;
pub mod delivery;
pub mod event;
pub mod ingest;
pub mod live;
pub mod media;
pub mod metrics;
pub mod monitor;
pub mod player;
pub mod registry;
pub mod server;
pub mod store;
pub mod stream;
pub mod thumbnail;
