//! How accepted purges reach the nodes: a [`PurgeTransport`] the API publishes to. A purge is
//! acknowledged to the operator (202) only once `publish` returned `Ok`, so nothing is
//! acknowledged that was not written. [`EmbeddedLog`] is the bus's own log, used when no
//! broker is configured (one machine, the local stack), kept on disk by
//! [`crate::log_file`]; the Kafka transport implements the same trait.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use tokio::sync::Notify;

use cascade_purge_follower::message::PurgeMessage;

use crate::log_file::LogFile;

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

/// How much of the embedded log is kept: purges past either bound are trimmed, oldest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogLimits {
    /// Most purges kept.
    pub max_entries: usize,
    /// Oldest purge kept, by the time it was accepted.
    pub max_age: Duration,
}

impl Default for LogLimits {
    fn default() -> Self {
        Self {
            max_entries: 100_000,
            max_age: Duration::from_secs(7 * 86_400),
        }
    }
}

/// How many purges at the front of `entries` are past `limits` at `now_ms`.
fn past_limits(entries: &VecDeque<PurgeMessage>, limits: LogLimits, now_ms: u64) -> usize {
    let over_count = entries.len().saturating_sub(limits.max_entries);
    let oldest_kept =
        now_ms.saturating_sub(u64::try_from(limits.max_age.as_millis()).unwrap_or(u64::MAX));
    let too_old = entries
        .iter()
        .take_while(|m| m.issued_ms < oldest_kept)
        .count();
    over_count.max(too_old)
}

/// What a read of the log returned.
#[derive(Debug, Clone, PartialEq)]
pub struct LogRead {
    /// Up to [`MAX_BATCH`] purges, in order.
    pub messages: Vec<PurgeMessage>,
    /// The offset after the last one returned.
    pub next: usize,
    /// The end of the log.
    pub end: usize,
    /// The offset of the oldest purge still kept: a reader asking from before it missed the
    /// trimmed ones.
    pub first: usize,
}

struct LogState {
    first: usize,
    entries: VecDeque<PurgeMessage>,
    file: Option<LogFile>,
}

/// The bus's own log when no broker is configured: purges in order, each at an offset, trimmed
/// to [`LogLimits`]. With a directory it is kept on disk ([`LogFile`]), so a restart keeps the
/// purges and the `epoch`, and nodes carry on from their offsets; in memory only, the `epoch`
/// changes with every start, so a node following it knows to start again from offset 0.
pub struct EmbeddedLog {
    epoch: String,
    limits: LogLimits,
    state: Mutex<LogState>,
    appended: Notify,
}

impl std::fmt::Debug for EmbeddedLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedLog")
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

fn fresh_epoch() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{nanos:x}-{}", std::process::id())
}

impl Default for EmbeddedLog {
    fn default() -> Self {
        Self::in_memory(LogLimits::default())
    }
}

impl EmbeddedLog {
    /// A log that lives as long as the process.
    pub fn in_memory(limits: LogLimits) -> Self {
        Self {
            epoch: fresh_epoch(),
            limits,
            state: Mutex::new(LogState {
                first: 0,
                entries: VecDeque::new(),
                file: None,
            }),
            appended: Notify::new(),
        }
    }

    /// The log kept in `dir`, with what it already holds.
    pub fn open(dir: &Path, limits: LogLimits) -> Result<Self, String> {
        let (file, recovered) = LogFile::open(dir, &fresh_epoch())?;
        if recovered.dropped_torn_tail {
            tracing::warn!(dir = %dir.display(), "dropped a purge record cut short by a crash (it was never acknowledged)");
        }
        let log = Self {
            epoch: recovered.epoch,
            limits,
            state: Mutex::new(LogState {
                first: recovered.first,
                entries: recovered.entries,
                file: Some(file),
            }),
            appended: Notify::new(),
        };
        let mut state = log.lock();
        log.trim(&mut state)?;
        tracing::info!(
            dir = %dir.display(),
            first = state.first,
            purges = state.entries.len(),
            "purge log opened"
        );
        drop(state);
        Ok(log)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LogState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Drops the purges past the limits, and compacts the file when most of it is dropped.
    fn trim(&self, state: &mut LogState) -> Result<(), String> {
        let count = past_limits(
            &state.entries,
            self.limits,
            cascade_service::clock::now_ms(),
        );
        if count == 0 {
            return Ok(());
        }
        state.entries.drain(..count);
        state.first += count;
        let LogState {
            first,
            entries,
            file,
        } = state;
        if let Some(file) = file {
            file.trimmed(count, *first, entries)?;
        }
        Ok(())
    }

    /// This log's identity; a different one means a different (restarted) log.
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// Up to [`MAX_BATCH`] messages from `offset` on (from the oldest kept, if `offset` was
    /// trimmed).
    pub fn read_from(&self, offset: usize) -> LogRead {
        let state = self.lock();
        let end = state.first + state.entries.len();
        let from = offset.clamp(state.first, end);
        let to = end.min(from + MAX_BATCH);
        LogRead {
            messages: state
                .entries
                .range(from - state.first..to - state.first)
                .cloned()
                .collect(),
            next: to,
            end,
            first: state.first,
        }
    }

    /// Like [`EmbeddedLog::read_from`], but waits up to `wait` for a message when there is
    /// none yet.
    pub async fn wait_from(&self, offset: usize, wait: Duration) -> LogRead {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let appended = self.appended.notified();
            let read = self.read_from(offset);
            if !read.messages.is_empty() {
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
    /// Appends `message`; on disk, it is synced before this returns (a few milliseconds, and
    /// purges are rate limited), so an acknowledged purge survives a crash.
    async fn publish(&self, message: &PurgeMessage) -> Result<(), TransportError> {
        let mut state = self.lock();
        let offset = state.first + state.entries.len();
        if let Some(file) = &mut state.file {
            file.append(offset, message).map_err(TransportError)?;
        }
        state.entries.push_back(message.clone());
        if let Err(e) = self.trim(&mut state) {
            // The purge itself is on disk; only the compaction failed, and is retried later.
            tracing::error!(error = %e, "could not compact the purge log");
        }
        drop(state);
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
            issued_ms: cascade_service::clock::now_ms(),
        }
    }

    #[tokio::test]
    async fn the_embedded_log_reads_from_any_offset_in_order() {
        let log = EmbeddedLog::default();
        for id in ["a", "b", "c"] {
            log.publish(&message(id)).await.unwrap();
        }
        let all = log.read_from(0);
        assert_eq!(
            all.messages
                .iter()
                .map(|m| m.id.as_str())
                .collect::<Vec<_>>(),
            ["a", "b", "c"]
        );
        assert_eq!((all.next, all.end, all.first), (3, 3, 0));
        let rest = log.read_from(2);
        assert_eq!(rest.messages.len(), 1);
        assert_eq!((rest.messages[0].id.as_str(), rest.next), ("c", 3));
        let past = log.read_from(99);
        assert!(
            past.messages.is_empty(),
            "past the end is empty, not an error"
        );
        assert_eq!((past.next, past.end), (3, 3));
        assert_ne!(log.epoch(), EmbeddedLog::default().epoch());
    }

    #[tokio::test]
    async fn a_waiting_reader_wakes_on_publish_and_gives_up_at_its_deadline() {
        let log = std::sync::Arc::new(EmbeddedLog::default());
        let nothing = log.wait_from(0, Duration::from_millis(20)).await;
        assert!(nothing.messages.is_empty());
        assert_eq!(nothing.next, 0);
        let reader = {
            let log = std::sync::Arc::clone(&log);
            tokio::spawn(async move { log.wait_from(0, Duration::from_secs(10)).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        let started = std::time::Instant::now();
        let late = message("late");
        log.publish(&late).await.unwrap();
        let got = reader.await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!((got.messages, got.next, got.end), (vec![late], 1, 1));
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

    #[test]
    fn purges_past_the_count_or_the_age_are_trimmed_oldest_first() {
        let limits = LogLimits {
            max_entries: 3,
            max_age: Duration::from_secs(60),
        };
        let now = 1_000_000;
        let at = |issued_ms| PurgeMessage {
            issued_ms,
            ..message("m")
        };
        let young: VecDeque<_> = (0..3).map(|_| at(now)).collect();
        assert_eq!(past_limits(&young, limits, now), 0);
        let many: VecDeque<_> = (0..5).map(|_| at(now)).collect();
        assert_eq!(past_limits(&many, limits, now), 2);
        let aged: VecDeque<_> = [at(now - 61_000), at(now - 60_000), at(now)].into();
        assert_eq!(past_limits(&aged, limits, now), 1);
    }

    #[tokio::test]
    async fn a_log_on_disk_keeps_its_purges_epoch_and_offsets_across_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let limits = LogLimits {
            max_entries: 2,
            ..LogLimits::default()
        };
        let log = EmbeddedLog::open(dir.path(), limits).unwrap();
        for id in ["a", "b", "c"] {
            log.publish(&message(id)).await.unwrap();
        }
        let epoch = log.epoch().to_owned();
        let read = log.read_from(0);
        assert_eq!((read.first, read.next, read.end), (1, 3, 3), "a is trimmed");
        drop(log);
        let log = EmbeddedLog::open(dir.path(), limits).unwrap();
        assert_eq!(log.epoch(), epoch);
        let read = log.read_from(2);
        let ids: Vec<_> = read.messages.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, ["c"]);
        log.publish(&message("d")).await.unwrap();
        assert_eq!(log.read_from(0).first, 2);
        assert_eq!(log.read_from(3).messages[0].id, "d");
    }
}
