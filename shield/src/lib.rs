//! `cascade-shield`: the parent cache tier between edges and the origin, so the origin sees each
//! object once however many edges ask.
//!
//! It runs the caching core of `cascade-cache` (without the viewers' listeners) configured by
//! `cascade_cache::tier::TierSettings::shield`. What sets it apart from the edge: a disk tier
//! under memory, primary and backup origins with failover and stale-if-error, any host (its
//! origins are fixed, so it is no open proxy), an optional fill secret that edges must send,
//! an edge's `no-cache` honoured (sent after a purge), and first-fetch stamping. This crate
//! holds only the binary and its integration tests.
