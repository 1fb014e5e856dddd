//! Viewer analytics at the origin: records arrive from edges (the collector endpoint, or the
//! Kafka topic through [`kafka`]) and from players' beacons; each batch is stored before it is
//! acknowledged ([`store`]), then feeds the live viewers and their gauges ([`metrics`]). A
//! task aggregates every minute once its session timeout and grace have passed, with its
//! sessions and QoE events, and prunes what is past retention.
//!
//! Aggregation runs here rather than in a service of its own: it reads and writes the
//! registry's database, answers the stream API's questions, and needs the streams' live
//! state (ingest bitrate). A separate service would need all three over the network.

pub mod kafka;
pub mod metrics;
pub mod store;

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use cascade_analytics::device::Device;
use cascade_analytics::events::{Thresholds, qoe_events};
use cascade_analytics::live::{LiveViewers, Viewer};
use cascade_analytics::minute::{MINUTE_MS, MinuteStats, Settings, aggregate, minute_of};
use cascade_analytics::record::{MAX_FIELD, decode_batch};
use cascade_analytics::{Object, Record};
use cascade_config::OriginAnalyticsConfig;
use cascade_service::admin::PeerAddr;
use cascade_service::auth::BearerSecret;
use cascade_service::clock::now_ms_i64;
use cascade_service::json::{json_error, json_response, read_body};

use crate::analytics::metrics::analytics_metrics;
use crate::analytics::store::AnalyticsStore;
use crate::streams::event::{EventType, NewEvent, Severity};
use crate::streams::live::Live;

/// Largest batch the collector reads.
const MAX_BATCH_BYTES: usize = 32 << 20;
/// Largest beacon body.
const MAX_BEACON_BYTES: usize = 4096;
/// How often the aggregator looks for finished minutes.
const AGGREGATE_EVERY: Duration = Duration::from_secs(5);
/// How often the viewer gauges are refreshed.
const GAUGES_EVERY: Duration = Duration::from_secs(2);
/// How often retention is applied.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

type HttpResponse = Response<Full<Bytes>>;

/// The origin's analytics.
pub struct Analytics {
    store: AnalyticsStore,
    live: Mutex<LiveViewers>,
    settings: Settings,
    thresholds: Thresholds,
    config: OriginAnalyticsConfig,
    collector: Option<BearerSecret>,
    /// Records up to this time have arrived (Unix ms): the clock in embedded mode, the
    /// consumer's progress through the topic with Kafka.
    arrived_until: AtomicI64,
    follows_kafka: bool,
    /// Ingest bitrate samples per stream and minute: (sum of kbit/s, samples).
    ingest: Mutex<HashMap<(String, i64), (f64, u32)>>,
}

impl Analytics {
    /// Analytics over the registry's database.
    pub fn new(store: AnalyticsStore, config: &OriginAnalyticsConfig, follows_kafka: bool) -> Self {
        let settings = Settings {
            idle_ms: millis(config.session_idle.0),
            slot_ms: 10_000,
            healthy_buffer_ms: u32::try_from(config.healthy_buffer.0.as_millis())
                .unwrap_or(u32::MAX),
        };
        let thresholds = Thresholds {
            high_latency_ms: config.high_latency.0.as_millis() as f64,
            rebuffer_ratio: config.rebuffer_percent / 100.0,
            buffer_health_percent: config.buffer_health_percent,
            ..Thresholds::default()
        };
        analytics_metrics();
        Self {
            store,
            live: Mutex::new(LiveViewers::new(
                settings.idle_ms,
                settings.healthy_buffer_ms,
            )),
            settings,
            thresholds,
            config: config.clone(),
            collector: (!config.collector_token.is_empty())
                .then(|| BearerSecret::new(config.collector_token.expose())),
            arrived_until: AtomicI64::new(0),
            follows_kafka,
            ingest: Mutex::new(HashMap::new()),
        }
    }

    /// Stores a batch (once, when it has an id), then counts its viewers. `Err` means nothing
    /// was stored: the sender must deliver it again.
    pub async fn ingest(&self, records: &[Record], batch: Option<&str>) -> Result<(), sqlx::Error> {
        let m = analytics_metrics();
        if !self
            .store
            .insert_records(records, batch, now_ms_i64())
            .await?
        {
            m.records
                .with_label_values(&["repeated"])
                .inc_by(records.len() as u64);
            return Ok(());
        }
        m.records
            .with_label_values(&["stored"])
            .inc_by(records.len() as u64);
        if let Ok(mut live) = self.live.lock() {
            for r in records {
                if let Some(startup) = live.observe(r) {
                    m.startup.observe(startup as f64 / 1000.0);
                }
            }
        }
        Ok(())
    }

    /// Kafka mode: records up to `at_ms` have been consumed.
    pub fn arrived_until(&self, at_ms: i64) {
        self.arrived_until.fetch_max(at_ms, Ordering::Relaxed);
    }

    /// `POST /api/v1/analytics/records`: an edge's batch of JSON lines, with
    /// `?batch=<id>` so a retried batch is stored once. 202 once stored.
    pub async fn collect(&self, req: Request<Incoming>) -> HttpResponse {
        let Some(secret) = &self.collector else {
            return json_error(
                StatusCode::NOT_FOUND,
                "the analytics collector is closed: set origin.analytics.collector_token",
            );
        };
        let authorization = req
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let peer = req.extensions().get::<PeerAddr>().map(|p| p.0.ip());
        if let Err(e) = secret.check(authorization, peer) {
            return json_error(StatusCode::UNAUTHORIZED, e);
        }
        let batch = req.uri().query().and_then(|q| {
            q.split('&')
                .find_map(|kv| kv.strip_prefix("batch="))
                .filter(|b| !b.is_empty() && b.len() <= 200)
                .map(str::to_owned)
        });
        let body = match read_body(req, MAX_BATCH_BYTES).await {
            Ok(body) => body,
            Err(response) => return *response,
        };
        let (records, rejected) = decode_batch(&body);
        analytics_metrics()
            .records
            .with_label_values(&["rejected"])
            .inc_by(rejected as u64);
        match self
            .ingest(&records, batch.map(|b| format!("edge/{b}")).as_deref())
            .await
        {
            Ok(()) => json_response(
                StatusCode::ACCEPTED,
                &json!({ "stored": records.len(), "rejected": rejected }),
            ),
            Err(e) => {
                tracing::warn!(error = %e, "analytics batch not stored");
                json_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "analytics storage is unavailable; retry the batch",
                )
            }
        }
    }

    /// `POST /:id/viewers/track`: a player's beacon. Untrusted statistics, like CMCD: the
    /// body is bounded and checked, and nothing but analytics reads it.
    pub async fn track(&self, stream: &str, body: &[u8]) -> HttpResponse {
        let beacon: Beacon = match serde_json::from_slice(body) {
            Ok(b) => b,
            Err(e) => {
                return json_error(StatusCode::BAD_REQUEST, format!("invalid beacon: {e}"));
            }
        };
        let record = match beacon.into_record(stream, now_ms_i64()) {
            Ok(r) => r,
            Err(e) => return json_error(StatusCode::BAD_REQUEST, e),
        };
        match self.ingest(std::slice::from_ref(&record), None).await {
            Ok(()) => json_response(
                StatusCode::ACCEPTED,
                &json!({ "session_id": record.session }),
            ),
            Err(e) => {
                tracing::warn!(error = %e, "beacon not stored");
                json_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "analytics storage is unavailable",
                )
            }
        }
    }

    /// The largest beacon body read.
    pub fn max_beacon_bytes() -> usize {
        MAX_BEACON_BYTES
    }

    /// Viewers of `stream` watching now.
    pub fn viewers(&self, stream: &str) -> Vec<Viewer> {
        self.live
            .lock()
            .map(|live| live.viewers(stream, now_ms_i64()))
            .unwrap_or_default()
    }

    /// `GET /:id/viewers`.
    pub fn viewers_json(&self, stream: &str) -> Value {
        let viewers = self.viewers(stream);
        json!({
            "stream_id": stream,
            "viewer_count": viewers.len(),
            "viewers": viewers.iter().map(|v| json!({
                "session_id": v.session_id,
                "user_id": v.identity.user,
                "device_type": v.identity.device.label(),
                "location": v.identity.location,
                "edge": v.identity.edge,
                "rendition": v.rendition,
                "bitrate_kbps": v.bitrate_kbps,
                "buffer_ms": v.buffer_ms,
                "latency_ms": v.latency_ms,
                "startup_ms": v.startup_ms,
                "stalls": v.stalls,
                "joined_at": rfc3339(v.joined_ms),
                "last_seen": rfc3339(v.last_ms),
            })).collect::<Vec<_>>(),
        })
    }

    /// The highest peak of `stream` over its stored minutes and now.
    pub async fn peak_viewers(&self, stream: &str) -> u64 {
        let stored = self.store.peak_viewers(stream).await.unwrap_or(0);
        u64::from(stored).max(self.viewers(stream).len() as u64)
    }

    /// `GET /:id/analytics?from=&to=&interval=`: the series, one point per interval (aligned
    /// to multiples of the interval since the epoch, in UTC) that has figures.
    pub async fn series_json(
        &self,
        stream: &str,
        from: i64,
        to: i64,
        interval_ms: i64,
    ) -> Result<Value, sqlx::Error> {
        let minutes = self.store.series(stream, from, to).await?;
        let mut points: Vec<(i64, MinuteStats)> = Vec::new();
        for (minute, stats) in minutes {
            let bucket = minute.div_euclid(interval_ms) * interval_ms;
            match points.last_mut() {
                Some((b, merged)) if *b == bucket => merged.merge(&stats),
                _ => points.push((bucket, stats)),
            }
        }
        let sessions = self.store.sessions(stream, from, 1_000).await?;
        Ok(json!({
            "stream_id": stream,
            "from": rfc3339(from),
            "to": rfc3339(to),
            "interval_seconds": interval_ms / 1000,
            "series": points.iter().map(|(at, m)| point_json(*at, m, interval_ms)).collect::<Vec<_>>(),
            "sessions": sessions.iter().map(|s| json!({
                "session_id": s.session_id,
                "joined_at": rfc3339(s.first_at),
                "last_seen": rfc3339(s.last_at),
                "duration_seconds": (s.last_at - s.first_at) / 1000,
                "ended": s.details.ended,
                "device_type": s.details.device_type,
                "location": s.details.location,
                "user_id": s.details.user_id,
                "edge": s.details.edge,
                "renditions": s.details.renditions,
                "requests": s.details.requests,
                "bytes": s.details.bytes,
                "stalls": s.details.stalls,
                "startup_ms": s.details.startup_ms,
            })).collect::<Vec<_>>(),
        }))
    }

    /// Aggregates the minutes whose records are all in; returns how many were stored.
    pub async fn aggregate_ready(&self, now_ms: i64) -> Result<usize, sqlx::Error> {
        let arrived = if self.follows_kafka {
            self.arrived_until.load(Ordering::Relaxed).min(now_ms)
        } else {
            now_ms
        };
        let grace = millis(self.config.grace.0);
        let end = minute_of(arrived - self.settings.idle_ms - grace);
        let frontier = self.store.frontier().await?;
        if end <= frontier {
            return Ok(0);
        }
        let pending = self.store.minutes_with_records(frontier, end).await?;
        let mut stored = 0;
        for (stream, minute) in pending {
            if self.store.minute(&stream, minute).await?.is_some() {
                continue;
            }
            let (from, to) = self.settings.window(minute);
            let records = self.store.records(&stream, from, to).await?;
            let (mut stats, sessions) = aggregate(minute, &records, &self.settings);
            stats.set_ingest_bitrate(self.ingest_bitrate(&stream, minute));
            let previous = self.store.minute(&stream, minute - MINUTE_MS).await?;
            let events: Vec<NewEvent> = qoe_events(previous.as_ref(), &stats, &self.thresholds)
                .into_iter()
                .filter_map(|e| {
                    let event_type = EventType::parse(e.event_type)?;
                    let severity = if e.severity == "warning" {
                        Severity::Warning
                    } else {
                        Severity::Info
                    };
                    Some(
                        NewEvent::new(event_type, e.message)
                            .with_severity(severity)
                            .with_details(json!({ "minute": rfc3339(minute) })),
                    )
                })
                .collect();
            if self
                .store
                .store_minute(&stream, minute, &stats, &sessions, &events)
                .await?
            {
                stored += 1;
                let m = analytics_metrics();
                m.minutes.inc();
                for e in &events {
                    m.events.with_label_values(&[e.event_type.as_str()]).inc();
                }
            }
        }
        self.store.set_frontier(end).await?;
        if let Ok(mut ingest) = self.ingest.lock() {
            ingest.retain(|(_, minute), _| *minute >= end - MINUTE_MS);
        }
        Ok(stored)
    }

    fn ingest_bitrate(&self, stream: &str, minute: i64) -> Option<u32> {
        let ingest = self.ingest.lock().ok()?;
        let (sum, n) = ingest.get(&(stream.to_owned(), minute))?;
        (*n > 0).then(|| (sum / f64::from(*n)).round() as u32)
    }

    /// Refreshes the viewer gauges and samples the ingest bitrate of watched streams.
    fn refresh(&self, live_streams: &Live, now_ms: i64) {
        let Ok(mut live) = self.live.lock() else {
            return;
        };
        live.prune(now_ms);
        let snapshot = live.gauges(now_ms);
        drop(live);
        analytics_metrics().set_gauges(&snapshot);
        if let Ok(mut ingest) = self.ingest.lock() {
            for (stream, _) in &snapshot.streams {
                if let Some(view) = live_streams.view(stream).filter(|v| v.ingest_bitrate > 0) {
                    let sample = ingest
                        .entry((stream.clone(), minute_of(now_ms)))
                        .or_default();
                    sample.0 += view.ingest_bitrate as f64 / 1000.0;
                    sample.1 += 1;
                }
            }
        }
    }

    /// Starts the aggregator, the gauges and (with Kafka) the consumer.
    pub fn spawn(self: &Arc<Self>, live: Arc<Live>, kafka: &cascade_config::KafkaConfig) {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let mut last_prune = 0;
            loop {
                tokio::time::sleep(AGGREGATE_EVERY).await;
                let now = now_ms_i64();
                if let Err(e) = this.aggregate_ready(now).await {
                    tracing::warn!(error = %e, "analytics aggregation failed; retrying");
                }
                if now - last_prune >= millis(PRUNE_EVERY) {
                    last_prune = now;
                    let records = now - millis(this.config.record_retention.0);
                    let sessions = now - millis(this.config.detail_retention.0);
                    let minutes = now - millis(this.config.minute_retention.0);
                    match this.store.prune(records, sessions, minutes).await {
                        Ok(n) if n > 0 => {
                            tracing::info!(rows = n, "analytics past retention deleted")
                        }
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "analytics retention failed"),
                    }
                }
            }
        });
        let this = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                this.refresh(&live, now_ms_i64());
                tokio::time::sleep(GAUGES_EVERY).await;
            }
        });
        if !kafka.is_embedded() {
            tokio::spawn(kafka::consume(
                Arc::clone(self),
                kafka.clone(),
                self.config.consumer_group.clone(),
            ));
        }
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn rfc3339(ms: i64) -> Value {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| json!(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)))
        .unwrap_or(Value::Null)
}

fn round(v: Option<f64>, digits: i32) -> Value {
    let scale = 10f64.powi(digits);
    v.filter(|v| v.is_finite())
        .map_or(Value::Null, |v| json!((v * scale).round() / scale))
}

/// One point of the series, in the seed's names plus the CDN's.
fn point_json(at: i64, m: &MinuteStats, interval_ms: i64) -> Value {
    json!({
        "timestamp": rfc3339(at),
        "viewer_count": m.viewers,
        "peak_viewer_count": m.peak_viewers,
        "joins": m.joins,
        "leaves": m.leaves,
        "watch_time_seconds": m.watch_seconds,
        "bandwidth_usage": round(Some(m.egress_bits_per_second(interval_ms as f64 / 1000.0)), 0),
        "egress_bytes": m.egress_bytes,
        "edge_hit_ratio": round(m.hit_ratio(), 4),
        "ingest_bitrate": round(m.ingest_bitrate_kbps().map(|k| k * 1000.0), 0),
        "buffer_health": round(m.buffer_health_percent(), 1),
        "average_buffer_ms": round(m.average_buffer_ms(), 0),
        "rebuffer_ratio": round(m.rebuffer_ratio(), 4),
        "average_latency": round(m.average_latency_ms(), 0),
        "p95_latency": m.latency_p95_ms,
        "startup_time_ms": round(m.average_startup_ms(), 0),
        "bitrate_distribution": m.bitrates.iter().map(|(b, n)| (b.to_string(), json!(n))).collect::<serde_json::Map<_, _>>(),
        "requests": m.requests,
        "errors": m.errors,
        "dropped_frames": m.dropped_frames,
        "quality_score": round(m.quality_score(), 1),
    })
}

/// The seed's beacon, with optional playback figures for players without CMCD.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Beacon {
    session_id: String,
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    resolution: Option<String>,
    #[serde(default)]
    device_type: Option<String>,
    #[serde(default)]
    location: Option<String>,
    #[serde(default)]
    bitrate_kbps: Option<u32>,
    #[serde(default)]
    buffer_ms: Option<u32>,
    #[serde(default)]
    latency_ms: Option<u32>,
    #[serde(default)]
    stalled: bool,
    #[serde(default)]
    dropped_frames: Option<u32>,
}

impl Beacon {
    fn into_record(self, stream: &str, now_ms: i64) -> Result<Record, String> {
        let short = |name: &str, v: &Option<String>| match v {
            Some(v) if v.len() > MAX_FIELD => {
                Err(format!("{name} is longer than {MAX_FIELD} characters"))
            }
            _ => Ok(()),
        };
        if self.session_id.is_empty() || self.session_id.len() > MAX_FIELD {
            return Err(format!("session_id must be 1 to {MAX_FIELD} characters"));
        }
        short("user_id", &self.user_id)?;
        short("resolution", &self.resolution)?;
        short("location", &self.location)?;
        short("device_type", &self.device_type)?;
        let record = Record {
            at_ms: now_ms,
            stream: stream.to_owned(),
            live: true,
            rendition: self.resolution,
            object: Object::Other,
            status: 204,
            protocol: "beacon".into(),
            edge: "beacon".into(),
            session: self.session_id,
            device: self
                .device_type
                .as_deref()
                .map_or(Device::Other, Device::from_label),
            location: self.location,
            user: self.user_id,
            latency_ms: self.latency_ms,
            dropped_frames: self.dropped_frames,
            buffer_ms: self.buffer_ms,
            starved: self.stalled,
            bitrate_kbps: self.bitrate_kbps,
            ..Record::default()
        };
        if !record.is_valid() {
            return Err("resolution must be letters, digits, '-', '_' or '.'".into());
        }
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beacons_become_records_and_bad_ones_say_why() {
        let beacon: Beacon = serde_json::from_str(
            r#"{"session_id":"s1","user_id":"u","resolution":"720p","device_type":"mobile","location":"FR","latency_ms":1800,"stalled":true}"#,
        )
        .unwrap();
        let r = beacon.into_record("abc", 1_000).unwrap();
        assert_eq!(
            (r.session.as_str(), r.device, r.starved),
            ("s1", Device::Mobile, true)
        );
        assert_eq!(r.live_latency_ms(), Some(1_800));
        let bad: Beacon = serde_json::from_str(r#"{"session_id":""}"#).unwrap();
        assert!(
            bad.into_record("abc", 1)
                .unwrap_err()
                .contains("session_id")
        );
        let bad: Beacon =
            serde_json::from_str(r#"{"session_id":"s","resolution":"7 20p"}"#).unwrap();
        assert!(bad.into_record("abc", 1).is_err());
        assert!(serde_json::from_str::<Beacon>(r#"{"session_id":"s","extra":1}"#).is_err());
    }
}
