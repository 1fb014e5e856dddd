//! The harness's broker works as Kafka does for the purge bus: every consumer group gets every
//! message, and a group resumes from its committed offset.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use cascade_testkit::Tansu;
use rdkafka::Message;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};

const TOPIC: &str = "harness";

async fn produce(broker: &Tansu, ids: std::ops::Range<u32>) {
    let producer: FutureProducer = broker
        .client_config()
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .create()
        .unwrap();
    for id in ids {
        let payload = format!("message-{id}");
        let key = format!("host-{}", id % 4);
        producer
            .send(
                FutureRecord::to(TOPIC).key(&key).payload(&payload),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
}

/// Joins `group`, reads exactly `count` messages, commits, and checks nothing more arrives.
async fn consume(broker: &Tansu, group: &str, count: usize) -> BTreeSet<String> {
    let consumer: StreamConsumer = broker
        .client_config()
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "6000")
        .create()
        .unwrap();
    consumer.subscribe(&[TOPIC]).unwrap();
    let mut seen = BTreeSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while seen.len() < count {
        let message = tokio::time::timeout_at(deadline, consumer.recv())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{group}: only {} of {count} messages: {seen:?}\nbroker:\n{}",
                    seen.len(),
                    broker.log_tail()
                )
            })
            .unwrap();
        let payload = String::from_utf8(message.payload().unwrap().to_vec()).unwrap();
        assert!(
            seen.insert(payload.clone()),
            "{group}: {payload} delivered twice"
        );
    }
    consumer.commit_consumer_state(CommitMode::Sync).unwrap();
    let extra = tokio::time::timeout(Duration::from_millis(1500), consumer.recv()).await;
    assert!(extra.is_err(), "{group}: got more than {count} messages");
    seen
}

fn names(ids: std::ops::Range<u32>) -> BTreeSet<String> {
    ids.map(|id| format!("message-{id}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_group_gets_every_message_and_resumes_from_its_committed_offset() {
    let broker = Tansu::start().unwrap();
    broker.create_topic(TOPIC, 3).await.unwrap();

    produce(&broker, 0..20).await;
    assert_eq!(consume(&broker, "node-a", 20).await, names(0..20));
    assert_eq!(
        consume(&broker, "node-b", 20).await,
        names(0..20),
        "a second group must see every message too"
    );

    produce(&broker, 20..25).await;
    assert_eq!(
        consume(&broker, "node-a", 5).await,
        names(20..25),
        "a group that comes back resumes after its committed offset"
    );
}
