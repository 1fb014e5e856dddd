//! The edge tier and the caching core that the shield reuses.
//!
//! Viewers land here over HTTP/1.1, HTTP/2 and HTTP/3 ([`http3`], on the same proxy). The
//! caching core is a Pingora proxy over [`storage::TieredStorage`], with cache keys
//! ([`key`]), the TTL policy ([`ttl`]), request collapsing through pingora's cache lock, and
//! signed URLs ([`token`]). The pure pieces have no IO; the proxy and server modules are the
//! thin shells that move bytes between them.

pub mod crowd;
pub mod disk;
pub mod disk_format;
pub mod downstream;
pub mod h3_session;
pub mod http3;
pub mod key;
pub mod metrics;
pub mod proxy;
pub mod purge;
pub mod purge_api;
pub mod request_clock;
pub mod server;
pub mod storage;
pub mod tier;
pub mod tls;
pub mod token;
pub mod ttl;
pub mod upstream;
