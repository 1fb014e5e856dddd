//! The disk tier below memory, with the queue of finished fills waiting to be written.

use super::*;

/// Objects fresh for less than this are not written to disk: live playlists and parts churn
/// far faster than a disk write pays off.
pub(super) const DISK_MIN_FRESH: Duration = Duration::from_secs(10);

/// Finished fills waiting for the disk writer; beyond this, new ones skip the disk.
pub(super) const DISK_QUEUE: usize = 256;

/// A finished fill on its way to disk.
pub(super) struct DiskJob {
    pub(super) id: HashBinary,
    pub(super) key: String,
    pub(super) tags: Vec<String>,
    pub(super) meta: StoredMeta,
    pub(super) chunks: Vec<Bytes>,
    pub(super) queued_at: SystemTime,
}

/// The disk tier with its writer queue.
pub(super) struct DiskLayer {
    pub(super) tier: Arc<DiskTier>,
    pub(super) queue: SyncSender<DiskJob>,
    /// Held by purges while they remove from disk and by the writer while it decides to
    /// index a file, so a purge cannot be undone by a write already under way.
    pub(super) purge_lock: Mutex<()>,
}
