//! The purge bus: the operators' purge API, the Kafka producer that publishes invalidations,
//! the consumer that edges and shields embed, and completion tracking from their acks.
//!
//! So far: the purge request type shared by the API and the `cascade-purge` CLI, with its
//! validation, and the `cascade-purge-bus` server with the shared service conventions. The API
//! listener, Kafka transport and consumer are built by the purge-bus issue.

pub mod request;

pub use request::{PurgeAction, PurgeKind, PurgeRequest, RequestError};
