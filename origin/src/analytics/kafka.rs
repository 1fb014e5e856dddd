//! The origin's consumer of the analytics topic. Each message is one edge's batch; it is
//! stored (once: the partition and offset name it) before its offset is committed, so a
//! restart resumes after the last stored batch and loses none. The topic is created on first
//! start if the broker lacks it.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::types::RDKafkaErrorCode;

use cascade_analytics::record::decode_batch;
use cascade_config::KafkaConfig;
use cascade_service::clock::now_ms_i64;

use crate::analytics::Analytics;
use crate::analytics::metrics::analytics_metrics;

/// With nothing to read for this long, the consumer has caught up with the topic.
const IDLE: Duration = Duration::from_millis(500);

fn client_config(kafka: &KafkaConfig) -> ClientConfig {
    let mut config = ClientConfig::new();
    for (key, value) in kafka.client_properties() {
        config.set(key, value);
    }
    config
}

/// Consumes until the process ends, reconnecting after failures.
pub async fn consume(analytics: Arc<Analytics>, kafka: KafkaConfig, group: String) {
    loop {
        if let Err(e) = run(&analytics, &kafka, &group).await {
            tracing::warn!(error = %e, topic = %kafka.analytics_topic, "analytics consumer failed; restarting");
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

async fn ensure_topic(kafka: &KafkaConfig) -> Result<(), String> {
    let admin: AdminClient<DefaultClientContext> = client_config(kafka)
        .create()
        .map_err(|e| format!("kafka admin client: {e}"))?;
    let topic = NewTopic::new(
        &kafka.analytics_topic,
        i32::try_from(kafka.partitions).unwrap_or(1),
        TopicReplication::Fixed(i32::from(kafka.replication)),
    );
    let results = admin
        .create_topics(
            [&topic],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .map_err(|e| format!("creating {}: {e}", kafka.analytics_topic))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => return Err(format!("creating {name}: {code}")),
        }
    }
    Ok(())
}

async fn run(analytics: &Analytics, kafka: &KafkaConfig, group: &str) -> Result<(), String> {
    ensure_topic(kafka).await?;
    let consumer: StreamConsumer = client_config(kafka)
        .set("group.id", group)
        .set("client.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "1000")
        .set(
            "fetch.wait.max.ms",
            kafka.fetch_wait.0.as_millis().to_string(),
        )
        .set("topic.metadata.refresh.interval.ms", "5000")
        .create()
        .map_err(|e| format!("kafka consumer: {e}"))?;
    consumer
        .subscribe(&[&kafka.analytics_topic])
        .map_err(|e| format!("subscribing to {}: {e}", kafka.analytics_topic))?;
    tracing::info!(topic = %kafka.analytics_topic, group, "consuming viewer analytics");
    loop {
        let message = match tokio::time::timeout(IDLE, consumer.recv()).await {
            Err(_) => {
                analytics.arrived_until(now_ms_i64());
                continue;
            }
            Ok(Err(e)) => return Err(format!("reading {}: {e}", kafka.analytics_topic)),
            Ok(Ok(message)) => message,
        };
        let (records, rejected) = decode_batch(message.payload().unwrap_or_default());
        analytics_metrics()
            .records
            .with_label_values(&["rejected"])
            .inc_by(rejected as u64);
        let batch = format!(
            "kafka/{}/{}/{}",
            message.topic(),
            message.partition(),
            message.offset()
        );
        let mut wait = Duration::from_millis(200);
        while let Err(e) = analytics.ingest(&records, Some(&batch)).await {
            tracing::warn!(error = %e, "analytics batch not stored; retrying before committing");
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(5));
        }
        if let Some(latest) = records.iter().map(|r| r.at_ms).max() {
            analytics.arrived_until(latest);
        }
        consumer
            .commit_message(&message, CommitMode::Async)
            .map_err(|e| format!("committing {batch}: {e}"))?;
    }
}
