//! The edge tier and the caching core that the shield reuses.
//!
//! Viewers land here over HTTP/1.1, HTTP/2 and HTTP/3. The caching core (Pingora proxy with a
//! moka-backed store, cache keys, TTL policy, request collapsing, purge application, signed
//! URLs) lives in this library so the shield runs the same code configured as a parent tier.
//! So far the crate provides the `cascade-edge` server with the shared service conventions;
//! the caching core is built by its own issue.
