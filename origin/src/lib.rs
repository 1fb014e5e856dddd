//! The origin: RTMP ingest with stream keys, the stream registry and management API, and the
//! transcoder hand-off; the CMAF packager, LL-HLS and DASH delivery and archiving come next.
//!
//! Pure cores: the stream model and request validation ([`stream`]), events ([`event`]).
//! Shells: the registry over sqlx ([`registry`]), live stream state ([`live`]), RTMP
//! ([`ingest`]), the HTTP API ([`api`]), the hand-off monitor ([`monitor`]).

pub mod api;
pub mod event;
pub mod hls;
pub mod ingest;
pub mod live;
pub mod metrics;
pub mod monitor;
pub mod packager;
pub mod registry;
pub mod server;
pub mod store;
pub mod stream;
