//! `[edge.http3]`: the QUIC listener that serves viewers HTTP/3 on the UDP side of
//! `edge.tls_listen`, and how H1/H2 responses advertise it.

use serde::{Deserialize, Serialize};

use crate::validate::Problems;
use crate::values::HumanDuration;

/// Most streams a client may open at once that we accept in the config; QUIC counts them in a
/// varint, but a viewer needs a few dozen.
pub const MAX_HTTP3_STREAMS: u32 = 10_000;

/// QUIC's congestion controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CongestionController {
    /// CUBIC (RFC 9438): loss-based, the usual choice.
    Cubic,
    /// BBR: model-based, better on lossy long paths (quinn's implementation is experimental).
    Bbr,
}

/// `[edge.http3]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Http3Config {
    /// Serve HTTP/3 on the UDP port of `edge.tls_listen`.
    pub enabled: bool,
    /// `ma=` of the `Alt-Svc: h3` header on HTTPS responses; `0s` advertises nothing.
    pub alt_svc_max_age: HumanDuration,
    /// Request streams a client may have open at once on one connection.
    pub max_concurrent_streams: u32,
    /// A connection with no traffic for this long is closed.
    pub idle_timeout: HumanDuration,
    /// `cubic` or `bbr`.
    pub congestion: CongestionController,
    /// Let the kernel split large UDP sends into datagrams (GSO) where it can.
    pub gso: bool,
    /// Accept 0-RTT (early data) requests: faster reconnects, but a replayable first flight.
    pub zero_rtt: bool,
    /// Most QUIC connections open at once; further handshakes are refused
    /// (`CONNECTION_REFUSED`), and clients fall back to HTTPS over TCP.
    pub max_connections: u32,
}

impl Default for Http3Config {
    fn default() -> Self {
        Self {
            enabled: true,
            alt_svc_max_age: HumanDuration::secs(24 * 3600),
            max_concurrent_streams: 100,
            idle_timeout: HumanDuration::secs(30),
            congestion: CongestionController::Cubic,
            gso: true,
            zero_rtt: false,
            max_connections: 10_000,
        }
    }
}

impl Http3Config {
    pub(crate) fn validate(&self, p: &mut Problems) {
        if self.max_concurrent_streams == 0 || self.max_concurrent_streams > MAX_HTTP3_STREAMS {
            p.push(
                "edge.http3.max_concurrent_streams",
                format!(
                    "{} must be between 1 and {MAX_HTTP3_STREAMS}",
                    self.max_concurrent_streams
                ),
            );
        }
        // QUIC carries the idle timeout in milliseconds as a 62-bit varint; a day is plenty.
        if self.idle_timeout.0.is_zero() || self.idle_timeout.0.as_secs() > 24 * 3600 {
            p.push(
                "edge.http3.idle_timeout",
                format!("{} must be between 1ms and 24h", self.idle_timeout),
            );
        }
        if self.max_connections == 0 {
            p.push(
                "edge.http3.max_connections",
                "must be at least 1 (set edge.http3.enabled = false to serve no HTTP/3)",
            );
        }
        if self.alt_svc_max_age.0.as_secs() > u64::from(u32::MAX) {
            p.push(
                "edge.http3.alt_svc_max_age",
                format!("{} is too long", self.alt_svc_max_age),
            );
        }
    }
}
