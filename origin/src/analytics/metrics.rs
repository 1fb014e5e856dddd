//! The origin's analytics metrics: the seed platform's viewer gauges (`livestream_*`), the
//! same QoE gauges per edge, and the collector's and aggregator's counters.

use std::sync::OnceLock;

use prometheus::{
    Gauge, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts,
};

use cascade_analytics::live::Snapshot;
use cascade_service::metrics::must;

/// The metrics.
pub struct AnalyticsMetrics {
    total_viewers: IntGauge,
    stream_viewers: GaugeVec,
    average_latency: Gauge,
    buffer_health: Gauge,
    rebuffer_ratio: Gauge,
    edge_viewers: GaugeVec,
    edge_latency: GaugeVec,
    edge_buffer_health: GaugeVec,
    edge_rebuffer_ratio: GaugeVec,
    /// Startup times of viewers, seconds.
    pub startup: Histogram,
    /// Records stored, rejected as unreadable, or already stored (a repeated batch).
    pub records: IntCounterVec,
    /// Minutes aggregated.
    pub minutes: IntCounter,
    /// QoE events raised, by type.
    pub events: IntCounterVec,
}

impl AnalyticsMetrics {
    /// Sets the gauges from the viewers watching now.
    pub fn set_gauges(&self, snapshot: &Snapshot) {
        let Snapshot {
            streams,
            edges,
            total,
        } = snapshot;
        self.total_viewers
            .set(i64::try_from(total.viewers).unwrap_or(i64::MAX));
        self.stream_viewers.reset();
        for (stream, g) in streams {
            self.stream_viewers
                .with_label_values(&[stream.as_str()])
                .set(g.viewers as f64);
        }
        // With nobody watching there is no latency or buffer to speak of: the gauges say
        // NaN rather than a reassuring 0.
        self.average_latency
            .set(total.average_latency_ms.unwrap_or(f64::NAN));
        self.buffer_health
            .set(total.buffer_health_percent.unwrap_or(f64::NAN));
        self.rebuffer_ratio
            .set(total.rebuffer_ratio.unwrap_or(f64::NAN));
        for vec in [
            &self.edge_viewers,
            &self.edge_latency,
            &self.edge_buffer_health,
            &self.edge_rebuffer_ratio,
        ] {
            vec.reset();
        }
        for (edge, g) in edges {
            let label = [edge.as_str()];
            self.edge_viewers
                .with_label_values(&label)
                .set(g.viewers as f64);
            if let Some(v) = g.average_latency_ms {
                self.edge_latency.with_label_values(&label).set(v);
            }
            if let Some(v) = g.buffer_health_percent {
                self.edge_buffer_health.with_label_values(&label).set(v);
            }
            if let Some(v) = g.rebuffer_ratio {
                self.edge_rebuffer_ratio.with_label_values(&label).set(v);
            }
        }
    }
}

/// The process's analytics metrics, registered on first use.
pub fn analytics_metrics() -> &'static AnalyticsMetrics {
    static METRICS: OnceLock<AnalyticsMetrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let edge = |name: &str, help: &str| must(GaugeVec::new(Opts::new(name, help), &["edge"]));
        let m = AnalyticsMetrics {
            total_viewers: must(IntGauge::new(
                "livestream_total_viewers",
                "Viewers watching now, over all streams (sessions heard from within the session timeout)",
            )),
            stream_viewers: must(GaugeVec::new(
                Opts::new("livestream_viewers", "Viewers watching now, by stream"),
                &["stream"],
            )),
            average_latency: must(Gauge::new(
                "livestream_average_latency_ms",
                "Average live latency of the viewers watching now, ms (NaN with none)",
            )),
            buffer_health: must(Gauge::new(
                "livestream_buffer_health_percent",
                "Share of recent playback samples with a healthy buffer, % (NaN with no viewers)",
            )),
            rebuffer_ratio: must(Gauge::new(
                "livestream_rebuffer_ratio",
                "Share of recent playback samples that reported a starvation (NaN with no viewers)",
            )),
            edge_viewers: edge("cascade_qoe_viewers", "Viewers watching now, by edge"),
            edge_latency: edge(
                "cascade_qoe_average_latency_ms",
                "Average live latency of the viewers watching now, by edge, ms",
            ),
            edge_buffer_health: edge(
                "cascade_qoe_buffer_health_percent",
                "Share of recent playback samples with a healthy buffer, by edge, %",
            ),
            edge_rebuffer_ratio: edge(
                "cascade_qoe_rebuffer_ratio",
                "Share of recent playback samples that reported a starvation, by edge",
            ),
            startup: must(Histogram::with_opts(
                HistogramOpts::new(
                    "livestream_startup_seconds",
                    "From a viewer's first request to its first media request after startup",
                )
                .buckets(vec![0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0]),
            )),
            records: must(IntCounterVec::new(
                Opts::new(
                    "cascade_analytics_records_received_total",
                    "Analytics records received by outcome: stored, rejected (unreadable), repeated (a batch already stored)",
                ),
                &["outcome"],
            )),
            minutes: must(IntCounter::new(
                "cascade_analytics_minutes_total",
                "Stream minutes aggregated and stored",
            )),
            events: must(IntCounterVec::new(
                Opts::new("cascade_analytics_qoe_events_total", "QoE events raised, by type"),
                &["event_type"],
            )),
        };
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(m.total_viewers.clone()),
            Box::new(m.stream_viewers.clone()),
            Box::new(m.average_latency.clone()),
            Box::new(m.buffer_health.clone()),
            Box::new(m.rebuffer_ratio.clone()),
            Box::new(m.edge_viewers.clone()),
            Box::new(m.edge_latency.clone()),
            Box::new(m.edge_buffer_health.clone()),
            Box::new(m.edge_rebuffer_ratio.clone()),
            Box::new(m.startup.clone()),
            Box::new(m.records.clone()),
            Box::new(m.minutes.clone()),
            Box::new(m.events.clone()),
        ];
        for c in collectors {
            let _ = prometheus::register(c);
        }
        for outcome in ["stored", "rejected", "repeated"] {
            m.records.with_label_values(&[outcome]);
        }
        m
    })
}
