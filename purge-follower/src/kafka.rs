//! The Kafka side of a node: it consumes the purge topic with its own group id (every node sees
//! every purge), applies each purge before storing its offset (so a crash replays rather than
//! loses it; purges are idempotent), and publishes its reports to the acks topic.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use cascade_config::KafkaConfig;
use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use crate::catchup::CatchUp;
use crate::message::PurgeMessage;
use crate::node::{Node, ReportSink};
use crate::report::NodeReport;

/// How often a quiet consumer checks that it still has partitions assigned.
const ASSIGNMENT_CHECK: Duration = Duration::from_secs(2);

/// A consumer without partitions for this long is replaced.
const UNASSIGNED_LIMIT: Duration = Duration::from_secs(15);

/// How long metadata and offset queries may take before they are retried.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// Base client properties: brokers, security and SASL from `[kafka]`.
pub fn client_config(kafka: &KafkaConfig) -> ClientConfig {
    let mut config = ClientConfig::new();
    for (key, value) in kafka.client_properties() {
        config.set(key, value);
    }
    // Notice recreated topics and moved partitions within seconds, not librdkafka's 5 minutes.
    config.set("topic.metadata.refresh.interval.ms", "5000");
    config
}

/// A duration as librdkafka's millisecond properties take it.
pub fn millis(d: Duration) -> String {
    d.as_millis().to_string()
}

/// A node's producer for reports on the acks topic.
pub struct KafkaReports {
    producer: FutureProducer,
    topic: String,
}

impl KafkaReports {
    /// A producer for `[kafka]`'s acks topic.
    pub fn new(kafka: &KafkaConfig) -> Result<Self, String> {
        let producer: FutureProducer = client_config(kafka)
            .set("linger.ms", "0")
            .set("message.timeout.ms", "30000")
            .create()
            .map_err(|e| format!("kafka producer for acks: {e}"))?;
        Ok(Self {
            producer,
            topic: kafka.ack_topic.clone(),
        })
    }
}

#[async_trait]
impl ReportSink for KafkaReports {
    async fn send(&self, reports: Vec<NodeReport>) {
        for report in reports {
            let payload = report.encode();
            let record = FutureRecord::to(&self.topic)
                .key(report.node())
                .payload(&payload);
            // Delivery is awaited off the purge path so a slow acks topic never holds up
            // applying purges; a lost report is repeated by the next heartbeats.
            match self.producer.send_result(record) {
                Ok(delivery) => {
                    tokio::spawn(async move {
                        if let Ok(Err((e, _))) = delivery.await {
                            tracing::warn!(error = %e, "a purge report was not delivered");
                        }
                    });
                }
                Err((e, _)) => tracing::warn!(error = %e, "could not queue a purge report"),
            }
        }
    }
}

/// The committed (or earliest) and end offset of every partition of `topic`: blocking queries,
/// run off the async threads.
fn catch_up_targets(consumer: &StreamConsumer, topic: &str) -> Result<CatchUp, String> {
    let metadata = consumer
        .fetch_metadata(Some(topic), QUERY_TIMEOUT)
        .map_err(|e| format!("metadata for {topic}: {e}"))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .map(|t| t.partitions().iter().map(|p| p.id()).collect())
        .unwrap_or_default();
    if partitions.is_empty() {
        return Err(format!("topic {topic} does not exist (yet)"));
    }
    let mut list = TopicPartitionList::new();
    for p in &partitions {
        list.add_partition(topic, *p);
    }
    let committed = consumer
        .committed_offsets(list, QUERY_TIMEOUT)
        .map_err(|e| format!("committed offsets on {topic}: {e}"))?;
    let mut ends = Vec::new();
    let mut starts = Vec::new();
    for p in &partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, *p, QUERY_TIMEOUT)
            .map_err(|e| format!("offsets of {topic}/{p}: {e}"))?;
        ends.push((*p, high));
        let start = match committed.find_partition(topic, *p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => o.max(low),
            _ => low,
        };
        starts.push((*p, start));
    }
    let mut catch_up = CatchUp::new(ends);
    for (p, start) in starts {
        catch_up.advance(p, start);
    }
    Ok(catch_up)
}

/// Follows the purge topic as `node`: applies every purge through `events`, then stores its
/// offset (committed every 100 ms and on close). Runs until dropped.
pub async fn follow_purges(kafka: KafkaConfig, node_id: String, node: Arc<Node>) {
    let mut delay = Duration::from_millis(200);
    loop {
        let Err(e) = consume(&kafka, &node_id, &node).await;
        tracing::warn!(error = %e, retry_in = ?delay, "following the purge topic");
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// Consumes until something needs a fresh consumer; returns only with why.
async fn consume(
    kafka: &KafkaConfig,
    node_id: &str,
    node: &Arc<Node>,
) -> Result<Infallible, String> {
    let consumer: Arc<StreamConsumer> = Arc::new(
        client_config(kafka)
            .set("group.id", node_id)
            .set("client.id", node_id)
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "true")
            .set("enable.auto.offset.store", "false")
            .set("auto.commit.interval.ms", "100")
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "1000")
            .set("fetch.wait.max.ms", millis(kafka.fetch_wait.0))
            .create()
            .map_err(|e| format!("kafka consumer: {e}"))?,
    );
    let topic = kafka.purge_topic.clone();
    let mut catch_up = if node.is_caught_up() {
        None
    } else {
        let (c, t) = (Arc::clone(&consumer), topic.clone());
        let targets = tokio::task::spawn_blocking(move || catch_up_targets(&c, &t))
            .await
            .map_err(|e| format!("offset query task: {e}"))??;
        tracing::info!(
            behind = targets.behind(),
            "catching up with the purge topic"
        );
        Some(targets)
    };
    if catch_up.as_ref().is_some_and(CatchUp::is_caught_up) {
        node.caught_up();
        catch_up = None;
    }
    consumer
        .subscribe(&[&topic])
        .map_err(|e| format!("subscribing to {topic}: {e}"))?;
    let mut unassigned_since: Option<Instant> = None;
    loop {
        let message = match tokio::time::timeout(ASSIGNMENT_CHECK, consumer.recv()).await {
            Ok(Ok(m)) => m,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "reading the purge topic");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            Err(_) => {
                // Quiet topic, or a consumer that never got its partitions back after the
                // cluster restarted: the second needs a fresh consumer (offsets are committed).
                let assigned = consumer.assignment().map(|a| a.count()).unwrap_or(0);
                if assigned > 0 {
                    unassigned_since = None;
                } else if unassigned_since.get_or_insert_with(Instant::now).elapsed()
                    > UNASSIGNED_LIMIT
                {
                    return Err(format!(
                        "no partition of {topic} assigned for {UNASSIGNED_LIMIT:?}; reconnecting"
                    ));
                }
                continue;
            }
        };
        match message.payload().map(PurgeMessage::decode) {
            Some(Ok(purge)) => {
                if let Some(report) = node.apply(&purge) {
                    node.report(vec![report]).await;
                }
            }
            Some(Err(e)) => {
                node.skipped();
                tracing::warn!(
                    partition = message.partition(),
                    offset = message.offset(),
                    error = %e,
                    "skipping a garbled message on the purge topic"
                );
            }
            None => {
                node.skipped();
                tracing::warn!(
                    partition = message.partition(),
                    offset = message.offset(),
                    "skipping an empty message on the purge topic"
                );
            }
        }
        if let Err(e) = consumer.store_offset_from_message(&message) {
            tracing::warn!(error = %e, "storing the purge topic offset");
        }
        if let Some(c) = catch_up.as_mut() {
            c.advance(message.partition(), message.offset() + 1);
            if c.is_caught_up() {
                node.caught_up();
                catch_up = None;
            }
        }
    }
}
