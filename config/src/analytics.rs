//! `[edge.analytics]` (what an edge records and where it sends it) and `[origin.analytics]`
//! (how the origin stores and aggregates viewer analytics). With `[kafka]` brokers, edges
//! publish to `kafka.analytics_topic` and the origin consumes it; otherwise edges post to the
//! origin's `collector_url`.

use serde::{Deserialize, Serialize};

use crate::kafka::is_host_port;
use crate::validate::Problems;
use crate::values::{HumanDuration, Secret};

/// `[edge.analytics]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct EdgeAnalyticsConfig {
    /// Read players' CMCD (metrics) and emit one record per viewer request; `false` turns
    /// both off.
    pub enabled: bool,
    /// Embedded mode: the origin (`http://host:port`) records are posted to; empty with no
    /// Kafka brokers: records are counted in metrics only.
    pub collector_url: String,
    /// Embedded mode: bearer token for the origin's collector (its
    /// `origin.analytics.collector_token`).
    pub collector_token: Secret,
    /// Records held while the transport is slow or down; beyond it they are dropped and
    /// counted (`cascade_analytics_records_total{outcome="dropped"}`).
    pub buffer: usize,
    /// Records per batch.
    pub batch: usize,
    /// Longest a record waits for its batch.
    pub flush_interval: HumanDuration,
    /// Key of the session hash for viewers whose player sends no CMCD session id. Give every
    /// edge the same salt so a viewer moving between edges stays one session; empty: a random
    /// salt per process.
    pub session_salt: Secret,
    /// A MaxMind City database (the router's `geoip_database`) naming each viewer's country
    /// and city in records; empty: no location. Re-read when the file changes.
    pub geoip_database: String,
}

impl Default for EdgeAnalyticsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            collector_url: String::new(),
            collector_token: Secret::default(),
            buffer: 65_536,
            batch: 2_000,
            flush_interval: HumanDuration::secs(1),
            session_salt: Secret::default(),
            geoip_database: String::new(),
        }
    }
}

impl EdgeAnalyticsConfig {
    pub(crate) fn validate(&self, p: &mut Problems) {
        if !self.collector_url.is_empty()
            && !self
                .collector_url
                .strip_prefix("http://")
                .is_some_and(|rest| is_host_port(rest.trim_end_matches('/')))
        {
            p.push(
                "edge.analytics.collector_url",
                format!(
                    "{:?} is not http://host:port (e.g. \"http://127.0.0.1:8080\")",
                    self.collector_url
                ),
            );
        }
        if !self.collector_url.is_empty() && self.collector_token.is_empty() {
            p.push(
                "edge.analytics.collector_token",
                "is empty: the origin's collector accepts records only with its collector_token",
            );
        }
        if self.buffer == 0 || self.buffer > 10_000_000 {
            p.push(
                "edge.analytics.buffer",
                "must be between 1 and 10000000 records",
            );
        }
        if self.batch == 0 || self.batch > 100_000 {
            p.push(
                "edge.analytics.batch",
                "must be between 1 and 100000 records",
            );
        }
        if self.flush_interval.0.is_zero() {
            p.push("edge.analytics.flush_interval", "must be longer than 0s");
        }
    }
}

/// `[origin.analytics]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct OriginAnalyticsConfig {
    /// Bearer token edges send records with (`POST /api/v1/analytics/records`); empty: the
    /// collector is closed (Kafka mode needs none).
    pub collector_token: Secret,
    /// Kafka mode: the origin's consumer group.
    pub consumer_group: String,
    /// A session with no request for this long has left.
    pub session_idle: HumanDuration,
    /// How long after its end a minute waits for late records before it is aggregated.
    pub grace: HumanDuration,
    /// A buffer at least this long counts as healthy.
    pub healthy_buffer: HumanDuration,
    /// How long request records (the raw material of minutes and sessions) are kept.
    pub record_retention: HumanDuration,
    /// How long viewer sessions are kept.
    pub detail_retention: HumanDuration,
    /// How long per-minute figures are kept.
    pub minute_retention: HumanDuration,
    /// QoE event: average live latency above this.
    pub high_latency: HumanDuration,
    /// QoE event: rebuffer ratio above this percentage.
    pub rebuffer_percent: f64,
    /// QoE event: buffer health below this percentage.
    pub buffer_health_percent: f64,
}

impl Default for OriginAnalyticsConfig {
    fn default() -> Self {
        Self {
            collector_token: Secret::default(),
            consumer_group: "cascade-origin-analytics".into(),
            session_idle: HumanDuration::secs(30),
            grace: HumanDuration::secs(5),
            healthy_buffer: HumanDuration(std::time::Duration::from_millis(500)),
            record_retention: HumanDuration::secs(86_400),
            detail_retention: HumanDuration::secs(30 * 86_400),
            minute_retention: HumanDuration::secs(400 * 86_400),
            high_latency: HumanDuration::secs(5),
            rebuffer_percent: 3.0,
            buffer_health_percent: 50.0,
        }
    }
}

impl OriginAnalyticsConfig {
    pub(crate) fn validate(&self, p: &mut Problems) {
        if self.session_idle.0.as_secs() < 1 || self.session_idle.0.as_secs() > 600 {
            p.push(
                "origin.analytics.session_idle",
                "must be between 1s and 10m",
            );
        }
        if self.grace.0.as_secs() > 600 {
            p.push("origin.analytics.grace", "must be at most 10m");
        }
        if self.record_retention.0.as_secs() < 3_600 {
            p.push("origin.analytics.record_retention", "must be at least 1h");
        }
        if self.detail_retention.0 < self.record_retention.0 {
            p.push(
                "origin.analytics.detail_retention",
                "must be at least origin.analytics.record_retention",
            );
        }
        if self.minute_retention.0 < self.detail_retention.0 {
            p.push(
                "origin.analytics.minute_retention",
                "must be at least origin.analytics.detail_retention",
            );
        }
        for (field, v) in [
            ("origin.analytics.rebuffer_percent", self.rebuffer_percent),
            (
                "origin.analytics.buffer_health_percent",
                self.buffer_health_percent,
            ),
        ] {
            if !(0.0..=100.0).contains(&v) {
                p.push(field, format!("{v} is not a percentage (0 to 100)"));
            }
        }
        if self.consumer_group.is_empty() {
            p.push("origin.analytics.consumer_group", "must not be empty");
        }
    }
}
