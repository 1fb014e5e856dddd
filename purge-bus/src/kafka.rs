//! The bus's Kafka side (rdkafka): it publishes purges with an idempotent producer
//! (`acks=all`) to the purge topic, keyed by host so one host's purges stay in order, keeps the
//! topics in place, and reads nodes' reports from the acks topic.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use cascade_config::KafkaConfig;
use rdkafka::Message;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use crate::membership::MEMBER_TIMEOUT;
use crate::transport::{PurgeTransport, TransportError};
use cascade_purge_follower::kafka::{QUERY_TIMEOUT, client_config, millis};
use cascade_purge_follower::message::PurgeMessage;
use cascade_purge_follower::report::NodeReport;
use cascade_purge_follower::request::PurgeKind;
use cascade_service::clock::now_ms;

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

#[cfg(test)]
mod tests {
    use super::*;
    use cascade_purge_follower::request::{PurgeAction, PurgeRequest};

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
