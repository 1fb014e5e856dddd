//! The purge bus: the operators' purge API, the Kafka producer that publishes invalidations,
//! the consumer that edges and shields embed, and completion tracking from their acks.
//!
//! So far: the purge request type shared by the API and the `cascade-purge` CLI, with its
//! validation, and the pure cores of the API: scoped API tokens kept as digests ([`auth`]),
//! per-token rate limiting ([`rate`]) and completion tracking from acks ([`tracker`]). The
//! `cascade-purge-bus` server runs the shared service conventions; its API listener, the
//! Kafka transport and the node consumer are still to come.

pub mod api;
pub mod auth;
pub mod catchup;
pub mod client;
pub mod kafka;
pub mod membership;
pub mod node;
pub mod rate;
pub mod report;
pub mod request;
pub mod tracker;
pub mod transport;

pub use request::{PurgeAction, PurgeKind, PurgeRequest, RequestError};
