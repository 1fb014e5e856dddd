//! The consumer that edges and shields embed: follows the bus (the Kafka purge topic, or the
//! embedded bus's feed over HTTP), applies each purge to the node's cache through a
//! [`PurgeApplier`], reports what it applied and heartbeats so the bus knows whom to expect,
//! and says when it has caught up with everything published before it started (the node is
//! not ready before that: it could serve something already purged).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use async_trait::async_trait;
use cascade_config::KafkaConfig;
use cascade_service::metrics::must;
use prometheus::{Histogram, HistogramOpts, IntCounter, IntGauge};
use serde::{Deserialize, Serialize};

use crate::message::PurgeMessage;
use crate::report::{MAX_RECENT, NodeReport, RECENT_WINDOW_MS};
use cascade_service::clock::now_ms;

/// Applies purges to a node's cache.
pub trait PurgeApplier: Send + Sync {
    /// Applies `message`; returns how many objects it hit, or why it could not be applied.
    /// Applying the same purge twice must be harmless (delivery is at least once).
    fn apply(&self, message: &PurgeMessage) -> Result<usize, String>;
}

/// Where a node's reports go.
#[async_trait]
pub trait ReportSink: Send + Sync {
    /// Sends `reports`; failures are logged, not returned (a lost ack delays a purge's
    /// completion, it does not undo the purge).
    async fn send(&self, reports: Vec<NodeReport>);
}

/// Which bus a node follows.
#[derive(Debug, Clone)]
pub enum FeedSource {
    /// The purge topic on a Kafka-protocol cluster.
    Kafka(KafkaConfig),
    /// An embedded bus's `GET /v1/feed` at `url` (`http://host:port`).
    Embedded {
        /// The bus's API.
        url: String,
        /// Its `purge_bus.node_token`, if it wants one.
        token: Option<String>,
    },
}

/// One page of the embedded bus's feed (`GET /v1/feed`).
#[derive(Debug, Serialize, Deserialize)]
pub struct FeedPage {
    /// Identity of the bus's log; a new one means the bus restarted with an empty log.
    pub epoch: String,
    /// Offset after the last message in this page.
    pub next: usize,
    /// End of the log when the page was read.
    pub end: usize,
    /// Offset of the oldest purge the bus still keeps; older ones were trimmed.
    #[serde(default)]
    pub first: usize,
    /// The purges, in order.
    pub messages: Vec<PurgeMessage>,
}

pub(crate) struct NodeMetrics {
    pub(crate) applied: IntCounter,
    pub(crate) skipped: IntCounter,
    pub(crate) caught_up: IntGauge,
    pub(crate) propagation: Histogram,
}

pub(crate) fn metrics() -> &'static NodeMetrics {
    static METRICS: OnceLock<NodeMetrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let m = NodeMetrics {
            applied: must(IntCounter::new(
                "cascade_purges_applied_total",
                "Purges from the bus applied to this node's cache",
            )),
            skipped: must(IntCounter::new(
                "cascade_purge_messages_skipped_total",
                "Purge bus messages that were garbled or could not be applied",
            )),
            caught_up: must(IntGauge::new(
                "cascade_purge_feed_caught_up",
                "1 once this node applied every purge published before it started",
            )),
            propagation: must(Histogram::with_opts(
                HistogramOpts::new(
                    "cascade_purge_propagation_seconds",
                    "From the bus accepting a purge to this node applying it",
                )
                .buckets(vec![
                    0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0,
                ]),
            )),
        };
        let _ = prometheus::register(Box::new(m.applied.clone()));
        let _ = prometheus::register(Box::new(m.skipped.clone()));
        let _ = prometheus::register(Box::new(m.caught_up.clone()));
        let _ = prometheus::register(Box::new(m.propagation.clone()));
        m
    })
}

/// A node following the bus: applies, reports, and signals catching up once.
pub struct Node {
    id: String,
    applier: Arc<dyn PurgeApplier>,
    sink: Arc<dyn ReportSink>,
    caught_up: AtomicBool,
    on_caught_up: Mutex<Option<Box<dyn FnOnce() + Send>>>,
    /// Purges applied lately, oldest first, repeated in heartbeats.
    recent: Mutex<VecDeque<(String, u64)>>,
}

impl Node {
    /// A node `id` that applies purges with `applier`, reports to `sink` and runs
    /// `on_caught_up` once it has caught up.
    pub(crate) fn new(
        id: String,
        applier: Arc<dyn PurgeApplier>,
        sink: Arc<dyn ReportSink>,
        on_caught_up: Box<dyn FnOnce() + Send>,
    ) -> Self {
        Self {
            id,
            applier,
            sink,
            caught_up: AtomicBool::new(false),
            on_caught_up: Mutex::new(Some(on_caught_up)),
            recent: Mutex::new(VecDeque::new()),
        }
    }

    /// Applies one purge; the report to send when it was applied.
    pub fn apply(&self, message: &PurgeMessage) -> Option<NodeReport> {
        match self.applier.apply(message) {
            Ok(hit) => {
                let applied_ms = now_ms();
                let m = metrics();
                m.applied.inc();
                m.propagation
                    .observe(applied_ms.saturating_sub(message.issued_ms) as f64 / 1000.0);
                tracing::info!(purge = %message.id, kind = ?message.request.kind, hit, "purge applied");
                let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
                recent.push_back((message.id.clone(), applied_ms));
                while recent.len() > MAX_RECENT {
                    recent.pop_front();
                }
                drop(recent);
                Some(NodeReport::Applied {
                    node: self.id.clone(),
                    id: message.id.clone(),
                    applied_ms,
                })
            }
            Err(e) => {
                metrics().skipped.inc();
                tracing::warn!(purge = %message.id, error = %e, "could not apply a purge; skipping it");
                None
            }
        }
    }

    /// A heartbeat carrying the purges applied within [`RECENT_WINDOW_MS`] of `now_ms`.
    pub(crate) fn heartbeat(&self, now_ms: u64) -> NodeReport {
        let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        while recent
            .front()
            .is_some_and(|(_, at)| now_ms.saturating_sub(*at) > RECENT_WINDOW_MS)
        {
            recent.pop_front();
        }
        NodeReport::Heartbeat {
            node: self.id.clone(),
            at_ms: now_ms,
            recent: recent.iter().cloned().collect(),
        }
    }

    /// Sends reports.
    pub async fn report(&self, reports: Vec<NodeReport>) {
        if !reports.is_empty() {
            self.sink.send(reports).await;
        }
    }

    /// Records that a garbled message was skipped.
    pub fn skipped(&self) {
        metrics().skipped.inc();
    }

    /// True once caught up.
    pub fn is_caught_up(&self) -> bool {
        self.caught_up.load(Ordering::Acquire)
    }

    /// Marks the node caught up (the first call runs the callback).
    pub fn caught_up(&self) {
        if !self.caught_up.swap(true, Ordering::AcqRel) {
            metrics().caught_up.set(1);
            tracing::info!(node = %self.id, "caught up with the purge bus");
            let callback = self
                .on_caught_up
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            if let Some(callback) = callback {
                callback();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::{PurgeAction, PurgeKind, PurgeRequest};

    struct CountingApplier;
    impl PurgeApplier for CountingApplier {
        fn apply(&self, _message: &PurgeMessage) -> Result<usize, String> {
            Ok(1)
        }
    }

    struct NoSink;
    #[async_trait]
    impl ReportSink for NoSink {
        async fn send(&self, _reports: Vec<NodeReport>) {}
    }

    #[test]
    fn heartbeats_repeat_recent_applies_until_the_window_passes() {
        let node = Node {
            id: "edge-1".into(),
            applier: Arc::new(CountingApplier),
            sink: Arc::new(NoSink),
            caught_up: AtomicBool::new(false),
            on_caught_up: Mutex::new(None),
            recent: Mutex::new(VecDeque::new()),
        };
        let message = PurgeMessage {
            id: "pg-1".into(),
            request: PurgeRequest {
                kind: PurgeKind::Tag,
                targets: vec!["t".into()],
                action: PurgeAction::Delete,
                confirm_all: false,
            },
            issued_ms: 1,
        };
        let Some(NodeReport::Applied { applied_ms, .. }) = node.apply(&message) else {
            panic!("applied");
        };
        let NodeReport::Heartbeat { recent, .. } = node.heartbeat(applied_ms + 1_000) else {
            panic!("heartbeat");
        };
        assert_eq!(recent, [("pg-1".to_owned(), applied_ms)]);
        let NodeReport::Heartbeat { recent, .. } =
            node.heartbeat(applied_ms + RECENT_WINDOW_MS + 1)
        else {
            panic!("heartbeat");
        };
        assert!(recent.is_empty(), "forgotten after the window");
    }
}
