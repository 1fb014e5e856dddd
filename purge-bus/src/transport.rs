//! How accepted purges reach the nodes: a [`PurgeTransport`] the API publishes to. A purge is
//! acknowledged to the operator (202) only once `publish` returned `Ok`, so nothing is
//! acknowledged that was not written. [`EmbeddedLog`] is the in-process transport used when no
//! broker is configured (one machine, the local stack); the Kafka transport implements the
//! same trait.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use tokio::sync::Notify;

use cascade_purge_follower::message::PurgeMessage;

/// Why a purge could not be published.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TransportError(pub String);

/// Where the API writes purges.
#[async_trait]
pub trait PurgeTransport: Send + Sync {
    /// Writes `message` durably enough that every node will see it.
    async fn publish(&self, message: &PurgeMessage) -> Result<(), TransportError>;
}

/// Most messages one [`EmbeddedLog::read_from`] returns.
pub const MAX_BATCH: usize = 1000;

/// The in-process log: purges in order, each at an offset. It lives as long as the bus
/// process; its `epoch` changes with every start, so a node following it over HTTP knows to
/// start again from offset 0 when the bus restarted.
#[derive(Debug)]
pub struct EmbeddedLog {
    epoch: String,
    entries: Mutex<Vec<PurgeMessage>>,
    appended: Notify,
}

impl Default for EmbeddedLog {
    fn default() -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        Self {
            epoch: format!("{nanos:x}-{}", std::process::id()),
            entries: Mutex::new(Vec::new()),
            appended: Notify::new(),
        }
    }
}

impl EmbeddedLog {
    /// This log's identity; a different one means a different (restarted) log.
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// Up to [`MAX_BATCH`] messages from `offset` on, with the offset after the last returned
    /// and the end of the log.
    pub fn read_from(&self, offset: usize) -> (Vec<PurgeMessage>, usize, usize) {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let from = offset.min(entries.len());
        let to = entries.len().min(from + MAX_BATCH);
        (entries[from..to].to_vec(), to, entries.len())
    }

    /// Like [`EmbeddedLog::read_from`], but waits up to `wait` for a message when there is
    /// none yet.
    pub async fn wait_from(
        &self,
        offset: usize,
        wait: Duration,
    ) -> (Vec<PurgeMessage>, usize, usize) {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let appended = self.appended.notified();
            let read = self.read_from(offset);
            if !read.0.is_empty() {
                return read;
            }
            if tokio::time::timeout_at(deadline, appended).await.is_err() {
                return self.read_from(offset);
            }
        }
    }
}

#[async_trait]
impl PurgeTransport for EmbeddedLog {
    async fn publish(&self, message: &PurgeMessage) -> Result<(), TransportError> {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(message.clone());
        self.appended.notify_waiters();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cascade_purge_follower::request::{PurgeAction, PurgeKind, PurgeRequest};

    fn message(id: &str) -> PurgeMessage {
        PurgeMessage {
            id: id.into(),
            request: PurgeRequest {
                kind: PurgeKind::Tag,
                targets: vec!["stream/abc".into()],
                action: PurgeAction::Delete,
                confirm_all: false,
            },
            issued_ms: 7,
        }
    }

    #[tokio::test]
    async fn the_embedded_log_reads_from_any_offset_in_order() {
        let log = EmbeddedLog::default();
        for id in ["a", "b", "c"] {
            log.publish(&message(id)).await.unwrap();
        }
        let (all, next, end) = log.read_from(0);
        assert_eq!(
            all.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(),
            ["a", "b", "c"]
        );
        assert_eq!((next, end), (3, 3));
        let (rest, next, _) = log.read_from(2);
        assert_eq!((rest, next), (vec![message("c")], 3));
        assert_eq!(
            log.read_from(99),
            (vec![], 3, 3),
            "past the end is empty, not an error"
        );
        assert_ne!(log.epoch(), EmbeddedLog::default().epoch());
    }

    #[tokio::test]
    async fn a_waiting_reader_wakes_on_publish_and_gives_up_at_its_deadline() {
        let log = std::sync::Arc::new(EmbeddedLog::default());
        let (nothing, next, _) = log.wait_from(0, Duration::from_millis(20)).await;
        assert!(nothing.is_empty());
        assert_eq!(next, 0);
        let reader = {
            let log = std::sync::Arc::clone(&log);
            tokio::spawn(async move { log.wait_from(0, Duration::from_secs(10)).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        let started = std::time::Instant::now();
        log.publish(&message("late")).await.unwrap();
        let (got, next, end) = reader.await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!((got, next, end), (vec![message("late")], 1, 1));
    }

    #[test]
    fn messages_round_trip_and_garbage_is_an_error() {
        let message = PurgeMessage {
            id: "p1".into(),
            request: PurgeRequest {
                kind: PurgeKind::Prefix,
                targets: vec!["https://cdn.example/live/a/".into()],
                action: PurgeAction::Expire,
                confirm_all: false,
            },
            issued_ms: 42,
        };
        assert_eq!(PurgeMessage::decode(&message.encode()), Ok(message));
        assert!(PurgeMessage::decode(b"\x00garbled").is_err());
        assert!(
            PurgeMessage::decode(br#"{"id":"x","request":{"kind":"all"},"issued_ms":1}"#).is_err(),
            "an unconfirmed all purge on the topic is refused too"
        );
    }
}
