//! The caching core's pure decisions: no IO, no clock of their own, unit-tested.
//!
//! - [`key`]: the cache key of a request.
//! - [`ttl`]: how long an answer stays fresh, and how long it may be served stale.
//! - [`token`]: signed-URL tokens.
//! - [`purge`]: which cached objects a purge selects, and which purges a fill predates.
//! - [`crowd`]: fair first bytes when many readers of one object start together.
//! - [`upstream`]: which upstream fills a miss.
//! - [`request_clock`]: by when a client's request must have arrived.

pub mod crowd;
/// Cache keys (the `cascade-keys` crate, which purge validation shares).
pub use cascade_keys as key;
pub mod purge;
pub mod request_clock;
pub mod token;
pub mod ttl;
pub mod upstream;
