//! One purge as it travels on the bus, from the API to every node, and its wire form.

use serde::{Deserialize, Serialize};

use crate::request::PurgeRequest;

/// One purge on the bus.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurgeMessage {
    /// Purge id, as the API returned it.
    pub id: String,
    /// What to purge.
    pub request: PurgeRequest,
    /// When the API accepted it (ms since the Unix epoch).
    pub issued_ms: u64,
}

impl PurgeMessage {
    /// The wire form.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads the wire form; a garbled message is an error to log and skip.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let message: Self = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        message.request.validate().map_err(|e| e.to_string())?;
        Ok(message)
    }
}
