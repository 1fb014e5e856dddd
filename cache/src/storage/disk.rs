//! The disk tier under the memory tier (the shield's large VOD libraries): one file per object
//! in a cache directory, laid out by [`crate::storage::disk_format`], indexed in memory by a
//! size-bounded moka cache whose evictions delete the files.
//!
//! - **Survives restarts**: the index is rebuilt at start-up from the files' headers; a file
//!   that does not check out (bad header, wrong length) is deleted, not indexed.
//! - **Never serves corruption**: a lookup checks the file's length (a truncated file is a miss
//!   and is dropped) and reads and verifies the first block before answering; each later
//!   block is verified before it is sent, and a bad one ends the response with an error and
//!   drops the file.
//! - **Streams hits**: blocks are read one at a time on the blocking pool; an object is never
//!   loaded whole.
//! - **Writes off the request path**: finished fills are queued to a writer thread that writes
//!   a temporary file and renames it into place. A write error (a full disk) pauses admission
//!   for a while and counts in `write_errors`; the memory tier carries on.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use moka::notification::RemovalCause;
use pingora_cache::key::HashBinary;

use crate::policy::purge::{PurgeIndex, Selector};
use crate::storage::disk_format::{DiskHeader, PREFIX_LEN};
use cascade_service::sync::lock;

/// How long admission stays paused after a write error.
const WRITE_ERROR_PAUSE: Duration = Duration::from_secs(10);

/// Counters the metrics module exports.
#[derive(Debug, Default)]
pub struct DiskStats {
    /// Objects written.
    pub writes: AtomicU64,
    /// Writes that failed (full disk, IO errors).
    pub write_errors: AtomicU64,
    /// Objects not written because the writer was behind or admission was paused.
    pub skipped_writes: AtomicU64,
    /// Files found corrupt or truncated and dropped.
    pub corrupt: AtomicU64,
    /// Lookups answered from disk.
    pub hits: AtomicU64,
    /// Objects evicted to stay within capacity.
    pub evictions: AtomicU64,
}

/// One object on disk.
#[derive(Debug)]
pub struct DiskEntry {
    /// File path.
    pub path: PathBuf,
    /// Decoded header.
    pub header: DiskHeader,
    /// Header length, locating the body.
    pub header_len: u32,
    /// Distinguishes this file from earlier ones of the same key.
    pub generation: u64,
}

impl DiskEntry {
    fn file_len(&self) -> u64 {
        DiskHeader::body_offset(self.header_len) + self.header.body_len
    }
}

/// The disk tier.
pub struct DiskTier {
    dir: PathBuf,
    index: moka::sync::Cache<HashBinary, Arc<DiskEntry>>,
    purge_index: Arc<Mutex<PurgeIndex>>,
    next_generation: AtomicU64,
    paused_until: Mutex<Option<Instant>>,
    stats: Arc<DiskStats>,
    capacity: u64,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<HashBinary> {
    if s.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Reads and checks a file's header; the file's length must match it.
fn read_header(file: &mut File) -> Result<(DiskHeader, u32), String> {
    let actual = file.metadata().map_err(|e| e.to_string())?.len();
    let mut prefix = [0u8; PREFIX_LEN];
    file.read_exact(&mut prefix).map_err(|e| e.to_string())?;
    let (len, crc) = DiskHeader::decode_prefix(&prefix).map_err(|e| e.to_string())?;
    let mut payload = vec![0u8; len as usize];
    file.read_exact(&mut payload).map_err(|e| e.to_string())?;
    let header = DiskHeader::decode(&payload, crc).map_err(|e| e.to_string())?;
    header
        .check_length(len, actual)
        .map_err(|e| e.to_string())?;
    Ok((header, len))
}

impl DiskTier {
    /// Opens (creating if needed) the tier in `dir`, holding at most `capacity` bytes, and
    /// rebuilds its index from the files already there.
    pub fn open(dir: &Path, capacity: u64) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir.join("tmp"))?;
        let stats = Arc::new(DiskStats::default());
        let purge_index = Arc::new(Mutex::new(PurgeIndex::default()));
        let (listener_stats, listener_index) = (Arc::clone(&stats), Arc::clone(&purge_index));
        let index = moka::sync::Cache::builder()
            .max_capacity(capacity)
            .weigher(|_: &HashBinary, e: &Arc<DiskEntry>| {
                u32::try_from(e.file_len()).unwrap_or(u32::MAX)
            })
            .eviction_listener(move |_, entry: Arc<DiskEntry>, cause| {
                if cause == RemovalCause::Replaced {
                    // A new copy or new metadata took the key: whoever replaced it deals
                    // with the old file (it may be the same file).
                    return;
                }
                if cause == RemovalCause::Size {
                    listener_stats.evictions.fetch_add(1, Ordering::Relaxed);
                }
                let _ = std::fs::remove_file(&entry.path);
                lock(&listener_index).remove(&entry.header.key, entry.generation);
            })
            .build();
        let tier = Self {
            dir: dir.to_path_buf(),
            index,
            purge_index,
            next_generation: AtomicU64::new(1),
            paused_until: Mutex::new(None),
            stats,
            capacity,
        };
        tier.rebuild()?;
        Ok(tier)
    }

    /// Indexes every intact file under the directory and deletes the rest.
    fn rebuild(&self) -> std::io::Result<()> {
        for leftover in std::fs::read_dir(self.dir.join("tmp"))? {
            let _ = std::fs::remove_file(leftover?.path());
        }
        let mut found: Vec<(HashBinary, u64, PathBuf)> = Vec::new();
        for shard in std::fs::read_dir(&self.dir)? {
            let shard = shard?;
            if !shard.file_type()?.is_dir() || shard.file_name() == "tmp" {
                continue;
            }
            for file in std::fs::read_dir(shard.path())? {
                let path = file?.path();
                let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
                let parsed = name.split_once('-').and_then(|(id, generation)| {
                    Some((unhex(id)?, u64::from_str_radix(generation, 16).ok()?))
                });
                match parsed {
                    Some((id, generation)) => found.push((id, generation, path)),
                    None => {
                        tracing::warn!(path = %path.display(), "not a cache file; deleting it");
                        let _ = std::fs::remove_file(&path);
                    }
                }
            }
        }
        // Older generations first, so the newest copy of a key is the one left indexed.
        found.sort_by_key(|(_, generation, _)| *generation);
        let mut max_generation = 0;
        for (id, generation, path) in found {
            max_generation = max_generation.max(generation);
            let checked = File::open(&path)
                .map_err(|e| e.to_string())
                .and_then(|mut f| read_header(&mut f));
            match checked {
                Ok((header, header_len)) => self.index_entry(
                    id,
                    DiskEntry {
                        path,
                        header,
                        header_len,
                        generation,
                    },
                ),
                Err(why) => {
                    self.stats.corrupt.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(path = %path.display(), %why, "dropping a damaged cache file");
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        self.next_generation
            .store(max_generation + 1, Ordering::Relaxed);
        self.index.run_pending_tasks();
        Ok(())
    }

    fn index_entry(&self, id: HashBinary, entry: DiskEntry) {
        lock(&self.purge_index).insert(&entry.header.key, id, entry.generation, &entry.header.tags);
        self.index.insert(id, Arc::new(entry));
    }

    /// Configured capacity in bytes.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Bytes of the files indexed.
    pub fn weighted_size(&self) -> u64 {
        self.index.run_pending_tasks();
        self.index.weighted_size()
    }

    /// Objects indexed.
    pub fn entry_count(&self) -> u64 {
        self.index.run_pending_tasks();
        self.index.entry_count()
    }

    /// Counters.
    pub fn stats(&self) -> &DiskStats {
        &self.stats
    }

    /// Whether new objects are admitted now (not paused after a write error).
    pub fn admitting(&self) -> bool {
        let mut paused = lock(&self.paused_until);
        match *paused {
            Some(until) if Instant::now() < until => false,
            Some(_) => {
                *paused = None;
                true
            }
            None => true,
        }
    }

    /// The entry for `id`, if indexed.
    pub fn get(&self, id: &HashBinary) -> Option<Arc<DiskEntry>> {
        self.index.get(id)
    }

    /// Opens `entry` for reading and reads its first block, checking the file's length and the
    /// block's checksum. A file that fails is dropped and `None` returned (a miss).
    pub fn open_entry(&self, id: &HashBinary, entry: &Arc<DiskEntry>) -> Option<(File, Bytes)> {
        let opened = (|| -> Result<(File, Bytes), String> {
            let file = File::open(&entry.path).map_err(|e| e.to_string())?;
            let actual = file.metadata().map_err(|e| e.to_string())?.len();
            entry
                .header
                .check_length(entry.header_len, actual)
                .map_err(|e| e.to_string())?;
            let first = if entry.header.blocks() == 0 {
                Bytes::new()
            } else {
                read_block(&file, entry, 0)?
            };
            Ok((file, first))
        })();
        match opened {
            Ok(ok) => Some(ok),
            Err(why) => {
                self.drop_damaged(id, entry, &why);
                None
            }
        }
    }

    /// Forgets and deletes a file found damaged.
    pub fn drop_damaged(&self, id: &HashBinary, entry: &DiskEntry, why: &str) {
        self.stats.corrupt.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(path = %entry.path.display(), key = %entry.header.key, %why, "dropping a damaged cache file; the object will be fetched again");
        if self
            .index
            .get(id)
            .is_some_and(|current| current.generation == entry.generation)
        {
            self.index.invalidate(id);
        }
        let _ = std::fs::remove_file(&entry.path);
    }

    /// Writes an object and indexes it, unless `still_wanted` (checked at the last moment,
    /// holding `purge_lock`, which purges also hold) says a purge overtook it. Runs on the
    /// writer thread.
    pub fn write(
        &self,
        id: HashBinary,
        header: DiskHeader,
        body: &[Bytes],
        purge_lock: &Mutex<()>,
        still_wanted: impl FnOnce() -> bool,
    ) {
        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
        let name = format!("{}-{generation:x}", hex(&id));
        let tmp = self.dir.join("tmp").join(&name);
        let final_dir = self.dir.join(hex(&id[..1]));
        let encoded = header.encode();
        let written = (|| -> std::io::Result<()> {
            let mut file = File::create(&tmp)?;
            file.write_all(&encoded)?;
            for chunk in body {
                file.write_all(chunk)?;
            }
            file.flush()?;
            std::fs::create_dir_all(&final_dir)
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            self.stats.write_errors.fetch_add(1, Ordering::Relaxed);
            *lock(&self.paused_until) = Some(Instant::now() + WRITE_ERROR_PAUSE);
            tracing::error!(error = %e, dir = %self.dir.display(), "disk tier write failed; pausing disk admission, the memory tier carries on");
            return;
        }
        let _purges_wait = lock(purge_lock);
        if !still_wanted() {
            let _ = std::fs::remove_file(&tmp);
            return;
        }
        let path = final_dir.join(&name);
        if let Err(e) = std::fs::rename(&tmp, &path) {
            let _ = std::fs::remove_file(&tmp);
            self.stats.write_errors.fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %e, "disk tier rename failed");
            return;
        }
        let header_len = u32::try_from(encoded.len() - PREFIX_LEN).unwrap_or(u32::MAX);
        if let Some(previous) = self.index.get(&id) {
            let _ = std::fs::remove_file(&previous.path);
        }
        self.index_entry(
            id,
            DiskEntry {
                path,
                header,
                header_len,
                generation,
            },
        );
        self.stats.writes.fetch_add(1, Ordering::Relaxed);
    }

    /// Replaces the metadata of `id` in the index (after a revalidation). The file keeps the
    /// metadata it was written with: after a restart the object revalidates again, which is
    /// safe. True if `id` is on disk.
    pub fn update_meta(
        &self,
        id: &HashBinary,
        meta_internal: Vec<u8>,
        meta_header: Vec<u8>,
    ) -> bool {
        let Some(entry) = self.index.get(id) else {
            return false;
        };
        let mut header = entry.header.clone();
        header.meta_internal = meta_internal;
        header.meta_header = meta_header;
        self.index.insert(
            *id,
            Arc::new(DiskEntry {
                path: entry.path.clone(),
                header,
                header_len: entry.header_len,
                generation: entry.generation,
            }),
        );
        true
    }

    /// Removes `id`; true if it was on disk.
    pub fn remove(&self, id: &HashBinary) -> bool {
        // The eviction listener deletes the file and unindexes it.
        self.index.remove(id).is_some()
    }

    /// Objects a purge selects.
    pub fn select(&self, selector: &Selector) -> Vec<HashBinary> {
        lock(&self.purge_index).select(selector)
    }

    /// Removes everything.
    pub fn clear(&self) {
        let ids: Vec<HashBinary> = self.index.iter().map(|(id, _)| *id).collect();
        for id in ids {
            self.index.remove(&id);
        }
        self.index.run_pending_tasks();
    }
}

/// Reads and verifies body block `index` of `entry`.
pub fn read_block(file: &File, entry: &DiskEntry, index: usize) -> Result<Bytes, String> {
    let (start, len) = entry.header.block_span(index);
    let mut block = vec![0u8; len];
    file.read_exact_at(
        &mut block,
        DiskHeader::body_offset(entry.header_len) + start,
    )
    .map_err(|e| format!("reading block {index}: {e}"))?;
    if !entry.header.block_is_intact(index, &block) {
        return Err(format!("block {index} fails its checksum"));
    }
    Ok(Bytes::from(block))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(key: &str, body: &[Bytes]) -> DiskHeader {
        DiskHeader::for_body(key.into(), vec!["t".into()], vec![], vec![], body)
    }

    fn id(n: u8) -> HashBinary {
        [n; 16]
    }

    #[test]
    fn objects_survive_a_reopen_and_damaged_files_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let body = vec![Bytes::from(vec![5u8; 300_000])];
        {
            let tier = DiskTier::open(dir.path(), 1 << 30).unwrap();
            for n in 1..=3 {
                tier.write(
                    id(n),
                    header(&format!("h/{n}"), &body),
                    &body,
                    &Mutex::new(()),
                    || true,
                );
            }
            assert_eq!(tier.entry_count(), 3);
        }
        // Damage two files: truncate one, flip a body byte in another.
        let tier = DiskTier::open(dir.path(), 1 << 30).unwrap();
        let truncated = tier.get(&id(1)).unwrap();
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&truncated.path)
            .unwrap();
        f.set_len(truncated.file_len() - 10).unwrap();
        let flipped = tier.get(&id(2)).unwrap();
        let mut bytes = std::fs::read(&flipped.path).unwrap();
        let at = bytes.len() - 5;
        bytes[at] ^= 1;
        std::fs::write(&flipped.path, bytes).unwrap();

        let reopened = DiskTier::open(dir.path(), 1 << 30).unwrap();
        assert_eq!(
            reopened.entry_count(),
            2,
            "the truncated file is not indexed"
        );
        assert_eq!(reopened.stats().corrupt.load(Ordering::Relaxed), 1);
        let entry = reopened.get(&id(2)).unwrap();
        let (file, first) = reopened.open_entry(&id(2), &entry).unwrap();
        assert_eq!(first.len(), 262_144);
        assert!(
            read_block(&file, &entry, 1).is_err(),
            "the flipped byte is caught"
        );
        reopened.drop_damaged(&id(2), &entry, "test");
        assert!(reopened.get(&id(2)).is_none());
        assert!(!entry.path.exists());
        let intact = reopened.get(&id(3)).unwrap();
        let (file, _) = reopened.open_entry(&id(3), &intact).unwrap();
        assert_eq!(
            read_block(&file, &intact, 1).unwrap().len(),
            300_000 - 262_144
        );
    }

    #[test]
    fn capacity_evicts_and_deletes_files_and_purges_select_by_key() {
        let dir = tempfile::tempdir().unwrap();
        let body = vec![Bytes::from(vec![1u8; 100_000])];
        let tier = DiskTier::open(dir.path(), 1 << 20).unwrap();
        for n in 0..20 {
            tier.write(
                id(n),
                header(&format!("h/vod/{n}"), &body),
                &body,
                &Mutex::new(()),
                || true,
            );
        }
        assert!(tier.weighted_size() <= 1 << 20);
        let files = walk(dir.path());
        assert_eq!(
            files as u64,
            tier.entry_count(),
            "evicted files are deleted"
        );

        let kept = (0..20).find(|&n| tier.get(&id(n)).is_some()).unwrap();
        let selected = tier.select(&Selector::Url(format!("h/vod/{kept}")));
        assert_eq!(selected, vec![id(kept)]);
        assert!(tier.remove(&id(kept)));
        tier.index.run_pending_tasks();
        assert_eq!(walk(dir.path()) as u64, tier.entry_count());
    }

    #[test]
    fn a_write_overtaken_by_a_purge_leaves_nothing_and_a_failed_write_pauses_admission() {
        let dir = tempfile::tempdir().unwrap();
        let body = vec![Bytes::from_static(b"x")];
        let tier = DiskTier::open(dir.path(), 1 << 20).unwrap();
        tier.write(id(1), header("h/a", &body), &body, &Mutex::new(()), || {
            false
        });
        assert!(tier.get(&id(1)).is_none());
        assert_eq!(walk(dir.path()), 0);

        std::fs::remove_dir_all(dir.path().join("tmp")).unwrap();
        assert!(tier.admitting());
        tier.write(id(2), header("h/b", &body), &body, &Mutex::new(()), || true);
        assert_eq!(tier.stats().write_errors.load(Ordering::Relaxed), 1);
        assert!(!tier.admitting(), "admission pauses after a write error");
    }

    fn walk(dir: &Path) -> usize {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_dir() && !p.ends_with("tmp"))
            .map(|p| std::fs::read_dir(p).unwrap().count())
            .sum()
    }
}
