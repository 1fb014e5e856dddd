//! The object store behind pingora-cache: a size-weighted moka cache of complete objects in
//! memory, a table of fills in progress, and optionally a [`DiskTier`] below (the shield's):
//! finished fills that stay fresh a while are also queued to disk, and a memory miss looks
//! there before going upstream.
//!
//! - **Zero-copy hits**: bodies are kept as the `Bytes` chunks they arrived in and handed out by
//!   reference count; metadata is kept decoded and rebuilt without parsing.
//! - **Streaming partial writes**: readers attach to a fill while it is still arriving and get
//!   each chunk as it is written.
//! - **Aborted fills fail loudly**: a reader of a fill whose writer gave up gets an error, never
//!   a truncated body that looks complete.
//! - **Purges stick**: a fill in progress when its key is purged is not stored when it ends.
//! - **Purge by URL, prefix, host, tag or everything**: objects are indexed by readable key and
//!   surrogate tags ([`crate::policy::purge`]), kept in step with insertion and eviction.
//!
//! Here: [`TieredStorage`] and its pingora `Storage` implementation. Beside it: complete objects
//! (`object`), fills and their writer (`fill`), hit handlers (`hit`), bulk-purge tombstones
//! (`tombstone`), the disk queue (`disk_queue`), and the disk tier with its file format
//! ([`disk`], [`disk_format`]).

pub mod disk;
pub mod disk_format;

use std::any::Any;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use moka::notification::RemovalCause;
use moka::ops::compute::Op;
use pingora_cache::key::{CacheHashKey, HashBinary};
use pingora_cache::storage::{HandleHit, HandleMiss, MissFinishType};
use pingora_cache::trace::SpanHandle;
use pingora_cache::{
    CacheKey, CacheMeta, HitHandler, MissHandler, PurgeOutcome, PurgeTarget, PurgeType, Storage,
};
use pingora_error::{Error, ErrorType, Result};
use pingora_http::ResponseHeader;
use tokio::sync::watch;

use crate::policy::crowd::{CrowdGate, Pacing};
use crate::policy::purge::{PurgeIndex, PurgeLog, Selector, surrogate_tags};
use crate::storage::disk::{DiskEntry, DiskTier, read_block};
use crate::storage::disk_format::DiskHeader;
use cascade_service::sync::lock;

pub use pingora_cache::PurgeAction;

mod disk_queue;
mod fill;
mod hit;
mod object;
mod tombstone;

use disk_queue::*;
use fill::*;
use hit::*;
use object::*;
use tombstone::*;

pub use hit::pace_for_crowd;
pub use tombstone::BULK_PURGE;

/// Counters the metrics module exports.
#[derive(Debug, Default)]
pub struct StorageStats {
    /// Objects evicted to make room.
    pub evictions: AtomicU64,
    /// Fills whose writer gave up.
    pub aborted_fills: AtomicU64,
}

/// The store. Create one per process with [`TieredStorage::leak`]: pingora-cache needs
/// `&'static` storage.
pub struct TieredStorage {
    objects: moka::sync::Cache<HashBinary, Arc<CachedObject>>,
    tombstones: Arc<Tombstones>,
    fills: Mutex<HashMap<HashBinary, Arc<Fill>>>,
    index: Arc<Mutex<PurgeIndex>>,
    purge_log: Mutex<PurgeLog>,
    next_fill: AtomicU64,
    next_generation: AtomicU64,
    stats: Arc<StorageStats>,
    capacity: u64,
    disk: Option<DiskLayer>,
}

impl TieredStorage {
    /// A store holding at most `capacity` bytes (bodies plus a fixed per-object overhead).
    pub fn new(capacity: u64) -> Self {
        let stats = Arc::new(StorageStats::default());
        let listener_stats = Arc::clone(&stats);
        let index = Arc::new(Mutex::new(PurgeIndex::default()));
        let listener_index = Arc::clone(&index);
        let objects = moka::sync::Cache::builder()
            .max_capacity(capacity)
            .weigher(|_key: &HashBinary, obj: &Arc<CachedObject>| {
                u32::try_from(obj.len + OBJECT_OVERHEAD).unwrap_or(u32::MAX)
            })
            .eviction_listener(move |_key, obj: Arc<CachedObject>, cause| {
                if cause == RemovalCause::Size {
                    listener_stats.evictions.fetch_add(1, Ordering::Relaxed);
                }
                // A replacement re-indexed itself when it was stored.
                if cause != RemovalCause::Replaced {
                    lock(&listener_index).remove(&obj.key, obj.generation);
                }
            })
            .build();
        Self {
            objects,
            tombstones: Arc::new(Tombstones::default()),
            fills: Mutex::new(HashMap::new()),
            index,
            purge_log: Mutex::new(PurgeLog::default()),
            next_fill: AtomicU64::new(1),
            next_generation: AtomicU64::new(1),
            stats,
            capacity,
            disk: None,
        }
    }

    /// A `'static` memory-only store, as pingora-cache requires. Call once per process.
    pub fn leak(capacity: u64) -> &'static Self {
        Box::leak(Box::new(Self::new(capacity)))
    }

    /// A `'static` store with `disk` below the memory tier, and the thread that writes to it.
    pub fn leak_with_disk(capacity: u64, disk: DiskTier) -> std::io::Result<&'static Self> {
        let (queue, jobs) = std::sync::mpsc::sync_channel::<DiskJob>(DISK_QUEUE);
        let storage: &'static Self = Box::leak(Box::new(Self {
            disk: Some(DiskLayer {
                tier: Arc::new(disk),
                queue,
                purge_lock: Mutex::new(()),
            }),
            ..Self::new(capacity)
        }));
        std::thread::Builder::new()
            .name("disk-writer".into())
            .spawn(move || {
                for job in jobs {
                    storage.write_to_disk(job);
                }
            })?;
        Ok(storage)
    }

    /// The disk tier, if this store has one.
    pub fn disk(&self) -> Option<&DiskTier> {
        self.disk.as_ref().map(|d| &*d.tier)
    }

    fn queue_for_disk(&self, id: HashBinary, obj: &CachedObject) {
        let Some(disk) = &self.disk else { return };
        let fresh_for = obj
            .meta
            .fresh_until
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        if fresh_for < DISK_MIN_FRESH || obj.meta.header.status.as_u16() != 200 {
            return;
        }
        let skipped = &disk.tier.stats().skipped_writes;
        if !disk.tier.admitting() {
            skipped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let job = DiskJob {
            id,
            key: obj.key.clone(),
            tags: obj.tags.clone(),
            meta: obj.meta.clone(),
            chunks: obj.chunks.clone(),
            queued_at: SystemTime::now(),
        };
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = disk.queue.try_send(job)
        {
            skipped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn write_to_disk(&self, job: DiskJob) {
        let Some(disk) = &self.disk else { return };
        let (internal, header) = match job.meta.to_meta().serialize() {
            Ok(parts) => parts,
            Err(e) => {
                tracing::warn!(key = %job.key, error = %e, "cannot serialise metadata; not writing to disk");
                return;
            }
        };
        let header = DiskHeader::for_body(job.key, job.tags, internal, header, &job.chunks);
        let (key, tags) = (header.key.clone(), header.tags.clone());
        disk.tier
            .write(job.id, header, &job.chunks, &disk.purge_lock, || {
                !self.predates_purge(&key, &tags, job.queued_at)
            });
    }

    async fn disk_lookup(&self, id: HashBinary) -> Option<(CacheMeta, HitHandler)> {
        let disk = self.disk.as_ref()?;
        let entry = disk.tier.get(&id)?;
        let tier = Arc::clone(&disk.tier);
        let opened_entry = Arc::clone(&entry);
        let (file, first) =
            tokio::task::spawn_blocking(move || tier.open_entry(&id, &opened_entry))
                .await
                .ok()
                .flatten()?;
        let meta =
            match CacheMeta::deserialize(&entry.header.meta_internal, &entry.header.meta_header) {
                Ok(meta) => meta,
                Err(e) => {
                    disk.tier
                        .drop_damaged(&id, &entry, &format!("metadata: {e}"));
                    return None;
                }
            };
        disk.tier.stats().hits.fetch_add(1, Ordering::Relaxed);
        let end = entry.header.body_len;
        Some((
            meta,
            Box::new(DiskHit {
                tier: Arc::clone(&disk.tier),
                id,
                entry,
                file: Arc::new(file),
                first,
                pos: 0,
                end,
            }),
        ))
    }

    /// Removes the objects `select` picks from disk, holding the purge lock; returns those
    /// that were there.
    fn purge_disk(&self, select: impl FnOnce(&DiskTier) -> Vec<HashBinary>) -> Vec<HashBinary> {
        let Some(disk) = &self.disk else {
            return Vec::new();
        };
        let _writer_waits = lock(&disk.purge_lock);
        let mut ids = select(&disk.tier);
        ids.retain(|id| disk.tier.remove(id));
        ids
    }

    /// Configured capacity in bytes.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Bytes currently charged (after moka's pending maintenance has run).
    pub fn weighted_size(&self) -> u64 {
        self.objects.run_pending_tasks();
        self.objects.weighted_size()
    }

    /// Complete objects held.
    pub fn entry_count(&self) -> u64 {
        self.objects.run_pending_tasks();
        self.objects.entry_count()
    }

    /// Fills in progress.
    pub fn fills_in_progress(&self) -> usize {
        self.lock_fills().len()
    }

    /// Eviction and abort counters.
    pub fn stats(&self) -> &StorageStats {
        &self.stats
    }

    /// Removes the object with hash `id` and cancels any fill of it. True if there was either.
    pub fn remove(&self, id: &HashBinary) -> bool {
        let fill = self.lock_fills().remove(id);
        if let Some(fill) = &fill {
            fill.purged.store(true, Ordering::Release);
        }
        let on_disk = !self.purge_disk(|_| vec![*id]).is_empty();
        self.objects.remove(id).is_some() || fill.is_some() || on_disk
    }

    /// Marks the object with hash `id` stale, keeping its body for revalidation. True if found.
    pub fn expire(&self, id: &HashBinary, now: SystemTime) -> bool {
        // A fill in progress carries the content being purged: cancel it.
        if let Some(fill) = self.lock_fills().remove(id) {
            fill.purged.store(true, Ordering::Release);
        }
        // The disk copy is dropped rather than rewritten: a refetch is as correct as a
        // revalidation, and a file cannot come back fresh after a restart.
        let on_disk = !self.purge_disk(|_| vec![*id]).is_empty();
        match self.objects.get(id) {
            Some(obj) => {
                let mut meta = obj.meta.clone();
                meta.fresh_until = meta.fresh_until.min(now);
                // A purged copy is not served while revalidating: the next request waits for
                // the revalidation (a 304 still reuses the body). Stale-if-error remains.
                meta.stale_while_revalidate = 0;
                self.store(*id, obj.with_meta(meta));
                true
            }
            None => on_disk,
        }
    }

    /// Removes everything.
    pub fn clear(&self) {
        for (_, fill) in self.lock_fills().drain() {
            fill.purged.store(true, Ordering::Release);
        }
        self.objects.invalidate_all();
        lock(&self.index).clear();
        if let Some(disk) = &self.disk {
            let _writer_waits = lock(&disk.purge_lock);
            disk.tier.clear();
        }
    }

    /// Applies a purge: removes (`Delete`) or marks stale (`Expire`) every object `selector`
    /// names, and cancels matching fills in progress. Returns how many objects it hit.
    pub fn purge_matching(&self, selector: &Selector, action: PurgeAction) -> usize {
        let now = SystemTime::now();
        self.purge_matching_since(selector, action, now)
    }

    /// Like [`TieredStorage::purge_matching`] for a purge that took effect at `since` (when
    /// the bus accepted it): copies first fetched from the origin before then are refused
    /// when a parent tier hands them back.
    pub fn purge_matching_since(
        &self,
        selector: &Selector,
        action: PurgeAction,
        since: SystemTime,
    ) -> usize {
        let now = SystemTime::now();
        lock(&self.purge_log).record(selector.clone(), since, now);
        if *selector == Selector::All && action == PurgeAction::Delete {
            self.objects.run_pending_tasks();
            let on_disk = self.disk().map_or(0, DiskTier::entry_count);
            let count = usize::try_from(self.objects.entry_count().max(on_disk))
                .unwrap_or(usize::MAX)
                + self.fills_in_progress();
            self.clear();
            return count;
        }
        let mut hit = 0;
        {
            let mut fills = self.lock_fills();
            fills.retain(|_, fill| {
                let selected = selector.matches(&fill.key_text, &fill.tags);
                if selected {
                    fill.purged.store(true, Ordering::Release);
                    hit += 1;
                }
                !selected
            });
        }
        // A large delete is counted and buried rather than removed here (see `bury`).
        let bulk = match action {
            PurgeAction::Delete => {
                Some(lock(&self.index).count(selector)).filter(|&selected| selected >= BULK_PURGE)
            }
            PurgeAction::Expire => None,
        };
        let ids = match bulk {
            Some(selected) => {
                hit += selected;
                self.bury(selector);
                Vec::new()
            }
            None => lock(&self.index).select(selector),
        };
        for id in &ids {
            let found = match action {
                PurgeAction::Delete => self.objects.remove(id).is_some(),
                PurgeAction::Expire => self.expire(id, now),
            };
            hit += usize::from(found);
        }
        // Disk copies go whatever the action (see `expire`); count those not in memory.
        let removed = self.purge_disk(|disk| disk.select(selector));
        hit += match bulk {
            Some(selected) => removed.len().saturating_sub(selected),
            None => removed.iter().filter(|id| !ids.contains(id)).count(),
        };
        hit
    }

    /// True when a copy of `key` (with `tags`) first fetched from the origin at `fetched`
    /// predates a purge this node applied: storing it would undo the purge.
    pub fn predates_purge(&self, key: &str, tags: &[String], fetched: SystemTime) -> bool {
        let log = lock(&self.purge_log);
        !log.is_empty() && log.is_stale(key, tags, fetched)
    }

    /// When the newest purge naming `key` was applied, if within the remembered window.
    pub fn recently_purged(&self, key: &str) -> Option<SystemTime> {
        let log = lock(&self.purge_log);
        if log.is_empty() {
            None
        } else {
            log.newest_matching(key, &[])
        }
    }

    /// Objects in the purge index (equals the complete objects once moka's pending
    /// maintenance has run).
    pub fn indexed(&self) -> usize {
        lock(&self.index).len()
    }

    /// Inserts `obj` under `id` with a fresh generation and indexes it.
    /// Deletes many objects without making the purge wait: a tombstone hides them from
    /// lookups at once, and a background thread removes them, sparing any copy stored after
    /// the purge.
    fn bury(&self, selector: &Selector) {
        let tombstone = Tombstone {
            selector: selector.clone(),
            before: self.next_generation.load(Ordering::Acquire),
        };
        self.tombstones.add(tombstone.clone());
        let objects = self.objects.clone();
        let index = Arc::clone(&self.index);
        let tombstones = Arc::clone(&self.tombstones);
        let spawned = std::thread::Builder::new()
            .name("cascade-purge".into())
            .spawn(move || {
                let ids = lock(&index).select(&tombstone.selector);
                for id in ids {
                    objects.entry(id).and_compute_with(|entry| match entry {
                        Some(e) if e.value().generation < tombstone.before => Op::Remove,
                        _ => Op::Nop,
                    });
                }
                tombstones.remove(&tombstone);
            });
        if let Err(e) = spawned {
            // No thread to spare: the tombstone keeps hiding the objects until they age out.
            tracing::error!(error = %e, "could not start a purge thread");
        }
    }

    fn store(&self, id: HashBinary, mut obj: CachedObject) {
        obj.generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
        lock(&self.index).insert(&obj.key, id, obj.generation, &obj.tags);
        self.objects.insert(id, Arc::new(obj));
    }

    fn lock_fills(&self) -> std::sync::MutexGuard<'_, HashMap<HashBinary, Arc<Fill>>> {
        lock(&self.fills)
    }

    fn end_fill(&self, fill: &Fill) {
        let mut fills = self.lock_fills();
        if fills.get(&fill.key).is_some_and(|f| f.id == fill.id) {
            fills.remove(&fill.key);
        }
    }

    /// A reader of `fill` as it arrives; `pacing` for readers that came with a crowd (not for
    /// the request doing the fetch).
    fn partial_hit(fill: Arc<Fill>, pacing: Pacing) -> (CacheMeta, HitHandler) {
        let meta = fill.meta.to_meta();
        let state = fill.state.subscribe();
        (
            meta,
            Box::new(PartialHit {
                fill,
                state,
                next: 0,
                rest: None,
                pacing,
            }),
        )
    }

    fn complete_hit(obj: Arc<CachedObject>) -> (CacheMeta, HitHandler) {
        let meta = obj.meta.to_meta();
        let remaining = obj.len;
        (
            meta,
            Box::new(CompleteHit {
                obj,
                chunk: 0,
                offset: 0,
                remaining,
                pacing: Pacing::Off,
            }),
        )
    }
}

#[async_trait]
impl Storage for TieredStorage {
    async fn lookup(
        &'static self,
        key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<Option<(CacheMeta, HitHandler)>> {
        let id = key.combined_bin();
        // Prefer a fill in progress: waiters released from the cache lock attach to it, and a
        // refresh is visible before it completes.
        if let Some(fill) = self.lock_fills().get(&id).cloned() {
            return Ok(Some(Self::partial_hit(fill, Pacing::First)));
        }
        if let Some(obj) = self.objects.get(&id)
            && !self.tombstones.hides(&obj)
        {
            return Ok(Some(Self::complete_hit(obj)));
        }
        Ok(self.disk_lookup(id).await)
    }

    async fn lookup_streaming_write(
        &'static self,
        key: &CacheKey,
        streaming_write_tag: Option<&[u8]>,
        trace: &SpanHandle,
    ) -> Result<Option<(CacheMeta, HitHandler)>> {
        let id = key.combined_bin();
        let wanted = streaming_write_tag
            .and_then(|t| <[u8; 8]>::try_from(t).ok())
            .map(u64::from_be_bytes);
        let own_fill =
            wanted.and_then(|w| self.lock_fills().get(&id).filter(|f| f.id == w).cloned());
        match own_fill {
            // The fetching request reading its own fill: nobody to let go first.
            Some(fill) => Ok(Some(Self::partial_hit(fill, Pacing::Off))),
            None => self.lookup(key, trace).await,
        }
    }

    async fn get_miss_handler(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<MissHandler> {
        let tags = surrogate_tags(
            meta.headers()
                .get("surrogate-key")
                .and_then(|v| v.to_str().ok()),
        );
        let fill = Arc::new(Fill {
            id: self.next_fill.fetch_add(1, Ordering::Relaxed),
            key: key.combined_bin(),
            key_text: key.user_tag.clone(),
            tags,
            meta: StoredMeta::capture(meta),
            chunks: RwLock::new(Vec::new()),
            state: watch::Sender::new(FillState::Writing(0)),
            purged: AtomicBool::new(false),
            crowd: Arc::new(CrowdGate::new()),
        });
        self.lock_fills().insert(fill.key, Arc::clone(&fill));
        Ok(Box::new(FillWriter {
            storage: self,
            tag: fill.id.to_be_bytes(),
            fill,
            len: 0,
            finished: false,
        }))
    }

    async fn purge(
        &'static self,
        target: PurgeTarget<'_>,
        _purge_type: PurgeType,
        _trace: &SpanHandle,
    ) -> Result<PurgeOutcome> {
        let id = target.key().combined_bin();
        Ok(if self.remove(&id) {
            PurgeOutcome::Purged(None)
        } else {
            PurgeOutcome::NotFound
        })
    }

    async fn expire(
        &'static self,
        target: PurgeTarget<'_>,
        _trace: &SpanHandle,
    ) -> Result<PurgeOutcome> {
        let id = target.key().combined_bin();
        Ok(if self.expire(&id, SystemTime::now()) {
            PurgeOutcome::Expired
        } else {
            PurgeOutcome::NotFound
        })
    }

    async fn update_meta(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<bool> {
        let id = key.combined_bin();
        let on_disk = match (&self.disk, meta.serialize()) {
            (Some(disk), Ok((internal, header))) => disk.tier.update_meta(&id, internal, header),
            _ => false,
        };
        match self.objects.get(&id) {
            Some(obj) => {
                self.store(id, obj.with_meta(StoredMeta::capture(meta)));
                Ok(true)
            }
            None => Ok(on_disk),
        }
    }

    fn support_streaming_partial_write(&self) -> bool {
        true
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync + 'static) {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::crowd::FIRST_SHARE;
    use pingora_cache::trace::Span;
    use std::time::Duration;

    fn meta() -> CacheMeta {
        let header = ResponseHeader::build(200, None).unwrap();
        let now = SystemTime::now();
        CacheMeta::new(now + Duration::from_secs(60), now, 1, 2, header)
    }

    fn span() -> SpanHandle {
        Span::inactive().handle()
    }

    /// Fills `key` with `parts` and finishes the fill.
    async fn complete_fill(
        storage: &'static TieredStorage,
        key: &CacheKey,
        meta: &CacheMeta,
        parts: Vec<Bytes>,
    ) {
        let mut writer = storage.get_miss_handler(key, meta, &span()).await.unwrap();
        for part in parts {
            writer.write_body(part, false).await.unwrap();
        }
        writer.finish().await.unwrap();
    }

    async fn read_all(hit: &mut HitHandler) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(chunk) = hit.read_body().await? {
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    /// The lengths of the chunks a hit returns, and their concatenation.
    async fn chunk_lengths(hit: &mut HitHandler) -> (Vec<usize>, Vec<u8>) {
        let (mut lengths, mut all) = (Vec::new(), Vec::new());
        while let Some(chunk) = hit.read_body().await.unwrap() {
            lengths.push(chunk.len());
            all.extend_from_slice(&chunk);
        }
        (lengths, all)
    }

    #[tokio::test]
    async fn crowd_readers_share_a_first_slice_then_get_the_rest_unchanged() {
        let storage = TieredStorage::leak(1 << 20);
        let body: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let (head, tail) = body.split_at(60_000);
        let key = CacheKey::new("crowd", "");
        let mut writer = storage
            .get_miss_handler(&key, &meta(), &span())
            .await
            .unwrap();
        writer
            .write_body(Bytes::copy_from_slice(head), false)
            .await
            .unwrap();
        // The fetching request reading its own fill is not paced.
        let tag = writer.streaming_write_tag().unwrap().to_vec();
        let (_, mut own) = storage
            .lookup_streaming_write(&key, Some(&tag), &span())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(own.read_body().await.unwrap().unwrap().len(), head.len());
        // Another reader of the fill in progress: a first slice, then the rest of that chunk.
        let (_, mut partial) = storage.lookup(&key, &span()).await.unwrap().unwrap();
        let first = partial.read_body().await.unwrap().unwrap();
        assert_eq!(first.len(), FIRST_SHARE);
        let rest = partial.read_body().await.unwrap().unwrap();
        assert_eq!(rest.len(), head.len() - FIRST_SHARE);
        writer
            .write_body(Bytes::copy_from_slice(tail), false)
            .await
            .unwrap();
        writer.finish().await.unwrap();
        let (later, remainder) = chunk_lengths(&mut partial).await;
        assert_eq!(later, vec![tail.len()], "only the first chunk is cut");
        assert_eq!([&first[..], &rest[..], &remainder[..]].concat(), body);

        // A complete object (stored in one piece): unpaced it comes whole; paced, a first
        // slice, then the rest.
        let (_, mut plain) = storage.lookup(&key, &span()).await.unwrap().unwrap();
        assert_eq!(chunk_lengths(&mut plain).await.0, vec![100_000]);
        let (_, mut paced) = storage.lookup(&key, &span()).await.unwrap().unwrap();
        pace_for_crowd(&mut paced);
        let (lengths, all) = chunk_lengths(&mut paced).await;
        assert_eq!(lengths, vec![FIRST_SHARE, 100_000 - FIRST_SHARE]);
        assert_eq!(all, body);
    }

    #[tokio::test]
    async fn a_reader_gets_chunks_while_the_fill_is_arriving() {
        let storage = TieredStorage::leak(1 << 20);
        let key = CacheKey::new("streaming", "");
        let mut writer = storage
            .get_miss_handler(&key, &meta(), &span())
            .await
            .unwrap();
        writer
            .write_body(Bytes::from_static(b"part-1;"), false)
            .await
            .unwrap();

        let (_, mut reader) = storage
            .lookup(&key, &span())
            .await
            .unwrap()
            .expect("the fill is visible");
        assert_eq!(
            reader.read_body().await.unwrap().as_deref(),
            Some(&b"part-1;"[..]),
            "first chunk before the fill ends"
        );
        let pending = tokio::spawn(async move { read_all(&mut reader).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!pending.is_finished(), "the reader waits for more");

        writer
            .write_body(Bytes::from_static(b"part-2"), true)
            .await
            .unwrap();
        writer.finish().await.unwrap();
        assert_eq!(pending.await.unwrap().unwrap(), b"part-2");

        let (meta, mut hit) = storage
            .lookup(&key, &span())
            .await
            .unwrap()
            .expect("complete object");
        assert_eq!(read_all(&mut hit).await.unwrap(), b"part-1;part-2");
        assert_eq!(meta.stale_if_error_sec(), 2);
        assert_eq!(storage.fills_in_progress(), 0);
    }

    #[tokio::test]
    async fn an_aborted_fill_is_an_error_for_readers_and_is_not_stored() {
        let storage = TieredStorage::leak(1 << 20);
        let key = CacheKey::new("aborted", "");
        let mut writer = storage
            .get_miss_handler(&key, &meta(), &span())
            .await
            .unwrap();
        writer
            .write_body(Bytes::from_static(b"half"), false)
            .await
            .unwrap();
        let (_, mut reader) = storage.lookup(&key, &span()).await.unwrap().unwrap();
        let pending = tokio::spawn(async move { read_all(&mut reader).await });
        tokio::time::sleep(Duration::from_millis(10)).await;
        drop(writer);
        assert!(
            pending.await.unwrap().is_err(),
            "a truncated body must not look complete"
        );
        assert!(storage.lookup(&key, &span()).await.unwrap().is_none());
        assert_eq!(storage.stats().aborted_fills.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn a_purge_during_a_fill_is_not_undone_when_the_fill_ends() {
        let storage = TieredStorage::leak(1 << 20);
        let key = CacheKey::new("purged-mid-fill", "");
        let mut writer = storage
            .get_miss_handler(&key, &meta(), &span())
            .await
            .unwrap();
        writer
            .write_body(Bytes::from_static(b"old content"), false)
            .await
            .unwrap();
        assert!(storage.remove(&key.combined_bin()));
        writer.finish().await.unwrap();
        assert!(storage.lookup(&key, &span()).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn seeks_serve_byte_ranges_across_chunks_without_copying() {
        let storage = TieredStorage::leak(1 << 20);
        let key = CacheKey::new("ranges", "");
        let parts = ["0123", "4567", "89"].map(Bytes::from).to_vec();
        complete_fill(storage, &key, &meta(), parts).await;
        let cases = [
            (0, Some(10), "0123456789"),
            (3, Some(6), "345"),
            (4, None, "456789"),
            (9, Some(10), "9"),
            (5, Some(5), ""),
        ];
        for (start, end, expected) in cases {
            let (_, mut hit) = storage.lookup(&key, &span()).await.unwrap().unwrap();
            assert!(hit.can_seek());
            hit.seek(start, end).unwrap();
            assert_eq!(
                String::from_utf8(read_all(&mut hit).await.unwrap()).unwrap(),
                expected,
                "{start}..{end:?}"
            );
        }
        let (_, mut hit) = storage.lookup(&key, &span()).await.unwrap().unwrap();
        assert!(hit.seek(3, Some(11)).is_err());
        assert!(hit.seek(6, Some(5)).is_err());
    }

    #[tokio::test]
    async fn metadata_survives_the_round_trip_and_expiry() {
        let storage = TieredStorage::leak(1 << 20);
        let key = CacheKey::new("meta", "");
        let mut m = meta();
        m.response_header_mut()
            .insert_header("x-test", "1")
            .unwrap();
        complete_fill(storage, &key, &m, Vec::new()).await;
        let (got, _) = storage.lookup(&key, &span()).await.unwrap().unwrap();
        assert_eq!(got.headers().get("x-test").unwrap(), "1");
        assert_eq!(got.fresh_until(), m.fresh_until());
        assert!(got.is_fresh(SystemTime::now()));

        let mut revalidated = got;
        revalidated.update_freshness(SystemTime::now() + Duration::from_secs(5), 0, 0);
        assert!(
            storage
                .update_meta(&key, &revalidated, &span())
                .await
                .unwrap()
        );
        let (got, _) = storage.lookup(&key, &span()).await.unwrap().unwrap();
        assert!(
            got.age() < Duration::from_secs(1),
            "age counts from the revalidation"
        );

        assert!(storage.expire(&key.combined_bin(), SystemTime::now()));
        let (got, _) = storage.lookup(&key, &span()).await.unwrap().unwrap();
        assert!(!got.is_fresh(SystemTime::now() + Duration::from_millis(1)));
        assert!(
            !storage
                .update_meta(&CacheKey::new("absent", ""), &meta(), &span())
                .await
                .unwrap(),
            "no panic on a missing key"
        );
    }

    #[test]
    fn small_chunks_are_regrouped_and_large_ones_kept() {
        let small: Vec<Bytes> = (0..300)
            .map(|i| Bytes::from(vec![i as u8; 10_000]))
            .collect();
        let joined: Vec<u8> = small.iter().flat_map(|c| c.iter().copied()).collect();
        let out = coalesce(small);
        // 3,000,000 bytes: eleven whole pieces and the rest.
        let mut expected = vec![STORED_CHUNK; 11];
        expected.push(3_000_000 - 11 * STORED_CHUNK);
        assert_eq!(out.iter().map(Bytes::len).collect::<Vec<_>>(), expected);
        assert_eq!(
            out.iter()
                .flat_map(|c| c.iter().copied())
                .collect::<Vec<u8>>(),
            joined,
            "same bytes in the same order"
        );
        assert!(
            out.iter().all(|c| c.len() <= STORED_CHUNK),
            "no piece is larger than its allocation should be"
        );
        let big = vec![
            Bytes::from(vec![1u8; STORED_CHUNK]),
            Bytes::from(vec![2u8; STORED_CHUNK + 1]),
        ];
        let ptrs: Vec<*const u8> = big.iter().map(|c| c.as_ptr()).collect();
        let kept = coalesce(big);
        assert_eq!(
            kept.iter().map(|c| c.as_ptr()).collect::<Vec<_>>(),
            ptrs,
            "large chunks are not copied"
        );
    }

    #[tokio::test]
    async fn capacity_is_enforced_by_size() {
        let storage = TieredStorage::leak(64 * 1024);
        for i in 0..64 {
            let key = CacheKey::new(format!("obj-{i}"), "");
            complete_fill(storage, &key, &meta(), vec![Bytes::from(vec![0u8; 4096])]).await;
        }
        assert!(
            storage.weighted_size() <= 64 * 1024,
            "{} bytes held",
            storage.weighted_size()
        );
        assert!(storage.entry_count() < 64);
        assert!(storage.stats().evictions.load(Ordering::Relaxed) > 0);
    }

    async fn put(storage: &'static TieredStorage, key: &str, tags: &str, body: &'static [u8]) {
        let mut header = ResponseHeader::build(200, None).unwrap();
        if !tags.is_empty() {
            header.insert_header("surrogate-key", tags).unwrap();
        }
        let now = SystemTime::now();
        let meta = CacheMeta::new(now + Duration::from_secs(60), now, 0, 0, header);
        complete_fill(
            storage,
            &CacheKey::new(key, key),
            &meta,
            vec![Bytes::from_static(body)],
        )
        .await;
    }

    async fn present(storage: &'static TieredStorage, key: &str) -> bool {
        storage
            .lookup(&CacheKey::new(key, key), &span())
            .await
            .unwrap()
            .is_some()
    }

    #[tokio::test]
    async fn purges_by_url_prefix_host_and_tag() {
        let storage = TieredStorage::leak(1 << 20);
        put(storage, "a.tv/live/s1/1.m4s", "stream/s1", b"1").await;
        put(storage, "a.tv/live/s1/2.m4s", "stream/s1", b"2").await;
        put(storage, "a.tv/live/s2/1.m4s", "stream/s2", b"3").await;
        put(storage, "b.tv/live/s1/1.m4s", "stream/s1", b"4").await;
        put(storage, "b.tv/vod/x/1.m4s", "vod/x", b"5").await;

        assert_eq!(
            storage.purge_matching(
                &Selector::Url("a.tv/live/s1/1.m4s".into()),
                PurgeAction::Delete
            ),
            1
        );
        assert!(!present(storage, "a.tv/live/s1/1.m4s").await);
        assert!(present(storage, "a.tv/live/s1/2.m4s").await);

        assert_eq!(
            storage.purge_matching(&Selector::Tag("stream/s1".into()), PurgeAction::Delete),
            2
        );
        assert!(!present(storage, "b.tv/live/s1/1.m4s").await);
        assert!(present(storage, "a.tv/live/s2/1.m4s").await);

        assert_eq!(
            storage.purge_matching(&Selector::Prefix("a.tv/live/".into()), PurgeAction::Delete),
            1
        );
        assert_eq!(
            storage.purge_matching(&Selector::Host("b.tv".into()), PurgeAction::Delete),
            1
        );
        assert_eq!(
            storage.purge_matching(&Selector::Url("a.tv/none".into()), PurgeAction::Delete),
            0
        );
        storage.objects.run_pending_tasks();
        assert_eq!(
            (storage.entry_count(), storage.indexed()),
            (0, 0),
            "the index follows removals"
        );
    }

    #[tokio::test]
    async fn a_bulk_purge_hides_its_objects_at_once_and_spares_later_copies() {
        let storage = TieredStorage::leak(1 << 30);
        for i in 0..BULK_PURGE + 10 {
            put(storage, &format!("a.tv/vod/{i}.m4s"), "", b"old").await;
        }
        put(storage, "b.tv/keep.m4s", "", b"keep").await;
        let hit = storage.purge_matching(&Selector::Host("a.tv".into()), PurgeAction::Delete);
        assert_eq!(hit, BULK_PURGE + 10);
        assert!(!present(storage, "a.tv/vod/7.m4s").await, "hidden at once");
        assert!(present(storage, "b.tv/keep.m4s").await);
        // A copy stored after the purge is served, and the background removal leaves it.
        put(storage, "a.tv/vod/7.m4s", "", b"new").await;
        assert!(present(storage, "a.tv/vod/7.m4s").await);
        for _ in 0..500 {
            if !storage.tombstones.any.load(Ordering::Acquire) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            !storage.tombstones.any.load(Ordering::Acquire),
            "removal finished"
        );
        storage.objects.run_pending_tasks();
        assert_eq!(
            storage.indexed(),
            2,
            "only the new copy and the bystander remain"
        );
        assert!(present(storage, "a.tv/vod/7.m4s").await);
    }

    #[tokio::test]
    async fn expire_keeps_the_body_but_makes_it_stale_and_all_clears() {
        let storage = TieredStorage::leak(1 << 20);
        put(storage, "a.tv/p.m3u8", "", b"#EXTM3U").await;
        put(storage, "a.tv/q.m3u8", "", b"#EXTM3U").await;
        assert_eq!(
            storage.purge_matching(&Selector::Url("a.tv/p.m3u8".into()), PurgeAction::Expire),
            1
        );
        let (meta, mut hit) = storage
            .lookup(&CacheKey::new("a.tv/p.m3u8", "a.tv/p.m3u8"), &span())
            .await
            .unwrap()
            .unwrap();
        assert!(!meta.is_fresh(SystemTime::now()));
        assert_eq!(read_all(&mut hit).await.unwrap(), b"#EXTM3U");
        assert_eq!(
            storage.purge_matching(&Selector::Tag("none".into()), PurgeAction::Expire),
            0
        );
        assert_eq!(storage.indexed(), 2, "an expired object stays indexed");
        assert_eq!(
            storage.purge_matching(&Selector::All, PurgeAction::Delete),
            2
        );
        assert!(!present(storage, "a.tv/q.m3u8").await);
        assert_eq!(storage.indexed(), 0);
    }

    #[tokio::test]
    async fn a_prefix_purge_cancels_a_matching_fill_in_flight() {
        let storage = TieredStorage::leak(1 << 20);
        let key = CacheKey::new("a.tv/live/s1/9.m4s", "a.tv/live/s1/9.m4s");
        let mut writer = storage
            .get_miss_handler(&key, &meta(), &span())
            .await
            .unwrap();
        writer
            .write_body(Bytes::from_static(b"pre-purge"), false)
            .await
            .unwrap();
        assert_eq!(
            storage.purge_matching(
                &Selector::Prefix("a.tv/live/s1/".into()),
                PurgeAction::Delete
            ),
            1
        );
        writer.finish().await.unwrap();
        assert!(
            !present(storage, "a.tv/live/s1/9.m4s").await,
            "the purged fill was not stored"
        );
    }

    #[tokio::test]
    async fn the_index_follows_evictions() {
        let storage = TieredStorage::leak(64 * 1024);
        for i in 0..64 {
            let key = format!("a.tv/{i}.m4s");
            complete_fill(
                storage,
                &CacheKey::new(key.clone(), key),
                &meta(),
                vec![Bytes::from(vec![0u8; 4096])],
            )
            .await;
        }
        storage.objects.run_pending_tasks();
        assert_eq!(storage.indexed() as u64, storage.entry_count());
        assert!(storage.entry_count() < 64);
    }
}
