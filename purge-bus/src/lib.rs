//! The purge bus server: the operators' purge API, publishing accepted purges to the nodes,
//! and completion tracking from the nodes' reports.
//!
//! Where it sits: operators (and the `cascade-purge` CLI) → this API → Kafka or the embedded
//! log → every edge and shield, which follow it with `cascade-purge-follower` (the crate that
//! also defines the purge types both sides speak) → reports back here.
//!
//! Pure cores: per-token rate limiting ([`rate`]), completion tracking from reports
//! ([`tracker`]), whom to expect reports from ([`membership`]). Shells: the API ([`api`]), the
//! transports it publishes to ([`transport`]: the embedded log, kept on disk by
//! [`log_file`]; [`kafka`]: the producer).

pub mod api;
/// Scoped API tokens, shared with the origin's management API.
pub use cascade_service::auth;
pub mod kafka;
pub mod log_file;
pub mod membership;
pub mod rate;
pub mod tracker;
pub mod transport;
