//! The router: sends each viewer to the nearest healthy edge, by HTTP 302, by DNS, and by
//! content steering that moves a playing viewer to another PoP without a reload.
//!
//! Where it sits: in front of the edges, beside them in the data flow (viewers ask it first,
//! then fetch from the edge it names). It probes each edge's admin listener; it never proxies
//! media, only the multivariant playlist or MPD it rewrites for steering.
//!
//! Pure cores: great-circle distance ([`geo`]), coverage zones ([`coverage`]), the client's
//! address behind trusted proxies ([`client`]), locating ([`locate`]), edge health from
//! probes ([`health`]), the decision ([`choose`]), playlist rewriting and steering manifests
//! ([`steering`]). Shells: the GeoIP database ([`geoip`]), probes ([`probe`]), playlist
//! fetches ([`fetch`]), the HTTP side ([`http`]), the DNS side ([`dns`]), shared state
//! ([`state`]) and metrics ([`metrics`]).

pub mod choose;
pub mod client;
pub mod coverage;
pub mod dns;
pub mod fetch;
pub mod geo;
pub mod geoip;
pub mod health;
pub mod http;
pub mod locate;
pub mod metrics;
pub mod probe;
pub mod state;
pub mod steering;
