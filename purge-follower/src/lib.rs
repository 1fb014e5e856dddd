//! The purge follower that every edge and shield embeds, and the purge types both sides of the
//! bus speak.
//!
//! Where it sits: an operator's purge enters the bus (`cascade-purge-bus`), which publishes it
//! on Kafka or its embedded log; each cache node follows that here, applies the purge to its
//! own cache through a [`node::PurgeApplier`], and reports back. A cache node links this crate
//! and never the bus's operator API.
//!
//! Pure cores: the purge request and its validation ([`request`]), the message on the bus
//! ([`message`]), what nodes report ([`report`]), catch-up after a gap ([`catchup`]). Shells:
//! the follower ([`follow()`], over [`kafka`] or the embedded bus's feed), and the minimal HTTP
//! client ([`client`]) that the `cascade-purge` CLI shares.

pub mod catchup;
pub use cascade_service::http_client as client;
mod embedded;
pub mod follow;
pub mod kafka;
pub mod message;
pub mod node;
pub mod report;
pub mod request;

pub use follow::follow;
pub use request::{PurgeAction, PurgeKind, PurgeRequest, RequestError};
