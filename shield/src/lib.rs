//! The shield tier: the edge's caching core (from `cascade-edge`) configured as a parent tier
//! by [`cascade_edge::tier::TierSettings::shield`]: a memory and a disk tier, primary and
//! backup origins with failover and stale-if-error, an optional fill secret, and first-fetch
//! stamping, so the origin sees each object once however many edges ask. This crate holds
//! only the `cascade-shield` binary; everything it runs is shared with the edge.
