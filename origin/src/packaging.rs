//! The packager's shell: the [`MediaSink`] the transcoder feeds, holding one
//! [`StreamPackager`] per live stream behind a lock, waking blocked playlist and part
//! requests when media arrives, and handing completed segments to the archive.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cascade_media::handoff::{MediaEvent, MediaSink};
use tokio::sync::{mpsc, watch};

use cascade_service::clock::now_ms;

use crate::metrics::delivery_metrics;
use crate::streams::model::StreamConfig;
use cascade_media::packager::{PackagerError, PackagerSettings, StreamPackager};

/// How a stream's configuration maps onto packaging.
pub fn packager_settings(config: &StreamConfig) -> PackagerSettings {
    let s = &config.settings;
    PackagerSettings {
        segment_target: s.segment_duration,
        part_target: s.part_duration,
        playlist_segments: s.playlist_length as usize,
        dvr_window: config.dvr_enabled.then_some(f64::from(config.dvr_window)),
        low_latency: config.low_latency,
        ..PackagerSettings::default()
    }
}

/// Something the archive must store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArchiveJob {
    /// An init version of a rendition.
    Init {
        /// Stream id.
        stream_id: String,
        /// Rendition name.
        rendition: String,
        /// Init version.
        id: u32,
    },
    /// A completed segment.
    Segment {
        /// Stream id.
        stream_id: String,
        /// Rendition name.
        rendition: String,
        /// Media sequence number.
        msn: u64,
    },
    /// The stream ended: finish its recording.
    StreamEnded {
        /// Stream id.
        stream_id: String,
    },
}

/// One live stream's packaged media.
pub struct LiveMedia {
    /// The stream id.
    pub stream_id: String,
    state: Mutex<StreamPackager>,
    version: watch::Sender<u64>,
    last_change: Mutex<HashMap<String, Instant>>,
    ingest_clock: Mutex<Option<IngestClock>>,
}

/// When the transcoder run `run` started taking media: its media time zero entered the
/// origin then (the transcoder starts at the publisher's first keyframe).
#[derive(Debug, Clone, Copy)]
struct IngestClock {
    run: u32,
    started: Instant,
}

impl LiveMedia {
    fn new(stream_id: &str, settings: PackagerSettings) -> Self {
        Self {
            stream_id: stream_id.to_owned(),
            state: Mutex::new(StreamPackager::new(settings)),
            version: watch::channel(0).0,
            last_change: Mutex::new(HashMap::new()),
            ingest_clock: Mutex::new(None),
        }
    }

    /// The packager state, locked. Hold it briefly: the transcoder's tasks wait on it.
    pub fn lock(&self) -> Option<MutexGuard<'_, StreamPackager>> {
        self.state.lock().ok()
    }

    fn changed(&self, rendition: Option<&str>) {
        if let Some(rendition) = rendition
            && let Ok(mut at) = self.last_change.lock()
        {
            at.insert(rendition.to_owned(), Instant::now());
        }
        self.version.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Time since `rendition` last changed (a part was added): for a request that waited,
    /// how long its answer took after the part it waited for.
    pub fn since_change(&self, rendition: &str) -> Option<Duration> {
        Some(self.last_change.lock().ok()?.get(rendition)?.elapsed())
    }

    /// Records a waited-for answer about `rendition` in the wake-up histogram.
    pub fn observe_wake(&self, rendition: &str) {
        if let Some(since) = self.since_change(rendition) {
            delivery_metrics().blocked_wake.observe(since.as_secs_f64());
        }
    }

    /// Waits until `ready` holds for the packager state or `timeout` passes; returns whether
    /// it holds. `ready` is checked first, then after every change.
    pub async fn wait_for<F>(&self, timeout: Duration, mut ready: F) -> bool
    where
        F: FnMut(&StreamPackager) -> bool,
    {
        let mut changes = self.version.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            changes.mark_unchanged();
            match self.lock() {
                Some(state) if ready(&state) => return true,
                Some(_) => {}
                None => return false,
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return false,
            }
        }
    }

    /// A receiver that sees every change (for streaming a segment as it grows).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }
}

/// Every live stream's packager; the transcoder's [`MediaSink`].
pub struct LivePackager {
    streams: Mutex<HashMap<String, Arc<LiveMedia>>>,
    archive: Option<mpsc::UnboundedSender<ArchiveJob>>,
}

impl LivePackager {
    /// Packagers that report completed media to `archive`.
    pub fn new(archive: Option<mpsc::UnboundedSender<ArchiveJob>>) -> Self {
        Self {
            streams: Mutex::new(HashMap::new()),
            archive,
        }
    }

    /// Prepares `stream_id` for media with `settings`; a stream that continues (publisher
    /// reconnected) keeps its state and timeline.
    pub fn open(&self, stream_id: &str, settings: PackagerSettings) -> Arc<LiveMedia> {
        let Ok(mut streams) = self.streams.lock() else {
            return Arc::new(LiveMedia::new(stream_id, settings));
        };
        let media = match streams.get(stream_id) {
            Some(existing)
                if existing
                    .lock()
                    .is_some_and(|s| !s.ended() && *s.settings() == settings) =>
            {
                Arc::clone(existing)
            }
            _ => {
                let media = Arc::new(LiveMedia::new(stream_id, settings));
                streams.insert(stream_id.to_owned(), Arc::clone(&media));
                media
            }
        };
        let run = match media.lock() {
            Some(mut state) => {
                state.start_clock(now_ms());
                state.runs()
            }
            None => 0,
        };
        if let Ok(mut clock) = media.ingest_clock.lock() {
            *clock = Some(IngestClock {
                run,
                started: Instant::now(),
            });
        }
        media
    }

    /// The media of `stream_id`, if it has any.
    pub fn get(&self, stream_id: &str) -> Option<Arc<LiveMedia>> {
        self.streams.lock().ok()?.get(stream_id).cloned()
    }

    /// Ends `stream_id`: completes its segments, wakes waiting requests and closes the
    /// recording. The media stays readable until [`LivePackager::forget`].
    pub fn end(&self, stream_id: &str) {
        let Some(media) = self.get(stream_id) else {
            return;
        };
        let completed = match media.lock() {
            Some(mut state) if !state.ended() => state.end(),
            _ => return,
        };
        for (rendition, msn) in completed {
            self.send(ArchiveJob::Segment {
                stream_id: stream_id.to_owned(),
                rendition,
                msn,
            });
        }
        media.changed(None);
        self.send(ArchiveJob::StreamEnded {
            stream_id: stream_id.to_owned(),
        });
    }

    /// Drops a deleted stream's media.
    pub fn forget(&self, stream_id: &str) {
        if let Ok(mut streams) = self.streams.lock() {
            streams.remove(stream_id);
        }
    }

    /// Bytes of media held in memory by every stream.
    pub fn memory_bytes(&self) -> u64 {
        let Ok(streams) = self.streams.lock() else {
            return 0;
        };
        streams
            .values()
            .filter_map(|m| m.lock().map(|s| s.memory_bytes()))
            .sum()
    }

    /// Publishes [`LivePackager::memory_bytes`] every `every`, off the media path.
    pub async fn report_memory(self: Arc<Self>, every: Duration) {
        loop {
            delivery_metrics()
                .memory_bytes
                .set(i64::try_from(self.memory_bytes()).unwrap_or(i64::MAX));
            tokio::time::sleep(every).await;
        }
    }

    fn send(&self, job: ArchiveJob) {
        if let Some(archive) = &self.archive {
            let _ = archive.send(job);
        }
    }
}

impl MediaSink for LivePackager {
    fn deliver(&self, stream_id: &str, rendition: &str, event: MediaEvent) {
        let media = match self.get(stream_id) {
            Some(media) => media,
            None => self.open(stream_id, PackagerSettings::default()),
        };
        let fragment_end = match &event {
            MediaEvent::Fragment(f) => Some(f.decode_time.saturating_add(f.duration)),
            _ => None,
        };
        let (result, run_and_time) = match media.lock() {
            Some(mut state) => {
                let result = state.apply(rendition, event, now_ms());
                let measured = state
                    .rendition(rendition)
                    .and_then(|r| Some((r.runs().checked_sub(1)?, r.seconds(fragment_end?))));
                (result, measured)
            }
            None => return,
        };
        if let Some((run, end)) = run_and_time
            && let Ok(clock) = media.ingest_clock.lock()
            && let Some(clock) = *clock
            && clock.run == run
        {
            let ingested = clock.started + Duration::from_secs_f64(end);
            let latency = Instant::now().saturating_duration_since(ingested);
            delivery_metrics()
                .part_latency
                .observe(latency.as_secs_f64());
        }
        match result {
            Ok(applied) => {
                if let Some(id) = applied.new_init {
                    self.send(ArchiveJob::Init {
                        stream_id: stream_id.to_owned(),
                        rendition: rendition.to_owned(),
                        id,
                    });
                }
                for msn in &applied.completed {
                    self.send(ArchiveJob::Segment {
                        stream_id: stream_id.to_owned(),
                        rendition: rendition.to_owned(),
                        msn: *msn,
                    });
                }
                if applied.changed {
                    media.changed(Some(rendition));
                }
            }
            Err(e @ PackagerError::Ended(_)) => {
                tracing::debug!(stream = %stream_id, %rendition, error = %e, "media event dropped");
            }
            Err(e) => {
                tracing::warn!(stream = %stream_id, %rendition, error = %e, "media event dropped");
            }
        }
    }
}
