//! The edge's analytics sender. The request path hands each record to [`Collector::offer`],
//! which never waits, locks or wakes anybody: records go into a bounded lock-free queue and,
//! when it is full, are dropped and counted. A thread of its own takes what has accumulated
//! every [`POLL`] (a wake-up per record, or a lock the sender holds while draining, cost more
//! than building the record), batches it (up to `batch` records or `flush_interval`) and
//! delivers each batch as JSON lines, to Kafka (`kafka.analytics_topic`, one message per batch,
//! keyed by edge) or to the origin's collector (`POST /api/v1/analytics/records`). A batch
//! that is not acknowledged is retried with backoff while new records wait in the buffer.

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crossbeam_queue::SegQueue;
use prometheus::{IntCounter, IntCounterVec, Opts};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

use cascade_config::{EdgeAnalyticsConfig, KafkaConfig};
use cascade_geoip::GeoDatabase;
use cascade_service::metrics::must;

use crate::record::{Record, encode_batch};

/// The collector's path on the origin.
pub const COLLECTOR_PATH: &str = "/api/v1/analytics/records";

/// How often the sender takes what has accumulated.
pub const POLL: Duration = Duration::from_millis(50);

/// How often the GeoIP database's file is checked for a new version.
const GEOIP_RELOAD_EVERY: Duration = Duration::from_secs(5);

/// Longest wait between retries of a batch.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

struct TransportMetrics {
    queued: IntCounter,
    dropped: IntCounter,
    sent: IntCounter,
    failures: IntCounter,
}

fn metrics() -> &'static TransportMetrics {
    static METRICS: OnceLock<TransportMetrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let records = must(IntCounterVec::new(
            Opts::new(
                "cascade_analytics_records_total",
                "Analytics records by outcome: queued, dropped (buffer full), sent (acknowledged)",
            ),
            &["outcome"],
        ));
        let failures = must(IntCounter::new(
            "cascade_analytics_batch_failures_total",
            "Analytics batches the destination did not acknowledge (each is retried)",
        ));
        let _ = prometheus::register(Box::new(records.clone()));
        let _ = prometheus::register(Box::new(failures.clone()));
        // Resolved once: a labelled lookup per request costs a hash and a lock.
        TransportMetrics {
            queued: records.with_label_values(&["queued"]),
            dropped: records.with_label_values(&["dropped"]),
            sent: records.with_label_values(&["sent"]),
            failures,
        }
    })
}

/// Where batches go.
enum Destination {
    Kafka {
        producer: FutureProducer,
        topic: String,
        key: String,
    },
    Collector {
        url: String,
        token: String,
    },
}

/// Names batches uniquely across restarts, so the origin stores a retried batch once.
struct BatchIds {
    prefix: String,
    next: u64,
}

impl BatchIds {
    fn next(&mut self) -> String {
        self.next += 1;
        format!("{}-{}", self.prefix, self.next)
    }
}

impl Destination {
    async fn deliver(&self, payload: Vec<u8>, batch: &str) -> Result<(), String> {
        match self {
            Self::Kafka {
                producer,
                topic,
                key,
            } => {
                let record = FutureRecord::to(topic).key(key).payload(&payload);
                producer
                    .send(record, Duration::from_secs(10))
                    .await
                    .map(|_| ())
                    .map_err(|(e, _)| format!("kafka {topic}: {e}"))
            }
            Self::Collector { url, token } => {
                let answer = cascade_service::http_client::send_typed(
                    url,
                    hyper::Method::POST,
                    &format!("{COLLECTOR_PATH}?batch={batch}"),
                    Some(token),
                    Some(("application/x-ndjson", payload)),
                    Duration::from_secs(10),
                )
                .await?;
                if answer.is_success() {
                    Ok(())
                } else {
                    Err(format!(
                        "{url}{COLLECTOR_PATH}: {} {}",
                        answer.status,
                        answer.text()
                    ))
                }
            }
        }
    }
}

/// Records waiting for the sender, at most `capacity` of them.
struct Buffer {
    records: SegQueue<Record>,
    len: AtomicUsize,
    capacity: usize,
}

impl Buffer {
    /// Takes `record` unless the buffer is full.
    fn push(&self, record: Record) -> bool {
        if self.len.fetch_add(1, Ordering::AcqRel) >= self.capacity {
            self.len.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        self.records.push(record);
        true
    }

    /// Moves everything queued into `into`.
    fn drain_into(&self, into: &mut Vec<Record>) {
        let mut taken = 0;
        while let Some(r) = self.records.pop() {
            into.push(r);
            taken += 1;
        }
        self.len.fetch_sub(taken, Ordering::AcqRel);
    }
}

/// The request path's handle on the sender.
pub struct Collector {
    buffer: Arc<Buffer>,
    edge: String,
    salt: Vec<u8>,
    geo: Option<Arc<GeoDatabase>>,
}

impl Collector {
    /// Starts the sender for `edge`, or `None` when records have nowhere to go (no Kafka
    /// brokers and no `collector_url`) or analytics are off.
    pub fn start(
        config: &EdgeAnalyticsConfig,
        kafka: &KafkaConfig,
        edge: String,
    ) -> Result<Option<Self>, String> {
        if !config.enabled {
            return Ok(None);
        }
        let destination = if !kafka.is_embedded() {
            let mut client = ClientConfig::new();
            for (key, value) in kafka.client_properties() {
                client.set(key, value);
            }
            let producer: FutureProducer = client
                .set("enable.idempotence", "true")
                .set("acks", "all")
                .set("linger.ms", "20")
                .set("message.timeout.ms", "30000")
                .set("message.max.bytes", "4000000")
                .create()
                .map_err(|e| format!("kafka producer for analytics: {e}"))?;
            Destination::Kafka {
                producer,
                topic: kafka.analytics_topic.clone(),
                key: edge.clone(),
            }
        } else if !config.collector_url.is_empty() {
            Destination::Collector {
                url: config.collector_url.trim_end_matches('/').to_owned(),
                token: config.collector_token.expose().to_owned(),
            }
        } else {
            return Ok(None);
        };
        let salt = if config.session_salt.is_empty() {
            random_salt()
        } else {
            config.session_salt.expose().as_bytes().to_vec()
        };
        let geo = match config.geoip_database.as_str() {
            "" => None,
            path => Some(Arc::new(
                GeoDatabase::open(std::path::Path::new(path))
                    .map_err(|e| format!("geoip_database: {e}"))?,
            )),
        };
        let reload = geo.clone();
        let buffer = Arc::new(Buffer {
            records: SegQueue::new(),
            len: AtomicUsize::new(0),
            capacity: config.buffer,
        });
        let drained = Arc::clone(&buffer);
        let edge_id = edge.clone();
        let batch = config.batch;
        let flush = config.flush_interval.0;
        std::thread::Builder::new()
            .name("analytics-sender".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::error!(error = %e, "analytics sender has no runtime; records will be dropped");
                        return;
                    }
                };
                let ids = BatchIds {
                    prefix: format!("{edge_id}-{}", cascade_service::clock::now_ms()),
                    next: 0,
                };
                if let Some(geo) = reload {
                    runtime.spawn(reload_when_changed(geo));
                }
                runtime.block_on(send_batches(drained, destination, ids, batch, flush));
            })
            .map_err(|e| format!("analytics sender thread: {e}"))?;
        metrics();
        Ok(Some(Self {
            buffer,
            edge,
            salt,
            geo,
        }))
    }

    /// The viewer's `country/city`, when a GeoIP database is configured and knows `ip`.
    pub fn locate(&self, ip: Option<IpAddr>) -> Option<String> {
        self.geo.as_ref()?.lookup(ip?)?.label()
    }

    /// Queues a record, or drops and counts it when the buffer is full. Never waits.
    pub fn offer(&self, record: Record) {
        let m = metrics();
        if self.buffer.push(record) {
            m.queued.inc();
        } else {
            m.dropped.inc();
        }
    }

    /// This edge's id, as records carry it.
    pub fn edge(&self) -> &str {
        &self.edge
    }

    /// The key of session hashes.
    pub fn salt(&self) -> &[u8] {
        &self.salt
    }
}

/// A per-process salt from the OS's randomness.
fn random_salt() -> Vec<u8> {
    let mut salt = vec![0u8; 32];
    if getrandom::fill(&mut salt).is_err() {
        // No randomness: hashes stay consistent but are keyed by the process id alone.
        salt = std::process::id().to_le_bytes().to_vec();
    }
    salt
}

/// Re-reads the GeoIP database when its file changes; a bad replacement keeps the last good
/// one.
async fn reload_when_changed(geo: Arc<GeoDatabase>) {
    loop {
        tokio::time::sleep(GEOIP_RELOAD_EVERY).await;
        match geo.reload_if_changed() {
            Ok(true) => tracing::info!("GeoIP database reloaded"),
            Ok(false) => {}
            Err(e) => {
                tracing::error!(error = %e, "GeoIP database not reloaded; the previous one serves")
            }
        }
    }
}

async fn send_batches(
    buffer: Arc<Buffer>,
    destination: Destination,
    mut ids: BatchIds,
    batch: usize,
    flush: Duration,
) {
    let m = metrics();
    let mut pending: Vec<Record> = Vec::new();
    let mut oldest = Instant::now();
    loop {
        tokio::time::sleep(POLL).await;
        if pending.is_empty() {
            oldest = Instant::now();
        }
        buffer.drain_into(&mut pending);
        while pending.len() >= batch || (!pending.is_empty() && oldest.elapsed() >= flush) {
            let records: Vec<Record> = pending.drain(..pending.len().min(batch)).collect();
            let payload = encode_batch(&records);
            let id = ids.next();
            let mut backoff = Duration::from_millis(200);
            loop {
                match destination.deliver(payload.clone(), &id).await {
                    Ok(()) => {
                        m.sent.inc_by(records.len() as u64);
                        break;
                    }
                    Err(e) => {
                        m.failures.inc();
                        tracing::warn!(error = %e, records = records.len(), "analytics batch not delivered; retrying");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
            }
            oldest = Instant::now();
        }
    }
}
