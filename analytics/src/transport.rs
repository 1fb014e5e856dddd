//! The edge's analytics sender. The request path hands each record to [`Collector::offer`],
//! which never waits: records queue in a bounded buffer and, when it is full, are dropped and
//! counted. A thread of its own batches them (up to `batch` records or `flush_interval`) and
//! delivers each batch as JSON lines, to Kafka (`kafka.analytics_topic`, one message per batch,
//! keyed by edge) or to the origin's collector (`POST /api/v1/analytics/records`). A batch
//! that is not acknowledged is retried with backoff while new records wait in the buffer.

use std::sync::OnceLock;
use std::time::Duration;

use prometheus::{IntCounter, IntCounterVec, Opts};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::sync::mpsc;

use cascade_config::{EdgeAnalyticsConfig, KafkaConfig};
use cascade_service::metrics::must;

use crate::record::{Record, encode_batch};

/// The collector's path on the origin.
pub const COLLECTOR_PATH: &str = "/api/v1/analytics/records";

/// Longest wait between retries of a batch.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

struct TransportMetrics {
    records: IntCounterVec,
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
        TransportMetrics { records, failures }
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

/// The request path's handle on the sender.
pub struct Collector {
    queue: mpsc::Sender<Record>,
    edge: String,
    salt: Vec<u8>,
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
        let (queue, receiver) = mpsc::channel(config.buffer);
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
                runtime.block_on(send_batches(receiver, destination, ids, batch, flush));
            })
            .map_err(|e| format!("analytics sender thread: {e}"))?;
        metrics();
        Ok(Some(Self { queue, edge, salt }))
    }

    /// Queues a record, or drops and counts it when the buffer is full. Never waits.
    pub fn offer(&self, record: Record) {
        let m = metrics();
        match self.queue.try_send(record) {
            Ok(()) => m.records.with_label_values(&["queued"]).inc(),
            Err(_) => m.records.with_label_values(&["dropped"]).inc(),
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

async fn send_batches(
    mut receiver: mpsc::Receiver<Record>,
    destination: Destination,
    mut ids: BatchIds,
    batch: usize,
    flush: Duration,
) {
    let m = metrics();
    let mut records = Vec::with_capacity(batch);
    loop {
        let Some(first) = receiver.recv().await else {
            return;
        };
        records.push(first);
        let deadline = tokio::time::Instant::now() + flush;
        while records.len() < batch {
            tokio::select! {
                next = receiver.recv() => match next {
                    Some(r) => records.push(r),
                    None => break,
                },
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        let payload = encode_batch(&records);
        let id = ids.next();
        let mut backoff = Duration::from_millis(200);
        loop {
            match destination.deliver(payload.clone(), &id).await {
                Ok(()) => {
                    m.records
                        .with_label_values(&["sent"])
                        .inc_by(records.len() as u64);
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
        records.clear();
    }
}
