//! Prometheus metrics of the caching proxy, in the process-wide registry that the admin
//! listener renders. Cache occupancy is read from the storage at scrape time.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts};

use cascade_service::metrics::must;

use crate::storage::TieredStorage;
use crate::storage::disk::{DiskStats, DiskTier};

/// Request-path metrics.
pub struct ProxyMetrics {
    /// Requests by status, cache state and protocol.
    pub requests: IntCounterVec,
    /// Body bytes sent to clients.
    pub response_bytes: IntCounter,
    /// Time from choosing an upstream to its response header.
    pub upstream_latency: Histogram,
    /// Requests that waited for another request's fetch instead of fetching (collapsed).
    pub collapsed: IntCounter,
    /// Upstream health changes observed.
    pub upstream_health_changes: IntCounter,
    /// Connections closed because a request header did not arrive in time.
    pub header_timeouts: IntCounter,
    /// TLS connections closed because their handshake did not complete in time.
    pub handshake_timeouts: IntCounter,
    /// Connections closed because a response write made no progress in time.
    pub write_timeouts: IntCounter,
    /// Connections refused at accept: the listener or the client's address was full.
    pub refused_connections: IntCounter,
    /// Share of requests served from cache (hit, stale or revalidated) since start.
    pub hit_ratio: Gauge,
    served_from_cache: AtomicU64,
    keyed_requests: AtomicU64,
}

impl ProxyMetrics {
    /// Records one request that reached the cache, and whether the cache answered it.
    pub fn record_lookup(&self, from_cache: bool) {
        let total = self.keyed_requests.fetch_add(1, Ordering::Relaxed) + 1;
        let hits = self
            .served_from_cache
            .fetch_add(u64::from(from_cache), Ordering::Relaxed)
            + u64::from(from_cache);
        self.hit_ratio.set(hits as f64 / total as f64);
    }
}

/// The process's proxy metrics, registered on first use.
pub fn proxy_metrics() -> &'static ProxyMetrics {
    static METRICS: OnceLock<ProxyMetrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let m = ProxyMetrics {
            requests: must(IntCounterVec::new(
                Opts::new("cascade_proxy_requests_total", "Requests answered, by status, cache state and protocol"),
                &["status", "cache", "protocol"],
            )),
            response_bytes: must(IntCounter::new("cascade_proxy_response_body_bytes_total", "Body bytes sent to clients")),
            upstream_latency: must(Histogram::with_opts(
                HistogramOpts::new("cascade_proxy_upstream_latency_seconds", "Time from choosing an upstream to its response header")
                    .buckets(vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
            )),
            collapsed: must(IntCounter::new(
                "cascade_proxy_collapsed_requests_total",
                "Requests that waited for a concurrent fetch of the same object instead of fetching",
            )),
                        upstream_health_changes: must(IntCounter::new(
                "cascade_proxy_upstream_health_changes_total",
                "Times an upstream was marked healthy or unhealthy",
            )),
            header_timeouts: must(IntCounter::new(
                "cascade_proxy_header_timeouts_total",
                "Client connections closed because a request header did not arrive within clients.header_timeout",
            )),
            handshake_timeouts: must(IntCounter::new(
                "cascade_proxy_tls_handshake_timeouts_total",
                "TLS client connections closed because the handshake did not complete within clients.handshake_timeout",
            )),
            write_timeouts: must(IntCounter::new(
                "cascade_proxy_write_timeouts_total",
                "Client connections closed because a response write made no progress within clients.write_timeout",
            )),
            refused_connections: must(IntCounter::new(
                "cascade_proxy_refused_connections_total",
                "Client connections refused at accept: clients.max_connections or clients.max_connections_per_address reached",
            )),
            hit_ratio: must(Gauge::new(
                "cascade_proxy_hit_ratio",
                "Share of keyed requests since start served from cache (hit, stale or revalidated)",
            )),
            served_from_cache: AtomicU64::new(0),
            keyed_requests: AtomicU64::new(0),
        };
        let _ = prometheus::register(Box::new(m.hit_ratio.clone()));
        // A name clash would be a programming error caught by the metrics test.
        let _ = prometheus::register(Box::new(m.requests.clone()));
        let _ = prometheus::register(Box::new(m.response_bytes.clone()));
        let _ = prometheus::register(Box::new(m.upstream_latency.clone()));
        let _ = prometheus::register(Box::new(m.collapsed.clone()));
        let _ = prometheus::register(Box::new(m.header_timeouts.clone()));
        let _ = prometheus::register(Box::new(m.handshake_timeouts.clone()));
        let _ = prometheus::register(Box::new(m.write_timeouts.clone()));
        let _ = prometheus::register(Box::new(m.refused_connections.clone()));
        let _ = prometheus::register(Box::new(m.upstream_health_changes.clone()));
        m
    })
}

/// What players report about their playback through CMCD (CTA-5004), summed over requests.
pub struct CmcdMetrics {
    /// Requests that carried CMCD, by object type (`none` when not given).
    pub requests: IntCounterVec,
    /// Requests saying the buffer ran dry since the previous one (`bs`).
    pub starvations: IntCounter,
    /// Requests made while starting up or seeking (`su`).
    pub startups: IntCounter,
    /// Buffer length reported (`bl`), seconds.
    pub buffer_length: Histogram,
    /// Throughput measured by players (`mtp`), kbit/s.
    pub throughput: Histogram,
    /// CMCD values dropped as malformed.
    pub rejected: IntCounter,
    /// `requests` resolved per label once: a labelled lookup per request costs a hash.
    by_object: Vec<(&'static str, IntCounter)>,
}

impl CmcdMetrics {
    /// Counts one request's CMCD.
    pub fn record(&self, cmcd: &cascade_cmcd::Cmcd) {
        let object = cmcd
            .object_type
            .map_or("none", cascade_cmcd::ObjectType::label);
        match self.by_object.iter().find(|(label, _)| *label == object) {
            Some((_, counter)) => counter.inc(),
            None => self.requests.with_label_values(&[object]).inc(),
        }
        if cmcd.buffer_starvation {
            self.starvations.inc();
        }
        if cmcd.startup {
            self.startups.inc();
        }
        if let Some(ms) = cmcd.buffer_length_ms {
            self.buffer_length.observe(ms as f64 / 1000.0);
        }
        if let Some(kbps) = cmcd.measured_throughput_kbps {
            self.throughput.observe(kbps as f64);
        }
        self.rejected.inc_by(u64::from(cmcd.rejected));
    }
}

/// The process's CMCD metrics, registered on first use.
pub fn cmcd_metrics() -> &'static CmcdMetrics {
    static METRICS: OnceLock<CmcdMetrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let requests = must(IntCounterVec::new(
            Opts::new("cascade_cmcd_requests_total", "Requests carrying CMCD, by object type"),
            &["object_type"],
        ));
        use cascade_cmcd::ObjectType::*;
        let by_object = [Video, Audio, Manifest, Init, Muxed, Caption, TimedText, Key, Other]
            .map(cascade_cmcd::ObjectType::label)
            .into_iter()
            .chain(["none"])
            .map(|label| (label, requests.with_label_values(&[label])))
            .collect();
        let m = CmcdMetrics {
            requests,
            by_object,
            starvations: must(IntCounter::new(
                "cascade_cmcd_buffer_starvations_total",
                "Requests whose player said its buffer ran dry since its previous request (CMCD bs)",
            )),
            startups: must(IntCounter::new(
                "cascade_cmcd_startup_requests_total",
                "Requests made while a player was starting up or seeking (CMCD su)",
            )),
            buffer_length: must(Histogram::with_opts(
                HistogramOpts::new("cascade_cmcd_buffer_length_seconds", "Buffer length players reported (CMCD bl)")
                    .buckets(vec![0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0]),
            )),
            throughput: must(Histogram::with_opts(
                HistogramOpts::new("cascade_cmcd_measured_throughput_kbps", "Throughput players measured (CMCD mtp), kbit/s")
                    .buckets(vec![500.0, 1_000.0, 2_000.0, 4_000.0, 8_000.0, 16_000.0, 32_000.0, 64_000.0, 128_000.0]),
            )),
            rejected: must(IntCounter::new(
                "cascade_cmcd_rejected_values_total",
                "CMCD values dropped as malformed (the rest of the request's CMCD is kept)",
            )),
        };
        for c in [
            Box::new(m.requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(m.starvations.clone()),
            Box::new(m.startups.clone()),
            Box::new(m.buffer_length.clone()),
            Box::new(m.throughput.clone()),
            Box::new(m.rejected.clone()),
        ] {
            let _ = prometheus::register(c);
        }
        m
    })
}

/// Metrics of the HTTP/3 listener (its requests are counted with the others, `protocol="h3"`).
pub struct Http3Metrics {
    /// QUIC handshakes by outcome (`ok`, `failed`).
    pub handshakes: IntCounterVec,
    /// QUIC connections open now.
    pub open_connections: IntGauge,
    /// Request streams refused before reaching the proxy, by reason.
    pub refused_streams: IntCounterVec,
}

/// The process's HTTP/3 metrics, registered on first use.
pub fn http3_metrics() -> &'static Http3Metrics {
    static METRICS: OnceLock<Http3Metrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let m = Http3Metrics {
            handshakes: must(IntCounterVec::new(
                Opts::new("cascade_http3_handshakes_total", "QUIC handshakes on the HTTP/3 listener, by outcome"),
                &["outcome"],
            )),
            open_connections: must(IntGauge::new("cascade_http3_open_connections", "QUIC connections open on the HTTP/3 listener")),
            refused_streams: must(IntCounterVec::new(
                Opts::new(
                    "cascade_http3_refused_streams_total",
                    "HTTP/3 request streams refused before the proxy (malformed, headers_too_large)",
                ),
                &["reason"],
            )),
        };
        let _ = prometheus::register(Box::new(m.handshakes.clone()));
        let _ = prometheus::register(Box::new(m.open_connections.clone()));
        let _ = prometheus::register(Box::new(m.refused_streams.clone()));
        m
    })
}

/// How one storage gauge is read.
type Reading = fn(&TieredStorage) -> u64;

/// Reads cache occupancy from the storage when Prometheus scrapes.
pub struct StorageCollector {
    storage: &'static TieredStorage,
    gauges: Vec<(IntGauge, Reading)>,
    descs: Vec<Desc>,
}

fn disk_stat(s: &TieredStorage, read: fn(&DiskStats) -> &AtomicU64) -> u64 {
    s.disk()
        .map_or(0, |d| read(d.stats()).load(Ordering::Relaxed))
}

impl StorageCollector {
    /// Registers a collector for `storage` (with disk-tier gauges when it has a disk tier).
    pub fn register(storage: &'static TieredStorage) {
        let mut readings: Vec<(&str, &str, Reading)> = vec![
            (
                "cascade_cache_bytes",
                "Bytes held by the memory cache",
                |s| s.weighted_size(),
            ),
            (
                "cascade_cache_capacity_bytes",
                "Configured memory cache capacity",
                |s| s.capacity(),
            ),
            (
                "cascade_cache_objects",
                "Complete objects in the memory cache",
                |s| s.entry_count(),
            ),
            (
                "cascade_cache_fills_in_progress",
                "Objects being filled from upstream",
                |s| s.fills_in_progress() as u64,
            ),
            (
                "cascade_cache_evictions_total",
                "Objects evicted from memory to make room (counter)",
                |s| s.stats().evictions.load(Ordering::Relaxed),
            ),
            (
                "cascade_cache_aborted_fills_total",
                "Fills whose upstream transfer failed (counter)",
                |s| s.stats().aborted_fills.load(Ordering::Relaxed),
            ),
        ];
        if storage.disk().is_some() {
            readings.extend([
                ("cascade_disk_cache_bytes", "Bytes held by the disk tier", (|s| s.disk().map_or(0, DiskTier::weighted_size)) as Reading),
                ("cascade_disk_cache_capacity_bytes", "Configured disk tier capacity", |s| s.disk().map_or(0, DiskTier::capacity)),
                ("cascade_disk_cache_objects", "Objects in the disk tier", |s| s.disk().map_or(0, DiskTier::entry_count)),
                ("cascade_disk_cache_hits_total", "Lookups answered from the disk tier (counter)", |s| disk_stat(s, |d| &d.hits)),
                ("cascade_disk_cache_writes_total", "Objects written to the disk tier (counter)", |s| disk_stat(s, |d| &d.writes)),
                ("cascade_disk_cache_write_errors_total", "Disk tier writes that failed, e.g. a full disk (counter)", |s| disk_stat(s, |d| &d.write_errors)),
                ("cascade_disk_cache_skipped_writes_total", "Objects not written because the writer was behind or admission was paused (counter)", |s| disk_stat(s, |d| &d.skipped_writes)),
                ("cascade_disk_cache_corrupt_total", "Disk tier files found damaged and dropped (counter)", |s| disk_stat(s, |d| &d.corrupt)),
                ("cascade_disk_cache_evictions_total", "Objects evicted from the disk tier to stay within capacity (counter)", |s| disk_stat(s, |d| &d.evictions)),
            ]);
        }
        let gauges: Vec<(IntGauge, Reading)> = readings
            .into_iter()
            .map(|(name, help, read)| (must(IntGauge::new(name, help)), read))
            .collect();
        let descs = gauges
            .iter()
            .flat_map(|(g, _)| g.desc().into_iter().cloned())
            .collect();
        let collector = Self {
            storage,
            gauges,
            descs,
        };
        let _ = prometheus::register(Box::new(collector));
    }
}

impl Collector for StorageCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.gauges
            .iter()
            .flat_map(|(gauge, read)| {
                gauge.set(i64::try_from(read(self.storage)).unwrap_or(i64::MAX));
                gauge.collect()
            })
            .collect()
    }
}
