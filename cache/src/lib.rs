//! The caching core that the edge and the shield both run.
//!
//! Where it sits: viewers → edge → shield → origin. Both cache tiers are this crate with a
//! different [`tier::TierSettings`]; `cascade-edge` and `cascade-shield` are thin binaries
//! around [`server::run`].
//!
//! - [`policy`]: pure decisions without IO: cache keys, TTLs, signed-URL tokens, the purge
//!   index, fair first bytes for a crowd, upstream hashing and request deadlines.
//! - [`storage`]: objects in memory, fills in progress, hit handlers, purge tombstones and the
//!   shield's disk tier with its file format.
//! - [`proxy`]: the Pingora `ProxyHttp` implementation that joins policy and storage.
//! - [`server`]: assembly of one tier's process: listeners, the admin port, the purge
//!   follower, health checks and graceful shutdown.
//! - [`viewers`] (feature `viewers`, the edge's): HTTPS certificates and HTTP/3.
//! - [`metrics`]: the Prometheus series every tier exports.

pub mod metrics;
pub mod policy;
pub mod proxy;
pub mod server;
pub mod storage;
pub mod tier;
#[cfg(feature = "viewers")]
pub mod viewers;
