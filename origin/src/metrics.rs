//! Prometheus metrics of live ingest and transcoding (the seed platform's `livestream_*`
//! names where they fit), in the process-wide registry the admin listener renders.

use std::sync::OnceLock;

use prometheus::{GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts};

use cascade_service::metrics::must;

/// Ingest and transcoder metrics.
pub struct LiveMetrics {
    /// Streams with a publisher or waiting for one to reconnect.
    pub active_streams: IntGauge,
    /// Errors, by kind (`media`, `transcoder`, `publish_refused`).
    pub errors: IntCounterVec,
    /// Publishes refused, by reason.
    pub refused: IntCounterVec,
    /// Media bytes received from publishers.
    pub ingest_bytes: IntCounter,
    /// Ingest bitrate per stream (bits per second over the last few seconds).
    pub ingest_bitrate: GaugeVec,
    /// Transcoder frames per second per stream.
    pub transcoder_fps: GaugeVec,
    /// Transcoder speed per stream (1.0 = real time).
    pub transcoder_speed: GaugeVec,
    /// Transcoder output bitrate per stream (kbit/s, as ffmpeg reports it).
    pub transcoder_bitrate: GaugeVec,
    /// Frames the transcoder dropped per stream.
    pub transcoder_dropped: GaugeVec,
    /// ffmpeg restarts.
    pub transcoder_restarts: IntCounter,
}

impl LiveMetrics {
    /// Removes the per-stream series of a stream that ended.
    pub fn forget(&self, stream_id: &str) {
        for gauge in [
            &self.ingest_bitrate,
            &self.transcoder_fps,
            &self.transcoder_speed,
            &self.transcoder_bitrate,
            &self.transcoder_dropped,
        ] {
            let _ = gauge.remove_label_values(&[stream_id]);
        }
    }
}

/// The process's live metrics, registered on first use.
pub fn live_metrics() -> &'static LiveMetrics {
    static METRICS: OnceLock<LiveMetrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let per_stream =
            |name: &str, help: &str| must(GaugeVec::new(Opts::new(name, help), &["stream"]));
        let m = LiveMetrics {
            active_streams: must(IntGauge::new(
                "livestream_active_streams_total",
                "Live streams: publishing, or waiting for their publisher to reconnect",
            )),
            errors: must(IntCounterVec::new(
                Opts::new("livestream_errors_total", "Stream errors, by kind"),
                &["kind"],
            )),
            refused: must(IntCounterVec::new(
                Opts::new(
                    "livestream_publish_refused_total",
                    "RTMP publishes refused, by reason",
                ),
                &["reason"],
            )),
            ingest_bytes: must(IntCounter::new(
                "livestream_ingest_bytes_total",
                "Audio and video bytes received from publishers",
            )),
            ingest_bitrate: per_stream(
                "livestream_ingest_bitrate_bps",
                "Ingest bitrate of each live stream over the last seconds",
            ),
            transcoder_fps: per_stream(
                "livestream_transcoder_fps",
                "Frames per second ffmpeg reports",
            ),
            transcoder_speed: per_stream(
                "livestream_transcoder_speed",
                "Transcoding speed relative to real time (below 1 falls behind)",
            ),
            transcoder_bitrate: per_stream(
                "livestream_transcoder_bitrate_kbps",
                "Output bitrate ffmpeg reports (kbit/s)",
            ),
            transcoder_dropped: per_stream(
                "livestream_transcoder_dropped_frames",
                "Frames ffmpeg dropped in its current run",
            ),
            transcoder_restarts: must(IntCounter::new(
                "livestream_transcoder_restarts_total",
                "Times a failed or stalled ffmpeg was restarted",
            )),
        };
        for c in [
            Box::new(m.active_streams.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(m.errors.clone()),
            Box::new(m.refused.clone()),
            Box::new(m.ingest_bytes.clone()),
            Box::new(m.ingest_bitrate.clone()),
            Box::new(m.transcoder_fps.clone()),
            Box::new(m.transcoder_speed.clone()),
            Box::new(m.transcoder_bitrate.clone()),
            Box::new(m.transcoder_dropped.clone()),
            Box::new(m.transcoder_restarts.clone()),
        ] {
            let _ = prometheus::register(c);
        }
        m
    })
}

/// Packaging and delivery metrics.
pub struct DeliveryMetrics {
    /// Seconds from a part being packaged to a blocked playlist or part request that waited
    /// for it having its answer.
    pub blocked_wake: Histogram,
    /// Seconds from a part's last frame entering the origin (RTMP) to the part being
    /// available for delivery: transcoding plus packaging latency.
    pub part_latency: Histogram,
    /// Bytes of media the packager holds in memory, all live streams.
    pub memory_bytes: IntGauge,
    /// Archive jobs of the batch in progress not yet done (grows while uploads fail).
    pub archive_backlog: IntGauge,
    /// Objects waiting in the archive's local spool for the store.
    pub spool_objects: IntGauge,
    /// Bytes waiting in the archive's local spool.
    pub spool_bytes: IntGauge,
}

/// The process's delivery metrics, registered on first use.
pub fn delivery_metrics() -> &'static DeliveryMetrics {
    static METRICS: OnceLock<DeliveryMetrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let fine = vec![
            0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1,
        ];
        let coarse = vec![
            0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.25, 1.5, 2.0, 3.0, 5.0,
        ];
        let m = DeliveryMetrics {
            blocked_wake: must(Histogram::with_opts(
                HistogramOpts::new(
                    "origin_blocked_request_wake_seconds",
                    "From a part being packaged to the answer of a request that waited for it",
                )
                .buckets(fine),
            )),
            part_latency: must(Histogram::with_opts(
                HistogramOpts::new(
                    "origin_part_latency_seconds",
                    "From a part's last frame arriving over RTMP to the part being deliverable",
                )
                .buckets(coarse),
            )),
            memory_bytes: must(IntGauge::new(
                "origin_packager_memory_bytes",
                "Media bytes held in memory by the packager",
            )),
            archive_backlog: must(IntGauge::new(
                "origin_archive_backlog",
                "Archive jobs queued or being retried",
            )),
            spool_objects: must(IntGauge::new(
                "origin_archive_spool_objects",
                "Objects waiting in the local spool for the object store",
            )),
            spool_bytes: must(IntGauge::new(
                "origin_archive_spool_bytes",
                "Bytes waiting in the local spool for the object store",
            )),
        };
        for c in [
            Box::new(m.blocked_wake.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(m.part_latency.clone()),
            Box::new(m.memory_bytes.clone()),
            Box::new(m.archive_backlog.clone()),
            Box::new(m.spool_objects.clone()),
            Box::new(m.spool_bytes.clone()),
        ] {
            let _ = prometheus::register(c);
        }
        m
    })
}
