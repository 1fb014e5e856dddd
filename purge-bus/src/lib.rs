//! The purge bus: the operators' purge API, the Kafka producer that publishes invalidations,
//! the consumer that edges and shields embed, and completion tracking from their acks.
//!
//! Pure cores: the purge request and its validation ([`request`]), per-token rate limiting
//! ([`rate`]), completion tracking from acks ([`tracker`]), catch-up after a gap ([`catchup`]);
//! shells: the API ([`api`]), the Kafka and embedded transports, the node follower ([`node`]).

pub mod api;
/// Scoped API tokens, shared with the origin's management API.
pub use cascade_service::auth;
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
