//! The archive: stores every completed segment and init segment of a live stream in the
//! object store as it is packaged, keeps each live session's recording index there, serves
//! what left the in-memory window (DVR) and finished recordings (`/vod/<recording>/...`),
//! and deletes recordings whose retention ran out.
//!
//! An unreachable store does not stop live delivery or lose the recording: after a few quick
//! attempts an object goes to the local [`spool`], and everything after it too (so the order of
//! writes is kept), until the spool drains into the store again. The outage and the recovery
//! are recorded as events on the stream. A segment that cannot be stored at all (the spool is
//! full, or there is none and the store stayed down for 10 minutes) is recorded as a gap in
//! the recording's index, with an event.
//!
//! The object stores it writes to (filesystem, S3) are in [`store`].

pub mod spool;
pub mod store;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hyper::{Response, StatusCode};
use serde_json::json;
use tokio::sync::mpsc;

use crate::archive::spool::Spool;
use crate::archive::store::{ObjectKey, ObjectStore, StoreError};
use crate::http::{Body, IMMUTABLE, VOD_PLAYLIST, error, full, media_type, reply};
use crate::metrics::delivery_metrics;
use crate::packaging::{ArchiveJob, LivePackager};
use crate::streams::event::{EventType, NewEvent, Severity};
use crate::streams::registry::Registry;
use cascade_media::dash;
use cascade_media::hls::{self, PlaylistKind, Skip};
use cascade_media::packager::{Rendition, Segment, init_file_name};
use cascade_media::recording::{self, RecordingIndex};
use cascade_media::route::Asset;
use cascade_service::clock::now_ms_i64;

/// Longest pause between upload attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A segment that cannot be stored for this long is given up (it stays playable while in
/// the live window).
const GIVE_UP_AFTER: Duration = Duration::from_secs(600);
/// Finished recording indexes kept parsed in memory.
const VOD_CACHE: usize = 64;
/// With a spool, how long an object is tried against the store before it is spooled.
const BEFORE_SPOOLING: Duration = Duration::from_secs(3);
/// With a spool, the longest one attempt may take.
const ATTEMPT_LIMIT: Duration = Duration::from_secs(5);

/// The recording of a live session.
struct LiveRecording {
    index: RecordingIndex,
    failing: bool,
}

/// Archive and VOD.
pub struct Archive {
    store: Arc<dyn ObjectStore>,
    registry: Registry,
    packager: Arc<LivePackager>,
    retention: Duration,
    spool: Option<Arc<Spool>>,
    live: Mutex<HashMap<String, LiveRecording>>,
    vod: Mutex<Vec<(String, Arc<RecordingIndex>)>>,
}

impl Archive {
    /// An archive into `store`, keeping finished recordings for `retention`, spooling what
    /// the store cannot take into `spool` when there is one.
    pub fn new(
        store: Arc<dyn ObjectStore>,
        registry: Registry,
        packager: Arc<LivePackager>,
        retention: Duration,
        spool: Option<Arc<Spool>>,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            registry,
            packager,
            retention,
            spool,
            live: Mutex::new(HashMap::new()),
            vod: Mutex::new(Vec::new()),
        })
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// Recordings left `recording` by a previous run (the origin stopped mid-stream) are
    /// finished: their index holds what was archived.
    pub async fn recover(&self) -> anyhow::Result<()> {
        for rec in self.registry.recordings_in("recording").await? {
            match self.recover_orphans(&rec.id).await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(recording = %rec.id, segments = n, "segments stored after the last index write recovered");
                    let event = NewEvent::new(
                        EventType::Error,
                        format!("{n} segments stored just before the origin stopped were added to recording {}", rec.id),
                    )
                    .with_severity(Severity::Info)
                    .with_details(json!({"recording": rec.id, "segments": n}));
                    self.record(&rec.stream_id, event).await;
                }
                Err(e) => {
                    tracing::warn!(recording = %rec.id, error = %e, "cannot look for segments the index missed")
                }
            }
            self.registry
                .finish_recording(&rec.id, Some(self.expiry()))
                .await?;
            tracing::info!(recording = %rec.id, stream = %rec.stream_id, "recording interrupted by a restart finished");
        }
        Ok(())
    }

    /// Adds to `recording_id`'s index the segments the store holds beyond it: those stored
    /// after the index was last written, when the origin stopped in between. Returns how many.
    async fn recover_orphans(&self, recording_id: &str) -> Result<usize, String> {
        let index_key =
            ObjectKey::new(recording::index_key(recording_id)).map_err(|e| e.to_string())?;
        let Some(bytes) = self
            .store
            .get(&index_key)
            .await
            .map_err(|e| e.to_string())?
        else {
            return Ok(0);
        };
        let mut index: RecordingIndex =
            serde_json::from_slice(&bytes).map_err(|e| format!("index.json: {e}"))?;
        let last: Vec<(String, u64, u32)> = index
            .last_segments()
            .into_iter()
            .map(|(r, msn, init)| (r.to_owned(), msn, init))
            .collect();
        let prefix = recording::prefix(recording_id);
        let mut stored: Vec<(String, u64)> = Vec::new();
        for key in self.store.list(&prefix).await.map_err(|e| e.to_string())? {
            let Some((rendition, file)) = key
                .as_str()
                .strip_prefix(&prefix)
                .and_then(|k| k.split_once('/'))
            else {
                continue;
            };
            let Some(msn) = file
                .strip_suffix(".m4s")
                .and_then(|m| m.parse::<u64>().ok())
            else {
                continue;
            };
            if last
                .iter()
                .any(|(r, newest, _)| r == rendition && msn > *newest)
            {
                stored.push((rendition.to_owned(), msn));
            }
        }
        stored.sort();
        let mut recovered = 0;
        for (rendition, msn) in stored {
            let Some((_, _, init_id)) = last.iter().find(|(r, _, _)| *r == rendition) else {
                continue;
            };
            let get = |file: String| {
                let key = ObjectKey::new(recording::object_key(recording_id, &rendition, &file));
                async move {
                    let key = key.map_err(|e| e.to_string())?;
                    self.store
                        .get(&key)
                        .await
                        .map_err(|e| e.to_string())?
                        .ok_or_else(|| format!("{} is gone", key.as_str()))
                }
            };
            let init = get(init_file_name(*init_id)).await?;
            let segment = get(format!("{msn}.m4s")).await?;
            match cascade_media::fmp4::segment_timing(&init, &segment) {
                Ok(timing) => {
                    if index.recover_segment(&rendition, msn, segment.len() as u64, timing) {
                        recovered += 1;
                    }
                }
                Err(e) => {
                    tracing::warn!(recording = %recording_id, %rendition, msn, error = %e, "a stored segment does not read: left out");
                    index.add_gap(
                        &rendition,
                        msn,
                        &format!("stored but unreadable after a restart: {e}"),
                    );
                }
            }
        }
        if recovered == 0 {
            return Ok(0);
        }
        let json = serde_json::to_vec(&index).map_err(|e| e.to_string())?;
        self.store
            .put(&index_key, Bytes::from(json), "application/json")
            .await
            .map_err(|e| e.to_string())?;
        let duration_ms = (index.duration_seconds() * 1000.0) as i64;
        let bytes = i64::try_from(index.bytes()).unwrap_or(i64::MAX);
        let segments = i64::try_from(index.segment_count()).unwrap_or(i64::MAX);
        self.registry
            .update_recording(recording_id, duration_ms, bytes, segments)
            .await
            .map_err(|e| e.to_string())?;
        Ok(recovered)
    }

    fn expiry(&self) -> i64 {
        now_ms_i64().saturating_add(i64::try_from(self.retention.as_millis()).unwrap_or(i64::MAX))
    }

    /// Stores what the packager reports until the sender is dropped.
    pub async fn run(self: Arc<Self>, mut jobs: mpsc::UnboundedReceiver<ArchiveJob>) {
        while let Some(job) = jobs.recv().await {
            let mut batch = vec![job];
            while let Ok(more) = jobs.try_recv() {
                batch.push(more);
            }
            let mut touched: Vec<String> = Vec::new();
            let backlog = &delivery_metrics().archive_backlog;
            backlog.set(i64::try_from(batch.len()).unwrap_or(i64::MAX));
            for job in batch {
                backlog.dec();
                match job {
                    ArchiveJob::Init {
                        stream_id,
                        rendition,
                        id,
                    } => {
                        self.archive_init(&stream_id, &rendition, id).await;
                        push_unique(&mut touched, stream_id);
                    }
                    ArchiveJob::Segment {
                        stream_id,
                        rendition,
                        msn,
                    } => {
                        self.archive_segment(&stream_id, &rendition, msn).await;
                        push_unique(&mut touched, stream_id);
                    }
                    ArchiveJob::StreamEnded { stream_id } => {
                        self.write_index(&stream_id).await;
                        self.finish(&stream_id).await;
                        touched.retain(|s| *s != stream_id);
                    }
                }
            }
            for stream_id in touched {
                self.write_index(&stream_id).await;
            }
        }
    }

    /// The recording id of `stream_id`'s live session, started on first use.
    async fn recording_of(&self, stream_id: &str, segment_target: f64) -> Option<String> {
        if let Some(id) = self.live_recording_id(stream_id) {
            return Some(id);
        }
        match self.registry.create_recording(stream_id).await {
            Ok(rec) => {
                tracing::info!(stream = %stream_id, recording = %rec.id, "recording started");
                if let Ok(mut live) = self.live.lock() {
                    live.insert(
                        stream_id.to_owned(),
                        LiveRecording {
                            index: RecordingIndex::new(&rec.id, stream_id, segment_target),
                            failing: false,
                        },
                    );
                }
                Some(rec.id)
            }
            Err(e) => {
                tracing::error!(stream = %stream_id, error = %e, "cannot start a recording");
                None
            }
        }
    }

    fn live_recording_id(&self, stream_id: &str) -> Option<String> {
        self.live
            .lock()
            .ok()?
            .get(stream_id)
            .map(|r| r.index.recording_id.clone())
    }

    async fn archive_init(&self, stream_id: &str, rendition: &str, id: u32) {
        let Some((header, bytes, target)) = self.packager.get(stream_id).and_then(|m| {
            let state = m.lock()?;
            let r = state.rendition(rendition)?;
            Some((
                r.header(),
                r.init(id)?.bytes.clone(),
                state.settings().segment_target,
            ))
        }) else {
            return;
        };
        let Some(recording) = self.recording_of(stream_id, target).await else {
            return;
        };
        let key = recording::object_key(&recording, rendition, &init_file_name(id));
        if self
            .put(stream_id, &key, bytes, media_type(&header))
            .await
            .is_ok()
            && let Ok(mut live) = self.live.lock()
            && let Some(rec) = live.get_mut(stream_id)
        {
            rec.index.add_init(&header, id);
        }
    }

    async fn archive_segment(&self, stream_id: &str, rendition: &str, msn: u64) {
        let Some(media) = self.packager.get(stream_id) else {
            return;
        };
        let found: Option<(Rendition, Segment, Bytes, f64)> = media.lock().and_then(|state| {
            let r = state.rendition(rendition)?;
            let segment = r.segment(msn)?;
            Some((
                r.header(),
                segment.clone(),
                segment.bytes()?,
                state.settings().segment_target,
            ))
        });
        let Some((header, segment, bytes, target)) = found else {
            tracing::warn!(stream = %stream_id, %rendition, msn, "segment left memory before it was archived");
            self.lost(
                stream_id,
                rendition,
                msn,
                "it left memory before it was archived",
            )
            .await;
            return;
        };
        let Some(recording) = self.recording_of(stream_id, target).await else {
            return;
        };
        let key = recording::object_key(&recording, rendition, &format!("{msn}.m4s"));
        if let Err(lost) = self.put(stream_id, &key, bytes, media_type(&header)).await {
            self.lost(stream_id, rendition, msn, &lost).await;
            return;
        }
        if let Some(mut state) = media.lock() {
            state.mark_archived(rendition, msn);
        }
        if let Ok(mut live) = self.live.lock()
            && let Some(rec) = live.get_mut(stream_id)
        {
            rec.index.add_segment(&header, &segment);
        }
    }

    /// Stores one object: in the store, or in the spool while the store fails. Records an
    /// event when the store starts failing and when it recovers. An error says why the object
    /// is lost.
    async fn put(
        &self,
        stream_id: &str,
        key: &str,
        bytes: Bytes,
        content_type: &str,
    ) -> Result<(), String> {
        let key = ObjectKey::new(key).map_err(|e| e.to_string())?;
        let Some(spool) = &self.spool else {
            return self
                .put_with_retries(stream_id, &key, bytes, content_type, GIVE_UP_AFTER, None)
                .await
                .map_err(|e| e.to_string());
        };
        // Behind objects already waiting, the object waits too: the store sees writes in order.
        if spool.is_empty() {
            match self
                .put_with_retries(
                    stream_id,
                    &key,
                    bytes.clone(),
                    content_type,
                    BEFORE_SPOOLING,
                    Some(ATTEMPT_LIMIT),
                )
                .await
            {
                Ok(()) => return Ok(()),
                Err(e) if !e.is_retryable() => return Err(e.to_string()),
                Err(_) => {}
            }
        }
        match spool.put(stream_id, key.as_str(), &bytes, content_type) {
            Ok(()) => {
                publish_spool_usage(spool);
                Ok(())
            }
            Err(e) => {
                tracing::error!(stream = %stream_id, %key, error = %e, "cannot spool an object the store does not take");
                Err(e.to_string())
            }
        }
    }

    /// Tries the store for up to `for_at_most`, with backoff, each attempt bounded by
    /// `attempt_limit` (a store that hangs counts as failing).
    async fn put_with_retries(
        &self,
        stream_id: &str,
        key: &ObjectKey,
        bytes: Bytes,
        content_type: &str,
        for_at_most: Duration,
        attempt_limit: Option<Duration>,
    ) -> Result<(), StoreError> {
        let started = tokio::time::Instant::now();
        let mut backoff = Duration::from_millis(250);
        loop {
            let attempt = self.store.put(key, bytes.clone(), content_type);
            let result = match attempt_limit {
                Some(limit) => tokio::time::timeout(limit, attempt)
                    .await
                    .unwrap_or_else(|_| Err(StoreError::timed_out("put", key.as_str(), limit))),
                None => attempt.await,
            };
            match result {
                Ok(()) => {
                    self.set_failing(stream_id, None).await;
                    return Ok(());
                }
                Err(e) if e.is_retryable() && started.elapsed() < for_at_most => {
                    tracing::warn!(stream = %stream_id, %key, error = %e, "archive upload failed; retrying");
                    self.set_failing(stream_id, Some(&e)).await;
                    tokio::time::sleep(backoff.min(for_at_most)).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                Err(e) => {
                    if self.spool.is_none() || !e.is_retryable() {
                        tracing::error!(stream = %stream_id, %key, error = %e, "archive upload given up");
                    }
                    self.set_failing(stream_id, Some(&e)).await;
                    return Err(e);
                }
            }
        }
    }

    /// Records that segment `msn` of `rendition` will not be in the recording.
    async fn lost(&self, stream_id: &str, rendition: &str, msn: u64, why: &str) {
        let recording = match self.live.lock() {
            Ok(mut live) => live.get_mut(stream_id).map(|rec| {
                rec.index.add_gap(rendition, msn, why);
                rec.index.recording_id.clone()
            }),
            Err(_) => None,
        };
        tracing::error!(stream = %stream_id, %rendition, msn, why, "a segment is missing from the recording");
        self.record(
            stream_id,
            NewEvent::new(
                EventType::Error,
                format!("segment {msn} of {rendition} is missing from the recording: {why}"),
            )
            .with_severity(Severity::Error)
            .with_details(json!({"recording": recording, "rendition": rendition, "msn": msn})),
        )
        .await;
    }

    /// Uploads what the spool holds, oldest first, until the task is dropped; records on
    /// each stream concerned when its objects are all stored.
    pub async fn drain_spool(self: Arc<Self>) {
        let Some(spool) = self.spool.clone() else {
            return;
        };
        let mut backoff = Duration::from_millis(250);
        let mut streams: Vec<String> = Vec::new();
        let mut uploaded = 0usize;
        loop {
            publish_spool_usage(&spool);
            let Some(entry) = spool.oldest() else {
                for stream_id in streams.drain(..) {
                    self.record(
                        &stream_id,
                        NewEvent::new(
                            EventType::Error,
                            format!(
                                "{uploaded} objects kept in the local spool while the store failed are now stored"
                            ),
                        )
                        .with_severity(Severity::Info),
                    )
                    .await;
                }
                uploaded = 0;
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            let stored = match (ObjectKey::new(&entry.key), spool.read(&entry)) {
                (Ok(key), Ok(bytes)) => tokio::time::timeout(
                    ATTEMPT_LIMIT,
                    self.store.put(&key, bytes, &entry.content_type),
                )
                .await
                .unwrap_or_else(|_| Err(StoreError::timed_out("put", &entry.key, ATTEMPT_LIMIT)))
                .map_err(|e| (e.is_retryable(), e.to_string())),
                (Err(e), _) => Err((false, e.to_string())),
                (_, Err(e)) => Err((false, e)),
            };
            match stored {
                Ok(()) => {
                    backoff = Duration::from_millis(250);
                    uploaded += 1;
                    push_unique(&mut streams, entry.stream_id.clone());
                    if let Err(e) = spool.remove(&entry) {
                        tracing::error!(error = %e, "cannot remove an uploaded object from the spool");
                        tokio::time::sleep(MAX_BACKOFF).await;
                    }
                }
                Err((true, e)) => {
                    tracing::warn!(key = %entry.key, error = %e, "the store still fails; the spool waits");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                Err((false, e)) => {
                    tracing::error!(key = %entry.key, error = %e, "a spooled object cannot be stored; dropped");
                    push_unique(&mut streams, entry.stream_id.clone());
                    self.record(
                        &entry.stream_id,
                        NewEvent::new(
                            EventType::Error,
                            format!("a spooled object could not be stored: {e}"),
                        )
                        .with_severity(Severity::Error)
                        .with_details(json!({"key": entry.key})),
                    )
                    .await;
                    if let Err(e) = spool.remove(&entry) {
                        tracing::error!(error = %e, "cannot remove a spooled object");
                        tokio::time::sleep(MAX_BACKOFF).await;
                    }
                }
            }
        }
    }

    async fn set_failing(&self, stream_id: &str, failure: Option<&StoreError>) {
        let changed = match self.live.lock() {
            Ok(mut live) => match live.get_mut(stream_id) {
                Some(rec) if rec.failing != failure.is_some() => {
                    rec.failing = failure.is_some();
                    true
                }
                _ => false,
            },
            Err(_) => false,
        };
        if !changed {
            return;
        }
        let event = match failure {
            Some(e) => NewEvent::new(
                EventType::Error,
                format!(
                    "the {} archive is failing; retrying, live delivery continues from memory",
                    self.store.backend()
                ),
            )
            .with_severity(Severity::Warning)
            .with_details(json!({"error": e.to_string()})),
            None => NewEvent::new(EventType::Error, "the archive recovered")
                .with_severity(Severity::Info),
        };
        self.record(stream_id, event).await;
    }

    async fn record(&self, stream_id: &str, event: NewEvent) {
        if let Err(e) = self.registry.add_event(stream_id, &event).await {
            tracing::error!(stream = %stream_id, error = %e, "cannot record an event");
        }
    }

    /// Writes the live recording's index and its totals.
    async fn write_index(&self, stream_id: &str) {
        let index = match self.live.lock() {
            Ok(live) => match live.get(stream_id) {
                Some(rec) => rec.index.clone(),
                None => return,
            },
            Err(_) => return,
        };
        let Ok(json) = serde_json::to_vec(&index) else {
            return;
        };
        let key = recording::index_key(&index.recording_id);
        if self
            .put(stream_id, &key, Bytes::from(json), "application/json")
            .await
            .is_err()
        {
            return;
        }
        let duration_ms = (index.duration_seconds() * 1000.0) as i64;
        let bytes = i64::try_from(index.bytes()).unwrap_or(i64::MAX);
        let segments = i64::try_from(index.segment_count()).unwrap_or(i64::MAX);
        if let Err(e) = self
            .registry
            .update_recording(&index.recording_id, duration_ms, bytes, segments)
            .await
        {
            tracing::error!(recording = %index.recording_id, error = %e, "cannot update the recording");
        }
    }

    async fn finish(&self, stream_id: &str) {
        let rec = match self.live.lock() {
            Ok(mut live) => live.remove(stream_id),
            Err(_) => None,
        };
        let Some(rec) = rec else {
            return;
        };
        let id = rec.index.recording_id;
        match self
            .registry
            .finish_recording(&id, Some(self.expiry()))
            .await
        {
            Ok(()) => tracing::info!(stream = %stream_id, recording = %id, "recording finished"),
            Err(e) => tracing::error!(recording = %id, error = %e, "cannot finish the recording"),
        }
    }

    /// An archived object of `stream_id`'s latest recording (`<rendition>/<file>`), for DVR
    /// requests beyond the in-memory window.
    pub async fn live_object(&self, stream_id: &str, rendition: &str, file: &str) -> Option<Bytes> {
        let recording = match self.live_recording_id(stream_id) {
            Some(id) => id,
            None => self
                .registry
                .list_recordings(stream_id)
                .await
                .ok()?
                .first()?
                .id
                .clone(),
        };
        let key = ObjectKey::new(recording::object_key(&recording, rendition, file)).ok()?;
        self.store.get(&key).await.ok().flatten()
    }

    async fn index(&self, recording_id: &str) -> Result<Option<Arc<RecordingIndex>>, String> {
        if let Ok(cache) = self.vod.lock()
            && let Some((_, index)) = cache.iter().find(|(id, _)| id == recording_id)
        {
            return Ok(Some(Arc::clone(index)));
        }
        let key = ObjectKey::new(recording::index_key(recording_id)).map_err(|e| e.to_string())?;
        let Some(bytes) = self.store.get(&key).await.map_err(|e| e.to_string())? else {
            return Ok(None);
        };
        let index: RecordingIndex = serde_json::from_slice(&bytes)
            .map_err(|e| format!("the index of recording {recording_id} is unreadable: {e}"))?;
        let index = Arc::new(index);
        if let Ok(mut cache) = self.vod.lock() {
            if cache.len() >= VOD_CACHE {
                cache.remove(0);
            }
            cache.push((recording_id.to_owned(), Arc::clone(&index)));
        }
        Ok(Some(index))
    }

    fn forget_index(&self, recording_id: &str) {
        if let Ok(mut cache) = self.vod.lock() {
            cache.retain(|(id, _)| id != recording_id);
        }
    }

    /// Answers `/vod/<recording>/<asset>`.
    pub async fn serve_vod(&self, recording_id: &str, asset: Asset) -> Response<Body> {
        let rec = match self.registry.get_recording(recording_id).await {
            Ok(Some(rec)) => rec,
            Ok(None) => {
                return error(
                    StatusCode::NOT_FOUND,
                    "",
                    format!("no recording {recording_id}"),
                );
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot read the registry");
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "",
                    "the registry is unavailable",
                );
            }
        };
        let key = format!(
            "stream/{} {}",
            rec.stream_id,
            crate::http::surrogate_key("recording", recording_id, asset.rendition())
        );
        if rec.status == "recording" {
            return error(
                StatusCode::NOT_FOUND,
                &key,
                format!(
                    "recording {recording_id} is still live; play it at /live/{}/",
                    rec.stream_id
                ),
            );
        }
        let index = match self.index(recording_id).await {
            Ok(Some(index)) => index,
            Ok(None) => return error(StatusCode::NOT_FOUND, &key, "the recording holds no media"),
            Err(e) => {
                tracing::error!(recording = %recording_id, error = %e, "cannot read a recording index");
                return error(StatusCode::SERVICE_UNAVAILABLE, &key, e);
            }
        };
        let renditions = index.renditions();
        let refs: Vec<&Rendition> = renditions.iter().collect();
        let find = |name: &str| renditions.iter().find(|r| r.name == name);
        match asset {
            Asset::Multivariant => reply(
                StatusCode::OK,
                "application/vnd.apple.mpegurl",
                VOD_PLAYLIST,
                &key,
                full(hls::multivariant(&refs, 7)),
            ),
            Asset::Manifest => reply(
                StatusCode::OK,
                "application/dash+xml",
                VOD_PLAYLIST,
                &key,
                full(dash::vod_mpd(&refs)),
            ),
            Asset::MediaPlaylist { rendition } => match find(&rendition) {
                Some(r) => reply(
                    StatusCode::OK,
                    "application/vnd.apple.mpegurl",
                    VOD_PLAYLIST,
                    &key,
                    full(hls::media_playlist(
                        r,
                        PlaylistKind::Vod,
                        Skip::No,
                        &[],
                        true,
                    )),
                ),
                None => error(
                    StatusCode::NOT_FOUND,
                    &key,
                    format!("no rendition {rendition}"),
                ),
            },
            Asset::Init { rendition, id } => {
                self.vod_object(recording_id, find(&rendition), &init_file_name(id), &key)
                    .await
            }
            Asset::Segment { rendition, msn } => {
                self.vod_object(recording_id, find(&rendition), &format!("{msn}.m4s"), &key)
                    .await
            }
            Asset::Part { .. } => error(
                StatusCode::NOT_FOUND,
                &key,
                "recordings have no parts; ask for the segment",
            ),
            Asset::Thumbnail => error(StatusCode::NOT_FOUND, &key, "recordings have no thumbnail"),
        }
    }

    async fn vod_object(
        &self,
        recording_id: &str,
        rendition: Option<&Rendition>,
        file: &str,
        key: &str,
    ) -> Response<Body> {
        let Some(rendition) = rendition else {
            return error(StatusCode::NOT_FOUND, key, "no such rendition");
        };
        let Ok(object) = ObjectKey::new(recording::object_key(recording_id, &rendition.name, file))
        else {
            return error(StatusCode::NOT_FOUND, key, format!("no {file}"));
        };
        match self.store.get(&object).await {
            Ok(Some(bytes)) => reply(
                StatusCode::OK,
                media_type(rendition),
                IMMUTABLE,
                key,
                full(bytes),
            ),
            Ok(None) => error(
                StatusCode::NOT_FOUND,
                key,
                format!("no {file} in {}", rendition.name),
            ),
            Err(e) => {
                tracing::error!(recording = %recording_id, error = %e, "archive read failed");
                error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    key,
                    "the archive is unavailable",
                )
            }
        }
    }

    /// Deletes recordings whose retention ended; returns how many.
    pub async fn enforce_retention(&self) -> usize {
        let expired = match self.registry.expired_recordings(now_ms_i64()).await {
            Ok(expired) => expired,
            Err(e) => {
                tracing::error!(error = %e, "cannot list expired recordings");
                return 0;
            }
        };
        let mut deleted = 0;
        for rec in expired {
            match self
                .registry
                .claim_expired_recording(&rec.id, now_ms_i64())
                .await
            {
                Ok(true) => {}
                Ok(false) => continue, // converted to VOD since it was listed
                Err(e) => {
                    tracing::error!(recording = %rec.id, error = %e, "cannot claim an expired recording");
                    continue;
                }
            }
            match self.store.delete_prefix(&recording::prefix(&rec.id)).await {
                Ok(objects) => {
                    self.forget_index(&rec.id);
                    if let Err(e) = self.registry.delete_recording(&rec.id).await {
                        tracing::error!(recording = %rec.id, error = %e, "cannot forget a recording");
                        continue;
                    }
                    tracing::info!(recording = %rec.id, objects, "expired recording deleted");
                    deleted += 1;
                }
                Err(e) => {
                    tracing::warn!(recording = %rec.id, error = %e, "cannot delete an expired recording; will retry");
                }
            }
        }
        deleted
    }

    /// Deletes a recording now (API); false when there is none.
    pub async fn delete(&self, recording_id: &str) -> anyhow::Result<bool> {
        self.store
            .delete_prefix(&recording::prefix(recording_id))
            .await?;
        self.forget_index(recording_id);
        Ok(self.registry.delete_recording(recording_id).await?)
    }

    /// Runs retention every `every` forever.
    pub async fn retention_loop(self: Arc<Self>, every: Duration) {
        loop {
            tokio::time::sleep(every).await;
            self.enforce_retention().await;
        }
    }
}

fn publish_spool_usage(spool: &Spool) {
    let (objects, bytes) = spool.usage();
    let metrics = delivery_metrics();
    metrics
        .spool_objects
        .set(i64::try_from(objects).unwrap_or(i64::MAX));
    metrics
        .spool_bytes
        .set(i64::try_from(bytes).unwrap_or(i64::MAX));
}

fn push_unique(list: &mut Vec<String>, item: String) {
    if !list.contains(&item) {
        list.push(item);
    }
}

/// Totals of a recording for the API.
pub fn recording_json(
    rec: &crate::streams::registry::RecordingRecord,
    http_base: &str,
) -> serde_json::Value {
    json!({
        "id": rec.id,
        "stream_id": rec.stream_id,
        "status": rec.status,
        "started_at": hls::date_time(u64::try_from(rec.started_at).unwrap_or(0)),
        "ended_at": rec.ended_at.map(|t| hls::date_time(u64::try_from(t).unwrap_or(0))),
        "duration": rec.duration_ms as f64 / 1000.0,
        "size_bytes": rec.size_bytes,
        "segments": rec.segments,
        "expires_at": rec.expires_at.map(|t| hls::date_time(u64::try_from(t).unwrap_or(0))),
        "playback": {
            "hls": format!("{http_base}/vod/{}/master.m3u8", rec.id),
            "dash": format!("{http_base}/vod/{}/manifest.mpd", rec.id),
        },
    })
}
