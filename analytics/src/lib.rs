//! Viewer analytics, from the request an edge served to the minute an operator reads.
//!
//! Pure cores, no IO:
//! - [`record`]: one [`Record`] per viewer request (what was asked, how it was served, and
//!   what the player said through CMCD), its path parsing and its batch encoding;
//! - [`session`]: the viewer session (CMCD `sid`, else a salted hash) and [`device`] type;
//! - [`minute`]: records of one stream and minute → viewers, joins and leaves, watch time,
//!   egress, hit ratio, buffer health, rebuffer ratio, latency, bitrates, errors, a quality
//!   score, and the sessions seen;
//! - [`live`]: the viewers watching now, per stream and per edge;
//! - [`events`]: QoE events from a minute's figures and thresholds.
//!
//! Shell: [`transport`], the edge's bounded, batching sender to the origin (embedded) or to
//! Kafka. The origin stores and aggregates (`cascade-origin`'s `analytics`).

pub mod device;
pub mod events;
pub mod live;
pub mod minute;
pub mod record;
pub mod session;
pub mod transport;

pub use record::{Object, Record};
