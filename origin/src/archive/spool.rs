//! The archive's local spool (`storage.spool_dir`): objects the store could not take are kept
//! here, in order, and uploaded when it answers again, so a store outage loses no segment of a
//! recording as long as the spool has room (`storage.spool_capacity`).
//!
//! Each object is one file, `<sequence>.spool`: a JSON header line (key, stream, content
//! type) and then the bytes. It is written to a temporary file, synced and renamed, so a crash
//! leaves either the whole object or nothing; a restart uploads what it finds, oldest first.
//! Order matters: a recording's `index.json` is spooled like any object, so a newer index is
//! never overwritten by an older one.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

const SUFFIX: &str = "spool";

/// What a spooled object is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpoolEntry {
    /// Order of arrival.
    #[serde(skip)]
    pub sequence: u64,
    /// Bytes on disk (header included).
    #[serde(skip)]
    pub size: u64,
    /// Object key in the store.
    pub key: String,
    /// The stream it belongs to (for events).
    pub stream_id: String,
    /// Its content type.
    pub content_type: String,
}

/// Why an object could not be spooled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpoolError {
    /// The spool is at its capacity.
    #[error("the local spool is full ({used} of {capacity} bytes)")]
    Full {
        /// Bytes in use.
        used: u64,
        /// `storage.spool_capacity`.
        capacity: u64,
    },
    /// The disk failed.
    #[error("the local spool failed: {0}")]
    Io(String),
}

struct SpoolState {
    next_sequence: u64,
    used: u64,
    entries: VecDeque<SpoolEntry>,
}

/// The spool directory and what it holds.
pub struct Spool {
    dir: PathBuf,
    capacity: u64,
    state: Mutex<SpoolState>,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool")
            .field("dir", &self.dir)
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

fn io(what: &str, path: &Path, e: std::io::Error) -> String {
    format!("{what} {}: {e}", path.display())
}

impl Spool {
    /// Opens (creating) the spool in `dir`, holding at most `capacity` bytes, with what an
    /// earlier run left there. Half-written temporary files are removed.
    pub fn open(dir: &Path, capacity: u64) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(|e| io("cannot create", dir, e))?;
        let mut entries = Vec::new();
        for item in std::fs::read_dir(dir).map_err(|e| io("cannot list", dir, e))? {
            let item = item.map_err(|e| io("cannot list", dir, e))?;
            let path = item.path();
            let name = item.file_name().to_string_lossy().into_owned();
            if name.ends_with(".tmp") {
                std::fs::remove_file(&path).map_err(|e| io("cannot remove", &path, e))?;
                continue;
            }
            let Some(sequence) = name
                .strip_suffix(&format!(".{SUFFIX}"))
                .and_then(|s| u64::from_str_radix(s, 16).ok())
            else {
                continue;
            };
            let mut entry = read_header(&path)?;
            entry.sequence = sequence;
            entry.size = item
                .metadata()
                .map_err(|e| io("cannot stat", &path, e))?
                .len();
            entries.push(entry);
        }
        entries.sort_by_key(|e| e.sequence);
        let used = entries.iter().map(|e| e.size).sum();
        let next_sequence = entries.last().map_or(0, |e| e.sequence + 1);
        Ok(Self {
            dir: dir.to_owned(),
            capacity,
            state: Mutex::new(SpoolState {
                next_sequence,
                used,
                entries: entries.into(),
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SpoolState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn path(&self, sequence: u64) -> PathBuf {
        self.dir.join(format!("{sequence:016x}.{SUFFIX}"))
    }

    /// Objects waiting, and their bytes.
    pub fn usage(&self) -> (usize, u64) {
        let state = self.lock();
        (state.entries.len(), state.used)
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.lock().entries.is_empty()
    }

    /// Keeps `bytes` for `key` until it is uploaded.
    pub fn put(
        &self,
        stream_id: &str,
        key: &str,
        bytes: &[u8],
        content_type: &str,
    ) -> Result<(), SpoolError> {
        let mut entry = SpoolEntry {
            sequence: 0,
            size: 0,
            key: key.to_owned(),
            stream_id: stream_id.to_owned(),
            content_type: content_type.to_owned(),
        };
        let mut header = serde_json::to_vec(&entry).map_err(|e| SpoolError::Io(e.to_string()))?;
        header.push(b'\n');
        let size = (header.len() + bytes.len()) as u64;
        // Reserve the sequence and the room first; the file is written outside the lock.
        let sequence = {
            let mut state = self.lock();
            if state.used + size > self.capacity {
                return Err(SpoolError::Full {
                    used: state.used,
                    capacity: self.capacity,
                });
            }
            state.used += size;
            state.next_sequence += 1;
            state.next_sequence - 1
        };
        let path = self.path(sequence);
        let temporary = path.with_extension("tmp");
        let written = std::fs::File::create(&temporary)
            .and_then(|mut file| {
                file.write_all(&header)?;
                file.write_all(bytes)?;
                file.sync_data()
            })
            .and_then(|()| std::fs::rename(&temporary, &path))
            .and_then(|()| std::fs::File::open(&self.dir)?.sync_all());
        let mut state = self.lock();
        if let Err(e) = written {
            state.used -= size;
            let _ = std::fs::remove_file(&temporary);
            return Err(SpoolError::Io(io("cannot write", &path, e)));
        }
        entry.sequence = sequence;
        entry.size = size;
        // Written outside the lock: keep the queue in sequence order.
        let at = state
            .entries
            .iter()
            .position(|e| e.sequence > sequence)
            .unwrap_or(state.entries.len());
        state.entries.insert(at, entry);
        Ok(())
    }

    /// The oldest object waiting.
    pub fn oldest(&self) -> Option<SpoolEntry> {
        self.lock().entries.front().cloned()
    }

    /// The bytes of `entry`.
    pub fn read(&self, entry: &SpoolEntry) -> Result<Bytes, String> {
        let path = self.path(entry.sequence);
        let file = std::fs::File::open(&path).map_err(|e| io("cannot open", &path, e))?;
        let mut reader = BufReader::new(file);
        let mut header = Vec::new();
        reader
            .read_until(b'\n', &mut header)
            .map_err(|e| io("cannot read", &path, e))?;
        let mut body = Vec::new();
        reader
            .read_to_end(&mut body)
            .map_err(|e| io("cannot read", &path, e))?;
        Ok(Bytes::from(body))
    }

    /// Forgets `entry` once it is uploaded.
    pub fn remove(&self, entry: &SpoolEntry) -> Result<(), String> {
        let path = self.path(entry.sequence);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("cannot remove", &path, e)),
        }
        let mut state = self.lock();
        if let Some(at) = state
            .entries
            .iter()
            .position(|e| e.sequence == entry.sequence)
        {
            state.entries.remove(at);
            state.used -= entry.size;
        }
        Ok(())
    }
}

fn read_header(path: &Path) -> Result<SpoolEntry, String> {
    let file = std::fs::File::open(path).map_err(|e| io("cannot open", path, e))?;
    let mut header = Vec::new();
    BufReader::new(file)
        .read_until(b'\n', &mut header)
        .map_err(|e| io("cannot read", path, e))?;
    serde_json::from_slice(&header).map_err(|e| {
        format!(
            "{} is not a spooled object ({e}); move it away to start",
            path.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_come_back_in_order_across_a_reopen_and_leave_when_removed() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), 1 << 20).unwrap();
        assert!(spool.is_empty());
        spool
            .put("s1", "recordings/r/480p/1.m4s", b"one", "video/mp4")
            .unwrap();
        spool
            .put("s1", "recordings/r/index.json", b"{}", "application/json")
            .unwrap();
        std::fs::write(dir.path().join("0000000000000009.tmp"), b"half").unwrap();
        drop(spool);

        let spool = Spool::open(dir.path(), 1 << 20).unwrap();
        assert!(
            !dir.path().join("0000000000000009.tmp").exists(),
            "a torn write is dropped"
        );
        let first = spool.oldest().unwrap();
        assert_eq!(first.key, "recordings/r/480p/1.m4s");
        assert_eq!(first.stream_id, "s1");
        assert_eq!(spool.read(&first).unwrap(), Bytes::from_static(b"one"));
        spool.remove(&first).unwrap();
        let second = spool.oldest().unwrap();
        assert_eq!(
            (second.key.as_str(), second.content_type.as_str()),
            ("recordings/r/index.json", "application/json")
        );
        spool
            .put("s1", "recordings/r/480p/2.m4s", b"two", "video/mp4")
            .unwrap();
        spool.remove(&second).unwrap();
        assert_eq!(spool.oldest().unwrap().key, "recordings/r/480p/2.m4s");
        assert_eq!(spool.usage().0, 1);
    }

    #[test]
    fn a_full_spool_refuses_and_frees_room_as_objects_leave() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), 300).unwrap();
        spool.put("s", "k/1", &[0; 150], "video/mp4").unwrap();
        let refused = spool.put("s", "k/2", &[0; 150], "video/mp4").unwrap_err();
        assert!(
            matches!(refused, SpoolError::Full { capacity: 300, .. }),
            "{refused}"
        );
        let only = spool.oldest().unwrap();
        spool.remove(&only).unwrap();
        assert_eq!(spool.usage(), (0, 0));
        spool.put("s", "k/2", &[0; 150], "video/mp4").unwrap();
    }

    #[test]
    fn a_file_that_is_not_a_spooled_object_stops_the_open_with_its_name() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("0000000000000001.spool"), b"garbage").unwrap();
        let err = Spool::open(dir.path(), 1 << 20).unwrap_err();
        assert!(
            err.contains("0000000000000001.spool is not a spooled object"),
            "{err}"
        );
    }
}
