//! Streams as operators and broadcasters see them: the stream model and its validation
//! ([`model`]), events ([`event`]), the registry over sqlx ([`registry`]), the management
//! API ([`api`]), live publishing state ([`live`]) and the transcoder hand-off monitor
//! ([`monitor`]).

pub mod api;
pub mod event;
pub mod live;
pub mod model;
pub mod monitor;
pub mod registry;
