//! What nodes tell the bus: that they applied a purge, or that they are alive. On Kafka these
//! are messages on the acks topic; in embedded mode they are `POST /v1/reports` bodies.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How often nodes send heartbeats.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(2);

/// One report from a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum NodeReport {
    /// `node` applied purge `id` at `applied_ms` (ms since the Unix epoch).
    Applied {
        /// The node's id.
        node: String,
        /// The purge id.
        id: String,
        /// When it was applied.
        applied_ms: u64,
    },
    /// `node` is up and following the bus. It repeats the purges it applied lately, so one
    /// lost `Applied` report does not leave a purge incomplete.
    Heartbeat {
        /// The node's id.
        node: String,
        /// When it was sent.
        at_ms: u64,
        /// Purges applied in the last [`RECENT_WINDOW_MS`]: (purge id, when applied).
        #[serde(default)]
        recent: Vec<(String, u64)>,
    },
}

/// How long a node keeps repeating an applied purge in its heartbeats.
pub const RECENT_WINDOW_MS: u64 = 60_000;

/// Most purges one heartbeat repeats.
pub const MAX_RECENT: usize = 256;

/// Longest node id accepted in a report.
pub const MAX_NODE_ID: usize = 200;

impl NodeReport {
    /// The reporting node.
    pub fn node(&self) -> &str {
        match self {
            Self::Applied { node, .. } | Self::Heartbeat { node, .. } => node,
        }
    }

    /// The wire form.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads the wire form; garbage or an unusable node id is an error naming the problem.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        serde_json::from_slice::<Self>(bytes)
            .map_err(|e| e.to_string())
            .and_then(Self::checked)
    }

    /// Like [`NodeReport::decode`], from parsed JSON.
    pub fn from_value(value: serde_json::Value) -> Result<Self, String> {
        serde_json::from_value::<Self>(value)
            .map_err(|e| e.to_string())
            .and_then(Self::checked)
    }

    fn checked(report: Self) -> Result<Self, String> {
        let node = report.node();
        if node.is_empty() || node.len() > MAX_NODE_ID {
            return Err(format!(
                "node: must be 1 to {MAX_NODE_ID} characters, got {}",
                node.len()
            ));
        }
        if let Self::Heartbeat { recent, .. } = &report
            && recent.len() > MAX_RECENT
        {
            return Err(format!(
                "recent: {} purges; at most {MAX_RECENT}",
                recent.len()
            ));
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_round_trip_and_bad_ones_are_refused() {
        let applied = NodeReport::Applied {
            node: "edge-1".into(),
            id: "pg-1".into(),
            applied_ms: 5,
        };
        assert_eq!(NodeReport::decode(&applied.encode()), Ok(applied));
        let beat = NodeReport::Heartbeat {
            node: "shield-1".into(),
            at_ms: 9,
            recent: vec![("pg-1".into(), 5)],
        };
        assert_eq!(NodeReport::decode(&beat.encode()), Ok(beat.clone()));
        assert!(
            NodeReport::decode(br#"{"type":"heartbeat","node":"n","at_ms":1}"#).is_ok(),
            "recent is optional"
        );
        assert_eq!(
            NodeReport::decode(&beat.encode()).map(|r| r.node().to_owned()),
            Ok("shield-1".into())
        );
        assert!(NodeReport::decode(b"{").is_err());
        assert!(NodeReport::decode(br#"{"type":"heartbeat","node":"","at_ms":1}"#).is_err());
        assert!(NodeReport::decode(br#"{"type":"reboot","node":"e","at_ms":1}"#).is_err());
    }
}
