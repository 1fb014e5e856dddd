//! Following the bus: picks the transport (the Kafka purge topic, or the embedded bus's feed
//! over HTTP), and runs the feed and the heartbeats side by side.

use std::sync::Arc;
use std::time::Duration;

use cascade_service::clock::now_ms;

use crate::embedded;
use crate::kafka;
use crate::node::{FeedSource, Node, PurgeApplier, ReportSink, metrics};
use crate::report::HEARTBEAT_INTERVAL;

/// Follows `source` as node `node_id`, applying purges with `applier`; `on_caught_up` runs
/// once every purge published before the start has been applied. Runs until dropped.
pub async fn follow(
    node_id: String,
    source: FeedSource,
    applier: Arc<dyn PurgeApplier>,
    on_caught_up: Box<dyn FnOnce() + Send>,
) {
    metrics().caught_up.set(0);
    let sink: Arc<dyn ReportSink> = match &source {
        FeedSource::Kafka(config) => loop {
            match kafka::KafkaReports::new(config) {
                Ok(sink) => break Arc::new(sink),
                Err(e) => {
                    tracing::error!(error = %e, "purge reports; retrying");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            }
        },
        FeedSource::Embedded { url, token } => Arc::new(embedded::HttpReports {
            url: url.clone(),
            token: token.clone(),
        }),
    };
    let node = Arc::new(Node::new(
        node_id.clone(),
        applier,
        Arc::clone(&sink),
        on_caught_up,
    ));
    let heartbeats = async {
        let mut tick = tokio::time::interval(HEARTBEAT_INTERVAL);
        loop {
            tick.tick().await;
            sink.send(vec![node.heartbeat(now_ms())]).await;
        }
    };
    let feed = async {
        match source {
            FeedSource::Kafka(config) => {
                kafka::follow_purges(config, node_id.clone(), Arc::clone(&node)).await
            }
            FeedSource::Embedded { url, token } => {
                embedded::follow(&url, token.as_deref(), &node).await
            }
        }
    };
    tokio::join!(heartbeats, feed);
}
