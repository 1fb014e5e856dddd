//! The Kafka side of the bus (rdkafka). The bus publishes purges with an idempotent producer
//! (`acks=all`) to the purge topic, keyed by host so one host's purges stay in order, and reads
//! nodes' reports from the acks topic. Nodes consume the purge topic with their own group id
//! (every node sees every purge), apply each purge before storing its offset (so a crash
//! replays rather than loses it; purges are idempotent), and publish reports to the acks topic.

use std::convert::Infallible;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use cascade_config::KafkaConfig;
use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use crate::catchup::CatchUp;
use crate::membership::MEMBER_TIMEOUT;
use crate::node::{Node, ReportSink};
use crate::report::NodeReport;
use crate::request::PurgeKind;
use crate::transport::{PurgeMessage, PurgeTransport, TransportError};

/// How often a quiet consumer checks that it still has partitions assigned.
const ASSIGNMENT_CHECK: Duration = Duration::from_secs(2);

/// A consumer without partitions for this long is replaced.
const UNASSIGNED_LIMIT: Duration = Duration::from_secs(15);

/// How long metadata and offset queries may take before they are retried.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

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

fn millis(d: Duration) -> String {
    d.as_millis().to_string()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The message key of a purge: the host its first target names, `*` for tag and all purges.
pub fn partition_key(message: &PurgeMessage) -> String {
    let request = &message.request;
    let Some(first) = request.targets.first() else {
        return "*".into();
    };
    match request.kind {
        PurgeKind::Host => first.to_ascii_lowercase(),
        PurgeKind::Url | PurgeKind::Prefix => {
            let rest = first
                .strip_prefix("https://")
                .or_else(|| first.strip_prefix("http://"))
                .unwrap_or(first);
            rest.split(['/', '?'])
                .next()
                .unwrap_or("*")
                .to_ascii_lowercase()
        }
        PurgeKind::Tag | PurgeKind::All => "*".into(),
    }
}

/// Creates the purge and acks topics if they do not exist. Retried by the caller until the
/// brokers answer.
pub async fn ensure_topics(kafka: &KafkaConfig) -> Result<(), String> {
    let admin: AdminClient<DefaultClientContext> = client_config(kafka)
        .create()
        .map_err(|e| format!("kafka admin client: {e}"))?;
    let options = AdminOptions::new()
        .operation_timeout(Some(QUERY_TIMEOUT))
        .request_timeout(Some(QUERY_TIMEOUT));
    let partitions = i32::try_from(kafka.partitions).unwrap_or(i32::MAX);
    let replication = i32::from(kafka.replication);
    let topics = [&kafka.purge_topic, &kafka.ack_topic]
        .map(|topic| NewTopic::new(topic, partitions, TopicReplication::Fixed(replication)));
    let results = admin
        .create_topics(topics.iter(), &options)
        .await
        .map_err(|e| format!("creating topics: {e}"))?;
    for result in results {
        match result {
            Ok(topic) => tracing::info!(topic, partitions, replication, "created topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(format!("creating topic {topic}: {code}")),
        }
    }
    Ok(())
}

/// Keeps the topics in place: creates them at start-up and again if a cluster lost them,
/// running `created` once they first exist. Runs until dropped.
pub async fn keep_topics(kafka: KafkaConfig, created: impl FnOnce()) {
    let mut created = Some(created);
    loop {
        let pause = match ensure_topics(&kafka).await {
            Ok(()) => {
                if let Some(created) = created.take() {
                    created();
                }
                Duration::from_secs(10)
            }
            Err(e) => {
                tracing::warn!(error = %e, "Kafka topics; retrying");
                Duration::from_secs(2)
            }
        };
        tokio::time::sleep(pause).await;
    }
}

/// The bus's producer.
pub struct KafkaTransport {
    kafka: KafkaConfig,
    producer: Mutex<Arc<FutureProducer>>,
    timeout: Duration,
}

fn purge_producer(kafka: &KafkaConfig) -> Result<FutureProducer, String> {
    client_config(kafka)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "0")
        .set("message.timeout.ms", millis(kafka.publish_timeout.0))
        .create()
        .map_err(|e| format!("kafka producer: {e}"))
}

impl KafkaTransport {
    /// An idempotent, `acks=all` producer for `[kafka]`; a purge not written within
    /// `publish_timeout` fails (and the API answers 503).
    pub fn new(kafka: &KafkaConfig) -> Result<Self, String> {
        Ok(Self {
            producer: Mutex::new(Arc::new(purge_producer(kafka)?)),
            kafka: kafka.clone(),
            timeout: kafka.publish_timeout.0,
        })
    }

    fn producer(&self) -> Arc<FutureProducer> {
        Arc::clone(&self.producer.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Starts a new producer after a failed publish. An idempotent producer can wedge for good
    /// when the cluster lost its producer state (a broker restarted without its data): every
    /// later purge would time out. A fresh producer registers again; the cost is one
    /// reconnection after a failure, which only happens while the cluster is in trouble.
    fn replace_after_failure(&self, failed: &Arc<FutureProducer>) {
        if let Some((code, why)) = failed.client().fatal_error() {
            tracing::warn!(?code, %why, "the Kafka producer failed for good");
        }
        match purge_producer(&self.kafka) {
            Ok(fresh) => {
                let mut current = self.producer.lock().unwrap_or_else(PoisonError::into_inner);
                if Arc::ptr_eq(&current, failed) {
                    *current = Arc::new(fresh);
                }
            }
            Err(e) => tracing::error!(error = %e, "could not start a new Kafka producer"),
        }
    }
}

#[async_trait]
impl PurgeTransport for KafkaTransport {
    async fn publish(&self, message: &PurgeMessage) -> Result<(), TransportError> {
        let key = partition_key(message);
        let payload = message.encode();
        let producer = self.producer();
        let record = FutureRecord::to(&self.kafka.purge_topic)
            .key(&key)
            .payload(&payload);
        let sent = producer.send(record, self.timeout).await;
        match sent {
            Ok(_) => Ok(()),
            Err((e, _)) => {
                self.replace_after_failure(&producer);
                Err(TransportError(format!("kafka: {e}")))
            }
        }
    }
}

impl Drop for KafkaTransport {
    fn drop(&mut self) {
        let _ = self.producer().flush(Duration::from_secs(2));
    }
}

/// Reads node reports from the acks topic and hands each to `on_report`. Runs until dropped.
/// Heartbeats older than the membership timeout (history read after a restart) are skipped.
pub async fn follow_reports(
    kafka: KafkaConfig,
    group: String,
    on_report: impl Fn(NodeReport) + Send + Sync,
) {
    loop {
        let consumer: StreamConsumer = match client_config(&kafka)
            .set("group.id", &group)
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "true")
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "1000")
            .set("fetch.wait.max.ms", millis(kafka.fetch_wait.0))
            .create()
        {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "kafka consumer for acks; retrying");
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
        };
        if let Err(e) = consumer.subscribe(&[&kafka.ack_topic]) {
            tracing::error!(error = %e, topic = %kafka.ack_topic, "subscribing to acks; retrying");
            tokio::time::sleep(Duration::from_secs(2)).await;
            continue;
        }
        loop {
            match consumer.recv().await {
                Ok(message) => {
                    let Some(payload) = message.payload() else {
                        continue;
                    };
                    match NodeReport::decode(payload) {
                        Ok(NodeReport::Heartbeat { at_ms, .. })
                            if now_ms().saturating_sub(at_ms)
                                > u64::try_from(MEMBER_TIMEOUT.as_millis()).unwrap_or(0) => {}
                        Ok(report) => on_report(report),
                        Err(e) => tracing::warn!(
                            partition = message.partition(),
                            offset = message.offset(),
                            error = %e,
                            "skipping a garbled message on the acks topic"
                        ),
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "reading acks");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::{PurgeAction, PurgeRequest};

    fn message(kind: PurgeKind, targets: &[&str]) -> PurgeMessage {
        PurgeMessage {
            id: "p".into(),
            request: PurgeRequest {
                kind,
                targets: targets.iter().map(|t| (*t).to_owned()).collect(),
                action: PurgeAction::Delete,
                confirm_all: kind == PurgeKind::All,
            },
            issued_ms: 1,
        }
    }

    #[test]
    fn purges_are_keyed_by_the_host_they_name() {
        assert_eq!(
            partition_key(&message(PurgeKind::Url, &["https://CDN.example/a.m3u8"])),
            "cdn.example"
        );
        assert_eq!(
            partition_key(&message(PurgeKind::Prefix, &["cdn.example:8443/live/"])),
            "cdn.example:8443"
        );
        assert_eq!(
            partition_key(&message(PurgeKind::Host, &["Cdn.Example"])),
            "cdn.example"
        );
        assert_eq!(partition_key(&message(PurgeKind::Tag, &["stream/1"])), "*");
        assert_eq!(partition_key(&message(PurgeKind::All, &[])), "*");
    }
}
