//! `[log]`: how every service writes its tracing output.

use serde::{Deserialize, Serialize};

use crate::validate::Problems;

/// Log verbosity and format, shared by every service in the file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A `tracing` filter: a level (`info`) or per-module directives (`info,cascade_cache=debug`).
    /// `RUST_LOG`, when set, takes precedence.
    pub level: String,
    /// `human` for terminals, `json` (one object per line) for log shippers.
    pub format: LogFormat,
}

/// Output format of the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Coloured, aligned text for a terminal.
    Human,
    /// One JSON object per event.
    Json,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Human,
        }
    }
}

impl LogConfig {
    pub(crate) fn validate(&self, p: &mut Problems) {
        if self.level.trim().is_empty() {
            p.push(
                "log.level",
                "is empty (write a level such as \"info\" or \"debug\")",
            );
        }
    }
}
