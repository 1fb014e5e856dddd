//! The live streams of this origin: who is publishing what, the reconnect grace period, and
//! the status machine's transitions with their events (`stream_started`, `connection_lost`,
//! `connection_restored`, `stream_ended`, `transcoder_restarted`, `error`). The RTMP sessions
//! ask it before publishing and tell it when they go; the API asks it to stop streams.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cascade_media::handoff::MediaSink;
use cascade_transcoder::progress::Progress;
use cascade_transcoder::supervisor::{TranscoderOptions, TranscoderStatus};
use serde::Serialize;
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::metrics::live_metrics;
use crate::packaging::{LivePackager, packager_settings};
use crate::streams::event::{EventType, NewEvent};
use crate::streams::model::{self, Status, StreamSettings};
use crate::streams::monitor::{IngestMonitor, RenditionStats};
use crate::streams::registry::{Registry, StreamRecord};
use cascade_media::packager::PackagerSettings;

/// Why a publish was refused (the text goes back to the publisher and into the logs).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No stream has this key (unknown, revoked or rotated away).
    #[error("unknown stream key")]
    UnknownKey,
    /// The stream was stopped or has ended.
    #[error("the stream has ended; start it again through the API to publish")]
    Ended,
    /// Someone is already publishing on this key.
    #[error("the stream already has a publisher")]
    AlreadyPublishing,
    /// The origin is at its live stream limit.
    #[error("the origin is at its limit of {0} live streams")]
    AtCapacity(usize),
    /// The registry could not be read.
    #[error("the stream registry is unavailable")]
    Unavailable,
}

impl Refusal {
    fn label(&self) -> &'static str {
        match self {
            Refusal::UnknownKey => "unknown_key",
            Refusal::Ended => "ended",
            Refusal::AlreadyPublishing => "already_publishing",
            Refusal::AtCapacity(_) => "at_capacity",
            Refusal::Unavailable => "registry_unavailable",
        }
    }
}

/// What a publisher may do once accepted.
pub struct PublishGrant {
    /// The stream.
    pub stream_id: String,
    /// Identifies this publisher session to [`Live::publisher_gone`].
    pub session: u64,
    /// Transcoding settings.
    pub settings: StreamSettings,
    /// How the media is packaged.
    pub packaging: PackagerSettings,
    /// The stream continues from an earlier publisher (reconnect within the grace period).
    pub continues: bool,
    /// Becomes true when the stream is stopped: the session must close.
    pub kicked: watch::Receiver<bool>,
}

/// Live counters of a publisher session, read by the API.
#[derive(Debug, Default)]
pub struct IngestCounters {
    /// Media bytes received.
    pub bytes: AtomicU64,
    /// Bits per second over the last measurement window.
    pub bitrate: AtomicU64,
}

struct Publisher {
    session: u64,
    peer: SocketAddr,
    kick: watch::Sender<bool>,
    counters: Arc<IngestCounters>,
}

struct LiveEntry {
    publisher: Option<Publisher>,
    grace: Option<JoinHandle<()>>,
    progress: Option<Progress>,
    restarts: u64,
}

/// How the origin runs live streams.
#[derive(Debug, Clone)]
pub struct LiveOptions {
    /// A publisher back within this continues its stream.
    pub reconnect_grace: Duration,
    /// Most live streams.
    pub max_live_streams: usize,
    /// ffmpeg supervision.
    pub transcoder: TranscoderOptions,
    /// x264 preset.
    pub preset: String,
}

/// The live streams of this origin.
pub struct Live {
    registry: Registry,
    options: LiveOptions,
    monitor: Arc<IngestMonitor>,
    packager: Arc<LivePackager>,
    streams: Mutex<HashMap<String, LiveEntry>>,
    sessions: AtomicU64,
}

/// A stream's live state, for the API.
#[derive(Debug, Clone, Serialize)]
pub struct LiveView {
    /// A publisher is connected (false while waiting for a reconnect).
    pub connected: bool,
    /// The publisher's address.
    pub publisher: Option<String>,
    /// Ingest bitrate (bits per second).
    pub ingest_bitrate: u64,
    /// Media bytes received from the current publisher.
    pub ingest_bytes: u64,
    /// ffmpeg's last progress report.
    pub transcoder: Option<TranscoderView>,
    /// ffmpeg restarts.
    pub transcoder_restarts: u64,
}

/// ffmpeg's progress, for the API.
#[derive(Debug, Clone, Serialize)]
pub struct TranscoderView {
    /// Frames per second.
    pub fps: f64,
    /// Relative to real time.
    pub speed: Option<f64>,
    /// Output kbit/s.
    pub bitrate_kbps: Option<f64>,
    /// Frames dropped.
    pub dropped_frames: u64,
    /// Frames encoded.
    pub frames: u64,
}

impl Live {
    /// The live state over `registry`, handing media to `monitor`, which passes it on to
    /// `packager`.
    pub fn new(
        registry: Registry,
        options: LiveOptions,
        monitor: Arc<IngestMonitor>,
        packager: Arc<LivePackager>,
    ) -> Arc<Self> {
        Arc::new(Self {
            registry,
            options,
            monitor,
            packager,
            streams: Mutex::new(HashMap::new()),
            sessions: AtomicU64::new(0),
        })
    }

    /// The registry.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// ffmpeg supervision options.
    pub fn transcoder_options(&self) -> &TranscoderOptions {
        &self.options.transcoder
    }

    /// x264 preset.
    pub fn preset(&self) -> &str {
        &self.options.preset
    }

    /// The packager.
    pub fn packager(&self) -> &Arc<LivePackager> {
        &self.packager
    }

    /// Where transcoded media goes.
    pub fn sink(&self) -> Arc<dyn MediaSink> {
        Arc::clone(&self.monitor) as Arc<dyn MediaSink>
    }

    /// Streams a previous run of the origin left live wait for their publisher for one grace
    /// period, as if it had just disconnected.
    pub async fn resume_after_restart(self: &Arc<Self>) -> anyhow::Result<()> {
        let filter = crate::streams::registry::ListFilter {
            status: Some(Status::Live),
            limit: 10_000,
            ..Default::default()
        };
        let (streams, _) = self.registry.list(&filter).await?;
        for stream in streams {
            let grace = self.start_grace(&stream.id);
            if let Ok(mut live) = self.streams.lock() {
                live.insert(
                    stream.id.clone(),
                    LiveEntry {
                        publisher: None,
                        grace: Some(grace),
                        progress: None,
                        restarts: 0,
                    },
                );
            }
        }
        self.update_gauge();
        Ok(())
    }

    /// Decides whether `key` may publish from `peer`.
    pub async fn authorise(
        self: &Arc<Self>,
        key: &str,
        peer: SocketAddr,
    ) -> Result<(PublishGrant, Arc<IngestCounters>), Refusal> {
        let result = self.try_authorise(key, peer).await;
        if let Err(refusal) = &result {
            let metrics = live_metrics();
            metrics.refused.with_label_values(&[refusal.label()]).inc();
            metrics.errors.with_label_values(&["publish_refused"]).inc();
            tracing::warn!(%peer, key = %model::key_fingerprint(key), reason = %refusal, "publish refused");
        }
        result
    }

    async fn try_authorise(
        self: &Arc<Self>,
        key: &str,
        peer: SocketAddr,
    ) -> Result<(PublishGrant, Arc<IngestCounters>), Refusal> {
        let stream: StreamRecord = match self.registry.find_by_key(key).await {
            Ok(Some(stream)) => stream,
            Ok(None) => return Err(Refusal::UnknownKey),
            Err(e) => {
                tracing::error!(error = %e, "cannot look a stream key up");
                return Err(Refusal::Unavailable);
            }
        };
        if stream.status == Status::Ended {
            self.record(
                &stream.id,
                NewEvent::new(EventType::Error, "publish refused: the stream has ended")
                    .with_details(json!({"peer": peer.to_string()})),
            )
            .await;
            return Err(Refusal::Ended);
        }
        let (kick, kicked) = watch::channel(false);
        let session = self.sessions.fetch_add(1, Ordering::Relaxed) + 1;
        let counters = Arc::new(IngestCounters::default());
        let publisher = Publisher {
            session,
            peer,
            kick,
            counters: Arc::clone(&counters),
        };
        let continues = {
            let Ok(mut live) = self.streams.lock() else {
                return Err(Refusal::Unavailable);
            };
            let live_count = live.len();
            match live.get_mut(&stream.id) {
                Some(entry) if entry.publisher.is_some() => None,
                Some(entry) => {
                    if let Some(grace) = entry.grace.take() {
                        grace.abort();
                    }
                    entry.publisher = Some(publisher);
                    Some(true)
                }
                None if live_count >= self.options.max_live_streams => {
                    return Err(Refusal::AtCapacity(self.options.max_live_streams));
                }
                None => {
                    live.insert(
                        stream.id.clone(),
                        LiveEntry {
                            publisher: Some(publisher),
                            grace: None,
                            progress: None,
                            restarts: 0,
                        },
                    );
                    Some(false)
                }
            }
        };
        let Some(continues) = continues else {
            self.record(
                &stream.id,
                NewEvent::new(
                    EventType::Error,
                    "publish refused: the stream already has a publisher",
                )
                .with_details(json!({"peer": peer.to_string()})),
            )
            .await;
            return Err(Refusal::AlreadyPublishing);
        };
        self.update_gauge();
        if continues {
            self.record(
                &stream.id,
                NewEvent::new(
                    EventType::ConnectionRestored,
                    "the publisher reconnected; the stream continues",
                )
                .with_details(json!({"peer": peer.to_string()})),
            )
            .await;
        } else {
            if let Err(e) = self.registry.set_status(&stream.id, Status::Live).await {
                tracing::error!(stream = %stream.id, error = %e, "cannot mark the stream live");
            }
            self.record(
                &stream.id,
                NewEvent::new(EventType::StreamStarted, "a publisher started the stream")
                    .with_details(json!({"peer": peer.to_string()})),
            )
            .await;
        }
        tracing::info!(stream = %stream.id, %peer, continues, "publishing");
        Ok((
            PublishGrant {
                stream_id: stream.id,
                session,
                packaging: packager_settings(&stream.config),
                settings: stream.config.settings,
                continues,
                kicked,
            },
            counters,
        ))
    }

    /// The publisher session `session` of `stream_id` has gone: the stream waits one grace
    /// period for it to come back.
    pub async fn publisher_gone(self: &Arc<Self>, stream_id: &str, session: u64, why: &str) {
        let lost = {
            let Ok(mut live) = self.streams.lock() else {
                return;
            };
            match live.get_mut(stream_id) {
                Some(entry)
                    if entry
                        .publisher
                        .as_ref()
                        .is_some_and(|p| p.session == session) =>
                {
                    entry.publisher = None;
                    entry.grace = Some(self.start_grace(stream_id));
                    true
                }
                _ => false,
            }
        };
        if lost {
            live_metrics()
                .ingest_bitrate
                .remove_label_values(&[stream_id])
                .ok();
            self.record(
                stream_id,
                NewEvent::new(
                    EventType::ConnectionLost,
                    format!(
                        "the publisher went away ({why}); waiting {:?} for it to reconnect",
                        self.options.reconnect_grace
                    ),
                ),
            )
            .await;
        }
    }

    fn start_grace(self: &Arc<Self>, stream_id: &str) -> JoinHandle<()> {
        let this = Arc::clone(self);
        let id = stream_id.to_owned();
        let grace = self.options.reconnect_grace;
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            // Let go of this task's own handle first: `end` aborts a pending grace period, and
            // aborting the running task would cancel it at its next await.
            if let Ok(mut live) = this.streams.lock()
                && let Some(entry) = live.get_mut(&id)
            {
                entry.grace = None;
            }
            this.end(
                &id,
                NewEvent::new(
                    EventType::StreamEnded,
                    format!("the publisher did not come back within {grace:?}"),
                ),
            )
            .await;
        })
    }

    /// Ends a live stream now: its publisher is disconnected, the status becomes `ended` and
    /// `event` is recorded. Returns whether the stream was live here.
    pub async fn end(&self, stream_id: &str, event: NewEvent) -> bool {
        let entry = match self.streams.lock() {
            Ok(mut live) => live.remove(stream_id),
            Err(_) => None,
        };
        let was_live = entry.is_some();
        self.packager.end(stream_id);
        if let Some(entry) = entry {
            if let Some(publisher) = entry.publisher {
                let _ = publisher.kick.send(true);
            }
            if let Some(grace) = entry.grace {
                grace.abort();
            }
        }
        self.update_gauge();
        live_metrics().forget(stream_id);
        // The event goes first, so that whoever sees the stream ended also finds why.
        self.record(stream_id, event).await;
        if let Err(e) = self.registry.set_status(stream_id, Status::Ended).await {
            tracing::error!(stream = %stream_id, error = %e, "cannot mark the stream ended");
        }
        was_live
    }

    /// Takes a transcoder report of the publisher session `session`.
    pub async fn transcoder_status(
        self: &Arc<Self>,
        stream_id: &str,
        session: u64,
        status: TranscoderStatus,
    ) {
        let metrics = live_metrics();
        match status {
            TranscoderStatus::Progress(progress) => {
                metrics
                    .transcoder_fps
                    .with_label_values(&[stream_id])
                    .set(progress.fps);
                if let Some(speed) = progress.speed {
                    metrics
                        .transcoder_speed
                        .with_label_values(&[stream_id])
                        .set(speed);
                }
                if let Some(kbps) = progress.bitrate_kbps {
                    metrics
                        .transcoder_bitrate
                        .with_label_values(&[stream_id])
                        .set(kbps);
                }
                metrics
                    .transcoder_dropped
                    .with_label_values(&[stream_id])
                    .set(progress.drop_frames as f64);
                if let Ok(mut live) = self.streams.lock()
                    && let Some(entry) = live.get_mut(stream_id)
                {
                    entry.progress = Some(progress);
                }
            }
            TranscoderStatus::Restarted { reason } => {
                metrics.transcoder_restarts.inc();
                metrics.errors.with_label_values(&["transcoder"]).inc();
                if let Ok(mut live) = self.streams.lock()
                    && let Some(entry) = live.get_mut(stream_id)
                {
                    entry.restarts += 1;
                }
                self.record(
                    stream_id,
                    NewEvent::new(
                        EventType::TranscoderRestarted,
                        "the transcoder failed and was restarted; players see a discontinuity",
                    )
                    .with_details(json!({"reason": reason})),
                )
                .await;
            }
            TranscoderStatus::Failed { reason } => {
                metrics.errors.with_label_values(&["transcoder"]).inc();
                if self.is_current(stream_id, session) {
                    self.fail(stream_id, &format!("the transcoder gave up: {reason}"))
                        .await;
                }
            }
            TranscoderStatus::Finished => {}
        }
    }

    /// Ends the stream with an `error` event saying why (unusable media, transcoder failure).
    pub async fn fail(&self, stream_id: &str, why: &str) {
        live_metrics().errors.with_label_values(&["media"]).inc();
        tracing::warn!(stream = %stream_id, reason = %why, "stream failed");
        self.record(stream_id, NewEvent::new(EventType::Error, why))
            .await;
        self.end(
            stream_id,
            NewEvent::new(
                EventType::StreamEnded,
                format!("the stream ended on an error: {why}"),
            ),
        )
        .await;
    }

    fn is_current(&self, stream_id: &str, session: u64) -> bool {
        self.streams.lock().is_ok_and(|live| {
            live.get(stream_id)
                .and_then(|e| e.publisher.as_ref())
                .is_some_and(|p| p.session == session)
        })
    }

    /// The live state of `stream_id`, if it is live here.
    pub fn view(&self, stream_id: &str) -> Option<LiveView> {
        let live = self.streams.lock().ok()?;
        let entry = live.get(stream_id)?;
        Some(LiveView {
            connected: entry.publisher.is_some(),
            publisher: entry.publisher.as_ref().map(|p| p.peer.to_string()),
            ingest_bitrate: entry
                .publisher
                .as_ref()
                .map_or(0, |p| p.counters.bitrate.load(Ordering::Relaxed)),
            ingest_bytes: entry
                .publisher
                .as_ref()
                .map_or(0, |p| p.counters.bytes.load(Ordering::Relaxed)),
            transcoder: entry.progress.as_ref().map(|p| TranscoderView {
                fps: p.fps,
                speed: p.speed,
                bitrate_kbps: p.bitrate_kbps,
                dropped_frames: p.drop_frames,
                frames: p.frame,
            }),
            transcoder_restarts: entry.restarts,
        })
    }

    /// What each rendition of `stream_id` has handed over (also after the stream ended).
    pub fn renditions(&self, stream_id: &str) -> Vec<RenditionStats> {
        self.monitor.renditions(stream_id)
    }

    /// Forgets a deleted stream's hand-off statistics.
    pub fn forget(&self, stream_id: &str) {
        self.monitor.forget(stream_id);
        self.packager.forget(stream_id);
    }

    /// Disconnects every publisher (shutdown); streams stay live in the registry so that a
    /// restarted origin gives their publishers a grace period to come back.
    pub fn disconnect_all(&self) {
        if let Ok(live) = self.streams.lock() {
            for entry in live.values() {
                if let Some(p) = &entry.publisher {
                    let _ = p.kick.send(true);
                }
            }
        }
    }

    fn update_gauge(&self) {
        if let Ok(live) = self.streams.lock() {
            live_metrics().active_streams.set(live.len() as i64);
        }
    }

    /// Records an event; a registry failure is logged, not fatal.
    pub async fn record(&self, stream_id: &str, event: NewEvent) {
        tracing::info!(stream = %stream_id, event = event.event_type.as_str(), message = %event.message, "stream event");
        if let Err(e) = self.registry.add_event(stream_id, &event).await {
            tracing::error!(stream = %stream_id, error = %e, "cannot record an event");
        }
    }
}
